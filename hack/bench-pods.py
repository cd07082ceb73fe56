#!/usr/bin/env python3
"""Pod-creation latency as the API server's clients see it, for hack/bench.sh.

Creates 4 x N pods one after another, in rounds of four: an opted-in pod
in the namespace routed to the webhook (the API server calls it, applies
its patch and validates the larger pod), a pod without annotations in the
same namespace (the call, answered "allowed" without a patch), an
opted-in pod in a namespace the webhook is not registered for, and there
too a copy of the pod as the webhook left it (sidecar, volumes, mounts,
environment, as the API server stored it): what the larger pod alone costs,
without a webhook call. One kept-alive HTTPS connection with the
kubeconfig's client certificate. Prints the median and p99 of each series
and the differences.

  bench-pods.py KUBECONFIG NS_WITH NS_WITHOUT N

Standard library only.
"""
import http.client
import json
import re
import ssl
import statistics
import sys
import time
from urllib.parse import urlparse


def kubeconfig(path):
    text = open(path).read()
    field = lambda name: re.search(rf"^\s*{name}:\s*(\S+)\s*$", text, re.M).group(1)
    return field("server"), field("certificate-authority"), field("client-certificate"), field("client-key")


def pod(name, opted_in):
    annotations = {"tempcreds.io/role-arn": "arn:aws:iam::123456789012:role/bench"} if opted_in else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "containers": [{"name": "app", "image": "example.com/app:1",
                            "env": [{"name": "LOG_LEVEL", "value": "info"}],
                            "ports": [{"containerPort": 8080}]}],
        },
    }


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


def main():
    path, with_ns, without_ns, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    server, ca, cert, key = kubeconfig(path)
    url = urlparse(server)
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    conn = http.client.HTTPSConnection(url.hostname, url.port, context=ctx)
    series = {"with": (with_ns, True), "plain": (with_ns, False), "without": (without_ns, True),
              "injected": (without_ns, None)}
    times = {k: [] for k in series}
    injected = 0
    stored = None  # the first opted-in pod as the API server stored it
    for i in range(-5, n):  # 5 warm-up rounds, not counted
        for key, (ns, opted_in) in series.items():
            name = f"bench-{key}-{i + 5}"
            if opted_in is None:
                spec = {k: v for k, v in stored["spec"].items() if k != "nodeName"}
                meta = {"name": name, "annotations": stored["metadata"]["annotations"]}
                body = json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
            else:
                body = json.dumps(pod(name, opted_in))
            start = time.perf_counter()
            conn.request("POST", f"/api/v1/namespaces/{ns}/pods", body,
                         {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            took = time.perf_counter() - start
            if resp.status != 201:
                sys.exit(f"creating a pod in {ns} failed: {resp.status} {data[:500]!r}")
            if key == "with" and stored is None:
                stored = json.loads(data)
            if i >= 0:
                times[key].append(took)
                if key == "with" and b'"tempcreds"' in data:
                    injected += 1
    if injected != n:
        sys.exit(f"only {injected} of {n} opted-in pods in {with_ns} got the sidecar")
    ms = lambda s: f"{s * 1000:.2f}"
    p50 = {k: statistics.median(v) for k, v in times.items()}
    p99 = {k: pct(v, 0.99) for k, v in times.items()}
    for k, label in [("with", "opted in, webhook registered"),
                     ("plain", "not opted in, webhook registered"),
                     ("without", "opted in, no webhook"),
                     ("injected", "already injected, no webhook")]:
        print(f"{n} pods {label}: median {ms(p50[k])} ms, p99 {ms(p99[k])} ms")
    fields = " ".join(f"{k}_p50_ms={ms(p50[k])} {k}_p99_ms={ms(p99[k])}" for k in times)
    print(f"RESULT n={n} {fields} added_p50_ms={ms(p50['with'] - p50['without'])} "
          f"added_p99_ms={ms(p99['with'] - p99['without'])} "
          f"call_p50_ms={ms(p50['plain'] - p50['without'])} "
          f"size_p50_ms={ms(p50['injected'] - p50['without'])}")


if __name__ == "__main__":
    main()
