//! The daemon's side of the control socket. Requests go to the daemon loop over a channel, so
//! that no business logic lives here.

use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::access::{AccessPolicy, Grant, Peer};
use super::{Request, Response};
use crate::nginx::policy::CommandError;

/// Largest request line accepted; requests are tiny, anything bigger is not ours.
const MAX_REQUEST: usize = 64 * 1024;
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;
/// A connection that sends no complete request for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "another nginx-ha is running: its control socket {0} answers; stop it first (or set [daemon] control_socket)"
    )]
    AlreadyRunning(PathBuf),
    #[error("cannot create the control socket {path}: {source}")]
    Bind { path: PathBuf, source: std::io::Error },
    #[error(
        "the control socket path {0} is a symbolic link; nginx-ha does not follow it: remove the link (or set [daemon] control_socket to another path)"
    )]
    Symlink(PathBuf),
    #[error(
        "the control socket path {0} exists and is not a socket; nginx-ha does not remove it: move it away (or set [daemon] control_socket to another path)"
    )]
    NotASocket(PathBuf),
}

pub type Incoming = (Request, oneshot::Sender<Response>);

pub struct ControlServer {
    path: PathBuf,
}

impl ControlServer {
    /// Binds the socket: mode 0600 (root's), or 0660 and owned by `[daemon] status_group` when it
    /// is set, so that its members can connect; `policy` then decides on each peer's credentials.
    /// The returned future accepts connections and forwards each allowed request on `requests`.
    /// It never ends on its own: the caller owns it and notices if it does.
    pub async fn start(
        path: &Path,
        policy: AccessPolicy,
        requests: mpsc::Sender<Incoming>,
    ) -> Result<(ControlServer, impl Future<Output = ()> + Send + 'static), ServerError> {
        let bind_error = |source| ServerError::Bind { path: path.to_path_buf(), source };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => return Err(ServerError::Symlink(path.to_path_buf())),
            Ok(meta) if !meta.file_type().is_socket() => return Err(ServerError::NotASocket(path.to_path_buf())),
            Ok(_) => {
                if UnixStream::connect(path).await.is_ok() {
                    return Err(ServerError::AlreadyRunning(path.to_path_buf()));
                }
                // A socket nobody answers on is left over from a crash.
                std::fs::remove_file(path).map_err(bind_error)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(bind_error(e)),
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(bind_error)?;
        }
        let listener = UnixListener::bind(path).map_err(bind_error)?;
        let mode = match &policy.status_group {
            Some((_, gid)) => {
                std::os::unix::fs::chown(path, None, Some(*gid)).map_err(bind_error)?;
                0o660
            }
            None => 0o600,
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(bind_error)?;
        Ok((ControlServer { path: path.to_path_buf() }, accept_loop(listener, Arc::new(policy), requests)))
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn accept_loop(listener: UnixListener, policy: Arc<AccessPolicy>, requests: mpsc::Sender<Incoming>) {
    // The connections are owned here: dropping the loop ends them.
    let mut connections = JoinSet::new();
    loop {
        // Finished connections are reaped as they end; at the limit, wait for one to end.
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_CONNECTIONS {
            connections.join_next().await;
            continue;
        }
        match listener.accept().await {
            Ok((stream, _)) => match peer_of(&stream) {
                Ok(peer) => {
                    connections.spawn(serve(stream, peer, policy.clone(), requests.clone()));
                }
                Err(e) => warn!("control socket: cannot read the peer's credentials, closing: {e}"),
            },
            Err(e) => {
                warn!("control socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The peer's uid and pid (SO_PEERCRED) and its groups (SO_PEERGROUPS; its gid alone on a
/// kernel without it).
fn peer_of(stream: &UnixStream) -> std::io::Result<Peer> {
    let cred = stream.peer_cred()?;
    let mut groups = vec![cred.gid()];
    let mut buffer = vec![0 as libc::gid_t; 256];
    let mut len = (buffer.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `buffer` and sets `len` to what it wrote.
    let result = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERGROUPS,
            buffer.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if result == 0 {
        groups.extend_from_slice(&buffer[..len as usize / std::mem::size_of::<libc::gid_t>()]);
    } else {
        debug!("SO_PEERGROUPS: {}", std::io::Error::last_os_error());
    }
    Ok(Peer { uid: cred.uid(), pid: cred.pid(), groups })
}

async fn serve(stream: UnixStream, peer: Peer, policy: Arc<AccessPolicy>, requests: mpsc::Sender<Incoming>) {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let grant = policy.grant(&peer);
    loop {
        let mut refused = false;
        let response = match read_request(&mut reader).await {
            Ok(Some(line)) => match serde_json::from_str::<Request>(&line) {
                Ok(request) if let Err(refusal) = policy.check(&peer, &request) => {
                    warn!(uid = peer.uid, pid = ?peer.pid, "control socket: {refusal}");
                    refused = grant == Grant::Nothing;
                    Response::error(refusal)
                }
                Ok(_) | Err(_) if grant == Grant::Nothing => {
                    warn!(uid = peer.uid, pid = ?peer.pid, "control socket: refused a peer that is not root");
                    refused = true;
                    Response::error(policy.stranger(&peer, "this request"))
                }
                Ok(request) => {
                    debug!(?request, "control request");
                    let (reply_tx, reply_rx) = oneshot::channel();
                    if requests.send((request, reply_tx)).await.is_err() {
                        Response::error(CommandError::ShuttingDown.to_string())
                    } else {
                        reply_rx.await.unwrap_or_else(|_| Response::error(CommandError::ShuttingDown.to_string()))
                    }
                }
                Err(e) => Response::error(format!("not a valid request: {e}")),
            },
            Ok(None) => return,
            Err(RequestError::TooLong) => Response::error(format!("request longer than {MAX_REQUEST} bytes")),
            Err(RequestError::Idle | RequestError::Io) => return,
        };
        let mut text = serde_json::to_string(&response).unwrap_or_else(|_| "{\"ok\":false}".into());
        text.push('\n');
        if writer.write_all(text.as_bytes()).await.is_err() || refused {
            return;
        }
    }
}

enum RequestError {
    TooLong,
    Idle,
    Io,
}

/// One request line of at most MAX_REQUEST bytes within IDLE_TIMEOUT; None at end of stream.
/// A longer line is answered with an error and the connection closed (its rest is not read).
async fn read_request(reader: &mut BufReader<OwnedReadHalf>) -> Result<Option<String>, RequestError> {
    let mut line = Vec::new();
    let mut limited = reader.take(MAX_REQUEST as u64 + 1);
    let read = tokio::time::timeout(IDLE_TIMEOUT, limited.read_until(b'\n', &mut line)).await;
    match read {
        Err(_) => Err(RequestError::Idle),
        Ok(Err(_)) => Err(RequestError::Io),
        Ok(Ok(0)) => Ok(None),
        Ok(Ok(_)) if line.len() > MAX_REQUEST => Err(RequestError::TooLong),
        Ok(Ok(_)) => Ok(Some(String::from_utf8_lossy(&line).trim_end().to_string())),
    }
}
