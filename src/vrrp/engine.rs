//! The pure VRRP engine: every virtual router of this node, as the shell sees them. Events go
//! in (packets by socket, nginx health, link and address changes, the answers to what the
//! engine asked the shell to look up) with the current time, and actions come out: adverts to
//! send on a socket, VIPs to add or remove on an interface, lookups to make, state to record,
//! lines to log. `poll_timeout` says when to come back with `handle_timeout`.
//!
//! It decides everything the shell used to: which routers a packet is for (all on its socket:
//! each validates it and counts it once, as its own advert or in `other_vrid`), which address
//! is the advert source (never a VIP of any router on the link), which routers resume MASTER
//! after a restart and which VIPs a dead nginx-ha left behind, when a VIP removed behind our
//! back is put back, when a copy of a VIP on a non-MASTER is removed, when an interface
//! created again is followed, when the state record is refreshed, and when a planned stop is
//! over. No I/O and no clock reads.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::record::StateRecord;
use super::router::{Action as RouterAction, Input, Notice, Reason, Router, State};
use super::shell::RouterReport;
use super::spec::RouterSpec;
use crate::net::{self, AddressInfo, Family, LinkInfo, NetEvent, OWNER_PROTO};
use crate::nginx::policy::Health;

/// A raw socket: one per interface (by index) and address family.
pub type SocketKey = (u32, Family);

/// A router by its place in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouterId(pub usize);

/// How often a MASTER refreshes the state record's time at most.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// nginx's health from the supervisor.
    Health(Health),
    /// A packet received on `socket`.
    Packet { socket: SocketKey, src: IpAddr, dst: IpAddr, hop_limit: u8, payload: &'a [u8] },
    /// A link or address change from netlink (a deleted link is reported as down).
    Net(NetEvent),
    /// The netlink events read at once are all in: what they asked for is done once.
    BurstEnd,
    /// The answer to [`Action::Attach`]: the router's interface, its socket open, the
    /// addresses on it and whether each tracked interface is up.
    Attached { router: RouterId, link: LinkInfo, addresses: Vec<AddressInfo>, tracked: Vec<(String, bool)> },
    /// The answer to [`Action::Attach`] when the interface or its socket is not there (yet).
    AttachFailed { router: RouterId, problem: String },
    /// The addresses on interface `ifindex` now, in the kernel's order: the answer to
    /// [`Action::DumpAddresses`].
    Addresses { ifindex: u32, addresses: Vec<AddressInfo> },
    /// Planned stop: hand over every router; [`Action::Stopped`] once done.
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Look up `interface` (open the socket of `family` on it unless open) and answer with
    /// [`Event::Attached`] or [`Event::AttachFailed`].
    Attach {
        router: RouterId,
        interface: String,
        family: Family,
        tracked: Vec<String>,
        /// The router drains its connections at hand-overs (`drain_ms`): make the interface
        /// ready for it now (the tc programs attached), not at the first hand-over, where
        /// attaching them delayed the VIPs' release past the new master's claim wait.
        drain: bool,
    },
    /// No router uses this socket any more (its interface was created again).
    CloseSocket(SocketKey),
    /// Adverts on this socket go out from `source`.
    SetSource {
        socket: SocketKey,
        source: IpAddr,
    },
    /// Answer with [`Event::Addresses`].
    DumpAddresses {
        ifindex: u32,
    },
    Send {
        router: RouterId,
        socket: SocketKey,
        dst: IpAddr,
        priority: u8,
        payload: Vec<u8>,
    },
    AddVips {
        router: RouterId,
        ifindex: u32,
        vips: Vec<IpNet>,
    },
    RemoveVips {
        router: RouterId,
        ifindex: u32,
        vips: Vec<IpNet>,
    },
    /// Remove the VIPs from `link` as `RemoveVips` does, their connections handed over to the
    /// live master at `to` first (the drain: see `crate::drain`).
    HandOverVips {
        router: RouterId,
        link: LinkInfo,
        vips: Vec<IpNet>,
        to: IpAddr,
        /// The router's own IPv4 address on the link, if it speaks IPv4.
        own_v4: Option<std::net::Ipv4Addr>,
        window: Duration,
    },
    /// The router became MASTER in place of the live master at `from`: pass its connections
    /// through to it if it drains them.
    AcceptDrain {
        router: RouterId,
        link: LinkInfo,
        vips: Vec<IpNet>,
        from: IpAddr,
        window: Duration,
    },
    /// A VIP tagged as ours that no router may resume: a dead nginx-ha left it, and the peer
    /// may hold it now.
    RemoveLeftover {
        address: AddressInfo,
    },
    /// Gratuitous ARP / unsolicited NA for `addresses` on `interface`.
    Announce {
        router: RouterId,
        interface: LinkInfo,
        addresses: Vec<IpAddr>,
    },
    StateChanged {
        router: RouterId,
        from: State,
        to: State,
        reason: Reason,
    },
    /// Write the state record (a state changed).
    SaveRecord(StateRecord),
    /// Refresh the state record's time (a MASTER advertised).
    Heartbeat,
    Log {
        router: RouterId,
        line: LogLine,
    },
    /// After [`Event::Shutdown`]: every router has handed over.
    Stopped,
}

