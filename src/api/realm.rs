//! `CephRealm`: an RGW realm, its zonegroups and their sync policies.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DeletionPolicy, SecretRef};

/// An RGW multisite realm. Its zones are `CephZone` resources that name it; the realm is created on the
/// site of the master zone of the master zonegroup.
#[derive(CustomResource, KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "cephdr.io",
    version = "v1alpha1",
    kind = "CephRealm",
    namespaced,
    status = "CephRealmStatus",
    shortname = "crealm",
    category = "cephdr",
    printcolumn(name = "Master Zone", type_ = "string", json_path = ".status.masterZone"),
    printcolumn(name = "Epoch", type_ = "integer", json_path = ".status.period.epoch"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct CephRealmSpec {
    /// The zonegroups of the realm; exactly one is the master.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(
        merge_strategy = ListMerge::Map(vec!["name".into()]),
        validation = Rule::new("self.filter(g, g.master).size() == 1").message("exactly one zoneGroup must have master: true")
    )]
    pub zone_groups: Vec<ZoneGroupSpec>,
    /// Secret with `access-key` and `secret-key` of the system user that zones sync with. Generated (and
    /// owned by this realm) when absent.
    pub sync_user_secret_ref: Option<SecretRef>,
    /// Whether deleting the resource removes the realm from Ceph.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// One zonegroup of the realm.
#[derive(KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ZoneGroupSpec {
    /// Zonegroup name in Ceph.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"))]
    pub name: String,
    /// Whether this is the realm's master zonegroup (metadata authority).
    #[serde(default)]
    pub master: bool,
    /// Sync policy of the zonegroup: which zones replicate which buckets. Set once every zone it names is
    /// in the zonegroup: Ceph would keep the name of a zone it does not know yet and never match the zone.
    pub sync_policy: Option<SyncPolicy>,
}

/// RGW sync policy: groups of flows (which zones may sync) and pipes (what data flows).
#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SyncPolicy {
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["id".into()]))]
    pub groups: Vec<SyncGroup>,
}

#[derive(KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.bucket) || self.flows.size() == 0").message("a bucket-level group takes pipes only; flows belong to the zonegroup-level group"))]
pub struct SyncGroup {
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"))]
    pub id: String,
    /// `enabled` syncs, `allowed` permits sync that a bucket-level group enables, `forbidden` blocks it. To
    /// replicate only some buckets, make the zonegroup's group `allowed` and give each of them an `enabled`
    /// bucket-level group: on Ceph Pacific a bucket-level `forbidden` group does not stop the sync that an
    /// `enabled` zonegroup group allows.
    pub status: SyncGroupStatus,
    /// Set to make this a bucket-level group that refines the zonegroup policy for one bucket. The bucket
    /// must exist: Ceph keeps the group in the bucket's metadata, which reaches the other zones by metadata
    /// sync (no period commit).
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"))]
    pub bucket: Option<String>,
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub flows: Vec<SyncFlow>,
    #[serde(default)]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["id".into()]))]
    pub pipes: Vec<SyncPipe>,
}

#[derive(JsonSchema, Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SyncGroupStatus {
    Enabled,
    Allowed,
    Forbidden,
}

/// Zones that may sync: all with each other (`symmetrical`), or one source to one destination.
#[derive(KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type == 'symmetrical' ? self.zones.size() >= 2 && !has(self.sourceZone) && !has(self.destZone) : has(self.sourceZone) && has(self.destZone) && self.zones.size() == 0").message("a symmetrical flow lists two or more zones; a directional flow names sourceZone and destZone"))]
pub struct SyncFlow {
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"))]
    pub id: String,
    #[serde(rename = "type")]
    pub flow_type: SyncFlowType,
    #[serde(default)]
    pub zones: Vec<String>,
    pub source_zone: Option<String>,
    pub dest_zone: Option<String>,
}

#[derive(JsonSchema, Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SyncFlowType {
    Symmetrical,
    Directional,
}

/// What data flows: from source zones' buckets to destination zones' buckets.
#[derive(KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SyncPipe {
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"))]
    pub id: String,
    /// Source zones; `["*"]` for all.
    #[schemars(length(min = 1))]
    pub source_zones: Vec<String>,
    /// Destination zones; `["*"]` for all.
    #[schemars(length(min = 1))]
    pub dest_zones: Vec<String>,
    /// Source bucket, `*` for all (default).
    pub source_bucket: Option<String>,
    /// Destination bucket, `*` for the same name (default).
    pub dest_bucket: Option<String>,
    /// Only objects whose key starts with this prefix.
    pub prefix: Option<String>,
}

#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CephRealmStatus {
    pub observed_generation: Option<i64>,
    pub realm_id: Option<String>,
    pub period: Option<PeriodStatus>,
    pub master_zone_group: Option<String>,
    pub master_zone: Option<String>,
    /// Name of the Secret holding the sync user's keys.
    pub sync_user_secret: Option<String>,
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PeriodStatus {
    pub id: String,
    pub epoch: u32,
}

impl CephRealmSpec {
    pub fn master_zone_group(&self) -> Option<&ZoneGroupSpec> {
        self.zone_groups.iter().find(|g| g.master)
    }
}
