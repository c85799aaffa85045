//! nginx's own counters, from its `stub_status` page: the parser and the rule that keeps
//! nginx-ha's own requests out of the site's traffic (both pure), and the read itself.
//!
//! The page (ngx_http_stub_status_module) is four lines:
//! ```text
//! Active connections: 291
//! server accepts handled requests
//!  16630948 16630948 31070465
//! Reading: 6 Writing: 179 Waiting: 106
//! ```
//! Its counters live in nginx's shared memory: a reload (HUP) keeps them, a new master (a
//! restart, a binary upgrade) starts them from zero.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::probe::{OWN_TRAFFIC, OwnTraffic};
use crate::config::HttpProbeUrl;

/// One reading of the page, as nginx counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StubStatus {
    pub active: u64,
    pub accepted: u64,
    pub handled: u64,
    pub requests: u64,
    pub reading: u64,
    pub writing: u64,
    pub waiting: u64,
}

/// Why a page is not a stub_status page: the line and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an nginx stub_status page: line {line}: expected {expected}, found {found:?}")]
pub struct ParseError {
    pub line: usize,
    pub expected: &'static str,
    pub found: String,
}

impl StubStatus {
    pub fn parse(page: &str) -> Result<StubStatus, ParseError> {
        let mut lines = page.lines().map(str::trim).filter(|line| !line.is_empty());
        let mut next = |line: usize, expected: &'static str| {
            lines.next().ok_or(ParseError { line, expected, found: String::new() }).map(|found| (line, found, expected))
        };
        let error = |(line, found, expected): (usize, &str, &'static str)| ParseError {
            line,
            expected,
            found: found.chars().take(80).collect(),
        };
        let number = |text: &str| text.parse::<u64>().ok();

        let first = next(1, "\"Active connections: N\"")?;
        let active =
            first.1.strip_prefix("Active connections:").and_then(|n| number(n.trim())).ok_or_else(|| error(first))?;
        let second = next(2, "\"server accepts handled requests\"")?;
        if second.1.split_whitespace().ne(["server", "accepts", "handled", "requests"]) {
            return Err(error(second));
        }
        let third = next(3, "three numbers: accepts handled requests")?;
        let numbers: Vec<u64> = third.1.split_whitespace().filter_map(number).collect();
        let [accepted, handled, requests] = numbers[..] else { return Err(error(third)) };
        if third.1.split_whitespace().count() != 3 {
            return Err(error(third));
        }
        let fourth = next(4, "\"Reading: N Writing: N Waiting: N\"")?;
        let words: Vec<&str> = fourth.1.split_whitespace().collect();
        let [reading, writing, waiting] = match words[..] {
            ["Reading:", r, "Writing:", w, "Waiting:", q] => match (number(r), number(w), number(q)) {
                (Some(r), Some(w), Some(q)) => [r, w, q],
                _ => return Err(error(fourth)),
            },
            _ => return Err(error(fourth)),
        };
        Ok(StubStatus { active, accepted, handled, requests, reading, writing, waiting })
    }
}

/// nginx's counters less nginx-ha's own traffic, as served in the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SiteCounters {
    pub active: u64,
    pub accepted: u64,
    pub handled: u64,
    pub requests: u64,
    pub reading: u64,
    pub writing: u64,
    pub waiting: u64,
}

/// The subtraction rule (pure). nginx counts nginx-ha's own requests like anybody's: the HTTP
/// probe's (one per `[health] interval_ms`), the TCP probe's connections, and every read of
/// stub_status itself. nginx-ha counts them too ([`OwnTraffic`]), and serves
///
/// - `requests` = nginx's requests − nginx-ha's requests since this nginx's counters started,
/// - `accepted`, `handled` = nginx's − nginx-ha's connections since then,
/// - `active`, `writing` = nginx's − 1 (the read's own connection, which nginx counts as an
///   active connection writing its answer while it writes this page),
///
/// never below zero. nginx's counters start from zero with each new master; nginx-ha takes a
/// drop of `requests` or `accepted`, or a new master pid, as that start, and from then on
/// subtracts only its own traffic since the reading before (that reading saw the old master,
/// so what came after can only have gone to the new one or been lost with the old one).
/// Within one master the served counters never go down: a probe nginx has counted but whose
/// answer nginx-ha has not yet read is subtracted one reading late, and the served value holds
/// still meanwhile instead of dipping (a dip would look like a counter reset to Prometheus).
#[derive(Debug, Clone, Default)]
pub struct OwnTrafficRule {
    last: Option<Last>,
}

#[derive(Debug, Clone, Copy)]
struct Last {
    master_pid: Option<i32>,
    raw: StubStatus,
    /// nginx-ha's own traffic at the last reading.
    own: OwnTraffic,
    /// nginx-ha's own traffic when this master's counters started, as far as we know.
    own_at_start: OwnTraffic,
    served: SiteCounters,
}

