//! `nginx-ha upgrade` and SIGUSR2: the daemon re-executes its binary from disk in place. The
//! pid stays (systemd's `Type=notify` unit keeps tracking it), nginx stays our child and is
//! adopted, and the VRRP routers resume MASTER from their state record (see `vrrp::record`),
//! so neither clients nor the peer notice. A new binary that fails its preflight (its own
//! config check, or it cannot even start) is refused and the running daemon goes on.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Counts the re-executions of this process, for the status document.
pub const UPGRADES_ENV: &str = "NGINX_HA_UPGRADES";
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("the new binary {exe} cannot be run: {source}")]
    Spawn { exe: PathBuf, source: std::io::Error },
    #[error("the new binary {exe} failed its preflight ({status}); the running daemon goes on:\n{output}")]
    Preflight { exe: PathBuf, status: String, output: String },
    #[error("the new binary {exe} did not finish its preflight within {} s; the running daemon goes on", PREFLIGHT_TIMEOUT.as_secs())]
    Timeout { exe: PathBuf },
    #[error("cannot re-execute {exe}: {source}")]
    Exec { exe: PathBuf, source: nix::Error },
}

pub struct Upgrader {
    exe: PathBuf,
    args: Vec<OsString>,
    config_path: PathBuf,
}

impl Upgrader {
    /// Records, at start, the binary's path and arguments: once a package replaced the file,
    /// /proc/self/exe names the deleted old one.
    pub fn new(config_path: &Path) -> Upgrader {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/sbin/nginx-ha"));
        let exe = PathBuf::from(exe.to_string_lossy().trim_end_matches(" (deleted)"));
        Upgrader { exe, args: std::env::args_os().collect(), config_path: config_path.to_path_buf() }
    }

    /// This process's re-executions so far.
    pub fn upgrades() -> u32 {
        std::env::var(UPGRADES_ENV).ok().and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    /// Runs the binary on disk with `run --preflight`: it loads and validates the config the
    /// way it would at start, and exits.
    pub async fn preflight(&self) -> Result<String, UpgradeError> {
        let exe = self.exe.clone();
        let mut command = tokio::process::Command::new(&exe);
        command.args(["run", "--preflight", "-c"]).arg(&self.config_path).kill_on_drop(true);
        command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        // Registered, so that the orphan reaper (we are the child subreaper) leaves it to us.
        let child = crate::nginx::process::spawn_owned(|| command.spawn(), tokio::process::Child::id)
            .map_err(|source| UpgradeError::Spawn { exe: exe.clone(), source })?;
        let pid = child.id();
        let output = tokio::time::timeout(PREFLIGHT_TIMEOUT, child.wait_with_output()).await;
        if let Some(pid) = pid {
            crate::nginx::process::release(pid as i32);
        }
        let output = match output {
            Err(_) => return Err(UpgradeError::Timeout { exe }),
            Ok(Err(source)) => return Err(UpgradeError::Spawn { exe, source }),
            Ok(Ok(output)) => output,
        };
        let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            Ok(text.trim().to_string())
        } else {
            Err(UpgradeError::Preflight { exe, status: output.status.to_string(), output: text.trim().to_string() })
        }
    }

    /// Replaces this process with the binary on disk; returns only if that failed.
    pub fn exec(&self) -> UpgradeError {
        let exe = self.exe.clone();
        let to_c = |s: &[u8]| CString::new(s).unwrap_or_default();
        let path = to_c(exe.as_os_str().as_bytes());
        let args: Vec<CString> = self.args.iter().map(|a| to_c(a.as_bytes())).collect();
        // SAFETY: set before execve in this process only; no other thread reads this variable.
        unsafe { std::env::set_var(UPGRADES_ENV, (Self::upgrades() + 1).to_string()) };
        match nix::unistd::execv(&path, &args) {
            Err(source) => UpgradeError::Exec { exe, source },
            Ok(never) => match never {},
        }
    }
}
