//! BIRD 2 in a test namespace: its own config, control socket and pid file in a temp dir,
//! run in the foreground and stopped by pid.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::netns::{NetNs, wait_until};
use super::process::stop_child;

pub const BIRD: &str = "/usr/sbin/bird";
pub const BIRDC: &str = "/usr/sbin/birdc";

pub struct Bird {
    pub name: String,
    socket: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Bird {
    /// Writes `config` to `dir/NAME-bird.conf` and starts BIRD inside `ns` with it.
    pub fn start(ns: &NetNs, dir: &Path, name: &str, config: &str) -> Bird {
        let conf = dir.join(format!("{name}-bird.conf"));
        std::fs::write(&conf, config).unwrap();
        let (socket, pid, log) = (
            dir.join(format!("{name}-bird.ctl")),
            dir.join(format!("{name}-bird.pid")),
            dir.join(format!("{name}-bird.log")),
        );
        let log_file = std::fs::File::create(&log).unwrap();
        // `ip netns exec` execs BIRD: the child's pid is BIRD's.
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), BIRD, "-f", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(&pid)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("BIRD 2 is installed (/usr/sbin/bird, Debian bird2)");
        let bird = Bird { name: name.into(), socket, log, child: Some(child) };
        wait_until(Duration::from_secs(10), &format!("{name}: BIRD's control socket"), || {
            bird.birdc(&["show", "status"]).contains("Daemon is up and running")
        });
        bird
    }

    /// `birdc -s SOCKET ARGS…`: its output (empty when BIRD does not answer).
    pub fn birdc(&self, args: &[&str]) -> String {
        let out = Command::new(BIRDC).arg("-s").arg(&self.socket).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until BGP session `protocol` is Established.
    pub fn wait_established(&self, protocol: &str) {
        wait_until(Duration::from_secs(30), &format!("{}: BGP {protocol} established", self.name), || {
            self.birdc(&["show", "protocols", protocol]).contains("Established")
        });
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child);
        }
        if std::thread::panicking() {
            eprintln!("==== {} BIRD log ====\n{}", self.name, self.log());
        }
    }
}
