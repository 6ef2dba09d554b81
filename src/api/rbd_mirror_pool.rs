//! `RbdMirrorPool`: one RBD pool mirrored between two sites.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::DeletionPolicy;
pub use crate::sync::frame::ChecksumKind;

/// One RBD pool mirrored between two `CephSite`s by rbd-mirror (or by cephdr's delta-sync engine).
#[derive(CustomResource, KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "cephdr.io",
    version = "v1alpha1",
    kind = "RbdMirrorPool",
    namespaced,
    status = "RbdMirrorPoolStatus",
    shortname = "rmp",
    category = "cephdr",
    printcolumn(name = "Pool", type_ = "string", json_path = ".spec.pool"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Primary", type_ = "string", json_path = ".status.primarySite"),
    printcolumn(name = "Health", type_ = "string", json_path = ".status.summary.health"),
    printcolumn(
        name = "Max Lag",
        type_ = "integer",
        json_path = ".status.summary.maxLagSeconds"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    )
)]
#[x_kube(
    validation = Rule::new("self.mode != 'pool' || self.images.mirrorMode == 'journal'").message("mode: pool mirrors journaled images only; use mode: image for snapshot mirroring"),
    validation = Rule::new("size(self.snapshotSchedules) == 0 || self.images.mirrorMode == 'snapshot'").message("snapshotSchedules apply to snapshot mirroring only"),
    validation = Rule::new("self.engine != 'delta-sync' || self.images.mirrorMode == 'snapshot'").message("the delta-sync engine ships snapshot deltas: set images.mirrorMode: snapshot"),
    validation = Rule::new("self.engine != 'delta-sync' || size(self.snapshotSchedules) > 0").message("the delta-sync engine syncs on snapshotSchedules: set at least one"),
    validation = Rule::new("!has(self.deltaSync) || self.engine == 'delta-sync'").message("deltaSync applies to engine: delta-sync only"),
    validation = Rule::new("self.sites.filter(s, s.role == 'primary').size() == 1").message("exactly one site must have role: primary"),
    validation = Rule::new("self.sites[0].site != self.sites[1].site").message("the two sites must differ")
)]
#[serde(rename_all = "camelCase")]
pub struct RbdMirrorPoolSpec {
    /// Pool name in Ceph, the same on both sites.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("pool is immutable"))]
    pub pool: String,
    /// `image`: only the selected images mirror; `pool`: every journaled image mirrors.
    #[serde(default)]
    pub mode: PoolMirrorMode,
    /// The two sites and their roles. Roles name where images are primary when the pool is first set up;
    /// afterwards a `FailoverRequest` moves them and status reports where each image is primary.
    #[schemars(length(min = 2, max = 2))]
    pub sites: Vec<PoolSite>,
    /// `one-way`: the secondary receives; `two-way`: both sites run rbd-mirror and can take over without
    /// reconfiguration (needed for failback).
    #[serde(default)]
    pub direction: MirrorDirection,
    #[serde(default)]
    pub images: ImageSelector,
    /// Mirror-snapshot schedules for snapshot mirroring.
    #[serde(default)]
    #[schemars(length(max = 8))]
    pub snapshot_schedules: Vec<SnapshotSchedule>,
    /// Target recovery point in seconds: an image lagging more sets `RpoMet=False`.
    #[schemars(range(min = 1, max = 604800))]
    pub rpo_seconds: Option<u32>,
    /// `rbd-mirror`: Ceph's own mirroring; `delta-sync`: cephdr ships snapshot deltas from the primary
    /// site's agent to the other site's `cephdr sync serve` receiver (its `CephSite` names it in `sync`),
    /// on the times `snapshotSchedules` give. Immutable: the other engine's configuration would stay in Ceph.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("engine is immutable: create a new RbdMirrorPool for the other engine"))]
    pub engine: ReplicationEngine,
    /// How delta-sync transfers travel (engine `delta-sync` only).
    pub delta_sync: Option<DeltaSyncOptions>,
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

#[derive(JsonSchema, Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PoolMirrorMode {
    #[default]
    Image,
    Pool,
}

#[derive(KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PoolSite {
    /// A `CephSite` in this namespace.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"))]
    pub site: String,
    pub role: SiteRole,
}

#[derive(JsonSchema, Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SiteRole {
    Primary,
    Secondary,
}

