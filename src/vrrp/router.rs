//! The state machine of one VRRP virtual router (RFC 3768 §6, RFC 5798 §6) as a pure core:
//! inputs and the current time go in, actions come out, and `next_deadline` says when to come
//! back with `Input::TimerFired`. No I/O and no clock reads.
//!
//! On top of the RFC, the router is coupled to nginx's health: it stays in INIT until nginx
//! first reports healthy, and later failures either park it in FAULT or lower its priority.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::nginx::policy::Health;
use crate::timers::{TimerName, TimerTable};

use super::packet::{self, Advert, Auth, CodecOptions, HOP_LIMIT, MULTICAST_V4, MULTICAST_V6, PacketError, Version};

#[cfg(test)]
mod tests;

/// When to repeat the gratuitous ARP / unsolicited NA burst after becoming MASTER: neighbours
/// ignore updates within their ARP locktime (Linux: 1 s) of the previous one.
const REANNOUNCE_DELAY: Duration = Duration::from_secs(1);
const OWNER_PRIORITY: u8 = 255;
/// How often the same notice about the same peer is emitted again.
pub const NOTICE_EVERY: Duration = Duration::from_secs(60);
/// A new MASTER taking over from a master that may still hold the VIPs (one it preempts, or
/// one that announced a planned stop) adds them only once that master confirms it let them go
/// (its next advert, at a lower priority or 0), or after this long: never two holders at
/// once, and no more than this without one when the old master does not confirm (keepalived
/// does not).
pub const CLAIM_WAIT: Duration = Duration::from_millis(50);
/// A preempted master's advert arriving this close to when its periodic one was due is taken
/// for that (sent before it heard us), not for its yield: covers its timer's jitter.
const CROSSING_SLACK: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    Init,
    Backup,
    Master,
    Fault,
}

impl State {
    pub const ALL: [State; 4] = [State::Init, State::Backup, State::Master, State::Fault];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Init => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What an unhealthy nginx (or a tracked link going down) does to the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureMode {
    /// Give up: FAULT, sending nothing, until healthy again.
    Relinquish,
    /// Keep running with the priority lowered by `weight` (never below 1).
    Demote { weight: u8 },
}

/// Built by `RouterSpec::try_from` (vrrp/spec.rs), the one place that checks it; the router's
/// tests build it directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    pub name: String,
    pub vrid: u8,
    /// 1..=255; 255 marks the address owner, which takes over at once and always preempts.
    pub priority: u8,
    pub version: Version,
    /// v2: whole seconds, 1..=255 s; v3: a multiple of 10 ms, 10 ms..=40.95 s.
    pub advert_interval: Duration,
    pub preempt: bool,
    /// After entering BACKUP for the first time since startup, accept lower-priority masters
    /// this long before preempting them.
    pub preempt_delay: Duration,
    /// VRRPv2 simple text password, zero-padded.
    pub auth_pass: Option<[u8; 8]>,
    pub vips: Vec<IpNet>,
    pub failure_mode: FailureMode,
    pub codec: CodecOptions,
    /// Empty: multicast. Otherwise adverts go to, and are only accepted from, these addresses.
    pub unicast_peers: Vec<IpAddr>,
    /// nginx crashed and is being restarted in place: how long to keep serving as if healthy,
    /// when its restart comes within it ([`Health::restarts_within`]); a later one acts at once.
    pub restart_grace: Duration,
    /// A planned move to a live peer drains the connections for at most this long (0: none).
    pub drain: Duration,
}

