//! The pure alias core: which aliases are declared (config + store), what the kernel has, and
//! what to add or remove so that the two agree. No I/O and no clock: the shell feeds it links,
//! addresses, the outcome of each add and the current time, and carries out its [`Action`]s.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::{Alias, AliasError, Blocked};
use crate::control::status::AliasReport;
use crate::net::{ALIAS_PROTO, AddressInfo};

/// A failed or conflicting add is tried again after this long (the other host may go away,
/// the error may pass); a link or address event for the alias's interface retries sooner.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);
/// How long an IPv6 alias may stay tentative (duplicate address detection) before it counts
/// as settled; on a link without carrier DAD waits for the carrier.
pub const DAD_PATIENCE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An `[[alias]]` table of the config file.
    Config,
    /// `nginx-ha alias add`, kept in the store.
    Cli,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Cli => "cli",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub alias: Alias,
    pub source: Source,
}

/// A declared alias that is not applied, and why: it conflicts with another declaration, or
/// it comes from a corrupt store. It is reported, never added or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub declared: Declared,
    pub reason: NotApplied,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotApplied {
    #[error("{ip} is a VIP of [[vrrp]] \"{router}\"; an address is either a VIP or an alias")]
    Vip { ip: IpAddr, router: String },
    /// The same address is declared earlier (the config's before the store's): that one wins.
    #[error(
        "{ip} is also declared as {winner} ({}); that declaration wins: remove this one with `nginx-ha alias del {} --dev {}`",
        describe(*winner_source),
        loser.address,
        loser.interface,
        ip = loser.address.addr()
    )]
    AlsoDeclared { loser: Alias, winner: Alias, winner_source: Source },
    /// Still readable in a corrupt store that was moved aside to `aside`.
    #[error("only in the corrupt alias store kept as {}: not applied; re-add it with `nginx-ha alias add`", aside.display())]
    InCorruptStore { aside: std::path::PathBuf },
}

/// A VIP of a `[[vrrp]]` table: aliases must never take one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip {
    pub address: IpAddr,
    pub router: String,
}

/// Config aliases first (validated with the config), then the store's, each store alias
/// rejected if its address is a VIP or already declared.
pub fn merge(config: &[Alias], store: &[Alias], vips: &[Vip]) -> (Vec<Declared>, Vec<Rejected>) {
    let mut declared: Vec<Declared> = Vec::new();
    let mut rejected = Vec::new();
    let sources = config.iter().map(|a| (a, Source::Config)).chain(store.iter().map(|a| (a, Source::Cli)));
    for (alias, source) in sources {
        let candidate = Declared { alias: alias.clone(), source };
        let ip = alias.address.addr();
        let as_vip =
            vips.iter().find(|v| v.address == ip).map(|vip| NotApplied::Vip { ip, router: vip.router.clone() });
        let reason = as_vip.or_else(|| {
            declared.iter().find(|d| d.alias.address.addr() == ip).map(|other| NotApplied::AlsoDeclared {
                loser: alias.clone(),
                winner: other.alias.clone(),
                winner_source: other.source,
            })
        });
        match reason {
            Some(reason) => rejected.push(Rejected { declared: candidate, reason }),
            None => declared.push(candidate),
        }
    }
    (declared, rejected)
}

fn describe(source: Source) -> &'static str {
    match source {
        Source::Config => "an [[alias]] in the config file",
        Source::Cli => "by `nginx-ha alias add`",
    }
}

/// What `nginx-ha alias add` of `alias` means given what is declared: a new alias, the same
/// one again (nothing to do), or an error saying what conflicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewAlias {
    New,
    AlreadyDeclared,
}

