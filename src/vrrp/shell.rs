//! The VRRP shell: one task drives every virtual router. It owns the raw sockets (one per
//! interface and address family), the timers, nginx health and netlink events, feeds the pure
//! `Router`s and carries out their actions through `net`.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::record::{RecordError, Recorder, StateRecord};
use super::router::{Action, Counters, Input, Notice, Router, State};
use super::socket::{Received, VrrpSocket};
use super::spec::RouterSpec;
use crate::net::{self, Family, LinkInfo, Net, NetEvent, OWNER_PROTO};
use crate::nginx::policy::Health;

#[derive(Debug, thiserror::Error)]
pub enum VrrpError {
    #[error("cannot talk to the kernel's netlink: {0}; nginx-ha needs root (CAP_NET_ADMIN) for [[vrrp]]")]
    Netlink(#[source] net::NetError),
    #[error("{0}; nginx-ha needs root (CAP_NET_RAW) for [[vrrp]]")]
    Socket(#[source] super::socket::OpenError),
}

/// One router in the status document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterReport {
    pub name: String,
    #[serde(default)]
    pub interface: String,
    #[serde(default)]
    pub vrid: u8,
    #[serde(default)]
    pub version: u8,
    pub state: State,
    pub priority: u8,
    pub effective_priority: u8,
    #[serde(default)]
    pub vips: Vec<String>,
    #[serde(default)]
    pub master_address: Option<IpAddr>,
    #[serde(default)]
    pub master_advert_interval_ms: u64,
    /// Why the router is not running yet (interface missing, no address), if so.
    #[serde(default)]
    pub problem: Option<String>,
    #[serde(default)]
    pub counters: Counters,
}

/// What the daemon asks of the shell. Status is pulled, not pushed: building reports for a
/// hundred routers at every advert would cost more than all the VRRP work itself.
enum Request {
    Status(oneshot::Sender<Vec<RouterReport>>),
    Shutdown(oneshot::Sender<()>),
    /// Test builds only: make the task fail, as a bug would.
    #[cfg(debug_assertions)]
    Fail,
}

pub struct VrrpHandle {
    requests: mpsc::Sender<Request>,
    pub task: tokio::task::JoinHandle<()>,
}

impl VrrpHandle {
    /// A report per router; empty once the routers have shut down.
    pub async fn status(&self) -> Vec<RouterReport> {
        let (reply_tx, reply_rx) = oneshot::channel();
        if self.requests.send(Request::Status(reply_tx)).await.is_err() {
            return Vec::new();
        }
        reply_rx.await.unwrap_or_default()
    }

    /// Test builds only: the task panics, so that its owner's handling of a lost task can be
    /// tested end to end.
    #[cfg(debug_assertions)]
    pub async fn inject_failure(&self) {
        let _ = self.requests.send(Request::Fail).await;
    }

