//! `nginx-ha alias add|del|list`: through the running daemon, which applies the change at
//! once; without one, on the store alone (the daemon applies it when it starts), saying so.

use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use super::core::{self, NewAlias};
use super::store::{self, StoreError};
use super::{Alias, AliasError, InvalidAlias};
use crate::config::{Config, ConfigErrors};
use crate::control::client::{self, ClientError};
use crate::control::status::AliasReport;
use crate::control::{Request, Response};
use crate::net::Net;

/// An add waits for the ARP probe or IPv6 DAD in the daemon.
const ADD_TIMEOUT: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(10);

/// Exit status and what to print: `Ok` on stdout (exit 0), `Err` on stderr (exit 1).
pub type Outcome = Result<String, CliError>;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Invalid(#[from] InvalidAlias),
    /// Refused here, without a daemon.
    #[error(transparent)]
    Alias(#[from] AliasError),
    /// Without a daemon: the store cannot be locked, read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The daemon's refusal, as the control socket carries it: text.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Client(ClientError),
    #[error("the daemon answered without the alias")]
    NoReport,
}

pub async fn add(config_path: &Path, address: &str, interface: &str, label: Option<&str>) -> Outcome {
    let config = Config::load(config_path)?;
    let alias = Alias::parse(address, interface, label)?;
    let request = Request::AliasAdd {
        address: alias.address.to_string(),
        interface: alias.interface.clone(),
        label: alias.label.clone(),
    };
    match ask(&config, &request, ADD_TIMEOUT).await? {
        Some(response) => {
            let report = response.aliases.first().ok_or(CliError::NoReport)?;
            Ok(match (&report.problem, report.present) {
                (_, true) => format!("{alias}: added, present"),
                (Some(problem), false) => format!("{alias}: declared and stored; not present yet: {problem}"),
                (None, false) => format!("{alias}: declared and stored; not present yet"),
            })
        }
        None => {
            let dir = &config.daemon.state_dir;
            let _lock = store::lock(dir, false)?;
            let mut stored = store::read(dir)?;
            let vips = super::config_vips(&config);
            match core::check_new(&alias, &super::config_aliases(&config), &stored, &vips)? {
                NewAlias::AlreadyDeclared => Ok(format!("{alias} is already declared; nothing to do")),
                NewAlias::New => {
                    stored.push(alias.clone());
                    store::write(dir, &stored)?;
                    Ok(format!(
                        "no nginx-ha daemon answers on {}: {alias} saved in {}; it is added (after an ARP probe) when nginx-ha starts",
                        config.daemon.control_socket.display(),
                        store::path(dir).display()
                    ))
                }
            }
        }
    }
}

pub async fn del(config_path: &Path, address: &str, interface: &str) -> Outcome {
    let config = Config::load(config_path)?;
    let alias = Alias::parse(address, interface, None)?;
    let request = Request::AliasDel { address: alias.address.to_string(), interface: alias.interface.clone() };
    match ask(&config, &request, TIMEOUT).await? {
        Some(_) => Ok(format!("{alias}: removed and deleted from the store")),
        None => {
            let dir = &config.daemon.state_dir;
            let _lock = store::lock(dir, false)?;
            let stored = store::read(dir)?;
            if !stored.iter().any(|a| a.address == alias.address && a.interface == alias.interface) {
                return Err(super::shell::unknown(&alias, &super::config_aliases(&config), &stored).into());
            }
            let remaining: Vec<Alias> = stored
                .into_iter()
                .filter(|a| !(a.address == alias.address && a.interface == alias.interface))
                .collect();
            store::write(dir, &remaining)?;
            Ok(format!(
                "no nginx-ha daemon answers on {}: {alias} deleted from {}; the address stays on {} until nginx-ha starts, which removes it",
                config.daemon.control_socket.display(),
                store::path(dir).display(),
                alias.interface
            ))
        }
    }
}

/// Always exit 0 once the config is readable; without a daemon, presence is read from the
/// kernel here.
pub async fn list(config_path: &Path, json: bool) -> Outcome {
    let config = Config::load(config_path)?;
    let (reports, daemon, store_problem) = match ask(&config, &Request::AliasList, TIMEOUT).await? {
        Some(response) => (response.aliases, true, None),
        None => {
            let (reports, problem) = offline_reports(&config).await;
            (reports, false, problem)
        }
    };
    if json {
        let mut document = serde_json::json!({ "aliases": reports, "daemon": daemon });
        if let Some(problem) = store_problem {
            document["store_problem"] = problem.into();
        }
        return Ok(serde_json::to_string_pretty(&document).unwrap_or_default());
    }
    let mut out = String::new();
    if let Some(problem) = store_problem {
        let _ = writeln!(out, "(the store cannot be read: {problem})");
    }
    if !daemon {
        let _ = writeln!(
            out,
            "(no nginx-ha daemon answers on {}: the config and the store as they stand; nothing is applied until it starts)",
            config.daemon.control_socket.display()
        );
    }
    Ok(out + &render(&reports))
}

pub fn render(reports: &[AliasReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<28} {:<12} {:<14} {:<7} PRESENT", "ALIAS", "INTERFACE", "LABEL", "SOURCE");
    for r in reports {
        let present = if r.present { "yes" } else { "NO" };
        let _ = writeln!(
            out,
            "{:<28} {:<12} {:<14} {:<7} {present}",
            r.address,
            r.interface,
            r.label.as_deref().unwrap_or("-"),
            r.source.as_deref().unwrap_or("-")
        );
        if let Some(problem) = &r.problem {
            let _ = writeln!(out, "    {problem}");
        }
    }
    out
}

/// The declared aliases and whether the kernel has them, without a daemon.
async fn offline_reports(config: &Config) -> (Vec<AliasReport>, Option<String>) {
    let (stored, problem) = match store::read(&config.daemon.state_dir) {
        Ok(stored) => (stored, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let (declared, rejected) = core::merge(&super::config_aliases(config), &stored, &super::config_vips(config));
    let (links, addresses) = match Net::new().await {
        Ok(net) => (net.links().await.unwrap_or_default(), net.all_addresses().await.unwrap_or_default()),
        Err(_) => (Vec::new(), Vec::new()),
    };
    let present = |alias: &Alias| {
        links.iter().find(|l| l.name == alias.interface).is_some_and(|link| {
            addresses.iter().any(|a| {
                a.ifindex == link.index && a.address.addr() == alias.address.addr() && !a.tentative && !a.dad_failed
            })
        })
    };
    let applied = declared.iter().map(|d| (d, None));
    let refused = rejected.iter().map(|r| (&r.declared, Some(r.reason.to_string())));
    let reports = applied
        .chain(refused)
        .map(|(d, problem)| AliasReport {
            address: d.alias.address.to_string(),
            interface: d.alias.interface.clone(),
            label: d.alias.label.clone(),
            present: present(&d.alias),
            source: Some(if d.source == core::Source::Config { "config" } else { "cli" }.to_owned()),
            problem,
        })
        .collect();
    (reports, problem)
}

/// The daemon's answer, or `None` if no daemon runs; a refusal is an `Err`.
async fn ask(config: &Config, request: &Request, timeout: Duration) -> Result<Option<Response>, CliError> {
    match client::request(&config.daemon.control_socket, request, timeout).await {
        Ok(response) if response.ok => Ok(Some(response)),
        Ok(response) => Err(CliError::Refused(response.error.unwrap_or_else(|| "refused".into()))),
        Err(ClientError::NotRunning { .. }) => Ok(None),
        Err(e) => Err(CliError::Client(e)),
    }
}
