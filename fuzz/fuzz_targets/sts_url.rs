//! The STS endpoint URL check (`tempcreds_core::sts_url::check_sts_url`) on
//! arbitrary strings: it never panics, and whatever it accepts without
//! plain HTTP allowed parses as an `https://` URL with a host (or
//! `http://` to loopback), with no user information, whitespace or
//! control characters, and is accepted again after a round trip through
//! the URL parser.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tempcreds_core::sts_url::check_sts_url;

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let _ = check_sts_url(&raw, true);
    if check_sts_url(&raw, false).is_err() {
        return;
    }
    let url = url::Url::parse(&raw).expect("accepted, so it parses");
    let host = url.host().expect("accepted, so it has a host");
    assert!(!raw.chars().any(|c| c.is_whitespace() || c.is_control()), "{raw:?}");
    assert!(url.username().is_empty() && url.password().is_none(), "{raw:?}");
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = match host {
                url::Host::Ipv4(ip) => ip.is_loopback(),
                url::Host::Ipv6(ip) => {
                    ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
                }
                url::Host::Domain(d) => d == "localhost",
            };
            assert!(loopback, "plain http to {raw:?} accepted");
        }
        other => panic!("scheme {other} accepted: {raw:?}"),
    }
    assert!(check_sts_url(url.as_str(), false).is_ok(), "{raw:?} -> {url}");
});
