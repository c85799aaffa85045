//! **Pure** core of the connection drain: fed commands from the VRRP shell, datagrams from the
//! peer, flow listings and the time; returns what to send, what to list, which flows to pass
//! through and when to let the VIPs go for good. No syscalls, no clock (tests in core/tests.rs).
//!
//! Old holder (its router handed the VIPs to a live peer while nginx is healthy): the VIPs are
//! held locally (a local route and the ARP guard, done by the shell before the addresses went),
//! the flows on them are listed and sent to the new holder, which acknowledges. The drain ends
//! when no flow is left, when the window is over, when the router takes the VIPs back, or when
//! the new holder does not answer (it is not an nginx-ha that drains, or it died).
//!
//! New holder (its router took the VIPs from a live master): for a short while it accepts a
//! drain from exactly that master's address, with TTL 255 (sent on the link itself), for its own
//! VIPs only; then it passes those flows' packets through to the old holder until told it is
//! done, until the old holder falls silent, until its own window is over, or until it gives the
//! VIPs up itself.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::protocol::{self, Body, Family, Flow};

/// How often the old holder sends (new flows, else an empty heartbeat).
pub const HEARTBEAT: Duration = Duration::from_millis(100);
/// Every flow again this often, should a datagram have been lost.
pub const RESEND_ALL: Duration = Duration::from_secs(1);
/// The old holder falls silent this long: it died, and its flows with it; forwarding ends.
pub const SILENCE: Duration = Duration::from_secs(1);
/// The new holder does not acknowledge within this: it does not drain (keepalived, an older
/// nginx-ha, drains off) or it died; the old holder stops holding the VIPs.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long after taking the VIPs over the new holder accepts the first message of a drain.
pub const ACCEPT_WAIT: Duration = Duration::from_secs(3);
/// The kernel's flow table holds this many flows (src/drain/bpf/drain.bpf.c, drain_flows).
pub const MAX_FLOWS: usize = 65536;
/// When the old holder lists its flows, after the hand-over: early ones catch connections
/// opened in the last moments before the new holder's gratuitous ARP; then once a second.
const LIST_AFTER: [Duration; 3] = [Duration::ZERO, Duration::from_millis(100), Duration::from_millis(300)];
const LIST_EVERY: Duration = Duration::from_secs(1);

/// The hop limit every drain message is sent with, and the only one accepted (RFC 5082).
pub const TTL: u8 = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Old holder: `router`'s VIPs are held locally now and the addresses go to `to`.
    HandOver {
        router: usize,
        vrid: u8,
        ifindex: u32,
        mac: [u8; 6],
        vips: Vec<IpAddr>,
        to: IpAddr,
        window: Duration,
        session: u32,
    },
    /// New holder: `router` took its VIPs over from the live master at `from`.
    Accept { router: usize, vrid: u8, ifindex: u32, vips: Vec<IpAddr>, from: IpAddr, window: Duration },
    /// `router` added its VIPs as addresses again: its old-holder drain ends.
    Reclaimed { router: usize },
    /// `router` gave its VIPs up: its new-holder drain ends.
    Released { router: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input<'a> {
    Command(Command),
    /// A UDP datagram on the drain port, with the hop limit it arrived with.
    Datagram {
        from: IpAddr,
        ttl: u8,
        bytes: &'a [u8],
    },
    /// The answer to [`Output::ListFlows`]: the TCP connections now on the router's VIPs.
    Listed {
        router: usize,
        flows: Vec<Flow>,
    },
    /// Any deadline may have passed.
    Timer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Send {
        to: IpAddr,
        bytes: Vec<u8>,
    },
    /// List the TCP connections on `vips` (not listening, not TIME_WAIT) and answer with
    /// [`Input::Listed`].
    ListFlows {
        router: usize,
        vips: Vec<IpAddr>,
    },
    /// Old holder: stop holding the VIPs locally (the ARP guard and the local routes go).
    ReleaseLocal {
        router: usize,
        ifindex: u32,
        vips: Vec<IpAddr>,
    },
    /// New holder: pass these flows' packets through to `mac`.
    Forward {
        ifindex: u32,
        mac: [u8; 6],
        flows: Vec<Flow>,
    },
    /// New holder: pass them through no more.
    StopForwarding {
        flows: Vec<Flow>,
    },
    Log(LogLine),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogLine {
    Started {
        router: usize,
        to: IpAddr,
        flows: usize,
    },
    Ended {
        router: usize,
        why: EndReason,
        flows: usize,
        elapsed: Duration,
    },
    Forwarding {
        router: usize,
        from: IpAddr,
        flows: usize,
    },
    ForwardingEnded {
        router: usize,
        why: EndReason,
        flows: usize,
    },
    /// A datagram no drain expects, or one that does not decode; `why` says which.
    Dropped {
        from: IpAddr,
        why: String,
    },
    TooManyFlows {
        router: usize,
        dropped: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    NoFlowsLeft,
    WindowOver,
    Reclaimed,
    Released,
    PeerDoesNotDrain,
    PeerSilent,
    OldHolderDone,
    OldHolderSilent,
    Stopping,
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EndReason::NoFlowsLeft => "no connection to the VIPs is left",
            EndReason::WindowOver => "the drain window (drain_ms) is over",
            EndReason::Reclaimed => "this node holds the VIPs again",
            EndReason::Released => "this node gave the VIPs up",
            EndReason::PeerDoesNotDrain => {
                "the new holder did not acknowledge (not an nginx-ha with drains on, or the drain port is blocked)"
            }
            EndReason::PeerSilent => "the new holder stopped answering",
            EndReason::OldHolderDone => "the old holder has no connection left",
            EndReason::OldHolderSilent => "the old holder fell silent (it stopped or died)",
            EndReason::Stopping => "nginx-ha is stopping",
        })
    }
}

