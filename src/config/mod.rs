//! The nginx-ha config file: TOML schema, defaults, and validation whose every error names
//! `file:line:col` and says what would be right.

mod hints;
mod locate;
mod reload;
mod validate;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::vrrp::spec::RouterSpec;

pub use locate::Location;
pub use reload::RestartNeeded;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/nginx-ha/nginx-ha.toml";

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub nginx: NginxConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub vrrp: Vec<VrrpConfig>,
    #[serde(default)]
    pub alias: Vec<AliasConfig>,
    #[serde(default)]
    pub anycast: Vec<AnycastConfig>,
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// The `[[vrrp]]` tables in the routers' types, set by [`Config::parse`] from the same
    /// conversion that validated them.
    #[serde(skip)]
    routers: Vec<RouterSpec>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NginxConfig {
    /// Default: /usr/sbin/nginx, else `nginx` on PATH (resolved by [`NginxConfig::binary_path`]).
    pub binary: Option<PathBuf>,
    #[serde(default = "default_nginx_config")]
    pub config: PathBuf,
    #[serde(default = "yes")]
    pub watch: bool,
    /// Default: the nginx config's `pid` directive, else nginx's compiled-in path.
    pub pid_file: Option<PathBuf>,
    /// How long a graceful stop (QUIT) may take before TERM, then KILL.
    #[serde(default = "default_stop_timeout_ms")]
    pub stop_timeout_ms: u64,
    /// How long after HUP a new generation of workers must appear.
    #[serde(default = "default_reload_timeout_ms")]
    pub reload_timeout_ms: u64,
    /// Quiet time after the last file change before a reload is tried (editors write in bursts).
    #[serde(default = "default_watch_debounce_ms")]
    pub watch_debounce_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "HealthTable")]
pub struct HealthConfig {
    pub interval_ms: u64,
    /// Default: 500 ms, or interval_ms when that is shorter (a probe must end before the next).
    pub timeout_ms: u64,
    pub fall: u32,
    pub rise: u32,
    pub http: Option<String>,
    pub tcp: Vec<String>,
    /// nginx's stub_status page, read for nginx's counters in the metrics. Unset: the `http`
    /// probe's URL when it answers with a stub_status page; `""`: not read at all.
    pub status_url: Option<String>,
}

/// Where the metrics read nginx's counters from (`[health] status_url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusSource {
    /// `status_url = "..."`: a page that is not stub_status is an error (`nginx_up 0`).
    Configured(HttpProbeUrl),
    /// No `status_url`: the HTTP probe's URL, used once it has answered with a stub_status
    /// page; until then nginx's counters are not served.
    Probe(HttpProbeUrl),
    /// `status_url = ""`, or neither key.
    Off,
}

/// `[health]` as written: a default that depends on another key is resolved from it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthTable {
    #[serde(default = "default_interval_ms")]
    interval_ms: u64,
    timeout_ms: Option<u64>,
    #[serde(default = "two")]
    fall: u32,
    #[serde(default = "two")]
    rise: u32,
    http: Option<String>,
    #[serde(default)]
    tcp: Vec<String>,
    status_url: Option<String>,
}

