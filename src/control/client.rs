//! The CLI's side of the control socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::{Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no nginx-ha daemon answers on {path}: {source} (is it running? `systemctl status nginx-ha`)")]
    NotRunning { path: PathBuf, source: std::io::Error },
    #[error(
        "cannot connect to {path}: permission denied: the control socket is root's, and for `nginx-ha status` also the members of [daemon] status_group if it is set; run as root, or be added to that group"
    )]
    Denied { path: PathBuf },
    #[error("the daemon on {path} broke off: {reason}")]
    Protocol { path: PathBuf, reason: String },
    #[error("the daemon on {0} did not answer within {1:?}")]
    Timeout(PathBuf, Duration),
}

pub async fn request(path: &Path, request: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let stream = UnixStream::connect(path).await.map_err(|source| match source.kind() {
        std::io::ErrorKind::PermissionDenied => ClientError::Denied { path: path.to_path_buf() },
        _ => ClientError::NotRunning { path: path.to_path_buf(), source },
    })?;
    let exchange = async {
        let (reader, mut writer) = stream.into_split();
        let mut line = serde_json::to_string(request).map_err(|e| e.to_string())?;
        line.push('\n');
        // A refusing daemon may answer and close before the request is written: read its answer.
        let written = writer.write_all(line.as_bytes()).await;
        let mut answer = String::new();
        BufReader::new(reader).read_line(&mut answer).await.map_err(|e| e.to_string())?;
        if answer.is_empty() {
            return Err(written.err().map_or("no answer".to_string(), |e| e.to_string()));
        }
        serde_json::from_str::<Response>(&answer).map_err(|e| e.to_string())
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(reason)) => Err(ClientError::Protocol { path: path.to_path_buf(), reason }),
        Err(_) => Err(ClientError::Timeout(path.to_path_buf(), timeout)),
    }
}
