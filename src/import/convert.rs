//! The mapping from a parsed keepalived.conf to an nginx-ha.toml, with a diagnostic for every
//! keyword it cannot map and for everything keepalived itself ignores or reads differently
//! from what the file seems to say.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use super::keepalived::{Loc, Parsed, Stmt};
use super::keywords::{self, suggest};
use crate::config::{HttpProbeUrl, parse_net};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Converted, but by other means than keepalived's (e.g. a check script became native tracking).
    Note,
    /// Not converted, or keepalived does not do what the line says.
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub loc: Loc,
    pub severity: Severity,
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let severity = match self.severity {
            Severity::Note => "note",
            Severity::Warning => "warning",
        };
        write!(f, "{}: {severity}: {}", self.loc, self.message)
    }
}

/// The converted file and what the operator must know about it, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion {
    pub toml: String,
    pub diagnostics: Vec<Diagnostic>,
}

/// What a tracked check turns into.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Probe {
    /// Process liveness, which nginx-ha watches natively.
    Liveness,
    Http(String),
    Tcp(String),
}

#[derive(Debug, Clone)]
struct Check {
    loc: Loc,
    /// Index of the top-level statement that defines it (keepalived resolves track_script while parsing).
    order: usize,
    command: Option<(String, Loc)>,
    /// None: not an nginx check.
    probe: Option<Probe>,
    interval_ms: Option<(u64, Loc)>,
    timeout_ms: Option<(u64, Loc)>,
    weight: Option<(i32, Loc)>,
    reverse: bool,
    rise: Option<(u32, Loc)>,
    fall: Option<(u32, Loc)>,
    /// vrrp_track_process rather than vrrp_script.
    process: bool,
}

#[derive(Default)]
struct Globals {
    router_id: Option<(String, Loc)>,
    vrrp_version: Option<(u8, Loc)>,
    v3_checksum_as_v2: Option<Loc>,
}

struct SyncGroup {
    members: Vec<String>,
    tracking_weight: bool,
}

/// One `key = value  # comment` line or a comment line of the output.
enum Line {
    Key { key: &'static str, value: String, comment: Option<String> },
    Comment(String),
}

struct Table {
    header: &'static str,
    comment: Option<String>,
    lines: Vec<Line>,
}

impl Table {
    fn new(header: &'static str, comment: Option<String>) -> Self {
        Table { header, comment, lines: Vec::new() }
    }
    fn key(&mut self, key: &'static str, value: String, comment: Option<String>) {
        self.lines.push(Line::Key { key, value, comment });
    }
    fn comment(&mut self, text: String) {
        self.lines.push(Line::Comment(text));
    }
}

struct Router {
    name: String,
    loc: Loc,
    state_master: Option<bool>,
    priority: u8,
    on_failure_demote: Option<u8>,
    table: Table,
}

struct Converter<'a> {
    root: &'a Path,
    diagnostics: Vec<Diagnostic>,
    globals: Globals,
    checks: HashMap<String, Check>,
    sync_groups: Vec<SyncGroup>,
    /// Checks some instance tracks, in the order first tracked.
    used_checks: Vec<String>,
    aliases: Vec<Table>,
}

