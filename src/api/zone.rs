//! `CephZone`: one RGW zone of a realm, on one site.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::DeletionPolicy;

/// One RGW zone of a `CephRealm`, served by the RGW of one `CephSite`.
#[derive(CustomResource, KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "cephdr.io",
    version = "v1alpha1",
    kind = "CephZone",
    namespaced,
    status = "CephZoneStatus",
    shortname = "czone",
    category = "cephdr",
    printcolumn(name = "Realm", type_ = "string", json_path = ".spec.realm"),
    printcolumn(name = "Site", type_ = "string", json_path = ".spec.site"),
    printcolumn(name = "Role", type_ = "string", json_path = ".status.role"),
    printcolumn(name = "Lag", type_ = "integer", json_path = ".status.lagSeconds"),
    printcolumn(
        name = "Synced",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Synced\")].status"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CephZoneSpec {
    /// The `CephRealm` (in this namespace) the zone belongs to.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("realm is immutable: create a new CephZone to move a zone"))]
    pub realm: String,
    /// Name of one of the realm's zonegroups.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("zoneGroup is immutable"))]
    pub zone_group: String,
    /// The `CephSite` whose RGW serves this zone.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("site is immutable"))]
    pub site: String,
    /// Zone name in Ceph. Defaults to the resource's name.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("zoneName is immutable"))]
    pub zone_name: Option<String>,
    /// Whether this zone is the zonegroup's master when it joins. Afterwards only a `FailoverRequest` moves
    /// the master (`status.role` says where it is); changing this field then does not.
    #[serde(default)]
    pub master: bool,
    /// URLs of the zone's RGW endpoints, as other zones reach them.
    #[schemars(
        length(min = 1, max = 16),
        inner(regex(pattern = r"^https?://[^\s/]+(:[0-9]{1,5})?/?$"), length(max = 2048))
    )]
    pub endpoints: Vec<String>,
    /// Refuse writes through this zone (a standby secondary).
    #[serde(default)]
    pub read_only: bool,
    /// Target recovery point in seconds: the zone's sync lag above it sets `RpoMet=False`.
    #[schemars(range(min = 1, max = 604800))]
    pub rpo_seconds: Option<u32>,
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

#[derive(JsonSchema, Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ZoneRole {
    Master,
    Secondary,
}

#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CephZoneStatus {
    pub observed_generation: Option<i64>,
    pub zone_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<ZoneRole>,
    pub sync: Option<ZoneSyncStatus>,
    /// Age in seconds of the oldest change not yet synced from any source zone.
    pub lag_seconds: Option<u64>,
    pub last_sync_check: Option<Time>,
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ZoneSyncStatus {
    pub metadata: Option<SyncProgress>,
    #[serde(default)]
    pub data: Vec<SourceSyncProgress>,
}

#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SyncProgress {
    /// `init`, `building-full-sync-maps`, `full-sync`, `incremental-sync`, `caught-up` or `behind`.
    pub state: String,
    pub behind_shards: u32,
    pub oldest_change_seconds: Option<u64>,
}

#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SourceSyncProgress {
    pub source: String,
    pub state: String,
    pub behind_shards: u32,
    pub oldest_change_seconds: Option<u64>,
}

impl CephZone {
    pub fn zone_name(&self) -> String {
        self.spec
            .zone_name
            .clone()
            .unwrap_or_else(|| kube::ResourceExt::name_any(self))
    }
}
