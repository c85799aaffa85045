//! Static aliases (`ifconfig eth0:1 198.18.0.107 netmask 255.255.255.0`, kept): addresses that
//! the daemon keeps on their interface across restarts and reboots.
//!
//! - `core`: the pure reconciler (declared set + links + addresses in, add/remove out);
//! - `store`: the CLI's persistent store in `[daemon] state_dir` (atomic writes, corruption
//!   kept aside);
//! - `shell`: the task that feeds the core from netlink and carries out its actions through
//!   `net` (it never touches VRRP);
//! - `cli`: `nginx-ha alias add|del|list`, through the daemon or on the store alone.
//!
//! Aliases carry the `IFA_PROTO` tag [`ALIAS_PROTO`](crate::net::ALIAS_PROTO) (0x61), not
//! the VIPs' 0x6e, so the VRRP start-up clean-up of stale VIPs never removes them. They stay
//! on a planned stop and after a crash: they are the host's static addresses.

pub mod cli;
pub mod core;
pub mod error;
pub mod shell;
pub mod store;

use std::fmt;

use ipnet::IpNet;

pub use error::{AliasError, Blocked, InvalidAlias};
pub use shell::{AliasCommand, AliasHandle, AliasSettings, spawn};

/// Longest interface name or label the kernel accepts (IFNAMSIZ - 1).
const NAME_MAX: usize = 15;

/// One static alias: an address with its prefix length on an interface, with an optional
/// IPv4 label (`eth0:1`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Alias {
    pub address: IpNet,
    pub interface: String,
    pub label: Option<String>,
}

impl fmt::Display for Alias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.address, self.interface)?;
        if let Some(label) = &self.label {
            write!(f, " (label {label})")?;
        }
        Ok(())
    }
}

impl Alias {
    /// From the text of the config, the store or the command line: `ADDR/LEN` (a bare
    /// address is a host route, /32 or /128).
    pub fn parse(address: &str, interface: &str, label: Option<&str>) -> Result<Alias, InvalidAlias> {
        let address = crate::config::parse_net(address).map_err(InvalidAlias::Address)?;
        if interface.is_empty() || interface.len() > NAME_MAX || interface.contains(['/', ' ', ':']) {
            return Err(InvalidAlias::Interface(interface.to_owned()));
        }
        let alias = Alias { address, interface: interface.to_owned(), label: label.map(str::to_owned) };
        alias.check_label()?;
        Ok(alias)
    }

    /// The kernel only takes IPv4 labels that start with the interface name (`eth0:1`).
    pub fn check_label(&self) -> Result<(), InvalidAlias> {
        let Some(label) = &self.label else { return Ok(()) };
        if self.address.addr().is_ipv6() {
            return Err(InvalidAlias::LabelOnIpv6(label.clone()));
        }
        if !label.starts_with(&self.interface) || label.len() > NAME_MAX {
            return Err(InvalidAlias::Label { label: label.clone(), interface: self.interface.clone() });
        }
        Ok(())
    }
}

/// The `[[alias]]` tables of a validated config.
pub fn config_aliases(config: &crate::config::Config) -> Vec<Alias> {
    config.alias.iter().filter_map(|a| Alias::parse(&a.address, &a.interface, a.label.as_deref()).ok()).collect()
}

/// Every VIP (advertised and excluded) of the config's routers.
pub fn config_vips(config: &crate::config::Config) -> Vec<core::Vip> {
    config
        .vrrp
        .iter()
        .flat_map(|r| {
            r.vips()
                .into_iter()
                .chain(r.excluded_vips())
                .map(|net| core::Vip { address: net.addr(), router: r.name.clone() })
        })
        .collect()
}