    /// Relinquishes every router (priority-0 advert, VIPs removed) and returns when done.
    pub async fn shutdown(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.requests.send(Request::Shutdown(done_tx)).await.is_ok() {
            let _ = done_rx.await;
        }
    }
}

/// Starts the routers; `health` is nginx's health from the supervisor.
pub async fn spawn(
    specs: Vec<RouterSpec>,
    health: watch::Receiver<Health>,
    state_dir: &std::path::Path,
) -> Result<VrrpHandle, VrrpError> {
    let net = Net::new().await.map_err(VrrpError::Netlink)?;
    let events = net::events().map_err(VrrpError::Netlink)?;
    let recorder = Recorder::new(state_dir);
    let previous = match recorder.load() {
        Ok(previous) => previous,
        Err(e) => {
            warn!("{e}");
            None
        }
    };
    let now = Instant::now();
    // Routers the previous nginx-ha left as MASTER: the core decides whether they resume.
    let resume = |spec: &RouterSpec| {
        let previous = previous.as_ref()?;
        (previous.record.routers.get(&spec.router.name) == Some(&State::Master)).then_some((previous.elapsed, now))
    };
    let kept: Vec<IpAddr> =
        specs.iter().filter(|spec| resume(spec).is_some()).flat_map(|spec| spec.all_vips().map(|v| v.addr())).collect();
    remove_stale_vips(&net, &kept).await;
    let now = now.into_std();
    let routers = specs
        .into_iter()
        .map(|spec| Slot {
            resume: resume(&spec),
            stopped: false,
            router: Router::new(spec.router.clone(), now),
            notifier: spec
                .notify
                .clone()
                .map(|program| Notifier::spawn(spec.router.name.clone(), program, spec.notify_timeout)),
            spec,
            link: None,
            problem: Some("starting".into()),
            started: false,
        })
        .collect();
    let (requests_tx, requests_rx) = mpsc::channel(8);
    let (received_tx, received_rx) = mpsc::unbounded_channel();
    let recorder = Recording { recorder, failing: false, last_heartbeat: None };
    let mut shell = Shell {
        net,
        routers,
        sockets: HashMap::new(),
        readers: JoinSet::new(),
        reader_handles: HashMap::new(),
        received_tx,
        health: *health.borrow(),
        recording: recorder,
        stopping: None,
    };
    shell.set_up_pending().await?;
    let task = tokio::spawn(shell.run(health, events, received_rx, requests_rx));
    Ok(VrrpHandle { requests: requests_tx, task })
}

/// Removes every configured VIP from this host without the routers: what the daemon does when
/// the VRRP task is lost, so that this node never answers for a VIP nobody advertises for.
/// Returns how many addresses were removed.
pub async fn release_vips(specs: &[RouterSpec]) -> usize {
    let Ok(net) = Net::new().await else {
        error!("cannot open netlink to remove the VIPs");
        return 0;
    };
    let mut removed = 0;
    for spec in specs {
        let Ok(link) = net.link(&spec.interface).await else { continue };
        let present = net.addresses(link.index).await.unwrap_or_default();
        for vip in spec.all_vips().filter(|vip| present.iter().any(|a| a.address.addr() == vip.addr())) {
            match net.del_address(link.index, *vip).await {
                Ok(_) => removed += 1,
                Err(e) => error!(router = %spec.router.name, "{e}"),
            }
        }
    }
    removed
}

/// VIPs tagged as ours come from an nginx-ha that died without relinquishing them; the peer
/// may hold them now. Those of routers that may resume (`kept`) are left to their router.
async fn remove_stale_vips(net: &Net, kept: &[IpAddr]) {
    match net.addresses_with_proto(OWNER_PROTO).await {
        Ok(stale) => {
            for address in stale.into_iter().filter(|a| !kept.contains(&a.address.addr())) {
                warn!(address = %address.address, ifindex = address.ifindex, "removing a VIP left behind by an earlier nginx-ha");
                if let Err(e) = net.del_address(address.ifindex, address.address).await {
                    error!("{e}");
                }
            }
        }
        Err(e) => error!("cannot list addresses to remove stale VIPs: {e}"),
    }
}

type SocketKey = (u32, Family);

/// What one burst of netlink events asks for: each is done once per burst.
#[derive(Default)]
struct Burst {
    /// Interfaces whose primary address may have changed.
    dirty: HashSet<u32>,
    /// Routers with an untagged copy of a VIP added.
    vips_seen: HashSet<usize>,
    /// Routers with a VIP removed (one address of them, for the log).
    vips_missing: HashMap<usize, ipnet::IpNet>,
}

struct Slot {
    spec: RouterSpec,
    router: Router,
    link: Option<LinkInfo>,
    notifier: Option<Notifier>,
    /// Why the router has not started (interface missing, no address yet).
    problem: Option<String>,
    started: bool,
    /// The previous nginx-ha left this router MASTER: how long before `.1` it last advertised.
    resume: Option<(Duration, Instant)>,
    /// Planned stop: the router has handed over.
    stopped: bool,
}

impl Slot {
    /// Whether `address` on interface `ifindex` is one of this router's VIPs (advertised or
    /// excluded).
    fn has_vip(&self, ifindex: u32, address: IpAddr) -> bool {
        self.link.as_ref().is_some_and(|l| l.index == ifindex) && self.spec.all_vips().any(|vip| vip.addr() == address)
    }
}

struct Shell {
    net: Net,
    routers: Vec<Slot>,
    sockets: HashMap<SocketKey, Arc<VrrpSocket>>,
    /// One receive task per socket, owned here: they end with the shell, or when their
    /// interface is deleted (aborted through `reader_handles`).
    readers: JoinSet<()>,
    reader_handles: HashMap<SocketKey, tokio::task::AbortHandle>,
    received_tx: mpsc::UnboundedSender<(SocketKey, Received)>,
    /// nginx's health as last reported, for routers that start late.
    health: Health,
    recording: Recording,
    /// Planned stop under way: answered once every router has handed over.
    stopping: Option<oneshot::Sender<()>>,
}

/// The state record and how writing it goes.
struct Recording {
    recorder: Recorder,
    /// Writing failed last time (logged once until it works again).
    failing: bool,
    last_heartbeat: Option<Instant>,
}

/// How often a MASTER refreshes the record's time at most.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(100);

impl Recording {
    fn result(&mut self, result: Result<(), RecordError>) {
        match result {
            Ok(()) if self.failing => {
                info!("the VRRP state record is written again");
                self.failing = false;
            }
            Err(e) if !self.failing => {
                warn!("{e}; a restarted nginx-ha cannot resume MASTER without it");
                self.failing = true;
            }
            _ => {}
        }
    }