/// The old holder's side of one router's drain.
#[derive(Debug)]
struct Outgoing {
    router: usize,
    vrid: u8,
    ifindex: u32,
    mac: [u8; 6],
    vips: Vec<IpAddr>,
    family: Family,
    to: IpAddr,
    session: u32,
    seq: u32,
    started: Instant,
    deadline: Instant,
    /// Flows from the latest listing; sent ones in `sent`.
    flows: BTreeSet<Flow>,
    sent: BTreeSet<Flow>,
    next_send: Instant,
    next_resend_all: Instant,
    listings: usize,
    next_list: Option<Instant>,
    listing: bool,
    last_ack: Option<Instant>,
}

/// The new holder's side of one router's drain.
#[derive(Debug)]
struct Incoming {
    router: usize,
    vrid: u8,
    ifindex: u32,
    vips: Vec<IpAddr>,
    family: Family,
    from: IpAddr,
    window: Duration,
    accept_until: Instant,
    forwarding: Option<Forwarding>,
}

#[derive(Debug)]
struct Forwarding {
    session: u32,
    mac: [u8; 6],
    last_heard: Instant,
    deadline: Instant,
    flows: BTreeSet<Flow>,
}

#[derive(Debug, Default)]
pub struct Drains {
    outgoing: Vec<Outgoing>,
    incoming: Vec<Incoming>,
    /// Datagrams dropped, by the reason they were.
    pub dropped: u64,
    /// Flows passed through, over all drains.
    pub forwarded_flows: u64,
    /// When a drop from each sender was last logged (a flood is logged once per DROP_LOG_EVERY).
    drop_logged: std::collections::HashMap<IpAddr, Instant>,
}

/// A sender's dropped datagrams are logged at most this often.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// One router's drain, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainStatus {
    pub router: usize,
    /// "old holder" or "new holder".
    pub role: &'static str,
    pub peer: IpAddr,
    pub flows: usize,
    pub remaining: Duration,
}

fn family_of(vips: &[IpAddr]) -> Family {
    if vips.first().is_none_or(IpAddr::is_ipv4) { Family::V4 } else { Family::V6 }
}

