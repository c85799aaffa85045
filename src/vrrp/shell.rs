//! The VRRP shell: one task around the pure [`Engine`](super::engine::Engine). It owns the raw
//! sockets (one per interface and address family, each with its receive task), the timer,
//! nginx health and netlink events, feeds them to the engine and carries out its actions
//! through `net`: it decides nothing itself.

use std::collections::{HashMap, VecDeque};
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

use super::engine::{Action, Engine, Event, LogLine, RouterId, SocketKey};
use super::record::{RecordError, RecordWriter, Recorder};
use super::router::{Counters, Notice, SeenAdvert, State};
use super::socket::{Received, VrrpSocket};
use super::spec::RouterSpec;
use crate::drain::{self, DrainHandle};
use crate::net::{self, Family, LinkInfo, Net, NetEvent, OWNER_PROTO};
use crate::nginx::policy::Health;

/// SCHED_FIFO priority of the VRRP thread when it runs real-time: above every ordinary process
/// (nginx, builds, CPU hogs), below the kernel's own real-time threads (50 and up).
const REALTIME_PRIORITY: i32 = 10;

/// At most this many queued packets are taken from one socket before a timer is handled.
const QUEUED_PER_SOCKET: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum VrrpError {
    #[error("cannot talk to the kernel's netlink: {0}; nginx-ha needs root (CAP_NET_ADMIN) for [[vrrp]]")]
    Netlink(#[source] net::NetError),
    #[error("{0}; nginx-ha needs root (CAP_NET_RAW) for [[vrrp]]")]
    Socket(#[source] super::socket::OpenError),
    #[error(transparent)]
    Record(super::record::RecordError),
    #[error("cannot start the VRRP thread: {0}")]
    Thread(#[source] std::io::Error),
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
    /// The master as heard on the wire in any state (this node while MASTER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<AdvertReport>,
    /// The last advert heard from another router, in any state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<AdvertReport>,
}

/// One advert as a router saw it: sent (its own, as MASTER) or heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvertReport {
    pub address: IpAddr,
    /// The priority advertised.
    pub priority: u8,
    pub advert_interval_ms: u64,
    /// Since it was sent or heard, at the time of the report.
    pub advert_age_ms: u64,
}

impl From<SeenAdvert> for AdvertReport {
    fn from(seen: SeenAdvert) -> Self {
        AdvertReport {
            address: seen.address,
            priority: seen.priority,
            advert_interval_ms: seen.interval.as_millis() as u64,
            advert_age_ms: seen.age.as_millis() as u64,
        }
    }
}

/// What the daemon asks of the shell. Status is pulled, not pushed: building reports for a
/// hundred routers at every advert would cost more than all the VRRP work itself.
enum Request {
    Status(oneshot::Sender<Vec<RouterReport>>),
    Shutdown(oneshot::Sender<()>),
    /// Answered once the state record is on disk as the routers are now.
    FlushRecord(oneshot::Sender<()>),
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

    /// Returns once the state record is on disk as the routers are now (before a re-exec:
    /// the new binary resumes from it).
    pub async fn flush_record(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.requests.send(Request::FlushRecord(done_tx)).await.is_ok() {
            let _ = done_rx.await;
        }
    }

    /// Relinquishes every router (priority-0 advert, VIPs removed) and returns when done.
    pub async fn shutdown(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.requests.send(Request::Shutdown(done_tx)).await.is_ok() {
            let _ = done_rx.await;
        }
    }
}

/// Starts the routers; `health` is nginx's health from the supervisor. They run on a thread of
/// their own with its own runtime, at real-time priority when the routers' advert intervals ask
/// for it ([`RouterSpec::wants_realtime`]): at 20 ms adverts a master whose adverts wait 73 ms
/// for a CPU behind a busy machine's other processes is taken over from while alive.
pub async fn spawn(
    specs: Vec<RouterSpec>,
    health: watch::Receiver<Health>,
    state_dir: &std::path::Path,
    drain: Option<DrainHandle>,
) -> Result<VrrpHandle, VrrpError> {
    let realtime = RouterSpec::wants_realtime(&specs);
    let state_dir = state_dir.to_path_buf();
    let (started_tx, started_rx) = oneshot::channel();
    let (finished_tx, finished_rx) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("nginx-ha-vrrp".into())
        .spawn(move || {
            if realtime {
                set_realtime_priority();
            }
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = started_tx.send(Err(VrrpError::Thread(e)));
                    return;
                }
            };
            runtime.block_on(async move {
                let (requests_tx, requests_rx) = mpsc::channel(8);
                match Shell::start(specs, &health, &state_dir, drain).await {
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                    }
                    Ok((shell, events, received_rx)) => {
                        if started_tx.send(Ok(requests_tx)).is_ok() {
                            shell.run(health, events, received_rx, requests_rx).await;
                        }
                    }
                }
            });
            // Not sent when the shell panicked: the sender is dropped while unwinding.
            let _ = finished_tx.send(());
        })
        .map_err(VrrpError::Thread)?;
    // The owner sees the thread's end as this task's: a panic there is a panic here.
    let task = tokio::spawn(async move {
        if finished_rx.await.is_err() {
            panic!("the VRRP thread panicked (its message is logged above)");
        }
    });
    match started_rx.await {
        Ok(Ok(requests)) => Ok(VrrpHandle { requests, task }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(VrrpError::Thread(std::io::Error::other("the VRRP thread ended while starting"))),
    }
}

