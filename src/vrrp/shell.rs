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
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::packet::{CodecOptions, Version};
use super::router::{Action, Counters, FailureMode, Input, Notice, Router, RouterConfig, State};
use super::socket::{Received, VrrpSocket};
use crate::config::{Config, OnNginxFailure, VrrpConfig};
use crate::net::{self, Family, LinkInfo, Net, NetEvent, OWNER_PROTO};
use crate::nginx::policy::Health;

#[derive(Debug, thiserror::Error)]
pub enum VrrpError {
    #[error("cannot talk to the kernel's netlink: {0}; nginx-ha needs root (CAP_NET_ADMIN) for [[vrrp]]")]
    Netlink(#[source] net::NetError),
    #[error("{0}; nginx-ha needs root (CAP_NET_RAW) for [[vrrp]]")]
    Socket(#[source] super::socket::OpenError),
}

/// One `[[vrrp]]` table, ready for the shell.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterSpec {
    pub router: RouterConfig,
    pub interface: String,
    /// Held with the VIPs, not advertised.
    pub excluded_vips: Vec<ipnet::IpNet>,
    pub track_interfaces: Vec<String>,
    pub notify: Option<PathBuf>,
    pub notify_timeout: Duration,
}

impl RouterSpec {
    /// Expects a validated config.
    pub fn from_config(config: &Config) -> Vec<RouterSpec> {
        config.vrrp.iter().map(Self::from_table).collect()
    }

    fn from_table(table: &VrrpConfig) -> RouterSpec {
        let auth_pass = table.auth_pass.as_ref().map(|pass| {
            let mut padded = [0u8; 8];
            let bytes = pass.as_bytes();
            padded[..bytes.len().min(8)].copy_from_slice(&bytes[..bytes.len().min(8)]);
            padded
        });
        RouterSpec {
            router: RouterConfig {
                name: table.name.clone(),
                vrid: table.vrid,
                priority: table.priority,
                version: if table.version == 3 { Version::V3 } else { Version::V2 },
                advert_interval: table.advert_interval(),
                preempt: table.preempt,
                preempt_delay: Duration::from_millis(table.preempt_delay_ms),
                auth_pass,
                vips: table.vips(),
                failure_mode: match table.on_nginx_failure {
                    OnNginxFailure::Relinquish => FailureMode::Relinquish,
                    OnNginxFailure::Demote => FailureMode::Demote { weight: table.demote_weight },
                },
                codec: CodecOptions { v3_pseudo_header_checksum: table.checksum_pseudo_header },
                unicast_peers: table.peers(),
                restart_grace: Duration::from_millis(table.restart_grace_ms),
            },
            interface: table.interface.clone(),
            excluded_vips: table.excluded_vips(),
            track_interfaces: table.track_interfaces.clone(),
            notify: table.notify.clone(),
            notify_timeout: Duration::from_millis(table.notify_timeout_ms),
        }
    }

    /// Every address the router holds as MASTER: advertised and excluded.
    fn all_vips(&self) -> impl Iterator<Item = &ipnet::IpNet> {
        self.router.vips.iter().chain(&self.excluded_vips)
    }

    fn family(&self) -> Family {
        match self.router.vips.first() {
            Some(vip) if vip.addr().is_ipv6() => Family::V6,
            _ => Family::V4,
        }
    }
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