impl RouterConfig {
    /// The advertisement interval as carried in adverts, in centiseconds (v2's seconds × 100).
    fn interval_cs(&self) -> u16 {
        (self.advert_interval.as_millis() / 10) as u16
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input<'a> {
    /// Begin, with our primary address on the interface (IPv6: the link-local one).
    Startup { primary: IpAddr },
    /// A raw VRRP payload as received; the router validates it.
    Packet { src: IpAddr, dst: IpAddr, hop_limit: u8, payload: &'a [u8] },
    /// `now >= next_deadline()`.
    TimerFired,
    /// nginx health from the supervisor.
    Health(Health),
    /// A tracked link changed; down counts like nginx failing.
    TrackedLink { name: String, up: bool },
    /// Carrier of our own interface; down means FAULT.
    InterfaceLink { up: bool },
    /// Our primary address changed.
    PrimaryAddress(IpAddr),
    /// A VIP was deleted behind our back.
    VipsMissing,
    /// One of our VIPs is on the interface (added by anyone, tagged or not).
    VipPresent,
    /// Before `Startup`: the previous nginx-ha on this host was MASTER and advertised
    /// `elapsed` ago, and its VIPs are still on the interface. Within Master_Down_Interval the
    /// peer cannot have taken over: resume MASTER as soon as nginx serves, instead of starting
    /// as BACKUP and costing the clients a failover and a failback.
    Resume { elapsed: Duration },
    /// Planned stop: a MASTER advertises priority 0 and keeps its VIPs until the peer's first
    /// advert as master (or Master_Down_Interval) so clients always have a holder; then
    /// `Action::Stopped`.
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `payload` (encoded with its checksum for `dst`) to `dst`: the multicast group or
    /// one unicast peer.
    SendAdvert {
        dst: IpAddr,
        priority: u8,
        payload: Vec<u8>,
    },
    AddVips,
    RemoveVips,
    /// A planned move to the live master at `to`, with nginx healthy here: the VIPs go as with
    /// `RemoveVips`, but their open connections drain through `to` (`drain` in the config).
    HandOverVips {
        to: IpAddr,
    },
    /// Becoming MASTER in place of the live master at `from`: accept its drain.
    AcceptDrain {
        from: IpAddr,
    },
    /// Gratuitous ARP / unsolicited NA burst for all VIPs.
    Announce,
    StateChanged {
        from: State,
        to: State,
        reason: Reason,
    },
    Notice(Notice),
    /// After `Input::Shutdown`: the router has handed over and holds nothing any more.
    Stopped,
}

/// Why the state changed: the input that triggered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Startup,
    Shutdown,
    NginxHealthy,
    NginxUnhealthy,
    TrackedLinkUp,
    TrackedLinkDown,
    InterfaceUp,
    InterfaceDown,
    /// nginx crashed and was not serving again within restart_grace.
    RestartGraceOver,
    /// nginx crashed again and its restart backs off past restart_grace.
    CrashLoop,
    /// BACKUP heard no advert within Master_Down_Interval.
    MasterDown,
    /// MASTER heard a higher priority (or an equal one from a higher address).
    PreferredPeer,
    /// The previous nginx-ha on this host was MASTER moments ago.
    Resumed,
    /// Our interface came back before the peer's Master_Down_Interval could have run out.
    InterfaceBackInTime,
    /// Planned stop: the peer took over (or nobody answered within Master_Down_Interval).
    HandedOver,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Startup => "startup",
            Reason::Shutdown => "shutdown",
            Reason::NginxHealthy => "nginx healthy",
            Reason::NginxUnhealthy => "nginx unhealthy",
            Reason::TrackedLinkUp => "tracked link up",
            Reason::TrackedLinkDown => "tracked link down",
            Reason::InterfaceUp => "interface up",
            Reason::InterfaceDown => "interface down",
            Reason::RestartGraceOver => "nginx crashed and was not serving again within restart_grace_ms",
            Reason::CrashLoop => "nginx crashed again and restarts only after restart_grace_ms (a crash loop)",
            Reason::MasterDown => "no advert from the master within the master down interval",
            Reason::PreferredPeer => "advert from a peer with higher priority or equal priority and higher address",
            Reason::Resumed => "the previous nginx-ha here was MASTER less than a master down interval ago",
            Reason::InterfaceBackInTime => "interface up again before the peer could take over",
            Reason::HandedOver => "planned stop: handed over",
        })
    }
}

/// Something worth logging. A peer's mistake repeats in every advert: each kind of notice
/// about one peer is emitted at most once per `NOTICE_EVERY` (the counters count them all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A v2 advert with other authentication than ours; dropped (RFC 3768 §7.1).
    AuthMismatch { from: IpAddr },
    /// A v2 advert with another interval than ours; dropped (RFC 3768 §7.1).
    IntervalMismatch { from: IpAddr, advertised: Duration, ours: Duration },
    /// An advert listing other addresses than our VIPs; still processed.
    VipMismatch { from: IpAddr, advertised: Vec<IpAddr> },
    /// A VIP was on the interface while we are not MASTER (left by keepalived, an admin, or a
    /// daemon that died): removed, since two hosts answering for it split the clients.
    ForeignVip { state: State },
    /// The previous nginx-ha here was MASTER too long ago to resume: its VIPs are removed.
    StaleVips { elapsed: Duration },
    /// Unicast mode: an advert from a source not among `unicast_peers`; dropped.
    UnknownPeer { from: IpAddr },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::AuthMismatch { from } => write!(f, "advert from {from} fails authentication"),
            Notice::IntervalMismatch { from, advertised, ours } => {
                write!(f, "advert from {from} has interval {advertised:?}, ours is {ours:?}: dropped")
            }
            Notice::VipMismatch { from, advertised } => {
                write!(f, "advert from {from} lists other virtual IPs: {advertised:?}")
            }
            Notice::UnknownPeer { from } => {
                write!(f, "advert from {from}, which is not a configured unicast peer")
            }
            Notice::StaleVips { elapsed } => write!(
                f,
                "removing a VIP left behind by an earlier nginx-ha: it last advertised {} ms ago, past the master down interval",
                elapsed.as_millis()
            ),
            Notice::ForeignVip { state } => {
                write!(f, "a virtual IP is on the interface while this router is {state}; removing it")
            }
        }
    }
}

/// Packet counters. While BACKUP or MASTER, every received packet lands in exactly one of
/// `adverts_received`, `own_adverts`, `other_vrid` and the `*_errors` counters; in INIT and
/// FAULT packets are ignored uncounted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Valid adverts for this virtual router, including priority-0 ones.
    pub adverts_received: u64,
    pub priority_zero_received: u64,
    /// One per SendAdvert action (per destination).
    pub adverts_sent: u64,
    pub priority_zero_sent: u64,
    pub became_master: u64,
    /// TTL / hop limit other than 255 on a multicast advert.
    pub ttl_errors: u64,
    pub version_errors: u64,
    pub type_errors: u64,
    pub checksum_errors: u64,
    /// Adverts for another virtual router on the same link, ignored.
    pub other_vrid: u64,
    pub auth_errors: u64,
    pub interval_errors: u64,
    pub address_family_errors: u64,
    pub unknown_peer_errors: u64,
    /// Too short, address count not matching the length, zero interval.
    pub malformed_errors: u64,
    /// Our own adverts looped back to us.
    pub own_adverts: u64,
    /// Valid adverts listing other addresses than our VIPs (also counted as received).
    pub vip_mismatches: u64,
    /// Times the master this router knows of (itself or the sender of the adverts it hears)
    /// became another one; the first master it knows of is no change.
    pub master_changes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterStatus {
    pub state: State,
    pub priority: u8,
    pub effective_priority: u8,
    /// Us when MASTER, the last accepted master when BACKUP.
    pub master_address: Option<IpAddr>,
    /// The interval the master advertises with (Master_Adver_Interval).
    pub master_advert_interval: Duration,
    pub counters: Counters,
}