/// What the shell logs, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogLine {
    /// The router is waiting for its interface or an address (emitted when the problem changes).
    Waiting {
        problem: String,
    },
    Starting {
        interface: String,
        primary: IpAddr,
    },
    /// The previous nginx-ha left this router MASTER, `elapsed` ago.
    PreviouslyMaster {
        elapsed: Duration,
    },
    LinkChanged {
        interface: String,
        up: bool,
    },
    TrackedLinkChanged {
        interface: String,
        up: bool,
    },
    TrackedLinkDown {
        interface: String,
    },
    /// Its interface was deleted and created again, with a new index: followed.
    Following {
        interface: String,
        index: u32,
    },
    /// A VIP was removed while MASTER: added again.
    VipRemoved {
        address: IpNet,
    },
    Notice(Notice),
}

struct Slot {
    spec: RouterSpec,
    router: Router,
    /// The interface, once attached.
    link: Option<LinkInfo>,
    /// The advert source in use.
    primary: Option<IpAddr>,
    /// Why the router has not started (interface missing, no address yet).
    problem: Option<String>,
    /// An `Action::Attach` is out and not answered yet.
    attaching: bool,
    started: bool,
    /// The previous nginx-ha left this router MASTER: how long before the engine was created
    /// it last advertised.
    resume: Option<Duration>,
    /// Planned stop: the router has handed over.
    stopped: bool,
}

impl Slot {
    fn family(&self) -> Family {
        self.spec.family()
    }

    /// The lookup that starts (or moves) this router on its interface.
    fn attach(&self, router: RouterId, tracked: Vec<String>) -> Action {
        Action::Attach {
            router,
            interface: self.spec.interface.clone(),
            family: self.family(),
            tracked,
            drain: !self.spec.router.drain.is_zero(),
        }
    }

    fn socket(&self) -> Option<SocketKey> {
        self.link.as_ref().map(|link| (link.index, self.family()))
    }

    fn on_link(&self, ifindex: u32) -> bool {
        self.link.as_ref().is_some_and(|link| link.index == ifindex)
    }

    /// Whether `address` on interface `ifindex` is one of this router's VIPs (advertised or
    /// excluded).
    fn has_vip(&self, ifindex: u32, address: IpAddr) -> bool {
        self.on_link(ifindex) && self.is_vip(address)
    }

    fn is_vip(&self, address: IpAddr) -> bool {
        self.spec.all_vips().any(|vip| vip.addr() == address)
    }
}

/// What one burst of netlink events asks for: each is done once per burst.
#[derive(Default)]
struct Burst {
    /// Interfaces whose addresses are to be read again: their primary may have changed, or an
    /// untagged copy of a VIP was added.
    dump: BTreeSet<u32>,
    /// Routers with a VIP removed (one address of them, for the log).
    vips_missing: BTreeMap<RouterId, IpNet>,
}

pub struct Engine {
    slots: Vec<Slot>,
    /// nginx's health as last reported, for routers that start late.
    health: Health,
    created: Instant,
    burst: Burst,
    /// Planned stop under way, and whether `Action::Stopped` went out.
    shutting_down: bool,
    stop_reported: bool,
    last_heartbeat: Option<Instant>,
}

