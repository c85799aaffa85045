//! The exposition: metric families built from a snapshot at scrape time, encoded by
//! `prometheus-client` as OpenMetrics or the Prometheus text format (0.0.4), whichever the
//! scraper's `Accept` asks for.
//!
//! Every metric nginx-ha serves goes through [`Exposition`]: a family is named once with its
//! help, type and unit, then gets one sample per label set. Nothing here keeps state between
//! scrapes, so there are no stale series: what is not in the snapshot is not served.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

/// A label set: `(name, value)` pairs, in the order they are written.
pub type Labels = Vec<(&'static str, String)>;

/// The families of one scrape, in the order they are served.
#[derive(Debug, Default)]
pub struct Exposition {
    families: Vec<Family>,
}

#[derive(Debug)]
struct Family {
    /// Without the unit and without `_total`: the encoder appends both (OpenMetrics' rule).
    name: String,
    help: String,
    unit: Option<Unit>,
    kind: Kind,
    samples: Vec<(Labels, Value)>,
}

/// A sample's value: counts are written as integers, measurements as floats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Count(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(count: u64) -> Value {
        Value::Count(count)
    }
}
impl From<u32> for Value {
    fn from(count: u32) -> Value {
        Value::Count(count.into())
    }
}
impl From<u8> for Value {
    fn from(count: u8) -> Value {
        Value::Count(count.into())
    }
}
impl From<usize> for Value {
    fn from(count: usize) -> Value {
        Value::Count(count as u64)
    }
}
impl From<bool> for Value {
    fn from(yes: bool) -> Value {
        Value::Count(yes.into())
    }
}
impl From<f64> for Value {
    fn from(value: f64) -> Value {
        Value::Float(value)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    /// Served as `NAME_total`; its value only grows while the thing it counts lives.
    Counter,
}

/// The unit of a family, appended to its name (`_seconds`, `_bytes`), as Prometheus' naming
/// guide says: base units only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseUnit {
    Seconds,
    Bytes,
}

impl Exposition {
    /// A family: `name` without unit and `_total` suffixes (for a counter `nginx_http_requests`
    /// is served as `nginx_http_requests_total`). Adding the same name again returns the
    /// family already there, so its samples stay together.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind, unit: Option<BaseUnit>) -> FamilyBuilder<'_> {
        debug_assert!(!name.ends_with("_total"), "{name}: the encoder appends _total to counters");
        let index = match self.families.iter().position(|f| f.name == name) {
            Some(index) => index,
            None => {
                self.families.push(Family {
                    name: name.to_owned(),
                    help: help.to_owned(),
                    unit: unit.map(|unit| match unit {
                        BaseUnit::Seconds => Unit::Seconds,
                        BaseUnit::Bytes => Unit::Bytes,
                    }),
                    kind,
                    samples: Vec::new(),
                });
                self.families.len() - 1
            }
        };
        FamilyBuilder { family: &mut self.families[index] }
    }

    /// A gauge family with one unlabelled sample.
    pub fn gauge(&mut self, name: &str, help: &str, value: impl Into<Value>) {
        self.family(name, help, Kind::Gauge, None).sample(Vec::new(), value);
    }

    /// A counter family with one unlabelled sample (`name` without `_total`).
    pub fn counter(&mut self, name: &str, help: &str, value: impl Into<Value>) {
        self.family(name, help, Kind::Counter, None).sample(Vec::new(), value);
    }

    /// The exposition in `format`, complete (OpenMetrics ends with `# EOF`).
    pub fn encode(self, format: Format) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail, and every name here is a constant of ours.
        let _ = match format {
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
            Format::Text => prometheus_client::encoding::prometheus_text::encode(&mut out, &registry),
        };
        out
    }
}

pub struct FamilyBuilder<'a> {
    family: &'a mut Family,
}

