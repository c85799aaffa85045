//! Processes, natively: pidfds for exit notification (no `kill -0` polling), /proc (through the
//! `procfs` crate) for the process tree and the figures the metrics show, and the orphan reaper
//! nginx-ha needs as a child subreaper.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use procfs::ProcError;
use procfs::WithSystemInfo;
use procfs::process::{FDTarget, Process};
use tokio::io::unix::AsyncFd;

/// A process handle that cannot be confused with a later process reusing the pid.
#[derive(Debug)]
pub struct Pidfd {
    pid: i32,
    fd: AsyncFd<OwnedFd>,
}

impl Pidfd {
    /// Fails with ESRCH when the process is already gone (a zombie still counts as present).
    pub fn open(pid: i32) -> io::Result<Pidfd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just gave us this fd and nobody else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
        // SAFETY: an OwnedFd is open and always returns the same fd until dropped with the AsyncFd.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Pidfd { pid, fd })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Resolves when the process has exited (the pidfd turns readable).
    pub async fn exited(&self) {
        // Readability is final for a pidfd, so an error here can only mean "gone" as well.
        let _ = self.fd.readable().await;
    }

    pub fn has_exited(&self) -> bool {
        let mut fds = [nix::poll::PollFd::new(self.fd.as_fd(), nix::poll::PollFlags::POLLIN)];
        matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0)
    }

    /// Signals exactly this process, even if its pid was reused meanwhile.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        // SAFETY: pidfd_send_signal with a valid fd, a signal number, no siginfo, no flags.
        let rc = unsafe {
            libc::syscall(libc::SYS_pidfd_send_signal, self.fd.as_raw_fd(), signal as i32, std::ptr::null::<u8>(), 0)
        };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }
}

/// The listening sockets (TCP, UDP-less: `SO_ACCEPTCONN`) of a process, duplicated into ours
/// with `pidfd_getfd` (the kernel's way to take an fd from another process; needs the ptrace
/// right over it: root, or the same user). The copies are close-on-exec.
pub fn listening_sockets(pidfd: &Pidfd) -> io::Result<Vec<OwnedFd>> {
    let mut sockets = Vec::new();
    let fds = Process::new(pidfd.pid()).and_then(|process| process.fd()).map_err(into_io)?;
    for info in fds.flatten() {
        if !matches!(info.target, FDTarget::Socket(_)) {
            continue;
        }
        // SAFETY: pidfd_getfd with a valid pidfd, an fd number and no flags returns a new fd or -1.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.fd.as_raw_fd(), info.fd, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd the kernel just gave us.
        let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
        let mut listening: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt into a c_int of the given length.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ACCEPTCONN,
                (&mut listening as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc == 0 && listening != 0 {
            sockets.push(fd);
        }
    }
    Ok(sockets)
}

fn into_io(error: ProcError) -> io::Error {
    match error {
        ProcError::NotFound(_) => io::Error::from(io::ErrorKind::NotFound),
        ProcError::PermissionDenied(_) => io::Error::from(io::ErrorKind::PermissionDenied),
        ProcError::Io(error, _) => error,
        other => io::Error::other(other.to_string()),
    }
}

/// Children whose exit status a specific waiter collects (the nginx master, `nginx -t`, hooks).
/// The orphan reaper leaves them alone; everything else that is our child is an orphan
/// reparented to us (we are the child subreaper), typically a worker whose master died.
static OWNED: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// Spawns while holding the registry lock, so the reaper can never see the child unregistered.
pub fn spawn_owned<T>(spawn: impl FnOnce() -> io::Result<T>, pid_of: impl Fn(&T) -> Option<u32>) -> io::Result<T> {
    let mut owned = OWNED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let child = spawn()?;
    if let Some(pid) = pid_of(&child) {
        owned.insert(pid as i32);
    }
    Ok(child)
}

/// The waiter has collected the exit status.
pub fn release(pid: i32) {
    OWNED.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&pid);
}

/// Reaps every exited child that no waiter owns; returns the pids reaped.
pub fn reap_orphans() -> Vec<i32> {
    let owned = OWNED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut reaped = Vec::new();
    for pid in own_children() {
        if owned.contains(&pid) {
            continue;
        }
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => {}
            Ok(_) => reaped.push(pid),
        }
    }
    reaped
}

/// Our children that no waiter owns: orphans reparented to us.
pub fn orphans() -> Vec<i32> {
    let owned = OWNED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    own_children().into_iter().filter(|pid| !owned.contains(pid)).collect()
}

/// Children of every thread of this process (a reparented orphan may hang off any thread).
fn own_children() -> Vec<i32> {
    let own = std::process::id() as i32;
    let Ok(tasks) = Process::myself().and_then(|me| me.tasks()) else {
        return children_by_scan(own);
    };
    let mut children = BTreeSet::new();
    for task in tasks.flatten() {
        match task.children() {
            Ok(list) => children.extend(list.into_iter().map(|pid| pid as i32)),
            Err(_) => return children_by_scan(own),
        }
    }
    children.into_iter().collect()
}

/// Children of a single-threaded process such as the nginx master.
pub fn children_of(pid: i32) -> Vec<i32> {
    let Ok(process) = Process::new(pid) else { return Vec::new() };
    match process.task_from_tid(pid).and_then(|task| task.children()) {
        Ok(list) => list.into_iter().map(|pid| pid as i32).collect(),
        // A kernel without /proc/PID/task/TID/children (the process itself is there).
        Err(ProcError::NotFound(_)) if process.is_alive() => children_by_scan(pid),
        Err(_) => Vec::new(),
    }
}

