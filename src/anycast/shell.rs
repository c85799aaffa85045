//! The anycast shell: one task carries out the [`Announcer`]s' actions over rtnetlink, feeds
//! them nginx's health, route and address events and their deadlines, and answers the
//! daemon's requests (status, drain, shutdown).

use std::time::Duration;

use futures::StreamExt;
use ipnet::IpNet;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::announcer::{Action, Announcer, Input, Settings};
use super::stale::{self, Held, Removal};
use crate::config::{AnycastHold, Config};
use crate::control::status::AnycastReport;
use crate::net::{self, ANYCAST_ADDRESS_PROTO, LOCAL_TABLE, Net, NetEvent, OWNER_PROTO, local_route_destination};
use crate::nginx::policy::Health;

#[derive(Debug, thiserror::Error)]
pub enum AnycastError {
    #[error("cannot talk to the kernel's netlink: {0}; nginx-ha needs root (CAP_NET_ADMIN) for [[anycast]]")]
    Netlink(#[source] net::NetError),
    #[error("[[anycast]] \"{name}\": {error}")]
    Interface { name: String, error: net::NetError },
}

/// One `[[anycast]]` table, as the shell needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct AnycastSpec {
    pub name: String,
    pub addresses: Vec<IpNet>,
    pub interface: String,
    pub table: u32,
    pub restart_grace: Duration,
    pub drain: Duration,
    /// An address on `interface`, or a local route (table 255) through it; either way tagged
    /// [`ANYCAST_ADDRESS_PROTO`].
    pub hold: AnycastHold,
}

impl AnycastSpec {
    pub fn from_config(config: &Config) -> Vec<AnycastSpec> {
        config
            .anycast
            .iter()
            .map(|table| AnycastSpec {
                name: table.name.clone(),
                addresses: table.nets(),
                interface: table.interface.clone(),
                table: table.table,
                restart_grace: Duration::from_millis(table.restart_grace_ms),
                drain: Duration::from_millis(table.drain_ms),
                hold: table.hold(),
            })
            .collect()
    }
}

enum Request {
    Status(oneshot::Sender<Vec<AnycastReport>>),
    Reconfigure(Vec<AnycastSpec>),
    /// Withdraw every announcement; answer once the longest drain has passed.
    Drain(oneshot::Sender<()>),
    /// Remove routes and addresses, answer, and end the task.
    Shutdown(oneshot::Sender<()>),
}

/// The running anycast task. The daemon owns it: it must await `task` after [`shutdown`].
///
/// [`shutdown`]: AnycastHandle::shutdown
pub struct AnycastHandle {
    pub task: JoinHandle<()>,
    requests: mpsc::Sender<Request>,
}

impl AnycastHandle {
    pub async fn status(&self) -> Vec<AnycastReport> {
        let (reply, answer) = oneshot::channel();
        if self.requests.send(Request::Status(reply)).await.is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    /// Applies new `restart_grace_ms` and `drain_ms` (the reload rules reject other changes).
    pub async fn reconfigure(&self, specs: Vec<AnycastSpec>) {
        let _ = self.requests.send(Request::Reconfigure(specs)).await;
    }

    /// A planned stop: withdraws every route and returns once nginx has served `drain_ms`
    /// more (the longest of the tables); the addresses stay until [`shutdown`](Self::shutdown).
    pub async fn withdraw_and_drain(&self) {
        let (done, finished) = oneshot::channel();
        if self.requests.send(Request::Drain(done)).await.is_ok() {
            let _ = finished.await;
        }
    }

    /// Removes the routes (if still there) and then the addresses; the task ends after.
    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.requests.send(Request::Shutdown(done)).await.is_ok() {
            let _ = finished.await;
        }
    }
}

struct Slot {
    spec: AnycastSpec,
    ifindex: u32,
    announcer: Announcer,
    /// The last action on this table failed: status does not claim an announcement.
    failed: bool,
}

/// Starts the task: removes what an earlier nginx-ha left behind, adds the addresses, and
/// announces while `health` says nginx is healthy.
pub async fn spawn(specs: Vec<AnycastSpec>, health: watch::Receiver<Health>) -> Result<AnycastHandle, AnycastError> {
    let net = Net::new().await.map_err(AnycastError::Netlink)?;
    let events = net::route_events().map_err(AnycastError::Netlink)?;
    let mut slots = Vec::new();
    for spec in specs {
        let link = net
            .link(&spec.interface)
            .await
            .map_err(|error| AnycastError::Interface { name: spec.name.clone(), error })?;
        let settings =
            Settings { addresses: spec.addresses.clone(), restart_grace: spec.restart_grace, drain: spec.drain };
        slots.push(Slot { ifindex: link.index, announcer: Announcer::new(settings), spec, failed: false });
    }
    let mut shell = Shell { net, slots, drain_waiters: Vec::new() };
    shell.remove_stale().await;
    let (requests, requests_rx) = mpsc::channel(8);
    let task = tokio::spawn(shell.run(health, events, requests_rx));
    Ok(AnycastHandle { task, requests })
}

