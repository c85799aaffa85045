//! `nginx-ha import-keepalived` on keepalived.conf files in the shapes operators write
//! (tests/fixtures/keepalived/): the real binary, its stdout parsed as an nginx-ha config, its
//! warnings asserted with their `file:line`. Where keepalived is installed and we are root, the
//! fixtures are also checked with keepalived's own `keepalived -t`, and the lines keepalived
//! complains about in the misreads fixture must be lines the importer warns about.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nginx_ha::config::{Config, OnNginxFailure};

const BIN: &str = env!("CARGO_BIN_EXE_nginx-ha");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keepalived").join(name)
}

struct Imported {
    toml: String,
    stderr: String,
    config: Config,
}

impl Imported {
    /// Whether a stderr line names `file:line` and contains `part`.
    fn warns(&self, file: &str, line: usize, part: &str) -> bool {
        let at = format!("{file}:{line}: ");
        self.stderr.lines().any(|l| l.contains(&at) && l.contains(part))
    }

    #[track_caller]
    fn assert_warns(&self, file: &str, line: usize, part: &str) {
        assert!(self.warns(file, line, part), "no `{file}:{line}: ...{part}...` on stderr:\n{}", self.stderr);
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run nginx-ha")
}

/// Imports a fixture: exit 0, and stdout must be a valid nginx-ha config.
fn import(name: &str) -> Imported {
    let path = fixture(name);
    let output = run(&["import-keepalived", path.to_str().unwrap()]);
    let toml = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "import-keepalived {name} failed: {}\n{stderr}", output.status);
    let config = Config::parse(&toml, Path::new("converted.toml")).unwrap_or_else(|e| {
        panic!("the conversion of {name} does not validate:\n{e}\n--- output:\n{toml}\n--- stderr:\n{stderr}")
    });
    assert!(!stderr.contains("does not validate"), "{stderr}");
    Imported { toml, stderr, config }
}

const FIXTURES: &[&str] = &[
    "pair-master.conf",
    "dual-master.conf",
    "unicast.conf",
    "v3.conf",
    "ipv6.conf",
    "include/keepalived.conf",
    "checks.conf",
    "misreads.conf",
];

#[test]
fn every_fixture_converts_to_a_config_that_validates() {
    for name in FIXTURES {
        let imported = import(name);
        assert!(imported.toml.starts_with("# nginx-ha.toml converted from "), "{name}: header:\n{}", imported.toml);
        for line in imported.stderr.lines() {
            assert!(
                line.contains(".conf:") && (line.contains(": warning: ") || line.contains(": note: ")),
                "{name}: every stderr line names file:line: `{line}`"
            );
        }
    }
}

#[test]
fn a_single_pair_with_check_nginx_sh() {
    let imported = import("pair-master.conf");
    let router = &imported.config.vrrp[0];
    assert_eq!(
        (router.name.as_str(), router.interface.as_str(), router.vrid, router.priority),
        ("VI_1", "eth0", 51, 101)
    );
    assert_eq!((router.version(), router.advert_interval_ms, router.preempt), (2, 1000, true));
    assert_eq!(router.auth_pass.as_deref(), Some("s3cret"));
    assert_eq!(router.virtual_ips, vec!["198.18.0.100/24"]);
    assert_eq!((router.on_nginx_failure, router.demote_weight), (OnNginxFailure::Demote, 20));
    let health = &imported.config.health;
    assert_eq!((health.interval_ms, health.fall, health.rise), (2000, 2, 1));
    imported.assert_warns(
        "pair-master.conf",
        32,
        "note: track_script chk_nginx (`/etc/keepalived/check_nginx.sh`, weight -20) replaced",
    );
    imported.assert_warns("pair-master.conf", 5, "router_id `lb1`");
    assert!(imported.toml.contains("`state MASTER` (pair-master.conf:19): no equivalent"), "{}", imported.toml);
    assert!(imported.toml.contains("priority = 101                      # pair-master.conf:22"), "{}", imported.toml);
}

