//! `[daemon] metrics_listen`: Prometheus metrics over HTTP (hyper, HTTP/1.1 with keep-alive).
//!
//! A scrape asks the daemon loop for the status document like the CLI does, reads nginx's
//! stub_status (nginx's own counters, less nginx-ha's own requests) and /proc (nginx's and
//! nginx-ha's processes), and encodes it all with `prometheus-client` in the format the
//! scraper's `Accept` asks for. It holds no state of its own beyond the subtraction rule's.
//! Nothing here runs on the VRRP task: a slow scraper or idle connections only hold one of
//! [`MAX_CONNECTIONS`] slots here, and each wait has its timeout.

pub mod encode;
mod nginx;
mod render;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming as Body;
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request as HttpRequest, Response as HttpResponse, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::Request;
use super::server::Incoming;
use crate::config::{HealthConfig, StatusSource};
pub use encode::{BaseUnit, Exposition, Format, Kind, Labels, Value};
pub use render::render;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {address}: {source}; change or remove [daemon] metrics_listen")]
pub struct MetricsError {
    address: SocketAddr,
    source: std::io::Error,
}

/// Connections served at once; a scraper needs one. More wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 16;
/// A connection that sends no complete request head for this long is closed, idle keep-alive
/// ones included (Prometheus opens a new one at its next scrape).
const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// A new connection that sends nothing for this long is closed.
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection's whole life at most: a client that stops reading an answer frees its slot.
const MAX_CONNECTION_LIFE: Duration = Duration::from_secs(120);
/// The daemon loop answers the status at once; this only bounds a stuck loop.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the scrapes read nginx's counters; follows `nginx-ha reload` (`[health]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSettings {
    pub source: StatusSource,
    pub timeout: Duration,
}

impl StatusSettings {
    pub fn from_config(health: &HealthConfig) -> StatusSettings {
        // A scrape waits for it; the probe's timeout is what the user said nginx may take.
        StatusSettings { source: health.status_source(), timeout: health.timeout().min(Duration::from_secs(2)) }
    }
}

/// Binds `address`; the returned future serves the metrics and never ends on its own (the
/// caller owns it).
pub async fn bind(
    address: SocketAddr,
    requests: mpsc::Sender<Incoming>,
    status: watch::Receiver<StatusSettings>,
) -> Result<impl Future<Output = ()> + Send + 'static, MetricsError> {
    let listener = TcpListener::bind(address).await.map_err(|source| MetricsError { address, source })?;
    let scraper = Arc::new(Scraper { requests, nginx: tokio::sync::Mutex::new(nginx::NginxReader::new(status)) });
    Ok(serve(listener, scraper))
}

async fn serve(listener: TcpListener, scraper: Arc<Scraper>) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_CONNECTIONS {
            connections.join_next().await;
            continue;
        }
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and the like: not a reason to stop serving, nor to spin.
                warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let scraper = scraper.clone();
        connections.spawn(async move {
            // A scraper sends its request as soon as it has connected; a connection that sends
            // nothing gives its slot back soon (one that does gets IDLE_TIMEOUT between requests).
            // (peek, not readable(): a new stream's readiness starts out as "maybe ready".)
            let mut first = [0u8; 1];
            if !matches!(tokio::time::timeout(FIRST_REQUEST_TIMEOUT, stream.peek(&mut first)).await, Ok(Ok(1..))) {
                debug!("metrics: a connection sent nothing within {FIRST_REQUEST_TIMEOUT:?}; closed");
                return;
            }
            let service = hyper::service::service_fn(move |request| {
                let scraper = scraper.clone();
                async move { Ok::<_, Infallible>(scraper.answer(request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(IDLE_TIMEOUT)
                .keep_alive(true)
                .max_buf_size(8192)
                .serve_connection(TokioIo::new(stream), service);
            // Errors are the client's (a reset, a bad request hyper answered with 400).
            let _ = tokio::time::timeout(MAX_CONNECTION_LIFE, connection).await;
        });
    }
}

struct Scraper {
    requests: mpsc::Sender<Incoming>,
    /// One stub_status read at a time; a scrape that finds one in flight waits for it and
    /// uses its result (see `NginxReader::read`).
    nginx: tokio::sync::Mutex<nginx::NginxReader>,
}

impl Scraper {
    async fn answer(&self, request: HttpRequest<Body>) -> HttpResponse<Full<Bytes>> {
        if request.uri().path() != "/metrics" {
            return plain(StatusCode::NOT_FOUND, "not found: the metrics are at /metrics\n");
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n");
            response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let accept = request.headers().get(ACCEPT).and_then(|value| value.to_str().ok());
        let format = Format::from_accept(accept);
        match self.scrape(format).await {
            Some(body) => {
                let mut response = HttpResponse::new(Full::new(Bytes::from(body)));
                response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
                response
            }
            None => plain(StatusCode::SERVICE_UNAVAILABLE, "nginx-ha is shutting down\n"),
        }
    }

    /// The whole exposition; None when the daemon loop does not answer (shutting down).
    async fn scrape(&self, format: Format) -> Option<String> {
        let started = Instant::now();
        let (reply_tx, reply_rx) = oneshot::channel();
        self.requests.send((Request::Status, reply_tx)).await.ok()?;
        let document = tokio::time::timeout(STATUS_TIMEOUT, reply_rx).await.ok()?.ok()?.status?;
        let nginx = self.nginx.lock().await.read(document.nginx.master_pid).await;
        let processes = render::ProcessSnapshot::read(&document.nginx);
        let mut out = render(&document);
        render::nginx_counters(&mut out, &nginx);
        render::processes(&mut out, &processes);
        out.gauge(
            "nginx_ha_metrics_scrape_duration_seconds",
            "Time nginx-ha took to gather this scrape (status, stub_status, /proc), before encoding",
            started.elapsed().as_secs_f64(),
        );
        Some(out.encode(format))
    }
}

fn plain(status: StatusCode, text: &'static str) -> HttpResponse<Full<Bytes>> {
    let mut response = HttpResponse::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