/// The anycast task is gone (it panicked): withdraw every announcement of this node, so that
/// nothing is announced that nobody looks after. The addresses stay.
pub async fn withdraw_everything() {
    let net = match Net::new().await {
        Ok(net) => net,
        Err(e) => return error!("cannot withdraw the anycast routes: {e}"),
    };
    match net.routes_with_protos(&[OWNER_PROTO]).await {
        Ok(routes) => {
            for removal in stale::announcements(&routes) {
                remove(&net, removal, "withdrawing an anycast route: the anycast task is gone").await;
            }
        }
        Err(e) => error!("cannot list the anycast routes: {e}"),
    }
}

/// Carries out one removal; `why` is logged with it.
async fn remove(net: &Net, removal: Removal, why: &str) {
    let result = match removal {
        Removal::Route { table, destination, oif } => {
            warn!(route = %destination, table, "{why}");
            net.del_route(table, destination, oif, OWNER_PROTO).await.map(drop)
        }
        Removal::LocalRoute { destination, oif } => {
            warn!(address = %destination, ifindex = oif, "{why}");
            net.del_local_route(destination, oif, ANYCAST_ADDRESS_PROTO).await.map(drop)
        }
        Removal::Address { ifindex, address } => {
            warn!(%address, ifindex, "{why}");
            net.del_address(ifindex, address).await.map(drop)
        }
    };
    if let Err(e) = result {
        error!("{e}");
    }
}

struct Shell {
    net: Net,
    slots: Vec<Slot>,
    drain_waiters: Vec<oneshot::Sender<()>>,
}

impl Shell {
    /// Removes what an earlier nginx-ha left behind ([`stale`] decides what that is).
    async fn remove_stale(&mut self) {
        let routes = match self.net.routes_with_protos(&[OWNER_PROTO, ANYCAST_ADDRESS_PROTO]).await {
            Ok(routes) => routes,
            Err(e) => {
                error!("cannot list the routes to remove stale anycast ones: {e}");
                Vec::new()
            }
        };
        let addresses = match self.net.addresses_with_proto(ANYCAST_ADDRESS_PROTO).await {
            Ok(addresses) => addresses,
            Err(e) => {
                error!("cannot list addresses to remove stale anycast addresses: {e}");
                Vec::new()
            }
        };
        let held: Vec<Held> = self
            .slots
            .iter()
            .map(|slot| Held { ifindex: slot.ifindex, hold: slot.spec.hold, addresses: &slot.spec.addresses })
            .collect();
        for removal in stale::stale(&held, &routes, &addresses) {
            let why = match removal {
                Removal::Route { .. } => "removing an anycast route left behind by an earlier nginx-ha",
                Removal::LocalRoute { .. } => "removing an anycast local route left behind by an earlier nginx-ha",
                Removal::Address { .. } => "removing an anycast address left behind by an earlier nginx-ha",
            };
            remove(&self.net, removal, why).await;
        }
    }

    async fn run(
        mut self,
        mut health: watch::Receiver<Health>,
        mut events: net::NetEvents,
        mut requests: mpsc::Receiver<Request>,
    ) {
        self.feed_all(Input::Start).await;
        let current = *health.borrow_and_update();
        self.feed_all(Input::Health(current)).await;
        let mut health_open = true;
        let mut events_open = true;
        loop {
            let deadline = self.slots.iter().filter_map(|slot| slot.announcer.next_deadline()).map(|(at, _)| at).min();
            tokio::select! {
                request = requests.recv() => match request {
                    Some(Request::Status(reply)) => { let _ = reply.send(self.reports()); }
                    Some(Request::Reconfigure(specs)) => self.reconfigure(specs),
                    Some(Request::Drain(done)) => {
                        info!("withdrawing the anycast routes before nginx stops");
                        self.feed_all(Input::Drain).await;
                        self.drain_waiters.push(done);
                        self.answer_drained();
                    }
                    Some(Request::Shutdown(done)) => {
                        self.feed_all(Input::Shutdown).await;
                        self.answer_drained();
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        // The daemon is gone without a shutdown: take everything down.
                        self.feed_all(Input::Shutdown).await;
                        return;
                    }
                },
                changed = health.changed(), if health_open => {
                    // A closed channel means the supervisor is gone: nothing serves any more.
                    let now = if changed.is_ok() { *health.borrow_and_update() } else { Health::Unhealthy };
                    health_open = changed.is_ok();
                    self.feed_all(Input::Health(now)).await;
                }
                event = events.next(), if events_open => match event {
                    Some(event) => self.net_event(event).await,
                    None => {
                        warn!("netlink event stream ended (kernel dropped notifications); re-adding the anycast state");
                        match net::route_events() {
                            Ok(fresh) => events = fresh,
                            Err(e) => { error!("cannot resubscribe to netlink events: {e}"); events_open = false; }
                        }
                        self.feed_all(Input::Resync).await;
                    }
                },
                _ = sleep_until(deadline) => {
                    self.feed_all(Input::TimerFired).await;
                    self.answer_drained();
                }
            }
        }
    }

