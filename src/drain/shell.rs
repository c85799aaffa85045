//! The drain task: carries out what the pure core (`core.rs`) decides. It owns the UDP sockets
//! of the drain port, the BPF programs and maps (`kernel.rs`), the local routes that keep a VIP
//! accepted on its old holder, and lists the TCP connections on the VIPs (procfs).
//! The VRRP shell drives it through [`DrainHandle`]; the daemon owns the task.

use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use ipnet::IpNet;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt};
use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tokio::io::{Interest, unix::AsyncFd};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::core::{Command, Drains, Input, LogLine, Output, TTL};
use super::kernel::{Kernel, KernelError};
use super::protocol::Flow;
use crate::control::status::{DrainEntry, DrainReport};
use crate::net::{DRAIN_PROTO, LinkInfo, Net, NetError};

/// `[daemon] drain_port`'s default: VRRP is IP protocol 112.
pub const DEFAULT_PORT: u16 = 7112;

#[derive(Debug, Error)]
pub enum DrainError {
    #[error("{0}")]
    Kernel(#[from] KernelError),
    #[error("{0}")]
    Net(#[from] NetError),
    #[error("the drain task is gone")]
    Gone,
}

/// The old holder's side: `router`'s VIPs are about to leave `link` for the node at `to`.
#[derive(Debug, Clone)]
pub struct HandOver {
    pub router: usize,
    pub name: String,
    pub vrid: u8,
    pub link: LinkInfo,
    pub vips: Vec<IpNet>,
    pub to: IpAddr,
    /// Our own IPv4 address on the link: what our ARP packets say instead of a guarded VIP.
    pub own_v4: Option<Ipv4Addr>,
    pub window: Duration,
}

/// The new holder's side: `router` took its VIPs over from the live master at `from`.
#[derive(Debug, Clone)]
pub struct Accept {
    pub router: usize,
    pub name: String,
    pub vrid: u8,
    pub link: LinkInfo,
    pub vips: Vec<IpNet>,
    pub from: IpAddr,
    pub window: Duration,
}

enum Request {
    /// Attach the tc programs to a router's interface ahead of its first hand-over.
    Prepare(LinkInfo),
    Hold(HandOver, oneshot::Sender<Result<(), DrainError>>),
    /// Answered once the held router's connections are listed and sent.
    SendFlows(usize, oneshot::Sender<()>),
    Accept(Accept),
    /// Answered once every datagram already received is handled.
    Settle(oneshot::Sender<()>),
    Reclaimed(usize, oneshot::Sender<()>),
    Released(usize),
    Status(oneshot::Sender<DrainReport>),
    /// Answered when no old-holder drain is under way.
    Idle(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct DrainHandle {
    requests: mpsc::Sender<Request>,
}

impl DrainHandle {
    /// The first half of a hand-over: holds the VIPs locally (ARP guard, local routes); returns
    /// once they are, so the addresses can go. An error: the VIPs are not held, and leave as
    /// without a drain.
    pub async fn hold(&self, hand_over: HandOver) -> Result<(), DrainError> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request::Hold(hand_over, reply)).await.map_err(|_| DrainError::Gone)?;
        answer.await.map_err(|_| DrainError::Gone)?
    }

    /// The second half, once the addresses are gone: lists the held router's connections and
    /// sends them to the new holder; returns once they are sent, so that they arrive before the
    /// confirmation advert that lets the new holder announce the VIPs.
    pub async fn send_flows(&self, router: usize) {
        self.ask(|reply| Request::SendFlows(router, reply)).await;
    }

    /// Makes `link` ready for drains (the tc programs attached) ahead of the first hand-over,
    /// which then only fills maps: attaching takes tens of milliseconds, longer than a new
    /// master waits for the old one to let the VIPs go. A failure is logged; a hand-over on
    /// that link tries again.
    pub async fn prepare(&self, link: LinkInfo) {
        let _ = self.requests.send(Request::Prepare(link)).await;
    }

    pub async fn accept(&self, accept: Accept) {
        let _ = self.requests.send(Request::Accept(accept)).await;
    }

    /// Before the new holder adds the VIPs: the old holder's flows, sent before it let them go,
    /// are in the kernel's pass-through by the time the addresses are.
    pub async fn settle(&self) {
        self.ask(Request::Settle).await;
    }

    /// `router` added its VIPs as addresses again; returns once its drain, if any, holds
    /// nothing locally any more (its own gratuitous ARP must not meet the ARP guard).
    pub async fn reclaimed(&self, router: usize) {
        self.ask(|reply| Request::Reclaimed(router, reply)).await;
    }

    /// Sends a request and waits for its answer (none if the task is gone).
    async fn ask(&self, request: impl FnOnce(oneshot::Sender<()>) -> Request) {
        let (reply, answer) = oneshot::channel();
        if self.requests.send(request(reply)).await.is_ok() {
            let _ = answer.await;
        }
    }

    pub async fn released(&self, router: usize) {
        let _ = self.requests.send(Request::Released(router)).await;
    }

    pub async fn status(&self) -> DrainReport {
        let (reply, answer) = oneshot::channel();
        if self.requests.send(Request::Status(reply)).await.is_err() {
            return DrainReport::default();
        }
        answer.await.unwrap_or_default()
    }

    /// Returns when no connection is draining from this node any more.
    pub async fn idle(&self) {
        let (reply, answer) = oneshot::channel();
        if self.requests.send(Request::Idle(reply)).await.is_ok() {
            let _ = answer.await;
        }
    }
}

/// A UDP socket of the drain port: sends with TTL 255, reports the TTL of what it receives.
struct DrainSocket {
    fd: AsyncFd<Socket>,
}

impl DrainSocket {
    fn open(family: Domain, port: u16) -> io::Result<DrainSocket> {
        let socket = Socket::new(family, Type::DGRAM, Some(Protocol::UDP))?;
        let any: SocketAddr = if family == Domain::IPV6 {
            socket.set_only_v6(true)?;
            socket.set_unicast_hops_v6(u32::from(TTL))?;
            setsockopt(&socket, sockopt::Ipv6RecvHopLimit, &true)?;
            (Ipv6Addr::UNSPECIFIED, port).into()
        } else {
            socket.set_ttl_v4(u32::from(TTL))?;
            setsockopt(&socket, sockopt::Ipv4RecvTtl, &true)?;
            (Ipv4Addr::UNSPECIFIED, port).into()
        };
        socket.set_reuse_address(true)?;
        socket.bind(&any.into())?;
        socket.set_nonblocking(true)?;
        // SAFETY: the Socket owns its descriptor, which stays open and the same until the
        // AsyncFd (which owns the Socket) is dropped.
        Ok(DrainSocket { fd: unsafe { AsyncFd::register(socket) }? })
    }

    async fn recv(&self, buffer: &mut [u8]) -> io::Result<(usize, IpAddr, u8)> {
        self.fd.async_io(Interest::READABLE, |socket| receive(socket, buffer)).await
    }

    /// What is queued already, without waiting.
    fn try_recv(&self, buffer: &mut [u8]) -> io::Result<(usize, IpAddr, u8)> {
        receive(self.fd.get_ref(), buffer)
    }

    fn send(&self, to: SocketAddr, bytes: &[u8]) -> io::Result<()> {
        self.fd.get_ref().send_to_vectored(&[IoSlice::new(bytes)], &to.into()).map(drop)
    }
}

fn receive(socket: &Socket, buffer: &mut [u8]) -> io::Result<(usize, IpAddr, u8)> {
    let mut cmsg = nix::cmsg_space!(libc::c_int);
    let mut iov = [IoSliceMut::new(buffer)];
    let message = recvmsg::<SockaddrStorage>(socket.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())?;
    let mut ttl = 0;
    for control in message.cmsgs()? {
        if let ControlMessageOwned::Ipv4Ttl(value) | ControlMessageOwned::Ipv6HopLimit(value) = control {
            ttl = u8::try_from(value).unwrap_or(0);
        }
    }
    let from = message.address.and_then(|address| {
        address
            .as_sockaddr_in()
            .map(|a| IpAddr::V4(a.ip()))
            .or_else(|| address.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())))
    });
    let from = from.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "a datagram without a source"))?;
    Ok((message.bytes, from, ttl))
}

