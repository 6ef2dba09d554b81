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
struct TransferBytesLabels {
    site: String,
    pool: String,
    image: String,
    /// `changed` (the delta's extents) or `shipped` (on the wire).
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolSiteLabels {
    site: String,
    pool: String,
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
    image_replaying: Family<ImageLabels, Gauge>,
    rbd_pool_rpo: Family<PoolSiteLabels, Gauge>,
    rbd_mirror_daemon_up: Family<PoolSiteLabels, Gauge>,
    rgw_behind_shards: Family<ZoneLabels, Gauge>,
    rgw_lag: Family<ZoneLabels, Gauge<f64, AtomicU64>>,
    rgw_zone_rpo: Family<ZoneLabels, Gauge>,
    rgw_metadata_wedged: Family<ZoneLabels, Gauge>,
    failover_duration: HistogramFamily<FailoverLabels>,
    transfer_bytes: Family<TransferBytesLabels, Gauge>,
    transfer_duration: Family<ImageLabels, Gauge<f64, AtomicU64>>,
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
        let image_replaying = Family::<ImageLabels, Gauge>::default();
        registry.register(
            "rbd_image_replaying",
            "Whether a mirrored image's copy on this site follows its primary (1: rbd-mirror replays it, or delta-sync synced it) or not (0)",
            image_replaying.clone(),
        );
        let rbd_pool_rpo = Family::<PoolSiteLabels, Gauge>::default();
        registry.register(
            "rbd_pool_rpo_seconds",
            "Recovery point objective of a mirrored pool (spec.rpoSeconds), on each of its sites",
            rbd_pool_rpo.clone(),
        );
        let rbd_mirror_daemon_up = Family::<PoolSiteLabels, Gauge>::default();
        registry.register(
            "rbd_mirror_daemon_up",
            "Whether rbd-mirror runs on a site that receives a mirrored pool (1) or not (0)",
            rbd_mirror_daemon_up.clone(),
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
        let rgw_zone_rpo = Family::<ZoneLabels, Gauge>::default();
        registry.register(
            "rgw_zone_rpo_seconds",
            "Recovery point objective of a zone (spec.rpoSeconds)",
            rgw_zone_rpo.clone(),
        );
        let rgw_metadata_wedged = Family::<ZoneLabels, Gauge>::default();
        registry.register(
            "rgw_metadata_sync_wedged",
            "Whether a zone's metadata sync has shown no progress for too long (1) or not (0)",
            rgw_metadata_wedged.clone(),
        );
        let failover_duration = HistogramFamily::<FailoverLabels>::new_with_constructor(seconds_histogram);
        registry.register(
            "failover_duration_seconds",
            "Duration of finished FailoverRequests",
            failover_duration.clone(),
        );
        let transfer_bytes = Family::<TransferBytesLabels, Gauge>::default();
        registry.register(
            "delta_sync_last_transfer_bytes",
            "Bytes the newest finished delta-sync transfer of an image changed and shipped, from its primary site",
            transfer_bytes.clone(),
        );
        let transfer_duration = Family::<ImageLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "delta_sync_last_transfer_duration_seconds",
            "Duration of the newest finished delta-sync transfer of an image, from its primary site",
            transfer_duration.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            agent_request_duration,
            image_lag,
            image_replaying,
            rbd_pool_rpo,
            rbd_mirror_daemon_up,
            rgw_behind_shards,
            rgw_lag,
            rgw_zone_rpo,
            rgw_metadata_wedged,
            failover_duration,
            transfer_bytes,
            transfer_duration,
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

    /// The newest finished delta-sync transfer of an image from `site`.
    pub fn set_last_transfer(
        &self,
        site: &str,
        pool: &str,
        image: &str,
        changed: u64,
        shipped: u64,
        seconds: f64,
    ) {
        for (kind, bytes) in [("changed", changed), ("shipped", shipped)] {
            let labels = TransferBytesLabels {
                site: site.into(),
                pool: pool.into(),
                image: image.into(),
                kind,
            };
            self.transfer_bytes
                .get_or_create(&labels)
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        let labels = ImageLabels {
            site: site.into(),
            pool: pool.into(),
            image: image.into(),
        };
        self.transfer_duration.get_or_create(&labels).set(seconds);
    }

    pub fn set_image_replaying(&self, site: &str, pool: &str, image: &str, replaying: bool) {
        let labels = ImageLabels {
            site: site.into(),
            pool: pool.into(),
            image: image.into(),
        };
        self.image_replaying
            .get_or_create(&labels)
            .set(i64::from(replaying));
    }

    pub fn set_rbd_pool_rpo(&self, site: &str, pool: &str, rpo_seconds: u32) {
        let labels = PoolSiteLabels {
            site: site.into(),
            pool: pool.into(),
        };
        self.rbd_pool_rpo
            .get_or_create(&labels)
            .set(i64::from(rpo_seconds));
    }

    pub fn set_rbd_mirror_daemon_up(&self, site: &str, pool: &str, up: bool) {
        let labels = PoolSiteLabels {
            site: site.into(),
            pool: pool.into(),
        };
        self.rbd_mirror_daemon_up
            .get_or_create(&labels)
            .set(i64::from(up));
    }

    /// A zone's recovery point objective (when its spec sets one) and whether its metadata sync is wedged.
    pub fn set_rgw_zone(&self, zone: &str, rpo_seconds: Option<u32>, metadata_wedged: bool) {
        let labels = ZoneLabels { zone: zone.into() };
        if let Some(rpo) = rpo_seconds {
            self.rgw_zone_rpo.get_or_create(&labels).set(i64::from(rpo));
        }
        self.rgw_metadata_wedged
            .get_or_create(&labels)
            .set(i64::from(metadata_wedged));
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
        metrics.set_image_replaying("site-b", "rbd", "db", true);
        metrics.set_rbd_pool_rpo("site-b", "rbd", 300);
        metrics.set_rbd_mirror_daemon_up("site-b", "rbd", false);
        metrics.set_rgw_zone("eu-b", Some(600), true);
        let text = metrics.render();
        assert!(text.contains("cephdr_rbd_image_replaying{site=\"site-b\",pool=\"rbd\",image=\"db\"} 1"));
        assert!(text.contains("cephdr_rbd_pool_rpo_seconds{site=\"site-b\",pool=\"rbd\"} 300"));
        assert!(text.contains("cephdr_rbd_mirror_daemon_up{site=\"site-b\",pool=\"rbd\"} 0"));
        assert!(text.contains("cephdr_rgw_zone_rpo_seconds{zone=\"eu-b\"} 600"));
        assert!(text.contains("cephdr_rgw_metadata_sync_wedged{zone=\"eu-b\"} 1"));
    }
}