/// Fallback for kernels without /proc/PID/task/TID/children: scan every process's parent.
fn children_by_scan(parent: i32) -> Vec<i32> {
    let Ok(processes) = procfs::process::all_processes() else { return Vec::new() };
    processes
        .flatten()
        .filter(|process| process.stat().is_ok_and(|stat| stat.ppid == parent))
        .map(|process| process.pid())
        .collect()
}

pub fn parent_of(pid: i32) -> Option<i32> {
    Some(Process::new(pid).ok()?.stat().ok()?.ppid)
}

/// When the process started: its start time in clock ticks after boot, plus the boot time.
pub fn start_time(pid: i32) -> Option<std::time::SystemTime> {
    let ticks = Process::new(pid).ok()?.stat().ok()?.starttime;
    let boot = procfs::boot_time_secs().ok()?;
    let after_boot = std::time::Duration::from_millis(ticks * 1000 / procfs::ticks_per_second().max(1));
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(boot) + after_boot)
}

/// The process title (nginx rewrites argv: "nginx: worker process").
pub fn title(pid: i32) -> Option<String> {
    let arguments = Process::new(pid).ok()?.cmdline().ok()?;
    Some(arguments.join(" ").trim().to_string())
}

/// What the metrics show of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessFigures {
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    /// User and system time.
    pub cpu_seconds: f64,
    pub open_fds: u64,
    /// The soft RLIMIT_NOFILE; None when unlimited.
    pub max_fds: Option<u64>,
    pub threads: u64,
    /// Unix time.
    pub start_time_seconds: f64,
}

/// The process's figures from /proc; None when it is gone (or /proc denies them).
pub fn figures(pid: i32) -> Option<ProcessFigures> {
    let process = Process::new(pid).ok()?;
    let stat = process.stat().ok()?;
    let system = procfs::current_system_info();
    let ticks = procfs::ticks_per_second().max(1) as f64;
    let max_fds = match process.limits().ok()?.max_open_files.soft_limit {
        procfs::process::LimitValue::Value(limit) => Some(limit),
        procfs::process::LimitValue::Unlimited => None,
    };
    let boot = procfs::boot_time_secs().unwrap_or(0) as f64;
    Some(ProcessFigures {
        resident_bytes: stat.rss_bytes().with_system_info(system),
        virtual_bytes: stat.vsize,
        cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
        open_fds: process.fd_count().ok()? as u64,
        max_fds,
        threads: u64::try_from(stat.num_threads).unwrap_or(0),
        start_time_seconds: boot + stat.starttime as f64 / ticks,
    })
}

/// The serving workers of a master (not the cache manager/loader, not old workers draining).
pub fn workers_of(master: i32) -> Vec<i32> {
    children_of(master)
        .into_iter()
        .filter(|pid| title(*pid).is_some_and(|t| t.contains("worker process") && !t.contains("shutting down")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pidfd_reports_exit_and_spawn_owned_shields_from_the_reaper() {
        let mut child = spawn_owned(
            || std::process::Command::new("sleep").arg("0.2").spawn(),
            |c: &std::process::Child| Some(c.id()),
        )
        .unwrap();
        let pid = child.id() as i32;
        let pidfd = Pidfd::open(pid).unwrap();
        assert!(!pidfd.has_exited());
        assert_eq!(parent_of(pid), Some(std::process::id() as i32));
        pidfd.exited().await;
        assert!(pidfd.has_exited());
        assert!(!reap_orphans().contains(&pid), "owned children are reaped by their waiter");
        assert!(child.wait().unwrap().success());
        release(pid);
    }

    #[tokio::test]
    async fn pidfd_signal_kills() {
        let mut child = spawn_owned(
            || std::process::Command::new("sleep").arg("30").spawn(),
            |c: &std::process::Child| Some(c.id()),
        )
        .unwrap();
        let pidfd = Pidfd::open(child.id() as i32).unwrap();
        pidfd.signal(Signal::SIGKILL).unwrap();
        pidfd.exited().await;
        assert!(!child.wait().unwrap().success());
        release(child.id() as i32);
    }

    #[tokio::test]
    async fn listening_sockets_of_self_are_found_and_others_left_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let connected = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let client_port = connected.local_addr().unwrap().port();
        let me = Pidfd::open(std::process::id() as i32).unwrap();
        let found = listening_sockets(&me).unwrap();
        let port = |fd: &OwnedFd| {
            nix::sys::socket::getsockname::<nix::sys::socket::SockaddrIn>(fd.as_raw_fd()).ok().map(|a| a.port())
        };
        let wanted = listener.local_addr().unwrap().port();
        assert!(found.iter().any(|fd| port(fd) == Some(wanted)), "the listener is found");
        assert!(found.iter().all(|fd| port(fd) != Some(client_port)), "a connected socket is not taken");
    }

    #[test]
    fn start_time_of_self_is_recent() {
        let started = start_time(std::process::id() as i32).unwrap();
        let age = std::time::SystemTime::now().duration_since(started).unwrap_or_default();
        assert!(age < std::time::Duration::from_secs(600), "{age:?}");
    }

    #[test]
    fn figures_of_self() {
        let me = figures(std::process::id() as i32).unwrap();
        assert!(me.resident_bytes > 1024 * 1024, "{me:?}");
        assert!(me.open_fds >= 3 && me.threads >= 1 && me.virtual_bytes >= me.resident_bytes, "{me:?}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!((now - me.start_time_seconds).abs() < 600.0, "{me:?}");
        assert!(figures(i32::MAX).is_none());
    }

    #[test]
    fn titles_and_children_of_self() {
        let me = std::process::id() as i32;
        assert!(title(me).is_some());
        assert!(parent_of(me).is_some());
        assert!(children_of(i32::MAX).is_empty());
    }
}