/// The pair as this router sees it on the wire, at the `now` it was asked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireView {
    /// The current master: this router while MASTER (its own last advert), else the sender of
    /// the last advert above priority 0 heard in any state, until that sender advertises 0.
    pub master: Option<SeenAdvert>,
    /// The last valid advert heard from another router, in any state, priority 0 included.
    /// A silent peer is a BACKUP (or gone): its age keeps growing.
    pub peer: Option<SeenAdvert>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenAdvert {
    pub address: IpAddr,
    /// The priority it advertised.
    pub priority: u8,
    /// The interval it advertises with.
    pub interval: Duration,
    /// Since that advert was sent (ours) or heard (a peer's).
    pub age: Duration,
}

/// One advert as recorded when sent or heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Heard {
    from: IpAddr,
    priority: u8,
    interval_cs: u16,
    at: Instant,
}

impl Heard {
    fn seen(self, now: Instant) -> SeenAdvert {
        SeenAdvert {
            address: self.from,
            priority: self.priority,
            interval: centiseconds(self.interval_cs),
            age: now.saturating_duration_since(self.at),
        }
    }
}

/// The router's deadlines by name, in the order they are handled when due together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Planned stop of a MASTER: stop waiting for the peer's advert.
    Leaving,
    /// `Input::Resume`: until then, the first election after startup resumes MASTER.
    Resume,
    /// nginx crashed: until then it counts as healthy while it is restarted in place.
    RestartGrace,
    /// A new MASTER waits until then for the old one to let the VIPs go.
    Claim,
    /// Repeat the gratuitous ARP / NA burst.
    Reannounce,
    /// BACKUP: Master_Down_Timer (or Skew_Time after a priority 0).
    MasterDown,
    /// MASTER: Adver_Timer.
    Advert,
}

impl TimerName for Timer {
    const ALL: &'static [Timer] = &[
        Timer::Leaving,
        Timer::Resume,
        Timer::RestartGrace,
        Timer::Claim,
        Timer::Reannounce,
        Timer::MasterDown,
        Timer::Advert,
    ];
}

/// What a BACKUP knows of the master it may replace: whether that master may still hold the
/// VIPs when we become MASTER (then we claim them: see [`CLAIM_WAIT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Predecessor {
    /// A lower-priority master at `from` we are about to preempt, last heard at `heard_at`,
    /// advertising every `interval`.
    Preempted { from: IpAddr, heard_at: Instant, interval: Duration },
    /// A master that advertised priority 0 once: leaving, and on a planned stop still holding
    /// the VIPs until it hears our advert.
    Leaving { from: IpAddr },
    /// The same master's second priority 0: its VIPs are gone.
    Released,
}

impl Predecessor {
    /// The old master's address, while it is known.
    fn address(self) -> Option<IpAddr> {
        match self {
            Predecessor::Preempted { from, .. } | Predecessor::Leaving { from } => Some(from),
            Predecessor::Released => None,
        }
    }

    fn may_hold_vips(self, now: Instant, master_down_interval: Duration) -> bool {
        match self {
            Predecessor::Preempted { heard_at, .. } => now < heard_at + master_down_interval,
            Predecessor::Leaving { .. } => true,
            Predecessor::Released => false,
        }
    }
}

/// Why a received packet was dropped; each maps to one counter.
enum Rejection {
    Ttl,
    Version,
    Type,
    Checksum,
    Malformed,
    OtherVrid,
    Auth,
    /// A v2 advert's interval, in centiseconds, that differs from ours.
    Interval(u16),
    AddressFamily,
    Own,
    UnknownPeer,
}

#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    /// Our Advertisement_Interval in centiseconds.
    interval_cs: u16,
    vip_addresses: BTreeSet<IpAddr>,
    state: State,
    /// Between Startup and Shutdown.
    started: bool,
    /// Our address on the interface: the source of our adverts and the election tie-breaker.
    primary: Option<IpAddr>,
    nginx_healthy: bool,
    /// INIT until the first healthy report: never MASTER before nginx runs a validated config.
    ever_healthy: bool,
    interface_up: bool,
    tracked_links_down: BTreeSet<String>,
    master_adver_interval_cs: u16,
    /// The master we last accepted, while BACKUP.
    master_address: Option<IpAddr>,
    /// When we first entered BACKUP since startup; `preempt_delay` counts from here.
    first_backup_at: Option<Instant>,
    /// Every deadline the router keeps, by name.
    timers: TimerTable<Timer, Instant>,
    /// When we last advertised as MASTER (with a priority above 0).
    last_advert_at: Option<Instant>,
    /// BACKUP: what we know of the master we would replace, if it may still hold the VIPs.
    predecessor: Option<Predecessor>,
    /// Claiming from a preempted master: when its next periodic advert was due (it may cross
    /// ours and is no yield).
    crossing_advert_at: Option<Instant>,
    /// Our interface lost carrier while we were MASTER.
    link_lost_as_master: bool,
    /// When each kind of notice about each peer was last emitted.
    notices: std::collections::HashMap<(&'static str, IpAddr), Instant>,
    counters: Counters,
    /// Not MASTER: the last advert above priority 0 heard, until its sender advertises 0.
    heard_master: Option<Heard>,
    /// The last valid advert from another router, in any state.
    heard_peer: Option<Heard>,
    /// The last master known (never cleared): master changes are counted against it.
    last_master: Option<IpAddr>,
}