    fn save(&mut self, routers: &[Slot]) {
        let record = StateRecord {
            routers: routers.iter().map(|s| (s.spec.router.name.clone(), s.router.status().state)).collect(),
        };
        let result = self.recorder.save(&record);
        self.result(result);
    }

    fn heartbeat(&mut self) {
        let now = Instant::now();
        if self.last_heartbeat.is_some_and(|at| now.duration_since(at) < HEARTBEAT_EVERY) {
            return;
        }
        self.last_heartbeat = Some(now);
        let result = self.recorder.heartbeat();
        self.result(result);
    }
}

impl Shell {
    async fn run(
        mut self,
        mut health: watch::Receiver<Health>,
        mut events: net::NetEvents,
        mut received: mpsc::UnboundedReceiver<(SocketKey, Received)>,
        mut requests: mpsc::Receiver<Request>,
    ) {
        self.health = *health.borrow_and_update();
        self.feed_all(Input::Health(self.health)).await;
        let mut events_open = true;
        loop {
            if self.stopping.is_some() && self.routers.iter().all(|slot| !slot.started || slot.stopped) {
                if let Some(done) = self.stopping.take() {
                    let _ = done.send(());
                }
                return;
            }
            let deadline = self.routers.iter().filter_map(|slot| slot.router.next_deadline()).min();
            tokio::select! {
                Some(request) = requests.recv() => match request {
                    Request::Status(reply) => { let _ = reply.send(self.reports()); }
                    Request::Shutdown(done) => {
                        self.stopping = Some(done);
                        self.feed_all(Input::Shutdown).await;
                    }
                    #[cfg(debug_assertions)]
                    Request::Fail => panic!("failpoint: the VRRP task fails"),
                },
                changed = health.changed() => {
                    // A closed channel means the supervisor is gone: nothing serves any more.
                    self.health = if changed.is_ok() { *health.borrow_and_update() } else { Health::Unhealthy };
                    self.feed_all(Input::Health(self.health)).await;
                    if changed.is_err() {
                        health = watch::channel(Health::Unhealthy).1;
                    }
                }
                Some((key, packet)) = received.recv() => self.packet(key, packet).await,
                Some(ended) = self.readers.join_next() => {
                    // A receive loop never ends on its own (it is aborted when its interface
                    // is gone): without it a router is deaf.
                    if !ended.as_ref().is_err_and(|e| e.is_cancelled()) {
                        error!("a VRRP receive task ended: {ended:?}");
                        return;
                    }
                }
                event = events.next(), if events_open => match event {
                    Some(event) => {
                        // A takeover elsewhere on the host can add a thousand addresses at
                        // once: take the whole burst, then re-read the primaries once.
                        let mut burst = Burst::default();
                        self.net_event(event, &mut burst).await;
                        while let Some(Some(event)) = events.next().now_or_never() {
                            self.net_event(event, &mut burst).await;
                        }
                        self.after_burst(burst).await;
                        self.retry_pending().await;
                    }
                    None => {
                        warn!("netlink event stream ended (kernel dropped notifications); re-reading links");
                        self.resync_links().await;
                        match net::events() {
                            Ok(fresh) => events = fresh,
                            Err(e) => { error!("cannot resubscribe to netlink events: {e}"); events_open = false; }
                        }
                    }
                },
                _ = sleep_until(deadline) => {
                    let now = Instant::now().into_std();
                    for i in 0..self.routers.len() {
                        if self.routers[i].router.next_deadline().is_some_and(|at| at <= now) {
                            self.feed(i, Input::TimerFired).await;
                        }
                    }
                }
            }
        }
    }

