//! Least privilege outside the unit: who may use the control socket (root everything,
//! `[daemon] status_group` only `status` (SO_PEERCRED), everyone else refused with a clear error); a control socket path that is a link or not a socket, a linked state file and an
//! oversized VRRP state record are refused (the last without touching the VIPs). Needs root (to run
//! the CLI as `nobody`, and for the namespace) and nginx. The unit's sandbox itself is proven by
//! packaging/sandbox-test.sh.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use common::local::*;

/// IFA_PROTO of nginx-ha's VIPs.
const VIP_PROTO: u8 = 0x6e;

const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;
/// Debian's `daemon` group: not nobody's, not `status_group`.
const OTHER_GROUP: u32 = 1;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The CLI as uid `uid`, gid `gid`, no supplementary groups.
fn cli_as(setup: &Setup, uid: u32, gid: u32, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).arg("-c").arg(setup.config()).uid(uid).gid(gid);
    // std drops the supplementary groups (setgroups(0)) before setuid.
    command.output().unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Lets `nobody` read the config and reach the socket in the test's temp dir.
fn open_to_others(setup: &Setup) {
    std::fs::set_permissions(setup.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(setup.config(), std::fs::Permissions::from_mode(0o644)).unwrap();
}

#[test]
fn root_may_do_everything_the_status_group_status_only_and_others_nothing() {
    if !is_root() {
        eprintln!("skip: needs root to run the CLI as nobody");
        return;
    }
    let setup = Setup::new("access");
    setup.edit("nginx-ha.toml", "[daemon]\n", "[daemon]\nstatus_group = \"nogroup\"\n");
    open_to_others(&setup);
    let mut daemon = setup.start();
    daemon.wait_serving();
    let socket = std::fs::metadata(setup.path("control.sock")).unwrap();
    assert_eq!(socket.permissions().mode() & 0o777, 0o660, "root's and status_group's");
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&socket), NOGROUP);

    // Root: status and reload.
    assert!(setup.cli(&["status"]).status.success());
    let reload = setup.cli(&["reload"]);
    assert!(reload.status.success(), "{}", text(&reload));

    // nobody:nogroup is in status_group: status yes, reload and alias add no.
    let status = cli_as(&setup, NOBODY, NOGROUP, &["status", "--json"]);
    assert!(status.status.success(), "{}", text(&status));
    let document: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(document["nginx"]["state"], "running");
    let reload = cli_as(&setup, NOBODY, NOGROUP, &["reload"]);
    assert!(!reload.status.success());
    assert!(text(&reload).contains("`reload` needs root") && text(&reload).contains("`nogroup`"), "{}", text(&reload));
    let add = cli_as(&setup, NOBODY, NOGROUP, &["alias", "add", "198.18.0.107/24", "--dev", "lo"]);
    assert!(!add.status.success());
    assert!(text(&add).contains("`alias add` needs root"), "{}", text(&add));

    // nobody in another group: nothing, not even status (the socket's mode keeps it out).
    for command in ["status", "reload"] {
        let refused = cli_as(&setup, NOBODY, OTHER_GROUP, &[command]);
        assert!(!refused.status.success());
        let said = text(&refused);
        assert!(said.contains("permission denied") && said.contains("[daemon] status_group"), "{command}: {said}");
    }

    // The daemon logged each refusal it saw, and kept serving.
    let log = daemon.log_text();
    assert!(log.matches("control socket: refused").count() >= 2, "{log}");
    assert!(setup.cli(&["status"]).status.success());
    daemon.terminate();
}

#[test]
fn without_status_group_a_non_root_status_is_refused() {
    if !is_root() {
        eprintln!("skip: needs root to run the CLI as nobody");
        return;
    }
    let setup = Setup::new("access");
    open_to_others(&setup);
    let mut daemon = setup.start();
    daemon.wait_serving();
    assert_eq!(std::fs::metadata(setup.path("control.sock")).unwrap().permissions().mode() & 0o777, 0o600);
    let status = cli_as(&setup, NOBODY, NOGROUP, &["status"]);
    assert!(!status.status.success());
    let said = text(&status);
    assert!(said.contains("permission denied") && said.contains("run as root"), "{said}");
    daemon.terminate();
}