impl From<HealthTable> for HealthConfig {
    fn from(table: HealthTable) -> HealthConfig {
        let HealthTable { interval_ms, timeout_ms, fall, rise, http, tcp, status_url } = table;
        let timeout_ms = timeout_ms.unwrap_or_else(|| default_timeout_ms().min(interval_ms).max(1));
        HealthConfig { interval_ms, timeout_ms, fall, rise, http, tcp, status_url }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnNginxFailure {
    Relinquish,
    Demote,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrrpConfig {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub priority: u8,
    /// As written; [`VrrpConfig::version`] gives the default.
    pub version: Option<u8>,
    #[serde(default = "default_interval_ms")]
    pub advert_interval_ms: u64,
    #[serde(default = "yes")]
    pub preempt: bool,
    #[serde(default)]
    pub preempt_delay_ms: u64,
    pub auth_pass: Option<String>,
    /// None: multicast. Some(empty) is an error (unicast with no peers).
    pub unicast_peers: Option<Vec<String>>,
    pub virtual_ips: Vec<String>,
    /// Held with the VIPs but not listed in adverts (keepalived's `virtual_ipaddress_excluded`):
    /// for more addresses than an advert carries, or addresses the peer must not compare.
    #[serde(default)]
    pub virtual_ips_excluded: Vec<String>,
    #[serde(default = "default_on_failure")]
    pub on_nginx_failure: OnNginxFailure,
    #[serde(default = "default_demote_weight")]
    pub demote_weight: u8,
    #[serde(default)]
    pub track_interfaces: Vec<String>,
    /// Program run (without a shell) on every state change: `notify NAME STATE`.
    pub notify: Option<PathBuf>,
    #[serde(default = "default_notify_timeout_ms")]
    pub notify_timeout_ms: u64,
    /// VRRPv3 over IPv4: include the IPv4 pseudo-header in the checksum (RFC 5798, keepalived).
    /// false for the variant some other vendors send.
    #[serde(default = "yes")]
    pub checksum_pseudo_header: bool,
    /// nginx's master crashed: keep the VIPs this long while nginx is restarted in place, and
    /// act (relinquish/demote) only if it is not serving again by then. 0: act at once.
    #[serde(default = "default_restart_grace_ms")]
    pub restart_grace_ms: u64,
    /// A planned move of the VIPs to a live peer (failback, planned stop): for at most this
    /// long, the connections still open here are passed through by the new holder and served
    /// here until they end. 0: no drain (connections to the VIPs are reset when they move).
    #[serde(default = "default_vrrp_drain_ms")]
    pub drain_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasConfig {
    pub address: String,
    pub interface: String,
    pub label: Option<String>,
}

/// An address every healthy node announces over BGP: nginx-ha keeps the address on
/// `interface` and, while nginx is healthy, a route to it in kernel table `table`, which the
/// node's BIRD or FRR learns and exports (nginx-ha itself does not speak BGP).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnycastConfig {
    pub name: String,
    pub addresses: Vec<String>,
    #[serde(default = "default_anycast_interface")]
    pub interface: String,
    #[serde(default = "default_anycast_table")]
    pub table: u32,
    /// Planned stop: withdraw the routes, keep nginx serving this long, then stop it.
    #[serde(default = "default_drain_ms")]
    pub drain_ms: u64,
    /// nginx's master crashed: keep the routes this long while nginx is restarted in place,
    /// and withdraw only if it is not serving again by then. 0: withdraw at once.
    #[serde(default = "default_restart_grace_ms")]
    pub restart_grace_ms: u64,
    /// How the addresses are held on `interface`: `"address"` (an address, as `ip addr add`)
    /// or `"local-route"` (a local route in table 255, as `ip route add local ... table
    /// local`: the kernel accepts the address, but FRR's zebra sees no connected route that
    /// would beat the one in `table`). Checked by the validator; see [`AnycastConfig::hold`].
    #[serde(default = "default_anycast_hold")]
    pub hold: String,
}

/// How an `[[anycast]]` table holds its addresses on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnycastHold {
    /// An address on the interface (tagged `ANYCAST_ADDRESS_PROTO`).
    Address,
    /// A local route in table 255 through the interface (the same tag as its protocol).
    LocalRoute,
}

impl AnycastHold {
    pub fn parse(text: &str) -> Option<AnycastHold> {
        match text {
            "address" => Some(AnycastHold::Address),
            "local-route" => Some(AnycastHold::LocalRoute),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    #[serde(default = "default_control_socket")]
    pub control_socket: PathBuf,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    pub metrics_listen: Option<String>,
    /// Members of this group (primary or supplementary) may run `nginx-ha status` over the
    /// control socket; everything else needs root.
    pub status_group: Option<String>,
    /// The UDP port the two nodes of a pair drain connections over (see `[[vrrp]] drain_ms`).
    #[serde(default = "default_drain_port")]
    pub drain_port: u16,
}

impl Default for NginxConfig {
    fn default() -> Self {
        Self {
            binary: None,
            config: default_nginx_config(),
            watch: true,
            pid_file: None,
            stop_timeout_ms: default_stop_timeout_ms(),
            reload_timeout_ms: default_reload_timeout_ms(),
            watch_debounce_ms: default_watch_debounce_ms(),
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval_ms: default_interval_ms(),
            timeout_ms: default_timeout_ms(),
            fall: 2,
            rise: 2,
            http: None,
            tcp: Vec::new(),
            status_url: None,
        }
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            control_socket: default_control_socket(),
            state_dir: default_state_dir(),
            metrics_listen: None,
            status_group: None,
            drain_port: default_drain_port(),
        }
    }
}

fn yes() -> bool {
    true
}
fn two() -> u32 {
    2
}
fn default_nginx_config() -> PathBuf {
    "/etc/nginx/nginx.conf".into()
}
fn default_stop_timeout_ms() -> u64 {
    10_000
}
fn default_reload_timeout_ms() -> u64 {
    10_000
}
fn default_watch_debounce_ms() -> u64 {
    100
}
fn default_interval_ms() -> u64 {
    1000
}
fn default_timeout_ms() -> u64 {
    500
}
fn default_on_failure() -> OnNginxFailure {
    OnNginxFailure::Relinquish
}
fn default_demote_weight() -> u8 {
    50
}
fn default_vrrp_drain_ms() -> u64 {
    60_000
}
fn default_drain_port() -> u16 {
    crate::drain::shell::DEFAULT_PORT
}
fn default_restart_grace_ms() -> u64 {
    300
}

fn default_anycast_interface() -> String {
    "lo".into()
}
fn default_anycast_table() -> u32 {
    110
}
fn default_anycast_hold() -> String {
    "address".into()
}
fn default_drain_ms() -> u64 {
    5000
}

fn default_notify_timeout_ms() -> u64 {
    5000
}
fn default_control_socket() -> PathBuf {
    "/run/nginx-ha/control.sock".into()
}
fn default_state_dir() -> PathBuf {
    "/var/lib/nginx-ha".into()
}

impl NginxConfig {
    /// The configured binary, else /usr/sbin/nginx, else `nginx` found on PATH.
    pub fn binary_path(&self) -> PathBuf {
        if let Some(binary) = &self.binary {
            return binary.clone();
        }
        let standard = PathBuf::from("/usr/sbin/nginx");
        if standard.exists() {
            return standard;
        }
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
            .map(|dir| dir.join("nginx"))
            .find(|candidate| candidate.is_file())
            .unwrap_or(standard)
    }
}

impl HealthConfig {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
    pub fn has_probes(&self) -> bool {
        self.http.is_some() || !self.tcp.is_empty()
    }
    /// Expects a validated config.
    pub fn status_source(&self) -> StatusSource {
        match (self.status_url.as_deref(), self.http.as_deref()) {
            (Some(""), _) | (None, None) => StatusSource::Off,
            (Some(url), _) => HttpProbeUrl::parse(url).map_or(StatusSource::Off, StatusSource::Configured),
            (None, Some(url)) => HttpProbeUrl::parse(url).map_or(StatusSource::Off, StatusSource::Probe),
        }
    }
}

/// A parsed `[health] http` URL: only plain http is supported (the probe talks to a local nginx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProbeUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl std::fmt::Display for HttpProbeUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.host_header(), self.path)
    }
}

impl HttpProbeUrl {
    /// `host:port`, an IPv6 address in brackets: for the Host header and for messages.
    pub fn host_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("`{url}` is not an http:// URL; the probe speaks plain HTTP to the local nginx, e.g. \"http://127.0.0.1:80/\"")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let end = bracketed
                .find(']')
                .ok_or_else(|| format!("`{url}`: unclosed `[` in the host; write e.g. \"http://[::1]:80/\""))?;
            let port = bracketed[end + 1..].strip_prefix(':').unwrap_or("80");
            (bracketed[..end].to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), port),
                None => (authority.to_string(), "80"),
            }
        };
        if host.is_empty() {
            return Err(format!("`{url}` has no host; write e.g. \"http://127.0.0.1:80/\""));
        }
        let port = port.parse::<u16>().ok().filter(|port| *port != 0).ok_or_else(|| {
            format!("`{url}`: port `{port}` is not a number from 1 to 65535; write e.g. \"http://127.0.0.1:80/\"")
        })?;
        Ok(Self { host, port, path: path.to_string() })
    }
}