    /// Looks up interfaces, addresses and sockets for routers not yet started.
    async fn set_up_pending(&mut self) -> Result<(), VrrpError> {
        for i in 0..self.routers.len() {
            if self.routers[i].started {
                continue;
            }
            let (interface, family) = (self.routers[i].spec.interface.clone(), self.routers[i].spec.family());
            let link = match self.net.link(&interface).await {
                Ok(link) => link,
                Err(e) => {
                    self.park(i, format!("interface {interface}: {e}"));
                    continue;
                }
            };
            let primary = match self.net.primary_address(link.index, family).await {
                Ok(Some(primary)) => primary,
                Ok(None) => {
                    let what = if family == Family::V6 { "link-local IPv6 address" } else { "IPv4 address" };
                    self.park(i, format!("interface {interface} has no {what} to send adverts from"));
                    continue;
                }
                Err(e) => {
                    self.park(i, e.to_string());
                    continue;
                }
            };
            self.socket(&link, family, Some(primary))?;
            let slot = &mut self.routers[i];
            slot.link = Some(link.clone());
            slot.problem = None;
            slot.started = true;
            info!(router = %slot.spec.router.name, interface = %interface, %primary, "VRRP router starting");
            if let Some((elapsed, at)) = slot.resume.take() {
                let elapsed = elapsed + at.elapsed();
                info!(router = %slot.spec.router.name, elapsed_ms = elapsed.as_millis() as u64, "the previous nginx-ha left this router MASTER");
                self.feed(i, Input::Resume { elapsed }).await;
            }
            self.feed(i, Input::Startup { primary }).await;
            self.feed(i, Input::Health(self.health)).await;
            if !link.up {
                self.feed(i, Input::InterfaceLink { up: false }).await;
            }
            // A configured VIP is ours whatever its tag: a copy left by keepalived or an admin
            // while we are not MASTER is removed (the router decides).
            let present = self.net.addresses(link.index).await.unwrap_or_default();
            if present.iter().any(|a| self.routers[i].has_vip(link.index, a.address.addr())) {
                self.feed(i, Input::VipPresent).await;
            }
            for tracked in self.routers[i].spec.track_interfaces.clone() {
                let up = self.net.link(&tracked).await.is_ok_and(|l| l.up);
                if !up {
                    warn!(router = %self.routers[i].spec.router.name, "tracked interface {tracked} is down");
                    self.feed(i, Input::TrackedLink { name: tracked, up: false }).await;
                }
            }
        }
        Ok(())
    }

    fn park(&mut self, i: usize, problem: String) {
        let slot = &mut self.routers[i];
        if slot.problem.as_ref() != Some(&problem) {
            error!(router = %slot.spec.router.name, "{problem}; the router waits for it");
        }
        slot.problem = Some(problem);
    }

