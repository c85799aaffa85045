//! The shell around nginx's stub_status for the scrapes: which URL, when to read again, and
//! saying once (not at every scrape) that the page cannot be read, and once that it can again.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{info, warn};

use super::StatusSettings;
use crate::config::StatusSource;
use crate::nginx::probe::OWN_TRAFFIC;
use crate::nginx::stub_status::{self, OwnTrafficRule, SiteCounters, StubStatusError};

/// A read younger than this serves the scrapes that come meanwhile (two Prometheus servers
/// scraping both nodes at once read nginx once).
const REUSE: Duration = Duration::from_millis(250);

/// nginx's counters for one scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NginxReading {
    /// No stub_status configured (or the probe's URL is not one): no `nginx_*` metrics.
    Off,
    /// `nginx_up 1` and the counters.
    Up(SiteCounters),
    /// `nginx_up 0`: configured, but not read this time.
    Down,
}

pub struct NginxReader {
    settings: watch::Receiver<StatusSettings>,
    current: StatusSettings,
    rule: OwnTrafficRule,
    /// The probe's URL answered with a stub_status page at least once.
    probe_is_status_page: bool,
    last: Option<(Instant, NginxReading)>,
    /// What was last logged about the page, so that it is said once.
    problem: Option<String>,
}

impl NginxReader {
    pub fn new(mut settings: watch::Receiver<StatusSettings>) -> NginxReader {
        let current = settings.borrow_and_update().clone();
        NginxReader {
            settings,
            current,
            rule: OwnTrafficRule::default(),
            probe_is_status_page: false,
            last: None,
            problem: None,
        }
    }

    pub async fn read(&mut self, master_pid: Option<i32>) -> NginxReading {
        if self.settings.has_changed().unwrap_or(false) {
            let new = self.settings.borrow_and_update().clone();
            if new.source != self.current.source {
                // Another page is another set of counters.
                self.rule = OwnTrafficRule::default();
                self.probe_is_status_page = false;
                self.last = None;
                self.problem = None;
            }
            self.current = new;
        }
        if let Some((at, reading)) = self.last
            && at.elapsed() < REUSE
        {
            return reading;
        }
        let (url, from_probe) = match &self.current.source {
            StatusSource::Off => return NginxReading::Off,
            StatusSource::Configured(url) => (url.clone(), false),
            StatusSource::Probe(url) => (url.clone(), true),
        };
        let reading = match stub_status::read(&url, self.current.timeout).await {
            Ok(raw) => {
                self.probe_is_status_page |= from_probe;
                if self.problem.take().is_some() {
                    info!("stub_status {url} read again: nginx's counters are back in the metrics");
                }
                NginxReading::Up(self.rule.apply(raw, OWN_TRAFFIC.get(), master_pid))
            }
            Err(StubStatusError::Garbage { .. } | StubStatusError::Status { .. })
                if from_probe && !self.probe_is_status_page =>
            {
                self.say_once(
                    format!(
                        "[health] http {url} is not nginx's stub_status page, so nginx's own counters (nginx_up, \
                         nginx_http_requests_total, ...) are not in the metrics; set [health] status_url to a \
                         location with `stub_status;` to serve them, or status_url = \"\" to not look"
                    ),
                    false,
                );
                NginxReading::Off
            }
            Err(error) => {
                self.say_once(format!("{error}; nginx_up is 0 until it answers"), true);
                NginxReading::Down
            }
        };
        self.last = Some((Instant::now(), reading));
        reading
    }

    fn say_once(&mut self, message: String, warning: bool) {
        if self.problem.as_deref() != Some(message.as_str()) {
            if warning {
                warn!("{message}");
            } else {
                info!("{message}");
            }
            self.problem = Some(message);
        }
    }
}
