//! `tempcreds-sidecar status`: what a running sidecar says about its
//! credentials, for people.
//!
//! It reads the sidecar's own `/metrics` on its health listener
//! (`--health-addr`, on loopback: run it in the sidecar's container, which
//! `kubectl tempcreds status POD` does) and prints one row per profile
//! ([`crate::cli::profiles_of`]): the source, the final role, how long the
//! credentials have left, how long ago the last refresh wrote them, and the
//! refresh attempts that failed since the sidecar started. It calls nothing
//! else and prints no secret: the metrics carry no key ID, token or secret
//! ([`crate::metrics`]).
//!
//! [`rows`] is the pure part (configuration and exposition text in, rows
//! out); [`run`] adds the HTTP request and the output. The exposition text
//! is treated as untrusted: a line that does not parse is skipped, label
//! values are unescaped as the format says, and only the series of the
//! configured profile names count.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Serialize;
use tempcreds_core::duration::format_duration;
use tempcreds_core::{SidecarConfig, paths};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::app;
use crate::cli::{OutputFormat, StatusArgs, profiles_of};

/// The largest `/metrics` answer read (a sidecar's is a few KiB).
pub const MAX_RESPONSE: usize = 1 << 20;
/// How long connecting, and then the whole exchange, may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The metric names read (Prometheus text and OpenMetrics name counter
/// samples alike, with `_total`).
const EXPIRES_IN: &str = "tempcreds_sidecar_credentials_expires_in_seconds";
const LAST_REFRESH: &str = "tempcreds_sidecar_last_refresh_timestamp_seconds";
const REFRESHES: &str = "tempcreds_sidecar_refreshes_total";
const FAILURES: &str = "tempcreds_sidecar_refresh_failures_total";

/// One profile's credentials, as the sidecar reports them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The profile name (`--profile`).
    pub profile: String,
    /// Where the first credentials come from.
    pub source: &'static str,
    /// The role the credentials are for: the last chained role, else
    /// `--role-arn`, else `GetSessionToken` (the keys' own user).
    pub role: String,
    /// Seconds until the credentials expire (negative once expired); `None`
    /// while none are written.
    pub expires_in_seconds: Option<f64>,
    /// Unix time of the last refresh that wrote credentials; `None` before
    /// the first (adopted credentials are not one).
    pub last_refresh_unix: Option<f64>,
    /// Refreshes that wrote credentials since the sidecar started.
    pub refreshes: Option<u64>,
    /// Refresh attempts that failed since the sidecar started.
    pub refresh_failures: u64,
    /// The failed attempts by kind, the kinds with at least one.
    pub refresh_failures_by_kind: BTreeMap<String, u64>,
}

impl Row {
    /// Whether the profile has credentials that have not expired.
    pub fn valid(&self) -> bool {
        self.expires_in_seconds.is_some_and(|s| s > 0.0)
    }
}

/// The role a configuration's credentials are for.
pub fn final_role(config: &SidecarConfig) -> String {
    config
        .chain_role_arns
        .last()
        .or(config.role_arn.as_ref())
        .map_or_else(|| "GetSessionToken".to_owned(), ToString::to_string)
}

/// One row per profile of `profiles`, from the exposition text (Prometheus
/// text or OpenMetrics) of the sidecar's `/metrics`. A profile without
/// series gets a row without expiry or refresh (not valid).
pub fn rows(profiles: &[&SidecarConfig], metrics_text: &str) -> Vec<Row> {
    let samples: Vec<Sample> = metrics_text.lines().filter_map(parse_sample).collect();
    profiles
        .iter()
        .map(|config| {
            let profile = config.profile.as_str();
            let of_profile = |name: &'static str| {
                samples
                    .iter()
                    .filter(move |s| s.name == name && s.label("profile") == Some(profile))
            };
            let last = |name| of_profile(name).next_back().map(|s| s.value);
            let mut by_kind = BTreeMap::new();
            for s in of_profile(FAILURES) {
                let kind = s
                    .label("kind")
                    .filter(|k| is_kind(k))
                    .unwrap_or("other")
                    .to_owned();
                // A series listed twice counts once (the last one).
                by_kind.insert(kind, count(s.value));
            }
            by_kind.retain(|_, n| *n > 0);
            Row {
                profile: profile.to_owned(),
                source: config.source.as_str(),
                role: final_role(config),
                expires_in_seconds: last(EXPIRES_IN).filter(|v| !v.is_nan()),
                last_refresh_unix: last(LAST_REFRESH).filter(|v| v.is_finite() && *v > 0.0),
                refreshes: last(REFRESHES).map(count),
                refresh_failures: by_kind.values().fold(0, |a, n| a.saturating_add(*n)),
                refresh_failures_by_kind: by_kind,
            }
        })
        .collect()
}