impl Router {
    /// `now` is accepted for symmetry with `handle`; nothing happens before `Input::Startup`.
    /// `config` comes from `RouterSpec::try_from`, the one place that checks it; debug builds
    /// assert what the router itself leans on (`packet::encode` asserts the rest).
    pub fn new(config: RouterConfig, _now: Instant) -> Self {
        let interval_cs = config.interval_cs();
        debug_assert!(
            config.priority != 0
                && !config.vips.is_empty()
                && (1..=4095).contains(&interval_cs)
                && centiseconds(interval_cs) == config.advert_interval,
            "invalid VRRP config for {}, not from RouterSpec::try_from: {config:?}",
            config.name
        );
        Router {
            interval_cs,
            vip_addresses: config.vips.iter().map(IpNet::addr).collect(),
            config,
            state: State::Init,
            started: false,
            primary: None,
            nginx_healthy: false,
            ever_healthy: false,
            interface_up: true,
            tracked_links_down: BTreeSet::new(),
            master_adver_interval_cs: interval_cs,
            master_address: None,
            first_backup_at: None,
            timers: TimerTable::new(),
            last_advert_at: None,
            predecessor: None,
            crossing_advert_at: None,
            link_lost_as_master: false,
            notices: std::collections::HashMap::new(),
            counters: Counters::default(),
            heard_master: None,
            heard_peer: None,
            last_master: None,
        }
    }

