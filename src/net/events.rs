//! Link and address changes, from the rtnetlink multicast groups (what `ip monitor` shows).

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use futures::{Stream, StreamExt, channel::mpsc::UnboundedReceiver};
use rtnetlink::{
    MulticastGroup,
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{AddressFamily, RouteNetlinkMessage},
    proto::Connection,
    sys::SocketAddr,
};

use super::{AddressInfo, LinkInfo, NetError, RouteInfo};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// Reported only when `up` changes (the kernel repeats RTM_NEWLINK for many other
    /// reasons); a deleted link is reported as down.
    LinkChanged {
        index: u32,
        name: String,
        up: bool,
    },
    /// Also repeated when an address's flags change, e.g. when IPv6 DAD completes.
    AddressAdded(AddressInfo),
    AddressRemoved(AddressInfo),
    /// Only from [`route_events`].
    RouteAdded(RouteInfo),
    RouteRemoved(RouteInfo),
}

/// Subscribes to link, IPv4 and IPv6 address changes in the current network namespace.
/// Must be called inside a tokio runtime.
pub fn events() -> Result<NetEvents, NetError> {
    subscribe(&[MulticastGroup::Link, MulticastGroup::Ipv4Ifaddr, MulticastGroup::Ipv6Ifaddr])
}

/// Like [`events`], with IPv4 and IPv6 route changes (of every table) as well.
pub fn route_events() -> Result<NetEvents, NetError> {
    subscribe(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
    ])
}

fn subscribe(groups: &[MulticastGroup]) -> Result<NetEvents, NetError> {
    let (mut connection, _, messages) = rtnetlink::new_multicast_connection(groups).map_err(NetError::Connect)?;
    // A takeover with a thousand VIPs is a thousand notifications at once.
    super::enlarge_receive_buffer(rtnetlink::sys::AsyncSocket::socket_ref(connection.socket_mut()));
    Ok(NetEvents { connection: Some(connection), messages, link_up: HashMap::new(), ended: false })
}

/// The event stream; it owns its netlink socket, which closes when the stream is dropped.
///
/// The stream ends when the kernel had to drop notifications (the socket's receive buffer
/// overflowed) or the socket failed: the state may then have changed unseen, so re-read
/// what matters (`Net::link`, `Net::addresses`) and call [`events`] again.
pub struct NetEvents {
    connection: Option<Connection<RouteNetlinkMessage>>,
    messages: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
    link_up: HashMap<u32, bool>,
    ended: bool,
}

impl NetEvents {
    fn translate(&mut self, message: RouteNetlinkMessage) -> Option<NetEvent> {
        match message {
            // AF_BRIDGE link messages describe bridge ports (and RTM_DELLINK ones mean "left
            // the bridge", not "deleted"), so only plain link messages count.
            RouteNetlinkMessage::NewLink(m) | RouteNetlinkMessage::DelLink(m)
                if m.header.interface_family != AddressFamily::Unspec =>
            {
                None
            }
            RouteNetlinkMessage::NewLink(m) => {
                let link = LinkInfo::from_message(&m)?;
                let previous = self.link_up.insert(link.index, link.up);
                (previous != Some(link.up)).then_some(NetEvent::LinkChanged {
                    index: link.index,
                    name: link.name,
                    up: link.up,
                })
            }
            RouteNetlinkMessage::DelLink(m) => {
                let link = LinkInfo::from_message(&m)?;
                self.link_up.remove(&link.index);
                Some(NetEvent::LinkChanged { index: link.index, name: link.name, up: false })
            }
            RouteNetlinkMessage::NewAddress(m) => AddressInfo::from_message(&m).map(NetEvent::AddressAdded),
            RouteNetlinkMessage::DelAddress(m) => AddressInfo::from_message(&m).map(NetEvent::AddressRemoved),
            RouteNetlinkMessage::NewRoute(m) => RouteInfo::from_message(&m).map(NetEvent::RouteAdded),
            RouteNetlinkMessage::DelRoute(m) => RouteInfo::from_message(&m).map(NetEvent::RouteRemoved),
            _ => None,
        }
    }

    fn end(&mut self) -> Poll<Option<NetEvent>> {
        self.connection = None;
        self.ended = true;
        Poll::Ready(None)
    }
}

impl Stream for NetEvents {
    type Item = NetEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<NetEvent>> {
        if self.ended {
            return Poll::Ready(None);
        }
        // The connection reads the socket and queues what it read into `messages`; it
        // only completes when the socket failed.
        if let Some(connection) = &mut self.connection
            && Pin::new(connection).poll(cx).is_ready()
        {
            self.connection = None;
        }
        loop {
            let Some((message, _)) = futures::ready!(self.messages.poll_next_unpin(cx)) else {
                return self.end();
            };
            match message.payload {
                NetlinkPayload::InnerMessage(message) => {
                    if let Some(event) = self.translate(message) {
                        return Poll::Ready(Some(event));
                    }
                }
                NetlinkPayload::Overrun(_) => {
                    tracing::warn!("netlink notifications were lost (receive buffer overrun)");
                    return self.end();
                }
                _ => {}
            }
        }
    }
}