/// A counter's value as a count (0 for what is not one).
fn count(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        // `as` saturates at u64::MAX.
        v as u64
    } else {
        0
    }
}

/// Whether `k` looks like a failure kind (`sts_unreachable`): shown as is.
fn is_kind(k: &str) -> bool {
    (1..=32).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Debug, PartialEq)]
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

impl Sample<'_> {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Parses a sample line; `None` for comments, blank lines and anything
/// malformed.
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim_end_matches('\r');
    let name_end = line.find(|c| !is_name_char(c)).unwrap_or(line.len());
    let (name, mut rest) = line.split_at(name_end);
    if name.is_empty() {
        return None;
    }
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start_matches(' ');
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let end = rest.find(|c| !is_name_char(c))?;
            let (label, after) = rest.split_at(end);
            if label.is_empty() {
                return None;
            }
            let (value, after) = quoted_value(after.strip_prefix("=\"")?)?;
            labels.push((label, value));
            rest = after.trim_start_matches(' ');
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return None;
            }
        }
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields.next()?.parse::<f64>().ok()?;
    // An optional timestamp, then nothing.
    if fields.nth(1).is_some() {
        return None;
    }
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// A label value after its opening quote, unescaped (`\\`, `\"`, `\n`),
/// and the text after its closing quote.
fn quoted_value(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// A duration in seconds for people: `52m10s`, and `?` for what is not one.
fn human(seconds: f64) -> String {
    // Whole seconds; more than a century is shown as such.
    const CENTURY: f64 = 100.0 * 365.0 * 86_400.0;
    if seconds > CENTURY {
        return "more than 100 years".to_owned();
    }
    Duration::try_from_secs_f64(seconds.round()).map_or_else(|_| "?".to_owned(), format_duration)
}

fn expiry_text(row: &Row) -> String {
    match row.expires_in_seconds {
        None => "none written".to_owned(),
        Some(s) if s > 0.0 => human(s),
        Some(s) => format!("EXPIRED {} ago", human(-s)),
    }
}

fn last_refresh_text(row: &Row, now: f64) -> String {
    match row.last_refresh_unix {
        None => "none since start".to_owned(),
        Some(t) if t > now => "just now".to_owned(),
        Some(t) => format!("{} ago", human(now - t)),
    }
}

fn failures_text(row: &Row) -> String {
    if row.refresh_failures_by_kind.is_empty() {
        return row.refresh_failures.to_string();
    }
    let kinds: Vec<String> = row
        .refresh_failures_by_kind
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    format!("{} ({})", row.refresh_failures, kinds.join(", "))
}

/// The rows as an aligned table, `now` being the current Unix time.
pub fn to_text(rows: &[Row], now: f64) -> String {
    let header = [
        "PROFILE",
        "SOURCE",
        "ROLE",
        "EXPIRES IN",
        "LAST REFRESH",
        "REFRESH FAILURES",
    ]
    .map(str::to_owned);
    let mut table = vec![header];
    for r in rows {
        table.push([
            r.profile.clone(),
            r.source.to_owned(),
            r.role.clone(),
            expiry_text(r),
            last_refresh_text(r, now),
            failures_text(r),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| {
            table
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in &table {
        let mut text = String::new();
        for (cell, width) in line.iter().zip(&widths) {
            let _ = write!(text, "{cell:<width$}   ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

fn rfc3339(unix: f64) -> Option<String> {
    if !unix.is_finite() {
        return None;
    }
    let nanos = (unix * 1e9) as i128;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()?
        .replace_nanosecond(0)
        .ok()?
        .format(&Rfc3339)
        .ok()
}

/// The rows as JSON (an array of objects), `now` being the current Unix
/// time: each row's fields, plus `valid`, `expires_at` and
/// `last_refresh` (RFC 3339) and `last_refresh_seconds_ago`.
pub fn to_json(rows: &[Row], now: f64) -> serde_json::Value {
    let objects = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "profile": r.profile,
                "source": r.source,
                "role": r.role,
                "valid": r.valid(),
                "expires_in_seconds": r.expires_in_seconds.filter(|s| s.is_finite()),
                "expires_at": r.expires_in_seconds.and_then(|s| rfc3339(now + s)),
                "last_refresh": r.last_refresh_unix.and_then(rfc3339),
                "last_refresh_seconds_ago": r.last_refresh_unix.map(|t| (now - t).max(0.0)),
                "refreshes": r.refreshes,
                "refresh_failures": r.refresh_failures,
                "refresh_failures_by_kind": r.refresh_failures_by_kind,
            })
        })
        .collect();
    serde_json::Value::Array(objects)
}

/// Why `/metrics` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// Nothing answered at the address.
    #[error(
        "cannot connect to the sidecar's health listener at {addr} (from --health-addr): {source}; \
         is `tempcreds-sidecar run` running here, with its health listener (not \
         --no-health-server), and given the same --health-addr?"
    )]
    Connect {
        /// The address tried.
        addr: SocketAddr,
        /// What connecting said.
        source: std::io::Error,
    },
    /// The exchange failed after connecting.
    #[error("reading http://{addr}{} failed: {source}", paths::METRICS_PATH)]
    Io {
        /// The address tried.
        addr: SocketAddr,
        /// What reading or writing said.
        source: std::io::Error,
    },
    /// The answer is not a usable one.
    #[error(
        "http://{addr}{} answered {what}; is something other than the sidecar \
         listening there?",
        paths::METRICS_PATH
    )]
    Answer {
        /// The address tried.
        addr: SocketAddr,
        /// What is wrong with the answer.
        what: String,
    },
}