impl Drains {
    pub fn new() -> Drains {
        Drains::default()
    }

    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Command(command) => self.command(now, command, &mut out),
            Input::Datagram { from, ttl, bytes } => self.datagram(now, from, ttl, bytes, &mut out),
            Input::Listed { router, flows } => self.listed(now, router, flows, &mut out),
            Input::Timer => {}
        }
        self.fire(now, &mut out);
        out
    }

    /// The earliest deadline, for the shell's timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let outgoing = self.outgoing.iter().flat_map(|o| {
            [Some(o.deadline), Some(o.next_send), o.next_list.filter(|_| !o.listing), Some(o.ack_deadline())]
                .into_iter()
                .flatten()
        });
        let incoming = self.incoming.iter().flat_map(|i| match &i.forwarding {
            None => [Some(i.accept_until), None],
            Some(f) => [Some(f.deadline), Some(f.last_heard + SILENCE)],
        });
        outgoing.chain(incoming.flatten()).min()
    }

    pub fn status(&self, now: Instant) -> Vec<DrainStatus> {
        let old = self.outgoing.iter().map(|o| DrainStatus {
            router: o.router,
            role: "old holder",
            peer: o.to,
            flows: o.flows.len(),
            remaining: o.deadline.saturating_duration_since(now),
        });
        let new = self.incoming.iter().filter_map(|i| {
            i.forwarding.as_ref().map(|f| DrainStatus {
                router: i.router,
                role: "new holder",
                peer: i.from,
                flows: f.flows.len(),
                remaining: f.deadline.saturating_duration_since(now),
            })
        });
        old.chain(new).collect()
    }

    /// Whether any old-holder drain is still under way (a planned stop waits for them).
    pub fn draining(&self) -> bool {
        !self.outgoing.is_empty()
    }

    fn command(&mut self, now: Instant, command: Command, out: &mut Vec<Output>) {
        match command {
            Command::HandOver { router, vrid, ifindex, mac, vips, to, window, session } => {
                self.end_outgoing(now, router, EndReason::Reclaimed, out);
                self.outgoing.push(Outgoing {
                    router,
                    vrid,
                    ifindex,
                    mac,
                    family: family_of(&vips),
                    vips,
                    to,
                    session,
                    seq: 0,
                    started: now,
                    deadline: now + window,
                    flows: BTreeSet::new(),
                    sent: BTreeSet::new(),
                    next_send: now + HEARTBEAT,
                    next_resend_all: now + RESEND_ALL,
                    listings: 0,
                    next_list: Some(now),
                    listing: false,
                    last_ack: None,
                });
            }
            Command::Accept { router, vrid, ifindex, vips, from, window } => {
                self.end_incoming(router, EndReason::Released, out);
                self.incoming.push(Incoming {
                    router,
                    vrid,
                    ifindex,
                    family: family_of(&vips),
                    vips,
                    from,
                    window,
                    accept_until: now + ACCEPT_WAIT,
                    forwarding: None,
                });
            }
            Command::Reclaimed { router } => self.end_outgoing(now, router, EndReason::Reclaimed, out),
            Command::Released { router } => self.end_incoming(router, EndReason::Released, out),
        }
    }

    fn listed(&mut self, now: Instant, router: usize, flows: Vec<Flow>, out: &mut Vec<Output>) {
        let Some(o) = self.outgoing.iter_mut().find(|o| o.router == router) else { return };
        o.listing = false;
        o.listings += 1;
        o.next_list = Some(match LIST_AFTER.get(o.listings) {
            Some(after) => o.started + *after,
            None => now + LIST_EVERY,
        });
        o.flows = flows.into_iter().filter(|flow| o.vips.contains(&flow.vip.ip())).collect();
        if o.listings == 1 {
            out.push(Output::Log(LogLine::Started { router, to: o.to, flows: o.flows.len() }));
        }
        if o.flows.is_empty() {
            return self.end_outgoing(now, router, EndReason::NoFlowsLeft, out);
        }
        // New flows go out at once: the client's next packet may reach the new holder any time.
        let new: Vec<Flow> = o.flows.difference(&o.sent).copied().collect();
        if !new.is_empty() {
            o.send(now, new, out);
        }
    }

    fn datagram(&mut self, now: Instant, from: IpAddr, ttl: u8, bytes: &[u8], out: &mut Vec<Output>) {
        let message = match protocol::decode(bytes) {
            Ok(message) => message,
            Err(e) => return self.drop(now, from, e.to_string(), out),
        };
        if ttl != TTL {
            return self.drop(now, from, format!("hop limit {ttl}, not {TTL}: not sent on this link"), out);
        }
        match message.body {
            Body::Ack { .. } => {
                let Some(o) = self
                    .outgoing
                    .iter_mut()
                    .find(|o| o.vrid == message.vrid && o.to == from && o.session == message.session)
                else {
                    return self.drop(
                        now,
                        from,
                        format!("an acknowledgement for VRID {} no drain expects", message.vrid),
                        out,
                    );
                };
                o.last_ack = Some(now);
            }
            Body::Flows { mac, flows } => {
                let Some(i) = self.incoming.iter_mut().find(|i| i.vrid == message.vrid && i.from == from) else {
                    return self.drop(
                        now,
                        from,
                        format!("a drain for VRID {} from a node we did not take over from", message.vrid),
                        out,
                    );
                };
                let session_changed = i.forwarding.as_ref().is_some_and(|f| f.session != message.session);
                if session_changed {
                    if let Some(f) = i.forwarding.take() {
                        out.push(Output::StopForwarding { flows: f.flows.into_iter().collect() });
                    }
                    i.accept_until = now + ACCEPT_WAIT;
                }
                if i.forwarding.is_none() && now >= i.accept_until {
                    return self.drop(
                        now,
                        from,
                        format!("a drain for VRID {} after the time to accept one", message.vrid),
                        out,
                    );
                }
                let window = i.window;
                let forwarding = i.forwarding.get_or_insert_with(|| Forwarding {
                    session: message.session,
                    mac,
                    last_heard: now,
                    deadline: now + window,
                    flows: BTreeSet::new(),
                });
                forwarding.last_heard = now;
                // Only our own VIPs, of the router's family: the old holder cannot make us pass
                // anything else through.
                let mut new: Vec<Flow> = flows
                    .into_iter()
                    .filter(|flow| i.vips.contains(&flow.vip.ip()) && !forwarding.flows.contains(flow))
                    .collect();
                let room = MAX_FLOWS.saturating_sub(forwarding.flows.len());
                if new.len() > room {
                    out.push(Output::Log(LogLine::TooManyFlows { router: i.router, dropped: new.len() - room }));
                    new.truncate(room);
                }
                let first = forwarding.flows.is_empty() && !new.is_empty();
                forwarding.flows.extend(new.iter().copied());
                self.forwarded_flows += new.len() as u64;
                if !new.is_empty() {
                    out.push(Output::Forward { ifindex: i.ifindex, mac: forwarding.mac, flows: new });
                }
                if first {
                    out.push(Output::Log(LogLine::Forwarding {
                        router: i.router,
                        from,
                        flows: forwarding.flows.len(),
                    }));
                }
                let ack =
                    protocol::encode_ack(i.vrid, i.family, message.session, message.seq, forwarding.flows.len() as u32);
                out.push(Output::Send { to: from, bytes: ack });
            }
            Body::Done => {
                // With no connection to drain the old holder sends its end alone: the accept
                // ends quietly (nothing passes through yet, so nothing can be cut short).
                let Some(position) = self.incoming.iter().position(|i| {
                    i.vrid == message.vrid
                        && i.from == from
                        && i.forwarding.as_ref().is_none_or(|f| f.session == message.session)
                }) else {
                    return self.drop(
                        now,
                        from,
                        format!("the end of a drain for VRID {} that is not under way", message.vrid),
                        out,
                    );
                };
                let router = self.incoming[position].router;
                self.end_incoming(router, EndReason::OldHolderDone, out);
            }
        }
    }

    fn drop(&mut self, now: Instant, from: IpAddr, why: String, out: &mut Vec<Output>) {
        self.dropped += 1;
        if self.drop_logged.get(&from).is_some_and(|at| now.duration_since(*at) < DROP_LOG_EVERY) {
            return;
        }
        if self.drop_logged.len() > 1024 {
            self.drop_logged.clear();
        }
        self.drop_logged.insert(from, now);
        out.push(Output::Log(LogLine::Dropped { from, why }));
    }

    /// nginx-ha stops: every drain ends, nothing stays held locally or passed through.
    pub fn shutdown(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        let routers: Vec<usize> = self.outgoing.iter().map(|o| o.router).collect();
        for router in routers {
            self.end_outgoing(now, router, EndReason::Stopping, &mut out);
        }
        let routers: Vec<usize> = self.incoming.iter().map(|i| i.router).collect();
        for router in routers {
            self.end_incoming(router, EndReason::Stopping, &mut out);
        }
        out
    }

    fn fire(&mut self, now: Instant, out: &mut Vec<Output>) {
        let mut ends = Vec::new();
        for o in &mut self.outgoing {
            if now >= o.deadline {
                ends.push((o.router, EndReason::WindowOver));
                continue;
            }
            if now >= o.ack_deadline() {
                let why = if o.last_ack.is_some() { EndReason::PeerSilent } else { EndReason::PeerDoesNotDrain };
                ends.push((o.router, why));
                continue;
            }
            if !o.listing && o.next_list.is_some_and(|at| now >= at) {
                o.listing = true;
                o.next_list = None;
                out.push(Output::ListFlows { router: o.router, vips: o.vips.clone() });
            }
            if now >= o.next_send {
                let flows = if now >= o.next_resend_all {
                    o.next_resend_all = now + RESEND_ALL;
                    o.flows.iter().copied().collect()
                } else {
                    o.flows.difference(&o.sent).copied().collect()
                };
                o.send(now, flows, out);
            }
        }
        for (router, why) in ends {
            self.end_outgoing(now, router, why, out);
        }
        let mut ends = Vec::new();
        for i in &self.incoming {
            match &i.forwarding {
                None if now >= i.accept_until => ends.push((i.router, None)),
                Some(f) if now >= f.deadline => ends.push((i.router, Some(EndReason::WindowOver))),
                Some(f) if now >= f.last_heard + SILENCE => ends.push((i.router, Some(EndReason::OldHolderSilent))),
                _ => {}
            }
        }
        for (router, why) in ends {
            match why {
                Some(why) => self.end_incoming(router, why, out),
                // Nobody drained to us: nothing to say.
                None => self.incoming.retain(|i| i.router != router),
            }
        }
    }

    fn end_outgoing(&mut self, now: Instant, router: usize, why: EndReason, out: &mut Vec<Output>) {
        let Some(position) = self.outgoing.iter().position(|o| o.router == router) else { return };
        let o = self.outgoing.remove(position);
        if why != EndReason::PeerDoesNotDrain {
            out.push(Output::Send { to: o.to, bytes: protocol::encode_done(o.vrid, o.family, o.session, o.seq) });
        }
        out.push(Output::ReleaseLocal { router, ifindex: o.ifindex, vips: o.vips });
        out.push(Output::Log(LogLine::Ended { router, why, flows: o.flows.len(), elapsed: now - o.started }));
    }

    fn end_incoming(&mut self, router: usize, why: EndReason, out: &mut Vec<Output>) {
        let Some(position) = self.incoming.iter().position(|i| i.router == router) else { return };
        let i = self.incoming.remove(position);
        if let Some(f) = i.forwarding {
            let flows = f.flows.len();
            out.push(Output::StopForwarding { flows: f.flows.into_iter().collect() });
            out.push(Output::Log(LogLine::ForwardingEnded { router, why, flows }));
        }
    }
}

impl Outgoing {
    /// Until an acknowledgement is due: the first within ACK_TIMEOUT of the first flows sent,
    /// each later one within ACK_TIMEOUT of the one before.
    fn ack_deadline(&self) -> Instant {
        match self.last_ack {
            Some(at) => at + ACK_TIMEOUT,
            // Nothing sent yet (the first listing is under way): wait for it.
            None if self.sent.is_empty() && self.seq == 0 => self.deadline,
            None => self.started + ACK_TIMEOUT,
        }
    }

    fn send(&mut self, now: Instant, flows: Vec<Flow>, out: &mut Vec<Output>) {
        let datagrams = protocol::encode_flows(self.vrid, self.session, self.seq, self.mac, self.family, &flows);
        self.seq = self.seq.wrapping_add(datagrams.len() as u32);
        self.sent.extend(flows);
        for bytes in datagrams {
            out.push(Output::Send { to: self.to, bytes });
        }
        self.next_send = now + HEARTBEAT;
    }
}

#[cfg(test)]
#[path = "core/tests.rs"]
mod tests;