/// Converts a parsed keepalived.conf; `root` is the file as the operator named it.
pub fn convert(root: &Path, parsed: &Parsed) -> Conversion {
    let mut c = Converter {
        root,
        diagnostics: Vec::new(),
        globals: Globals::default(),
        checks: HashMap::new(),
        sync_groups: Vec::new(),
        used_checks: Vec::new(),
        aliases: Vec::new(),
    };
    for warning in &parsed.warnings {
        c.warn(&warning.loc, warning.message.clone());
    }
    // First the definitions every instance may refer to, then the instances in file order.
    let mut instances = Vec::new();
    for (order, stmt) in parsed.stmts.iter().enumerate() {
        match stmt.keyword() {
            "global_defs" => c.global_defs(stmt),
            "vrrp_script" | "vrrp_track_process" => c.check_definition(order, stmt),
            "vrrp_instance" => instances.push((order, stmt)),
            "vrrp_sync_group" => c.sync_group(stmt),
            "static_ipaddress" => c.static_ipaddress(stmt),
            _ => c.other_root(stmt),
        }
    }
    let mut routers: Vec<Router> = instances.into_iter().filter_map(|(order, stmt)| c.instance(order, stmt)).collect();
    c.check_elections(&mut routers);
    let located: Vec<(String, Loc)> = routers.iter().map(|r| (format!("[{}]", r.name), r.loc.clone())).collect();
    let toml = c.render(routers);
    let mut diagnostics = c.diagnostics;
    // A converted file that does not validate is a bug here, or a value no mapping could save:
    // say so rather than print something `nginx-ha check` rejects without a word.
    if let Err(errors) = crate::config::Config::parse(&toml, Path::new("converted nginx-ha.toml")) {
        for e in errors.0 {
            // Router problems name the router (`[VI_1] ...`): point at its vrrp_instance.
            let loc = located
                .iter()
                .find(|(tag, _)| e.message.contains(tag.as_str()))
                .map_or_else(|| Loc { file: root.into(), line: 1 }, |(_, loc)| loc.clone());
            diagnostics.push(Diagnostic {
                loc,
                severity: Severity::Warning,
                message: format!("the converted file does not validate, fix it by hand: {e}"),
            });
        }
    }
    diagnostics.sort_by(|a, b| (a.loc.file.as_ref(), a.loc.line).cmp(&(b.loc.file.as_ref(), b.loc.line)));
    let order: HashMap<&Path, usize> = parsed.files.iter().enumerate().map(|(i, f)| (f.as_path(), i)).collect();
    diagnostics.sort_by_key(|d| (order.get(d.loc.file.as_ref()).copied().unwrap_or(usize::MAX), d.loc.line));
    Conversion { toml, diagnostics }
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn toml_strings(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| toml_string(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// keepalived's decimal seconds (`1`, `0.5`) in milliseconds.
fn seconds_ms(text: &str) -> Option<u64> {
    let seconds: f64 = text.parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| (seconds * 1000.0).round() as u64)
}

fn basename(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

fn is_local_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.starts_with("127.") || host == "::1"
}

/// Recognises the usual nginx checks: `killall -0 nginx`, `pidof nginx`, `pgrep nginx`,
/// `systemctl is-active nginx`, `service nginx status`, a check_nginx.sh, a `curl`/`wget` of a
/// local URL, `nc -z` of a local port (also inside `sh -c "..."`).
fn classify(command: &str) -> Option<Probe> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let program = basename(words.first()?);
    let args = &words[1..];
    let names_nginx = |w: &&str| basename(w.trim_matches(['"', '\''])) == "nginx";
    match program {
        "sh" | "bash" | "dash" if args.first() == Some(&"-c") => {
            let inner = args[1..].join(" ");
            classify(inner.trim_matches(['"', '\'']))
        }
        "killall" | "pkill" if args.iter().any(names_nginx) => Some(Probe::Liveness),
        "pidof" | "pgrep" if args.iter().any(names_nginx) => Some(Probe::Liveness),
        "systemctl" if args.contains(&"is-active") && args.iter().any(|a| a.starts_with("nginx")) => {
            Some(Probe::Liveness)
        }
        "service" if args.first().is_some_and(|a| a.starts_with("nginx")) && args.contains(&"status") => {
            Some(Probe::Liveness)
        }
        "curl" | "wget" => {
            let url = args.iter().map(|a| a.trim_matches(['"', '\''])).find(|a| {
                a.starts_with("http://")
                    || a.starts_with("https://")
                    || a.starts_with("localhost")
                    || a.starts_with("127.")
                    || a.starts_with("[::1]")
            })?;
            let url = if url.contains("://") { url.to_string() } else { format!("http://{url}") };
            let rest = url.strip_prefix("http://")?;
            let host_end = rest.find('/').unwrap_or(rest.len());
            let authority = &rest[..host_end];
            let host = authority
                .rsplit_once(':')
                .filter(|(h, _)| !h.is_empty() && !h.ends_with(':'))
                .map_or(authority, |(h, _)| h);
            if !is_local_host(host) {
                return None;
            }
            let url = url.replacen("://localhost", "://127.0.0.1", 1);
            HttpProbeUrl::parse(&url).ok().map(|_| Probe::Http(url))
        }
        "nc" | "ncat" | "netcat" if args.contains(&"-z") => {
            let operands: Vec<&str> = args.iter().copied().filter(|a| !a.starts_with('-')).collect();
            match operands.as_slice() {
                [host, port] if is_local_host(host) && port.parse::<u16>().is_ok() => {
                    let host = if *host == "localhost" { "127.0.0.1" } else { host };
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    Some(Probe::Tcp(if host.contains(':') {
                        format!("[{host}]:{port}")
                    } else {
                        format!("{host}:{port}")
                    }))
                }
                _ => None,
            }
        }
        _ => {
            let name = program.to_ascii_lowercase();
            (name.contains("nginx") && (name.contains("check") || name.contains("chk") || name.contains("health")))
                .then_some(Probe::Liveness)
        }
    }
}

/// Known keywords whose loss changes nothing an operator relies on: notes, not warnings.
const HARMLESS: &[&str] = &["enable_script_security", "script_user", "log_unknown_vrids", "max_auto_priority"];

/// The known-but-unconverted keywords whose reason is worth more than "no equivalent".
fn reason(keyword: &str) -> Option<&'static str> {
    Some(match keyword {
        "notification_email"
        | "notification_email_from"
        | "smtp_server"
        | "smtp_connect_timeout"
        | "smtp_helo_name"
        | "smtp_alert"
        | "smtp_alert_vrrp"
        | "smtp_alert_checker"
        | "no_email_faults" => {
            "nginx-ha sends no e-mail: run a `notify` program (`notify = \"/usr/local/bin/...\"`, called as `PROG NAME STATE` on every state change) that mails or pages"
        }
        "enable_script_security" | "script_user" => {
            "not needed: nginx-ha runs no check scripts and runs `notify` itself, without a shell"
        }
        "vrrp_garp_master_delay"
        | "vrrp_garp_master_repeat"
        | "vrrp_garp_master_refresh"
        | "vrrp_garp_master_refresh_repeat"
        | "vrrp_garp_interval"
        | "vrrp_gna_interval"
        | "vrrp_min_garp"
        | "vrrp_garp_lower_prio_delay"
        | "vrrp_garp_lower_prio_repeat"
        | "garp_master_delay"
        | "garp_master_refresh"
        | "garp_master_repeat"
        | "garp_master_refresh_repeat"
        | "garp_lower_prio_delay"
        | "garp_lower_prio_repeat"
        | "garp_group"
        | "garp_extra_if"
        | "vmac_garp_intvl"
        | "vrrp_garp_extra_if"
        | "vrrp_vmac_garp_intvl" => {
            "not configurable: nginx-ha sends gratuitous ARP / unsolicited NA on becoming MASTER and again one second later"
        }
        "vrrp_strict" | "strict_mode" => {
            "nginx-ha always follows the RFC on the wire and adds no firewall rules; not converted"
        }
        "vrrp_iptables" | "vrrp_ipsets" | "nftables" | "nftables_priority" | "nftables_ifindex"
        | "nftables_counters" | "accept" | "no_accept" => {
            "nginx-ha adds no firewall rules: VIPs always accept traffic (nginx listens on them)"
        }
        "use_vmac" | "use_vmac_addr" | "vmac_xmit_base" | "use_ipvlan" | "vmac_prefix" | "vmac_addr_prefix" => {
            "nginx-ha uses the interface's own MAC address and moves VIPs with gratuitous ARP; no VMAC interface"
        }
        "dont_track_primary" => "nginx-ha always counts the router's own interface losing carrier as FAULT",
        "mcast_src_ip" | "unicast_src_ip" => {
            "nginx-ha sends adverts from the interface's primary address; make sure that is this address, which the peer lists as its unicast peer"
        }
        "virtual_routes" | "virtual_rules" | "static_routes" | "static_rules" => {
            "nginx-ha keeps addresses, not routes or rules: add them with the system's network configuration (or from a `notify` program)"
        }
        "track_file" | "vrrp_track_file" | "track_bfd" | "bfd_instance" | "track_group" => {
            "nginx-ha tracks nginx and interfaces (`track_interfaces`) only; not converted"
        }
        "lvs_sync_daemon_interface"
        | "lvs_sync_daemon"
        | "lvs_timeouts"
        | "lvs_flush"
        | "lvs_flush_on_stop"
        | "lvs_flush_onstop"
        | "lvs_id"
        | "lvs_process_name"
        | "checker_process_name"
        | "virtual_server"
        | "virtual_server_group"
        | "SSL"
        | "real_server" => {
            "LVS (IPVS) is not part of nginx-ha: nginx does the load balancing (an `upstream` block with `server` lines and, with nginx plus or a module, health checks)"
        }
        "notify_fifo" | "notify_fifo_script" | "vrrp_notify_fifo" | "vrrp_notify_fifo_script" => {
            "nginx-ha has no FIFO: use `notify` (called as `PROG NAME STATE`), or `nginx-ha status --json`"
        }
        "enable_traps"
        | "snmp_socket"
        | "enable_snmp_vrrp"
        | "enable_snmp_keepalived"
        | "enable_snmp_rfc"
        | "enable_snmp_rfcv2"
        | "enable_snmp_rfcv3"
        | "enable_snmp_checker"
        | "enable_dbus" => {
            "nginx-ha has no SNMP or D-Bus: `[daemon] metrics_listen` serves Prometheus metrics, `nginx-ha status --json` the status"
        }
        _ => return None,
    })
}

