use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::keepalived::{self, Loader, Stmt};
use super::*;
use crate::config::{Config, OnNginxFailure};

/// Files in memory; globs match with the glob crate's patterns, sorted like glob(3).
struct Memory(BTreeMap<PathBuf, String>);

impl Memory {
    fn new(files: &[(&str, &str)]) -> Self {
        Memory(files.iter().map(|(p, t)| (PathBuf::from(p), t.to_string())).collect())
    }
}

impl Loader for Memory {
    fn read(&mut self, path: &Path) -> std::io::Result<String> {
        self.0.get(path).cloned().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }
    fn glob(&mut self, pattern: &str) -> Result<Vec<PathBuf>, String> {
        let pattern = glob::Pattern::new(pattern).map_err(|e| e.to_string())?;
        Ok(self.0.keys().filter(|p| pattern.matches_path(p)).cloned().collect())
    }
}

const ROOT: &str = "/etc/keepalived/keepalived.conf";

fn run(text: &str) -> Conversion {
    import(Path::new(ROOT), &mut Memory::new(&[(ROOT, text)])).unwrap()
}

/// The conversion, which must validate, and its diagnostics as `line: message`.
fn convert_ok(text: &str) -> (Config, Vec<String>) {
    let conversion = run(text);
    let config = Config::parse(&conversion.toml, Path::new("out.toml"))
        .unwrap_or_else(|e| panic!("the output does not validate: {e}\n{}", conversion.toml));
    let lines = conversion.diagnostics.iter().map(|d| format!("{}: {}", d.loc.line, d.message)).collect();
    (config, lines)
}

fn has(diagnostics: &[String], line: usize, part: &str) -> bool {
    diagnostics.iter().any(|d| d.starts_with(&format!("{line}: ")) && d.contains(part))
}

#[track_caller]
fn assert_has(diagnostics: &[String], line: usize, part: &str) {
    assert!(has(diagnostics, line, part), "no diagnostic at line {line} with `{part}` in:\n{}", diagnostics.join("\n"));
}

fn words(stmts: &[Stmt]) -> Vec<Vec<String>> {
    stmts.iter().map(|s| s.words.clone()).collect()
}

#[test]
fn comments_quotes_and_escapes_are_read_like_keepalived() {
    let parsed = keepalived::parse_text(
        Path::new("k.conf"),
        "! a comment\n# another\nrouter_id lb1 # trailing\nscript \"/bin/echo # not a comment\"\nname a\\#b ! gone\n",
    );
    assert_eq!(
        words(&parsed.stmts),
        vec![vec!["router_id", "lb1"], vec!["script", "/bin/echo # not a comment"], vec!["name", "a#b"]]
    );
    assert_eq!(parsed.stmts[1].loc.line, 4);
    assert!(parsed.warnings.is_empty());
}

#[test]
fn blocks_on_one_line_or_many_give_the_same_tree() {
    let one = keepalived::parse_text(
        Path::new("k"),
        "vrrp_instance VI_1 { state MASTER virtual_ipaddress { 198.18.0.1 } }\n",
    );
    let many = keepalived::parse_text(
        Path::new("k"),
        "vrrp_instance VI_1\n{\n  state MASTER\n  virtual_ipaddress {\n    198.18.0.1\n  }\n}\n",
    );
    let shape = |p: &keepalived::Parsed| {
        let vi = &p.stmts[0];
        (vi.words.clone(), words(vi.children()), words(vi.children()[0].children()))
    };
    // On one line, keepalived splits only at braces: `state MASTER virtual_ipaddress` is one line.
    assert_eq!(shape(&one).0, vec!["vrrp_instance", "VI_1"]);
    assert_eq!(shape(&one).1, vec![vec!["state", "MASTER", "virtual_ipaddress"]]);
    assert_eq!(shape(&many).1, vec![vec!["state", "MASTER"], vec!["virtual_ipaddress"]]);
    assert_eq!(words(many.stmts[0].children()[1].children()), vec![vec!["198.18.0.1"]]);
    assert_eq!(many.stmts[0].block.as_ref().unwrap().close.as_ref().unwrap().line, 7);
    let attached = keepalived::parse_text(Path::new("k"), "vrrp_instance VI_1{\nstate BACKUP}\n");
    assert_eq!(words(attached.stmts[0].children()), vec![vec!["state", "BACKUP"]]);
}

