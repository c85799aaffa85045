//! The daemon's side of the control socket. Requests go to the daemon loop over a channel, so
//! that no business logic lives here.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::{Request, Response};

/// Largest request line accepted; requests are tiny, anything bigger is not ours.
const MAX_REQUEST: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "another nginx-ha is running: its control socket {0} answers; stop it first (or set [daemon] control_socket)"
    )]
    AlreadyRunning(PathBuf),
    #[error("cannot create the control socket {path}: {source}")]
    Bind { path: PathBuf, source: std::io::Error },
}

pub type Incoming = (Request, oneshot::Sender<Response>);

pub struct ControlServer {
    path: PathBuf,
}

impl ControlServer {
    /// Binds the socket (mode 0600) and forwards each request on `requests`.
    pub async fn start(path: &Path, requests: mpsc::Sender<Incoming>) -> Result<ControlServer, ServerError> {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ServerError::AlreadyRunning(path.to_path_buf()));
        }
        let bind_error = |source| ServerError::Bind { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(bind_error)?;
        }
        // A socket file nobody answers on is left over from a crash.
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(bind_error)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_error)?;
        tokio::spawn(accept_loop(listener, requests));
        Ok(ControlServer { path: path.to_path_buf() })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn accept_loop(listener: UnixListener, requests: mpsc::Sender<Incoming>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, requests.clone()));
            }
            Err(e) => {
                warn!("control socket accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve(stream: UnixStream, requests: mpsc::Sender<Incoming>) {
    let (reader, mut writer) = stream.into_split();
    let mut lines = BufReader::new(reader.take(MAX_REQUEST as u64)).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(request) => {
                debug!(?request, "control request");
                let (reply_tx, reply_rx) = oneshot::channel();
                if requests.send((request, reply_tx)).await.is_err() {
                    Response::error("nginx-ha is shutting down")
                } else {
                    reply_rx.await.unwrap_or_else(|_| Response::error("nginx-ha is shutting down"))
                }
            }
            Err(e) => Response::error(format!("not a valid request: {e}")),
        };
        let mut text = serde_json::to_string(&response).unwrap_or_else(|_| "{\"ok\":false}".into());
        text.push('\n');
        if writer.write_all(text.as_bytes()).await.is_err() {
            break;
        }
    }
}