impl Converter<'_> {
    fn diag(&mut self, loc: &Loc, severity: Severity, message: String) {
        self.diagnostics.push(Diagnostic { loc: loc.clone(), severity, message });
    }
    fn warn(&mut self, loc: &Loc, message: String) {
        self.diag(loc, Severity::Warning, message);
    }
    fn note(&mut self, loc: &Loc, message: String) {
        self.diag(loc, Severity::Note, message);
    }

    /// `file:line` for comments in the output: the file name alone when it sits beside the root.
    fn at(&self, loc: &Loc) -> String {
        let same_dir = loc.file.parent() == self.root.parent();
        match loc.file.file_name() {
            Some(name) if same_dir => format!("{}:{}", name.to_string_lossy(), loc.line),
            _ => loc.to_string(),
        }
    }

    /// A keyword that is unknown in `context`, or known but not converted.
    fn unmapped(&mut self, stmt: &Stmt, known: &[&str], context: &str, enclosing: Option<&Stmt>) {
        let keyword = stmt.keyword();
        if known.contains(&keyword) {
            let why = reason(keyword).unwrap_or("no nginx-ha equivalent; not converted");
            let severity = if HARMLESS.contains(&keyword) { Severity::Note } else { Severity::Warning };
            self.diag(&stmt.loc, severity, format!("`{keyword}`: {why}"));
            return;
        }
        let mut message = format!(
            "unknown keyword `{keyword}` in {context}{}: keepalived ignores it",
            suggest(keyword, known, context)
        );
        if let Some(block) = &stmt.block {
            match (enclosing, &block.close) {
                (Some(outer), Some(close)) => {
                    let outer_close = outer.block.as_ref().and_then(|b| b.close.as_ref());
                    let _ = write!(
                        message,
                        ", and its `{{`; the `}}` at line {} then closes `{}` early, so keepalived reads the rest of that block{} as top-level keywords",
                        close.line,
                        outer.words.join(" "),
                        outer_close.map(|c| format!(" (to line {})", c.line)).unwrap_or_default()
                    );
                }
                _ => {
                    let end = block.close.as_ref().map_or(String::new(), |c| format!("-{}", c.line));
                    let _ = write!(
                        message,
                        ", and its `{{`: it reads the block (lines {}{end}) as top-level keywords",
                        stmt.loc.line
                    );
                }
            }
        }
        self.warn(&stmt.loc, message);
    }

    /// `virtual_ipaddress 198.18.0.1` without braces: keepalived ignores the argument ("Block
    /// virtual_ipaddress has extra parameters") and reads the next lines as the block, up to
    /// the next `}`. Warned about; converted as the one entry it was meant to be.
    fn value_block_on_one_line(&mut self, stmt: &Stmt) -> Stmt {
        const VALUE_BLOCKS: &[&str] = &[
            "virtual_ipaddress",
            "virtual_ipaddress_excluded",
            "unicast_peer",
            "track_interface",
            "track_script",
            "track_process",
        ];
        if stmt.block.is_some() || stmt.words.len() < 2 || !VALUE_BLOCKS.contains(&stmt.keyword()) {
            return stmt.clone();
        }
        let keyword = stmt.keyword();
        let entry = stmt.args().join(" ");
        self.warn(
            &stmt.loc,
            format!("`{keyword} {entry}` without braces: keepalived ignores `{entry}` (\"Block {keyword} has extra parameters\") and reads the lines after it as the block, up to the next `}}`; write `{keyword} {{ {entry} }}`. Converted as that"),
        );
        let entry = Stmt { loc: stmt.loc.clone(), words: stmt.args().to_vec(), block: None };
        Stmt {
            loc: stmt.loc.clone(),
            words: vec![keyword.to_string()],
            block: Some(super::keepalived::Block { stmts: vec![entry], close: None }),
        }
    }

    fn other_root(&mut self, stmt: &Stmt) {
        self.unmapped(stmt, keywords::ROOT, "the top level", None);
    }

    fn global_defs(&mut self, defs: &Stmt) {
        for stmt in defs.children() {
            match stmt.keyword() {
                "router_id" => match stmt.arg() {
                    Some(id) => {
                        self.globals.router_id = Some((id.to_string(), stmt.loc.clone()));
                        self.note(
                            &stmt.loc,
                            format!("router_id `{id}` names this node in keepalived's logs and mails; nginx-ha has no node name (kept as a comment)"),
                        );
                    }
                    None => self.warn(&stmt.loc, "router_id without a value".into()),
                },
                "vrrp_version" => match stmt.arg().and_then(|v| v.parse::<u8>().ok()).filter(|v| matches!(v, 2 | 3)) {
                    Some(v) => self.globals.vrrp_version = Some((v, stmt.loc.clone())),
                    None => self.warn(&stmt.loc, "vrrp_version must be 2 or 3; keepalived ignores this line".into()),
                },
                "v3_checksum_as_v2" => self.globals.v3_checksum_as_v2 = Some(stmt.loc.clone()),
                "vrrp_mcast_group4" | "vrrp_mcast_group6" => {
                    let default = if stmt.keyword() == "vrrp_mcast_group4" { "224.0.0.18" } else { "ff02::12" };
                    if stmt.arg() != Some(default) {
                        self.warn(
                            &stmt.loc,
                            format!("`{}`: nginx-ha sends and listens on the standard group {default} only; a peer on another group will not hear it (use unicast_peers for a non-standard setup)", stmt.words.join(" ")),
                        );
                    }
                }
                _ => self.unmapped(stmt, keywords::GLOBAL, "global_defs", Some(defs)),
            }
        }
    }

    fn check_definition(&mut self, order: usize, def: &Stmt) {
        let process = def.keyword() == "vrrp_track_process";
        let Some(name) = def.arg() else {
            self.warn(&def.loc, format!("`{}` without a name; keepalived ignores it", def.keyword()));
            return;
        };
        let mut check = Check {
            loc: def.loc.clone(),
            order,
            command: None,
            probe: None,
            interval_ms: None,
            timeout_ms: None,
            weight: None,
            reverse: false,
            rise: None,
            fall: None,
            process,
        };
        let known = if process { keywords::TRACK_PROCESS } else { keywords::SCRIPT };
        for stmt in def.children() {
            let value = stmt.args().join(" ");
            match stmt.keyword() {
                "script" if !process => check.command = Some((value, stmt.loc.clone())),
                "process" if process => check.command = Some((value, stmt.loc.clone())),
                "interval" if !process => match seconds_ms(&value).filter(|ms| *ms > 0) {
                    Some(ms) => check.interval_ms = Some((ms, stmt.loc.clone())),
                    None => self.warn(&stmt.loc, format!("interval `{value}` is not a number of seconds")),
                },
                "timeout" if !process => match seconds_ms(&value).filter(|ms| *ms > 0) {
                    Some(ms) => check.timeout_ms = Some((ms, stmt.loc.clone())),
                    None => self.warn(&stmt.loc, format!("timeout `{value}` is not a number of seconds")),
                },
                "weight" => match stmt.arg().and_then(|w| w.parse::<i32>().ok()).filter(|w| (-253..=253).contains(w)) {
                    Some(w) => {
                        check.weight = Some((w, stmt.loc.clone()));
                        check.reverse = stmt.words.get(2).is_some_and(|r| r == "reverse");
                    }
                    None => {
                        self.warn(&stmt.loc, format!("weight `{value}` is not from -253 to 253; keepalived uses 0"))
                    }
                },
                "rise" | "fall" if !process => {
                    match stmt.arg().and_then(|v| v.parse::<u32>().ok()).filter(|v| *v > 0) {
                        Some(v) if stmt.keyword() == "rise" => check.rise = Some((v, stmt.loc.clone())),
                        Some(v) => check.fall = Some((v, stmt.loc.clone())),
                        None => self.warn(
                            &stmt.loc,
                            format!("{} `{value}` must be 1 or more; keepalived uses 1", stmt.keyword()),
                        ),
                    }
                }
                "user" | "init_fail" | "quorum" | "quorum_max" | "delay" | "terminate_delay" | "fork_delay"
                | "param_match" | "full_command" => {}
                _ => self.unmapped(stmt, known, def.keyword(), Some(def)),
            }
        }
        check.probe = match &check.command {
            Some((command, _)) if process => {
                (basename(command.split_whitespace().next().unwrap_or_default()) == "nginx").then_some(Probe::Liveness)
            }
            Some((command, _)) => classify(command),
            None => {
                self.warn(
                    &def.loc,
                    format!(
                        "{} {name} has no `{}`; keepalived ignores it",
                        def.keyword(),
                        if process { "process" } else { "script" }
                    ),
                );
                None
            }
        };
        if let Some(previous) = self.checks.get(name) {
            let previous = previous.loc.clone();
            self.warn(
                &def.loc,
                format!(
                    "{name} is defined again (first at {previous}); keepalived keeps both, instances find the first"
                ),
            );
            return;
        }
        self.checks.insert(name.to_string(), check);
    }

    fn sync_group(&mut self, group: &Stmt) {
        let mut members = Vec::new();
        let mut tracking_weight = false;
        for stmt in group.children() {
            match stmt.keyword() {
                "group" => members
                    .extend(stmt.children().iter().flat_map(|s| s.words.clone()).chain(stmt.args().iter().cloned())),
                "sync_group_tracking_weight" => tracking_weight = true,
                k if keywords::SYNC_GROUP.contains(&k) => {}
                _ => self.unmapped(stmt, keywords::SYNC_GROUP, "vrrp_sync_group", Some(group)),
            }
        }
        self.warn(
            &group.loc,
            format!(
                "vrrp_sync_group {}: nginx-ha has no sync groups; each [[vrrp]] follows nginx's health by itself, so when nginx fails every router hands over its VIPs together, as a group would; a group's own notify/track_* lines are not converted",
                group.arg().unwrap_or_default()
            ),
        );
        self.sync_groups.push(SyncGroup { members, tracking_weight });
    }

    fn static_ipaddress(&mut self, stmt: &Stmt) {
        for line in stmt.children() {
            let address = line.keyword().to_string();
            let mut table = Table::new("[[alias]]", Some(format!("static_ipaddress, {}", self.at(&line.loc))));
            let options = parse_address_options(line);
            if parse_net(&address).is_err() {
                self.warn(&line.loc, format!("static address `{address}` is not an address; keepalived skips it"));
                continue;
            }
            let Some(dev) = option(&options, "dev") else {
                self.warn(
                    &line.loc,
                    format!(
                        "static address `{address}` has no `dev`; not converted (an [[alias]] needs its interface)"
                    ),
                );
                continue;
            };
            table.key("address", toml_string(&address), None);
            table.key("interface", toml_string(dev), None);
            if let Some(label) = option(&options, "label") {
                table.key("label", toml_string(label), None);
            }
            self.note(
                &line.loc,
                format!("static address {address} on {dev} becomes an [[alias]], kept by nginx-ha across restarts"),
            );
            self.aliases.push(table);
        }
    }

    fn instance(&mut self, order: usize, instance: &Stmt) -> Option<Router> {
        let Some(name) = instance.arg().map(str::to_string) else {
            self.warn(&instance.loc, "vrrp_instance without a name; keepalived ignores it".into());
            return None;
        };
        let mut state: Option<(bool, Loc)> = None;
        let mut interface: Option<(String, Loc)> = None;
        let mut vrid: Option<(u8, Loc)> = None;
        let mut priority: Option<(u8, Loc)> = None;
        let mut explicit_version: Option<(u8, Loc)> = None;
        let mut advert: Option<(u64, Loc)> = None;
        let mut nopreempt: Option<Loc> = None;
        let mut preempt_delay: Option<(u64, Loc)> = None;
        let mut auth_type: Option<(String, Loc)> = None;
        let mut auth_pass: Option<(String, Loc)> = None;
        let mut vips: Vec<(String, Loc)> = Vec::new();
        let mut excluded: Vec<(String, Loc)> = Vec::new();
        let mut peers: Option<(Vec<String>, Loc)> = None;
        let mut track_interfaces: Vec<(String, Loc)> = Vec::new();
        let mut tracked: Vec<(String, Option<i32>, bool, Loc)> = Vec::new();
        let mut notify: Option<(String, Loc)> = None;
        let mut notify_states: Vec<(String, String, Loc)> = Vec::new();
        let mut checksum_as_v2 = self.globals.v3_checksum_as_v2.clone();
        let mut native_ipv6 = false;
        let mut seen: HashMap<&str, Loc> = HashMap::new();
        let mut vip_lines: Vec<(&Stmt, bool)> = Vec::new();

        let fixed: Vec<Stmt> = instance.children().iter().map(|s| self.value_block_on_one_line(s)).collect();
        for stmt in &fixed {
            let keyword = stmt.keyword();
            let single = ["state", "interface", "virtual_router_id", "priority", "advert_int", "version", "notify"];
            if single.contains(&keyword) {
                if let Some(first) = seen.get(keyword) {
                    let first = first.clone();
                    self.warn(
                        &stmt.loc,
                        format!("`{keyword}` again (first at line {}): keepalived uses this later one", first.line),
                    );
                }
                seen.insert(stmt.words[0].as_str(), stmt.loc.clone());
            }
            let value = stmt.arg().unwrap_or_default().to_string();
            match keyword {
                "state" => match value.as_str() {
                    "MASTER" => state = Some((true, stmt.loc.clone())),
                    "BACKUP" if state.as_ref().is_some_and(|(m, _)| *m) => self.warn(
                        &stmt.loc,
                        "state BACKUP after state MASTER: keepalived ignores it and keeps MASTER".into(),
                    ),
                    "BACKUP" => state = Some((false, stmt.loc.clone())),
                    other => {
                        self.warn(&stmt.loc, format!("state `{other}` is neither MASTER nor BACKUP (keepalived is case-sensitive): keepalived starts it as BACKUP"));
                        state = Some((false, stmt.loc.clone()));
                    }
                },
                "interface" => interface = Some((value, stmt.loc.clone())),
                "virtual_router_id" => match value.parse::<u8>().ok().filter(|v| *v > 0) {
                    Some(v) => vrid = Some((v, stmt.loc.clone())),
                    None => self.warn(
                        &stmt.loc,
                        format!("virtual_router_id `{value}` is not from 1 to 255; keepalived rejects the instance"),
                    ),
                },
                "priority" => match value.parse::<u8>().ok().filter(|v| *v > 0) {
                    Some(v) => priority = Some((v, stmt.loc.clone())),
                    None => {
                        self.warn(&stmt.loc, format!("priority `{value}` is not from 1 to 255: keepalived uses 100"));
                        priority = Some((100, stmt.loc.clone()));
                    }
                },
                "version" => match value.parse::<u8>().ok().filter(|v| matches!(v, 2 | 3)) {
                    Some(v) => explicit_version = Some((v, stmt.loc.clone())),
                    None => self.warn(&stmt.loc, format!("version `{value}` must be 2 or 3; keepalived ignores it")),
                },
                "advert_int" => match seconds_ms(&value).filter(|ms| *ms > 0) {
                    Some(ms) => advert = Some((ms, stmt.loc.clone())),
                    None => self.warn(
                        &stmt.loc,
                        format!("advert_int `{value}` is not a number of seconds above 0; keepalived uses 1"),
                    ),
                },
                "nopreempt" => nopreempt = Some(stmt.loc.clone()),
                "preempt" => nopreempt = None,
                "preempt_delay" => match seconds_ms(&value) {
                    Some(ms) => preempt_delay = Some((ms, stmt.loc.clone())),
                    None => self.warn(
                        &stmt.loc,
                        format!("preempt_delay `{value}` is not a number of seconds; keepalived uses 0"),
                    ),
                },
                "authentication" => {
                    for auth in stmt.children() {
                        match auth.keyword() {
                            "auth_type" => {
                                auth_type = Some((auth.arg().unwrap_or_default().to_string(), auth.loc.clone()))
                            }
                            "auth_pass" => {
                                auth_pass = Some((auth.arg().unwrap_or_default().to_string(), auth.loc.clone()))
                            }
                            _ => self.unmapped(auth, keywords::AUTHENTICATION, "authentication", Some(stmt)),
                        }
                    }
                }
                "virtual_ipaddress" | "virtual_ipaddress_excluded" => {
                    let excluded = keyword == "virtual_ipaddress_excluded";
                    vip_lines.extend(stmt.children().iter().map(|line| (line, excluded)));
                }
                "unicast_peer" => {
                    let mut list = Vec::new();
                    for line in stmt.children() {
                        let address = line.keyword();
                        if address.parse::<std::net::IpAddr>().is_err() {
                            self.warn(
                                &line.loc,
                                format!("unicast peer `{address}` is not an IP address; keepalived skips it"),
                            );
                            continue;
                        }
                        if line.words.len() > 1 {
                            self.warn(&line.loc, format!("`{}`: min_ttl/max_ttl are not converted; nginx-ha accepts unicast adverts with any TTL, like keepalived's default", line.args().join(" ")));
                        }
                        list.push(address.to_string());
                    }
                    peers = Some((list, stmt.loc.clone()));
                }
                "track_interface" => {
                    for line in stmt.children() {
                        if line.words.len() > 1 {
                            self.warn(&line.loc, format!("track_interface {}: the weight is not converted; in nginx-ha a tracked link going down counts like nginx failing (on_nginx_failure)", line.words.join(" ")));
                        }
                        track_interfaces.push((line.keyword().to_string(), line.loc.clone()));
                    }
                }
                "track_script" | "track_process" => {
                    for line in stmt.children() {
                        let weight = match line.words.get(1).map(String::as_str) {
                            Some("weight") => line.words.get(2).and_then(|w| w.parse::<i32>().ok()),
                            _ => None,
                        };
                        let reverse = line.words.get(3).is_some_and(|r| r == "reverse");
                        tracked.push((line.keyword().to_string(), weight, reverse, line.loc.clone()));
                    }
                }
                "notify" => notify = Some((stmt.args().join(" "), stmt.loc.clone())),
                "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" => {
                    let state = keyword.trim_start_matches("notify_").to_ascii_uppercase();
                    notify_states.push((state, stmt.args().join(" "), stmt.loc.clone()));
                }
                "v3_checksum_as_v2" => checksum_as_v2 = Some(stmt.loc.clone()),
                "native_ipv6" => native_ipv6 = true,
                _ => self.unmapped(stmt, keywords::INSTANCE, "vrrp_instance", Some(instance)),
            }
        }

        for (line, is_excluded) in vip_lines {
            if let Some(vip) = self.vip(line, interface.as_ref().map(|(i, _)| i.as_str())) {
                if is_excluded { excluded.push((vip, line.loc.clone())) } else { vips.push((vip, line.loc.clone())) }
            }
        }
        let mut missing = Vec::new();
        if interface.is_none() {
            missing.push("interface");
        }
        if vrid.is_none() {
            missing.push("virtual_router_id");
        }
        if vips.is_empty() {
            missing.push("virtual_ipaddress");
        }
        if !missing.is_empty() {
            self.warn(
                &instance.loc,
                format!("vrrp_instance {name} has no usable {}; not converted", missing.join(", ")),
            );
            return None;
        }
        let (interface, interface_loc) = interface.expect("checked above");
        let (vrid, vrid_loc) = vrid.expect("checked above");
        let is_master = state.as_ref().is_some_and(|(m, _)| *m);

        let mut table = Table::new("[[vrrp]]", Some(format!("vrrp_instance {name}, {}", self.at(&instance.loc))));
        table.key("name", toml_string(&name), None);
        if let Some((master, loc)) = &state {
            table.comment(format!(
                "keepalived's `state {}` ({}): no equivalent, every router starts as BACKUP and the higher priority becomes MASTER",
                if *master { "MASTER" } else { "BACKUP" },
                self.at(loc)
            ));
        }
        table.key("interface", toml_string(&interface), Some(self.at(&interface_loc)));
        table.key("vrid", vrid.to_string(), Some(format!("virtual_router_id, {}", self.at(&vrid_loc))));

        // Priority: keepalived derives a missing one from the state.
        let (base_priority, priority_comment) = match &priority {
            Some((p, loc)) => (*p, self.at(loc)),
            None if is_master => {
                self.warn(&instance.loc, format!("vrrp_instance {name} is state MASTER without a priority: keepalived makes it 255, the address owner, which takes over at once and ignores weighted track_scripts"));
                (255, "no priority: keepalived's 255 for state MASTER".to_string())
            }
            None => (100, "no priority: keepalived's default".to_string()),
        };

        // Version: IPv6 needs 3; keepalived sets it for IPv6 instances without an explicit version.
        let ipv6 = vips.first().and_then(|(v, _)| parse_net(v).ok()).is_some_and(|n| n.addr().is_ipv6()) || native_ipv6;
        let (version, version_comment) = match (&explicit_version, &self.globals.vrrp_version) {
            (Some((v, loc)), _) => (*v, self.at(loc)),
            (None, Some((v, loc))) => (*v, format!("global vrrp_version, {}", self.at(loc))),
            (None, None) => (2, "keepalived's default".to_string()),
        };
        let (version, version_comment) = if ipv6 && version == 2 {
            if let Some((_, loc)) = &explicit_version {
                self.warn(
                    loc,
                    format!(
                        "vrrp_instance {name} has IPv6 addresses, which VRRPv2 cannot carry: converted to version 3"
                    ),
                );
            }
            (3, "IPv6 VIPs: keepalived uses VRRPv3".to_string())
        } else {
            (version, version_comment)
        };
        table.key("version", version.to_string(), Some(version_comment));

        if let Some((ms, loc)) = &advert {
            let rounded = if version == 2 {
                ((ms.saturating_add(500) / 1000) * 1000).max(1000)
            } else {
                ((ms.saturating_add(5) / 10) * 10).clamp(10, 40_950)
            };
            let rounded = if version == 2 { rounded.min(255_000) } else { rounded };
            if rounded != *ms {
                self.warn(
                    loc,
                    format!(
                        "advert_int {} s: VRRPv{version} advertises {}; keepalived rounds it to {} s",
                        *ms as f64 / 1000.0,
                        if version == 2 { "whole seconds" } else { "in centiseconds" },
                        rounded as f64 / 1000.0
                    ),
                );
            }
            table.key("advert_interval_ms", rounded.to_string(), Some(format!("advert_int, {}", self.at(loc))));
        }

        // Preemption.
        let mut effective_nopreempt = nopreempt.is_some();
        if let Some(loc) = &nopreempt {
            if is_master {
                effective_nopreempt = false;
                self.warn(loc, format!("nopreempt under state MASTER: keepalived clears it (\"nopreempt will not work with initial state MASTER - clearing\"), so vrrp_instance {name} preempts today; converted as preempt = true. nginx-ha has no initial state, so `preempt = false` does work here: set it on both nodes if a recovered node must not take the VIP back (with keepalived, that needs state BACKUP on both nodes)"));
                table.key(
                    "preempt",
                    "true".into(),
                    Some(format!(
                        "nopreempt at {} is cleared by keepalived under state MASTER; false for what it meant",
                        self.at(loc)
                    )),
                );
            } else if base_priority == 255 {
                effective_nopreempt = false;
                self.warn(
                    loc,
                    "nopreempt with priority 255: keepalived clears it (the address owner always preempts)".into(),
                );
            } else {
                table.key("preempt", "false".into(), Some(format!("nopreempt, {}", self.at(loc))));
            }
        }
        if let Some((ms, loc)) = &preempt_delay {
            if is_master {
                self.warn(loc, "preempt_delay under state MASTER: keepalived clears it (\"preempt delay will not work with initial state MASTER\"); not converted".into());
            } else if effective_nopreempt {
                self.warn(loc, "preempt_delay with nopreempt has no effect (nothing preempts); not converted".into());
            } else {
                table.key(
                    "preempt_delay_ms",
                    ms.min(&1_000_000).to_string(),
                    Some(format!("preempt_delay, {}", self.at(loc))),
                );
            }
        }

        self.authentication(version, &auth_type, &auth_pass, &mut table);

        if let Some((list, loc)) = &peers {
            if list.is_empty() {
                self.warn(loc, "unicast_peer lists no address: converted as multicast".into());
            } else {
                table.key("unicast_peers", toml_strings(list), Some(format!("unicast_peer, {}", self.at(loc))));
            }
        }
        let vip_list: Vec<String> = vips.iter().map(|(v, _)| v.clone()).collect();
        table.key("virtual_ips", toml_strings(&vip_list), Some(format!("virtual_ipaddress, {}", self.at(&vips[0].1))));
        if !excluded.is_empty() {
            let list: Vec<String> = excluded.iter().map(|(v, _)| v.clone()).collect();
            table.key(
                "virtual_ips_excluded",
                toml_strings(&list),
                Some(format!("virtual_ipaddress_excluded, {}", self.at(&excluded[0].1))),
            );
        }
        if !track_interfaces.is_empty() {
            let list: Vec<String> = track_interfaces.iter().map(|(v, _)| v.clone()).collect();
            table.key(
                "track_interfaces",
                toml_strings(&list),
                Some(format!("track_interface, {}", self.at(&track_interfaces[0].1))),
            );
        }
        if version == 3
            && let Some(loc) = &checksum_as_v2
        {
            table.key("checksum_pseudo_header", "false".into(), Some(format!("v3_checksum_as_v2, {}", self.at(loc))));
        }

        let (base_priority, on_failure_demote) =
            self.tracking(&name, order, &instance.loc, base_priority, effective_nopreempt, &tracked, &mut table);
        // The priority line goes right after vrid, where operators look for it.
        let priority_line =
            Line::Key { key: "priority", value: base_priority.to_string(), comment: Some(priority_comment) };
        let vrid_at = table.lines.iter().position(|l| matches!(l, Line::Key { key: "vrid", .. })).map_or(0, |i| i + 1);
        table.lines.insert(vrid_at, priority_line);

        self.notify(&name, &mut table, notify, notify_states);
        Some(Router {
            name,
            loc: instance.loc.clone(),
            state_master: state.map(|(m, _)| m),
            priority: base_priority,
            on_failure_demote,
            table,
        })
    }

    /// `authentication { auth_type PASS; auth_pass ... }` as keepalived reads it.
    fn authentication(
        &mut self,
        version: u8,
        auth_type: &Option<(String, Loc)>,
        auth_pass: &Option<(String, Loc)>,
        table: &mut Table,
    ) {
        match (auth_type, auth_pass) {
            (_, _) if version == 3 && (auth_type.is_some() || auth_pass.is_some()) => {
                let loc = auth_type.as_ref().or(auth_pass.as_ref()).map(|(_, l)| l.clone()).expect("one is set");
                self.warn(&loc, "authentication with VRRPv3: keepalived ignores it (\"VRRP version 3 does not support authentication\"); not converted".to_string());
            }
            (Some((kind, loc)), Some((pass, _))) if kind == "PASS" => {
                let pass = if pass.len() > 8 {
                    let cut: String = pass.chars().scan(0, |n, c| { *n += c.len_utf8(); (*n <= 8).then_some(c) }).collect();
                    self.warn(loc, format!("auth_pass is {} bytes: keepalived truncates it to 8 (\"{cut}\"), converted to that so the pair still interoperates", pass.len()));
                    cut
                } else {
                    pass.clone()
                };
                if pass.is_empty() {
                    self.warn(loc, "authentication without a password: keepalived ignores it".into());
                } else {
                    table.key("auth_pass", toml_string(&pass), Some(format!("auth_type PASS, {}", self.at(loc))));
                }
            }
            (Some((kind, loc)), _) if kind == "AH" => {
                self.warn(loc, "auth_type AH (IPsec-AH) is not supported by nginx-ha, which speaks PASS or none; not converted: switch both nodes to PASS or none together".into());
            }
            (Some((kind, loc)), Some(_)) => {
                self.warn(loc, format!("auth_type `{kind}` is neither PASS nor AH: keepalived sends no authentication; not converted"));
            }
            (Some((_, loc)), None) => self.warn(loc, "auth_type without auth_pass: keepalived sends no authentication".into()),
            (None, Some((_, loc))) => self.warn(loc, "auth_pass without `auth_type PASS`: keepalived sends no authentication, so none is converted; add auth_pass here and on the peer if you want it".into()),
            (None, None) => {}
        }
    }

    /// The tracked checks of one instance: native tracking instead of nginx check scripts, the
    /// weights as demote/relinquish. Returns the priority (raised by positive weights, as
    /// keepalived advertises it while healthy) and the demote weight, if any.
    #[allow(clippy::too_many_arguments)]
    fn tracking(
        &mut self,
        name: &str,
        order: usize,
        instance_loc: &Loc,
        mut base_priority: u8,
        nopreempt: bool,
        tracked: &[(String, Option<i32>, bool, Loc)],
        table: &mut Table,
    ) -> (u8, Option<u8>) {
        let in_sync_group_without_weights =
            self.sync_groups.iter().any(|g| !g.tracking_weight && g.members.iter().any(|m| m == name));
        let mut demote: u32 = 0;
        let mut raise: u32 = 0;
        let mut relinquish = false;
        let mut any_nginx = false;
        let mut weighted = 0;
        for (script, override_weight, reverse_override, loc) in tracked {
            let Some(check) = self.checks.get(script).cloned() else {
                self.warn(loc, format!("track_script `{script}` names no vrrp_script or vrrp_track_process: keepalived ignores it (\"track script {script} not found\"), so vrrp_instance {name} tracks nothing by it today"));
                continue;
            };
            if check.order > order {
                self.warn(loc, format!("`{script}` is defined after vrrp_instance {name} (at {}): keepalived looks scripts up while reading, so it ignores this track_script (\"track script {script} not found\"); nginx-ha needs no order", check.loc));
            }
            let weight = override_weight.or(check.weight.as_ref().map(|(w, _)| *w)).unwrap_or(0);
            let reverse = *reverse_override || check.reverse;
            let Some(probe) = &check.probe else {
                let what = check.command.as_ref().map(|(c, _)| format!(" (`{c}`)")).unwrap_or_default();
                self.warn(loc, format!("{script}{what} is not an nginx check: not converted; nginx-ha follows nginx's health and track_interfaces only, so run this check elsewhere (a systemd timer) and have it stop nginx-ha or nginx if the node must hand over"));
                continue;
            };
            any_nginx = true;
            if reverse {
                self.warn(
                    loc,
                    format!(
                        "{script}: a `reverse` weight is not converted (nginx-ha lowers the priority when nginx fails)"
                    ),
                );
            }
            if weight != 0 && (base_priority == 255 || in_sync_group_without_weights) {
                let why = if base_priority == 255 {
                    "priority 255 (the address owner)".to_string()
                } else {
                    "its vrrp_sync_group has no sync_group_tracking_weight".to_string()
                };
                self.warn(loc, format!("{script} has weight {weight}, but keepalived ignores weighted track_scripts of vrrp_instance {name} because of {why} (\"ignoring tracked script {script} with weights\"): nginx does not move the VIP today; converted as relinquish, which does"));
                relinquish = true;
                continue;
            }
            let command = check.command.as_ref().map(|(c, _)| c.clone()).unwrap_or_default();
            let how = match probe {
                Probe::Liveness if command.ends_with(".sh") => "nginx-ha watches nginx's master and workers natively (pidfd), no script (what the script did beyond checking is not converted: if it restarted nginx, nginx-ha's supervisor now does)".to_string(),
                Probe::Liveness => "nginx-ha watches nginx's master and workers natively (pidfd), no script".to_string(),
                Probe::Http(url) => format!("nginx-ha watches nginx natively and probes [health] http = \"{url}\""),
                Probe::Tcp(addr) => format!("nginx-ha watches nginx natively and probes [health] tcp \"{addr}\""),
            };
            if weight == 0 {
                relinquish = true;
                let explicit = override_weight.is_some() || check.weight.is_some();
                let meaning = if explicit {
                    "weight 0 does not mean \"no effect\": keepalived puts the instance in FAULT when the check fails"
                } else {
                    "without a weight keepalived puts the instance in FAULT when the check fails"
                };
                self.note(loc, format!("track_script {script} (`{command}`) replaced: {how}; {meaning}, which is on_nginx_failure = \"relinquish\""));
            } else {
                demote += weight.unsigned_abs();
                weighted += 1;
                if weight > 0 {
                    raise += weight as u32;
                }
                self.note(loc, format!("track_script {script} (`{command}`, weight {weight}) replaced: {how}; the weight becomes on_nginx_failure = \"demote\" with demote_weight = {}", weight.unsigned_abs()));
            }
            if !self.used_checks.contains(script) {
                self.used_checks.push(script.clone());
            }
        }
        if !any_nginx {
            self.note(
                instance_loc,
                format!("vrrp_instance {name} tracks no nginx check, so with keepalived nginx failing moved no VIP; nginx-ha ties every router to nginx's health (on_nginx_failure)"),
            );
        }
        let mut on_failure_demote = None;
        if relinquish || demote == 0 {
            table.key(
                "on_nginx_failure",
                toml_string("relinquish"),
                Some("nginx fails: priority-0 advert, VIPs dropped at once".into()),
            );
        } else {
            if raise > 0 && base_priority < 255 {
                let raised = (u32::from(base_priority) + raise).min(254) as u8;
                table.comment(format!("keepalived adds positive weights to a healthy node's priority: {base_priority} + {raise} = {raised} advertised while nginx is healthy, {} after a failure", u32::from(raised).saturating_sub(demote.min(254))));
                base_priority = raised;
            }
            let weight = demote.min(254) as u8;
            if weighted > 1 {
                self.note(instance_loc, format!("vrrp_instance {name} tracks several nginx checks: nginx failing fails them all, so their weights add up to demote_weight = {weight}"));
            }
            table.key(
                "on_nginx_failure",
                toml_string("demote"),
                Some(format!("the track_script weights, {}", self.at(&tracked[0].3))),
            );
            table.key("demote_weight", weight.to_string(), None);
            on_failure_demote = Some(weight);
            if nopreempt {
                self.warn(instance_loc, format!("vrrp_instance {name} has nopreempt and a weighted nginx check: a peer configured like this node never preempts a demoted master, so nginx failing moves no VIP (with keepalived today too); consider on_nginx_failure = \"relinquish\", which hands over regardless"));
            }
        }
        (base_priority, on_failure_demote)
    }

    fn notify(
        &mut self,
        name: &str,
        table: &mut Table,
        notify: Option<(String, Loc)>,
        states: Vec<(String, String, Loc)>,
    ) {
        if let Some((command, loc)) = &notify {
            let program = command.split_whitespace().next().unwrap_or_default().to_string();
            if command.split_whitespace().count() > 1 {
                self.warn(loc, format!("notify `{command}`: nginx-ha runs the program without a shell and without extra arguments; converted to `{program}`"));
            }
            self.warn(loc, format!("notify {program}: keepalived calls it as `PROG INSTANCE {name} STATE PRIORITY`, nginx-ha as `PROG {name} STATE` (the name is $1, the state $2): adapt the script"));
            if Path::new(&program).is_absolute() {
                table.key(
                    "notify",
                    toml_string(&program),
                    Some(format!("called as: {program} {name} STATE; {}", self.at(loc))),
                );
            } else {
                self.warn(
                    loc,
                    format!("notify `{program}` is not an absolute path, which nginx-ha needs; left as a comment"),
                );
                table.comment(format!("notify = {}   # needs an absolute path", toml_string(&program)));
            }
        }
        if states.is_empty() {
            return;
        }
        for (state, command, loc) in &states {
            self.warn(loc, format!("notify_{} `{command}`: nginx-ha runs one `notify` program for every state change (as `PROG {name} STATE`); see the wrapper sketched in the output", state.to_ascii_lowercase()));
        }
        table.comment(
            "keepalived ran a script per state; nginx-ha runs one program as `PROG NAME STATE`. A wrapper:".into(),
        );
        table.comment("  #!/bin/sh".into());
        table.comment("  case \"$2\" in".into());
        for (state, command, _) in &states {
            table.comment(format!("    {state}) exec {command} ;;"));
        }
        table.comment("  esac".into());
        if notify.is_none() {
            table.comment("notify = \"/usr/local/bin/nginx-ha-notify\"   # the wrapper above, once installed".into());
        }
    }

    /// One line of virtual_ipaddress: `ADDR[/LEN] [dev IF] [label L] [brd B] [scope S] ...`.
    fn vip(&mut self, line: &Stmt, interface: Option<&str>) -> Option<String> {
        let address = line.keyword().to_string();
        if parse_net(&address).is_err() {
            self.warn(&line.loc, format!("`{address}` is not an address (or ADDR/LEN); keepalived skips it"));
            return None;
        }
        let options = parse_address_options(line);
        for (key, value) in &options {
            match key.as_str() {
                "dev" if Some(value.as_str()) != interface => self.warn(
                    &line.loc,
                    format!("`{address} dev {value}`: nginx-ha adds a router's VIPs on its own interface ({}), not on {value}; put this address in a [[vrrp]] on {value} (own vrid) if it must live there", interface.unwrap_or("?")),
                ),
                "dev" => {}
                "label" => self.warn(&line.loc, format!("`{address} label {value}`: nginx-ha adds VIPs without a label, so `ifconfig` will not show {value}; `ip addr` shows the address")),
                "brd" | "broadcast" => self.warn(&line.loc, format!("`{address} brd {value}`: nginx-ha adds VIPs without a broadcast address; not converted")),
                other => self.warn(&line.loc, format!("`{address} {other} {value}`: not converted; nginx-ha adds VIPs with the kernel's defaults")),
            }
        }
        Some(address)
    }

    /// With both states in one file (the dual-master layout, or a file of one node of a pair),
    /// a BACKUP instance's priority is what the peer presumably has for this node's MASTER
    /// instances: a demote that cannot go below it moves nothing.
    fn check_elections(&mut self, routers: &mut [Router]) {
        let backups: Vec<(u8, String)> =
            routers.iter().filter(|r| r.state_master == Some(false)).map(|r| (r.priority, r.name.clone())).collect();
        let Some((highest, backup_name)) = backups.iter().max_by_key(|(p, _)| *p).cloned() else {
            // One node's file of a plain pair: the peer's priority is in the peer's file.
            for router in routers.iter().filter(|r| r.state_master == Some(true)) {
                if let Some(weight) = router.on_failure_demote {
                    let demoted = u32::from(router.priority).saturating_sub(u32::from(weight));
                    let message = format!(
                        "vrrp_instance {}: a demote hands the VIP over only if {} - {weight} = {demoted} is below the peer's priority for it, which is in the peer's file: check it there",
                        router.name, router.priority
                    );
                    self.note(&router.loc, message);
                }
            }
            return;
        };
        for router in routers.iter_mut().filter(|r| r.state_master == Some(true)) {
            let Some(weight) = router.on_failure_demote else { continue };
            let demoted = u32::from(router.priority).saturating_sub(u32::from(weight));
            if demoted >= u32::from(highest) {
                let message = format!(
                    "vrrp_instance {}: demote_weight {weight} cannot hand the VIP over: {} - {weight} = {demoted} is not below {highest}, the priority this file gives its BACKUP instance {backup_name}, which is what the peer presumably has for {} (a backup takes over only from a lower priority); use a weight above {} or on_nginx_failure = \"relinquish\"",
                    router.name,
                    router.priority,
                    router.name,
                    u32::from(router.priority) - u32::from(highest),
                );
                let loc = router.loc.clone();
                self.warn(&loc, message);
                router.table.comment(format!(
                    "demote_weight {weight} cannot go below a BACKUP priority of {highest} (see the warning)"
                ));
            }
        }
    }

    fn render(&mut self, routers: Vec<Router>) -> String {
        let mut out = String::new();
        let _ =
            writeln!(out, "# nginx-ha.toml converted from {} by `nginx-ha import-keepalived`.", self.root.display());
        out.push_str("# Comments name the keepalived line each key comes from. Review the warnings printed with it,\n");
        out.push_str("# then check this file with `nginx-ha check -c FILE` (which also runs `nginx -t`).\n");
        if let Some((id, loc)) = &self.globals.router_id {
            let _ = writeln!(out, "# keepalived router_id {id} ({}): nginx-ha has no node name.", self.at(loc));
        }
        out.push('\n');

        let mut nginx = Table::new("[nginx]", None);
        nginx.key(
            "config",
            toml_string("/etc/nginx/nginx.conf"),
            Some("keepalived did not know nginx's config: check this".into()),
        );
        nginx.comment(
            "nginx runs under nginx-ha: stop and disable nginx.service and keepalived.service when switching".into(),
        );
        let mut tables = vec![nginx];

        if let Some(health) = self.health() {
            tables.push(health);
        }
        tables.extend(routers.into_iter().map(|r| r.table));
        tables.append(&mut self.aliases);
        for (i, table) in tables.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            write_line(&mut out, table.header, table.comment.as_deref());
            for line in &table.lines {
                match line {
                    Line::Key { key, value, comment } => {
                        write_line(&mut out, &format!("{key} = {value}"), comment.as_deref())
                    }
                    Line::Comment(text) => {
                        let _ = writeln!(out, "# {text}");
                    }
                }
            }
        }
        out
    }

    fn health(&mut self) -> Option<Table> {
        let checks: Vec<Check> = self.used_checks.iter().filter_map(|n| self.checks.get(n).cloned()).collect();
        if checks.is_empty() {
            return None;
        }
        let mut table = Table::new(
            "[health]",
            Some("process liveness is watched natively; these replace the check scripts".into()),
        );
        let interval = checks.iter().filter_map(|c| c.interval_ms.clone()).min_by_key(|(ms, _)| *ms);
        let interval_ms = match &interval {
            Some((ms, loc)) => {
                let ms = (*ms).max(10);
                table.key("interval_ms", ms.to_string(), Some(format!("vrrp_script interval, {}", self.at(loc))));
                ms
            }
            None if checks.iter().any(|c| !c.process) => {
                table.key("interval_ms", "1000".into(), Some("keepalived's default script interval".into()));
                1000
            }
            None => 1000,
        };
        if let Some((ms, loc)) = checks.iter().filter_map(|c| c.timeout_ms.clone()).min_by_key(|(ms, _)| *ms) {
            let clamped = ms.min(interval_ms);
            if clamped != ms {
                self.warn(&loc, format!("timeout {} s is longer than the interval; nginx-ha's probes must not overlap: converted to timeout_ms = {clamped}", ms as f64 / 1000.0));
            }
            table.key("timeout_ms", clamped.to_string(), Some(format!("vrrp_script timeout, {}", self.at(&loc))));
        } else if interval_ms < 500 {
            table.key("timeout_ms", interval_ms.to_string(), Some("at most the interval".into()));
        }
        for (key, pick) in
            [("fall", checks.iter().find_map(|c| c.fall.clone())), ("rise", checks.iter().find_map(|c| c.rise.clone()))]
        {
            if let Some((v, loc)) = pick {
                table.key(key, v.to_string(), Some(format!("vrrp_script {key}, {}", self.at(&loc))));
            }
        }
        let mut http: Option<(String, Loc)> = None;
        let mut tcp: Vec<String> = Vec::new();
        for check in &checks {
            let loc = check.command.as_ref().map_or(check.loc.clone(), |(_, l)| l.clone());
            match &check.probe {
                Some(Probe::Http(url)) => match &http {
                    None => http = Some((url.clone(), loc)),
                    Some((first, _)) if first != url => {
                        self.warn(&loc, format!("a second http check ({url}); nginx-ha probes one URL: kept {first}"))
                    }
                    Some(_) => {}
                },
                Some(Probe::Tcp(addr)) if !tcp.contains(addr) => tcp.push(addr.clone()),
                _ => {}
            }
        }
        if let Some((url, loc)) = &http {
            table.key(
                "http",
                toml_string(url),
                Some(format!("the curl in {}: healthy on a 2xx or 3xx answer", self.at(loc))),
            );
        }
        if !tcp.is_empty() {
            table.key("tcp", toml_strings(&tcp), None);
        }
        Some(table)
    }
}

