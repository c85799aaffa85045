//! One `[[vrrp]]` table parsed once into the router's domain types: the only place a router's
//! config is checked. `config::validate` runs this conversion on every table (and turns its
//! errors into located messages); `Config::parse` keeps the result, so nothing parses the
//! table's strings again and `Router` can rely on what it gets.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use thiserror::Error;

use super::packet::{CodecOptions, Version};
use super::router::{FailureMode, RouterConfig};
use crate::config::{self, Config, InterfaceNameError, OnNginxFailure, VrrpConfig};
use crate::net::Family;

/// The address count of an advert is one byte.
const MAX_ADVERTISED: usize = 255;
/// The longest drain_ms (10 min).
pub const MAX_DRAIN_MS: u64 = 600_000;
/// The longest preempt_delay_ms (1000 s).
const MAX_PREEMPT_DELAY_MS: u64 = 1_000_000;

/// One `[[vrrp]]` table, ready for the shell.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterSpec {
    pub router: RouterConfig,
    pub interface: String,
    /// Held with the VIPs, not advertised.
    pub excluded_vips: Vec<IpNet>,
    pub track_interfaces: Vec<String>,
    pub notify: Option<PathBuf>,
    pub notify_timeout: Duration,
}

impl RouterSpec {
    /// The routers of a config; `Config::parse` has already converted (and so checked) them.
    pub fn from_config(config: &Config) -> Vec<RouterSpec> {
        config.routers().to_vec()
    }

    /// Whether the routers' thread should run at real-time priority: adverts under 1 s (VRRPv3),
    /// whose master-down interval (3 adverts + skew, 73 ms at 20 ms) the scheduling delays of a
    /// busy machine exceed: the master's adverts go out late and the backup takes over from a
    /// live master. At 1 s and more there are seconds to spare, and the thread runs as any other.
    pub fn wants_realtime(specs: &[RouterSpec]) -> bool {
        specs.iter().any(|spec| spec.router.advert_interval < Duration::from_secs(1))
    }

    /// Every address the router holds as MASTER: advertised and excluded.
    pub(super) fn all_vips(&self) -> impl Iterator<Item = &IpNet> {
        self.router.vips.iter().chain(&self.excluded_vips)
    }

    pub(super) fn family(&self) -> Family {
        match self.router.vips.first() {
            Some(vip) if vip.addr().is_ipv6() => Family::V6,
            _ => Family::V4,
        }
    }
}

/// Which VIP list of the table an address is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VipList {
    Advertised,
    Excluded,
}

impl VipList {
    pub fn key(self) -> &'static str {
        match self {
            VipList::Advertised => "virtual_ips",
            VipList::Excluded => "virtual_ips_excluded",
        }
    }
}