#[test]
fn dual_master_gives_two_routers_whose_demote_can_hand_over() {
    let imported = import("dual-master.conf");
    let names: Vec<(&str, u8, u8)> =
        imported.config.vrrp.iter().map(|r| (r.name.as_str(), r.vrid, r.priority)).collect();
    assert_eq!(names, vec![("VI_1", 51, 150), ("VI_2", 52, 140)]);
    assert!(imported.config.vrrp.iter().all(|r| r.demote_weight == 20 && r.on_nginx_failure == OnNginxFailure::Demote));
    assert!(!imported.stderr.contains("cannot hand the VIP over"), "150 - 20 < 140:\n{}", imported.stderr);
    imported.assert_warns("dual-master.conf", 25, "label eth0:1");
    imported.assert_warns("dual-master.conf", 30, "keepalived calls it as `PROG INSTANCE VI_1 STATE PRIORITY`");
    let notify = imported.config.vrrp[1].notify.as_deref();
    assert_eq!(notify, Some(Path::new("/usr/local/bin/keepalived-notify.sh")));
}

#[test]
fn unicast_peers_excluded_addresses_tracked_links_and_per_state_scripts() {
    let imported = import("unicast.conf");
    let router = &imported.config.vrrp[0];
    assert_eq!(router.unicast_peers.as_deref(), Some(&["198.18.0.2".to_string()][..]));
    assert_eq!(router.virtual_ips_excluded, vec!["198.18.0.61/24", "198.18.0.62/24"]);
    assert_eq!(router.track_interfaces, vec!["eth1"]);
    assert!(!router.preempt, "nopreempt under state BACKUP");
    assert_eq!(router.on_nginx_failure, OnNginxFailure::Relinquish, "no weight: keepalived's FAULT");
    imported.assert_warns("unicast.conf", 20, "unicast_src_ip");
    imported.assert_warns("unicast.conf", 35, "without a weight keepalived puts the instance in FAULT");
    for (line, state) in [(37, "master"), (38, "backup"), (39, "fault")] {
        imported.assert_warns("unicast.conf", line, &format!("notify_{state}"));
    }
    assert!(imported.toml.contains("#     MASTER) exec /etc/keepalived/to-master.sh ;;"), "{}", imported.toml);
}

#[test]
fn vrrp_v3_from_global_defs_with_sub_second_adverts() {
    let imported = import("v3.conf");
    let router = &imported.config.vrrp[0];
    assert_eq!((router.version(), router.advert_interval_ms, router.preempt_delay_ms), (3, 500, 5000));
    assert_eq!((router.on_nginx_failure, router.demote_weight), (OnNginxFailure::Demote, 50));
    imported.assert_warns("v3.conf", 25, "`/usr/bin/systemctl is-active --quiet nginx`, weight -50) replaced");
}

#[test]
fn ipv6_instances_speak_vrrp_v3() {
    let imported = import("ipv6.conf");
    let versions: Vec<(&str, u8)> = imported.config.vrrp.iter().map(|r| (r.name.as_str(), r.version())).collect();
    assert_eq!(versions, vec![("VI_4", 3), ("VI_6", 3)]);
    assert_eq!(imported.config.vrrp[1].virtual_ips, vec!["fd00:198:18::80/64"]);
    assert!(imported.toml.contains("IPv6 VIPs: keepalived uses VRRPv3"), "{}", imported.toml);
    imported.assert_warns("ipv6.conf", 19, "tracks no nginx check");
}

#[test]
fn includes_with_a_glob_relative_to_the_including_file() {
    let imported = import("include/keepalived.conf");
    let names: Vec<&str> = imported.config.vrrp.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["VI_WEB", "VI_API"], "conf.d/*.conf in sorted order");
    assert_eq!(imported.config.health.interval_ms, 3000, "from scripts/nginx.conf");
    assert_eq!(imported.config.vrrp[1].virtual_ips, vec!["198.18.0.92/24"], "a block on one line");
    let dir = fixture("include");
    imported.assert_warns(&dir.join("conf.d/10-web.conf").display().to_string(), 10, "track_script chk_nginx");
    imported.assert_warns(&dir.join("conf.d/20-api.conf").display().to_string(), 6, "track_script chk_nginx");
    assert!(imported.toml.contains("conf.d/10-web.conf:1"), "comments name the included file:\n{}", imported.toml);
}