#[test]
fn unbalanced_braces_are_warnings_with_their_line() {
    let parsed = keepalived::parse_text(Path::new("k"), "}\nglobal_defs {\n  router_id x\n");
    let found: Vec<(usize, &str)> = parsed.warnings.iter().map(|w| (w.loc.line, w.message.as_str())).collect();
    assert!(found.iter().any(|(l, m)| *l == 1 && m.contains("extra `}`")), "{found:?}");
    assert!(found.iter().any(|(l, m)| *l == 2 && m.contains("never closed")), "{found:?}");
}

#[test]
fn includes_expand_sorted_globs_relative_to_the_including_file() {
    let mut files = Memory::new(&[
        (ROOT, "include conf.d/*.conf\ninclude missing/*.conf\n"),
        ("/etc/keepalived/conf.d/20-b.conf", "vrrp_instance B {\n include ../inner/x.conf\n}\n"),
        ("/etc/keepalived/conf.d/10-a.conf", "vrrp_instance A {\n}\n"),
        ("/etc/keepalived/inner/x.conf", "priority 7\n"),
    ]);
    let parsed = keepalived::parse(Path::new(ROOT), &mut files).unwrap();
    assert_eq!(words(&parsed.stmts), vec![vec!["vrrp_instance", "A"], vec!["vrrp_instance", "B"]]);
    let inner = &parsed.stmts[1].children()[0];
    assert_eq!(inner.words, vec!["priority", "7"]);
    assert_eq!((inner.loc.file.as_ref(), inner.loc.line), (Path::new("/etc/keepalived/inner/x.conf"), 1));
    assert_eq!(parsed.warnings.len(), 1, "{:?}", parsed.warnings);
    assert!(parsed.warnings[0].message.contains("matches no file") && parsed.warnings[0].loc.line == 2);
}

#[test]
fn an_unreadable_root_is_an_error_and_an_unreadable_include_a_warning() {
    assert!(matches!(import(Path::new("/nowhere.conf"), &mut Memory::new(&[])), Err(ImportError::Unreadable { .. })));
    let conversion = run("include /etc/keepalived/none.conf\n");
    assert!(conversion.diagnostics[0].to_string().starts_with("/etc/keepalived/keepalived.conf:1: warning: include"));
}

const PAIR: &str = r#"global_defs {
    router_id lb1
}
vrrp_script chk_nginx {
    script "killall -0 nginx"
    interval 2
    weight -20
}
vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 101
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass 1111
    }
    virtual_ipaddress {
        198.18.0.100/24
    }
    track_script {
        chk_nginx
    }
}
"#;

#[test]
fn a_pair_maps_key_by_key_and_the_check_script_becomes_native_tracking() {
    let (config, diagnostics) = convert_ok(PAIR);
    let router = &config.vrrp[0];
    assert_eq!(
        (router.name.as_str(), router.interface.as_str(), router.vrid, router.priority),
        ("VI_1", "eth0", 51, 101)
    );
    assert_eq!((router.version(), router.advert_interval_ms, router.preempt), (2, 1000, true));
    assert_eq!(router.auth_pass.as_deref(), Some("1111"));
    assert_eq!(router.virtual_ips, vec!["198.18.0.100/24"]);
    assert_eq!((router.on_nginx_failure, router.demote_weight), (OnNginxFailure::Demote, 20));
    assert_eq!(config.health.interval_ms, 2000);
    assert_eq!(config.health.http, None);
    assert_has(&diagnostics, 23, "replaced: nginx-ha watches nginx");
    let toml = run(PAIR).toml;
    assert!(toml.starts_with("# nginx-ha.toml converted from /etc/keepalived/keepalived.conf"), "{toml}");
    assert!(toml.contains("`state MASTER` (keepalived.conf:10): no equivalent"), "{toml}");
    assert!(toml.contains("# keepalived.conf:13"), "priority names its line:\n{toml}");
}