impl OwnTrafficRule {
    /// `own`: nginx-ha's own traffic so far, this reading included; `master_pid`: the master
    /// the page came from, when known.
    pub fn apply(&mut self, raw: StubStatus, own: OwnTraffic, master_pid: Option<i32>) -> SiteCounters {
        let restarted = self.last.is_some_and(|last| {
            raw.requests < last.raw.requests
                || raw.accepted < last.raw.accepted
                || matches!((last.master_pid, master_pid), (Some(old), Some(new)) if old != new)
        });
        let own_at_start = match self.last {
            // The daemon's first reading: every request nginx-ha made so far went to this nginx
            // (an adopted nginx also counts the requests of the nginx-ha before: documented).
            None => OwnTraffic::default(),
            Some(last) if restarted => last.own,
            Some(last) => last.own_at_start,
        };
        let own_requests = own.requests.saturating_sub(own_at_start.requests);
        let own_connections = own.connections.saturating_sub(own_at_start.connections);
        let mut served = SiteCounters {
            active: raw.active.saturating_sub(1),
            accepted: raw.accepted.saturating_sub(own_connections),
            handled: raw.handled.saturating_sub(own_connections),
            requests: raw.requests.saturating_sub(own_requests),
            reading: raw.reading,
            writing: raw.writing.saturating_sub(1),
            waiting: raw.waiting,
        };
        if let Some(last) = self.last.filter(|_| !restarted) {
            served.accepted = served.accepted.max(last.served.accepted);
            served.handled = served.handled.max(last.served.handled);
            served.requests = served.requests.max(last.served.requests);
        }
        self.last = Some(Last {
            master_pid: master_pid.or(self.last.and_then(|l| l.master_pid)),
            raw,
            own,
            own_at_start,
            served,
        });
        served
    }
}

/// Why a read of stub_status gave nothing: logged once when it starts (and when it changes),
/// not at every scrape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StubStatusError {
    #[error("stub_status {url}: no answer within {} ms", .timeout.as_millis())]
    Timeout { url: String, timeout: Duration },
    #[error("stub_status {url}: {error}")]
    Io { url: String, error: String },
    #[error("stub_status {url}: status {code}; is `stub_status;` in that location of the nginx config?")]
    Status { url: String, code: u16 },
    #[error("stub_status {url}: {error}; point [health] status_url at a location with `stub_status;`")]
    Garbage { url: String, error: ParseError },
}

/// Largest page accepted; the real one is about 100 bytes.
const MAX_PAGE: usize = 8 * 1024;

/// Reads the page with an HTTP/1.0 GET (no keep-alive: nginx's counters must see one
/// connection and one request per read, which nginx-ha counts as its own).
pub async fn read(url: &HttpProbeUrl, timeout: Duration) -> Result<StubStatus, StubStatusError> {
    let shown = url.to_string();
    match tokio::time::timeout(timeout, fetch(url, &shown)).await {
        Ok(result) => result,
        Err(_) => Err(StubStatusError::Timeout { url: shown, timeout }),
    }
}