/// The TCP connections on `vips` that carry data or may yet: not listening, not TIME_WAIT.
fn list_flows(vips: &[IpAddr]) -> Vec<Flow> {
    use procfs::net::TcpState;
    let mut flows = Vec::new();
    for entries in [procfs::net::tcp(), procfs::net::tcp6()] {
        let entries = match entries {
            Ok(entries) => entries,
            Err(e) => {
                warn!("cannot list the TCP connections to drain: {e}");
                continue;
            }
        };
        for entry in entries {
            if matches!(entry.state, TcpState::Listen | TcpState::TimeWait | TcpState::Close) {
                continue;
            }
            // A dual-stack listener reports IPv4 connections as IPv4-mapped IPv6.
            let unmap = |address: SocketAddr| match address.ip() {
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    Some(v4) => SocketAddr::new(IpAddr::V4(v4), address.port()),
                    None => address,
                },
                IpAddr::V4(_) => address,
            };
            let (vip, client) = (unmap(entry.local_address), unmap(entry.remote_address));
            if vips.contains(&vip.ip()) {
                flows.push(Flow { client, vip });
            }
        }
    }
    flows
}

struct Shell {
    core: Drains,
    kernel: Result<Kernel, KernelError>,
    net: Net,
    v4: Option<DrainSocket>,
    v6: Option<DrainSocket>,
    port: u16,
    names: HashMap<usize, String>,
    /// Our MAC on each interface a new-holder drain passes flows through.
    own_macs: HashMap<u32, [u8; 6]>,
    idle_waiters: Vec<oneshot::Sender<()>>,
    next_session: u32,
    /// Routers whose VIPs are held locally and whose flows go out next (`send_flows`).
    held: HashMap<usize, Command>,
}