impl FamilyBuilder<'_> {
    pub fn sample(&mut self, labels: Labels, value: impl Into<Value>) -> &mut Self {
        self.family.samples.push((labels, value.into()));
        self
    }
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.families {
            // OpenMetrics forbids a family without samples; so does good taste.
            if family.samples.is_empty() {
                continue;
            }
            let kind = match family.kind {
                Kind::Gauge => MetricType::Gauge,
                Kind::Counter => MetricType::Counter,
            };
            let mut metric = encoder.encode_descriptor(&family.name, &family.help, family.unit.as_ref(), kind)?;
            for (labels, value) in &family.samples {
                let encode = |encoder| match (family.kind, *value) {
                    (Kind::Gauge, Value::Count(v)) => ConstGauge::new(v).encode(encoder),
                    (Kind::Gauge, Value::Float(v)) => ConstGauge::new(v).encode(encoder),
                    (Kind::Counter, Value::Count(v)) => ConstCounter::new(v).encode(encoder),
                    (Kind::Counter, Value::Float(v)) => ConstCounter::new(v).encode(encoder),
                };
                encode(metric.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

/// The exposition format a scrape is answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/openmetrics-text; version=1.0.0`: what Prometheus asks for first.
    OpenMetrics,
    /// `text/plain; version=0.0.4`: the classic format; for a scraper that asks for nothing
    /// else (curl, Zabbix, older Prometheus).
    Text,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }

    /// The format an `Accept` header prefers: the media range with the highest `q` among
    /// `application/openmetrics-text` and `text/plain` (an exact type beats `*/*` at the same
    /// q; OpenMetrics wins a tie between the two). No header, nothing we serve, or a header we
    /// cannot read: the text format, which every scraper understands.
    pub fn from_accept(accept: Option<&str>) -> Format {
        let Some(accept) = accept else { return Format::Text };
        let mut best: Option<(u16, u8, Format)> = None;
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let mut q = 1000u16;
            let mut version_ok = true;
            for parameter in parts {
                let Some((key, value)) = parameter.split_once('=') else { continue };
                let value = value.trim().trim_matches('"');
                match key.trim().to_ascii_lowercase().as_str() {
                    "q" => q = parse_q(value).unwrap_or(0),
                    // OpenMetrics 1.0.0 and its draft 0.0.1 are what prometheus-client writes;
                    // text/plain's only version is 0.0.4.
                    "version" if media == "application/openmetrics-text" => {
                        version_ok = matches!(value, "1.0.0" | "0.0.1")
                    }
                    "version" if media == "text/plain" => version_ok = value == "0.0.4",
                    _ => {}
                }
            }
            let (format, specificity) = match media.as_str() {
                "application/openmetrics-text" => (Format::OpenMetrics, 2),
                "text/plain" | "text/*" => (Format::Text, if media == "text/plain" { 2 } else { 1 }),
                "*/*" => (Format::Text, 0),
                _ => continue,
            };
            if q == 0 || !version_ok {
                continue;
            }
            let rank = |f: Format| u8::from(f == Format::OpenMetrics);
            let better = match best {
                None => true,
                Some((best_q, best_specificity, best_format)) => {
                    (q, specificity, rank(format)) > (best_q, best_specificity, rank(best_format))
                }
            };
            if better {
                best = Some((q, specificity, format));
            }
        }
        best.map_or(Format::Text, |(_, _, format)| format)
    }
}

/// An HTTP quality value (`0`, `0.5`, `1.000`) in thousandths.
fn parse_q(value: &str) -> Option<u16> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{fraction:0<3}").parse().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_asks_for_openmetrics_first() {
        // Prometheus 2.x and 3.x as they send it.
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(Format::from_accept(Some(prometheus)), Format::OpenMetrics);
        let with_protobuf = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(with_protobuf)), Format::Text);
    }

    #[test]
    fn accept_negotiation_by_quality() {
        for (accept, format) in [
            (None, Format::Text),
            (Some(""), Format::Text),
            (Some("*/*"), Format::Text),
            (Some("application/openmetrics-text"), Format::OpenMetrics),
            (Some("Application/OpenMetrics-Text; Version=1.0.0"), Format::OpenMetrics),
            (Some("text/plain;q=0.9, application/openmetrics-text;q=0.5"), Format::Text),
            (Some("text/plain;q=0.5, application/openmetrics-text;q=0.9"), Format::OpenMetrics),
            (Some("text/plain, application/openmetrics-text"), Format::OpenMetrics),
            (Some("application/openmetrics-text;q=0, text/plain"), Format::Text),
            // A version we do not write is not what was asked for.
            (Some("application/openmetrics-text;version=2.0.0, text/plain;q=0.1"), Format::Text),
            (Some("application/json"), Format::Text),
            (Some("application/openmetrics-text;q=garbage, */*;q=0.1"), Format::Text),
            (Some(";;;,,,=;q="), Format::Text),
            (Some("*/*;q=0.9, application/openmetrics-text;q=0.9"), Format::OpenMetrics),
        ] {
            assert_eq!(Format::from_accept(accept), format, "{accept:?}");
        }
    }

    #[test]
    fn quality_values() {
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("0.123"), Some(123));
        assert_eq!(parse_q("0"), Some(0));
        for bad in ["1.5", "2", "0.1234", "-1", "", "x", "0.x"] {
            assert_eq!(parse_q(bad), None, "{bad}");
        }
    }

    fn sample_exposition() -> Exposition {
        let mut out = Exposition::default();
        out.gauge("nginx_up", "1 when stub_status was read", true);
        out.counter("nginx_http_requests", "Requests", 42u64);
        out.family("process_cpu", "CPU time", Kind::Counter, Some(BaseUnit::Seconds))
            .sample(vec![("role", "master".into())], 1.5)
            .sample(vec![("role", "worker".into())], 0.25);
        out.family("empty", "never served", Kind::Gauge, None);
        out
    }

    #[test]
    fn encodes_openmetrics_with_eof_and_units() {
        let text = sample_exposition().encode(Format::OpenMetrics);
        for line in [
            "# TYPE nginx_up gauge",
            "nginx_up 1",
            "# TYPE nginx_http_requests counter",
            "nginx_http_requests_total 42",
            "# UNIT process_cpu_seconds seconds",
            "process_cpu_seconds_total{role=\"master\"} 1.5",
            "process_cpu_seconds_total{role=\"worker\"} 0.25",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("empty"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn encodes_text_format_with_total_in_type_lines() {
        let text = sample_exposition().encode(Format::Text);
        for line in [
            "# TYPE nginx_http_requests_total counter",
            "nginx_http_requests_total 42",
            "# TYPE process_cpu_seconds_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
    }
}
