//! moto's STS server, started per test, with its request recorder.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

/// A running `moto_server` on 127.0.0.1 (or on the test node's gateway,
/// where pods reach it: [`Moto::start_on`]), killed on drop.
///
/// Every request is recorded (moto's `MOTO_ENABLE_RECORDING`) to a file the
/// test can read with [`Moto::sts_requests`].
pub struct Moto {
    child: Option<Child>,
    host: String,
    port: u16,
    dir: tempfile::TempDir,
    extra_env: Vec<(String, String)>,
}

/// One recorded STS request, decoded from its query-protocol form body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsRequest {
    /// The `Action` parameter (`AssumeRole`, `GetSessionToken`, ...).
    pub action: String,
    /// Every form parameter, `Action` included.
    pub params: BTreeMap<String, String>,
    /// The `Authorization` header, if the request was signed.
    pub authorization: Option<String>,
}

impl StsRequest {
    /// A parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The access key ID that signed the request (from `Credential=AKID/...`).
    pub fn signing_key_id(&self) -> Option<&str> {
        let auth = self.authorization.as_deref()?;
        let cred = auth.split("Credential=").nth(1)?;
        cred.split('/').next()
    }
}

impl Moto {
    /// Starts moto_server on a free port and waits until it accepts
    /// connections.
    pub fn start() -> Moto {
        Moto::start_with_env(&[])
    }

    /// Starts moto_server with extra environment variables (e.g.
    /// `INITIAL_NO_AUTH_ACTION_COUNT` to make it verify signatures).
    pub fn start_with_env(env: &[(&str, &str)]) -> Moto {
        Moto::start_on_with_env("127.0.0.1", env)
    }

    /// Starts moto_server listening on `host` (an address of this machine,
    /// e.g. the test node's bridge gateway, so pods reach it).
    pub fn start_on(host: &str) -> Moto {
        Moto::start_on_with_env(host, &[])
    }

    fn start_on_with_env(host: &str, env: &[(&str, &str)]) -> Moto {
        let mut moto = Moto {
            child: None,
            host: host.to_owned(),
            port: crate::free_port(),
            dir: tempfile::tempdir().expect("temp dir for moto"),
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        // free_port() releases the port before moto binds it, so a test
        // running in parallel may take it first: then try another one.
        for _ in 0..5 {
            match moto.try_start() {
                Ok(()) => return moto,
                Err(_) => moto.port = crate::free_port(),
            }
        }
        panic!(
            "moto_server did not start on any of 5 ports; log: {}",
            moto.log()
        );
    }

    /// The endpoint URL, `http://HOST:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// The port moto listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn recording(&self) -> PathBuf {
        self.dir.path().join("recording.jsonl")
    }

    /// Stops the server (an STS outage). Its recording is kept.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// (Re)starts the server on the same port, keeping the recording file.
    /// moto's state (issued credentials) starts empty.
    pub fn restart(&mut self) {
        if let Err(e) = self.try_start() {
            panic!("{e}");
        }
    }

    /// Starts the server and waits until it, not some other process, listens
    /// on the port: its own log says so and the port accepts connections.
    fn try_start(&mut self) -> Result<(), String> {
        self.stop();
        let running = format!("Running on http://{}:{}", self.host, self.port);
        let started_before = self.log().matches(&running).count();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("moto.log"))
            .expect("moto log file");
        let mut cmd = Command::new(crate::tool("moto_server"));
        cmd.args(["-H", &self.host, "-p", &self.port.to_string()])
            .env("MOTO_ENABLE_RECORDING", "true")
            .env("MOTO_RECORDER_FILEPATH", self.recording())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("dup log")))
            .stderr(Stdio::from(log));
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start moto_server");
        self.child = Some(child);
        let deadline = Instant::now() + crate::LIMIT;
        loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                return Err(format!(
                    "moto_server exited with {status} on port {}; log: {}",
                    self.port,
                    self.log()
                ));
            }
            if self.log().matches(&running).count() > started_before
                && TcpStream::connect((self.host.as_str(), self.port)).is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "moto_server did not listen on port {} within 30s; log: {}",
                    self.port,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// moto's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }

    /// Every STS request recorded so far, in order.
    pub fn sts_requests(&self) -> Vec<StsRequest> {
        let text = std::fs::read_to_string(self.recording()).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|line| {
                let entry: serde_json::Value = serde_json::from_str(line).ok()?;
                let raw_body = entry["body"].as_str().unwrap_or_default();
                let body = if entry["body_encoded"].as_bool() == Some(true) {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(raw_body)
                        .ok()?;
                    String::from_utf8(bytes).ok()?
                } else {
                    raw_body.to_owned()
                };
                let url = entry["url"].as_str().unwrap_or_default();
                let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
                let params: BTreeMap<String, String> = form_urlencoded::parse(body.as_bytes())
                    .chain(form_urlencoded::parse(query.as_bytes()))
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                let action = params.get("Action")?.clone();
                let headers = entry["headers"].as_object();
                let authorization = headers.and_then(|h| {
                    h.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                        .and_then(|(_, v)| v.as_str().map(str::to_owned))
                });
                Some(StsRequest {
                    action,
                    params,
                    authorization,
                })
            })
            .collect()
    }

    /// The actions recorded so far, in order.
    pub fn actions(&self) -> Vec<String> {
        self.sts_requests().into_iter().map(|r| r.action).collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}