#[test]
fn nginx_checks_are_recognised_and_others_are_not() {
    use convert::tests_support::classify_for_test as classify;
    for liveness in [
        "killall -0 nginx",
        "/usr/bin/killall -0 nginx",
        "pidof nginx",
        "/usr/bin/pgrep -x nginx",
        "systemctl is-active --quiet nginx",
        "service nginx status",
        "/etc/keepalived/check_nginx.sh",
        "/usr/local/bin/nginx_check.sh",
        "/bin/sh -c 'pidof nginx'",
    ] {
        assert_eq!(classify(liveness).as_deref(), Some("liveness"), "{liveness}");
    }
    assert_eq!(classify("curl -sf http://localhost/health").as_deref(), Some("http://127.0.0.1/health"));
    assert_eq!(classify("/usr/bin/curl -s -o /dev/null 127.0.0.1:8080/").as_deref(), Some("http://127.0.0.1:8080/"));
    assert_eq!(classify("nc -z 127.0.0.1 443").as_deref(), Some("tcp 127.0.0.1:443"));
    for other in
        ["/usr/local/bin/check_db.sh", "curl -sf http://198.18.0.9/", "killall -0 haproxy", "ping -c1 198.18.0.1"]
    {
        assert_eq!(classify(other), None, "{other}");
    }
}

#[test]
fn weights_map_to_demote_relinquish_or_a_raised_priority() {
    let with = |weight: &str| {
        let text = PAIR.replace("weight -20", weight);
        convert_ok(&text)
    };
    let (config, _) = with("weight 30");
    assert_eq!((config.vrrp[0].priority, config.vrrp[0].demote_weight), (131, 30), "positive: healthy 101 + 30");
    let (config, diagnostics) = with("weight 0");
    assert_eq!(config.vrrp[0].on_nginx_failure, OnNginxFailure::Relinquish);
    assert_has(&diagnostics, 23, "weight 0 does not mean \"no effect\"");
    let (config, _) = with("");
    assert_eq!(config.vrrp[0].on_nginx_failure, OnNginxFailure::Relinquish);
    let (config, diagnostics) = with("weight 200");
    assert_eq!(config.vrrp[0].priority, 254, "keepalived caps at 254");
    assert_eq!(config.vrrp[0].demote_weight, 200);
    let _ = diagnostics;
}

#[test]
fn nopreempt_under_master_is_cleared_like_keepalived_does_and_said_so() {
    let text = PAIR.replace("    state MASTER\n", "    state MASTER\n    nopreempt\n");
    let (config, diagnostics) = convert_ok(&text);
    assert!(config.vrrp[0].preempt, "keepalived preempts today");
    assert_has(&diagnostics, 11, "nopreempt under state MASTER: keepalived clears it");
    let backup = text.replace("state MASTER", "state BACKUP");
    let (config, _) = convert_ok(&backup);
    assert!(!config.vrrp[0].preempt);
}

#[test]
fn track_scripts_keepalived_cannot_find_are_warned_about() {
    let late = PAIR.replace("vrrp_script chk_nginx", "vrrp_script chk_later")
        + "vrrp_script chk_nginx {\n    script \"pidof nginx\"\n}\n";
    let (_, diagnostics) = convert_ok(&late);
    assert_has(&diagnostics, 23, "is defined after vrrp_instance VI_1");
    let (_, diagnostics) = convert_ok(&PAIR.replace("        chk_nginx\n", "        chk_ngnix\n"));
    assert_has(&diagnostics, 23, "track_script `chk_ngnix` names no vrrp_script");
}

#[test]
fn unknown_keywords_are_named_with_a_suggestion_and_what_keepalived_does_with_their_block() {
    let text = "global_defs {\n  route_id lb1\n}\nvrrp_instance VI_1 {\n  interface eth0\n  track_scirpt {\n    chk\n  }\n  virtual_router_id 5\n  virtual_ipaddress {\n    198.18.0.5\n  }\n}\n";
    let (_, diagnostics) = convert_ok(text);
    assert_has(&diagnostics, 2, "unknown keyword `route_id` in global_defs (a typo for `router_id`?)");
    assert_has(&diagnostics, 6, "the `}` at line 8 then closes `vrrp_instance VI_1` early");
    assert_has(&diagnostics, 6, "(a typo for `track_script`?)");
}