    /// Relinquishes every router (priority-0 advert, VIPs removed) and returns when done.
    pub async fn shutdown(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.requests.send(Request::Shutdown(done_tx)).await.is_ok() {
            let _ = done_rx.await;
        }
    }
}

/// Starts the routers; `health` is nginx's health from the supervisor.
pub async fn spawn(specs: Vec<RouterSpec>, health: watch::Receiver<Health>) -> Result<VrrpHandle, VrrpError> {
    let net = Net::new().await.map_err(VrrpError::Netlink)?;
    let events = net::events().map_err(VrrpError::Netlink)?;
    remove_stale_vips(&net).await;
    let now = Instant::now().into_std();
    let routers = specs
        .into_iter()
        .map(|spec| Slot {
            router: Router::new(spec.router.clone(), now),
            notifier: spec.notify.clone().map(|program| Notifier::spawn(program, spec.notify_timeout)),
            spec,
            link: None,
            problem: Some("starting".into()),
            started: false,
            vips_present: false,
        })
        .collect();
    let (requests_tx, requests_rx) = mpsc::channel(8);
    let (received_tx, received_rx) = mpsc::unbounded_channel();
    let mut shell = Shell {
        net,
        routers,
        sockets: HashMap::new(),
        received_tx,
        health: *health.borrow(),
        notices_logged: HashMap::new(),
    };
    shell.set_up_pending().await?;
    let task = tokio::spawn(shell.run(health, events, received_rx, requests_rx));
    Ok(VrrpHandle { requests: requests_tx, task })
}

/// VIPs tagged as ours that are still configured come from an nginx-ha that died without
/// relinquishing them; the peer may hold them now.
async fn remove_stale_vips(net: &Net) {
    match net.addresses_with_proto(OWNER_PROTO).await {
        Ok(stale) => {
            for address in stale {
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

struct Slot {
    spec: RouterSpec,
    router: Router,
    link: Option<LinkInfo>,
    notifier: Option<Notifier>,
    /// Why the router has not started (interface missing, no address yet).
    problem: Option<String>,
    started: bool,
    /// Whether we added the VIPs (and so should re-add them if deleted behind our back).
    vips_present: bool,
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
    received_tx: mpsc::UnboundedSender<(SocketKey, Received)>,
    /// nginx's health as last reported, for routers that start late.
    health: Health,
    /// When each kind of notice was last logged, per router and sender: a peer repeats its
    /// mistake in every advert, the log should not.
    notices_logged: HashMap<(usize, String), Instant>,
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
            let deadline = self.routers.iter().filter_map(|slot| slot.router.next_deadline()).min();
            tokio::select! {
                Some(request) = requests.recv() => match request {
                    Request::Status(reply) => { let _ = reply.send(self.reports()); }
                    Request::Shutdown(done) => {
                        self.feed_all(Input::Shutdown).await;
                        let _ = done.send(());
                        return;
                    }
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
                event = events.next(), if events_open => match event {
                    Some(event) => {
                        // A takeover elsewhere on the host can add a thousand addresses at
                        // once: take the whole burst, then re-read the primaries once.
                        let mut dirty = HashSet::new();
                        self.net_event(event, &mut dirty).await;
                        while let Some(Some(event)) = events.next().now_or_never() {
                            self.net_event(event, &mut dirty).await;
                        }
                        for ifindex in dirty {
                            self.refresh_primaries(ifindex).await;
                        }
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
                    let now = std::time::Instant::now();
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
            self.socket(&link, family, primary)?;
            let slot = &mut self.routers[i];
            slot.link = Some(link.clone());
            slot.problem = None;
            slot.started = true;
            info!(router = %slot.spec.router.name, interface = %interface, %primary, "VRRP router starting");
            self.feed(i, Input::Startup { primary }).await;
            self.feed(i, Input::Health(self.health)).await;
            if !link.up {
                self.feed(i, Input::InterfaceLink { up: false }).await;
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

    fn socket(&mut self, link: &LinkInfo, family: Family, primary: IpAddr) -> Result<(), VrrpError> {
        let key = (link.index, family);
        if self.sockets.contains_key(&key) {
            return Ok(());
        }
        let socket = Arc::new(VrrpSocket::open(link.index, &link.name, family, true).map_err(VrrpError::Socket)?);
        if let Err(e) = socket.set_source(primary) {
            warn!(interface = %link.name, "cannot set the advert source to {primary}: {e}");
        }
        let (reader, tx) = (Arc::clone(&socket), self.received_tx.clone());
        let name = link.name.clone();
        tokio::spawn(async move {
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
        self.sockets.insert(key, socket);
        Ok(())
    }

    async fn packet(&mut self, key: SocketKey, packet: Received) {
        // Byte 1 is the VRID in both versions; other routers on the link are not ours.
        let Some(&vrid) = packet.payload.get(1) else { return };
        let mut delivered = false;
        for i in 0..self.routers.len() {
            let slot = &self.routers[i];
            let on_socket = slot.link.as_ref().is_some_and(|l| l.index == key.0) && slot.spec.family() == key.1;
            if on_socket && slot.spec.router.vrid == vrid {
                delivered = true;
                let input = Input::Packet {
                    src: packet.src,
                    dst: packet.dst,
                    hop_limit: packet.hop_limit,
                    payload: &packet.payload,
                };
                let actions = self.routers[i].router.handle(std::time::Instant::now(), input);
                self.carry_out(i, actions).await;
            }
        }
        if !delivered {
            debug!(src = %packet.src, vrid, "advert for a virtual router not configured here");
        }
    }

    /// Handles one link or address change; the interfaces whose primary address may have
    /// changed are added to `dirty` (the caller re-reads them once per burst of events).
    async fn net_event(&mut self, event: NetEvent, dirty: &mut HashSet<u32>) {
        match event {
            NetEvent::LinkChanged { index, name, up } => {
                for i in 0..self.routers.len() {
                    let slot = &self.routers[i];
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
                for i in 0..self.routers.len() {
                    let slot = &self.routers[i];
                    if slot.has_vip(address.ifindex, address.address.addr())
                        && slot.vips_present
                        && slot.router.status().state == State::Master
                    {
                        warn!(router = %slot.spec.router.name, address = %address.address, "a VIP was removed behind our back; adding it again");
                        self.feed(i, Input::VipsMissing).await;
                    }
                }
                if !self.is_vip(&address) {
                    dirty.insert(address.ifindex);
                }
            }
            NetEvent::AddressAdded(address) => {
                if !self.is_vip(&address) {
                    dirty.insert(address.ifindex);
                }
            }
            // Not subscribed to (`net::events` has no route groups).
            NetEvent::RouteAdded(_) | NetEvent::RouteRemoved(_) => {}
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
        let actions = self.routers[i].router.handle(std::time::Instant::now(), input);
        self.carry_out(i, actions).await;
    }

    async fn carry_out(&mut self, i: usize, actions: Vec<Action>) {
        for action in actions {
            let slot = &mut self.routers[i];
            let name = slot.spec.router.name.clone();
            match action {
                Action::SendAdvert { dst, priority, payload } => {
                    let key = slot.link.as_ref().map(|l| (l.index, slot.spec.family()));
                    if let Some(socket) = key.and_then(|key| self.sockets.get(&key))
                        && let Err(e) = socket.send(dst, &payload).await
                    {
                        warn!(router = %name, %dst, priority, "cannot send advert: {e}");
                    }
                }
                Action::AddVips => {
                    let Some(link) = slot.link.clone() else { continue };
                    slot.vips_present = true;
                    let vips = slot.spec.all_vips().copied().collect();
                    change_vips(&self.net, &name, link.index, vips, VipChange::Add).await;
                }
                Action::RemoveVips => {
                    let Some(link) = slot.link.clone() else { continue };
                    slot.vips_present = false;
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
                        notifier.notify(&name, to);
                    }
                }
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

/// How often the same notice from the same peer is logged again.
const NOTICE_EVERY: Duration = Duration::from_secs(60);

impl Shell {
    fn log_notice(&mut self, i: usize, router: &str, notice: &Notice) {
        let (kind, from) = match notice {
            Notice::AuthMismatch { from } => ("auth", from),
            Notice::IntervalMismatch { from, .. } => ("interval", from),
            Notice::VipMismatch { from, .. } => ("vips", from),
            Notice::UnknownPeer { from } => ("peer", from),
        };
        let now = Instant::now();
        let key = (i, format!("{kind} {from}"));
        if self.notices_logged.get(&key).is_some_and(|last| now.duration_since(*last) < NOTICE_EVERY) {
            debug!(router, "{notice}");
            return;
        }
        self.notices_logged.insert(key, now);
        match notice {
            Notice::VipMismatch { .. } => warn!(
                router,
                "{notice} (not fatal; both nodes should list the same virtual_ips; repeats are logged once a minute)"
            ),
            _ => warn!(router, "{notice} (repeats are logged once a minute)"),
        }
    }
}

/// Runs the `notify` program on each state change, in order, without a shell, each run
/// limited to the timeout; a slow hook delays later hooks, never the VRRP engine.
struct Notifier {
    queue: mpsc::UnboundedSender<(String, State)>,
}

impl Notifier {
    fn spawn(program: PathBuf, timeout: Duration) -> Notifier {
        let (queue, mut rx) = mpsc::unbounded_channel::<(String, State)>();
        tokio::spawn(async move {
            while let Some((name, state)) = rx.recv().await {
                let mut command = tokio::process::Command::new(&program);
                command.arg(&name).arg(state.to_string()).stdin(std::process::Stdio::null()).kill_on_drop(true);
                // Its own process group, so that a timeout kills what the hook started too.
                command.process_group(0);
                let child = crate::nginx::process::spawn_owned(|| command.spawn(), tokio::process::Child::id);
                let mut child = match child {
                    Ok(child) => child,
                    Err(e) => {
                        error!(program = %program.display(), "cannot run the notify program: {e}");
                        continue;
                    }
                };
                let pid = child.id();
                match tokio::time::timeout(timeout, child.wait()).await {
                    Ok(Ok(status)) if status.success() => {
                        debug!(program = %program.display(), %name, %state, "notify ran")
                    }
                    Ok(Ok(status)) => {
                        warn!(program = %program.display(), %name, %state, "notify program failed: {status}")
                    }
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
        });
        Notifier { queue }
    }

    fn notify(&self, name: &str, state: State) {
        let _ = self.queue.send((name.to_string(), state));
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
