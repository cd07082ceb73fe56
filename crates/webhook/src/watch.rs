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
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
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