    /// Opens the socket for `link` and `family` unless it is open; `primary`, once known, is
    /// the advert source.
    fn socket(&mut self, link: &LinkInfo, family: Family, primary: Option<IpAddr>) -> Result<(), VrrpError> {
        let key = (link.index, family);
        if self.sockets.contains_key(&key) {
            return Ok(());
        }
        let socket = Arc::new(VrrpSocket::open(link.index, &link.name, family, true).map_err(VrrpError::Socket)?);
        if let Some(primary) = primary
            && let Err(e) = socket.set_source(primary)
        {
            warn!(interface = %link.name, "cannot set the advert source to {primary}: {e}");
        }
        let (reader, tx) = (Arc::clone(&socket), self.received_tx.clone());
        let name = link.name.clone();
        let handle = self.readers.spawn(async move {
            loop {
                match reader.recv().await {
                    Ok(packet) => {
                        if tx.send((key, packet)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        warn!(interface = %name, "VRRP receive failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        self.reader_handles.insert(key, handle);
        self.sockets.insert(key, socket);
        Ok(())
    }

    /// The interface of router `i` was deleted and created again (an `ip link del` + `add`, a
    /// VLAN or bridge rebuilt, a VM's NIC re-plugged): it has a new index. The router follows
    /// it to the new index with a new socket; its link state and primary come from the new one.
    async fn reattach(&mut self, i: usize) {
        let (interface, family) = (self.routers[i].spec.interface.clone(), self.routers[i].spec.family());
        let Ok(link) = self.net.link(&interface).await else { return };
        let old = self.routers[i].link.replace(link.clone());
        if let Some(old) = old {
            let key = (old.index, family);
            let in_use = self
                .routers
                .iter()
                .any(|slot| slot.spec.family() == family && slot.link.as_ref().is_some_and(|l| l.index == old.index));
            if !in_use {
                self.sockets.remove(&key);
                if let Some(reader) = self.reader_handles.remove(&key) {
                    reader.abort();
                }
            }
        }
        let primary = self.net.primary_address(link.index, family).await.ok().flatten();
        let name = self.routers[i].spec.router.name.clone();
        info!(router = %name, interface = %interface, index = link.index, "the interface was created again: following it");
        if let Err(e) = self.socket(&link, family, primary) {
            // Set up again from scratch once the interface allows it.
            let slot = &mut self.routers[i];
            slot.started = false;
            slot.link = None;
            self.park(i, e.to_string());
            return;
        }
        if let Some(primary) = primary {
            self.feed(i, Input::PrimaryAddress(primary)).await;
        }
        self.feed(i, Input::InterfaceLink { up: link.up }).await;
    }

    /// Every router on the socket sees every packet: the router validates it in RFC order and
    /// counts it once, as an advert of its own or in `other_vrid`.
    async fn packet(&mut self, key: SocketKey, packet: Received) {
        for i in 0..self.routers.len() {
            let slot = &self.routers[i];
            let on_socket = slot.link.as_ref().is_some_and(|l| l.index == key.0) && slot.spec.family() == key.1;
            if on_socket {
                let input = Input::Packet {
                    src: packet.src,
                    dst: packet.dst,
                    hop_limit: packet.hop_limit,
                    payload: &packet.payload,
                };
                let actions = self.routers[i].router.handle(Instant::now().into_std(), input);
                self.carry_out(i, actions).await;
            }
        }
    }

    /// Handles one link or address change; the interfaces whose primary address may have
    /// changed are added to `dirty` (the caller re-reads them once per burst of events).
    async fn net_event(&mut self, event: NetEvent, burst: &mut Burst) {
        match event {
            NetEvent::LinkChanged { index, name, up } => {
                for i in 0..self.routers.len() {
                    let slot = &self.routers[i];
                    if slot.started
                        && slot.spec.interface == name
                        && slot.link.as_ref().is_some_and(|l| l.index != index)
                    {
                        self.reattach(i).await;
                        continue;
                    }
                    if slot.link.as_ref().is_some_and(|l| l.index == index) {
                        info!(router = %slot.spec.router.name, interface = %name, up, "interface link changed");
                        self.feed(i, Input::InterfaceLink { up }).await;
                    }
                    if self.routers[i].spec.track_interfaces.contains(&name) {
                        info!(router = %self.routers[i].spec.router.name, interface = %name, up, "tracked interface changed");
                        self.feed(i, Input::TrackedLink { name: name.clone(), up }).await;
                    }
                }
            }
            NetEvent::AddressRemoved(address) => {
                for (i, slot) in self.routers.iter().enumerate() {
                    if slot.has_vip(address.ifindex, address.address.addr()) {
                        burst.vips_missing.entry(i).or_insert(address.address);
                    }
                }
                if !self.is_vip(&address) {
                    burst.dirty.insert(address.ifindex);
                }
            }
            NetEvent::AddressAdded(address) => {
                // Only untagged copies can be foreign: a tagged one is our own add (its event
                // may arrive after the router removed it again) or a leftover of an earlier
                // nginx-ha, which startup cleans up.
                let foreign = address.proto != Some(OWNER_PROTO);
                for (i, slot) in self.routers.iter().enumerate() {
                    if foreign && slot.started && slot.has_vip(address.ifindex, address.address.addr()) {
                        burst.vips_seen.insert(i);
                    }
                }
                if !self.is_vip(&address) {
                    burst.dirty.insert(address.ifindex);
                }
            }
            // Not subscribed to (`net::events` has no route groups).
            NetEvent::RouteAdded(_) | NetEvent::RouteRemoved(_) => {}
        }
    }

    /// What a burst of netlink events left to do, once per router or interface.
    async fn after_burst(&mut self, burst: Burst) {
        for ifindex in burst.dirty {
            self.refresh_primaries(ifindex).await;
        }
        for (i, address) in burst.vips_missing {
            let slot = &self.routers[i];
            // The router re-adds them only while it holds them (MASTER).
            if slot.router.status().state == State::Master {
                warn!(router = %slot.spec.router.name, %address, "a VIP was removed behind our back; adding it again");
                self.feed(i, Input::VipsMissing).await;
            }
        }
        for i in burst.vips_seen {
            self.vips_seen(i).await;
        }
    }

    /// An untagged copy of a VIP of router `i` was added during the last burst of events. The event may be our own
    /// add, read after the router had already removed it again: what counts is the address
    /// list now (one dump per burst). A MASTER holds its VIPs, so there is nothing to look at.
    async fn vips_seen(&mut self, i: usize) {
        let slot = &self.routers[i];
        let Some(link) = slot.link.clone() else { return };
        if slot.router.status().state == State::Master {
            return;
        }
        let present = self.net.addresses(link.index).await.unwrap_or_default();
        let slot = &self.routers[i];
        if present.iter().any(|a| a.proto != Some(OWNER_PROTO) && slot.has_vip(link.index, a.address.addr())) {
            self.feed(i, Input::VipPresent).await;
        }
    }

    /// A VIP (ours, by its tag, or any router's on that link) is never a primary address, so
    /// its coming and going needs no re-read.
    fn is_vip(&self, address: &net::AddressInfo) -> bool {
        address.proto == Some(OWNER_PROTO)
            || self.routers.iter().any(|slot| slot.has_vip(address.ifindex, address.address.addr()))
    }

    async fn retry_pending(&mut self) {
        if self.routers.iter().any(|slot| !slot.started)
            && let Err(e) = self.set_up_pending().await
        {
            error!("{e}");
        }
    }

    /// The advert source and tie-breaker follow the interface's primary address.
    async fn refresh_primaries(&mut self, ifindex: u32) {
        for i in 0..self.routers.len() {
            let slot = &self.routers[i];
            if !slot.started || slot.link.as_ref().is_none_or(|l| l.index != ifindex) {
                continue;
            }
            let family = slot.spec.family();
            if let Ok(Some(primary)) = self.net.primary_address(ifindex, family).await {
                // A VIP of any router on the link (like a link-local IPv6 VIP, listed before
                // the interface's own link-local) is no advert source; see the Router.
                if self.routers.iter().any(|other| other.has_vip(ifindex, primary)) {
                    continue;
                }
                if let Some(socket) = self.sockets.get(&(ifindex, family)) {
                    let _ = socket.set_source(primary);
                }
                self.feed(i, Input::PrimaryAddress(primary)).await;
            }
        }
    }

    /// After lost netlink notifications: the links may have changed meanwhile.
    async fn resync_links(&mut self) {
        for i in 0..self.routers.len() {
            let Some(link) = self.routers[i].link.clone() else { continue };
            if let Ok(fresh) = self.net.link(&link.name).await {
                self.feed(i, Input::InterfaceLink { up: fresh.up }).await;
            }
            for tracked in self.routers[i].spec.track_interfaces.clone() {
                let up = self.net.link(&tracked).await.is_ok_and(|l| l.up);
                self.feed(i, Input::TrackedLink { name: tracked, up }).await;
            }
        }
    }

    async fn feed_all(&mut self, input: Input<'_>) {
        for i in 0..self.routers.len() {
            if self.routers[i].started {
                self.feed(i, input.clone()).await;
            }
        }
    }

    async fn feed(&mut self, i: usize, input: Input<'_>) {
        let actions = self.routers[i].router.handle(Instant::now().into_std(), input);
        self.carry_out(i, actions).await;
    }

    async fn carry_out(&mut self, i: usize, actions: Vec<Action>) {
        for action in actions {
            let slot = &mut self.routers[i];
            let name = slot.spec.router.name.clone();
            match action {
                Action::SendAdvert { dst, priority, payload } => {
                    if priority > 0 && slot.router.status().state == State::Master {
                        self.recording.heartbeat();
                    }
                    let key = slot.link.as_ref().map(|l| (l.index, slot.spec.family()));
                    if let Some(socket) = key.and_then(|key| self.sockets.get(&key))
                        && let Err(e) = socket.send(dst, &payload).await
                    {
                        warn!(router = %name, %dst, priority, "cannot send advert: {e}");
                    }
                }
                Action::AddVips => {
                    let Some(link) = slot.link.clone() else { continue };
                    let vips = slot.spec.all_vips().copied().collect();
                    change_vips(&self.net, &name, link.index, vips, VipChange::Add).await;
                }
                Action::RemoveVips => {
                    let Some(link) = slot.link.clone() else { continue };
                    let vips = slot.spec.all_vips().copied().collect();
                    change_vips(&self.net, &name, link.index, vips, VipChange::Remove).await;
                }
                Action::Announce => {
                    let Some(link) = slot.link.clone() else { continue };
                    let addrs: Vec<IpAddr> = slot.spec.all_vips().map(|vip| vip.addr()).collect();
                    // A fresh MAC in case the link was recreated; a burst is only a few packets.
                    let link = self.net.link(&link.name).await.unwrap_or(link);
                    if let Err(e) = net::announce(&link, &addrs).await {
                        warn!(router = %name, "gratuitous ARP / NA failed: {e}");
                    }
                }
                Action::StateChanged { from, to, reason } => {
                    info!(router = %name, %from, %to, "VRRP state change: {reason}");
                    if let Some(notifier) = &slot.notifier {
                        notifier.notify(to);
                    }
                    self.recording.save(&self.routers);
                }
                Action::Stopped => slot.stopped = true,
                Action::Notice(notice) => self.log_notice(i, &name, &notice),
            }
        }
    }

    fn reports(&self) -> Vec<RouterReport> {
        self.routers
            .iter()
            .map(|slot| {
                let status = slot.router.status();
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
                }
            })
            .collect()
    }
}

impl Shell {
    /// The router emits each peer's notice at most once a minute.
    fn log_notice(&self, i: usize, router: &str, notice: &Notice) {
        match notice {
            Notice::ForeignVip { .. } | Notice::StaleVips { .. } => {
                warn!(router, interface = %self.routers[i].spec.interface, "{notice}")
            }
            Notice::VipMismatch { .. } => warn!(
                router,
                "{notice} (not fatal; both nodes should list the same virtual_ips; repeats are logged once a minute)"
            ),
            _ => warn!(router, "{notice} (repeats are logged once a minute)"),
        }
    }
}

/// Runs the `notify` program on each state change, in order, without a shell, each run
/// limited to the timeout; a slow hook delays later hooks, never the VRRP engine. At most
/// `NOTIFY_QUEUE` changes wait: a router flapping faster than its hook runs has the waiting
/// ones coalesced into its latest state, so the hook always ends on the state that holds.
struct Notifier {
    queue: Arc<std::sync::Mutex<NotifyQueue>>,
    wake: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

const NOTIFY_QUEUE: usize = 16;

/// The waiting notifications of one router, bounded.
#[derive(Debug, Default)]
struct NotifyQueue {
    pending: std::collections::VecDeque<State>,
    coalesced: u64,
}

impl NotifyQueue {
    fn push(&mut self, state: State) {
        if self.pending.len() >= NOTIFY_QUEUE {
            self.coalesced += self.pending.len() as u64;
            self.pending.clear();
        }
        self.pending.push_back(state);
    }
}

impl Notifier {
    fn spawn(name: String, program: PathBuf, timeout: Duration) -> Notifier {
        let queue = Arc::new(std::sync::Mutex::new(NotifyQueue::default()));
        let wake = Arc::new(tokio::sync::Notify::new());
        let (waiting, woken) = (Arc::clone(&queue), Arc::clone(&wake));
        let task = tokio::spawn(async move {
            loop {
                let next = {
                    let mut queue = waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    if queue.coalesced > 0 {
                        warn!(program = %program.display(), router = %name, skipped = queue.coalesced, "the router changed state faster than its notify program ran; the skipped changes were coalesced into the latest state");
                        queue.coalesced = 0;
                    }
                    queue.pending.pop_front()
                };
                match next {
                    Some(state) => run_hook(&program, &name, state, timeout).await,
                    None => woken.notified().await,
                }
            }
        });
        Notifier { queue, wake, task }
    }

    fn notify(&self, state: State) {
        if self.task.is_finished() {
            error!("the notify task has ended; state {state} is not notified");
            return;
        }
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(state);
        self.wake.notify_one();
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run_hook(program: &PathBuf, name: &str, state: State, timeout: Duration) {
    let mut command = tokio::process::Command::new(program);
    command.arg(name).arg(state.to_string()).stdin(std::process::Stdio::null()).kill_on_drop(true);
    // Its own process group, so that a timeout kills what the hook started too.
    command.process_group(0);
    let child = crate::nginx::process::spawn_owned(|| command.spawn(), tokio::process::Child::id);
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            error!(program = %program.display(), "cannot run the notify program: {e}");
            return;
        }
    };
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => debug!(program = %program.display(), %name, %state, "notify ran"),
        Ok(Ok(status)) => warn!(program = %program.display(), %name, %state, "notify program failed: {status}"),
        Ok(Err(e)) => warn!(program = %program.display(), "notify program: {e}"),
        Err(_) => {
            warn!(program = %program.display(), "notify program still running after {} ms; killed", timeout.as_millis());
            if let Some(pid) = pid {
                let group = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = child.kill().await;
        }
    }
    if let Some(pid) = pid {
        crate::nginx::process::release(pid as i32);
    }
}

#[derive(Clone, Copy)]
enum VipChange {
    Add,
    Remove,
}

/// Adds or removes `vips` on `ifindex`, a bounded number of requests at a time: a thousand
/// VIPs take a few milliseconds this way, and the acks in flight always fit the socket's
/// buffer. Failures are logged.
async fn change_vips(net: &Net, router: &str, ifindex: u32, vips: Vec<ipnet::IpNet>, change: VipChange) {
    const AT_ONCE: usize = 256;
    // Each request owns a clone of the handle: borrowed ones would make the shell's future
    // not `Send`.
    let requests = vips.into_iter().map(|vip| {
        let net = net.clone();
        async move {
            match change {
                VipChange::Add => net.add_address(ifindex, vip, None, OWNER_PROTO).await.map(drop),
                VipChange::Remove => net.del_address(ifindex, vip).await.map(drop),
            }
        }
    });
    let results: Vec<_> = futures::stream::iter(requests).buffer_unordered(AT_ONCE).collect().await;
    for error in results.into_iter().filter_map(Result::err) {
        error!(router = %router, "{error}");
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(Instant::from_std(deadline)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flapping_router_s_notifications_are_bounded_and_end_on_the_latest_state() {
        let mut queue = NotifyQueue::default();
        for i in 0..1000 {
            queue.push(if i % 2 == 0 { State::Master } else { State::Backup });
        }
        assert!(queue.pending.len() <= NOTIFY_QUEUE);
        assert_eq!(queue.pending.back(), Some(&State::Backup));
        assert_eq!(queue.coalesced as usize + queue.pending.len(), 1000);
    }
}
