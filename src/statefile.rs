//! Files in `[daemon] state_dir` (the VRRP state record, the alias store and its lock), opened
//! without following symbolic links: the daemon runs as root, and a link planted in the state
//! directory must not make it read, truncate or replace a file elsewhere.
//!
//! - The state directory itself must be a real directory, not a link to one.
//! - Reads open with `O_NOFOLLOW` and refuse a file larger than the caller's bound (checked on the
//!   open file, before anything is read).
//! - Atomic writes go to a new temp file (`O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600), fsync,
//!   rename over the target (rename replaces a link itself, never what it points to), fsync of
//!   the directory.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Mode of every state file: written and read by root only.
pub const FILE_MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io { action: &'static str, path: std::path::PathBuf, source: io::Error },
    #[error(
        "{} is a symbolic link; nginx-ha does not follow links in its state: remove it (or set [daemon] state_dir to the real directory)",
        .0.display()
    )]
    Symlink(std::path::PathBuf),
    #[error("{} is not a regular file; remove it (nginx-ha writes it again)", .0.display())]
    NotAFile(std::path::PathBuf),
    #[error(
        "{} is {size} bytes, more than the {bound} bytes such a file can be; it is not read. Move it aside (nginx-ha writes a new one)",
        path.display()
    )]
    TooLarge { path: std::path::PathBuf, size: u64, bound: u64 },
}

impl StateFileError {
    fn io(action: &'static str, path: &Path, source: io::Error) -> StateFileError {
        StateFileError::Io { action, path: path.to_path_buf(), source }
    }
}

/// Creates the state directory if missing (0755) and checks that it is a directory, not a link.
pub fn ensure_dir(dir: &Path) -> Result<(), StateFileError> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.file_type().is_symlink() => return Err(StateFileError::Symlink(dir.to_path_buf())),
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(StateFileError::io(
                "use the state directory",
                dir,
                io::Error::new(io::ErrorKind::NotADirectory, "not a directory; fix [daemon] state_dir"),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(StateFileError::io("inspect the state directory", dir, e)),
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| StateFileError::io("create the state directory", dir, e))
}

/// The file's contents and metadata; `Ok(None)` when it does not exist. A link, a non-file or
/// a file larger than `bound` is refused.
pub fn read(path: &Path, bound: u64) -> Result<Option<(Vec<u8>, Metadata)>, StateFileError> {
    if let Some(dir) = path.parent()
        && fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink())
    {
        return Err(StateFileError::Symlink(dir.to_path_buf()));
    }
    let file = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(StateFileError::Symlink(path.to_path_buf())),
        Err(e) => return Err(StateFileError::io("read", path, e)),
    };
    let meta = file.metadata().map_err(|e| StateFileError::io("read", path, e))?;
    let kind = meta.file_type();
    if !kind.is_file() || kind.is_fifo() {
        return Err(StateFileError::NotAFile(path.to_path_buf()));
    }
    if meta.len() > bound {
        return Err(StateFileError::TooLarge { path: path.to_path_buf(), size: meta.len(), bound });
    }
    let mut contents = Vec::with_capacity(meta.len() as usize);
    // A file that grows after the check is still cut at the bound (+1 to tell).
    file.take(bound + 1).read_to_end(&mut contents).map_err(|e| StateFileError::io("read", path, e))?;
    if contents.len() as u64 > bound {
        return Err(StateFileError::TooLarge { path: path.to_path_buf(), size: contents.len() as u64, bound });
    }
    Ok(Some((contents, meta)))
}

/// Replaces `path` with `contents` atomically and durably (mode 0600); returns the new file, open.
/// `temp` is the temp file's path, in the same directory.
pub fn write_atomic(path: &Path, temp: &Path, contents: &[u8]) -> Result<File, StateFileError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    ensure_dir(dir)?;
    // A temp file left by a crashed writer with our pid; never a link's target (unlink removes the link).
    let _ = fs::remove_file(temp);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        Ok(file)
    })();
    let file = match written {
        Ok(file) => file,
        Err(e) => {
            let _ = fs::remove_file(temp);
            return Err(StateFileError::io("write", temp, e));
        }
    };
    if let Err(e) = fs::rename(temp, path) {
        let _ = fs::remove_file(temp);
        return Err(StateFileError::io("replace", path, e));
    }
    sync_dir(dir)?;
    Ok(file)
}

/// fsync of a directory (after a rename in it), opened without following a link.
pub fn sync_dir(dir: &Path) -> Result<(), StateFileError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StateFileError::io("sync the directory", dir, e))
}

/// Opens (creating, 0600) a file to lock, without following a link.
pub fn open_lock(path: &Path) -> Result<File, StateFileError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                StateFileError::Symlink(path.to_path_buf())
            } else {
                StateFileError::io("open", path, e)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_0600_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        write_atomic(&path, &dir.path().join(".f.tmp"), b"hello").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(read(&path, 100).unwrap().unwrap().0, b"hello");
        assert!(read(&dir.path().join("missing"), 100).unwrap().is_none());
    }

    #[test]
    fn a_symlinked_file_or_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::write(&elsewhere, b"secret").unwrap();
        let link = dir.path().join("f.json");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        let error = read(&link, 100).unwrap_err();
        assert!(matches!(error, StateFileError::Symlink(_)), "{error}");
        assert!(error.to_string().contains("is a symbolic link"), "{error}");

        // A link at the temp file's name is replaced, never written through.
        let temp = dir.path().join(".g.tmp");
        std::os::unix::fs::symlink(&elsewhere, &temp).unwrap();
        write_atomic(&dir.path().join("g.json"), &temp, b"new").unwrap();
        assert_eq!(fs::read(&elsewhere).unwrap(), b"secret");

        let linked_dir = dir.path().join("state");
        std::os::unix::fs::symlink(dir.path(), &linked_dir).unwrap();
        let error = write_atomic(&linked_dir.join("h.json"), &linked_dir.join(".h.tmp"), b"x").unwrap_err();
        assert!(matches!(error, StateFileError::Symlink(_)), "{error}");
        assert!(matches!(read(&linked_dir.join("g.json"), 100), Err(StateFileError::Symlink(_))));
        assert!(matches!(open_lock(&link), Err(StateFileError::Symlink(_))));
    }

    #[test]
    fn a_file_over_the_bound_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        fs::write(&path, vec![b' '; 101]).unwrap();
        let error = read(&path, 100).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("is 101 bytes, more than the 100 bytes") && text.contains("Move it aside"), "{text}");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(read(&fifo, 100), Err(StateFileError::NotAFile(_))));
    }
}
