//! Process and HTTP helpers shared by the loopback and the namespace tests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Child;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_nginx-ha");
/// Generous: tests assert behaviour; bench/ measures time.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub fn nginx_binary() -> &'static str {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("nginx is installed (.ci/run installs it)")
}

pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a pid the test started or saw as its own nginx.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// A live (not zombie) nginx process.
pub fn is_nginx(pid: i32) -> bool {
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')));
    !zombie && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| cmdline.starts_with(b"nginx"))
}

/// SIGTERM, a few seconds' grace, then SIGKILL; always reaped.
pub fn stop_child(mut child: Child) {
    signal(child.id() as i32, libc::SIGTERM);
    for _ in 0..100 {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// One HTTP/1.0 GET of `/`: the body of a 200 answer, trimmed, or None on any failure.
pub fn http_get(address: SocketAddr, timeout: Duration) -> Option<String> {
    let answer = http_exchange(address, timeout)?;
    answer.starts_with("HTTP/1.1 200").then(|| answer.split("\r\n\r\n").nth(1).unwrap_or("").trim().to_string())
}

/// One HTTP/1.0 GET of `/`: the whole answer (status line, headers, body), or None on any failure.
pub fn http_exchange(address: SocketAddr, timeout: Duration) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// Where spawned pids are recorded for `.ci/sweep`.
pub const PID_RECORDS: &str = "/tmp/nginx-ha-tests/pids";

/// Field 22 of /proc/PID/stat: the start time in clock ticks since boot (with the pid, it names
/// one process: a reused pid has another start time).
pub fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(19).map(str::to_owned)
}

/// Records a process this test started (`PID START OWNER OWNER_START`, OWNER being this test
/// process) so that `.ci/sweep`, run before the tests, can stop it if this test process was
/// killed before stopping it; the sweep only stops a recorded pid whose start time still matches
/// and whose owner is gone. Best effort: a test never fails for want of a record.
pub fn record_pid(pid: u32) {
    let (Some(started), Some(owner_started)) = (start_time(pid), start_time(std::process::id())) else { return };
    let owner = std::process::id();
    let _ = std::fs::create_dir_all(PID_RECORDS);
    let _ =
        std::fs::write(format!("{PID_RECORDS}/{owner}-{pid}"), format!("{pid} {started} {owner} {owner_started}\n"));
}
