//! What `nginx-ha reload` may change in a running daemon: a pure comparison of the running
//! config with the file as it is now. Every key is classified here, so that a change is either
//! applied or rejected, never accepted and ignored.

use super::{AnycastConfig, Config, DaemonConfig, HealthConfig, NginxConfig, VrrpConfig};

/// Keys whose change needs a restart of nginx-ha; `nginx-ha reload` rejects them all at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RestartNeeded(pub Vec<String>);

impl std::fmt::Display for RestartNeeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (keys, verb) = if self.0.len() == 1 { ("this key", "takes") } else { ("these keys", "take") };
        write!(
            f,
            "{} changed; {keys} {verb} effect only when nginx-ha restarts: restart it (`systemctl restart nginx-ha`) to apply them",
            self.0.join(", ")
        )?;
        if self.0.iter().any(|key| key.starts_with("[[vrrp]]")) {
            f.write_str(" (a restart hands the VIPs to the peer meanwhile)")?;
        }
        f.write_str(", or undo the change; nothing was changed, the running config stays")
    }
}

/// The fields of `$ty` that differ between `$old` and `$new`. Every field is named (no `..`):
/// a new field is a compile error here until it is classified.
macro_rules! differing {
    ($old:expr, $new:expr, $ty:ident { $($field:ident),* $(,)? }) => {{
        let (old, new) = ($old, $new);
        let $ty { $($field: _),* } = old;
        let mut names: Vec<&'static str> = Vec::new();
        $( if old.$field != new.$field { names.push(stringify!($field)); } )*
        names
    }};
}

impl Config {
    /// The keys that differ in `new`, as `[table] key`, if all of them can be applied to a
    /// running daemon: `[nginx]` watch, watch_debounce_ms, stop_timeout_ms, reload_timeout_ms,
    /// all of `[health]`, the `[[alias]]` tables, and `[[anycast]]` drain_ms and restart_grace_ms.
    /// Otherwise every changed key that needs a restart.
    pub fn reload_changes(&self, new: &Config) -> Result<Vec<String>, RestartNeeded> {
        let mut live = Vec::new();
        let mut restart = Vec::new();

        let nginx = differing!(
            &self.nginx,
            &new.nginx,
            NginxConfig { binary, config, watch, pid_file, stop_timeout_ms, reload_timeout_ms, watch_debounce_ms }
        );
        for key in nginx {
            let name = format!("[nginx] {key}");
            match key {
                // Unset means a default looked up on this host: only the resolved path counts.
                "binary" if self.nginx.binary_path() == new.nginx.binary_path() => {}
                "binary" | "config" | "pid_file" => restart.push(name),
                _ => live.push(name),
            }
        }
        let health = differing!(
            &self.health,
            &new.health,
            HealthConfig { interval_ms, timeout_ms, fall, rise, http, tcp, status_url }
        );
        live.extend(health.into_iter().map(|key| format!("[health] {key}")));

        let daemon = differing!(
            &self.daemon,
            &new.daemon,
            DaemonConfig { control_socket, state_dir, metrics_listen, status_group, drain_port }
        );
        restart.extend(daemon.into_iter().map(|key| format!("[daemon] {key}")));
        restart.extend(vrrp_changes(&self.vrrp, &new.vrrp));
        // The alias task reconciles the new set at once: added ones are added, removed ones removed.
        if self.alias != new.alias {
            live.push("[[alias]]".to_owned());
        }
        let (anycast_live, anycast_restart) = anycast_changes(&self.anycast, &new.anycast);
        live.extend(anycast_live);
        restart.extend(anycast_restart);

        if restart.is_empty() { Ok(live) } else { Err(RestartNeeded(restart)) }
    }
}

/// Routers matched by name (names are unique): added, removed, or their changed keys.
fn vrrp_changes(old: &[VrrpConfig], new: &[VrrpConfig]) -> Vec<String> {
    let mut changes = Vec::new();
    for router in new {
        let Some(before) = old.iter().find(|o| o.name == router.name) else {
            changes.push(format!("[[vrrp]] \"{}\" (added)", router.name));
            continue;
        };
        let keys = differing!(
            before,
            router,
            VrrpConfig {
                name,
                interface,
                vrid,
                priority,
                version,
                advert_interval_ms,
                preempt,
                preempt_delay_ms,
                auth_pass,
                unicast_peers,
                virtual_ips,
                virtual_ips_excluded,
                on_nginx_failure,
                demote_weight,
                track_interfaces,
                notify,
                notify_timeout_ms,
                checksum_pseudo_header,
                restart_grace_ms,
                drain_ms,
            }
        );
        // Writing out the default version is no change.
        let same_version = before.version() == router.version();
        let keys = keys.into_iter().filter(|key| !(*key == "version" && same_version));
        changes.extend(keys.map(|key| format!("[[vrrp]] \"{}\" {key}", router.name)));
    }
    for router in old.iter().filter(|o| !new.iter().any(|n| n.name == o.name)) {
        changes.push(format!("[[vrrp]] \"{}\" (removed)", router.name));
    }
    changes
}

/// Anycast tables matched by name: (live changes, changes that need a restart). The timings
/// are live; addresses, interface and table are what is in the kernel, and a restart moves
/// them cleanly (withdraw, drain, re-announce) where a reload would have to do it in place.
fn anycast_changes(old: &[AnycastConfig], new: &[AnycastConfig]) -> (Vec<String>, Vec<String>) {
    let (mut live, mut restart) = (Vec::new(), Vec::new());
    for table in new {
        let Some(before) = old.iter().find(|o| o.name == table.name) else {
            restart.push(format!("[[anycast]] \"{}\" (added)", table.name));
            continue;
        };
        let keys = differing!(
            before,
            table,
            AnycastConfig { name, addresses, interface, table, drain_ms, restart_grace_ms, hold }
        );
        for key in keys {
            let name = format!("[[anycast]] \"{}\" {key}", table.name);
            match key {
                "drain_ms" | "restart_grace_ms" => live.push(name),
                _ => restart.push(name),
            }
        }
    }
    for table in old.iter().filter(|o| !new.iter().any(|n| n.name == o.name)) {
        restart.push(format!("[[anycast]] \"{}\" (removed)", table.name));
    }
    (live, restart)
}