/// SCHED_FIFO for the calling thread (threads and processes it starts get the normal policy:
/// SCHED_RESET_ON_FORK), or a warning saying why not and what it costs.
fn set_realtime_priority() {
    let param = libc::sched_param { sched_priority: REALTIME_PRIORITY };
    // SAFETY: sched_setscheduler(2) on the calling thread (pid 0) with a valid sched_param.
    let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param) };
    if result == 0 {
        info!(priority = REALTIME_PRIORITY, "VRRP thread runs at SCHED_FIFO (advert intervals under 1 s)");
    } else {
        warn!(
            "cannot run the VRRP thread at SCHED_FIFO: {}; on a loaded machine adverts under 1 s may be late enough for a false takeover (nginx-ha needs CAP_SYS_NICE and a cgroup that allows real-time tasks)",
            std::io::Error::last_os_error()
        );
    }
}

impl Shell {
    async fn start(
        specs: Vec<RouterSpec>,
        health: &watch::Receiver<Health>,
        state_dir: &std::path::Path,
        drain: Option<DrainHandle>,
    ) -> Result<(Shell, net::NetEvents, mpsc::UnboundedReceiver<(SocketKey, Received)>), VrrpError> {
        let net = Net::new().await.map_err(VrrpError::Netlink)?;
        let events = net::events().map_err(VrrpError::Netlink)?;
        let recorder = Recorder::new(state_dir);
        let previous = match recorder.load() {
            Ok(previous) => previous,
            // Before any address is listed or removed: the VIPs stay as they are.
            Err(refused @ RecordError::Refused(_)) => return Err(VrrpError::Record(refused)),
            Err(e) => {
                warn!("{e}");
                None
            }
        };
        let previous = previous.map(|previous| (previous.record, previous.elapsed));
        let tagged = match net.addresses_with_proto(OWNER_PROTO).await {
            Ok(tagged) => tagged,
            Err(e) => {
                error!("cannot list addresses to remove stale VIPs: {e}");
                Vec::new()
            }
        };
        let notifiers = specs
            .iter()
            .map(|spec| {
                spec.notify
                    .clone()
                    .map(|program| Notifier::spawn(spec.router.name.clone(), program, spec.notify_timeout))
            })
            .collect();
        let mut engine = Engine::new(specs, previous, *health.borrow(), Instant::now().into_std());
        let (received_tx, received_rx) = mpsc::unbounded_channel();
        let first = engine.start(tagged);
        let mut shell = Shell {
            net,
            engine,
            notifiers,
            sockets: HashMap::new(),
            readers: JoinSet::new(),
            reader_handles: HashMap::new(),
            received_tx,
            record: RecordWriter::spawn(recorder).map_err(VrrpError::Thread)?,
            stopping: None,
            stopped: false,
            socket_error: None,
            drain,
        };
        shell.carry_out(first).await;
        // Without raw sockets no router can ever run: say so at once rather than wait.
        if let Some(error) = shell.socket_error.take() {
            return Err(error);
        }
        Ok((shell, events, received_rx))
    }
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

struct Shell {
    net: Net,
    engine: Engine,
    /// One per router, in the engine's order.
    notifiers: Vec<Option<Notifier>>,
    sockets: HashMap<SocketKey, Arc<VrrpSocket>>,
    /// One receive task per socket, owned here: they end with the shell, or when the engine
    /// closes their socket (aborted through `reader_handles`).
    readers: JoinSet<()>,
    reader_handles: HashMap<SocketKey, tokio::task::AbortHandle>,
    received_tx: mpsc::UnboundedSender<(SocketKey, Received)>,
    /// The state record, written on a thread of its own.
    record: RecordWriter,
    /// Planned stop under way: answered once the engine says every router has handed over.
    stopping: Option<oneshot::Sender<()>>,
    stopped: bool,
    /// The first socket that could not be opened (no CAP_NET_RAW), for `spawn` to report.
    socket_error: Option<VrrpError>,
    /// The connection drain, when a router has one (`drain_ms`).
    drain: Option<DrainHandle>,
}

impl Shell {
    async fn run(
        mut self,
        mut health: watch::Receiver<Health>,
        mut events: net::NetEvents,
        mut received: mpsc::UnboundedReceiver<(SocketKey, Received)>,
        mut requests: mpsc::Receiver<Request>,
    ) {
        let current = *health.borrow_and_update();
        self.handle(Event::Health(current)).await;
        let mut events_open = true;
        while !self.stopped {
            let deadline = self.engine.poll_timeout();
            tokio::select! {
                Some(request) = requests.recv() => match request {
                    Request::Status(reply) => { let _ = reply.send(self.engine.reports(now())); }
                    // The writer answers the daemon itself: the routers go on meanwhile.
                    Request::FlushRecord(done) => self.record.flush_then(done),
                    Request::Shutdown(done) => {
                        self.stopping = Some(done);
                        self.handle(Event::Shutdown).await;
                    }
                    #[cfg(debug_assertions)]
                    Request::Fail => panic!("failpoint: the VRRP task fails"),
                },
                changed = health.changed() => {
                    // A closed channel means the supervisor is gone: nothing serves any more.
                    let current = if changed.is_ok() { *health.borrow_and_update() } else { Health::Unhealthy };
                    self.handle(Event::Health(current)).await;
                    if changed.is_err() {
                        health = watch::channel(Health::Unhealthy).1;
                    }
                }
                Some((socket, packet)) = received.recv() => self.packet(socket, packet).await,
                Some(ended) = self.readers.join_next() => {
                    // A receive loop never ends on its own (it is aborted when its socket is
                    // closed): without it a router is deaf.
                    if !ended.as_ref().is_err_and(|e| e.is_cancelled()) {
                        error!("a VRRP receive task ended: {ended:?}");
                        return;
                    }
                }
                event = events.next(), if events_open => match event {
                    Some(event) => {
                        // A takeover elsewhere on the host can add a thousand addresses at
                        // once: the engine takes the whole burst, then asks for one re-read.
                        self.handle(Event::Net(event)).await;
                        while let Some(Some(event)) = events.next().now_or_never() {
                            self.handle(Event::Net(event)).await;
                        }
                        self.handle(Event::BurstEnd).await;
                    }
                    None => {
                        warn!("netlink event stream ended (kernel dropped notifications); re-reading links");
                        self.resync().await;
                        match net::events() {
                            Ok(fresh) => events = fresh,
                            Err(e) => { error!("cannot resubscribe to netlink events: {e}"); events_open = false; }
                        }
                    }
                },
                _ = sleep_until(deadline) => {
                    self.take_queued(&mut received).await;
                    let actions = self.engine.handle_timeout(now());
                    self.carry_out(actions).await;
                }
            }
        }
    }

