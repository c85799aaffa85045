//! The aliases added with `nginx-ha alias add`, in `[daemon] state_dir`/aliases.json.
//!
//! - Writes are atomic: a temp file in the same directory, fsync, rename over the store,
//!   fsync of the directory. A crash or a full disk leaves the old store or the new one,
//!   never a torn file.
//! - The file holds one alias per line, so that what a corrupt file still says can be shown.
//! - A corrupt store is never emptied silently: the daemon renames it to
//!   `aliases.json.corrupt-<unix time>`, logs what is wrong and reports its aliases as not
//!   applied; the CLI refuses to change it until then.
//! - `aliases.lock` beside it is locked (flock) by the running daemon, and by the CLI while
//!   it changes the store without a daemon, so the two never write at once.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::{Alias, InvalidAlias};
use crate::statefile::{self, StateFileError};

pub const STORE_FILE: &str = "aliases.json";
const LOCK_FILE: &str = "aliases.lock";
const VERSION: u32 = 1;
/// Largest store read: ~100 bytes per alias, so tens of thousands of aliases fit.
pub const MAX_STORE_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    #[error(
        "the alias store {} is corrupt: {reason}. Fix the file (one JSON object per alias: {{\"address\": \"198.18.0.107/24\", \"interface\": \"eth0\", \"label\": \"eth0:1\"}}) or move it aside; nginx-ha run moves it aside itself",
        path.display()
    )]
    Corrupt { path: PathBuf, reason: Corruption },
    #[error("the alias store in {} is locked by a running nginx-ha (still starting?); try again, or ask it with -c", dir.display())]
    Locked { dir: PathBuf },
    /// A link, a non-file, an oversized store, or a state directory that is a link.
    #[error(transparent)]
    Refused(StateFileError),
}

