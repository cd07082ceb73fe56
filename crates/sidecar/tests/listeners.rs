//! The sidecar's listeners under hostile clients: connections that send
//! half a request and then nothing. Needs no STS (the health listener
//! answers `/healthz` whatever STS does).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

const PARTIAL: usize = 1000;

/// What the server did with a connection that sent half a request line:
/// `Ok(())` when it closed it (end of stream or reset), `Err` with what
/// happened otherwise. `deadline` guards against a hung test (it is far
/// beyond the header timeout under test, even on a loaded machine); it is
/// not a timing expectation.
fn closed_by_server(mut s: TcpStream, deadline: Instant) -> Result<(), String> {
    let left = deadline.saturating_duration_since(Instant::now());
    s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .unwrap();
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(()),
        Err(e) => Err(format!("{e} after {:?}", String::from_utf8_lossy(&buf))),
    }
}

/// The status of `GET path`, waiting as long as it takes (the request may
/// wait in the accept queue behind the partial ones).
fn patient_probe(port: u16, path: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {response:?}"))
}

#[test]
fn a_thousand_half_sent_requests_are_closed_and_the_health_probe_still_answers() {
    let w = World::new();
    let keys = w.keys("AKIALISTENEREXAMPLE1", "listenerSecretAccessKey+1");
    // Nothing listens at the STS endpoint: STS is not needed here.
    let mut args = secret_args(&keys, "http://127.0.0.1:9", Some(&role("app")));
    args.extend(["--listener-header-timeout".to_owned(), "1s".to_owned()]);
    let mut sidecar = w.spawn(&mut w.sidecar(&args));
    wait_until("the health listener", Duration::from_secs(120), || {
        if let Some(status) = sidecar.child.try_wait().unwrap() {
            panic!(
                "the sidecar exited with {status}; logs:\n{}",
                sidecar.logs()
            );
        }
        sidecar.probe("/healthz") == Some(200)
    });

    let partial: Vec<TcpStream> = (0..PARTIAL)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", sidecar.health_port)).unwrap();
            s.write_all(b"GET /heal").unwrap();
            s
        })
        .collect();
    // A real probe behind them is answered.
    assert_eq!(patient_probe(sidecar.health_port, "/healthz"), 200);
    // Every partial request is closed by the server.
    let deadline = Instant::now() + Duration::from_secs(300);
    let still_open: Vec<String> = partial
        .into_iter()
        .enumerate()
        .filter_map(|(i, s)| {
            closed_by_server(s, deadline)
                .err()
                .map(|e| format!("#{i}: {e}"))
        })
        .collect();
    assert!(
        still_open.is_empty(),
        "{} of {PARTIAL} partial requests not closed by the server, e.g. {:?}",
        still_open.len(),
        &still_open[..still_open.len().min(3)]
    );
    assert_eq!(patient_probe(sidecar.health_port, "/healthz"), 200);
    assert!(
        sidecar.child.try_wait().unwrap().is_none(),
        "the sidecar exited"
    );
    // A request with headers larger than the listener accepts is refused,
    // not buffered.
    let mut s = TcpStream::connect(("127.0.0.1", sidecar.health_port)).unwrap();
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = s.write_all(huge.as_bytes());
    let mut answer = String::new();
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let _ = s.read_to_string(&mut answer);
    assert!(!answer.contains(" 200 "), "{answer}");
}
