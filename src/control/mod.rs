//! The control socket: a Unix stream socket speaking one JSON request and one JSON response per
//! line. `server` runs in the daemon, `client` in the CLI; `status` is the document; `access`
//! decides from the peer's credentials who may ask what.

pub mod access;
pub mod client;
pub mod metrics;
pub mod server;
pub mod status;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Re-read nginx-ha's config, test and reload nginx; answered when done.
    Reload,
    /// Re-execute the daemon's binary from disk in place (same pid), once it passed a
    /// preflight; answered before the re-execution.
    Upgrade,
    /// Test builds only (compiled out of release builds): make a part of the daemon fail as a
    /// bug would, to test how the daemon handles it. `vrrp_task`: the VRRP task panics.
    #[cfg(debug_assertions)]
    Failpoint {
        name: String,
    },
    /// nginx's live binary upgrade to the binary now on disk; answered when done, refused or
    /// rolled back.
    UpgradeNginx,
    /// `nginx-ha alias add`: answered once the alias is present (or waits for its interface),
    /// with its report in `aliases`, or refused with the reason.
    AliasAdd {
        address: String,
        interface: String,
        #[serde(default)]
        label: Option<String>,
    },
    /// `nginx-ha alias del`: removed now and from the store.
    AliasDel {
        address: String,
        interface: String,
    },
    /// `nginx-ha alias list`: every declared alias in `aliases`.
    AliasList,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Box<status::StatusDocument>>,
    /// The nginx-ha settings a reload applied, as `[table] key`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied: Vec<String>,
    /// The aliases an `alias_*` request is about.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<status::AliasReport>,
}

impl Response {
    pub fn ok() -> Response {
        Response { ok: true, error: None, status: None, applied: Vec::new(), aliases: Vec::new() }
    }
    pub fn applied(keys: Vec<String>) -> Response {
        Response { applied: keys, ..Response::ok() }
    }
    pub fn error(message: impl Into<String>) -> Response {
        Response { ok: false, error: Some(message.into()), ..Response::ok() }
    }
    pub fn status(document: status::StatusDocument) -> Response {
        Response { status: Some(Box::new(document)), ..Response::ok() }
    }
}
