//! The refresh loop: when to fetch credentials again, and what to do when
//! fetching fails.
//!
//! - After a success, the next refresh is due `--refresh-before` before expiry
//!   (default: half the lifetime), made up to 10% earlier at random so pods
//!   started together do not call STS together.
//! - After a failure, the last good credentials stay on disk and the attempt
//!   is retried with exponential backoff and jitter (1 s doubling to 5 min),
//!   but never later than half the time left before they expire.
//! - A change of the token or key files triggers an attempt right away (after
//!   a short debounce, and only if their contents really changed).
//!
//! Idle, the loop waits on exactly two things: its timer and file events.
//! Time is tokio's, so tests drive it with paused time.

use std::future::Future;
use std::time::Duration;

use tempcreds_core::Credentials;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tracing::{info, warn};

use crate::health::Readiness;

/// First retry delay after a failure.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// How long file events are collected before the inputs are compared.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// Shortest wait between two scheduled attempts (no busy loop even when
/// credentials come back already near expiry).
pub const MIN_DELAY: Duration = Duration::from_secs(1);

/// What the loop needs from the outside world; the real one calls STS and
/// writes files, the tests' one counts.
pub trait Refresh {
    /// The error of one attempt; its `Display` is logged.
    type Error: std::fmt::Display;
    /// Runs one STS call chain and writes the credentials.
    fn refresh(&mut self) -> impl Future<Output = Result<Credentials, Self::Error>>;
    /// A fingerprint of the input files as they are now.
    fn inputs(&self) -> u64;
}

/// The delay until the next scheduled refresh, before jitter: `refresh_before`
/// before expiry, or half the lifetime when it is not given or not shorter
/// than the lifetime.
pub fn refresh_delay(lifetime: Duration, refresh_before: Option<Duration>) -> Duration {
    let before = match refresh_before {
        Some(b) if b < lifetime => b,
        _ => lifetime / 2,
    };
    lifetime.saturating_sub(before)
}

/// Applies jitter to a refresh delay: up to 10% earlier, at least [`MIN_DELAY`].
/// `unit` is a random number in `[0, 1)`.
pub fn jittered(delay: Duration, unit: f64) -> Duration {
    delay
        .saturating_sub(delay.mul_f64(0.1 * unit))
        .max(MIN_DELAY)
}

/// Exponential backoff with jitter.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// How many attempts failed in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Forgets past failures.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Records a failure and returns the delay before the next attempt:
    /// between half and all of `1s * 2^(failures-1)` capped at 5 min
    /// (`unit` in `[0, 1)` picks where), and no more than half of `remaining`
    /// validity of the credentials on disk, if any (but at least 1 s).
    pub fn next(&mut self, remaining: Option<Duration>, unit: f64) -> Duration {
        let exp = BACKOFF_START.saturating_mul(1 << self.failures.min(16));
        self.failures = self.failures.saturating_add(1);
        let step = exp.min(BACKOFF_CAP);
        let mut delay = step / 2 + (step / 2).mul_f64(unit);
        if let Some(r) = remaining {
            delay = delay.min(r / 2);
        }
        delay.max(MIN_DELAY)
    }
}

/// The time left until `expiration`, as a tokio instant.
pub fn expiry_instant(expiration: OffsetDateTime) -> Instant {
    let left = expiration - OffsetDateTime::now_utc();
    Instant::now() + Duration::try_from(left).unwrap_or(Duration::ZERO)
}

/// Runs the loop until `shutdown` completes, refreshing right away.
/// `file_events` carries a message for each change in a watched directory.
pub async fn run<R: Refresh>(
    refresher: R,
    refresh_before: Option<Duration>,
    readiness: Readiness,
    file_events: mpsc::Receiver<()>,
    shutdown: impl Future<Output = ()>,
) {
    run_from(
        Instant::now(),
        refresher,
        refresh_before,
        readiness,
        file_events,
        shutdown,
    )
    .await;
}

