//! Durations as users write them: plain seconds (`900`) or a sequence of
//! number–unit pairs (`890s`, `15m`, `1h`, `1h30m`). Units: `s`, `m`, `h`, `d`.

use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {value:?}: {reason}; expected seconds (900) or units s, m, h, d (890s, 15m, 1h30m)"
)]
pub struct DurationError {
    /// The value as given.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Parses a duration such as `900`, `890s`, `15m`, `1h` or `1h30m`.
///
/// Zero is accepted here; callers apply the limits of their own field.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        value: input.to_owned(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("it is empty"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| err("the number is too large"));
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err("each unit needs a number before it"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| err("the number is too large"))?;
        rest = &rest[digits..];
        let unit = rest
            .chars()
            .next()
            .ok_or(err("the last number has no unit"))?;
        let factor = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(err("unknown unit")),
        };
        rest = &rest[unit.len_utf8()..];
        total = number
            .checked_mul(factor)
            .and_then(|n| total.checked_add(n))
            .ok_or(err("the duration is too large"))?;
    }
    Ok(Duration::from_secs(total))
}

/// Formats a duration in the shortest exact form `parse_duration` accepts back
/// (`1h`, `15m`, `1h30m`, `890s`).
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(parse_duration("900"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("890s"), Ok(Duration::from_secs(890)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration(" 2d "), Ok(Duration::from_secs(172_800)));
    }

    #[test]
    fn refuses_garbage_with_the_value_and_the_accepted_forms() {
        for bad in ["", "h", "1.5h", "-5", "10x", "1h30", "99999999999999999999"] {
            let e = parse_duration(bad).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(msg.contains("15m"), "{msg}");
        }
    }

    proptest! {
        #[test]
        fn format_round_trips(secs in 0u64..10_000_000) {
            let d = Duration::from_secs(secs);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse_duration(&s);
        }
    }
}
