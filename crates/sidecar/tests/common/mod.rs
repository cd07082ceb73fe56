//! Shared helpers of the sidecar's integration tests: running the real
//! binary in a clean environment, kubelet-style input files, real AWS
//! clients reading the output, and bounded waiting.

#![allow(dead_code)] // each test file uses a different part

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempcreds_tests::{Moto, free_port, tool};

pub const ACCOUNT: &str = "123456789012";

pub fn role(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/{name}")
}

/// A directory laid out the way the kubelet writes projected and Secret
/// volumes: `NAME -> ..data/NAME`, `..data -> ..<version>/`, updated by
/// writing a new version directory and renaming a new `..data` symlink over
/// the old one.
pub struct KubeletDir {
    pub dir: PathBuf,
    version: u32,
}

impl KubeletDir {
    pub fn new(dir: PathBuf, files: &[(&str, &str)]) -> KubeletDir {
        std::fs::create_dir_all(&dir).unwrap();
        let mut k = KubeletDir { dir, version: 0 };
        k.update(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), k.dir.join(name)).unwrap();
        }
        k
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Atomically replaces every file, as the kubelet does.
    pub fn update(&mut self, files: &[(&str, &str)]) {
        self.version += 1;
        let version = format!("..v{}", self.version);
        std::fs::create_dir(self.dir.join(&version)).unwrap();
        for (name, contents) in files {
            std::fs::write(self.dir.join(&version).join(name), contents).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}

/// A JWT-shaped token (moto does not verify web identity tokens).
pub fn fake_jwt(subject: &str) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.{}",
        b64(r#"{"alg":"RS256","kid":"test"}"#),
        b64(&format!(
            r#"{{"iss":"https://issuer.example","aud":["sts.amazonaws.com"],"sub":"{subject}"}}"#
        )),
        b64(&format!(
            "signature-{subject}-{}",
            tempcreds_tests::unique_suffix()
        ))
    )
}

/// One test's world: a temp dir with an output dir and a clean environment.
pub struct World {
    pub tmp: tempfile::TempDir,
    pub out: PathBuf,
    /// The health port of the sidecars [`World::sidecar`] builds.
    pub health_port: u16,
}

