//! Where things live inside an injected pod: volume mount paths and the names
//! of the files the sidecar writes. The webhook mounts these paths and the
//! sidecar writes to them, so both take them from here.

/// Where the shared credentials volume is mounted, in the sidecar (read-write)
/// and in application containers (read-only).
pub const OUTPUT_DIR: &str = "/var/run/tempcreds";

/// The AWS shared-credentials file (INI) inside the output directory.
pub const CREDENTIALS_FILE: &str = "credentials";

/// The `credential_process` JSON document inside the output directory.
pub const PROCESS_JSON_FILE: &str = "credentials.json";

/// The `credential_process` JSON document of an additional profile (the
/// first profile's is [`PROCESS_JSON_FILE`]).
pub fn process_json_file(additional: Option<&str>) -> String {
    match additional {
        None => PROCESS_JSON_FILE.to_owned(),
        Some(name) => format!("credentials.{name}.json"),
    }
}

/// The path of an additional profile's credentials on the
/// container-credentials endpoint (the first profile's is
/// [`ENDPOINT_PATH`]).
pub fn endpoint_path(additional: Option<&str>) -> String {
    match additional {
        None => ENDPOINT_PATH.to_owned(),
        Some(name) => format!("{ENDPOINT_PATH}/{name}"),
    }
}

/// The AWS config file whose profile runs `credential_process` on
/// [`PROCESS_JSON_FILE`], inside the output directory.
pub const CONFIG_FILE: &str = "config";

/// The authorization token for the container-credentials endpoint, inside the
/// output directory.
pub const ENDPOINT_TOKEN_FILE: &str = "endpoint-token";

/// The path of the container-credentials endpoint the sidecar serves with
/// `--endpoint-addr`.
pub const ENDPOINT_PATH: &str = "/v1/credentials";

/// The loopback address the webhook gives the sidecar for the
/// container-credentials endpoint (`delivery: endpoint`).
pub const DEFAULT_ENDPOINT_ADDR: &str = "127.0.0.1:8098";

/// The port of [`DEFAULT_ENDPOINT_ADDR`].
pub const DEFAULT_ENDPOINT_PORT: u16 = 8098;

/// The value of `AWS_CONTAINER_CREDENTIALS_FULL_URI` for an endpoint served
/// on `addr` (`http://127.0.0.1:8098/v1/credentials`).
pub fn endpoint_uri(addr: std::net::SocketAddr) -> String {
    format!("http://{addr}{ENDPOINT_PATH}")
}

/// Where the projected service-account token volume is mounted (sidecar only).
pub const TOKEN_DIR: &str = "/var/run/secrets/tempcreds/serviceaccount";

/// The token file name inside [`TOKEN_DIR`].
pub const TOKEN_FILE: &str = "token";

/// Where the Secret holding long-term keys is mounted (sidecar only).
pub const SECRET_DIR: &str = "/var/run/secrets/tempcreds/aws-keys";

/// File name of the access key ID inside [`SECRET_DIR`].
pub const ACCESS_KEY_ID_FILE: &str = "aws_access_key_id";

/// File name of the secret access key inside [`SECRET_DIR`].
pub const SECRET_ACCESS_KEY_FILE: &str = "aws_secret_access_key";

/// The default address of the sidecar's health endpoints. It listens on all
/// addresses because the kubelet probes the pod IP; the endpoints carry no
/// secret.
pub const DEFAULT_HEALTH_ADDR: &str = "0.0.0.0:8099";

/// The port of [`DEFAULT_HEALTH_ADDR`].
pub const DEFAULT_HEALTH_PORT: u16 = 8099;

/// Where the sidecar image carries the `tempcreds-sidecar` binary. The
/// webhook runs it there for exec probes (`tempcreds-sidecar probe`) of
/// `hostNetwork` pods, which get no health listener; an operator's own
/// sidecar image must keep the binary at this path.
pub const SIDECAR_BINARY: &str = "/usr/local/bin/tempcreds-sidecar";

/// The injected sidecar container's name. The webhook gives it another
/// (`tempcreds-2`, ...) only when the pod already has a container of this
/// name, and always names the container it injected in the
/// `tempcreds.io/injected` annotation.
pub const SIDECAR_NAME: &str = "tempcreds";

/// The sidecar's readiness path: ready once valid credentials are written.
pub const READYZ_PATH: &str = "/readyz";

/// The sidecar's liveness path.
pub const HEALTHZ_PATH: &str = "/healthz";

/// The Prometheus metrics path of the sidecar's health listener and of the
/// webhook's listener.
pub const METRICS_PATH: &str = "/metrics";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_uri_is_what_sdks_accept() {
        let addr = DEFAULT_ENDPOINT_ADDR.parse().unwrap();
        assert_eq!(endpoint_uri(addr), "http://127.0.0.1:8098/v1/credentials");
        assert_eq!(
            endpoint_uri("[::1]:1".parse().unwrap()),
            "http://[::1]:1/v1/credentials"
        );
        assert_eq!(
            DEFAULT_ENDPOINT_ADDR
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .port(),
            DEFAULT_ENDPOINT_PORT
        );
    }
}