/// `text` padded to the comment column, then `# comment`.
fn write_line(out: &mut String, text: &str, comment: Option<&str>) {
    match comment {
        Some(comment) => {
            let _ = writeln!(out, "{text:<35} # {comment}");
        }
        None => {
            let _ = writeln!(out, "{text}");
        }
    }
}

/// The `KEY VALUE` options after an address (`dev eth0 label eth0:1 brd ...`); flags get "".
fn parse_address_options(line: &Stmt) -> Vec<(String, String)> {
    let mut options = Vec::new();
    let mut words = line.args().iter();
    while let Some(key) = words.next() {
        let takes_value = matches!(
            key.as_str(),
            "dev" | "label" | "brd" | "broadcast" | "scope" | "preferred_lft" | "valid_lft" | "peer" | "metric"
        );
        let value = if takes_value { words.next().cloned().unwrap_or_default() } else { String::new() };
        options.push((key.clone(), value));
    }
    options
}

fn option<'a>(options: &'a [(String, String)], key: &str) -> Option<&'a String> {
    options.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

#[cfg(test)]
pub mod tests_support {
    use super::{Probe, classify};

    /// What a command is recognised as: "liveness", the http URL, or "tcp ADDR".
    pub fn classify_for_test(command: &str) -> Option<String> {
        classify(command).map(|probe| match probe {
            Probe::Liveness => "liveness".to_string(),
            Probe::Http(url) => url,
            Probe::Tcp(addr) => format!("tcp {addr}"),
        })
    }
}
