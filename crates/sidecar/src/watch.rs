//! Watches the directories holding the token and key files.
//!
//! The kubelet updates projected and Secret volumes by writing a new
//! timestamped directory and atomically swapping the `..data` symlink the
//! visible file names point through, so a watch on the file itself would miss
//! the change: the directory is watched instead. Every event except mere
//! reads is passed on; the refresh loop debounces them and compares the
//! files' contents before calling STS.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// A running watch; dropping it stops watching.
pub struct DirWatch {
    _watcher: Option<RecommendedWatcher>,
}

impl std::fmt::Debug for DirWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirWatch")
            .field("active", &self._watcher.is_some())
            .finish()
    }
}

/// The directories holding `files`, each once.
pub fn dirs_of(files: &[PathBuf]) -> Vec<PathBuf> {
    files
        .iter()
        .map(|f| match f.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Starts watching the directories of `files`, sending `()` on `events` for
/// each change. A directory that cannot be watched is logged and skipped:
/// the timer still re-reads the files on every refresh.
pub fn watch(files: &[PathBuf], events: mpsc::Sender<()>) -> DirWatch {
    let dirs = dirs_of(files);
    if dirs.is_empty() {
        return DirWatch { _watcher: None };
    }
    let handler = move |res: notify::Result<notify::Event>| match res {
        Ok(event) => {
            if matches!(event.kind, EventKind::Access(_)) {
                return;
            }
            debug!(kind = ?event.kind, paths = ?event.paths, "credential input directory changed");
            // A full channel already holds a pending notification.
            let _ = events.try_send(());
        }
        Err(e) => warn!(error = %e, "watching the credential input files failed"),
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            warn!(error = %e, "cannot watch the credential input files; changes are picked up at the next refresh");
            return DirWatch { _watcher: None };
        }
    };
    for dir in &dirs {
        if let Err(e) = watcher.watch(Path::new(dir), RecursiveMode::NonRecursive) {
            warn!(
                dir = %dir.display(),
                error = %e,
                "cannot watch this directory; changes in it are picked up at the next refresh"
            );
        }
    }
    DirWatch {
        _watcher: Some(watcher),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn watches_each_directory_once() {
        let files = vec![
            PathBuf::from("/keys/id"),
            PathBuf::from("/keys/secret"),
            PathBuf::from("token"),
        ];
        assert_eq!(
            dirs_of(&files),
            [PathBuf::from("/keys"), PathBuf::from(".")]
        );
    }

    #[tokio::test]
    async fn a_symlink_swap_like_the_kubelets_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("..v1")).unwrap();
        std::fs::write(d.join("..v1/token"), "one").unwrap();
        std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/token", d.join("token")).unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let _w = watch(&[d.join("token")], tx);
        std::fs::create_dir(d.join("..v2")).unwrap();
        std::fs::write(d.join("..v2/token"), "two").unwrap();
        std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("no event within 10 s")
            .unwrap();
        assert_eq!(std::fs::read_to_string(d.join("token")).unwrap(), "two");
    }
}