/// Starts the drain task on `port`. Without the BPF program (not built, no privileges, an old
/// kernel) it still runs, refuses hand-overs (the VIPs leave as without a drain) and says why.
pub async fn spawn(port: u16) -> Result<(DrainHandle, tokio::task::JoinHandle<()>), DrainError> {
    let net = Net::new().await?;
    remove_stale_routes(&net).await;
    let kernel = Kernel::load();
    if let Err(why) = &kernel {
        error!("connection drains are off: {why}");
    }
    let open = |domain| match DrainSocket::open(domain, port) {
        Ok(socket) => Some(socket),
        Err(e) => {
            error!(port, "cannot open the drain port ({e}): drains to this node are off ([daemon] drain_port)");
            None
        }
    };
    let (v4, v6) = (open(Domain::IPV4), open(Domain::IPV6));
    let (requests, inbox) = mpsc::channel(32);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.subsec_nanos());
    let shell = Shell {
        core: Drains::new(),
        kernel,
        net,
        v4,
        v6,
        port,
        names: HashMap::new(),
        own_macs: HashMap::new(),
        idle_waiters: Vec::new(),
        next_session: seed,
        held: HashMap::new(),
    };
    Ok((DrainHandle { requests }, tokio::spawn(shell.run(inbox))))
}

/// Drain routes a killed nginx-ha left: nobody drains through them any more.
async fn remove_stale_routes(net: &Net) {
    match net.local_routes_with_proto(DRAIN_PROTO).await {
        Ok(routes) => {
            for route in routes {
                warn!(address = %route.destination, "removing a drain route left behind by an earlier nginx-ha");
                if let Err(e) = net.del_drain_route(route.destination, route.oif.unwrap_or(0)).await {
                    error!("{e}");
                }
            }
        }
        Err(e) => error!("cannot list the routes to remove stale drain routes: {e}"),
    }
}

async fn recv_on(socket: &Option<DrainSocket>, buffer: &mut [u8]) -> io::Result<(usize, IpAddr, u8)> {
    match socket {
        Some(socket) => socket.recv(buffer).await,
        None => std::future::pending().await,
    }
}