#[test]
fn misreads_of_priority_state_auth_and_intervals() {
    let text = "vrrp_instance VI_1 {\n state master\n interface eth0\n virtual_router_id 9\n advert_int 1.4\n authentication {\n  auth_type PASS\n  auth_pass 0123456789\n }\n virtual_ipaddress {\n  198.18.0.9/24 dev eth0 label eth0:9\n }\n}\nvrrp_instance VI_2 {\n state MASTER\n interface eth0\n virtual_router_id 10\n version 3\n authentication {\n  auth_pass x\n }\n virtual_ipaddress {\n  fd00:198:18::10/64\n }\n}\n";
    let (config, diagnostics) = convert_ok(text);
    assert_has(&diagnostics, 2, "state `master` is neither MASTER nor BACKUP");
    assert_has(&diagnostics, 5, "keepalived rounds it to 1 s");
    assert_has(&diagnostics, 7, "keepalived truncates it to 8");
    assert_has(&diagnostics, 11, "label eth0:9");
    assert_has(&diagnostics, 14, "state MASTER without a priority: keepalived makes it 255");
    assert_has(&diagnostics, 20, "authentication with VRRPv3: keepalived ignores it");
    let (one, two) = (&config.vrrp[0], &config.vrrp[1]);
    assert_eq!((one.priority, one.advert_interval_ms, one.auth_pass.as_deref()), (100, 1000, Some("01234567")));
    assert_eq!((two.priority, two.version(), two.auth_pass.as_deref()), (255, 3, None));
}

#[test]
fn an_owner_or_sync_group_ignores_weighted_scripts_so_the_conversion_relinquishes() {
    let text = PAIR.replace("priority 101", "priority 255");
    let (config, diagnostics) = convert_ok(&text);
    assert_eq!(config.vrrp[0].on_nginx_failure, OnNginxFailure::Relinquish);
    assert_has(&diagnostics, 23, "priority 255 (the address owner)");
    let grouped = format!("vrrp_sync_group G {{\n group {{\n  VI_1\n }}\n}}\n{PAIR}");
    let (config, diagnostics) = convert_ok(&grouped);
    assert_eq!(config.vrrp[0].on_nginx_failure, OnNginxFailure::Relinquish);
    assert_has(&diagnostics, 1, "nginx-ha has no sync groups");
    assert_has(&diagnostics, 28, "sync_group_tracking_weight");
}

#[test]
fn a_demote_that_cannot_reach_the_backup_priority_is_warned_about() {
    let dual = PAIR.replace("priority 101", "priority 150").replace("weight -20", "weight -10")
        + "vrrp_instance VI_2 {\n state BACKUP\n interface eth0\n virtual_router_id 52\n priority 100\n virtual_ipaddress {\n  198.18.0.101/24\n }\n}\n";
    let (_, diagnostics) = convert_ok(&dual);
    assert_has(&diagnostics, 9, "demote_weight 10 cannot hand the VIP over: 150 - 10 = 140 is not below 100");
    let enough = dual.replace("weight -10", "weight -60");
    let (_, diagnostics) = convert_ok(&enough);
    assert!(!has(&diagnostics, 9, "cannot hand the VIP over"), "{diagnostics:?}");
}

#[test]
fn lvs_mail_notify_and_static_addresses() {
    let text = "global_defs {\n notification_email {\n  a@b.invalid\n }\n smtp_server 127.0.0.1\n}\nvirtual_server 198.18.0.1 80 {\n real_server 198.18.0.2 80 {\n  weight 1\n }\n}\nstatic_ipaddress {\n 198.18.0.50/24 dev eth0 label eth0:5\n}\nvrrp_instance VI_1 {\n interface eth0\n virtual_router_id 3\n virtual_ipaddress {\n  198.18.0.3\n }\n notify \"/usr/local/bin/n.sh\"\n notify_master /usr/local/bin/m.sh\n}\n";
    let (config, diagnostics) = convert_ok(text);
    assert_has(&diagnostics, 2, "notify");
    assert_has(&diagnostics, 5, "nginx-ha sends no e-mail");
    assert_has(&diagnostics, 7, "LVS (IPVS) is not part of nginx-ha");
    assert_eq!(diagnostics.iter().filter(|d| d.contains("LVS")).count(), 1, "one warning for the whole LVS block");
    assert_eq!(config.alias[0].address, "198.18.0.50/24");
    assert_eq!(config.alias[0].label.as_deref(), Some("eth0:5"));
    assert_eq!(config.vrrp[0].notify.as_deref(), Some(Path::new("/usr/local/bin/n.sh")));
    assert_has(&diagnostics, 21, "keepalived calls it as `PROG INSTANCE VI_1 STATE PRIORITY`");
    assert_has(&diagnostics, 22, "notify_master");
}