/// One problem of a `[[vrrp]]` table. [`SpecError::key`] says which key it is about; the
/// messages say what would be right (the validator prefixes the router's name).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpecError {
    #[error("name must not be empty; keepalived's instance name, e.g. \"VI_1\", fits")]
    EmptyName,
    #[error(transparent)]
    Interface(InterfaceNameError),
    #[error("{source}")]
    TrackInterface { index: usize, source: InterfaceNameError },
    #[error("vrid = 0 is not a valid VRID; use 1 to 255")]
    Vrid,
    #[error("priority 0 is reserved for a master that relinquishes; use 1 to 255 (255 = address owner)")]
    Priority,
    #[error("version = {0}: use 2 (RFC 3768) or 3 (RFC 5798)")]
    Version(u8),
    #[error(
        "VRRPv2 advertises whole seconds: advert_interval_ms = {0} must be a multiple of 1000 from 1000 to 255000 (or use version = 3 for sub-second intervals)"
    )]
    V2Interval(u64),
    #[error("VRRPv3 advertises in centiseconds: advert_interval_ms = {0} must be a multiple of 10 from 10 to 40950")]
    V3Interval(u64),
    #[error(
        "checksum_pseudo_header applies to version = 3 only; remove it, or write version = 3 (the default for IPv4 is 2)"
    )]
    V2PseudoHeader,
    #[error("VRRPv3 has no authentication (RFC 5798); remove auth_pass or use version = 2")]
    V3Auth,
    /// IPv6 needs VRRPv3, so "use version = 2" would be no way out.
    #[error("VRRPv3, the only version that carries IPv6, has no authentication (RFC 5798); remove auth_pass")]
    Ipv6Auth,
    #[error(
        "auth_pass is {0} bytes; VRRPv2 simple-text authentication carries 1 to 8 bytes (keepalived truncates longer ones, which then never match)"
    )]
    AuthLength(usize),
    #[error("preempt_delay_ms must be at most {MAX_PREEMPT_DELAY_MS} (1000 s)")]
    PreemptDelay,
    #[error("drain_ms must be at most {MAX_DRAIN_MS} (10 min); 0 turns the drain off")]
    Drain,
    #[error("demote_weight = 0 would not demote at all; use 1 to 254 (default 50)")]
    DemoteWeight,
    #[error("virtual_ips is empty: list at least one address, e.g. [\"198.18.0.100/24\"]")]
    NoVips,
    #[error(
        "{0} virtual_ips do not fit in an advert (at most {MAX_ADVERTISED}); keep the ones peers compare in virtual_ips and list the rest in virtual_ips_excluded"
    )]
    TooManyVips(usize),
    #[error("{reason}")]
    Vip { list: VipList, index: usize, reason: String },
    #[error("`{vip}` mixes IPv4 and IPv6 in one virtual router; put each family in its own [[vrrp]] with its own vrid")]
    MixedFamilies { list: VipList, index: usize, vip: String },
    #[error("`{vip}` is IPv6, which VRRPv2 cannot carry; use version = 3")]
    V2Ipv6 { list: VipList, index: usize, vip: String },
    #[error("unicast_peers is empty: list the peers' addresses, or remove the key to use multicast")]
    NoPeers,
    #[error("unicast peer `{peer}` is not an IP address, e.g. \"198.18.0.2\"")]
    Peer { index: usize, peer: String },
    #[error(
        "unicast peer `{peer}` is not of the same address family as the virtual_ips; list the peer's {} address, e.g. \"{}\"",
        if peer.is_ipv4() { "IPv6" } else { "IPv4" },
        if peer.is_ipv4() { "fd00::2" } else { "198.18.0.2" }
    )]
    PeerFamily { index: usize, peer: IpAddr },
    #[error(
        "notify `{}` must be an absolute path (it runs without a shell), e.g. \"/usr/local/bin/nginx-ha-notify\"",
        .0.display()
    )]
    NotifyPath(PathBuf),
}

impl SpecError {
    /// The key of the table the problem is about, and the index within it for a list.
    pub fn key(&self) -> (&'static str, Option<usize>) {
        match self {
            SpecError::EmptyName => ("name", None),
            SpecError::Interface(_) => ("interface", None),
            SpecError::TrackInterface { index, .. } => ("track_interfaces", Some(*index)),
            SpecError::Vrid => ("vrid", None),
            SpecError::Priority => ("priority", None),
            SpecError::Version(_) => ("version", None),
            SpecError::V2Interval(_) | SpecError::V3Interval(_) => ("advert_interval_ms", None),
            SpecError::V2PseudoHeader => ("checksum_pseudo_header", None),
            SpecError::V3Auth | SpecError::Ipv6Auth | SpecError::AuthLength(_) => ("auth_pass", None),
            SpecError::PreemptDelay => ("preempt_delay_ms", None),
            SpecError::DemoteWeight => ("demote_weight", None),
            SpecError::Drain => ("drain_ms", None),
            SpecError::NoVips | SpecError::TooManyVips(_) => ("virtual_ips", None),
            SpecError::Vip { list, index, .. }
            | SpecError::MixedFamilies { list, index, .. }
            | SpecError::V2Ipv6 { list, index, .. } => (list.key(), Some(*index)),
            SpecError::NoPeers => ("unicast_peers", None),
            SpecError::Peer { index, .. } | SpecError::PeerFamily { index, .. } => ("unicast_peers", Some(*index)),
            SpecError::NotifyPath(_) => ("notify", None),
        }
    }