#[test]
fn the_check_script_pattern_becomes_native_tracking_and_an_http_probe() {
    let imported = import("checks.conf");
    let health = &imported.config.health;
    assert_eq!(health.http.as_deref(), Some("http://127.0.0.1:8080/healthz"));
    assert_eq!((health.interval_ms, health.timeout_ms, health.fall, health.rise), (3000, 1000, 3, 2));
    let router = &imported.config.vrrp[0];
    assert_eq!((router.on_nginx_failure, router.demote_weight), (OnNginxFailure::Demote, 30));
    imported.assert_warns("checks.conf", 31, "probes [health] http = \"http://127.0.0.1:8080/healthz\"");
    imported.assert_warns(
        "checks.conf",
        32,
        "warning: chk_db (`/usr/local/bin/check_db.sh`) is not an nginx check: not converted",
    );
}

#[test]
fn what_keepalived_ignores_or_misreads_is_warned_about_with_its_line() {
    let imported = import("misreads.conf");
    let f = "misreads.conf";
    imported.assert_warns(f, 3, "unknown keyword `route_id` in global_defs (a typo for `router_id`?)");
    imported.assert_warns(f, 4, "`notification_email`: nginx-ha sends no e-mail: run a `notify` program");
    imported.assert_warns(f, 8, "`smtp_server`");
    imported.assert_warns(f, 12, "unknown keyword `vrrp_script_chk_nginx` in the top level (a keyword fused with its argument? write `vrrp_script chk_nginx`)");
    imported.assert_warns(f, 25, "nopreempt under state MASTER: keepalived clears it");
    imported.assert_warns(f, 33, "track_script `chk_nginx` names no vrrp_script");
    imported.assert_warns(f, 34, "`chk_late` is defined after vrrp_instance VI_1");
    imported.assert_warns(f, 43, "weight 0 does not mean \"no effect\"");
    imported.assert_warns(f, 50, "demote_weight 10 cannot hand the VIP over: 150 - 10 = 140 is not below 100");
    imported.assert_warns(f, 68, "LVS (IPVS) is not part of nginx-ha");
    let vi1 = &imported.config.vrrp[0];
    assert!(vi1.preempt, "converted as keepalived behaves: nopreempt cleared");
    assert!(imported.toml.contains("nopreempt at misreads.conf:25 is cleared by keepalived"), "{}", imported.toml);
    assert_eq!(imported.config.vrrp[1].on_nginx_failure, OnNginxFailure::Relinquish, "weight 0 is FAULT");
    assert_eq!(imported.stderr.matches("LVS").count(), 1, "one warning for the LVS block, not one per line");
}