    async fn packet(&mut self, socket: SocketKey, packet: Received) {
        let event = Event::Packet {
            socket,
            src: packet.src,
            dst: packet.dst,
            hop_limit: packet.hop_limit,
            payload: &packet.payload,
        };
        let actions = self.engine.handle(now(), event);
        self.carry_out(actions).await;
    }

    /// Before a timer: every packet that has already arrived, in the channel or still in a
    /// socket, goes to the engine first. After a stall of this process (a loaded machine) the
    /// timer and the adverts that came meanwhile are ready at once, and the adverts are the
    /// older events: a master's advert must reset the master-down timer, not lose to it (which
    /// would be a false takeover at short advert intervals).
    async fn take_queued(&mut self, received: &mut mpsc::UnboundedReceiver<(SocketKey, Received)>) {
        let mut queued = Vec::new();
        while let Ok(item) = received.try_recv() {
            queued.push(item);
        }
        for (&key, socket) in &self.sockets {
            // Bounded: a socket that keeps failing is its receive task's to report.
            for _ in 0..QUEUED_PER_SOCKET {
                match socket.try_recv() {
                    Ok(Some(packet)) => queued.push((key, packet)),
                    Ok(None) => break,
                    Err(_) => continue,
                }
            }
        }
        for (socket, packet) in queued {
            self.packet(socket, packet).await;
        }
    }

    async fn handle(&mut self, event: Event<'_>) {
        let actions = self.engine.handle(now(), event);
        self.carry_out(actions).await;
    }