    /// Whether the message is about this router (and so is worth its name in front): an empty
    /// name or a bad interface name reads the same in any table.
    pub fn names_router(&self) -> bool {
        !matches!(self, SpecError::EmptyName | SpecError::Interface(_) | SpecError::TrackInterface { .. })
    }
}

/// Everything wrong with one `[[vrrp]]` table, all at once.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct InvalidRouter(pub Vec<SpecError>);

impl TryFrom<&VrrpConfig> for RouterSpec {
    type Error = InvalidRouter;

    fn try_from(table: &VrrpConfig) -> Result<RouterSpec, InvalidRouter> {
        let mut errors = Vec::new();
        if table.name.is_empty() {
            errors.push(SpecError::EmptyName);
        }
        if let Err(error) = config::check_interface_name(&table.interface) {
            errors.push(SpecError::Interface(error));
        }
        if table.vrid == 0 {
            errors.push(SpecError::Vrid);
        }
        if table.priority == 0 {
            errors.push(SpecError::Priority);
        }
        let version = match table.version() {
            2 => Some(Version::V2),
            3 => Some(Version::V3),
            other => {
                errors.push(SpecError::Version(other));
                None
            }
        };
        let ms = table.advert_interval_ms;
        match version {
            Some(Version::V2) => {
                if !ms.is_multiple_of(1000) || !(1000..=255_000).contains(&ms) {
                    errors.push(SpecError::V2Interval(ms));
                }
                // The default is true: only a written `false` is something v2 cannot do.
                if !table.checksum_pseudo_header {
                    errors.push(SpecError::V2PseudoHeader);
                }
            }
            Some(Version::V3) if !ms.is_multiple_of(10) || !(10..=40_950).contains(&ms) => {
                errors.push(SpecError::V3Interval(ms));
            }
            _ => {}
        }
        let (vips, excluded_vips, family) = parse_vips(table, version, &mut errors);
        let auth_pass = parse_auth(table, version, family, &mut errors);
        if table.preempt_delay_ms > MAX_PREEMPT_DELAY_MS {
            errors.push(SpecError::PreemptDelay);
        }
        if table.drain_ms > MAX_DRAIN_MS {
            errors.push(SpecError::Drain);
        }
        if table.on_nginx_failure == OnNginxFailure::Demote && table.demote_weight == 0 {
            errors.push(SpecError::DemoteWeight);
        }
        let unicast_peers = parse_peers(table, family, &mut errors);
        for (index, tracked) in table.track_interfaces.iter().enumerate() {
            if let Err(source) = config::check_interface_name(tracked) {
                errors.push(SpecError::TrackInterface { index, source });
            }
        }
        if let Some(notify) = table.notify.as_ref().filter(|notify| !notify.is_absolute()) {
            errors.push(SpecError::NotifyPath(notify.clone()));
        }

        let version = match (version, errors.is_empty()) {
            (Some(version), true) => version,
            _ => return Err(InvalidRouter(errors)),
        };
        Ok(RouterSpec {
            router: RouterConfig {
                name: table.name.clone(),
                vrid: table.vrid,
                priority: table.priority,
                version,
                advert_interval: Duration::from_millis(ms),
                preempt: table.preempt,
                preempt_delay: Duration::from_millis(table.preempt_delay_ms),
                auth_pass,
                vips,
                failure_mode: match table.on_nginx_failure {
                    OnNginxFailure::Relinquish => FailureMode::Relinquish,
                    OnNginxFailure::Demote => FailureMode::Demote { weight: table.demote_weight },
                },
                codec: CodecOptions { v3_pseudo_header_checksum: table.checksum_pseudo_header },
                unicast_peers,
                restart_grace: Duration::from_millis(table.restart_grace_ms),
                drain: Duration::from_millis(table.drain_ms),
            },
            interface: table.interface.clone(),
            excluded_vips,
            track_interfaces: table.track_interfaces.clone(),
            notify: table.notify.clone(),
            notify_timeout: Duration::from_millis(table.notify_timeout_ms),
        })
    }
}