#[test]
fn a_control_socket_path_that_is_a_link_or_not_a_socket_is_refused() {
    let setup = Setup::new("access");
    let socket = setup.path("control.sock");
    let target = setup.path("elsewhere");
    std::fs::write(&target, b"keep me").unwrap();

    std::os::unix::fs::symlink(&target, &socket).unwrap();
    let mut daemon = setup.start();
    let status = daemon.wait_exit();
    assert!(!status.success());
    let log = daemon.log_text();
    assert!(
        log.contains(&format!("{} is a symbolic link", socket.display())) && log.contains("remove the link"),
        "{log}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    assert!(std::fs::symlink_metadata(&socket).unwrap().file_type().is_symlink(), "the link is left as it was");

    std::fs::remove_file(&socket).unwrap();
    std::fs::write(&socket, b"not a socket").unwrap();
    let mut daemon = setup.start();
    assert!(!daemon.wait_exit().success());
    let log = daemon.log_text();
    assert!(log.contains("exists and is not a socket") && log.contains("move it away"), "{log}");
    assert_eq!(std::fs::read(&socket).unwrap(), b"not a socket");
}

#[test]
fn a_linked_alias_store_is_refused() {
    let setup = Setup::new("access");
    let state = setup.path("state");
    std::fs::create_dir(&state).unwrap();
    let target = setup.path("elsewhere.json");
    std::fs::write(&target, b"{\"version\": 1, \"aliases\": []}\n").unwrap();
    std::os::unix::fs::symlink(&target, state.join("aliases.json")).unwrap();
    // Without a daemon the CLI reads the store itself.
    let list = setup.cli(&["alias", "list"]);
    assert!(text(&list).contains("aliases.json is a symbolic link"), "{}", text(&list));
    let del = setup.cli(&["alias", "del", "198.18.0.107/24", "--dev", "lo"]);
    assert!(!del.status.success());
    assert!(text(&del).contains("aliases.json is a symbolic link"), "{}", text(&del));
    assert_eq!(std::fs::read(&target).unwrap(), b"{\"version\": 1, \"aliases\": []}\n");
}

#[test]
fn an_oversized_state_record_stops_the_start_and_leaves_the_vips() {
    use common::cluster::{Node, router};
    use common::netns::Bridge;
    if !is_root() {
        eprintln!("skip: needs root for the namespace");
        return;
    }
    let bridge = Bridge::new();
    let mut node = Node::new(&bridge, "A", "198.18.0.1/24");
    node.configure(&router("VI_1", 51, 100, "198.18.0.100/24", ""));
    // What a crashed MASTER leaves: its tagged VIP, and here a record far over the bound.
    node.ns.add_tagged_address("eth0", "198.18.0.100/24", VIP_PROTO);
    let state = node.path("state");
    std::fs::create_dir(&state).unwrap();
    let record = state.join("vrrp-state.json");
    std::fs::write(&record, vec![b' '; 300 * 1024]).unwrap();

    node.start();
    assert!(!node.wait_exit().success());
    let log = node.log();
    assert!(
        log.contains(&format!("{} is 307200 bytes, more than the 262144 bytes", record.display()))
            && log.contains("no VIP is touched")
            && log.contains("Move it aside"),
        "{log}"
    );
    assert!(node.has_address("198.18.0.100"), "the VIP is left where it was");
    assert_eq!(std::fs::metadata(&record).unwrap().len(), 300 * 1024, "the record is left for the operator");

    // Moved aside, the next start goes on as without a record.
    std::fs::rename(&record, state.join("vrrp-state.json.aside")).unwrap();
    node.start();
    node.wait_state("VI_1", "MASTER");
}
