//! `nginx-ha import-keepalived`: converts a keepalived.conf into an nginx-ha.toml.
//!
//! [`keepalived`] parses keepalived's syntax into statements with their file and line;
//! [`convert`] maps them onto nginx-ha's config and says, for each line, what it could not map
//! and what keepalived itself ignores or misreads. Both are pure: the only I/O is reading the
//! files, through a [`keepalived::Loader`]; [`FsLoader`] is the one on the real file system.

pub mod convert;
pub mod keepalived;
mod keywords;

use std::path::{Path, PathBuf};

pub use convert::{Conversion, Diagnostic, Severity};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{}: cannot read the keepalived config: {source}", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
}

/// Parses `root` (and what it includes, through `loader`) and converts it.
pub fn import(root: &Path, loader: &mut dyn keepalived::Loader) -> Result<Conversion, ImportError> {
    let parsed = keepalived::parse(root, loader)
        .map_err(|source| ImportError::Unreadable { path: root.to_path_buf(), source })?;
    Ok(convert::convert(root, &parsed))
}

/// Reads from the file system; include globs expand as glob(3) does, sorted.
pub struct FsLoader;

impl keepalived::Loader for FsLoader {
    fn read(&mut self, path: &Path) -> std::io::Result<String> {
        let bytes = std::fs::read(path)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn glob(&mut self, pattern: &str) -> Result<Vec<PathBuf>, String> {
        let paths = glob::glob(pattern).map_err(|e| format!("bad pattern: {e}"))?;
        let mut files: Vec<PathBuf> = paths.filter_map(Result::ok).filter(|p| p.is_file()).collect();
        files.sort();
        Ok(files)
    }
}

#[cfg(test)]
mod tests;
