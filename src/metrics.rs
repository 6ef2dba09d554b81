//! Prometheus metrics: prefix `cephdr_`, base units, bounded labels.

use std::{sync::atomic::AtomicU64, time::Instant};

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabels {
    site: String,
    op: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ImageLabels {
    site: String,
    pool: String,
    image: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ZoneLabels {
    zone: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailoverLabels {
    action: &'static str,
    outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    // 5 ms .. ~80 s: a reconcile or agent call; failovers of many images fit the upper buckets.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: HistogramFamily<ControllerLabels>,
    agent_request_duration: HistogramFamily<AgentLabels>,
    image_lag: Family<ImageLabels, Gauge<f64, AtomicU64>>,
    rgw_behind_shards: Family<ZoneLabels, Gauge>,
    rgw_lag: Family<ZoneLabels, Gauge<f64, AtomicU64>>,
    failover_duration: HistogramFamily<FailoverLabels>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cephdr");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        registry.register("reconciles", "Reconciles run, per controller", reconciles.clone());
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, per controller and reason",
            reconcile_errors.clone(),
        );
        let reconcile_duration = HistogramFamily::<ControllerLabels>::new_with_constructor(seconds_histogram);
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            reconcile_duration.clone(),
        );
        let agent_request_duration = HistogramFamily::<AgentLabels>::new_with_constructor(seconds_histogram);
        registry.register(
            "agent_request_duration_seconds",
            "Duration of one agent call",
            agent_request_duration.clone(),
        );
        let image_lag = Family::<ImageLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "rbd_image_lag_seconds",
            "Age of the newest snapshot a mirrored image has synced",
            image_lag.clone(),
        );
        let rgw_behind_shards = Family::<ZoneLabels, Gauge>::default();
        registry.register(
            "rgw_sync_behind_shards",
            "Metadata and data log shards a zone is behind",
            rgw_behind_shards.clone(),
        );
        let rgw_lag = Family::<ZoneLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "rgw_sync_lag_seconds",
            "Age of the oldest change a zone has not synced",
            rgw_lag.clone(),
        );
        let failover_duration = HistogramFamily::<FailoverLabels>::new_with_constructor(seconds_histogram);
        registry.register(
            "failover_duration_seconds",
            "Duration of finished FailoverRequests",
            failover_duration.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            agent_request_duration,
            image_lag,
            rgw_behind_shards,
            rgw_lag,
            failover_duration,
        }
    }
}

/// Records a reconcile's duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        let labels = ControllerLabels {
            controller: self.controller,
        };
        self.metrics
            .reconcile_duration
            .get_or_create(&labels)
            .observe(self.start.elapsed().as_secs_f64());
    }
}

impl Metrics {
    pub fn reconcile_started(&self, controller: &'static str) -> ReconcileTimer<'_> {
        self.reconciles
            .get_or_create(&ControllerLabels { controller })
            .inc();
        ReconcileTimer {
            metrics: self,
            controller,
            start: Instant::now(),
        }
    }

    pub fn reconcile_failed(&self, controller: &'static str, reason: &'static str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels { controller, reason })
            .inc();
    }

    pub fn agent_request(&self, site: &str, op: &'static str, outcome: &'static str, seconds: f64) {
        let labels = AgentLabels {
            site: site.to_string(),
            op,
            outcome,
        };
        self.agent_request_duration
            .get_or_create(&labels)
            .observe(seconds);
    }

    pub fn set_image_lag(&self, site: &str, pool: &str, image: &str, seconds: f64) {
        let labels = ImageLabels {
            site: site.into(),
            pool: pool.into(),
            image: image.into(),
        };
        self.image_lag.get_or_create(&labels).set(seconds);
    }

    pub fn set_rgw_sync(&self, zone: &str, behind_shards: u32, lag_seconds: f64) {
        let labels = ZoneLabels { zone: zone.into() };
        self.rgw_behind_shards
            .get_or_create(&labels)
            .set(i64::from(behind_shards));
        self.rgw_lag.get_or_create(&labels).set(lag_seconds);
    }

    pub fn failover_finished(&self, action: &'static str, outcome: &'static str, seconds: f64) {
        self.failover_duration
            .get_or_create(&FailoverLabels { action, outcome })
            .observe(seconds);
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_follow_prometheus_conventions() {
        let metrics = Metrics::default();
        drop(metrics.reconcile_started("rbdmirrorpool"));
        metrics.reconcile_failed("rbdmirrorpool", "AgentUnreachable");
        metrics.set_image_lag("site-b", "rbd", "db", 12.5);
        let text = metrics.render();
        assert!(
            text.contains("cephdr_reconciles_total{controller=\"rbdmirrorpool\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "cephdr_reconcile_errors_total{controller=\"rbdmirrorpool\",reason=\"AgentUnreachable\"} 1"
        ));
        assert!(text.contains("cephdr_reconcile_duration_seconds_count{controller=\"rbdmirrorpool\"} 1"));
        assert!(text.contains("cephdr_rbd_image_lag_seconds{site=\"site-b\",pool=\"rbd\",image=\"db\"} 12.5"));
    }
}