impl VrrpConfig {
    /// The VRRP version: as written, else 3 when the virtual IPs are IPv6 (VRRPv2 cannot carry
    /// them; keepalived does the same), else 2. Only an IPv6 address has a ':' (anything else
    /// with one is rejected by the validator, whatever the version).
    pub fn version(&self) -> u8 {
        let ipv6 =
            self.virtual_ips.iter().chain(&self.virtual_ips_excluded).next().is_some_and(|vip| vip.contains(':'));
        self.version.unwrap_or(if ipv6 { 3 } else { 2 })
    }

    /// The virtual IPs that parse, as networks (a bare address means /32 or /128): lenient, for
    /// checks across tables. The router's own parse is [`Config::routers`].
    pub fn vips(&self) -> Vec<ipnet::IpNet> {
        self.virtual_ips.iter().filter_map(|v| parse_net(v).ok()).collect()
    }
    pub fn excluded_vips(&self) -> Vec<ipnet::IpNet> {
        self.virtual_ips_excluded.iter().filter_map(|v| parse_net(v).ok()).collect()
    }
}

impl AnycastConfig {
    /// The addresses as networks; a bare address means /32 or /128. Valid after `Config::load`.
    /// Each goes on the interface as written; its route is to the prefix (`198.19.10.0/24` for
    /// `198.19.10.1/24`).
    pub fn nets(&self) -> Vec<ipnet::IpNet> {
        self.addresses.iter().filter_map(|a| parse_net(a).ok()).collect()
    }