async fn fetch(url: &HttpProbeUrl, shown: &str) -> Result<StubStatus, StubStatusError> {
    let io = |e: std::io::Error| StubStatusError::Io { url: shown.to_owned(), error: e.to_string() };
    let mut stream = TcpStream::connect((url.host.as_str(), url.port)).await.map_err(io)?;
    OWN_TRAFFIC.connection();
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: nginx-ha-metrics\r\nConnection: close\r\n\r\n",
        url.path,
        url.host_header()
    );
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut answer = Vec::with_capacity(512);
    let mut limited = (&mut stream).take(MAX_PAGE as u64);
    limited.read_to_end(&mut answer).await.map_err(io)?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let code = head.lines().next().and_then(|status| status.split_whitespace().nth(1)).and_then(|c| c.parse().ok());
    match code {
        // An HTTP answer: nginx counted the request, whatever it says.
        Some(code) => {
            OWN_TRAFFIC.request();
            if code != 200 {
                return Err(StubStatusError::Status { url: shown.to_owned(), code });
            }
        }
        None => {
            let error = ParseError { line: 0, expected: "an HTTP status line", found: head.chars().take(80).collect() };
            return Err(StubStatusError::Garbage { url: shown.to_owned(), error });
        }
    }
    StubStatus::parse(body).map_err(|error| StubStatusError::Garbage { url: shown.to_owned(), error })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "Active connections: 291 \nserver accepts handled requests\n 16630948 16630947 31070465 \nReading: 6 Writing: 179 Waiting: 106 \n";

    #[test]
    fn parses_nginx_page() {
        let status = StubStatus::parse(PAGE).unwrap();
        assert_eq!(
            status,
            StubStatus {
                active: 291,
                accepted: 16630948,
                handled: 16630947,
                requests: 31070465,
                reading: 6,
                writing: 179,
                waiting: 106
            }
        );
        assert_eq!(StubStatus::parse(&PAGE.replace('\n', "\r\n")).unwrap(), status);
    }

    #[test]
    fn garbage_is_an_error_naming_the_line() {
        for (page, line) in [
            ("", 1),
            ("<html>404 Not Found</html>", 1),
            ("Active connections: many\n", 1),
            ("Active connections: -1\n", 1),
            ("Active connections: 1\n", 2),
            ("Active connections: 1\nserver accepts handled\n 1 2 3\n", 2),
            ("Active connections: 1\nserver accepts handled requests\n 1 2\nReading: 0 Writing: 1 Waiting: 0\n", 3),
            ("Active connections: 1\nserver accepts handled requests\n 1 2 3 4\nReading: 0 Writing: 1 Waiting: 0\n", 3),
            ("Active connections: 1\nserver accepts handled requests\n 1 x 3\nReading: 0 Writing: 1 Waiting: 0\n", 3),
            ("Active connections: 1\nserver accepts handled requests\n 99999999999999999999999 2 3\n", 3),
            ("Active connections: 1\nserver accepts handled requests\n 1 2 3\n", 4),
            ("Active connections: 1\nserver accepts handled requests\n 1 2 3\nReading: 0 Writing: 1\n", 4),
            ("Active connections: 1\nserver accepts handled requests\n 1 2 3\nReading: 0 Waiting: 1 Writing: 0\n", 4),
            ("\u{0}\u{1}\u{fffd}", 1),
        ] {
            let error = StubStatus::parse(page).unwrap_err();
            assert_eq!(error.line, line, "{page:?}: {error}");
            assert!(error.to_string().starts_with("not an nginx stub_status page: line"), "{error}");
        }
    }

    fn raw(requests: u64, accepted: u64) -> StubStatus {
        StubStatus { active: 3, accepted, handled: accepted, requests, reading: 0, writing: 1, waiting: 2 }
    }

    fn own(requests: u64, connections: u64) -> OwnTraffic {
        OwnTraffic { requests, connections }
    }

    #[test]
    fn own_requests_are_subtracted() {
        let mut rule = OwnTrafficRule::default();
        // 10 probes and this read = 11 own requests; the site made 100.
        let served = rule.apply(raw(111, 61), own(11, 11), Some(7));
        assert_eq!((served.requests, served.accepted, served.handled), (100, 50, 50));
        assert_eq!((served.active, served.writing, served.waiting), (2, 0, 2), "the read's own connection");
        // 5 more probes + read, 20 more site requests.
        let served = rule.apply(raw(137, 70), own(17, 17), Some(7));
        assert_eq!((served.requests, served.accepted), (120, 53));
    }

    #[test]
    fn a_probe_counted_by_nginx_before_us_never_makes_the_counter_dip() {
        let mut rule = OwnTrafficRule::default();
        assert_eq!(rule.apply(raw(111, 61), own(11, 11), Some(7)).requests, 100);
        // nginx counted one probe whose answer we have not read yet: 101 for a moment...
        assert_eq!(rule.apply(raw(113, 63), own(12, 12), Some(7)).requests, 101);
        // ...then we count it too: 100 by subtraction, but the served counter holds at 101.
        assert_eq!(rule.apply(raw(114, 64), own(14, 14), Some(7)).requests, 101);
        assert_eq!(rule.apply(raw(120, 65), own(15, 15), Some(7)).requests, 105);
    }

    #[test]
    fn a_new_master_starts_the_subtraction_again() {
        let mut rule = OwnTrafficRule::default();
        assert_eq!(rule.apply(raw(1000, 500), own(100, 100), Some(7)).requests, 900);
        // nginx restarted: its counters start from zero; since the last reading nginx-ha made
        // 3 requests (2 probes and this read) and the site 10.
        let served = rule.apply(raw(13, 13), own(103, 103), Some(8));
        assert_eq!((served.requests, served.accepted), (10, 10));
        assert_eq!(rule.apply(raw(20, 15), own(104, 104), Some(8)).requests, 16);
        // A new master pid alone (counters not yet past the old ones' values) also counts.
        assert_eq!(rule.apply(raw(30, 20), own(105, 105), Some(9)).requests, 29);
        // An unknown master pid is no change of master.
        assert_eq!(rule.apply(raw(40, 22), own(106, 106), None).requests, 38);
        assert_eq!(rule.apply(raw(41, 23), own(107, 107), Some(9)).requests, 38);
    }

    #[test]
    fn never_below_zero() {
        let mut rule = OwnTrafficRule::default();
        // An adopted nginx that served nothing but us, and more of our requests than it counted.
        let served = rule.apply(StubStatus { requests: 2, accepted: 2, ..Default::default() }, own(5, 5), None);
        assert_eq!(served, SiteCounters::default());
    }
}