    fn answer_drained(&mut self) {
        if self.slots.iter().all(|slot| slot.announcer.drained()) {
            for done in self.drain_waiters.drain(..) {
                let _ = done.send(());
            }
        }
    }

    fn reconfigure(&mut self, specs: Vec<AnycastSpec>) {
        for spec in specs {
            if let Some(slot) = self.slots.iter_mut().find(|slot| slot.spec.name == spec.name) {
                slot.announcer.set_timings(spec.restart_grace, spec.drain);
                slot.spec.restart_grace = spec.restart_grace;
                slot.spec.drain = spec.drain;
            }
        }
    }

    async fn net_event(&mut self, event: NetEvent) {
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            let input = match &event {
                NetEvent::RouteRemoved(route)
                    if route.table == slot.spec.table
                        && route.proto == OWNER_PROTO
                        && route.oif == Some(slot.ifindex) =>
                {
                    if slot.announcer.announced() {
                        warn!(anycast = %slot.spec.name, route = %route.destination, table = route.table, "an anycast route was removed behind our back; adding it again");
                    }
                    Input::RouteRemoved(route.destination)
                }
                NetEvent::AddressRemoved(address)
                    if slot.spec.hold == AnycastHold::Address
                        && address.ifindex == slot.ifindex
                        && slot.spec.addresses.contains(&address.address) =>
                {
                    Input::AddressRemoved(address.address)
                }
                // hold = "local-route": our local route going is the address going.
                NetEvent::RouteRemoved(route)
                    if slot.spec.hold == AnycastHold::LocalRoute
                        && route.table == LOCAL_TABLE
                        && route.local
                        && route.proto == ANYCAST_ADDRESS_PROTO
                        && route.oif == Some(slot.ifindex) =>
                {
                    let Some(&address) =
                        slot.spec.addresses.iter().find(|a| local_route_destination(**a) == route.destination)
                    else {
                        continue;
                    };
                    if slot.announcer.holds_addresses() {
                        warn!(anycast = %slot.spec.name, address = %address, "an anycast local route was removed behind our back; adding it again");
                    }
                    Input::AddressRemoved(address)
                }
                _ => continue,
            };
            self.feed(i, input).await;
        }
    }

    async fn feed_all(&mut self, input: Input) {
        for i in 0..self.slots.len() {
            self.feed(i, input).await;
        }
    }

    async fn feed(&mut self, i: usize, input: Input) {
        let now = Instant::now().into_std();
        let actions = self.slots[i].announcer.handle(input, now);
        if actions.is_empty() {
            return;
        }
        let slot = &self.slots[i];
        let (table, ifindex, hold, name) = (slot.spec.table, slot.ifindex, slot.spec.hold, slot.spec.name.clone());
        let mut failed = false;
        for action in actions {
            let result = match action {
                Action::AddAddress(address) => match hold {
                    AnycastHold::Address => {
                        self.net.add_address(ifindex, address, None, ANYCAST_ADDRESS_PROTO).await.map(drop)
                    }
                    AnycastHold::LocalRoute => {
                        self.net.add_local_route(address, ifindex, ANYCAST_ADDRESS_PROTO).await.map(drop)
                    }
                },
                Action::RemoveAddress(address) => match hold {
                    AnycastHold::Address => self.net.del_address(ifindex, address).await.map(drop),
                    AnycastHold::LocalRoute => {
                        self.net.del_local_route(address, ifindex, ANYCAST_ADDRESS_PROTO).await.map(drop)
                    }
                },
                Action::AddRoute(prefix) => self.net.add_route(table, prefix, ifindex, OWNER_PROTO).await.map(drop),
                Action::RemoveRoute(prefix) => self.net.del_route(table, prefix, ifindex, OWNER_PROTO).await.map(drop),
            };
            match result {
                Ok(()) => debug!(anycast = %name, ?action, "done"),
                Err(e) => {
                    failed = true;
                    error!(anycast = %name, "{e}");
                }
            }
        }
        let slot = &mut self.slots[i];
        slot.failed = failed;
        match input {
            Input::Health(_) | Input::TimerFired | Input::Drain | Input::Start => {
                let announced = slot.announcer.announced();
                info!(anycast = %name, announced, "{}", if announced { "announcing" } else { "withdrawn" });
            }
            _ => {}
        }
    }

    fn reports(&self) -> Vec<AnycastReport> {
        self.slots
            .iter()
            .map(|slot| AnycastReport {
                name: slot.spec.name.clone(),
                addresses: slot.spec.addresses.iter().map(ToString::to_string).collect(),
                announced: slot.announcer.announced() && !slot.failed,
            })
            .collect()
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}
