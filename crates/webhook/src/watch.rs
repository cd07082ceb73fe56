//! Reloading files when they change: a `notify` watch on the *directories*
//! holding them (a Kubernetes volume update swaps a `..data` symlink, which a
//! watch on the file misses), debounced, with a periodic check as a safety
//! net for missed events.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// How long to wait after an event for the rest of an update to land.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// The directory holding `file` (`.` for a bare file name).
fn dir_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Runs `on_change` after anything changes in the directories holding
/// `files`, and every `period` in any case. The watch lives as long as the
/// returned task.
pub fn spawn_reloader(
    files: &[&Path],
    period: Duration,
    on_change: impl Fn() + Send + 'static,
) -> notify::Result<tokio::task::JoinHandle<()>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    // Only changes to the watched files or to the volume's `..` entries
    // count: other files in the directory (a log file next to the config in
    // a local run) must not trigger reloads.
    let names: BTreeSet<std::ffi::OsString> = files
        .iter()
        .filter_map(|f| f.file_name().map(ToOwned::to_owned))
        .collect();
    let relevant = move |path: &Path| {
        path.file_name()
            .is_some_and(|n| names.contains(n) || n.to_string_lossy().starts_with(".."))
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reading the files (the reload itself) raises access events; only
        // changes count.
        if let Ok(event) = event
            && !matches!(event.kind, notify::EventKind::Access(_))
            && event.paths.iter().any(|p| relevant(p))
        {
            let _ = tx.send(());
        }
    })?;
    let dirs: BTreeSet<PathBuf> = files.iter().map(|f| dir_of(f)).collect();
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(tokio::spawn(async move {
        let _watcher = watcher;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                event = rx.recv() => {
                    if event.is_none() {
                        return;
                    }
                    tokio::time::sleep(DEBOUNCE).await;
                    while rx.try_recv().is_ok() {}
                }
                _ = tick.tick() => {}
            }
            on_change();
        }
    }))
}

/// Remembers the last reload error, so the periodic check does not repeat
/// the same complaint: a problem is reported once until it changes or is
/// fixed.
#[derive(Debug, Default)]
pub struct LastError(std::sync::Mutex<String>);

impl LastError {
    /// Records `error`; true when it differs from the previous one.
    pub fn is_new(&self, error: &str) -> bool {
        match self.0.lock() {
            Ok(last) if *last == error => false,
            Ok(mut last) => {
                error.clone_into(&mut last);
                true
            }
            Err(_) => true,
        }
    }

    /// Forgets the last error (after a successful load).
    pub fn clear(&self) {
        if let Ok(mut last) = self.0.lock() {
            last.clear();
        }
    }
}
