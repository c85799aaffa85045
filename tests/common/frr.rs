//! FRR (Debian `frr`, zebra + bgpd) in a test namespace: each instance has its own directory
//! (config, vty sockets, zebra socket, pid files, logs), its daemons are started directly
//! (no watchfrr, no service) and stopped by pid. The config is loaded the way Debian's
//! frrinit.sh loads /etc/frr/frr.conf: `vtysh -b` (integrated config), here with
//! `--config_dir` and `--vty_socket` pointing at the instance's directory.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::netns::{NetNs, wait_until};
use super::process::{record_pid, stop_child};

pub const ZEBRA: &str = "/usr/lib/frr/zebra";
pub const BGPD: &str = "/usr/lib/frr/bgpd";
pub const VTYSH: &str = "/usr/bin/vtysh";

/// The FRR pieces that are not installed (and whether the `frr` user exists), or None.
pub fn missing() -> Option<String> {
    let mut missing: Vec<String> =
        [ZEBRA, BGPD, VTYSH].iter().filter(|p| !Path::new(p).exists()).map(|p| p.to_string()).collect();
    if frr_user().is_none() {
        missing.push("user frr".into());
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// uid and gid of the `frr` user the daemons drop to (they create their sockets as it).
fn frr_user() -> Option<(u32, u32)> {
    let name = CString::new("frr").unwrap();
    // SAFETY: getpwnam with a valid C string; the fields are copied out at once (tests
    // call this before starting threads that would use getpw*).
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    (!entry.is_null()).then(|| unsafe { ((*entry).pw_uid, (*entry).pw_gid) })
}

pub struct Frr {
    pub name: String,
    dir: PathBuf,
    // Stopped in this order: bgpd first (its session goes down), then zebra.
    bgpd: Option<Child>,
    zebra: Option<Child>,
}

impl Frr {
    /// Makes `parent/NAME-frr/` (owned by the frr user), writes `config` there as frr.conf,
    /// starts zebra and bgpd inside `ns` and loads the config with `vtysh -b`, which fails
    /// the test on any line FRR rejects.
    pub fn start(ns: &NetNs, parent: &Path, name: &str, config: &str) -> Frr {
        let (uid, gid) = frr_user().expect("the frr user (apt-get install frr)");
        let dir = parent.join(format!("{name}-frr"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("frr.conf"), config).unwrap();
        std::fs::write(dir.join("vtysh.conf"), "service integrated-vtysh-config\n").unwrap();
        // Each daemon reads this at start; the real config comes through vtysh -b.
        std::fs::write(dir.join("empty.conf"), "").unwrap();
        for path in [parent, &dir] {
            chown(path, uid, gid);
        }
        for file in ["frr.conf", "vtysh.conf", "empty.conf"] {
            chown(&dir.join(file), uid, gid);
        }
        let mut frr = Frr { name: name.into(), dir, bgpd: None, zebra: None };
        frr.zebra = Some(frr.spawn(ns, "zebra", ZEBRA));
        wait_until(Duration::from_secs(10), &format!("{name}: zebra's sockets"), || {
            frr.dir.join("zebra.vty").exists() && frr.dir.join("zserv.api").exists()
        });
        frr.bgpd = Some(frr.spawn(ns, "bgpd", BGPD));
        wait_until(Duration::from_secs(10), &format!("{name}: bgpd's vty socket"), || {
            frr.dir.join("bgpd.vty").exists()
        });
        let boot = Command::new(VTYSH)
            .arg("-b")
            .arg("--config_dir")
            .arg(&frr.dir)
            .arg("--vty_socket")
            .arg(&frr.dir)
            .output()
            .unwrap();
        assert!(
            boot.status.success(),
            "{name}: vtysh -b rejected frr.conf ({}):\n{}{}",
            boot.status,
            String::from_utf8_lossy(&boot.stdout),
            String::from_utf8_lossy(&boot.stderr)
        );
        frr
    }

    fn spawn(&self, ns: &NetNs, daemon: &str, binary: &str) -> Child {
        let log = std::fs::File::create(self.dir.join(format!("{daemon}.log"))).unwrap();
        let d = |file: &str| self.dir.join(file);
        // `ip netns exec` execs the daemon: the child's pid is the daemon's. It runs in the
        // foreground, drops to the frr user, keeps its vty on the socket only (-P 0).
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), binary, "-f"])
            .arg(d("empty.conf"))
            .arg("-i")
            .arg(d(&format!("{daemon}.pid")))
            .arg("-z")
            .arg(d("zserv.api"))
            .arg("--vty_socket")
            .arg(&self.dir)
            .args(["-P", "0", "--log", "stdout", "--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{binary}: {e}"));
        record_pid(child.id());
        child
    }

    /// `vtysh -c C1 -c C2 …` against this instance: its output.
    pub fn vtysh(&self, commands: &[&str]) -> String {
        let mut command = Command::new(VTYSH);
        command.arg("--config_dir").arg(&self.dir).arg("--vty_socket").arg(&self.dir);
        for c in commands {
            command.args(["-c", c]);
        }
        let out = command.output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A `show … json` command, parsed (Null when FRR does not answer with JSON).
    pub fn json(&self, command: &str) -> serde_json::Value {
        serde_json::from_str(&self.vtysh(&[command])).unwrap_or(serde_json::Value::Null)
    }

    /// Waits until the BGP session with `neighbor` is Established.
    pub fn wait_established(&self, neighbor: &str) {
        wait_until(Duration::from_secs(30), &format!("{}: BGP with {neighbor} established", self.name), || {
            self.json(&format!("show bgp neighbors {neighbor} json"))[neighbor]["bgpState"] == "Established"
        });
    }

    pub fn log(&self) -> String {
        ["zebra", "bgpd"]
            .iter()
            .map(|d| {
                format!("-- {d} --\n{}", std::fs::read_to_string(self.dir.join(format!("{d}.log"))).unwrap_or_default())
            })
            .collect()
    }
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

impl Drop for Frr {
    fn drop(&mut self) {
        for child in [self.bgpd.take(), self.zebra.take()].into_iter().flatten() {
            stop_child(child);
        }
        if std::thread::panicking() {
            eprintln!("==== {} FRR logs ====\n{}", self.name, self.log());
        }
    }
}