impl Shell {
    async fn run(mut self, mut inbox: mpsc::Receiver<Request>) {
        let mut buffer = vec![0u8; 2048];
        let mut buffer6 = vec![0u8; 2048];
        loop {
            let deadline = self.core.poll_timeout().map(Instant::from_std);
            tokio::select! {
                // Commands first: an Accept is in before the datagrams it makes welcome.
                biased;
                request = inbox.recv() => match request {
                    Some(request) => self.request(request, &mut buffer).await,
                    None => break,
                },
                received = recv_on(&self.v4, &mut buffer) => self.received(received, &buffer).await,
                received = recv_on(&self.v6, &mut buffer6) => self.received(received, &buffer6).await,
                _ = sleep_until(deadline) => self.feed(Input::Timer).await,
            }
            if !self.core.draining() {
                for waiter in self.idle_waiters.drain(..) {
                    let _ = waiter.send(());
                }
            }
        }
        // The daemon is gone: let nothing stay held or passed through.
        let outputs = self.core.shutdown(now());
        self.carry_out(outputs).await;
    }

    async fn request(&mut self, request: Request, buffer: &mut [u8]) {
        match request {
            Request::Prepare(link) => {
                if let Ok(kernel) = self.kernel.as_mut()
                    && let Err(e) = kernel.attach(link.index, &link.name)
                {
                    warn!(interface = %link.name, "cannot make the interface ready for connection drains: {e}");
                }
            }
            Request::Hold(hand_over, reply) => {
                let result = self.hold(hand_over).await;
                let _ = reply.send(result);
            }
            Request::SendFlows(router, reply) => {
                if let Some(command) = self.held.remove(&router) {
                    self.feed(Input::Command(command)).await;
                }
                let _ = reply.send(());
            }
            Request::Accept(accept) => self.accept(accept).await,
            Request::Settle(reply) => {
                let mut queued = Vec::new();
                for socket in [&self.v4, &self.v6].into_iter().flatten() {
                    while let Ok((length, from, ttl)) = socket.try_recv(buffer) {
                        queued.push((buffer[..length].to_vec(), from, ttl));
                    }
                }
                for (bytes, from, ttl) in queued {
                    self.feed(Input::Datagram { from, ttl, bytes: &bytes }).await;
                }
                let _ = reply.send(());
            }
            Request::Reclaimed(router, reply) => {
                self.feed(Input::Command(Command::Reclaimed { router })).await;
                let _ = reply.send(());
            }
            Request::Released(router) => self.feed(Input::Command(Command::Released { router })).await,
            Request::Status(reply) => {
                let _ = reply.send(self.report());
            }
            Request::Idle(reply) => self.idle_waiters.push(reply),
        }
    }

    fn report(&self) -> DrainReport {
        let now = now();
        let counters = self.kernel.as_ref().map(Kernel::counters).unwrap_or_default();
        DrainReport {
            unavailable: self.kernel.as_ref().err().map(ToString::to_string),
            drains: self
                .core
                .status(now)
                .into_iter()
                .map(|status| DrainEntry {
                    router: self.names.get(&status.router).cloned().unwrap_or_default(),
                    role: status.role.to_owned(),
                    peer: status.peer,
                    connections: status.flows,
                    remaining_ms: status.remaining.as_millis() as u64,
                })
                .collect(),
            forwarded_packets: counters.forwarded_packets,
            forwarded_connections: self.core.forwarded_flows,
            arp_requests_dropped: counters.arp_dropped,
            syns_deferred: counters.syns_deferred,
            datagrams_dropped: self.core.dropped,
        }
    }

    async fn hold(&mut self, hand_over: HandOver) -> Result<(), DrainError> {
        let kernel = self.kernel.as_mut().map_err(|why| DrainError::Kernel(why.clone()))?;
        let HandOver { router, name, vrid, link, vips, to, own_v4, window } = hand_over;
        kernel.attach(link.index, &link.name)?;
        for vip in &vips {
            if let IpAddr::V4(v4) = vip.addr() {
                kernel.guard_arp(v4, own_v4)?;
            }
        }
        for vip in &vips {
            if let Err(e) = self.net.add_drain_route(*vip, link.index).await {
                self.release_local(link.index, &vips.iter().map(IpNet::addr).collect::<Vec<_>>()).await;
                return Err(e.into());
            }
        }
        self.names.insert(router, name);
        self.next_session = self.next_session.wrapping_add(1);
        let command = Command::HandOver {
            router,
            vrid,
            ifindex: link.index,
            mac: link.mac.unwrap_or_default(),
            vips: vips.iter().map(IpNet::addr).collect(),
            to,
            window,
            session: self.next_session,
        };
        self.held.insert(router, command);
        Ok(())
    }