    /// After lost netlink notifications: the links and addresses may have changed meanwhile.
    /// Every link is reported as if it had changed, and every address as if added.
    async fn resync(&mut self) {
        match self.net.links().await {
            Ok(links) => {
                for link in links {
                    self.handle(Event::Net(NetEvent::LinkChanged { index: link.index, name: link.name, up: link.up }))
                        .await;
                }
            }
            Err(e) => error!("cannot re-read the links: {e}"),
        }
        match self.net.all_addresses().await {
            Ok(addresses) => {
                for address in addresses {
                    self.handle(Event::Net(NetEvent::AddressAdded(address))).await;
                }
            }
            Err(e) => error!("cannot re-read the addresses: {e}"),
        }
        self.handle(Event::BurstEnd).await;
    }

    /// Carries out the engine's actions in order; the answer to a lookup goes back to the
    /// engine at once, and what it returns is done before the rest.
    async fn carry_out(&mut self, actions: Vec<Action>) {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            if let Some(answer) = self.perform(action).await {
                let more = self.engine.handle(now(), answer);
                for action in more.into_iter().rev() {
                    queue.push_front(action);
                }
            }
        }
    }

    fn name(&self, router: RouterId) -> &str {
        &self.engine.spec(router).router.name
    }

    async fn perform(&mut self, action: Action) -> Option<Event<'static>> {
        match action {
            Action::Attach { router, interface, family, tracked, drain } => {
                let link = match self.net.link(&interface).await {
                    Ok(link) => link,
                    Err(e) => {
                        return Some(Event::AttachFailed { router, problem: format!("interface {interface}: {e}") });
                    }
                };
                if drain && let Some(handle) = &self.drain {
                    handle.prepare(link.clone()).await;
                }
                if let Err(e) = self.open_socket(&link, family) {
                    let problem = e.to_string();
                    self.socket_error.get_or_insert(e);
                    return Some(Event::AttachFailed { router, problem });
                }
                let addresses = match self.net.addresses(link.index).await {
                    Ok(addresses) => addresses,
                    Err(e) => return Some(Event::AttachFailed { router, problem: e.to_string() }),
                };
                let mut states = Vec::with_capacity(tracked.len());
                for name in tracked {
                    let up = self.net.link(&name).await.is_ok_and(|l| l.up);
                    states.push((name, up));
                }
                Some(Event::Attached { router, link, addresses, tracked: states })
            }
            Action::CloseSocket(key) => {
                self.sockets.remove(&key);
                if let Some(reader) = self.reader_handles.remove(&key) {
                    reader.abort();
                }
                None
            }
            Action::SetSource { socket, source } => {
                if let Some(socket) = self.sockets.get(&socket)
                    && let Err(e) = socket.set_source(source)
                {
                    warn!("cannot set the advert source to {source}: {e}");
                }
                None
            }
            Action::DumpAddresses { ifindex } => match self.net.addresses(ifindex).await {
                Ok(addresses) => Some(Event::Addresses { ifindex, addresses }),
                Err(e) => {
                    warn!(ifindex, "cannot read the addresses: {e}");
                    None
                }
            },
            Action::Send { router, socket, dst, priority, payload } => {
                if let Some(socket) = self.sockets.get(&socket)
                    && let Err(e) = socket.send(dst, &payload).await
                {
                    warn!(router = %self.name(router), %dst, priority, "cannot send advert: {e}");
                }
                None
            }
            Action::AddVips { router, ifindex, vips } => {
                if let Some(drain) = &self.drain {
                    drain.settle().await;
                }
                change_vips(&self.net, self.name(router), ifindex, vips, VipChange::Add).await;
                // Before any announcement: a drain of ours stops guarding the VIPs' ARP.
                if let Some(drain) = &self.drain {
                    drain.reclaimed(router.0).await;
                }
                None
            }
            Action::RemoveVips { router, ifindex, vips } => {
                change_vips(&self.net, self.name(router), ifindex, vips, VipChange::Remove).await;
                if let Some(drain) = &self.drain {
                    drain.released(router.0).await;
                }
                None
            }
            Action::HandOverVips { router, link, vips, to, own_v4, window } => {
                let name = self.name(router).to_owned();
                let started = Instant::now();
                let mut held = false;
                if let Some(drain) = &self.drain {
                    let vrid = self.engine.spec(router).router.vrid;
                    let hand_over = drain::HandOver {
                        router: router.0,
                        name: name.clone(),
                        vrid,
                        link: link.clone(),
                        vips: vips.clone(),
                        to,
                        own_v4,
                        window,
                    };
                    match drain.hold(hand_over).await {
                        Ok(()) => held = true,
                        Err(e) => warn!(router = %name, "the VIPs leave without a connection drain: {e}"),
                    }
                }
                // The addresses go first (the new master's claim waits for our confirmation only
                // so long); the connections are listed and sent after, still before it.
                let held_at = started.elapsed();
                change_vips(&self.net, &name, link.index, vips, VipChange::Remove).await;
                let removed_at = started.elapsed();
                if let Some(drain) = &self.drain {
                    if held {
                        drain.send_flows(router.0).await;
                    }
                    drain.released(router.0).await;
                }
                debug!(router = %name, ?held_at, ?removed_at, flows_sent_at = ?started.elapsed(), "hand-over timing");
                None
            }
            Action::AcceptDrain { router, link, vips, from, window } => {
                if let Some(drain) = &self.drain {
                    let name = self.name(router).to_owned();
                    let vrid = self.engine.spec(router).router.vrid;
                    drain.accept(drain::Accept { router: router.0, name, vrid, link, vips, from, window }).await;
                }
                None
            }
            Action::RemoveLeftover { address } => {
                warn!(address = %address.address, ifindex = address.ifindex, "removing a VIP left behind by an earlier nginx-ha");
                if let Err(e) = self.net.del_address(address.ifindex, address.address).await {
                    error!("{e}");
                }
                None
            }
            Action::Announce { router, interface, addresses } => {
                // A fresh MAC in case the link was recreated; a burst is only a few packets.
                let link = self.net.link(&interface.name).await.unwrap_or(interface);
                if let Err(e) = net::announce(&link, &addresses).await {
                    warn!(router = %self.name(router), "gratuitous ARP / NA failed: {e}");
                }
                None
            }
            Action::StateChanged { router, from, to, reason } => {
                info!(router = %self.name(router), %from, %to, "VRRP state change: {reason}");
                if let Some(notifier) = &self.notifiers[router.0] {
                    notifier.notify(to);
                }
                None
            }
            Action::SaveRecord(record) => {
                self.record.save(record);
                None
            }
            Action::Heartbeat => {
                self.record.heartbeat();
                None
            }
            Action::Log { router, line } => {
                self.log(router, line);
                None
            }
            Action::Stopped => {
                // The routers' last states are on disk before the daemon goes on to exit.
                let _ = self.record.flush().await;
                if let Some(done) = self.stopping.take() {
                    let _ = done.send(());
                }
                self.stopped = true;
                None
            }
        }
    }

    fn log(&self, router: RouterId, line: LogLine) {
        let spec = self.engine.spec(router);
        let router = spec.router.name.as_str();
        match line {
            LogLine::Waiting { problem } => error!(router, "{problem}; the router waits for it"),
            LogLine::Starting { interface, primary } => info!(router, %interface, %primary, "VRRP router starting"),
            LogLine::PreviouslyMaster { elapsed } => {
                info!(router, elapsed_ms = elapsed.as_millis() as u64, "the previous nginx-ha left this router MASTER")
            }
            LogLine::LinkChanged { interface, up } => info!(router, %interface, up, "interface link changed"),
            LogLine::TrackedLinkChanged { interface, up } => info!(router, %interface, up, "tracked interface changed"),
            LogLine::TrackedLinkDown { interface } => warn!(router, "tracked interface {interface} is down"),
            LogLine::Following { interface, index } => {
                info!(router, %interface, index, "the interface was created again: following it")
            }
            LogLine::VipRemoved { address } => {
                warn!(router, %address, "a VIP was removed behind our back; adding it again")
            }
            // The router emits each peer's notice at most once a minute.
            LogLine::Notice(notice @ (Notice::ForeignVip { .. } | Notice::StaleVips { .. })) => {
                warn!(router, interface = %spec.interface, "{notice}")
            }
            LogLine::Notice(notice @ Notice::VipMismatch { .. }) => warn!(
                router,
                "{notice} (not fatal; both nodes should list the same virtual_ips; repeats are logged once a minute)"
            ),
            LogLine::Notice(notice) => warn!(router, "{notice} (repeats are logged once a minute)"),
        }
    }

    /// Opens the socket for `link` and `family` unless it is open, with its receive task.
    fn open_socket(&mut self, link: &LinkInfo, family: Family) -> Result<(), VrrpError> {
        let key = (link.index, family);
        if self.sockets.contains_key(&key) {
            return Ok(());
        }
        let socket = Arc::new(VrrpSocket::open(link.index, &link.name, family, true).map_err(VrrpError::Socket)?);
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
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
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
