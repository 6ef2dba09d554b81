//! `CephSite`: one Ceph cluster and how the operator reaches its cephdr agent.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::SecretKeyRef;

/// One Ceph cluster, reached through the cephdr agent that runs beside it.
#[derive(CustomResource, KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "cephdr.io",
    version = "v1alpha1",
    kind = "CephSite",
    namespaced,
    status = "CephSiteStatus",
    shortname = "csite",
    category = "cephdr",
    printcolumn(name = "Reachable", type_ = "boolean", json_path = ".status.reachable"),
    printcolumn(name = "Health", type_ = "string", json_path = ".status.health"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.cephVersion"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct CephSiteSpec {
    /// How to reach this site's cephdr agent.
    pub agent: AgentEndpoint,
    /// The name this site has in Ceph's RBD mirroring peer lists. Defaults to the resource's name.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"))]
    pub ceph_site_name: Option<String>,
    /// This site's delta-sync receiver (`cephdr sync serve`), for pools with `engine: delta-sync` that
    /// replicate to this site.
    pub sync: Option<SyncEndpoint>,
}

/// Where the site's delta-sync receiver listens and the credentials to send to it.
#[derive(KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SyncEndpoint {
    /// `host:port` of the receiver, e.g. `sync-b.example:7444` or `[fd00::2]:7444`.
    #[schemars(
        regex(pattern = r"^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$"),
        length(max = 260)
    )]
    pub address: String,
    /// The name the receiver's certificate carries; defaults to the host of `address`.
    #[schemars(length(min = 1, max = 253))]
    pub server_name: Option<String>,
    /// The token the receiver accepts.
    pub token_secret_ref: SecretKeyRef,
    /// PEM CA bundle that signed the receiver's certificate. Without it the system roots are used.
    pub ca_secret_ref: Option<SecretKeyRef>,
}

impl SyncEndpoint {
    /// The name the receiver's certificate must carry.
    pub fn server_name(&self) -> &str {
        self.server_name.as_deref().unwrap_or_else(|| {
            let host = self
                .address
                .rsplit_once(':')
                .map_or(self.address.as_str(), |(host, _)| host);
            host.trim_start_matches('[').trim_end_matches(']')
        })
    }
}

/// The agent's HTTPS endpoint and the credentials to call it.
#[derive(KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentEndpoint {
    /// HTTPS URL of the agent, e.g. `https://agent-a.example:7443`.
    #[schemars(regex(pattern = r"^https://[^\s/]+(:[0-9]{1,5})?/?$"), length(max = 2048))]
    pub url: String,
    /// The bearer token the agent accepts.
    pub token_secret_ref: SecretKeyRef,
    /// PEM CA bundle that signed the agent's serving certificate. Without it the system roots are used.
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// Timeout of one agent call in seconds (default 30).
    #[schemars(range(min = 1, max = 600))]
    pub timeout_seconds: Option<u32>,
}

/// What the operator last observed of the site.
#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CephSiteStatus {
    pub observed_generation: Option<i64>,
    /// Whether the last probe of the agent succeeded.
    pub reachable: Option<bool>,
    pub fsid: Option<String>,
    pub ceph_version: Option<String>,
    /// Ceph's overall health: HEALTH_OK, HEALTH_WARN or HEALTH_ERR.
    pub health: Option<String>,
    /// Ceph's active health checks, e.g. `POOL_APP_NOT_ENABLED`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<String>,
    pub last_probe_time: Option<Time>,
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

impl CephSite {
    /// The name this site has in Ceph's peer lists.
    pub fn ceph_site_name(&self) -> String {
        self.spec
            .ceph_site_name
            .clone()
            .unwrap_or_else(|| kube::ResourceExt::name_any(self))
    }
}
