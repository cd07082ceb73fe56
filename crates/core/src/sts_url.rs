//! Checking a custom STS endpoint URL (`tempcreds.io/sts-endpoint`, the
//! webhook config's `stsEndpoint`, the sidecar's `--sts-endpoint`) with a
//! real URL parser, before anything is sent to it.
//!
//! The sidecar sends the pod's web-identity token and requests signed with
//! its credentials to this URL, so the rules are strict:
//!
//! - a URL `https://HOST[:PORT][/PATH]`, at most [`MAX_LEN`] characters,
//!   without whitespace or control characters anywhere (a URL parser would
//!   silently drop a tab or newline), without `user:password@`, a query or a
//!   fragment;
//! - `http://` only to a loopback address (`127.0.0.0/8`, `[::1]`,
//!   `localhost`: the pod's own network namespace), unless the operator
//!   allows plain HTTP explicitly (test setups such as moto);
//! - never a link-local address (`169.254.0.0/16`, `fe80::/10`) or the
//!   instance metadata service (`169.254.169.254`, `[fd00:ec2::254]`), nor
//!   an unspecified one (`0.0.0.0`, `[::]`), whatever the scheme.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The longest URL accepted, in characters.
pub const MAX_LEN: usize = 2048;

/// The IPv6 address of the EC2 instance metadata service.
const IMDS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// Why an STS endpoint URL is refused. `Display` gives the reason and what is
/// accepted, without the value (the caller names the flag or annotation and
/// the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StsUrlError {
    /// A plain `http://` URL to a host that is not loopback, while plain
    /// HTTP is not allowed. The caller says how the operator allows it.
    PlainHttp {
        /// The host, as parsed.
        host: String,
    },
    /// Anything else.
    Invalid(String),
}