/// Where to reach a listener bound to `health_addr` from the same network
/// namespace: loopback for the unspecified address, else the address.
pub fn scrape_addr(health_addr: SocketAddr) -> SocketAddr {
    let ip = match health_addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, health_addr.port())
}

/// `GET /metrics` at `addr` (HTTP/1.0, so the body ends with the
/// connection), in the Prometheus text format: the body, at most
/// [`MAX_RESPONSE`] bytes, within [`TIMEOUT`] after connecting.
pub fn scrape(addr: SocketAddr) -> Result<String, ScrapeError> {
    let io = |source| ScrapeError::Io { addr, source };
    let answer = |what: String| ScrapeError::Answer { addr, what };
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(|source| ScrapeError::Connect { addr, source })?;
    let deadline = Instant::now() + TIMEOUT;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    write!(
        stream,
        "GET {} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n",
        paths::METRICS_PATH
    )
    .map_err(io)?;
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io(std::io::ErrorKind::TimedOut.into()));
        }
        stream.set_read_timeout(Some(left)).map_err(io)?;
        let n = stream.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
        if response.len() > MAX_RESPONSE {
            return Err(answer(format!("more than {MAX_RESPONSE} bytes")));
        }
    }
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| answer("no complete HTTP header".to_owned()))?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line.split(' ').nth(1).unwrap_or_default();
    if !status_line.starts_with("HTTP/1.") || status != "200" {
        let shown: String = status_line.chars().take(80).collect();
        return Err(answer(format!("{shown:?}, not 200 OK")));
    }
    Ok(String::from_utf8_lossy(&response[split + 4..]).into_owned())
}

fn unix_now() -> f64 {
    OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9
}