#[test]
fn an_unreadable_file_exits_1() {
    let output = run(&["import-keepalived", "/nonexistent/keepalived.conf"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/keepalived.conf: cannot read"), "{stderr}");
}

#[test]
fn the_converted_file_passes_nginx_ha_check() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    std::fs::write(
        dir.path().join("nginx.conf"),
        format!("pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 64; }}\nhttp {{ access_log off; client_body_temp_path {d}/body; }}\n"),
    )
    .unwrap();
    for name in ["pair-master.conf", "dual-master.conf", "checks.conf", "include/keepalived.conf"] {
        let imported = import(name);
        let toml = imported.toml.replace(
            "config = \"/etc/nginx/nginx.conf\"",
            &format!("binary = \"{}\"\nconfig = \"{d}/nginx.conf\"", common::process::nginx_binary()),
        );
        assert_ne!(toml, imported.toml, "the [nginx] config line is where it should be");
        let path = dir.path().join("nginx-ha.toml");
        std::fs::write(&path, toml).unwrap();
        let output = run(&["check", "-c", path.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{name}: nginx-ha check failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("nginx-ha.toml: ok") && stdout.contains("nginx -t ok"), "{name}: {stdout}");
    }
}

/// keepalived -t on a fixture inside a namespace with eth0 and eth1 (as on the operator's
/// nodes); its complaints, one per line. None when keepalived or root is missing.
fn keepalived_test(ns: &common::netns::NetNs, name: &str) -> (bool, Vec<String>) {
    let path = fixture(name);
    let output = ns.exec(&["keepalived", "-t", "-f", path.to_str().unwrap(), "-l"]);
    let mut lines: Vec<String> = String::from_utf8_lossy(&output.stderr)
        .lines()
        .chain(String::from_utf8_lossy(&output.stdout).lines())
        .map(str::to_string)
        .collect();
    lines.sort();
    lines.dedup();
    (output.status.success(), lines)
}

fn keepalived_usable() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let installed =
        Command::new("keepalived").arg("--version").output().is_ok_and(|o| o.status.success() || !o.stderr.is_empty());
    if !(root && installed) {
        eprintln!("skipped: keepalived -t needs root and keepalived on PATH (root: {root}, keepalived: {installed})");
    }
    root && installed
}

#[test]
fn fixtures_are_what_keepalived_itself_accepts_and_complains_about() {
    if !keepalived_usable() {
        return;
    }
    let ns = common::netns::NetNs::new();
    for (ifname, peer) in [("eth0", "eth0p"), ("eth1", "eth1p")] {
        ns.ip(&["link", "add", ifname, "type", "veth", "peer", "name", peer]);
    }
    for name in FIXTURES.iter().filter(|n| **n != "misreads.conf") {
        let (ok, lines) = keepalived_test(&ns, name);
        // The check scripts named by absolute path live on the operator's nodes, not here.
        let unexpected: Vec<&String> = lines
            .iter()
            .filter(|l| !l.starts_with("Disabling track script ") || !l.ends_with(" since not found/accessible"))
            .collect();
        assert!(unexpected.is_empty(), "keepalived -t complains about {name}:\n{lines:#?}");
        assert!(ok || !lines.is_empty(), "keepalived -t failed on {name} without saying why");
    }

    // Every line keepalived complains about in the misreads fixture is one the importer warns
    // about, or lies inside the block of an unknown keyword it warns about.
    let imported = import("misreads.conf");
    let (_, lines) = keepalived_test(&ns, "misreads.conf");
    let path = fixture("misreads.conf").display().to_string();
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for line in imported.stderr.lines() {
        if let Some(at) = line.find("it reads the block (lines ") {
            let span = &line[at + "it reads the block (lines ".len()..];
            let span = &span[..span.find(')').unwrap()];
            let (a, b) = span.split_once('-').unwrap();
            ranges.push((a.parse().unwrap(), b.parse().unwrap()));
        }
    }
    let mut checked = 0;
    for line in &lines {
        let Some(rest) = line.strip_prefix(&format!("({path}: Line ")) else { continue };
        let n: usize = rest[..rest.find(')').unwrap()].parse().unwrap();
        let ours = imported.stderr.lines().any(|l| l.contains(&format!("misreads.conf:{n}: warning: ")));
        let inside = ranges.iter().any(|(a, b)| (*a..=*b).contains(&n));
        assert!(
            ours || inside,
            "keepalived complains about line {n} (`{line}`), the importer does not:\n{}",
            imported.stderr
        );
        checked += 1;
    }
    assert!(checked >= 5, "keepalived -t reported fewer misreads than the fixture holds:\n{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("nopreempt will not work with initial state MASTER")), "{lines:#?}");
}

#[test]
fn the_readme_example_is_what_the_importer_prints() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = &readme[readme.find("## Migrating from keepalived").expect("the README section")..];
    let block = |after: &str, fence: &str| {
        let start = section.find(after).unwrap_or_else(|| panic!("`{after}` in the README")) + after.len();
        let start = start + section[start..].find(fence).unwrap() + fence.len();
        section[start..start + section[start..].find("```").unwrap()].to_string()
    };
    let input = block("A typical node of a pair", "```\n");
    let output = block("and writes", "```toml\n");
    let keepalived = std::fs::read_to_string(fixture("pair-master.conf")).unwrap();
    assert_eq!(input, keepalived, "the README shows tests/fixtures/keepalived/pair-master.conf");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keepalived.conf"), &input).unwrap();
    let printed =
        Command::new(BIN).args(["import-keepalived", "keepalived.conf"]).current_dir(dir.path()).output().unwrap();
    assert!(printed.status.success());
    assert_eq!(String::from_utf8(printed.stdout).unwrap(), output, "README.md's converted file is out of date");
    let warnings = block("prints on stderr", "```\n");
    assert_eq!(String::from_utf8(printed.stderr).unwrap(), warnings, "README.md's warnings are out of date");
}