/// The advertised and the excluded VIPs, and their family (None when there is none to go by).
fn parse_vips(
    table: &VrrpConfig,
    version: Option<Version>,
    errors: &mut Vec<SpecError>,
) -> (Vec<IpNet>, Vec<IpNet>, Option<Family>) {
    if table.virtual_ips.is_empty() {
        errors.push(SpecError::NoVips);
        return (Vec::new(), Vec::new(), None);
    }
    if table.virtual_ips.len() > MAX_ADVERTISED {
        errors.push(SpecError::TooManyVips(table.virtual_ips.len()));
    }
    let mut family = None;
    let mut parse = |list: VipList, texts: &[String]| -> Vec<IpNet> {
        let mut nets = Vec::with_capacity(texts.len());
        for (index, vip) in texts.iter().enumerate() {
            let net = match config::parse_net(vip) {
                Ok(net) => net,
                Err(reason) => {
                    errors.push(SpecError::Vip { list, index, reason });
                    continue;
                }
            };
            let this = if net.addr().is_ipv4() { Family::V4 } else { Family::V6 };
            if *family.get_or_insert(this) != this {
                errors.push(SpecError::MixedFamilies { list, index, vip: vip.clone() });
            }
            if this == Family::V6 && version == Some(Version::V2) {
                errors.push(SpecError::V2Ipv6 { list, index, vip: vip.clone() });
            }
            nets.push(net);
        }
        nets
    };
    let vips = parse(VipList::Advertised, &table.virtual_ips);
    let excluded = parse(VipList::Excluded, &table.virtual_ips_excluded);
    (vips, excluded, family)
}

/// The VRRPv2 password, zero-padded to the 8 bytes of the advert.
fn parse_auth(
    table: &VrrpConfig,
    version: Option<Version>,
    family: Option<Family>,
    errors: &mut Vec<SpecError>,
) -> Option<[u8; 8]> {
    let pass = table.auth_pass.as_ref()?.as_bytes();
    if version == Some(Version::V3) {
        errors.push(if family == Some(Family::V6) { SpecError::Ipv6Auth } else { SpecError::V3Auth });
    }
    if pass.is_empty() || pass.len() > 8 {
        errors.push(SpecError::AuthLength(pass.len()));
        return None;
    }
    let mut padded = [0u8; 8];
    padded[..pass.len()].copy_from_slice(pass);
    Some(padded)
}

/// Unicast peers (empty: multicast), of the VIPs' family.
fn parse_peers(table: &VrrpConfig, family: Option<Family>, errors: &mut Vec<SpecError>) -> Vec<IpAddr> {
    let Some(peers) = &table.unicast_peers else { return Vec::new() };
    if peers.is_empty() {
        errors.push(SpecError::NoPeers);
    }
    let mut addresses = Vec::with_capacity(peers.len());
    for (index, text) in peers.iter().enumerate() {
        match text.parse::<IpAddr>() {
            Err(_) => errors.push(SpecError::Peer { index, peer: text.clone() }),
            Ok(peer) if family.is_some_and(|family| (family == Family::V4) != peer.is_ipv4()) => {
                errors.push(SpecError::PeerFamily { index, peer })
            }
            Ok(peer) => addresses.push(peer),
        }
    }
    addresses
}

#[cfg(test)]
mod tests;