    /// `hold` as a value; valid after `Config::load` (the validator rejects anything else).
    pub fn hold(&self) -> AnycastHold {
        AnycastHold::parse(&self.hold).unwrap_or(AnycastHold::Address)
    }
}

impl AliasConfig {
    pub fn net(&self) -> Option<ipnet::IpNet> {
        parse_net(&self.address).ok()
    }
}

/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "interface `{0}` is not a valid Linux interface name (1 to {IFNAME_MAX} bytes, no '/', ':' or spaces), e.g. \"eth0\""
)]
pub struct InterfaceNameError(pub String);

pub fn check_interface_name(name: &str) -> Result<(), InterfaceNameError> {
    if name.is_empty() || name.len() > IFNAME_MAX || name.contains(['/', ' ', ':']) {
        return Err(InterfaceNameError(name.to_owned()));
    }
    Ok(())
}

/// `ADDR` (host route: /32 or /128) or `ADDR/LEN`.
pub fn parse_net(text: &str) -> Result<ipnet::IpNet, String> {
    if text.contains('/') {
        text.parse::<ipnet::IpNet>().map_err(|_| {
            format!("`{text}` is not an address with prefix length; write e.g. \"198.18.0.100/24\" or \"fd00::10/64\"")
        })
    } else {
        text.parse::<IpAddr>().map(ipnet::IpNet::from).map_err(|_| {
            format!(
                "`{text}` is not an IP address; write e.g. \"198.18.0.100/24\", \"198.18.0.100\" or \"fd00::10/64\""
            )
        })
    }
}

/// The control socket a config file names, read leniently: the CLI must find the daemon even
/// when the file has errors (e.g. to get `reload` to report them).
pub fn control_socket_of(path: &Path) -> PathBuf {
    let lenient = std::fs::read_to_string(path).ok().and_then(|text| text.parse::<toml::Table>().ok());
    lenient
        .as_ref()
        .and_then(|table| table.get("daemon")?.get("control_socket")?.as_str().map(PathBuf::from))
        .unwrap_or_else(default_control_socket)
}

/// One problem in the config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub location: Option<Location>,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.location {
            Some(Location { line, col }) => write!(f, "{}:{line}:{col}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Everything wrong with a config file (all problems at once, so one edit can fix them all).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl Config {
    /// Reads, parses and validates the file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                location: None,
                message: format!("cannot read the config file: {e}; pass another one with -c PATH"),
            }])
        })?;
        let mut config = Self::parse(&text, path)?;
        let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
        config.resolve_relative_paths(&std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()));
        Ok(config)
    }

    /// Relative paths in the file mean relative to the file itself, not to the working directory.
    fn resolve_relative_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.nginx.config);
        self.nginx.pid_file.as_mut().map(resolve);
        if let Some(binary) = self.nginx.binary.as_mut().filter(|b| b.components().count() > 1) {
            resolve(binary);
        }
        resolve(&mut self.daemon.state_dir);
    }

    /// Every `[[vrrp]]` table, parsed once into the router's types (in file order).
    pub fn routers(&self) -> &[RouterSpec] {
        &self.routers
    }

    /// Parses and validates `text`; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let location = e.span().map(|span| Location::of_offset(text, span.start));
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                location,
                message: hints::explain(text, e.span(), e.message()),
            }])
        })?;
        let mut config = config;
        let (problems, routers) = validate::validate(&config);
        if problems.is_empty() {
            config.routers = routers;
            return Ok(config);
        }
        Err(ConfigErrors(
            problems
                .into_iter()
                .map(|problem| ConfigError {
                    file: path.to_path_buf(),
                    location: locate::locate(text, &problem.path),
                    message: problem.message,
                })
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests;
