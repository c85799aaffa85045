//! The alias module's errors: an alias that is not valid as written ([`InvalidAlias`]), why the
//! kernel does not have a declared alias ([`Blocked`], kept by the core), and why an
//! `alias add` or `del` is refused ([`AliasError`]). Their text crosses the control socket
//! (`Response::error`) and is what the CLI prints: tests check parts of it.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::IpNet;

use super::{Alias, NAME_MAX, store::StoreError};
use crate::net::NetError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAlias {
    /// The reason of `config::parse_net`, which owns the address syntax.
    #[error("{0}")]
    Address(String),
    #[error("`{0}` is not a valid Linux interface name (1 to {NAME_MAX} bytes, no '/', ':' or spaces), e.g. \"eth0\"")]
    Interface(String),
    #[error("label `{0}`: labels exist for IPv4 addresses only; drop it for an IPv6 alias")]
    LabelOnIpv6(String),
    #[error(
        "label `{label}` must start with the interface name and be at most {NAME_MAX} bytes, e.g. \"{interface}:1\""
    )]
    Label { label: String, interface: String },
}

/// Why a declared alias is not on its interface; tried again later (see `core::RETRY_AFTER`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Blocked {
    #[error(
        "another host ({}) on {interface} already answers for {ip} (ARP probe, RFC 5227): remove it there or pick another address",
        colon_hex(mac)
    )]
    ArpAnswered { mac: [u8; 6], interface: String, ip: Ipv4Addr },
    #[error(
        "another host on {interface} already uses {ip} (IPv6 duplicate address detection failed); remove it there or pick another address"
    )]
    DadFailed { interface: String, ip: IpAddr },
    #[error("{ip} is already on {on} of this host; an address belongs on one interface")]
    OnAnotherInterface { ip: IpAddr, on: String },
    /// The probe or the netlink request failed: its error's text (the core keeps and compares
    /// reasons, and `NetError` is neither `Clone` nor `Eq`).
    #[error("{0}")]
    Failed(String),
}

fn colon_hex(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Why `nginx-ha alias add` or `del` is refused.
#[derive(Debug, thiserror::Error)]
pub enum AliasError {
    #[error(transparent)]
    Invalid(#[from] InvalidAlias),
    #[error("{ip} is a VIP of [[vrrp]] \"{router}\": VRRP adds and removes it; an address is either a VIP or an alias")]
    Vip { ip: IpAddr, router: String },
    /// Add: the address is an `[[alias]]` of the config already.
    #[error("{ip} is already declared as {existing} by an [[alias]] in the config file")]
    InConfig { ip: IpAddr, existing: Alias },
    /// Add: the store has the address already, otherwise.
    #[error("{ip} is already declared as {existing}; remove it first: `nginx-ha alias del {} --dev {}`", existing.address, existing.interface)]
    Duplicate { ip: IpAddr, existing: Alias },
    #[error("{reason}; {alias} was not added")]
    NotAdded { alias: Alias, reason: Blocked },
    #[error("{0} was dropped meanwhile (by a reload?)")]
    Dropped(Alias),
    #[error("deleted while it was being added")]
    DeletedMeanwhile,
    /// Del: the alias is an `[[alias]]` of the config, not the store's.
    #[error("{0} is declared by an [[alias]] table in the config file: remove it there and run `nginx-ha reload`")]
    DeclaredInConfig(Alias),
    /// Del: the address is declared on another interface than the one given.
    #[error("{ip} is declared as {other}, not on {interface}", ip = other.address.addr())]
    OnOtherInterface { other: Alias, interface: String },
    /// Del: the address is declared with another prefix length than the one given.
    #[error("{ip} is declared as {stored}, not {given}: `nginx-ha alias del {}`", stored.address, ip = stored.address.addr())]
    OtherPrefix { stored: Alias, given: IpNet },
    #[error("no alias {address} on {interface} is declared; `nginx-ha alias list` shows them")]
    NotDeclared { address: IpNet, interface: String },
    /// The daemon could not lock or read its store at start: the reason.
    #[error("the alias store cannot be changed: {0}")]
    StoreUnavailable(String),
    /// Add: the alias is in place but could not be stored, so it was taken away again.
    #[error("{source}; {alias} was removed again")]
    NotStored { alias: Box<Alias>, source: StoreError },
    /// Del: the store could not be written.
    #[error("{0}; nothing was changed")]
    Unchanged(#[source] StoreError),
    #[error("{0}")]
    Netlink(#[source] Arc<NetError>),
    #[error("the alias task has stopped (nginx-ha is shutting down)")]
    TaskGone,
}
