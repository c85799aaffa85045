//! **Pure**: who may ask the daemon what over the control socket, from the peer's credentials
//! (SO_PEERCRED and SO_PEERGROUPS, read by the server). Root may do everything; members of
//! `[daemon] status_group` may run the read-only `status`; everyone else is refused. The socket's
//! mode (0600, or 0660 with the group) already keeps others out at connect; this check is what
//! holds the group to `status`, and holds whoever else reaches the socket to nothing.

use super::Request;

/// The credentials of a connected client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub pid: Option<i32>,
    /// Its effective gid and its supplementary groups.
    pub groups: Vec<u32>,
}

/// `[daemon] status_group`, resolved to its gid at start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessPolicy {
    pub status_group: Option<(String, u32)>,
}

/// What a peer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    Everything,
    StatusOnly,
    Nothing,
}

impl AccessPolicy {
    pub fn grant(&self, peer: &Peer) -> Grant {
        if peer.uid == 0 {
            Grant::Everything
        } else if self.status_group.as_ref().is_some_and(|(_, gid)| peer.groups.contains(gid)) {
            Grant::StatusOnly
        } else {
            Grant::Nothing
        }
    }

    /// `Err` is the refusal's text, sent to the client and logged.
    pub fn check(&self, peer: &Peer, request: &Request) -> Result<(), String> {
        match (self.grant(peer), request) {
            (Grant::Everything, _) | (Grant::StatusOnly, Request::Status) => Ok(()),
            (Grant::StatusOnly, request) => Err(format!(
                "refused: `{}` needs root; uid {} is in [daemon] status_group `{}`, which may only run `nginx-ha status`",
                command(request),
                peer.uid,
                self.status_group.as_ref().map_or("", |(name, _)| name.as_str())
            )),
            (Grant::Nothing, request) => Err(self.stranger(peer, command(request))),
        }
    }

    /// The refusal for a peer with no grant, before its request is parsed.
    pub fn stranger(&self, peer: &Peer, command: &str) -> String {
        let status = match &self.status_group {
            Some((name, _)) => format!("members of [daemon] status_group `{name}` may run `nginx-ha status`"),
            None => "set [daemon] status_group to let a group run `nginx-ha status`".to_string(),
        };
        format!("refused: `{command}` over the control socket needs root (uid {} is not); {status}", peer.uid)
    }
}

/// The CLI command a request comes from, for the refusal's text.
fn command(request: &Request) -> &'static str {
    match request {
        Request::Status => "status",
        Request::Reload => "reload",
        Request::Upgrade => "upgrade",
        #[cfg(debug_assertions)]
        Request::Failpoint { .. } => "failpoint",
        Request::UpgradeNginx => "upgrade-nginx",
        Request::AliasAdd { .. } => "alias add",
        Request::AliasDel { .. } => "alias del",
        Request::AliasList => "alias list",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, groups: &[u32]) -> Peer {
        Peer { uid, pid: None, groups: groups.to_vec() }
    }

    fn add() -> Request {
        Request::AliasAdd { address: "198.18.0.107/24".into(), interface: "eth0".into(), label: None }
    }

    #[test]
    fn root_may_do_everything() {
        let policy = AccessPolicy::default();
        for request in [Request::Status, Request::Reload, Request::Upgrade, Request::UpgradeNginx, add()] {
            assert_eq!(policy.check(&peer(0, &[0]), &request), Ok(()));
        }
    }

    #[test]
    fn the_status_group_may_run_status_only() {
        let policy = AccessPolicy { status_group: Some(("adm".into(), 4)) };
        // Primary or supplementary group alike.
        assert_eq!(policy.grant(&peer(1000, &[1000, 4])), Grant::StatusOnly);
        assert_eq!(policy.check(&peer(1000, &[4]), &Request::Status), Ok(()));
        let refused = policy.check(&peer(1000, &[1000, 4]), &Request::Reload).unwrap_err();
        assert!(refused.contains("`reload` needs root") && refused.contains("status_group `adm`"), "{refused}");
        assert!(policy.check(&peer(1000, &[4]), &add()).unwrap_err().contains("`alias add` needs root"));
        assert!(policy.check(&peer(1000, &[4]), &Request::AliasList).is_err(), "the store is not the status");
    }

    #[test]
    fn everyone_else_is_refused_and_told_how() {
        let without = AccessPolicy::default();
        let refused = without.check(&peer(65534, &[65534]), &Request::Status).unwrap_err();
        assert!(refused.contains("uid 65534") && refused.contains("set [daemon] status_group"), "{refused}");
        let with = AccessPolicy { status_group: Some(("adm".into(), 4)) };
        assert_eq!(with.grant(&peer(65534, &[65534])), Grant::Nothing);
        let refused = with.check(&peer(65534, &[65534]), &Request::Status).unwrap_err();
        assert!(refused.contains("members of [daemon] status_group `adm`"), "{refused}");
    }
}
