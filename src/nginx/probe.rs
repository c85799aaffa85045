//! Health probes against the local nginx: TCP connects and a plain HTTP/1.0 GET.
//! A hung nginx still gets its TCP handshakes completed by the kernel; only HTTP sees the hang.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{HealthConfig, HttpProbeUrl};

/// Why a probe failed: logged when it changes, and shown in `status` as `last_probe_error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("tcp {addr}: {error}")]
    Tcp { addr: SocketAddr, error: String },
    #[error("http {target}: {error}")]
    Http { target: String, error: String },
    #[error("http {target}: not an HTTP answer: {status_line:?}")]
    NotHttp { target: String, status_line: String },
    #[error("http {target}{path}: status {code}")]
    Status { target: String, path: String, code: u16 },
}

/// nginx-ha's own traffic to nginx since the daemon started: the probes' and the stub_status
/// reads'. nginx counts it like anybody's; the metrics subtract it from nginx's counters
/// (`stub_status::OwnTrafficRule`), so that they show the site's traffic alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnTraffic {
    /// HTTP requests nginx answered (whatever the status): it has counted them.
    pub requests: u64,
    /// TCP connections established to nginx (the HTTP probe's, the TCP probe's, the reads').
    pub connections: u64,
}

pub struct OwnTrafficCounter {
    requests: AtomicU64,
    connections: AtomicU64,
}

pub static OWN_TRAFFIC: OwnTrafficCounter =
    OwnTrafficCounter { requests: AtomicU64::new(0), connections: AtomicU64::new(0) };

impl OwnTrafficCounter {
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
    pub fn connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> OwnTraffic {
        OwnTraffic {
            requests: self.requests.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Prober {
    http: Option<HttpProbeUrl>,
    tcp: Vec<SocketAddr>,
    timeout: Duration,
}

impl Prober {
    /// None when no probes are configured. Expects a validated config.
    pub fn from_config(health: &HealthConfig) -> Option<Prober> {
        if !health.has_probes() {
            return None;
        }
        Some(Prober {
            http: health.http.as_deref().and_then(|url| HttpProbeUrl::parse(url).ok()),
            tcp: health.tcp.iter().filter_map(|t| t.parse().ok()).collect(),
            timeout: health.timeout(),
        })
    }

    /// Every probe must pass within the timeout; Err says which one failed and how.
    pub async fn probe(&self) -> Result<(), ProbeError> {
        match tokio::time::timeout(self.timeout, self.probe_all()).await {
            Ok(result) => result,
            Err(_) => Err(ProbeError::Timeout(self.timeout)),
        }
    }

    async fn probe_all(&self) -> Result<(), ProbeError> {
        for addr in &self.tcp {
            TcpStream::connect(addr).await.map_err(|e| ProbeError::Tcp { addr: *addr, error: e.to_string() })?;
            OWN_TRAFFIC.connection();
        }
        if let Some(url) = &self.http {
            http_get(url).await?;
        }
        Ok(())
    }
}

async fn http_get(url: &HttpProbeUrl) -> Result<(), ProbeError> {
    let target = if url.host.contains(':') {
        format!("[{}]:{}", url.host, url.port)
    } else {
        format!("{}:{}", url.host, url.port)
    };
    let io = |e: std::io::Error| ProbeError::Http { target: target.clone(), error: e.to_string() };
    let mut stream = TcpStream::connect(&target).await.map_err(io)?;
    OWN_TRAFFIC.connection();
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: nginx-ha-probe\r\nConnection: close\r\n\r\n",
        url.path, url.host
    );
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream.read(&mut buf).await.map_err(io)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let status_line = String::from_utf8_lossy(&head);
    let status_line = status_line.lines().next().unwrap_or("");
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| ProbeError::NotHttp { target: target.clone(), status_line: status_line.to_owned() })?;
    // An HTTP answer: nginx has counted the request, whatever its status.
    OWN_TRAFFIC.request();
    if (200..400).contains(&code) { Ok(()) } else { Err(ProbeError::Status { target, path: url.path.clone(), code }) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn serve_once(answer: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(answer.as_bytes()).await;
        });
        addr
    }

    fn http_prober(addr: SocketAddr) -> Prober {
        let health =
            HealthConfig { http: Some(format!("http://{addr}/health")), timeout_ms: 300, ..Default::default() };
        Prober::from_config(&health).unwrap()
    }

    #[tokio::test]
    async fn http_2xx_and_3xx_are_healthy_others_not() {
        assert_eq!(http_prober(serve_once("HTTP/1.1 200 OK\r\n\r\nok").await).probe().await, Ok(()));
        assert_eq!(http_prober(serve_once("HTTP/1.1 302 Found\r\n\r\n").await).probe().await, Ok(()));
        let err = http_prober(serve_once("HTTP/1.1 503 Unavailable\r\n\r\n").await).probe().await.unwrap_err();
        assert!(matches!(err, ProbeError::Status { code: 503, .. }), "{err}");
    }

    #[tokio::test]
    async fn a_listener_that_never_answers_is_a_timeout() {
        // The kernel completes the handshake from the backlog, like for a SIGSTOPped nginx.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = http_prober(listener.local_addr().unwrap()).probe().await.unwrap_err();
        assert_eq!(err.to_string(), "no answer within 300 ms");
        let tcp_only = HealthConfig { tcp: vec![listener.local_addr().unwrap().to_string()], ..Default::default() };
        assert_eq!(Prober::from_config(&tcp_only).unwrap().probe().await, Ok(()), "tcp cannot see the hang");
    }

    #[tokio::test]
    async fn refused_connection_fails() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let tcp = HealthConfig { tcp: vec![format!("127.0.0.1:{port}")], ..Default::default() };
        assert!(Prober::from_config(&tcp).unwrap().probe().await.is_err());
        assert!(Prober::from_config(&HealthConfig::default()).is_none());
    }
}