#[derive(JsonSchema, Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MirrorDirection {
    #[default]
    OneWay,
    TwoWay,
}

#[derive(JsonSchema, Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicationEngine {
    #[default]
    RbdMirror,
    DeltaSync,
}

/// How delta-sync transfers travel.
#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeltaSyncOptions {
    /// Per-chunk checksum: `crc32c` catches transmission errors at a few GB/s; `blake3` is cryptographic.
    #[serde(default)]
    pub checksum: ChecksumKind,
    /// zstd level for chunks (1 fastest, 19 smallest); unset: no compression.
    #[schemars(range(min = 1, max = 19))]
    pub zstd_level: Option<i32>,
    /// Average bytes per second on the wire, per transfer; unset: no limit.
    #[schemars(range(min = 4096))]
    pub bytes_per_second: Option<u64>,
    /// Transfers running at once for this pool (default 4).
    #[schemars(range(min = 1, max = 64))]
    pub max_concurrent_transfers: Option<u32>,
    /// Sync snapshots the copy keeps per image, the newest synced one included (default 1): points in time
    /// it can be restored or rolled back to.
    #[schemars(range(min = 1, max = 1000))]
    pub keep_snapshots: Option<u32>,
}

/// Which images mirror, and how.
#[derive(KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(self.all && size(self.names) > 0)").message("set either all: true or names, not both"))]
pub struct ImageSelector {
    #[serde(default)]
    pub mirror_mode: ImageMirrorMode,
    /// Mirror every image of the pool.
    #[serde(default)]
    pub all: bool,
    /// Mirror these images.
    #[serde(default)]
    #[schemars(
        length(max = 4096),
        inner(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub names: Vec<String>,
}

impl Default for ImageSelector {
    fn default() -> Self {
        ImageSelector {
            mirror_mode: ImageMirrorMode::Snapshot,
            all: true,
            names: Vec::new(),
        }
    }
}

#[derive(JsonSchema, Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ImageMirrorMode {
    #[default]
    Snapshot,
    Journal,
}

/// A mirror-snapshot schedule, as `rbd mirror snapshot schedule add` takes it.
#[derive(KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotSchedule {
    /// Minutes, hours or days: `15m`, `1h`, `1d`.
    #[schemars(regex(pattern = r"^[1-9][0-9]{0,4}[mhd]$"))]
    pub interval: String,
    /// First snapshot time of day, `HH:MM:SS` (UTC).
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]$"))]
    pub start_time: Option<String>,
}

impl SnapshotSchedule {
    /// The interval in seconds (the schema guarantees the format).
    pub fn interval_seconds(&self) -> Option<u64> {
        let (number, unit) = self.interval.split_at(self.interval.len().checked_sub(1)?);
        let n: u64 = number.parse().ok()?;
        Some(
            n * match unit {
                "m" => 60,
                "h" => 3600,
                "d" => 86400,
                _ => return None,
            },
        )
    }
}

#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RbdMirrorPoolStatus {
    pub observed_generation: Option<i64>,
    /// The site where the pool's images are primary; empty while they are split between sites.
    pub primary_site: Option<String>,
    #[serde(default)]
    pub peers: Vec<PeerStatus>,
    #[serde(default)]
    pub daemons: Vec<DaemonStatus>,
    #[serde(default)]
    pub images: Vec<ImageStatus>,
    pub summary: Option<PoolSummary>,
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    pub site: String,
    pub peer_site: String,
    pub uuid: String,
    /// `rx-only`, `tx-only` or `rx-tx`, as Ceph reports it.
    pub direction: String,
}

#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DaemonStatus {
    pub site: String,
    /// `OK`, `WARNING`, `ERROR` or `NotRunning`.
    pub health: String,
}

#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageStatus {
    pub name: String,
    pub primary_site: Option<String>,
    /// rbd-mirror's state on the receiving site: `replaying`, `syncing`, `stopped`, `error`, `unknown`...
    pub state: String,
    pub description: Option<String>,
    pub last_sync_time: Option<Time>,
    pub lag_seconds: Option<u64>,
    /// Delta-sync: the newest snapshot both sites hold.
    pub synced_snapshot: Option<String>,
    /// Delta-sync: the image's newest transfer, running or finished.
    pub last_transfer: Option<TransferStatus>,
}