impl Engine {
    /// `previous`: the state record the previous nginx-ha left and how long ago it was last
    /// written. Routers it left MASTER may resume; the router decides whether they can.
    pub fn new(
        specs: Vec<RouterSpec>,
        previous: Option<(StateRecord, Duration)>,
        health: Health,
        now: Instant,
    ) -> Self {
        let slots = specs
            .into_iter()
            .map(|spec| {
                let resume = previous.as_ref().and_then(|(record, elapsed)| {
                    (record.routers.get(&spec.router.name) == Some(&State::Master)).then_some(*elapsed)
                });
                Slot {
                    router: Router::new(spec.router.clone(), now),
                    spec,
                    link: None,
                    primary: None,
                    problem: Some("starting".into()),
                    attaching: false,
                    started: false,
                    resume,
                    stopped: false,
                }
            })
            .collect();
        Engine {
            slots,
            health,
            created: now,
            burst: Burst::default(),
            shutting_down: false,
            stop_reported: false,
            last_heartbeat: None,
        }
    }

    /// The first step: `tagged` are the addresses carrying our tag at startup. Those of
    /// routers that may resume are left to their router; the others are removed. Then every
    /// router is attached.
    pub fn start(&mut self, tagged: Vec<AddressInfo>) -> Vec<Action> {
        let mut out = Vec::new();
        for address in tagged.into_iter().filter(|a| a.proto == Some(OWNER_PROTO)) {
            let kept = self.slots.iter().any(|slot| slot.resume.is_some() && slot.is_vip(address.address.addr()));
            if !kept {
                out.push(Action::RemoveLeftover { address });
            }
        }
        self.attach_pending(&mut out);
        out
    }

    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Health(health) => {
                self.health = health;
                self.feed_started(now, Input::Health(health), &mut out);
            }
            Event::Packet { socket, src, dst, hop_limit, payload } => {
                for i in 0..self.slots.len() {
                    if self.slots[i].started && self.slots[i].socket() == Some(socket) {
                        self.feed(i, now, Input::Packet { src, dst, hop_limit, payload }, &mut out);
                    }
                }
            }
            Event::Net(NetEvent::LinkChanged { index, name, up }) => self.link_changed(now, index, &name, up, &mut out),
            Event::Net(NetEvent::AddressAdded(address)) => {
                // Only an untagged copy can be foreign: a tagged one is our own add (its event
                // may arrive after the router removed it again) or a leftover of an earlier
                // nginx-ha, which `start` cleans up. The address list after the burst tells.
                let foreign = address.proto != Some(OWNER_PROTO);
                let vip_of_started =
                    self.slots.iter().any(|s| s.started && s.has_vip(address.ifindex, address.address.addr()));
                if (foreign && vip_of_started) || !self.is_vip(&address) {
                    self.burst.dump.insert(address.ifindex);
                }
            }
            Event::Net(NetEvent::AddressRemoved(address)) => {
                for (i, slot) in self.slots.iter().enumerate() {
                    if slot.has_vip(address.ifindex, address.address.addr()) {
                        self.burst.vips_missing.entry(RouterId(i)).or_insert(address.address);
                    }
                }
                if !self.is_vip(&address) {
                    self.burst.dump.insert(address.ifindex);
                }
            }
            // Not subscribed to (`net::events` has no route groups).
            Event::Net(NetEvent::RouteAdded(_) | NetEvent::RouteRemoved(_)) => {}
            Event::BurstEnd => self.end_burst(now, &mut out),
            Event::Attached { router, link, addresses, tracked } => {
                self.slots[router.0].attaching = false;
                if self.slots[router.0].started {
                    self.follow(now, router.0, link, &addresses, &mut out);
                } else {
                    self.start_router(now, router.0, link, &addresses, tracked, &mut out);
                }
            }
            Event::AttachFailed { router, problem } => {
                let slot = &mut self.slots[router.0];
                slot.attaching = false;
                if slot.started {
                    // Its interface came back but cannot be used: set up again from scratch
                    // once it can.
                    slot.started = false;
                    slot.link = None;
                    slot.primary = None;
                }
                self.park(router.0, problem, &mut out);
            }
            Event::Addresses { ifindex, addresses } => self.addresses(now, ifindex, &addresses, &mut out),
            Event::Shutdown => {
                self.shutting_down = true;
                self.feed_started(now, Input::Shutdown, &mut out);
            }
        }
        self.check_stopped(&mut out);
        out
    }

    /// When to call `handle_timeout`; `None`: only events can change anything.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots.iter().filter_map(|slot| slot.router.next_deadline()).min()
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        for i in 0..self.slots.len() {
            if self.slots[i].router.next_deadline().is_some_and(|at| at <= now) {
                self.feed(i, now, Input::TimerFired, &mut out);
            }
        }
        self.check_stopped(&mut out);
        out
    }

    /// A report per router; ages in it count up to `now`.
    pub fn reports(&self, now: Instant) -> Vec<RouterReport> {
        self.slots
            .iter()
            .map(|slot| {
                let status = slot.router.status();
                let wire = slot.router.wire_view(now);
                RouterReport {
                    name: slot.spec.router.name.clone(),
                    interface: slot.spec.interface.clone(),
                    vrid: slot.spec.router.vrid,
                    version: slot.spec.router.version.number(),
                    state: status.state,
                    priority: status.priority,
                    effective_priority: status.effective_priority,
                    vips: slot.spec.all_vips().map(ToString::to_string).collect(),
                    master_address: status.master_address,
                    master_advert_interval_ms: status.master_advert_interval.as_millis() as u64,
                    problem: slot.problem.clone(),
                    counters: status.counters,
                    master: wire.master.map(Into::into),
                    peer: wire.peer.map(Into::into),
                }
            })
            .collect()
    }

    pub fn spec(&self, router: RouterId) -> &RouterSpec {
        &self.slots[router.0].spec
    }

    /// Asks the shell to attach every router that is not started and not being attached.
    fn attach_pending(&mut self, out: &mut Vec<Action>) {
        if self.shutting_down {
            return;
        }
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if !slot.started && !slot.attaching {
                slot.attaching = true;
                out.push(slot.attach(RouterId(i), slot.spec.track_interfaces.clone()));
            }
        }
    }

    fn park(&mut self, i: usize, problem: String, out: &mut Vec<Action>) {
        let slot = &mut self.slots[i];
        if slot.problem.as_ref() != Some(&problem) {
            out.push(Action::Log { router: RouterId(i), line: LogLine::Waiting { problem: problem.clone() } });
        }
        slot.problem = Some(problem);
    }

    /// The advert source on `ifindex` for `family`: never a VIP of any router on that link
    /// (like a link-local IPv6 VIP, which the kernel lists before the interface's own
    /// link-local once we hold it; two masters both sending from the VIP would each drop the
    /// other's adverts as their own).
    fn primary_of(&self, ifindex: u32, family: Family, addresses: &[AddressInfo]) -> Option<IpAddr> {
        net::select_primary(addresses, family, |address| self.slots.iter().any(|s| s.has_vip(ifindex, address)))
    }

    fn start_router(
        &mut self,
        now: Instant,
        i: usize,
        link: LinkInfo,
        addresses: &[AddressInfo],
        tracked: Vec<(String, bool)>,
        out: &mut Vec<Action>,
    ) {
        let family = self.slots[i].family();
        let primary = net::select_primary(addresses, family, |address| {
            self.slots.iter().any(|s| (s.on_link(link.index) || s.spec.interface == link.name) && s.is_vip(address))
        });
        let Some(primary) = primary else {
            let what = if family == Family::V6 { "link-local IPv6 address" } else { "IPv4 address" };
            return self.park(i, format!("interface {} has no {what} to send adverts from", link.name), out);
        };
        let router = RouterId(i);
        let slot = &mut self.slots[i];
        slot.link = Some(link.clone());
        slot.primary = Some(primary);
        slot.problem = None;
        slot.started = true;
        out.push(Action::SetSource { socket: (link.index, family), source: primary });
        out.push(Action::Log { router, line: LogLine::Starting { interface: link.name.clone(), primary } });
        if let Some(elapsed) = slot.resume.take() {
            let elapsed = elapsed + now.saturating_duration_since(self.created);
            out.push(Action::Log { router, line: LogLine::PreviouslyMaster { elapsed } });
            self.feed(i, now, Input::Resume { elapsed }, out);
        }
        self.feed(i, now, Input::Startup { primary }, out);
        self.feed(i, now, Input::Health(self.health), out);
        if !link.up {
            self.feed(i, now, Input::InterfaceLink { up: false }, out);
        }
        // A configured VIP is ours whatever its tag: a copy left by keepalived or an admin
        // while we are not MASTER is removed (the router decides).
        if addresses.iter().any(|a| self.slots[i].has_vip(link.index, a.address.addr())) {
            self.feed(i, now, Input::VipPresent, out);
        }
        for (interface, up) in tracked {
            if !up {
                out.push(Action::Log { router, line: LogLine::TrackedLinkDown { interface: interface.clone() } });
                self.feed(i, now, Input::TrackedLink { name: interface, up: false }, out);
            }
        }
    }

    /// Router `i`'s interface was deleted and created again (an `ip link del` + `add`, a VLAN
    /// or bridge rebuilt, a VM's NIC re-plugged): it follows it to the new index, with the new
    /// socket; its link state and primary come from the new interface.
    fn follow(&mut self, now: Instant, i: usize, link: LinkInfo, addresses: &[AddressInfo], out: &mut Vec<Action>) {
        let family = self.slots[i].family();
        let old = self.slots[i].link.replace(link.clone());
        if let Some(old) = old.filter(|old| old.index != link.index) {
            let in_use = self.slots.iter().any(|s| s.family() == family && s.on_link(old.index));
            if !in_use {
                out.push(Action::CloseSocket((old.index, family)));
            }
        }
        out.push(Action::Log {
            router: RouterId(i),
            line: LogLine::Following { interface: link.name.clone(), index: link.index },
        });
        if let Some(primary) = self.primary_of(link.index, family, addresses) {
            self.use_primary(now, i, primary, out);
        }
        self.feed(i, now, Input::InterfaceLink { up: link.up }, out);
    }

    fn use_primary(&mut self, now: Instant, i: usize, primary: IpAddr, out: &mut Vec<Action>) {
        let slot = &mut self.slots[i];
        let Some(socket) = slot.socket() else { return };
        if slot.primary == Some(primary) {
            return;
        }
        slot.primary = Some(primary);
        out.push(Action::SetSource { socket, source: primary });
        self.feed(i, now, Input::PrimaryAddress(primary), out);
    }

    fn link_changed(&mut self, now: Instant, index: u32, name: &str, up: bool, out: &mut Vec<Action>) {
        for i in 0..self.slots.len() {
            let router = RouterId(i);
            let slot = &mut self.slots[i];
            if slot.started && slot.spec.interface == name && slot.link.as_ref().is_some_and(|l| l.index != index) {
                if !slot.attaching {
                    slot.attaching = true;
                    out.push(slot.attach(router, Vec::new()));
                }
                continue;
            }
            if slot.on_link(index) {
                if let Some(link) = slot.link.as_mut() {
                    link.up = up;
                }
                out.push(Action::Log { router, line: LogLine::LinkChanged { interface: name.to_owned(), up } });
                self.feed(i, now, Input::InterfaceLink { up }, out);
            }
            if self.slots[i].spec.track_interfaces.iter().any(|tracked| tracked == name) {
                out.push(Action::Log { router, line: LogLine::TrackedLinkChanged { interface: name.to_owned(), up } });
                self.feed(i, now, Input::TrackedLink { name: name.to_owned(), up }, out);
            }
        }
    }

    fn end_burst(&mut self, now: Instant, out: &mut Vec<Action>) {
        let burst = std::mem::take(&mut self.burst);
        for ifindex in burst.dump {
            out.push(Action::DumpAddresses { ifindex });
        }
        for (router, address) in burst.vips_missing {
            // The router re-adds them only while it holds them (MASTER).
            if self.slots[router.0].router.status().state == State::Master {
                out.push(Action::Log { router, line: LogLine::VipRemoved { address } });
                self.feed(router.0, now, Input::VipsMissing, out);
            }
        }
        self.attach_pending(out);
    }

    /// The addresses on `ifindex` now: the advert source follows the primary address, and an
    /// untagged copy of a VIP on a router that is not MASTER is removed (the router decides;
    /// a MASTER holds its VIPs).
    fn addresses(&mut self, now: Instant, ifindex: u32, addresses: &[AddressInfo], out: &mut Vec<Action>) {
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            if !slot.started || !slot.on_link(ifindex) {
                continue;
            }
            if let Some(primary) = self.primary_of(ifindex, slot.family(), addresses) {
                self.use_primary(now, i, primary, out);
            }
            let slot = &self.slots[i];
            let foreign_copy =
                addresses.iter().any(|a| a.proto != Some(OWNER_PROTO) && slot.has_vip(ifindex, a.address.addr()));
            if foreign_copy && slot.router.status().state != State::Master {
                self.feed(i, now, Input::VipPresent, out);
            }
        }
    }

    /// A VIP (ours, by its tag, or any router's on that link) is never a primary address, so
    /// its coming and going needs no re-read.
    fn is_vip(&self, address: &AddressInfo) -> bool {
        address.proto == Some(OWNER_PROTO)
            || self.slots.iter().any(|slot| slot.has_vip(address.ifindex, address.address.addr()))
    }

    fn feed_started(&mut self, now: Instant, input: Input, out: &mut Vec<Action>) {
        for i in 0..self.slots.len() {
            if self.slots[i].started {
                self.feed(i, now, input.clone(), out);
            }
        }
    }

    fn feed(&mut self, i: usize, now: Instant, input: Input, out: &mut Vec<Action>) {
        let actions = self.slots[i].router.handle(now, input);
        for action in actions {
            self.translate(i, now, action, out);
        }
    }

    /// One router's action as an engine action: on its socket, on its interface.
    fn translate(&mut self, i: usize, now: Instant, action: RouterAction, out: &mut Vec<Action>) {
        let router = RouterId(i);
        let slot = &self.slots[i];
        let vips = || slot.spec.all_vips().copied().collect::<Vec<_>>();
        match action {
            RouterAction::SendAdvert { dst, priority, payload } => {
                let Some(socket) = slot.socket() else { return };
                let as_master = priority > 0 && slot.router.status().state == State::Master;
                out.push(Action::Send { router, socket, dst, priority, payload });
                if as_master
                    && self.last_heartbeat.is_none_or(|at| now.saturating_duration_since(at) >= HEARTBEAT_EVERY)
                {
                    self.last_heartbeat = Some(now);
                    out.push(Action::Heartbeat);
                }
            }
            RouterAction::AddVips => {
                if let Some(link) = &slot.link {
                    out.push(Action::AddVips { router, ifindex: link.index, vips: vips() });
                }
            }
            RouterAction::RemoveVips => {
                if let Some(link) = &slot.link {
                    out.push(Action::RemoveVips { router, ifindex: link.index, vips: vips() });
                }
            }
            RouterAction::HandOverVips { to } => {
                if let Some(link) = &slot.link {
                    let own_v4 = match slot.primary {
                        Some(IpAddr::V4(v4)) => Some(v4),
                        _ => None,
                    };
                    let window = slot.spec.router.drain;
                    out.push(Action::HandOverVips { router, link: link.clone(), vips: vips(), to, own_v4, window });
                }
            }
            RouterAction::AcceptDrain { from } => {
                if let Some(link) = &slot.link {
                    let window = slot.spec.router.drain;
                    out.push(Action::AcceptDrain { router, link: link.clone(), vips: vips(), from, window });
                }
            }
            RouterAction::Announce => {
                if let Some(link) = &slot.link {
                    let addresses = slot.spec.all_vips().map(IpNet::addr).collect();
                    out.push(Action::Announce { router, interface: link.clone(), addresses });
                }
            }
            RouterAction::StateChanged { from, to, reason } => {
                out.push(Action::StateChanged { router, from, to, reason });
                out.push(Action::SaveRecord(self.record()));
            }
            RouterAction::Stopped => self.slots[i].stopped = true,
            RouterAction::Notice(notice) => out.push(Action::Log { router, line: LogLine::Notice(notice) }),
        }
    }

    fn record(&self) -> StateRecord {
        StateRecord {
            routers: self.slots.iter().map(|s| (s.spec.router.name.clone(), s.router.status().state)).collect(),
        }
    }

    fn check_stopped(&mut self, out: &mut Vec<Action>) {
        if self.shutting_down && !self.stop_reported && self.slots.iter().all(|s| !s.started || s.stopped) {
            self.stop_reported = true;
            out.push(Action::Stopped);
        }
    }
}

#[cfg(test)]
#[path = "engine/tests.rs"]
mod tests;