    async fn accept(&mut self, accept: Accept) {
        let Accept { router, name, vrid, link, vips, from, window } = accept;
        let Ok(kernel) = self.kernel.as_mut() else { return };
        if let Err(e) = kernel.attach(link.index, &link.name) {
            return error!(router = %name, "cannot pass connections through from {from}: {e}");
        }
        self.own_macs.insert(link.index, link.mac.unwrap_or_default());
        self.names.insert(router, name);
        let vips = vips.iter().map(IpNet::addr).collect();
        self.feed(Input::Command(Command::Accept { router, vrid, ifindex: link.index, vips, from, window })).await;
    }

    async fn received(&mut self, received: io::Result<(usize, IpAddr, u8)>, buffer: &[u8]) {
        match received {
            Ok((length, from, ttl)) => self.feed(Input::Datagram { from, ttl, bytes: &buffer[..length] }).await,
            Err(e) => warn!("drain port: {e}"),
        }
    }

    async fn feed(&mut self, input: Input<'_>) {
        let outputs = self.core.handle(now(), input);
        self.carry_out(outputs).await;
    }

    /// Carries out the core's outputs in order; a listing's answer goes back at once.
    async fn carry_out(&mut self, outputs: Vec<Output>) {
        let mut queue = std::collections::VecDeque::from(outputs);
        while let Some(output) = queue.pop_front() {
            match output {
                Output::Send { to, bytes } => {
                    let socket = if to.is_ipv4() { &self.v4 } else { &self.v6 };
                    if let Some(socket) = socket
                        && let Err(e) = socket.send(SocketAddr::new(to, self.port), &bytes)
                    {
                        warn!(%to, "cannot send on the drain port: {e}");
                    }
                }
                Output::ListFlows { router, vips } => {
                    let flows = list_flows(&vips);
                    let more = self.core.handle(now(), Input::Listed { router, flows });
                    for output in more.into_iter().rev() {
                        queue.push_front(output);
                    }
                }
                Output::ReleaseLocal { ifindex, vips, .. } => self.release_local(ifindex, &vips).await,
                Output::Forward { ifindex, mac, flows } => {
                    let own = self.own_macs.get(&ifindex).copied().unwrap_or_default();
                    if let Ok(kernel) = self.kernel.as_mut()
                        && let Err(e) = kernel.forward(&flows, mac, own)
                    {
                        error!("{e}");
                    }
                }
                Output::StopForwarding { flows } => {
                    if let Ok(kernel) = self.kernel.as_mut() {
                        kernel.stop_forwarding(&flows);
                    }
                }
                Output::Log(line) => self.log(line),
            }
        }
    }

    async fn release_local(&mut self, ifindex: u32, vips: &[IpAddr]) {
        for vip in vips {
            if let Err(e) = self.net.del_drain_route(IpNet::from(*vip), ifindex).await {
                error!("{e}");
            }
            if let (IpAddr::V4(v4), Ok(kernel)) = (vip, self.kernel.as_mut()) {
                kernel.unguard_arp(*v4);
            }
        }
    }

    fn log(&self, line: LogLine) {
        let name = |router: usize| self.names.get(&router).map_or("", String::as_str);
        match line {
            LogLine::Started { router, to, flows } => {
                info!(router = name(router), %to, flows, "VIPs handed over: draining their connections through the new holder")
            }
            LogLine::Ended { router, why, flows, elapsed } => {
                info!(router = name(router), flows, elapsed_ms = elapsed.as_millis() as u64, "drain over: {why}")
            }
            LogLine::Forwarding { router, from, flows } => {
                info!(router = name(router), %from, flows, "passing the old holder's connections through to it")
            }
            LogLine::ForwardingEnded { router, why, flows } => {
                info!(router = name(router), flows, "pass-through over: {why}")
            }
            LogLine::Dropped { from, why } => warn!(%from, "drain port: dropped {why}"),
            LogLine::TooManyFlows { router, dropped } => {
                warn!(
                    router = name(router),
                    dropped, "more connections than the pass-through holds; these will be reset"
                )
            }
        }
    }
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