/// Runs `tempcreds-sidecar status` and returns the exit code: 0 when every
/// profile has valid credentials, 1 otherwise (or when `/metrics` cannot be
/// read), 64 for bad flags.
pub fn run(args: StatusArgs) -> ExitCode {
    if let Err(errors) = args.config.validate() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        eprintln!("invalid configuration; see `tempcreds-sidecar status --help`");
        return ExitCode::from(app::EXIT_CONFIG);
    }
    let addr = scrape_addr(args.config.health_addr);
    let text = match scrape(addr) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(app::EXIT_FAILURE);
        }
    };
    let rows = rows(&profiles_of(&args.config, &args.additional), &text);
    let now = unix_now();
    match args.output {
        OutputFormat::Text => print!("{}", to_text(&rows, now)),
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&rows, now)).unwrap_or_default()
        ),
    }
    let invalid: Vec<&str> = rows
        .iter()
        .filter(|r| !r.valid())
        .map(|r| r.profile.as_str())
        .collect();
    if invalid.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "profile {} has no valid credentials; the sidecar's log says why \
         (kubectl logs POD -c {}), and `tempcreds-sidecar doctor` \
         (`kubectl tempcreds doctor POD`) checks the configuration step by step",
        invalid.join(", "),
        paths::SIDECAR_NAME
    );
    ExitCode::from(app::EXIT_FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempcreds_core::{RoleArn, Source};

    const ROLE: &str = "arn:aws:iam::123456789012:role/reader";
    const CHAINED: &str = "arn:aws:iam::123456789012:role/writer";

    fn config(profile: &str) -> SidecarConfig {
        let mut c = SidecarConfig::new(Source::WebIdentity);
        c.profile = profile.to_owned();
        c.role_arn = Some(ROLE.parse::<RoleArn>().unwrap());
        c
    }

    const TEXT: &str = r#"# HELP tempcreds_sidecar_refreshes_total Refreshes.
# TYPE tempcreds_sidecar_refreshes_total counter
tempcreds_sidecar_refreshes_total{profile="default"} 3
tempcreds_sidecar_refresh_failures_total{profile="default",kind="keys_unreadable"} 0
tempcreds_sidecar_refresh_failures_total{profile="default",kind="sts_unreachable"} 2
tempcreds_sidecar_refresh_failures_total{profile="default",kind="sts_denied"} 1
tempcreds_sidecar_credentials_expires_in_seconds{profile="default"} 3130.0
tempcreds_sidecar_last_refresh_timestamp_seconds{profile="default"} 1796315304.9
tempcreds_sidecar_refreshes_total{profile="old"} 1
tempcreds_sidecar_credentials_expires_in_seconds{profile="old"} -10.0
tempcreds_sidecar_sts_request_duration_seconds_count{action="AssumeRole"} 4
"#;

    #[test]
    fn rows_read_each_profiles_series() {
        let (default, old) = (config("default"), config("old"));
        let rows = rows(&[&default, &old], TEXT);
        assert_eq!(
            rows[0],
            Row {
                profile: "default".into(),
                source: "web-identity",
                role: ROLE.into(),
                expires_in_seconds: Some(3130.0),
                last_refresh_unix: Some(1796315304.9),
                refreshes: Some(3),
                refresh_failures: 3,
                refresh_failures_by_kind: [("sts_denied".into(), 1), ("sts_unreachable".into(), 2)]
                    .into(),
            }
        );
        assert!(rows[0].valid());
        // Expired credentials, never refreshed by this process.
        assert_eq!(rows[1].expires_in_seconds, Some(-10.0));
        assert_eq!(rows[1].last_refresh_unix, None);
        assert_eq!(rows[1].refresh_failures, 0);
        assert!(!rows[1].valid());
    }

    #[test]
    fn a_profile_without_series_is_not_valid() {
        let missing = config("missing");
        let rows = rows(&[&missing], TEXT);
        assert_eq!(rows[0].expires_in_seconds, None);
        assert_eq!(rows[0].refreshes, None);
        assert_eq!(rows[0].refresh_failures, 0);
        assert!(!rows[0].valid());
        let text = to_text(&rows, 0.0);
        assert!(text.contains("none written"), "{text}");
        assert!(text.contains("none since start"), "{text}");
        // Nothing at all (the sidecar has not written yet, or answered
        // something else).
        assert!(!super::rows(&[&missing], "").is_empty());
    }

    #[test]
    fn the_role_is_the_last_of_the_chain_else_the_role_else_get_session_token() {
        let mut c = config("default");
        assert_eq!(final_role(&c), ROLE);
        c.chain_role_arns = vec![CHAINED.parse().unwrap()];
        assert_eq!(final_role(&c), CHAINED);
        let keys = SidecarConfig::new(Source::Secret);
        assert_eq!(final_role(&keys), "GetSessionToken");
    }

    #[test]
    fn hostile_text_is_not_believed_and_never_panics() {
        let default = config("default");
        // A label value that quotes another label, escapes, a duplicate
        // series (the last counts), values that are not numbers, a kind
        // that is not one, a truncated line, junk.
        let text = concat!(
            "tempcreds_sidecar_credentials_expires_in_seconds{profile=\"x\\\",profile=\\\"default\"} 999\n",
            "tempcreds_sidecar_credentials_expires_in_seconds{kind=\"a\",profile=\"default\"} 60\n",
            "tempcreds_sidecar_credentials_expires_in_seconds{profile=\"default\"} 120\n",
            "tempcreds_sidecar_refreshes_total{profile=\"default\"} NaN\n",
            "tempcreds_sidecar_refresh_failures_total{profile=\"default\",kind=\"<script>\\n\"} 1e30\n",
            "tempcreds_sidecar_refresh_failures_total{profile=\"default\",kind=\"sts_denied\"} -5\n",
            "tempcreds_sidecar_last_refresh_timestamp_seconds{profile=\"default\"} +Inf\n",
            "tempcreds_sidecar_refresh_failures_total{profile=\"default\",kind=\"sts_denied\n",
            "{profile=\"default\"} 1\n",
            "tempcreds_sidecar_credentials_expires_in_seconds{profile=\"default\"} 1 2 3\n",
            "\u{0}\u{ffff}{{{\"\\",
        );
        let rows = rows(&[&default], text);
        let r = &rows[0];
        assert_eq!(r.expires_in_seconds, Some(120.0));
        assert_eq!(r.refreshes, Some(0));
        assert_eq!(r.last_refresh_unix, None);
        assert_eq!(r.refresh_failures, u64::MAX);
        assert_eq!(
            r.refresh_failures_by_kind,
            [("other".to_owned(), u64::MAX)].into()
        );
        for now in [0.0, 1.8e9, f64::MAX, f64::NAN] {
            let _ = to_text(&rows, now);
            let _ = to_json(&rows, now);
        }
        let huge = Row {
            expires_in_seconds: Some(f64::MAX),
            last_refresh_unix: Some(1e300),
            ..r.clone()
        };
        let text = to_text(std::slice::from_ref(&huge), 1e9);
        assert!(text.contains("more than 100 years"), "{text}");
        let inf = Row {
            expires_in_seconds: Some(f64::NEG_INFINITY),
            ..huge
        };
        assert!(to_text(&[inf], 1e9).contains("EXPIRED more than 100 years ago"));
    }

    #[test]
    fn label_values_are_unescaped() {
        let s = parse_sample(r#"m{a="x\"y\\z\n",b="",} 1.5 1700000000"#).unwrap();
        assert_eq!(s.name, "m");
        assert_eq!(s.label("a"), Some("x\"y\\z\n"));
        assert_eq!(s.label("b"), Some(""));
        assert_eq!(s.value, 1.5);
        assert_eq!(parse_sample("# HELP m x"), None);
        assert_eq!(parse_sample(""), None);
        assert_eq!(parse_sample("m{a=\"x} 1"), None);
    }

    #[test]
    fn text_is_an_aligned_table_and_json_an_array() {
        let (default, old) = (config("default"), config("old"));
        let rows = rows(&[&default, &old], TEXT);
        let now = 1796315304.9 + 125.0;
        let text = to_text(&rows, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("PROFILE   SOURCE"), "{text}");
        let column = |l: &str, word: &str| l.find(word).unwrap();
        assert_eq!(
            column(lines[0], "EXPIRES IN"),
            column(lines[1], "52m10s"),
            "{text}"
        );
        assert!(lines[1].contains("2m5s ago"), "{text}");
        assert!(
            lines[1].contains("3 (sts_denied 1, sts_unreachable 2)"),
            "{text}"
        );
        assert!(lines[2].contains("EXPIRED 10s ago"), "{text}");

        let json = to_json(&rows, now);
        assert_eq!(json[0]["profile"], "default");
        assert_eq!(json[0]["role"], ROLE);
        assert_eq!(json[0]["valid"], true);
        assert_eq!(json[0]["expires_in_seconds"], 3130.0);
        assert_eq!(json[0]["last_refresh"], "2026-12-03T16:28:24Z");
        assert_eq!(
            json[0]["last_refresh_seconds_ago"]
                .as_f64()
                .unwrap()
                .round(),
            125.0
        );
        assert_eq!(json[0]["refresh_failures_by_kind"]["sts_unreachable"], 2);
        assert_eq!(json[1]["valid"], false);
        assert_eq!(json[1]["last_refresh"], serde_json::Value::Null);
    }

    #[test]
    fn the_unspecified_address_is_scraped_on_loopback() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(scrape_addr(a("0.0.0.0:8099")), a("127.0.0.1:8099"));
        assert_eq!(scrape_addr(a("[::]:8099")), a("[::1]:8099"));
        assert_eq!(scrape_addr(a("127.0.0.2:1")), a("127.0.0.2:1"));
    }
}