impl World {
    pub fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        for empty in ["aws-config", "aws-credentials"] {
            std::fs::write(tmp.path().join(empty), "").unwrap();
        }
        World {
            tmp,
            out,
            health_port: free_port(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Long-term keys in a kubelet-style Secret volume.
    pub fn keys(&self, id: &str, secret: &str) -> KubeletDir {
        KubeletDir::new(
            self.path("keys"),
            &[("aws_access_key_id", id), ("aws_secret_access_key", secret)],
        )
    }

    /// A projected token volume holding `token`.
    pub fn token(&self, token: &str) -> KubeletDir {
        KubeletDir::new(self.path("token"), &[("token", token)])
    }

    /// The sidecar binary with a clean environment: no AWS or TEMPCREDS
    /// variables from the outside, no profile files, no instance metadata.
    pub fn sidecar<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tempcreds-sidecar"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.tmp.path())
            .env("AWS_CONFIG_FILE", self.path("aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.path("aws-credentials"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .arg("run")
            .arg("--output-dir")
            .arg(&self.out)
            // Before `args`: after an `--and-profile` it would be refused.
            .arg("--health-addr")
            .arg(format!("127.0.0.1:{}", self.health_port))
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `sidecar --once` and returns its output (bounded to 180 s, a
    /// guard against a hung process, not a timing expectation).
    pub fn once<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        self.once_with(self.sidecar(args).arg("--once"))
    }

    /// Runs `cmd` to its end with its output in files (not pipes: a process
    /// that writes more than a pipe holds, say at `RUST_LOG=trace`, would
    /// block until killed) and returns its status and output.
    pub fn once_with(&self, cmd: &mut Command) -> Output {
        let n = tempcreds_tests::unique_suffix();
        let (out_path, err_path) = (
            self.path(&format!("once-{n}.stdout")),
            self.path(&format!("once-{n}.stderr")),
        );
        let mut child = cmd
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(180);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("tempcreds-sidecar --once did not exit within 180 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Output {
            status,
            stdout: std::fs::read(&out_path).unwrap(),
            stderr: std::fs::read(&err_path).unwrap(),
        }
    }

    /// Starts `cmd` (from [`World::sidecar`]) in the background with logs
    /// to a file.
    pub fn spawn(&self, cmd: &mut Command) -> Running {
        let health_port = self.health_port;
        let log = self.path("sidecar.log");
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Running {
            child,
            health_port,
            log,
        }
    }

    pub fn credentials(&self) -> String {
        std::fs::read_to_string(self.out.join("credentials")).unwrap()
    }

    /// The access key ID in the written `credentials` file.
    pub fn written_key_id(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.out.join("credentials")).ok()?;
        ini_value(&text, "aws_access_key_id")
    }
}

pub fn ini_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .map(str::to_owned)
}

/// A running sidecar, killed on drop.
pub struct Running {
    pub child: Child,
    pub health_port: u16,
    pub log: PathBuf,
}

impl Running {
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The HTTP status of `GET path` on the health address, if it answers.
    pub fn probe(&self, path: &str) -> Option<u16> {
        let mut s = TcpStream::connect(("127.0.0.1", self.health_port)).ok()?;
        // A guard against a hung listener, not a latency expectation.
        s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        s.read_to_string(&mut response).ok()?;
        response.split_whitespace().nth(1)?.parse().ok()
    }

    /// The status and body of `GET path` on the health address with
    /// `accept` as the `Accept` header, if it answers.
    pub fn get(&self, path: &str, accept: Option<&str>) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.health_port)).ok()?;
        // A guard against a hung listener, not a latency expectation.
        s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
        let accept = accept
            .map(|a| format!("Accept: {a}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\n{accept}Connection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        s.read_to_string(&mut response).ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let (_, body) = response.split_once("\r\n\r\n")?;
        Some((status, body.to_owned()))
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&mut self) {
        wait_until(
            "the sidecar to become ready",
            Duration::from_secs(120),
            || {
                if let Some(status) = self.child.try_wait().unwrap() {
                    panic!("the sidecar exited with {status}; logs:\n{}", self.logs());
                }
                self.probe("/readyz") == Some(200)
            },
        );
    }

    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} failed");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on 127.0.0.1:port with an optional Authorization header:
/// the status and body.
pub fn http_get(port: u16, path: &str, authorization: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The shortest time [`wait_until`] waits before failing.
pub const WAIT_FLOOR: Duration = Duration::from_secs(300);

/// Polls `cond` every 20 ms until it holds, failing after `limit` or
/// [`WAIT_FLOOR`], whichever is longer. The limit is a guard against a hung
/// process, never a timing expectation: the floor keeps a loaded machine
/// (`make test` beside a release build) from failing a test whose condition
/// comes true late, and a passing test never waits longer for it.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let limit = limit.max(WAIT_FLOOR);
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that none of `secrets` appears in `text`.
pub fn assert_no_secrets(text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(s.len() >= 8, "secret {s:?} too short to check meaningfully");
        assert!(!text.contains(s), "a secret appeared in the logs:\n{text}");
    }
}

/// Runs the AWS CLI's `sts get-caller-identity` with only the written files
/// (`credentials` and, when given, a config file) and returns the ARN.
pub fn aws_cli_caller_arn(moto: &Moto, credentials: &Path, config: Option<&Path>) -> String {
    aws_cli_caller_arn_as(moto, credentials, config, None)
}

/// [`aws_cli_caller_arn`] with `--profile profile`.
pub fn aws_cli_caller_arn_as(
    moto: &Moto,
    credentials: &Path,
    config: Option<&Path>,
    profile: Option<&str>,
) -> String {
    let empty = credentials.with_file_name("empty-config-for-cli");
    std::fs::write(&empty, "").unwrap();
    let out = Command::new(tool("aws"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", credentials.parent().unwrap())
        .env("AWS_SHARED_CREDENTIALS_FILE", credentials)
        .env("AWS_CONFIG_FILE", config.unwrap_or(&empty))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args([
            "sts",
            "get-caller-identity",
            "--region",
            "us-east-1",
            "--output",
            "text",
        ])
        .args(["--query", "Arn", "--endpoint-url", &moto.url()])
        .args(profile.iter().flat_map(|p| ["--profile", p]))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "aws sts get-caller-identity failed: {}",
        stderr(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// boto3's `get_caller_identity()` ARN with only the written files.
pub fn boto3_caller_arn(moto: &Moto, credentials: &Path, config: Option<&Path>) -> String {
    boto3_caller_arn_as(moto, credentials, config, None)
}

/// [`boto3_caller_arn`] with `AWS_PROFILE=profile`.
pub fn boto3_caller_arn_as(
    moto: &Moto,
    credentials: &Path,
    config: Option<&Path>,
    profile: Option<&str>,
) -> String {
    let empty = credentials.with_file_name("empty-config-for-boto3");
    std::fs::write(&empty, "").unwrap();
    let mut cmd = Command::new(tool("python"));
    cmd.env_clear()
        .env("HOME", credentials.parent().unwrap())
        .env("AWS_SHARED_CREDENTIALS_FILE", credentials)
        .env("AWS_CONFIG_FILE", config.unwrap_or(&empty))
        .env("AWS_EC2_METADATA_DISABLED", "true");
    if let Some(p) = profile {
        cmd.env("AWS_PROFILE", p);
    }
    let out = cmd
        .args([
            "-c",
            "import boto3,sys; c=boto3.session.Session().client('sts', endpoint_url=sys.argv[1], \
             region_name='us-east-1'); print(c.get_caller_identity()['Arn'])",
            &moto.url(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "boto3 failed: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// moto verifying signatures and IAM policies: its first two actions run
/// unauthenticated (creating a user without permissions and its keys),
/// returned with the keys of that user, who may do nothing.
pub fn moto_with_auth(w: &World) -> (Moto, String, String) {
    let moto = Moto::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "2")]);
    let out = Command::new(tool("python"))
        .env_clear()
        .env("HOME", w.tmp.path())
        .args([
            "-c",
            "import boto3,sys; iam=boto3.client('iam', endpoint_url=sys.argv[1], region_name='us-east-1', \
             aws_access_key_id='AKIASETUPEXAMPLE', aws_secret_access_key='setup'); \
             iam.create_user(UserName='nobody'); k=iam.create_access_key(UserName='nobody')['AccessKey']; \
             print(k['AccessKeyId'], k['SecretAccessKey'])",
            &moto.url(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut parts = text.split_whitespace();
    let id = parts.next().unwrap().to_owned();
    let secret = parts.next().unwrap().to_owned();
    (moto, id, secret)
}

/// Arguments of a sidecar that exchanges the projected token in
/// `token_file` for `role` (`--source web-identity`, region us-east-1)
/// at the STS at `sts_url`.
pub fn web_identity_args(role: &str, token_file: &str, sts_url: &str) -> Vec<String> {
    [
        "--source",
        "web-identity",
        "--role-arn",
        role,
        "--token-file",
        token_file,
        "--region",
        "us-east-1",
        "--sts-endpoint",
        sts_url,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Arguments of a sidecar that uses the long-term keys in `keys`
/// (`--source secret`, region us-east-1) against the STS at `sts_url`, and
/// assumes `role` with them (without one: GetSessionToken).
pub fn secret_args(keys: &KubeletDir, sts_url: &str, role: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "--source".to_owned(),
        "secret".to_owned(),
        "--access-key-id-file".to_owned(),
        keys.path("aws_access_key_id").display().to_string(),
        "--secret-access-key-file".to_owned(),
        keys.path("aws_secret_access_key").display().to_string(),
        "--region".to_owned(),
        "us-east-1".to_owned(),
        "--sts-endpoint".to_owned(),
        sts_url.to_owned(),
    ];
    if let Some(role) = role {
        args.extend(["--role-arn".to_owned(), role.to_owned()]);
    }
    args
}