pub fn check_new(alias: &Alias, config: &[Alias], store: &[Alias], vips: &[Vip]) -> Result<NewAlias, AliasError> {
    alias.check_label()?;
    let ip = alias.address.addr();
    if let Some(vip) = vips.iter().find(|v| v.address == ip) {
        return Err(AliasError::Vip { ip, router: vip.router.clone() });
    }
    if let Some(existing) = config.iter().find(|a| a.address.addr() == ip) {
        return Err(AliasError::InConfig { ip, existing: existing.clone() });
    }
    match store.iter().find(|a| a.address.addr() == ip) {
        Some(existing) if existing == alias => Ok(NewAlias::AlreadyDeclared),
        Some(existing) => Err(AliasError::Duplicate { ip, existing: existing.clone() }),
        None => Ok(NewAlias::New),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Add `address` to `interface` (index `ifindex`), tagged [`ALIAS_PROTO`]. `probe`: an
    /// IPv4 address on a link with carrier is first probed for (RFC 5227); IPv6 addresses
    /// always go through the kernel's duplicate address detection.
    Add {
        address: IpNet,
        interface: String,
        ifindex: u32,
        label: Option<String>,
        probe: bool,
    },
    Remove {
        address: IpNet,
        ifindex: u32,
    },
}

/// How an [`Action::Add`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddOutcome {
    Added,
    /// The interface is gone.
    NoLink,
    /// Another host answered the ARP probe, or the add failed.
    Blocked(Blocked),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Present, or to be added at the next pass.
    Idle,
    /// An add is under way (probe, netlink request).
    Adding,
    /// IPv6: added, duplicate address detection running.
    Dad { until: Instant },
    /// Not added: a conflict or an error; tried again at `retry_at` or on an event.
    Blocked { reason: Blocked, retry_at: Instant },
}

#[derive(Debug, Clone)]
struct Entry {
    declared: Declared,
    phase: Phase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Link {
    index: u32,
    up: bool,
}

/// How an alias stands, for the shell answering `nginx-ha alias add`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// An add or DAD is still under way.
    Pending,
    /// Blocked by a conflict or an error: the reason.
    Blocked(Blocked),
    /// Present, or waiting for its interface (which the report says).
    Done,
    /// Not declared at all.
    Unknown,
}

#[derive(Debug, Default)]
pub struct Reconciler {
    entries: Vec<Entry>,
    rejected: Vec<Rejected>,
    links: HashMap<String, Link>,
    /// Every address on every link, as the kernel reported it.
    addresses: Vec<AddressInfo>,
}

impl Reconciler {
    pub fn new() -> Reconciler {
        Reconciler::default()
    }

    /// Replaces the declared set (start, reload, `alias add`/`del`). Aliases that are no longer
    /// declared are removed from their interface; kept ones keep their state.
    pub fn set_declared(&mut self, declared: Vec<Declared>, rejected: Vec<Rejected>, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let old = std::mem::take(&mut self.entries);
        for entry in &old {
            let kept = declared.iter().any(|d| d.alias == entry.declared.alias);
            // A changed label is a new address for the kernel: removed and added again.
            if !kept && let Some(found) = self.find(&entry.declared.alias).cloned() {
                actions.push(Action::Remove { address: found.address, ifindex: found.ifindex });
                self.forget(found.ifindex, found.address.addr());
            }
        }
        self.entries = declared
            .into_iter()
            .map(|d| {
                let phase = old.iter().find(|e| e.declared.alias == d.alias).map_or(Phase::Idle, |e| e.phase.clone());
                Entry { declared: d, phase }
            })
            .collect();
        self.rejected = rejected;
        actions.extend(self.reconcile(now));
        actions
    }

    /// The full picture, at start and after lost netlink notifications. Addresses tagged as
    /// aliases that nobody declares any more (deleted while the daemon was down, or removed
    /// from the config) are removed.
    pub fn snapshot(
        &mut self,
        links: impl IntoIterator<Item = (String, u32, bool)>,
        addresses: Vec<AddressInfo>,
        now: Instant,
    ) -> Vec<Action> {
        self.links = links.into_iter().map(|(name, index, up)| (name, Link { index, up })).collect();
        self.addresses = addresses;
        let mut actions = Vec::new();
        let stale: Vec<AddressInfo> = self
            .addresses
            .iter()
            .filter(|a| a.proto == Some(ALIAS_PROTO))
            .filter(|a| {
                let ip = a.address.addr();
                let declared = self.entries.iter().any(|e| {
                    e.declared.alias.address.addr() == ip
                        && self.index_of(&e.declared.alias.interface) == Some(a.ifindex)
                });
                !declared && !self.rejected.iter().any(|r| r.declared.alias.address.addr() == ip)
            })
            .cloned()
            .collect();
        for address in stale {
            actions.push(Action::Remove { address: address.address, ifindex: address.ifindex });
            self.forget(address.ifindex, address.address.addr());
        }
        for entry in &mut self.entries {
            if matches!(entry.phase, Phase::Blocked { .. }) {
                entry.phase = Phase::Idle;
            }
        }
        actions.extend(self.reconcile(now));
        actions
    }