#[test]
fn vrrp_version_3_ipv6_and_unicast_map_to_their_keys() {
    let text = "global_defs {\n vrrp_version 3\n v3_checksum_as_v2\n}\nvrrp_instance V6 {\n interface eth0\n virtual_router_id 6\n priority 120\n advert_int 0.25\n unicast_peer {\n  fd00:198:18::2\n }\n virtual_ipaddress {\n  fd00:198:18::100/64\n }\n virtual_ipaddress_excluded {\n  fd00:198:18::101/64\n }\n track_interface {\n  eth1\n }\n}\n";
    let (config, _) = convert_ok(text);
    let router = &config.vrrp[0];
    assert_eq!((router.version(), router.advert_interval_ms), (3, 250));
    assert_eq!(router.unicast_peers.as_deref(), Some(&["fd00:198:18::2".to_string()][..]));
    assert_eq!(router.virtual_ips_excluded, vec!["fd00:198:18::101/64"]);
    assert_eq!(router.track_interfaces, vec!["eth1"]);
    assert!(!router.checksum_pseudo_header);
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    /// Lines made of keepalived's own words, braces, quotes, comments and odd values.
    fn line() -> impl Strategy<Value = String> {
        let word = prop_oneof![
            Just("vrrp_instance".to_string()),
            Just("vrrp_script".to_string()),
            Just("global_defs".to_string()),
            Just("virtual_ipaddress".to_string()),
            Just("track_script".to_string()),
            Just("authentication".to_string()),
            Just("auth_type".to_string()),
            Just("auth_pass".to_string()),
            Just("state".to_string()),
            Just("MASTER".to_string()),
            Just("priority".to_string()),
            Just("weight".to_string()),
            Just("advert_int".to_string()),
            Just("script".to_string()),
            Just("interface".to_string()),
            Just("virtual_router_id".to_string()),
            Just("nopreempt".to_string()),
            Just("unicast_peer".to_string()),
            Just("notify_master".to_string()),
            Just("include".to_string()),
            Just("{".to_string()),
            Just("}".to_string()),
            Just("\"".to_string()),
            Just("#".to_string()),
            Just("\\".to_string()),
            Just("1e30".to_string()),
            Just("-300".to_string()),
            Just("198.18.0.1/24".to_string()),
            Just("fd00::1".to_string()),
            Just("\"killall -0 nginx\"".to_string()),
            "[a-z0-9_.:/-]{0,12}",
            "\\PC{0,4}",
        ];
        prop::collection::vec(word, 0..8).prop_map(|words| words.join(" "))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_text_converts_without_panicking(lines in prop::collection::vec(line(), 0..30)) {
            let conversion = run(&lines.join("\n"));
            prop_assert!(conversion.toml.starts_with("# nginx-ha.toml converted from"));
        }
    }
}

#[test]
fn a_value_block_written_on_one_line_without_braces_is_a_misread() {
    let text = "vrrp_instance V {\n interface eth0\n virtual_router_id 4\n virtual_ipaddress 198.18.0.4/24\n}\n";
    let (config, diagnostics) = convert_ok(text);
    assert_has(
        &diagnostics,
        4,
        "keepalived ignores `198.18.0.4/24` (\"Block virtual_ipaddress has extra parameters\")",
    );
    assert_eq!(config.vrrp[0].virtual_ips, vec!["198.18.0.4/24"]);
}

#[test]
fn what_still_does_not_validate_is_a_warning_at_the_instance() {
    let text = "vrrp_instance A {\n interface eth0\n virtual_router_id 7\n virtual_ipaddress {\n  198.18.0.7\n }\n}\nvrrp_instance B {\n interface eth0\n virtual_router_id 7\n virtual_ipaddress {\n  198.18.0.8\n }\n}\n";
    let conversion = run(text);
    let found: Vec<String> = conversion.diagnostics.iter().map(ToString::to_string).collect();
    assert!(
        found
            .iter()
            .any(|d| d.starts_with("/etc/keepalived/keepalived.conf:8: warning: the converted file does not validate")
                && d.contains("vrid 7 is already used")),
        "{found:#?}"
    );
}