impl fmt::Display for StsUrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StsUrlError::PlainHttp { host } => write!(
                f,
                "is plain http:// to {host}, which would send the pod's web-identity token and signed \
                 requests unencrypted; use https:// (plain http:// is accepted only to a loopback \
                 address such as 127.0.0.1, unless the cluster operator allows it)"
            ),
            StsUrlError::Invalid(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for StsUrlError {}

const EXPECTED: &str = "expected https://HOST[:PORT][/PATH]";

/// Checks `raw` as an STS endpoint URL (see the module's rules);
/// `allow_plain_http`: whether `http://` to a host that is not loopback is
/// accepted. Never panics, whatever the input.
pub fn check_sts_url(raw: &str, allow_plain_http: bool) -> Result<(), StsUrlError> {
    let invalid = |m: String| Err(StsUrlError::Invalid(m));
    if raw.is_empty() {
        return invalid(format!("is empty; {EXPECTED}"));
    }
    if raw.chars().count() > MAX_LEN {
        return invalid(format!("is longer than {MAX_LEN} characters; {EXPECTED}"));
    }
    if let Some(c) = raw.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return invalid(format!(
            "contains the character {:?}; a URL has no whitespace or control characters; {EXPECTED}",
            c
        ));
    }
    let url = match url::Url::parse(raw) {
        Ok(url) => url,
        Err(e) => return invalid(format!("is not a URL ({e}); {EXPECTED}")),
    };
    // The parser percent-encodes and punycodes what it takes: the URL the
    // sidecar uses must be within the limit too.
    if url.as_str().len() > MAX_LEN {
        return invalid(format!(
            "is longer than {MAX_LEN} characters once encoded as a URL; {EXPECTED}"
        ));
    }
    let scheme = url.scheme();
    if scheme != "https" && scheme != "http" {
        return invalid(format!(
            "has the scheme {scheme:?}; accepted: https (or http to a loopback address); {EXPECTED}"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return invalid(format!(
            "carries user information (USER:PASSWORD@); STS takes none in the URL and it would \
             end up in logs; {EXPECTED}"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return invalid(format!("has a query (?) or fragment (#); {EXPECTED}"));
    }
    let Some(host) = url.host() else {
        return invalid(format!("has no host; {EXPECTED}"));
    };
    let ip = match &host {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(*ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(*ip)),
        url::Host::Domain("") => {
            return invalid(format!("has an empty host; {EXPECTED}"));
        }
        url::Host::Domain(_) => None,
    };
    if let Some(ip) = ip.map(canonical) {
        if is_metadata_or_link_local(ip) {
            return invalid(format!(
                "points at {ip}, a link-local address (the instance metadata service lives \
                 there), not at STS; {EXPECTED}"
            ));
        }
        if ip.is_unspecified() {
            return invalid(format!("points at {ip}, which is no host; {EXPECTED}"));
        }
    }
    let loopback = match (&host, ip.map(canonical)) {
        (_, Some(ip)) => ip.is_loopback(),
        (url::Host::Domain(name), None) => name.eq_ignore_ascii_case("localhost"),
        _ => false,
    };
    if scheme == "http" && !loopback && !allow_plain_http {
        return Err(StsUrlError::PlainHttp {
            host: host.to_string(),
        });
    }
    Ok(())
}

/// An IPv4-mapped IPv6 address as its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn is_metadata_or_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4 == Ipv4Addr::new(169, 254, 169, 254),
        IpAddr::V6(v6) => v6 == IMDS_V6 || (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Whether `raw` is a plain `http://` URL (of any host).
pub fn is_plain_http(raw: &str) -> bool {
    raw.get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn refused(raw: &str) -> String {
        match check_sts_url(raw, false) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("{raw:?} accepted"),
        }
    }

    #[test]
    fn https_urls_and_loopback_http_are_accepted() {
        for ok in [
            "https://sts.eu-west-1.amazonaws.com",
            "https://sts.eu-west-1.amazonaws.com/",
            "https://vpce-0123-abcd.sts.eu-west-1.vpce.amazonaws.com:443",
            "https://10.0.0.5:8443/sts",
            "https://[2001:db8::1]:443",
            "http://127.0.0.1:5000",
            "http://127.1.2.3",
            "http://[::1]:5000",
            "http://localhost:5000",
        ] {
            assert_eq!(check_sts_url(ok, false), Ok(()), "{ok}");
        }
    }

    /// Issue 12: each of these was accepted and failed (or leaked) at run time.
    #[test]
    fn what_issue_12_found_is_refused_with_the_reason() {
        for (raw, needle) in [
            ("http://sts.example.com", "plain http:// to sts.example.com"),
            ("http://10.0.0.1:5000", "plain http:// to 10.0.0.1"),
            ("http://169.254.169.254/latest/meta-data", "link-local"),
            ("https://169.254.169.254", "link-local"),
            ("https://169.254.1.1", "link-local"),
            ("https://[fd00:ec2::254]", "link-local"),
            ("https://[fe80::1]", "link-local"),
            ("https://[::ffff:169.254.169.254]", "link-local"),
            // Decimal IPv4 is still the metadata service.
            ("http://2852039166/", "link-local"),
            ("https://0.0.0.0", "no host"),
            ("https://exa mple.com", "the character ' '"),
            ("https://sts.example.com\n", "the character '\\n'"),
            ("https://sts.exa\tmple.com", "the character '\\t'"),
            ("https://[::1", "is not a URL"),
            ("https://", "is not a URL"),
            ("sts.local", "is not a URL"),
            ("", "is empty"),
            ("https://user:pw@sts.example.com", "user information"),
            ("https://user@sts.example.com", "user information"),
            ("ftp://sts.example.com", "scheme \"ftp\""),
            ("file:///etc/passwd", "scheme \"file\""),
            ("https://sts.example.com/?x=1", "query"),
            ("https://sts.example.com/#x", "fragment"),
        ] {
            let e = refused(raw);
            assert!(e.contains(needle), "{raw:?}: {e}");
        }
        let long = format!("https://{}.com", "a".repeat(MAX_LEN));
        assert!(refused(&long).contains("longer than 2048"));
        // Found by the sts_url fuzz target: 700 characters that the parser
        // percent-encodes to over 2048 were accepted, and the URL the
        // sidecar would use was not.
        let encoded = format!("https://sts.example.com/{}", "\u{fffd}".repeat(700));
        assert!(encoded.chars().count() < MAX_LEN);
        assert!(
            refused(&encoded).contains("longer than 2048 characters once encoded"),
            "{}",
            refused(&encoded)
        );
    }

    #[test]
    fn plain_http_to_other_hosts_only_when_allowed() {
        assert_eq!(check_sts_url("http://10.0.0.1:5000", true), Ok(()));
        assert_eq!(check_sts_url("http://moto.test:5000", true), Ok(()));
        // Allowing plain HTTP does not allow the metadata service.
        assert!(check_sts_url("http://169.254.169.254", true).is_err());
        assert!(is_plain_http("HTTP://x") && !is_plain_http("https://x"));
    }

    proptest! {
        #[test]
        fn never_panics_and_what_is_accepted_is_https_or_loopback(raw in "\\PC{0,40}|(https?://)[\\PC\\s]{0,30}") {
            if check_sts_url(&raw, false).is_ok() {
                let url = url::Url::parse(&raw).expect("accepted, so it parses");
                prop_assert!(url.host_str().is_some_and(|h| !h.is_empty()), "{raw:?}");
                prop_assert!(!raw.chars().any(char::is_whitespace), "{raw:?}");
                prop_assert!(url.username().is_empty() && url.password().is_none());
                if url.scheme() == "http" {
                    let host = url.host_str().unwrap_or_default();
                    prop_assert!(
                        host == "localhost" || host.starts_with("127.") || host == "[::1]"
                            || host.starts_with("[::ffff:7f"),
                        "{raw:?}"
                    );
                } else {
                    prop_assert_eq!(url.scheme(), "https");
                }
                // Accepted once, accepted again after a round trip.
                prop_assert_eq!(check_sts_url(url.as_str(), false), Ok(()));
            }
            let _ = check_sts_url(&raw, true);
        }
    }
}