    /// The configuration, e.g. for the VIPs to add on `Action::AddVips`.
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// Feeds one input at `now` (never earlier than a previous call's) and returns what to do,
    /// in order.
    ///
    /// # Panics
    ///
    /// If a primary address (`Startup`, `PrimaryAddress`) is not of the VIPs' family.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Startup { primary } => {
                self.set_primary(primary);
                self.started = true;
                self.reconcile(now, Reason::Startup, &mut out);
            }
            Input::Packet { src, dst, hop_limit, payload } => self.receive(now, src, dst, hop_limit, payload, &mut out),
            Input::TimerFired => self.fire_timers(now, &mut out),
            // A crashed nginx that was serving and restarts within restart_grace is given the
            // grace to serve again: the VIPs stay (and adverts go on) meanwhile, and the router
            // acts only at its end. A restart backed off past the grace (a crash loop) acts at once.
            Input::Health(health) if self.nginx_healthy && health.restarts_within(self.config.restart_grace) => {
                if !self.timers.is_set(Timer::RestartGrace) {
                    self.timers.set(Timer::RestartGrace, now + self.config.restart_grace);
                }
            }
            Input::Health(health) => {
                let healthy = health.is_healthy();
                self.timers.stop(Timer::RestartGrace);
                self.nginx_healthy = healthy;
                self.ever_healthy |= healthy;
                let grace = self.config.restart_grace;
                let reason = match health {
                    Health::Healthy => Reason::NginxHealthy,
                    Health::Restarting { .. } if !grace.is_zero() && !health.restarts_within(grace) => {
                        Reason::CrashLoop
                    }
                    _ => Reason::NginxUnhealthy,
                };
                self.reconcile(now, reason, &mut out);
            }
            Input::TrackedLink { name, up } => {
                if up {
                    self.tracked_links_down.remove(&name);
                } else {
                    self.tracked_links_down.insert(name);
                }
                let reason = if up { Reason::TrackedLinkUp } else { Reason::TrackedLinkDown };
                self.reconcile(now, reason, &mut out);
            }
            Input::InterfaceLink { up } => {
                if !up && self.state == State::Master {
                    self.link_lost_as_master = true;
                }
                self.interface_up = up;
                let reason = if up { Reason::InterfaceUp } else { Reason::InterfaceDown };
                self.reconcile(now, reason, &mut out);
            }
            // The engine never picks a VIP (RFC 5798 §5.1.2.1: adverts come from the node's
            // own address, as keepalived's do).
            Input::PrimaryAddress(primary) => self.set_primary(primary),
            Input::VipsMissing => {
                if self.state == State::Master && !self.timers.is_set(Timer::Claim) {
                    out.extend([Action::AddVips, Action::Announce]);
                }
            }
            Input::VipPresent => {
                if self.state != State::Master && !self.timers.is_set(Timer::Resume) {
                    out.push(Action::Notice(Notice::ForeignVip { state: self.state }));
                    out.push(Action::RemoveVips);
                }
            }
            Input::Resume { elapsed } if self.state == State::Init && !self.started => {
                let window = self.takeover_bound().saturating_sub(elapsed);
                if window.is_zero() {
                    out.extend([Action::Notice(Notice::StaleVips { elapsed }), Action::RemoveVips]);
                } else {
                    self.timers.set(Timer::Resume, now + window);
                }
            }
            Input::Resume { .. } => {}
            Input::Shutdown if self.timers.is_set(Timer::Leaving) => {}
            Input::Shutdown if self.state == State::Master && self.interface_up => {
                // RFC 5798 §6.4.3: priority 0, so the backup takes over after Skew_Time; the
                // VIPs stay until it has (its advert as master arrives).
                self.started = false;
                self.send_advert(0, &mut out);
                for timer in [Timer::Advert, Timer::Reannounce, Timer::Claim] {
                    self.timers.stop(timer);
                }
                self.timers.set(Timer::Leaving, now + self.master_down_interval());
            }
            Input::Shutdown => {
                self.started = false;
                self.reconcile(now, Reason::Shutdown, &mut out);
                if self.timers.take(Timer::Resume).is_some() {
                    out.push(Action::RemoveVips);
                }
                out.push(Action::Stopped);
            }
        }
        out
    }

    /// When to come back with `Input::TimerFired`; `None`: only other inputs can change anything.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next()
    }

    pub fn status(&self) -> RouterStatus {
        RouterStatus {
            state: self.state,
            priority: self.config.priority,
            effective_priority: self.effective_priority(),
            master_address: match self.state {
                State::Master => self.primary,
                State::Backup => self.master_address,
                State::Init | State::Fault => None,
            },
            master_advert_interval: centiseconds(self.master_adver_interval_cs),
            counters: self.counters,
        }
    }

    /// The master and the peer as heard on the wire, their ages counted up to `now`.
    pub fn wire_view(&self, now: Instant) -> WireView {
        let ours = match (self.state, self.primary, self.last_advert_at) {
            (State::Master, Some(from), Some(at)) => {
                Some(Heard { from, priority: self.effective_priority(), interval_cs: self.interval_cs, at })
            }
            _ => None,
        };
        WireView { master: ours.or(self.heard_master).map(|h| h.seen(now)), peer: self.heard_peer.map(|h| h.seen(now)) }
    }

    /// Counts a change of master against the last one known.
    fn note_master(&mut self, address: IpAddr) {
        if self.last_master.is_some_and(|last| last != address) {
            self.counters.master_changes += 1;
        }
        self.last_master = Some(address);
    }

    /// Records a valid advert from another router, whatever our state.
    fn hear(&mut self, now: Instant, src: IpAddr, advert: &Advert) {
        let heard = Heard { from: src, priority: advert.priority, interval_cs: advert.interval_cs, at: now };
        self.heard_peer = Some(heard);
        if advert.priority == 0 {
            if self.heard_master.is_some_and(|master| master.from == src) {
                self.heard_master = None;
            }
        } else if self.state != State::Master {
            self.heard_master = Some(heard);
            self.note_master(src);
        }
    }

    fn set_primary(&mut self, primary: IpAddr) {
        assert_eq!(primary.is_ipv4(), self.is_ipv4(), "primary address {primary} is not of the VIPs' family");
        self.primary = Some(primary);
    }

    /// The address family of this virtual router (validated: all VIPs share it).
    fn is_ipv4(&self) -> bool {
        self.config.vips[0].addr().is_ipv4()
    }

    fn degraded(&self) -> bool {
        !self.nginx_healthy || !self.tracked_links_down.is_empty()
    }

    fn effective_priority(&self) -> u8 {
        match self.config.failure_mode {
            FailureMode::Demote { weight } if self.degraded() => self.config.priority.saturating_sub(weight).max(1),
            _ => self.config.priority,
        }
    }

    /// INIT or FAULT when the inputs so far keep the router out of the election, else None.
    fn parked_state(&self) -> Option<State> {
        if !self.started || !self.ever_healthy {
            Some(State::Init)
        } else if !self.interface_up || (self.config.failure_mode == FailureMode::Relinquish && self.degraded()) {
            Some(State::Fault)
        } else {
            None
        }
    }

    /// Moves between INIT, FAULT and the election after a change in the inputs.
    fn reconcile(&mut self, now: Instant, reason: Reason, out: &mut Vec<Action>) {
        if self.timers.is_set(Timer::Leaving) {
            return;
        }
        match (self.parked_state(), self.state) {
            (None, State::Init | State::Fault) => {
                let link_back_in_time = reason == Reason::InterfaceUp
                    && self.link_lost_as_master
                    && self.last_advert_at.is_some_and(|at| now < at + self.takeover_bound());
                self.link_lost_as_master = false;
                // RFC 5798 §6.4.1: the address owner takes over at once.
                if self.effective_priority() == OWNER_PRIORITY {
                    self.become_master(now, reason, out);
                } else if self.timers.take(Timer::Resume).is_some_and(|until| now < until) {
                    self.become_master(now, Reason::Resumed, out);
                } else if link_back_in_time {
                    self.become_master(now, Reason::InterfaceBackInTime, out);
                } else {
                    self.become_backup(now, reason, None, out);
                }
            }
            (Some(parked), current) if parked != current => {
                let was_master = current == State::Master;
                self.transition(parked, reason, out);
                if was_master {
                    // RFC 5798 §6.4.3: a leaving master advertises priority 0 so a backup
                    // takes over after Skew_Time; pointless over a dead link. The second one,
                    // once the VIPs are gone, tells the backup it may add them at once.
                    if self.interface_up {
                        self.send_advert(0, out);
                    }
                    out.push(Action::RemoveVips);
                    if self.interface_up {
                        self.send_advert(0, out);
                    }
                }
                if parked == State::Init {
                    self.first_backup_at = None;
                }
            }
            _ => {}
        }
    }

    fn transition(&mut self, to: State, reason: Reason, out: &mut Vec<Action>) {
        out.push(Action::StateChanged { from: self.state, to, reason });
        self.state = to;
        self.master_address = None;
        for timer in [Timer::MasterDown, Timer::Advert, Timer::Reannounce, Timer::Claim] {
            self.timers.stop(timer);
        }
        self.predecessor = None;
    }

    fn become_backup(&mut self, now: Instant, reason: Reason, to: Option<IpAddr>, out: &mut Vec<Action>) {
        let was_master = self.state == State::Master;
        self.transition(State::Backup, reason, out);
        if was_master {
            self.release_vips(to, out);
        }
        self.first_backup_at.get_or_insert(now);
        self.master_adver_interval_cs = self.interval_cs;
        self.timers.set(Timer::MasterDown, now + self.master_down_interval());
    }

    fn become_master(&mut self, now: Instant, reason: Reason, out: &mut Vec<Action>) {
        let predecessor = self.predecessor.take();
        let claim = predecessor.is_some_and(|p| p.may_hold_vips(now, self.master_down_interval()));
        // The master we replace, even one that seemed dead (a starved one comes back and
        // yields): only it may drain its connections through us.
        let previous = predecessor.and_then(Predecessor::address).or(self.master_address);
        self.transition(State::Master, reason, out);
        self.counters.became_master += 1;
        self.heard_master = None;
        if let Some(primary) = self.primary {
            self.note_master(primary);
        }
        self.master_adver_interval_cs = self.interval_cs;
        // Before our advert, which may make the old master hand its connections over.
        if let Some(from) = previous.filter(|_| !self.config.drain.is_zero()) {
            out.push(Action::AcceptDrain { from });
        }
        self.send_advert(self.effective_priority(), out);
        self.last_advert_at = Some(now);
        if claim {
            // Our advert tells the old master to let the VIPs go; its next one says it has.
            // A preempted master's periodic advert may cross ours: that one says nothing.
            self.crossing_advert_at = match predecessor {
                Some(Predecessor::Preempted { heard_at, interval, .. }) => Some(heard_at + interval),
                _ => None,
            };
            self.timers.set(Timer::Claim, now + CLAIM_WAIT);
        } else {
            out.extend([Action::AddVips, Action::Announce]);
        }
        self.timers.set(Timer::Advert, now + centiseconds(self.interval_cs));
        self.timers.set(Timer::Reannounce, now + REANNOUNCE_DELAY);
    }

    /// The old master let the VIPs go (or did not say so in time): they are ours now.
    fn complete_claim(&mut self, out: &mut Vec<Action>) {
        if self.timers.take(Timer::Claim).is_some() {
            out.extend([Action::AddVips, Action::Announce]);
        }
    }

    fn fire_timers(&mut self, now: Instant, out: &mut Vec<Action>) {
        // One by one, in this order: each handler may stop or move the later ones.
        if self.timers.fire(Timer::Leaving, now) {
            self.finish_leaving(None, out);
        }
        if self.timers.fire(Timer::Resume, now) && self.state == State::Init {
            // nginx did not serve in time to resume: the VIPs left behind are stale.
            let elapsed = self.takeover_bound();
            out.extend([Action::Notice(Notice::StaleVips { elapsed }), Action::RemoveVips]);
        }
        if self.timers.fire(Timer::RestartGrace, now) {
            self.nginx_healthy = false;
            self.reconcile(now, Reason::RestartGraceOver, out);
        }
        if self.timers.fire(Timer::Claim, now) {
            out.extend([Action::AddVips, Action::Announce]);
        }
        if self.timers.fire(Timer::Reannounce, now) {
            out.push(Action::Announce);
        }
        if self.timers.fire(Timer::MasterDown, now) {
            self.become_master(now, Reason::MasterDown, out);
        }
        if self.timers.fire(Timer::Advert, now) {
            self.advertise_now(now, out);
        }
    }

    /// Sends a MASTER's advert and restarts the Adver_Timer.
    fn advertise_now(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.send_advert(self.effective_priority(), out);
        self.last_advert_at = Some(now);
        self.timers.set(Timer::Advert, now + centiseconds(self.interval_cs));
    }

    fn send_advert(&mut self, priority: u8, out: &mut Vec<Action>) {
        let Some(src) = self.primary else { return };

        let advert = Advert {
            version: self.config.version,
            vrid: self.config.vrid,
            priority,
            interval_cs: self.interval_cs,
            auth: self.expected_auth(),
            addresses: self.config.vips.iter().map(IpNet::addr).collect(),
        };
        let multicast = [match src {
            IpAddr::V4(_) => IpAddr::V4(MULTICAST_V4),
            IpAddr::V6(_) => IpAddr::V6(MULTICAST_V6),
        }];
        let destinations =
            if self.config.unicast_peers.is_empty() { &multicast[..] } else { &self.config.unicast_peers };
        for &dst in destinations {
            let payload = packet::encode(&advert, src, dst, &self.config.codec);
            out.push(Action::SendAdvert { dst, priority, payload });
            self.counters.adverts_sent += 1;
            if priority == 0 {
                self.counters.priority_zero_sent += 1;
            }
        }
    }

    fn expected_auth(&self) -> Auth {
        match (self.config.version, self.config.auth_pass) {
            (Version::V2, Some(password)) => Auth::Simple(password),
            _ => Auth::None,
        }
    }

    fn receive(
        &mut self,
        now: Instant,
        src: IpAddr,
        dst: IpAddr,
        hop_limit: u8,
        payload: &[u8],
        out: &mut Vec<Action>,
    ) {
        if !matches!(self.state, State::Backup | State::Master) {
            // Out of the election, but what the wire says is still worth knowing (uncounted).
            if self.primary.is_some()
                && let Ok(advert) = self.validate(src, dst, hop_limit, payload)
            {
                self.hear(now, src, &advert);
            }
            return;
        }
        let advert = match self.validate(src, dst, hop_limit, payload) {
            Ok(advert) => advert,
            Err(rejection) => return self.reject(now, rejection, src, out),
        };
        self.counters.adverts_received += 1;
        if advert.priority == 0 {
            self.counters.priority_zero_received += 1;
        }
        if advert.addresses.iter().copied().collect::<BTreeSet<_>>() != self.vip_addresses {
            self.counters.vip_mismatches += 1;
            let advertised = advert.addresses.clone();
            self.notice(now, Notice::VipMismatch { from: src, advertised }, out);
        }
        if self.state == State::Master {
            self.receive_as_master(now, src, &advert, out);
        } else {
            self.receive_as_backup(now, src, &advert);
        }
        // After the election: a master that yielded to this advert (or handed over) follows it.
        self.hear(now, src, &advert);
    }

    /// The checks of RFC 5798 §7.1 / RFC 3768 §7.1 in their order, plus unicast peers.
    fn validate(&self, src: IpAddr, dst: IpAddr, hop_limit: u8, payload: &[u8]) -> Result<Advert, Rejection> {
        // Unicast adverts are sent with 255 too, but are accepted with any TTL like keepalived.
        if dst.is_multicast() && hop_limit != HOP_LIMIT {
            return Err(Rejection::Ttl);
        }
        // Checked before decoding so that a packet of the other version counts as such even
        // when its checksum does not verify under our options.
        if payload.first().is_some_and(|byte| byte >> 4 != self.config.version.number()) {
            return Err(Rejection::Version);
        }
        let advert = packet::decode(payload, src, dst, &self.config.codec).map_err(|error| match error {
            PacketError::Version(_) => Rejection::Version,
            PacketError::Type(_) => Rejection::Type,
            PacketError::Checksum => Rejection::Checksum,
            PacketError::AddressFamily => Rejection::AddressFamily,
            PacketError::TooShort => Rejection::Malformed,
            // Past the checksum the VRID byte can be trusted: another router's malformed
            // advert is none of our business.
            _ if payload[1] != self.config.vrid => Rejection::OtherVrid,
            PacketError::AuthType(_) => Rejection::Auth,
            _ => Rejection::Malformed,
        })?;
        if advert.vrid != self.config.vrid {
            return Err(Rejection::OtherVrid);
        }
        if advert.auth != self.expected_auth() {
            return Err(Rejection::Auth);
        }
        // v2 drops a differing interval; v3 adopts it instead (RFC 5798 §6.4.2).
        if advert.version == Version::V2 && advert.interval_cs != self.interval_cs {
            return Err(Rejection::Interval(advert.interval_cs));
        }
        if src.is_ipv4() != self.is_ipv4() {
            return Err(Rejection::AddressFamily);
        }
        // With multicast loopback on we would hear ourselves, and a master re-asserting
        // against its own adverts would never stop.
        if Some(src) == self.primary {
            return Err(Rejection::Own);
        }
        if !self.config.unicast_peers.is_empty() && !self.config.unicast_peers.contains(&src) {
            return Err(Rejection::UnknownPeer);
        }
        Ok(advert)
    }

    /// Counts a rejected packet; configuration mismatches are worth a notice too.
    fn reject(&mut self, now: Instant, rejection: Rejection, from: IpAddr, out: &mut Vec<Action>) {
        let counters = &mut self.counters;
        let (counter, notice) = match rejection {
            Rejection::Ttl => (&mut counters.ttl_errors, None),
            Rejection::Version => (&mut counters.version_errors, None),
            Rejection::Type => (&mut counters.type_errors, None),
            Rejection::Checksum => (&mut counters.checksum_errors, None),
            Rejection::Malformed => (&mut counters.malformed_errors, None),
            Rejection::OtherVrid => (&mut counters.other_vrid, None),
            Rejection::Auth => (&mut counters.auth_errors, Some(Notice::AuthMismatch { from })),
            Rejection::Interval(advertised) => (
                &mut counters.interval_errors,
                Some(Notice::IntervalMismatch {
                    from,
                    advertised: centiseconds(advertised),
                    ours: centiseconds(self.interval_cs),
                }),
            ),
            Rejection::AddressFamily => (&mut counters.address_family_errors, None),
            Rejection::Own => (&mut counters.own_adverts, None),
            Rejection::UnknownPeer => (&mut counters.unknown_peer_errors, Some(Notice::UnknownPeer { from })),
        };
        *counter += 1;
        if let Some(notice) = notice {
            self.notice(now, notice, out);
        }
    }

    /// Emits a notice about a peer unless the same kind about the same peer was emitted less
    /// than NOTICE_EVERY ago.
    fn notice(&mut self, now: Instant, notice: Notice, out: &mut Vec<Action>) {
        let key = match &notice {
            Notice::AuthMismatch { from } => ("auth", *from),
            Notice::IntervalMismatch { from, .. } => ("interval", *from),
            Notice::VipMismatch { from, .. } => ("vips", *from),
            Notice::UnknownPeer { from } => ("peer", *from),
            Notice::ForeignVip { .. } | Notice::StaleVips { .. } => return out.push(Action::Notice(notice)),
        };
        if self.notices.get(&key).is_some_and(|last| now.duration_since(*last) < NOTICE_EVERY) {
            return;
        }
        self.notices.insert(key, now);
        out.push(Action::Notice(notice));
    }

    /// RFC 5798 §6.4.2.
    fn receive_as_backup(&mut self, now: Instant, src: IpAddr, advert: &Advert) {
        if advert.priority == 0 && self.master_address.is_some_and(|master| master != src) {
            // The old master saying it let the VIPs go, heard after the new one's advert (a
            // third router in the VRID): the new master is the one we follow.
            return;
        }
        if advert.priority == 0 {
            // A master that relinquishes sends priority 0 twice, the second once its VIPs
            // are gone; one on a planned stop holds them until our advert as master.
            self.predecessor = Some(match self.predecessor {
                Some(Predecessor::Leaving { from }) if from == src => Predecessor::Released,
                _ => Predecessor::Leaving { from: src },
            });
            self.master_address = None;
            self.timers.set(Timer::MasterDown, now + self.skew_time());
        } else if advert.priority >= self.effective_priority() || !self.may_preempt(now) {
            self.predecessor = None;
            self.accept_master(now, src, advert);
        } else {
            // A lower-priority master: let Master_Down_Timer run out and preempt it.
            let interval = centiseconds(advert.interval_cs);
            self.predecessor = Some(Predecessor::Preempted { from: src, heard_at: now, interval });
        }
    }

    /// RFC 5798 §6.4.3, plus keepalived's immediate re-assertion against a lower priority
    /// master, which ends a split brain within one round trip.
    ///
    /// After a partition heals, clients may have followed the other master's gratuitous ARP:
    /// whichever of the two hears the other first, the winner announces its VIPs at once. A
    /// winner that hears the loser re-asserts with an advert and a GARP/NA burst; a loser that
    /// hears the winner first yields and sends one last advert at its own (lower) priority, so
    /// that the winner hears it and announces (with keepalived as the winner, its
    /// `garp_lower_prio_*` settings decide).
    fn receive_as_master(&mut self, now: Instant, src: IpAddr, advert: &Advert, out: &mut Vec<Action>) {
        if self.timers.is_set(Timer::Leaving) {
            if advert.priority > 0 {
                self.finish_leaving(Some(src), out);
            }
            return;
        }
        let ours = self.effective_priority();
        let peer_wins = advert.priority > ours
            || (advert.priority == ours && self.primary.is_some_and(|primary| as_number(src) > as_number(primary)));
        if !peer_wins && self.timers.is_set(Timer::Claim) {
            let crossing = self
                .crossing_advert_at
                .is_some_and(|at| advert.priority > 0 && now.max(at).duration_since(now.min(at)) < CROSSING_SLACK);
            if crossing {
                // Its periodic advert, sent before it heard ours: its yield follows.
                self.crossing_advert_at = None;
                return;
            }
            // The old master yielded (a lower priority) or released (0): the VIPs are ours.
            return self.complete_claim(out);
        }
        if peer_wins {
            self.become_backup(now, Reason::PreferredPeer, Some(src), out);
            self.accept_master(now, src, advert);
            self.send_advert(ours, out);
        } else if advert.priority > 0 {
            self.advertise_now(now, out);
            out.push(Action::Announce);
        } else {
            self.advertise_now(now, out);
        }
    }

    /// Planned stop: the VIPs go once the peer is master (or nobody answered in time); a
    /// second priority-0 advert tells it they are gone, so it adds them.
    fn finish_leaving(&mut self, to: Option<IpAddr>, out: &mut Vec<Action>) {
        self.timers.stop(Timer::Leaving);
        self.transition(State::Init, Reason::HandedOver, out);
        self.first_backup_at = None;
        self.release_vips(to, out);
        if self.interface_up {
            self.send_advert(0, out);
        }
        out.push(Action::Stopped);
    }

    /// A MASTER lets its VIPs go: handed over with their connections to a live peer `to` when
    /// drains are on and nginx serves them, else simply removed.
    fn release_vips(&self, to: Option<IpAddr>, out: &mut Vec<Action>) {
        match to {
            Some(to) if !self.config.drain.is_zero() && self.nginx_healthy => out.push(Action::HandOverVips { to }),
            _ => out.push(Action::RemoveVips),
        }
    }

    fn accept_master(&mut self, now: Instant, src: IpAddr, advert: &Advert) {
        if self.config.version == Version::V3 {
            self.master_adver_interval_cs = advert.interval_cs;
        }
        self.master_address = Some(src);
        self.timers.set(Timer::MasterDown, now + self.master_down_interval());
    }

    /// Whether a lower-priority master may be preempted now. The owner always preempts
    /// (RFC 5798 §6.1, Preempt_Mode).
    fn may_preempt(&self, now: Instant) -> bool {
        let delay_over = self.first_backup_at.is_none_or(|at| now >= at + self.config.preempt_delay);
        self.effective_priority() == OWNER_PRIORITY || (self.config.preempt && delay_over)
    }

    /// RFC 3768 §6.1: (256 - Priority) / 256 seconds; RFC 5798 §6.1: scaled by
    /// Master_Adver_Interval, in whole centiseconds.
    fn skew_time(&self) -> Duration {
        let unused = 256 - u32::from(self.effective_priority());
        match self.config.version {
            Version::V2 => Duration::from_secs(1) * unused / 256,
            Version::V3 => centiseconds((unused * u32::from(self.master_adver_interval_cs) / 256) as u16),
        }
    }

    /// The earliest a backup can take over after our last advert, whatever its priority: its
    /// Master_Down_Interval is 3 × our interval plus a skew time that may be nearly 0. Within
    /// it, resuming MASTER (after a restart or a short link loss) cannot split the brain.
    fn takeover_bound(&self) -> Duration {
        3 * centiseconds(self.interval_cs)
    }

    fn master_down_interval(&self) -> Duration {
        3 * centiseconds(self.master_adver_interval_cs) + self.skew_time()
    }
}

fn centiseconds(cs: u16) -> Duration {
    Duration::from_millis(u64::from(cs) * 10)
}

/// RFC 5798 §6.4.3 compares primary addresses as unsigned integers.
fn as_number(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}