    /// A link exists (appeared, changed, or was re-created with a new index).
    pub fn link(&mut self, name: &str, index: u32, up: bool, now: Instant) -> Vec<Action> {
        let previous = self.links.insert(name.to_owned(), Link { index, up });
        if previous.is_some_and(|p| p.index != index) {
            let old = previous.map(|p| p.index);
            self.addresses.retain(|a| Some(a.ifindex) != old);
        }
        if previous != Some(Link { index, up }) {
            self.unblock(name);
        }
        self.reconcile(now)
    }

    pub fn link_gone(&mut self, name: &str, now: Instant) -> Vec<Action> {
        if let Some(link) = self.links.remove(name) {
            self.addresses.retain(|a| a.ifindex != link.index);
        }
        self.reconcile(now)
    }

    pub fn address_added(&mut self, info: AddressInfo, now: Instant) -> Vec<Action> {
        self.forget(info.ifindex, info.address.addr());
        self.addresses.push(info);
        self.reconcile(now)
    }

    pub fn address_removed(&mut self, info: &AddressInfo, now: Instant) -> Vec<Action> {
        self.forget(info.ifindex, info.address.addr());
        self.reconcile(now)
    }

    pub fn add_finished(&mut self, address: IpNet, outcome: AddOutcome, now: Instant) -> Vec<Action> {
        let Some(i) = self.entries.iter().position(|e| e.declared.alias.address == address) else {
            return Vec::new();
        };
        if self.entries[i].phase != Phase::Adding {
            return self.reconcile(now);
        }
        if outcome == AddOutcome::Added
            && self.find(&self.entries[i].declared.alias).is_none()
            && let Some(ifindex) = self.index_of(&self.entries[i].declared.alias.interface)
        {
            // The kernel has it now; its notification may still be on the way, and until
            // then the alias must not look absent (it would be added again).
            self.addresses.push(AddressInfo {
                ifindex,
                address,
                label: self.entries[i].declared.alias.label.clone(),
                proto: Some(ALIAS_PROTO),
                tentative: address.addr().is_ipv6(),
                dad_failed: false,
                secondary: false,
            });
        }
        let blocked = |reason| Phase::Blocked { reason, retry_at: now + RETRY_AFTER };
        self.entries[i].phase = match outcome {
            AddOutcome::Added if address.addr().is_ipv6() => Phase::Dad { until: now + DAD_PATIENCE },
            AddOutcome::Added => Phase::Idle,
            AddOutcome::Blocked(reason) => blocked(reason),
            AddOutcome::NoLink => {
                let name = self.entries[i].declared.alias.interface.clone();
                if let Some(link) = self.links.remove(&name) {
                    self.addresses.retain(|a| a.ifindex != link.index);
                }
                Phase::Idle
            }
        };
        self.reconcile(now)
    }

    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        self.reconcile(now)
    }

    /// When [`tick`](Self::tick) must be called next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries
            .iter()
            .filter_map(|e| match &e.phase {
                Phase::Dad { until } => Some(*until),
                Phase::Blocked { retry_at, .. } => Some(*retry_at),
                _ => None,
            })
            .min()
    }

    /// Whether any add (or IPv6 DAD) is under way.
    pub fn busy(&self) -> bool {
        self.entries.iter().any(|e| matches!(e.phase, Phase::Adding | Phase::Dad { .. }))
    }

    pub fn settled(&self, alias: &Alias) -> Settled {
        match self.entries.iter().find(|e| &e.declared.alias == alias).map(|e| &e.phase) {
            None => Settled::Unknown,
            Some(Phase::Adding | Phase::Dad { .. }) => Settled::Pending,
            Some(Phase::Blocked { reason, .. }) => Settled::Blocked(reason.clone()),
            Some(Phase::Idle) => Settled::Done,
        }
    }

    /// One report per declared alias (applied ones, then rejected ones), in declaration order.
    pub fn reports(&self) -> Vec<AliasReport> {
        let applied = self.entries.iter().map(|e| {
            let present = self.present(&e.declared.alias);
            let problem = match &e.phase {
                _ if present => None,
                Phase::Blocked { reason, .. } => Some(reason.to_string()),
                Phase::Adding => Some("being added".to_owned()),
                Phase::Dad { .. } => Some("IPv6 duplicate address detection under way".to_owned()),
                Phase::Idle if !self.links.contains_key(&e.declared.alias.interface) => Some(format!(
                    "interface {} does not exist (yet); the alias is added when it appears",
                    e.declared.alias.interface
                )),
                Phase::Idle => None,
            };
            report(&e.declared, present, problem)
        });
        let rejected = self
            .rejected
            .iter()
            .map(|r| report(&r.declared, self.present(&r.declared.alias), Some(r.reason.to_string())));
        applied.chain(rejected).collect()
    }

    fn present(&self, alias: &Alias) -> bool {
        self.find(alias).is_some_and(|a| !a.tentative && !a.dad_failed)
    }

    fn reconcile(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        for i in 0..self.entries.len() {
            let alias = self.entries[i].declared.alias.clone();
            let ip = alias.address.addr();
            let found = self.find(&alias).cloned();
            // IPv6 DAD found another host with the address: it is unusable, take it away.
            if let Some(found) = found.as_ref().filter(|f| f.dad_failed) {
                actions.push(Action::Remove { address: found.address, ifindex: found.ifindex });
                self.forget(found.ifindex, ip);
                self.entries[i].phase = Phase::Blocked {
                    reason: Blocked::DadFailed { interface: alias.interface.clone(), ip },
                    retry_at: now + RETRY_AFTER,
                };
                continue;
            }
            match &self.entries[i].phase {
                Phase::Adding => continue,
                Phase::Dad { until } => {
                    if found.as_ref().is_some_and(|f| !f.tentative) || *until <= now {
                        self.entries[i].phase = Phase::Idle;
                    } else {
                        continue;
                    }
                }
                Phase::Blocked { retry_at, .. } if *retry_at > now => continue,
                Phase::Blocked { .. } => self.entries[i].phase = Phase::Idle,
                Phase::Idle => {}
            }
            if found.is_some() {
                continue;
            }
            let Some(link) = self.links.get(&alias.interface).copied() else { continue };
            let elsewhere = self.addresses.iter().find(|a| a.address.addr() == ip && a.ifindex != link.index);
            if let Some(other) = elsewhere {
                let on = self.name_of(other.ifindex).unwrap_or_else(|| format!("interface #{}", other.ifindex));
                self.entries[i].phase =
                    Phase::Blocked { reason: Blocked::OnAnotherInterface { ip, on }, retry_at: now + RETRY_AFTER };
                continue;
            }
            actions.push(Action::Add {
                address: alias.address,
                interface: alias.interface.clone(),
                ifindex: link.index,
                label: alias.label.clone(),
                probe: ip.is_ipv4() && link.up,
            });
            self.entries[i].phase = Phase::Adding;
        }
        actions
    }

    /// The kernel's address for `alias`: its IP on its interface (any prefix length: the
    /// kernel refuses a second IPv6 address with another prefix, and an admin's own IPv4
    /// address with another one is not ours to double).
    fn find(&self, alias: &Alias) -> Option<&AddressInfo> {
        let index = self.index_of(&alias.interface)?;
        self.addresses.iter().find(|a| a.ifindex == index && a.address.addr() == alias.address.addr())
    }

    fn forget(&mut self, ifindex: u32, ip: IpAddr) {
        self.addresses.retain(|a| !(a.ifindex == ifindex && a.address.addr() == ip));
    }

    fn index_of(&self, name: &str) -> Option<u32> {
        self.links.get(name).map(|l| l.index)
    }

    fn name_of(&self, index: u32) -> Option<String> {
        self.links.iter().find(|(_, l)| l.index == index).map(|(name, _)| name.clone())
    }

    /// Something changed on `interface`: a blocked alias there is tried again now.
    fn unblock(&mut self, interface: &str) {
        for entry in &mut self.entries {
            if entry.declared.alias.interface == interface && matches!(entry.phase, Phase::Blocked { .. }) {
                entry.phase = Phase::Idle;
            }
        }
    }
}

fn report(declared: &Declared, present: bool, problem: Option<String>) -> AliasReport {
    AliasReport {
        address: declared.alias.address.to_string(),
        interface: declared.alias.interface.clone(),
        label: declared.alias.label.clone(),
        present,
        source: Some(declared.source.name().to_owned()),
        problem,
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