/// [`run`], with the first refresh at `first_due`: later than now when
/// credentials a previous run wrote were adopted (`readiness` already set).
pub async fn run_from<R: Refresh>(
    first_due: Instant,
    mut refresher: R,
    refresh_before: Option<Duration>,
    readiness: Readiness,
    mut file_events: mpsc::Receiver<()>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut backoff = Backoff::default();
    let mut due = first_due;
    let mut event_due: Option<Instant> = None;
    let mut events_open = true;
    let mut last_inputs = refresher.inputs();
    loop {
        let wake = event_due.map_or(due, |e| e.min(due));
        tokio::select! {
            () = &mut shutdown => return,
            () = sleep_until(wake) => {}
            ev = file_events.recv(), if events_open => {
                match ev {
                    Some(()) => {
                        event_due.get_or_insert_with(|| Instant::now() + DEBOUNCE);
                    }
                    None => events_open = false,
                }
                continue;
            }
        }
        let now = Instant::now();
        if event_due.is_some_and(|e| e <= now) {
            event_due = None;
            if refresher.inputs() != last_inputs {
                info!("credential input files changed; authenticating again now");
                backoff.reset();
                due = now;
            }
        }
        if due > now {
            continue;
        }
        last_inputs = refresher.inputs();
        let result = tokio::select! {
            () = &mut shutdown => return,
            r = refresher.refresh() => r,
        };
        match result {
            Ok(creds) => {
                let fetched = Instant::now();
                let expires_at = expiry_instant(creds.expiration);
                readiness.written(expires_at);
                backoff.reset();
                let lifetime = expires_at.saturating_duration_since(fetched);
                let delay = jittered(refresh_delay(lifetime, refresh_before), fastrand::f64());
                if refresh_before.is_some_and(|b| b >= lifetime) {
                    warn!(
                        lifetime_secs = lifetime.as_secs(),
                        "--refresh-before is not shorter than the credentials' lifetime; refreshing at half the lifetime"
                    );
                }
                info!(
                    access_key_id = %creds.access_key_id,
                    expiration = %creds.expiration_rfc3339(),
                    next_refresh_secs = delay.as_secs(),
                    "credentials written"
                );
                due = fetched + delay;
            }
            Err(e) => {
                let now = Instant::now();
                let remaining = readiness
                    .expires_at()
                    .map(|t| t.saturating_duration_since(now))
                    .filter(|r| !r.is_zero());
                let delay = backoff.next(remaining, fastrand::f64());
                warn!(
                    error = %e,
                    attempt = backoff.failures(),
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    valid_credentials_on_disk = remaining.is_some(),
                    "refreshing credentials failed; keeping the last ones and retrying"
                );
                due = now + delay;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tempcreds_core::SecretString;

    #[test]
    fn refresh_delay_defaults_to_half_the_lifetime() {
        let hour = Duration::from_secs(3600);
        assert_eq!(refresh_delay(hour, None), hour / 2);
        assert_eq!(
            refresh_delay(hour, Some(Duration::from_secs(600))),
            Duration::from_secs(3000)
        );
        assert_eq!(refresh_delay(hour, Some(hour)), hour / 2);
        assert_eq!(jittered(hour, 0.0), hour);
        assert!(
            (Duration::from_secs(3240)..Duration::from_secs(3241))
                .contains(&jittered(hour, 0.999_999))
        );
        assert_eq!(jittered(Duration::ZERO, 0.5), MIN_DELAY);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_and_beats_expiry() {
        let mut b = Backoff::default();
        let upper: Vec<_> = (0..12).map(|_| b.next(None, 0.999_999).as_secs()).collect();
        assert_eq!(upper, [1, 1, 3, 7, 15, 31, 63, 127, 255, 299, 299, 299]);
        let mut b = Backoff::default();
        let lower: Vec<_> = (0..12).map(|_| b.next(None, 0.0).as_secs()).collect();
        assert_eq!(lower, [1, 1, 2, 4, 8, 16, 32, 64, 128, 150, 150, 150]);
        let mut b = Backoff::default();
        for _ in 0..10 {
            b.next(None, 0.5);
        }
        assert_eq!(
            b.next(Some(Duration::from_secs(100)), 0.5),
            Duration::from_secs(50)
        );
        assert_eq!(b.next(Some(Duration::from_millis(10)), 0.5), MIN_DELAY);
        b.reset();
        assert_eq!(b.next(None, 0.0), MIN_DELAY);
    }

    /// Answers from a script: `true` for success with `lifetime`.
    struct Fake {
        script: Vec<bool>,
        calls: Arc<Mutex<Vec<Instant>>>,
        lifetime: Duration,
        inputs: Arc<Mutex<u64>>,
    }

    impl Refresh for Fake {
        type Error = &'static str;
        async fn refresh(&mut self) -> Result<Credentials, &'static str> {
            let mut calls = self.calls.lock().unwrap();
            let ok = self.script.get(calls.len()).copied().unwrap_or(true);
            calls.push(Instant::now());
            if !ok {
                return Err("STS is down");
            }
            Ok(Credentials {
                access_key_id: "ASIAFAKE".into(),
                secret_access_key: SecretString::new("s"),
                session_token: SecretString::new("t"),
                expiration: OffsetDateTime::now_utc() + self.lifetime,
            })
        }
        fn inputs(&self) -> u64 {
            *self.inputs.lock().unwrap()
        }
    }

    type Calls = Arc<Mutex<Vec<Instant>>>;

    fn fake(script: Vec<bool>, lifetime: u64) -> (Fake, Calls, Arc<Mutex<u64>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let inputs = Arc::new(Mutex::new(0));
        let f = Fake {
            script,
            calls: calls.clone(),
            lifetime: Duration::from_secs(lifetime),
            inputs: inputs.clone(),
        };
        (f, calls, inputs)
    }

    fn offsets(start: Instant, calls: &Mutex<Vec<Instant>>) -> Vec<u64> {
        calls
            .lock()
            .unwrap()
            .iter()
            .map(|t| t.duration_since(start).as_secs())
            .collect()
    }

    /// Lets paused time run until `n` calls happened (at most `limit`).
    async fn wait_for_calls(calls: &Mutex<Vec<Instant>>, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while calls.lock().unwrap().len() < n {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} calls within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_before_expiry_and_backs_off_on_failure_keeping_readiness() {
        let start = Instant::now();
        // ok, then three failures, then ok again.
        let (f, calls, _) = fake(vec![true, false, false, false, true], 1000);
        let readiness = Readiness::default();
        let (_tx, rx) = mpsc::channel(1);
        let r = readiness.clone();
        let task = tokio::spawn(run(
            f,
            Some(Duration::from_secs(100)),
            r,
            rx,
            std::future::pending(),
        ));
        wait_for_calls(&calls, 1, Duration::from_secs(1)).await;
        assert!(readiness.is_ready());
        // Refresh due 900 s in, up to 10% (90 s) earlier.
        wait_for_calls(&calls, 2, Duration::from_secs(1000)).await;
        let at = offsets(start, &calls);
        assert!(at[0] == 0 && (800..900).contains(&at[1]), "{at:?}");
        // Failures retry after 1 s, then 1-2 s, then 2-4 s; readiness holds.
        wait_for_calls(&calls, 5, Duration::from_secs(10)).await;
        let calls = calls.lock().unwrap().clone();
        let gaps: Vec<_> = calls.windows(2).skip(1).map(|w| w[1] - w[0]).collect();
        let secs = Duration::from_secs;
        assert!(gaps[0] == secs(1), "{gaps:?}");
        assert!((secs(1)..secs(2)).contains(&gaps[1]), "{gaps:?}");
        assert!((secs(2)..secs(4)).contains(&gaps[2]), "{gaps:?}");
        assert!(readiness.is_ready());
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_past_expiry_drops_readiness_and_retries_stay_capped() {
        let (f, calls, _) = fake(std::iter::once(true).chain([false; 40]).collect(), 1000);
        let readiness = Readiness::default();
        let (_tx, rx) = mpsc::channel(1);
        let task = tokio::spawn(run(f, None, readiness.clone(), rx, std::future::pending()));
        tokio::time::sleep(Duration::from_secs(999)).await;
        assert!(readiness.is_ready());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!readiness.is_ready());
        let n = calls.lock().unwrap().len();
        // Retries never wait more than 5 minutes.
        tokio::time::sleep(BACKOFF_CAP + Duration::from_secs(1)).await;
        assert!(calls.lock().unwrap().len() > n);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn changed_inputs_trigger_an_attempt_and_unchanged_ones_do_not() {
        let start = Instant::now();
        let (f, calls, inputs) = fake(vec![], 3600);
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(run(
            f,
            None,
            Readiness::default(),
            rx,
            std::future::pending(),
        ));
        tokio::time::sleep(Duration::from_secs(10)).await;
        tx.send(()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(offsets(start, &calls), [0], "an event without a change");
        *inputs.lock().unwrap() = 1;
        tx.send(()).await.unwrap();
        tx.send(()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(offsets(start, &calls), [0, 20]);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_loop() {
        let (f, _, _) = fake(vec![], 3600);
        let (_tx, rx) = mpsc::channel(1);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(f, None, Readiness::default(), rx, async {
            let _ = stopped.await;
        }));
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .unwrap()
            .unwrap();
    }
}
