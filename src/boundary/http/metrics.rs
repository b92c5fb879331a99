//! Prometheus metrics of `lxgate serve` (prometheus-client, OpenMetrics text). One
//! registry per server, in the app state. Request series are labelled by route
//! pattern, never by raw path, so their number stays bounded. Ingest counters are read
//! from `upload_jobs` when scraped: the watcher, the SAP import and the hub receiver
//! run in other processes (the watcher without any network), and only the database
//! sees every ingest.

use std::path::Path;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upload bodies stream for minutes; the upper buckets tell a slow upload from a stall.
const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0, 600.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

/// `upload_jobs` counted by boundary (ingest_mode) and status, as of the last scrape.
#[derive(Debug, Default)]
struct JobCounts(Mutex<Vec<JobCount>>);

#[derive(Debug, Clone)]
struct JobCount {
    boundary: String,
    status: String,
    jobs: u64,
    bytes: u64,
}

impl Collector for JobCounts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = self.0.lock().expect("job counts lock").clone();
        {
            let mut family = encoder.encode_descriptor(
                "lxgate_ingest",
                "Files ingested by each boundary (api, watcher, hub_transfer), by outcome: \
                 stored, or error (refused and quarantined). Read from upload_jobs when \
                 scraped, so ingests of every process count; a dedupe adds no job.",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for r in &rows {
                let labels = [
                    ("boundary", r.boundary.as_str()),
                    ("outcome", r.status.as_str()),
                ];
                ConstCounter::new(r.jobs).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "lxgate_ingest_bytes",
            "Bytes of stored files by boundary, read from upload_jobs when scraped.",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        let mut by_boundary: Vec<(&str, u64)> = Vec::new();
        for r in rows.iter().filter(|r| r.status == "stored") {
            match by_boundary.iter_mut().find(|(b, _)| *b == r.boundary) {
                Some((_, n)) => *n += r.bytes,
                None => by_boundary.push((&r.boundary, r.bytes)),
            }
        }
        for (boundary, bytes) in by_boundary {
            ConstCounter::new(bytes).encode(family.encode_family(&[("boundary", boundary)])?)?;
        }
        Ok(())
    }
}

/// State gauges read when scraped: hub exports by state (`retrying` is pending with an
/// error from the last attempt) and the items waiting in quarantine.
#[derive(Debug, Default)]
struct Backlog(Mutex<BacklogCounts>);

#[derive(Debug, Default, Clone)]
struct BacklogCounts {
    exports: Vec<(String, u64)>,
    quarantined: u64,
}

impl Collector for Backlog {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.0.lock().expect("backlog lock").clone();
        {
            let mut family = encoder.encode_descriptor(
                "lxgate_hub_exports",
                "Jobs marked for hub export, by state: pending, retrying (the last attempt \
                 failed and will be repeated), applied, failed (needs an operator, then \
                 `lxgate hub-export retry`). Read from hub_exports when scraped.",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for state in ["pending", "retrying", "applied", "failed"] {
                let n = counts
                    .exports
                    .iter()
                    .find(|(s, _)| s == state)
                    .map_or(0, |(_, n)| *n);
                ConstGauge::new(n as i64).encode(family.encode_family(&[("state", state)])?)?;
            }
        }
        let family = encoder.encode_descriptor(
            "lxgate_quarantine_items",
            "Items in the quarantine folder (one .reason file each), when scraped.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        ConstGauge::new(counts.quarantined as i64).encode(family)?;
        Ok(())
    }
}

/// `.reason` files in `dir` and its direct subfolders (orphaned-objects/).
fn quarantined(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name();
        if name.to_string_lossy().ends_with(".reason") {
            n += 1;
        } else if e.file_type().is_ok_and(|t| t.is_dir()) {
            n += std::fs::read_dir(e.path())
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".reason"))
                .count() as u64;
        }
    }
    n
}

pub struct Metrics {
    registry: Registry,
    backlog: Arc<Backlog>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    jobs: Arc<JobCounts>,
    schema_ahead: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        // Registry::register ends each HELP text with a period; the collector's texts
        // carry theirs.
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "lxgate_http_requests",
            "HTTP requests answered by lxgate serve, by route pattern and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(LATENCY_BUCKETS)) as fn() -> Histogram,
        );
        registry.register(
            "lxgate_http_request_duration_seconds",
            "Time from request to response head, by route pattern (a streamed body may take longer)",
            latency.clone(),
        );
        let jobs = Arc::new(JobCounts::default());
        registry.register_collector(Box::new(jobs.clone()));
        let schema_ahead = Gauge::default();
        registry.register(
            "lxgate_schema_migrations_ahead",
            "Applied migrations newer than this binary, each declared compatible with the release before it (this is an older release running on a newer schema), as of the last readiness check",
            schema_ahead.clone(),
        );
        let backlog = Arc::new(Backlog::default());
        registry.register_collector(Box::new(backlog.clone()));
        Metrics {
            registry,
            backlog,
            requests,
            latency,
            jobs,
            schema_ahead,
        }
    }

    pub fn observe_request(&self, route: &str, status: u16, secs: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(secs);
    }

    /// Returns the value before.
    pub fn set_schema_ahead(&self, n: usize) -> i64 {
        self.schema_ahead.set(n as i64)
    }

    /// Read the ingest counts and the backlogs from the database and the quarantine
    /// folder, then render everything.
    pub async fn scrape(
        &self,
        client: &tokio_postgres::Client,
        quarantine: &Path,
    ) -> Result<String, tokio_postgres::Error> {
        let exports = client
            .query(
                "SELECT CASE WHEN state = 'pending' AND last_error IS NOT NULL THEN 'retrying'
                        ELSE state END, count(*)
                 FROM hub_exports GROUP BY 1",
                &[],
            )
            .await?;
        *self.backlog.0.lock().expect("backlog lock") = BacklogCounts {
            exports: exports
                .iter()
                .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
                .collect(),
            quarantined: quarantined(quarantine),
        };
        let rows = client
            .query(
                "SELECT ingest_mode, status, count(*), coalesce(sum(size_bytes), 0)::bigint
                 FROM upload_jobs GROUP BY 1, 2 ORDER BY 1, 2",
                &[],
            )
            .await?;
        *self.jobs.0.lock().expect("job counts lock") = rows
            .iter()
            .map(|r| JobCount {
                boundary: r.get(0),
                status: r.get(1),
                jobs: r.get::<_, i64>(2) as u64,
                bytes: r.get::<_, i64>(3) as u64,
            })
            .collect();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        Ok(out)
    }
}
