//! Watches the nginx config, every file it includes and the directories of its include globs.
//!
//! Directories are watched (not files) because editors replace files by write-to-temp and
//! rename, which a watch on the old inode would miss. We use `notify` directly and debounce in
//! the supervisor's event loop: notify-debouncer-full wakes up on a fixed tick forever, and an
//! idle nginx-ha must not wake up at all.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::conf::ConfigDump;

#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path}: {source}")]
pub struct WatchError {
    path: PathBuf,
    source: notify::Error,
}

#[derive(Default)]
struct Targets {
    files: HashSet<PathBuf>,
    patterns: Vec<glob::Pattern>,
}

impl Targets {
    fn matches(&self, path: &Path) -> bool {
        self.files.contains(path) || self.patterns.iter().any(|pattern| pattern.matches_path(path))
    }
}

pub struct ConfigWatcher {
    watcher: RecommendedWatcher,
    dirs: HashSet<PathBuf>,
    targets: Arc<Mutex<Targets>>,
}

impl ConfigWatcher {
    /// Sends the path of every relevant change on `changes`.
    pub fn new(changes: mpsc::UnboundedSender<PathBuf>) -> Result<ConfigWatcher, WatchError> {
        let targets = Arc::new(Mutex::new(Targets::default()));
        let shared = Arc::clone(&targets);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if matches!(event.kind, EventKind::Access(_)) {
                return;
            }
            let targets = shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            for path in event.paths.iter().filter(|path| targets.matches(path)) {
                let _ = changes.send(path.clone());
            }
        })
        .map_err(|source| WatchError { path: PathBuf::new(), source })?;
        Ok(ConfigWatcher { watcher, dirs: HashSet::new(), targets })
    }

    /// Watches exactly what `dump` names (and where symlinked files really live).
    pub fn set(&mut self, dump: &ConfigDump) -> Result<(), WatchError> {
        let mut targets = Targets::default();
        for file in &dump.files {
            targets.files.insert(file.clone());
            if let Ok(real) = std::fs::canonicalize(file) {
                targets.files.insert(real);
            }
        }
        targets.patterns = dump
            .include_patterns
            .iter()
            .filter_map(|pattern| glob::Pattern::new(&pattern.to_string_lossy()).ok())
            .collect();
        let mut dirs: HashSet<PathBuf> =
            targets.files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
        dirs.extend(dump.include_patterns.iter().filter_map(|p| p.parent().map(Path::to_path_buf)));
        dirs.retain(|dir| dir.is_dir());

        for gone in self.dirs.difference(&dirs) {
            let _ = self.watcher.unwatch(gone);
        }
        for dir in dirs.difference(&self.dirs) {
            self.watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|source| WatchError { path: dir.clone(), source })?;
        }
        self.dirs = dirs;
        *self.targets.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = targets;
        Ok(())
    }
}

/// Watches the nginx binary: a package upgrade renames a new file over it (dpkg, rpm), which
/// replaces the directory entry; the directory is watched for the same reason as above. The
/// caller debounces and compares [`BinaryIdentity`] before it upgrades, so a `touch` or a
/// chmod does not start one.
pub struct BinaryWatcher {
    _watcher: RecommendedWatcher,
}

impl BinaryWatcher {
    pub fn new(binary: &Path, changes: mpsc::UnboundedSender<PathBuf>) -> Result<BinaryWatcher, WatchError> {
        let mut names: HashSet<PathBuf> = HashSet::from([binary.to_path_buf()]);
        if let Ok(real) = std::fs::canonicalize(binary) {
            names.insert(real);
        }
        let targets = names.clone();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if matches!(event.kind, EventKind::Access(_) | EventKind::Remove(_)) {
                return;
            }
            for path in event.paths.iter().filter(|path| targets.contains(*path)) {
                let _ = changes.send(path.clone());
            }
        })
        .map_err(|source| WatchError { path: binary.to_path_buf(), source })?;
        let dirs: HashSet<&Path> = names.iter().filter_map(|name| name.parent()).collect();
        for dir in dirs {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|source| WatchError { path: dir.to_path_buf(), source })?;
        }
        Ok(BinaryWatcher { _watcher: watcher })
    }
}

/// Which file a path names now: a new file renamed over it has another inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BinaryIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
}

impl BinaryIdentity {
    pub fn of(path: &Path) -> Option<BinaryIdentity> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(BinaryIdentity { dev: meta.dev(), ino: meta.ino(), size: meta.size(), mtime: meta.mtime() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn next_change(rx: &mut mpsc::UnboundedReceiver<PathBuf>) -> Option<PathBuf> {
        tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.ok().flatten()
    }

    #[tokio::test]
    async fn sees_edits_renames_and_new_files_in_include_dirs_but_not_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("nginx.conf");
        let sites = dir.path().join("sites");
        std::fs::create_dir(&sites).unwrap();
        std::fs::write(&main, "x").unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut watcher = ConfigWatcher::new(tx).unwrap();
        watcher
            .set(&ConfigDump {
                files: vec![main.clone()],
                include_patterns: vec![sites.join("*.conf")],
                pid_file: None,
                worker_processes: Some(1),
            })
            .unwrap();

        std::fs::write(dir.path().join("nginx.pid"), "1").unwrap();
        std::fs::write(dir.path().join("error.log"), "x").unwrap();
        std::fs::write(&main, "y").unwrap();
        assert_eq!(next_change(&mut rx).await, Some(main.clone()), "neighbours are ignored, the edit is seen");

        while tokio::time::timeout(Duration::from_millis(200), rx.recv()).await.is_ok() {}
        let temp = dir.path().join(".nginx.conf.swp");
        std::fs::write(&temp, "z").unwrap();
        std::fs::rename(&temp, &main).unwrap();
        assert_eq!(next_change(&mut rx).await, Some(main.clone()), "editor-style rename is seen");

        while tokio::time::timeout(Duration::from_millis(200), rx.recv()).await.is_ok() {}
        std::fs::write(sites.join("new.conf"), "server {}").unwrap();
        assert_eq!(next_change(&mut rx).await, Some(sites.join("new.conf")), "a new included file is seen");
    }
}

#[cfg(test)]
mod binary_tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_binary_renamed_over_is_seen_and_has_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("nginx");
        std::fs::write(&binary, "old").unwrap();
        let before = BinaryIdentity::of(&binary).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _watcher = BinaryWatcher::new(&binary, tx).unwrap();
        std::fs::write(dir.path().join("other"), "x").unwrap();
        let staged = dir.path().join("nginx.dpkg-new");
        std::fs::write(&staged, "new").unwrap();
        std::fs::rename(&staged, &binary).unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.ok().flatten();
        assert_eq!(seen, Some(binary.clone()), "the rename over the binary is seen, the neighbour is not");
        assert_ne!(BinaryIdentity::of(&binary), Some(before));
    }
}
