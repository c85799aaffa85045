//! What would be right, for the errors where serde and the TOML parser only say what is wrong:
//! an example line for every key, and the rewording of their messages around it.

use super::locate::{self, FoundStep};

/// `(table, key, example line, what the value means)` for every key of the schema.
const EXAMPLES: &[(&str, &str, &str, &str)] = &[
    ("nginx", "binary", r#"binary = "/usr/sbin/nginx""#, "the nginx executable"),
    ("nginx", "config", r#"config = "/etc/nginx/nginx.conf""#, "passed to nginx as -c"),
    ("nginx", "watch", "watch = true", "true or false, without quotes"),
    ("nginx", "pid_file", r#"pid_file = "/run/nginx.pid""#, "what the nginx config's `pid` directive says"),
    ("nginx", "stop_timeout_ms", "stop_timeout_ms = 10000", "milliseconds, a whole number without quotes"),
    ("nginx", "reload_timeout_ms", "reload_timeout_ms = 10000", "milliseconds, a whole number without quotes"),
    ("nginx", "watch_debounce_ms", "watch_debounce_ms = 100", "milliseconds, 0 to 10000"),
    ("health", "interval_ms", "interval_ms = 1000", "milliseconds, at least 10"),
    ("health", "timeout_ms", "timeout_ms = 500", "milliseconds, from 1 to interval_ms"),
    ("health", "fall", "fall = 2", "a whole number, 1 or more"),
    ("health", "rise", "rise = 2", "a whole number, 1 or more"),
    ("health", "http", r#"http = "http://127.0.0.1:80/""#, "a plain http:// URL of the local nginx"),
    ("health", "tcp", r#"tcp = ["127.0.0.1:80"]"#, "a list of ADDRESS:PORT strings"),
    (
        "health",
        "status_url",
        r#"status_url = "http://127.0.0.1:80/nginx_status""#,
        "a plain http:// URL of nginx's stub_status, or \"\"",
    ),
    ("vrrp", "name", r#"name = "VI_1""#, "unique among the routers; it names the router in status and notify"),
    ("vrrp", "interface", r#"interface = "eth0""#, "the interface the router advertises on"),
    ("vrrp", "vrid", "vrid = 51", "1 to 255, the same on both peers"),
    ("vrrp", "priority", "priority = 100", "1 to 255; the highest becomes MASTER"),
    ("vrrp", "version", "version = 2", "2 (RFC 3768) or 3 (RFC 5798)"),
    ("vrrp", "advert_interval_ms", "advert_interval_ms = 1000", "v2: whole seconds; v3: multiples of 10 ms"),
    ("vrrp", "preempt", "preempt = true", "true or false, without quotes"),
    ("vrrp", "preempt_delay_ms", "preempt_delay_ms = 0", "milliseconds, at most 1000000"),
    ("vrrp", "auth_pass", r#"auth_pass = "1111""#, "v2 only, 1 to 8 bytes"),
    ("vrrp", "unicast_peers", r#"unicast_peers = ["198.18.0.2"]"#, "a list of the peers' addresses"),
    ("vrrp", "virtual_ips", r#"virtual_ips = ["198.18.0.100/24"]"#, "the addresses the MASTER holds"),
    ("vrrp", "virtual_ips_excluded", r#"virtual_ips_excluded = ["198.18.0.200/24"]"#, "held but not advertised"),
    ("vrrp", "on_nginx_failure", r#"on_nginx_failure = "relinquish""#, r#""relinquish" or "demote""#),
    ("vrrp", "demote_weight", "demote_weight = 50", "1 to 254"),
    ("vrrp", "track_interfaces", r#"track_interfaces = ["eth1"]"#, "a list of interface names"),
    ("vrrp", "notify", r#"notify = "/usr/local/bin/nginx-ha-notify""#, "an absolute path, run without a shell"),
    ("vrrp", "notify_timeout_ms", "notify_timeout_ms = 5000", "milliseconds, a whole number without quotes"),
    ("vrrp", "checksum_pseudo_header", "checksum_pseudo_header = true", "true or false, v3 only"),
    ("vrrp", "restart_grace_ms", "restart_grace_ms = 300", "milliseconds, a whole number without quotes"),
    ("vrrp", "drain_ms", "drain_ms = 60000", "milliseconds, a whole number without quotes; 0 turns the drain off"),
    ("alias", "address", r#"address = "198.18.0.107/24""#, "ADDRESS/LEN, IPv4 or IPv6"),
    ("alias", "interface", r#"interface = "eth0""#, "the interface that holds the address"),
    ("alias", "label", r#"label = "eth0:1""#, "IPv4 only, starting with the interface name"),
    ("anycast", "name", r#"name = "web""#, "unique among the [[anycast]] tables; it names them in status"),
    ("anycast", "addresses", r#"addresses = ["198.19.10.1/32"]"#, "a list of ADDRESS/LEN, one family per table"),
    ("anycast", "interface", r#"interface = "lo""#, "the interface that holds the addresses"),
    ("anycast", "table", "table = 110", "a kernel routing table, 1 to 4294967295 but not 253 to 255"),
    ("anycast", "drain_ms", "drain_ms = 5000", "milliseconds, at most 600000"),
    ("anycast", "restart_grace_ms", "restart_grace_ms = 300", "milliseconds, a whole number without quotes"),
    ("anycast", "hold", r#"hold = "address""#, r#""address" or "local-route" (FRR)"#),
    ("daemon", "control_socket", r#"control_socket = "/run/nginx-ha/control.sock""#, "an absolute path"),
    ("daemon", "state_dir", r#"state_dir = "/var/lib/nginx-ha""#, "a directory"),
    ("daemon", "metrics_listen", r#"metrics_listen = "127.0.0.1:9612""#, "ADDRESS:PORT"),
    ("daemon", "status_group", r#"status_group = "adm""#, "a group name"),
    ("daemon", "drain_port", "drain_port = 7112", "a UDP port number, 1 to 65535, without quotes"),
];

/// Tables written as `[[name]]`, one per item.
const ARRAYS_OF_TABLES: &[&str] = &["vrrp", "alias", "anycast"];

/// The example line of `key` in `table`, and what its value means.
pub fn example(table: &str, key: &str) -> Option<(&'static str, &'static str)> {
    EXAMPLES.iter().find(|(t, k, _, _)| *t == table && *k == key).map(|&(_, _, line, meaning)| (line, meaning))
}

#[cfg(test)]
pub fn keys_of(table: &str) -> Vec<&'static str> {
    EXAMPLES.iter().filter(|(t, _, _, _)| *t == table).map(|&(_, key, _, _)| key).collect()
}

fn header(table: &str) -> String {
    if ARRAYS_OF_TABLES.contains(&table) { format!("[[{table}]]") } else { format!("[{table}]") }
}

/// serde's and the parser's message, with what would be right added where they do not say.
/// `span` is the error's byte range in `text`.
pub fn explain(text: &str, span: Option<std::ops::Range<usize>>, message: &str) -> String {
    let message = message.trim().trim_end_matches('.').to_string();
    let (table, key) = match &span {
        Some(span) => table_and_key(text, span.start),
        None => (None, None),
    };
    let table = table.as_deref();
    if message.starts_with("unknown field") {
        return format!("{message}; remove or rename the key (see conf/nginx-ha.toml for every key)");
    }
    if let Some(field) = message.strip_prefix("missing field `").and_then(|rest| rest.strip_suffix('`')) {
        let Some(table) = table else {
            return format!("{message}; add it to the table this points at (see conf/nginx-ha.toml)");
        };
        return match example(table, field) {
            Some((line, meaning)) => format!("{message}; add `{line}` to this {} table ({meaning})", header(table)),
            None => format!("{message}; add {field} to this {} table (see conf/nginx-ha.toml)", header(table)),
        };
    }
    if message.starts_with("duplicate key") {
        let name = span.and_then(|span| text.get(span)).map(str::trim).filter(|n| !n.is_empty() && !n.contains('\n'));
        return match name {
            Some(name) => {
                format!("duplicate key `{name}`; a key appears once per table: keep one and delete the other")
            }
            None => format!("{message}; a key or table appears once: keep one and delete the other"),
        };
    }
    match (table, key.as_deref()) {
        (Some(table), None) if message.contains("expected a sequence") && ARRAYS_OF_TABLES.contains(&table) => {
            format!("{message}; {table} holds one table per item: write the header as [[{table}]], not [{table}]")
        }
        (Some(table), None) if message.contains("expected struct") => {
            format!("{message}; {table} is a table: write [{table}] on a line of its own and its keys below it")
        }
        (Some(table), Some(key)) => match example(table, key) {
            Some((line, meaning)) => format!("{message}; write e.g. `{line}` ({meaning})"),
            None => message,
        },
        _ => message,
    }
}

/// The table and the key (within one item of an array of tables) at `offset`: from the parsed
/// document when it parses, else from the line and the last header before it.
fn table_and_key(text: &str, offset: usize) -> (Option<String>, Option<String>) {
    let path = locate::path_at(text, offset);
    if !path.is_empty() {
        let mut keys = path.iter().filter_map(|step| match step {
            FoundStep::Key(key) => Some(key.clone()),
            FoundStep::Index(_) => None,
        });
        return (keys.next(), keys.next());
    }
    // A syntax error: the document does not parse, so read the lines around the offset.
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line.split_once('=').map(|(key, _)| key.trim().trim_matches('"').to_string());
    let table = before[..line_start].lines().rev().find_map(|line| {
        let line = line.trim();
        let name = line.strip_prefix('[')?.split(']').next()?.trim_start_matches('[');
        Some(name.trim().to_string())
    });
    (table, key.filter(|k| !k.is_empty() && !k.contains(char::is_whitespace)))
}