/// What is wrong in a corrupt store, and where.
#[derive(Debug, thiserror::Error)]
pub enum Corruption {
    #[error("not UTF-8 text ({0})")]
    NotUtf8(#[source] std::str::Utf8Error),
    #[error("{0}")]
    Json(#[source] serde_json::Error),
    #[error("version {0} is not one this nginx-ha knows ({VERSION})")]
    Version(u32),
    #[error("alias #{number} ({address}): {error}")]
    Entry { number: usize, address: String, error: InvalidAlias },
    #[error("alias #{number} ({address}) is listed twice")]
    Twice { number: usize, address: String },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    address: String,
    interface: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    label: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File_ {
    version: u32,
    aliases: Vec<Entry>,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(STORE_FILE)
}

/// The stored aliases; a missing file is an empty store.
pub fn read(dir: &Path) -> Result<Vec<Alias>, StoreError> {
    let path = path(dir);
    match statefile::read(&path, MAX_STORE_BYTES) {
        Ok(Some((bytes, _))) => decode(&bytes).map_err(|reason| StoreError::Corrupt { path, reason }),
        Ok(None) => Ok(Vec::new()),
        Err(StateFileError::Io { source, .. }) => Err(StoreError::Io { action: "read", path, source }),
        Err(refused) => Err(StoreError::Refused(refused)),
    }
}

/// Parses and checks the store's text: the reason names what is wrong and where.
pub fn decode(bytes: &[u8]) -> Result<Vec<Alias>, Corruption> {
    let text = std::str::from_utf8(bytes).map_err(Corruption::NotUtf8)?;
    let file: File_ = serde_json::from_str(text).map_err(Corruption::Json)?;
    if file.version != VERSION {
        return Err(Corruption::Version(file.version));
    }
    let mut aliases: Vec<Alias> = Vec::new();
    for (i, entry) in file.aliases.iter().enumerate() {
        let (number, address) = (i + 1, entry.address.clone());
        let alias = Alias::parse(&entry.address, &entry.interface, entry.label.as_deref())
            .map_err(|error| Corruption::Entry { number, address: address.clone(), error })?;
        if aliases.iter().any(|a| a.address.addr() == alias.address.addr()) {
            return Err(Corruption::Twice { number, address });
        }
        aliases.push(alias);
    }
    Ok(aliases)
}

pub fn encode(aliases: &[Alias]) -> String {
    let lines: Vec<String> = aliases
        .iter()
        .map(|a| {
            let entry =
                Entry { address: a.address.to_string(), interface: a.interface.clone(), label: a.label.clone() };
            format!("  {}", serde_json::to_string(&entry).expect("plain strings serialize"))
        })
        .collect();
    format!("{{\"version\": {VERSION}, \"aliases\": [\n{}\n]}}\n", lines.join(",\n"))
}

/// What a corrupt store still says: every line that is one whole alias.
pub fn salvage(bytes: &[u8]) -> Vec<Alias> {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .filter_map(|line| {
            let entry: Entry = serde_json::from_str(line.trim().trim_end_matches(',')).ok()?;
            Alias::parse(&entry.address, &entry.interface, entry.label.as_deref()).ok()
        })
        .collect()
}

/// Replaces the store atomically (see the module doc), mode 0600.
pub fn write(dir: &Path, aliases: &[Alias]) -> Result<(), StoreError> {
    let temp = dir.join(format!(".{STORE_FILE}.tmp-{}", std::process::id()));
    statefile::write_atomic(&path(dir), &temp, encode(aliases).as_bytes()).map(drop).map_err(StoreError::from_state)
}

/// Renames a corrupt store to `aliases.json.corrupt-<unix_time>`; returns the new path.
pub fn set_aside(dir: &Path, unix_time: u64) -> Result<PathBuf, StoreError> {
    let from = path(dir);
    let to = dir.join(format!("{STORE_FILE}.corrupt-{unix_time}"));
    fs::rename(&from, &to).map_err(|source| StoreError::Io { action: "move aside", path: from, source })?;
    let _ = statefile::sync_dir(dir);
    Ok(to)
}

/// Takes the store's lock (creating the directory if needed); `wait` blocks until it is free.
pub fn lock(dir: &Path, wait: bool) -> Result<Flock<File>, StoreError> {
    statefile::ensure_dir(dir).map_err(StoreError::from_state)?;
    let path = dir.join(LOCK_FILE);
    let file = statefile::open_lock(&path).map_err(StoreError::from_state)?;
    let how = if wait { FlockArg::LockExclusive } else { FlockArg::LockExclusiveNonblock };
    Flock::lock(file, how).map_err(|(_, errno)| match errno {
        nix::errno::Errno::EWOULDBLOCK => StoreError::Locked { dir: dir.to_path_buf() },
        errno => StoreError::Io { action: "lock", path, source: errno.into() },
    })
}

impl StoreError {
    /// An I/O failure keeps the store's wording ("cannot write …"); a refusal says why itself.
    fn from_state(error: StateFileError) -> StoreError {
        match error {
            StateFileError::Io { action, path, source } => StoreError::Io { action, path, source },
            refused => StoreError::Refused(refused),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alias(address: &str, interface: &str, label: Option<&str>) -> Alias {
        Alias::parse(address, interface, label).unwrap()
    }

    #[test]
    fn writes_and_reads_back_one_alias_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert_eq!(read(&state).unwrap(), Vec::new(), "a missing store is empty");
        let aliases =
            vec![alias("198.18.0.107/24", "eth0", Some("eth0:1")), alias("fd00:198:18::107/64", "eth1", None)];
        write(&state, &aliases).unwrap();
        assert_eq!(read(&state).unwrap(), aliases);
        let text = fs::read_to_string(path(&state)).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.contains(r#"{"address":"198.18.0.107/24","interface":"eth0","label":"eth0:1"}"#), "{text}");
        // No temp file is left behind.
        let names: Vec<_> = fs::read_dir(&state).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(STORE_FILE)]);
        write(&state, &[]).unwrap();
        assert_eq!(read(&state).unwrap(), Vec::new());
    }

    #[test]
    fn a_failed_write_leaves_the_old_store() {
        let dir = tempfile::tempdir().unwrap();
        let old = vec![alias("198.18.0.107/24", "eth0", None)];
        write(dir.path(), &old).unwrap();
        // The temp file's name is taken by a directory: the write fails before the rename.
        let temp = dir.path().join(format!(".{STORE_FILE}.tmp-{}", std::process::id()));
        fs::create_dir(&temp).unwrap();
        let error = write(dir.path(), &[alias("198.18.0.108/24", "eth0", None)]).unwrap_err();
        assert!(error.to_string().starts_with("cannot write"), "{error}");
        assert_eq!(read(dir.path()).unwrap(), old);
    }

    #[test]
    fn corruption_is_explained_and_what_is_left_can_be_salvaged() {
        let good = encode(&[alias("198.18.0.107/24", "eth0", Some("eth0:1")), alias("198.18.0.108/24", "eth0", None)]);
        let torn = &good.as_bytes()[..good.len() - 40];
        let reason = decode(torn).unwrap_err().to_string();
        assert!(reason.contains("line"), "{reason}");
        assert_eq!(salvage(torn), vec![alias("198.18.0.107/24", "eth0", Some("eth0:1"))]);

        let bad_label = good.replace("\"eth0:1\"", "\"wlan0:1\"");
        assert!(
            decode(bad_label.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("alias #1 (198.18.0.107/24): label `wlan0:1`")
        );
        let twice = good.replace("198.18.0.108", "198.18.0.107");
        assert!(decode(twice.as_bytes()).unwrap_err().to_string().contains("listed twice"));
        assert!(decode(b"\xff\xfe").unwrap_err().to_string().contains("UTF-8"));
        assert!(decode(br#"{"version": 7, "aliases": []}"#).unwrap_err().to_string().contains("version 7"));

        let dir = tempfile::tempdir().unwrap();
        fs::write(path(dir.path()), torn).unwrap();
        match read(dir.path()) {
            Err(error @ StoreError::Corrupt { .. }) => {
                let text = error.to_string();
                assert!(
                    text.contains(&path(dir.path()).display().to_string()) && text.contains("move it aside"),
                    "{text}"
                );
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        let aside = set_aside(dir.path(), 1_764_700_000).unwrap();
        assert_eq!(aside, dir.path().join("aliases.json.corrupt-1764700000"));
        assert_eq!(fs::read(&aside).unwrap(), torn);
        assert_eq!(read(dir.path()).unwrap(), Vec::new());
    }

    #[test]
    fn the_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path(), false).unwrap();
        assert!(matches!(lock(dir.path(), false), Err(StoreError::Locked { .. })));
        drop(held);
        lock(dir.path(), false).unwrap();
    }
}