/// One delta-sync transfer of an image, as the primary site's agent reports it.
#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TransferStatus {
    /// None for a full copy.
    pub from_snapshot: Option<String>,
    pub to_snapshot: String,
    pub start_time: Option<Time>,
    /// Set once it finished.
    pub duration_seconds: Option<u64>,
    /// Bytes the delta changed.
    pub bytes_changed: Option<u64>,
    /// Bytes on the wire, after compression, framing included.
    pub bytes_shipped: Option<u64>,
    /// Why it failed, after its retries.
    pub error: Option<String>,
}

#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PoolSummary {
    /// `OK`, `WARNING` or `ERROR`.
    pub health: String,
    pub images: u32,
    pub max_lag_seconds: Option<u64>,
    /// Count of images per state.
    #[serde(default)]
    pub states: std::collections::BTreeMap<String, u32>,
}

impl RbdMirrorPoolSpec {
    pub fn site_with_role(&self, role: SiteRole) -> Option<&str> {
        self.sites
            .iter()
            .find(|s| s.role == role)
            .map(|s| s.site.as_str())
    }

    /// The pool's site that is not `site` (the schema requires two different sites).
    pub fn other_site(&self, site: &str) -> Option<&str> {
        self.sites.iter().map(|s| s.site.as_str()).find(|s| *s != site)
    }

    /// The site with `role: primary` and the other one; `Err` says why the spec names no such pair.
    pub fn primary_and_other(&self) -> Result<(&str, &str), String> {
        let primary = self
            .site_with_role(SiteRole::Primary)
            .ok_or("exactly one site must have role: primary")?;
        Ok((
            primary,
            self.other_site(primary).ok_or("the two sites must differ")?,
        ))
    }
}

/// Annotation on a delta-sync `RbdMirrorPool`: the site its images are primary on now, set by a
/// `FailoverRequest`. Images of a delta-sync pool are plain RBD images on both sites, so Ceph holds no
/// primary flag to read this from. It lives outside the spec so that a GitOps tool owning the spec does
/// not undo a failover; without it, the site with `role: primary` is the primary.
pub const PRIMARY_SITE_ANNOTATION: &str = "cephdr.io/primary-site";

impl RbdMirrorPool {
    /// Delta-sync: the site the images are primary on now, and the other one; `Err` says why the pool
    /// names no valid primary.
    pub fn delta_sync_sites(&self) -> Result<(&str, &str), String> {
        let primary = match self.annotations().get(PRIMARY_SITE_ANNOTATION) {
            Some(site) if self.spec.sites.iter().any(|s| &s.site == site) => site.as_str(),
            Some(site) => {
                return Err(format!(
                    "annotation {PRIMARY_SITE_ANNOTATION} names site {site}, which is not one of the pool's sites"
                ))
            }
            None => return self.spec.primary_and_other(),
        };
        let copy = self.spec.other_site(primary).ok_or("the two sites must differ")?;
        Ok((primary, copy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(annotation: Option<&str>) -> RbdMirrorPool {
        let mut pool: RbdMirrorPool = serde_json::from_value(serde_json::json!({
            "apiVersion": "cephdr.io/v1alpha1",
            "kind": "RbdMirrorPool",
            "metadata": {"name": "rbd", "namespace": "dr"},
            "spec": {
                "pool": "rbd",
                "engine": "delta-sync",
                "sites": [{"site": "site-a", "role": "primary"}, {"site": "site-b", "role": "secondary"}],
                "snapshotSchedules": [{"interval": "1h"}]
            }
        }))
        .unwrap();
        if let Some(site) = annotation {
            pool.annotations_mut()
                .insert(PRIMARY_SITE_ANNOTATION.into(), site.into());
        }
        pool
    }

    #[test]
    fn the_annotation_names_the_delta_sync_primary_and_the_spec_role_stands_in_without_it() {
        assert_eq!(pool(None).delta_sync_sites(), Ok(("site-a", "site-b")));
        assert_eq!(pool(Some("site-b")).delta_sync_sites(), Ok(("site-b", "site-a")));
        assert_eq!(pool(Some("site-a")).delta_sync_sites(), Ok(("site-a", "site-b")));
        let unknown = pool(Some("site-c")).delta_sync_sites().unwrap_err();
        assert!(unknown.contains("site-c"), "{unknown}");
    }
}
