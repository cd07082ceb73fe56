#!/usr/bin/env python3
"""Summarises `perf script` output (call graphs, e.g. `perf record -g` or
`--call-graph dwarf`) of the webhook for hack/bench.sh: the share of samples
spent in each part of a review (inclusive: a sample counts for every part on
its stack, so parts may overlap, e.g. the policy inside the mutation), then
the functions with the most samples of their own.

    perf script -i perf.data | hack/perf-summary.py
"""
import collections
import re
import sys

# (label, pattern matched against each frame's function name)
PARTS = [
    ("the mutation (tempcreds_webhook::mutate::mutate)", r"^tempcreds_webhook::mutate::mutate$"),
    ("  of which json_patch::diff (patch from the mutated copy)", r"^json_patch::diff::diff$"),
    ("  of which the policy's globs (policy::glob_match)", r"^tempcreds_webhook::policy::glob_match$"),
    ("deciding the review (decide: the mutation above, the cache lookups, the response JSON and base64)", r"^tempcreds_webhook::server::decide"),
    ("decoding the request (parse_review)", r"^tempcreds_webhook::server::parse_review"),
    ("the log line (tracing-subscriber, JSON)", r"^<?tracing_subscriber|^tracing_core"),
    ("TLS (rustls, including its socket write below)", r"^<?rustls::|^<rustls"),
    ("sending the answer (writev: kernel TCP over loopback)", r"^__GI___writev$|^__writev$|^writev$"),
    ("writing the log line (write)", r"^__GI___libc_write$|^__libc_write$"),
    ("reading requests (recvfrom/read)", r"recvfrom|^__GI___libc_read$|^__libc_recv"),
    ("waiting for sockets (epoll_wait)", r"epoll_wait"),
    ("the allocator (mimalloc)", r"^_?mi_"),
]


def samples(lines):
    stack = None
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if stack:
                yield stack
            stack = None
            continue
        if not line[0].isspace():
            stack = []
            continue
        parts = line.strip().split(" ", 1)
        if stack is not None and len(parts) == 2:
            name = parts[1].rsplit(" (", 1)[0]
            stack.append(re.sub(r"\+0x[0-9a-f]+$", "", name))
    if stack:
        yield stack


def main():
    stacks = list(samples(sys.stdin))
    n = len(stacks)
    if n == 0:
        print("no samples")
        return
    print(f"{n} samples; share of samples with the part on the stack:")
    for label, pattern in PARTS:
        rx = re.compile(pattern)
        c = sum(1 for s in stacks if any(rx.search(f) for f in s))
        print(f"  {100 * c / n:5.1f} %  {label}")
    own = collections.Counter(s[0] for s in stacks if s)
    print("functions with the most samples of their own:")
    for name, c in own.most_common(12):
        print(f"  {100 * c / n:5.1f} %  {name[:110]}")


main()
