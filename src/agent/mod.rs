//! The cluster-agent API: how controllers observe and change one Ceph cluster.
//!
//! Controllers speak only in the domain types below: no argv, no raw JSON. Observations are queries;
//! every change is a [`Step`] run through [`ClusterAgent::execute`], so the planners' output is exactly what
//! runs, what a dry run shows and what the remote agent receives over HTTPS. Each step is idempotent:
//! running it again after success changes nothing and succeeds.

pub mod backup;
pub mod ceph;
pub mod delta_sync;
pub mod faults;
pub mod remote;
pub mod server;
pub mod sim;
pub mod split;

use std::fmt;

use async_trait::async_trait;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use crate::api::realm::SyncGroup;
pub use delta_sync::{SyncImage, SyncPeer, SyncPool, Transfer, TransferOptions, TransferReport};

pub type AgentResult<T> = Result<T, AgentError>;

/// One Ceph cluster, reached directly (the Ceph CLI backend inside `cephdr agent`), over HTTPS (the
/// operator's client of that agent) or simulated in memory (tests, benchmarks, the no-Ceph demo).
#[async_trait]
pub trait ClusterAgent: Send + Sync {
    /// Cluster identity, version and health.
    async fn cluster_info(&self) -> AgentResult<ClusterInfo>;
    /// What this cluster knows of an RGW realm: the realm, its current period and the local zones.
    async fn rgw_realm(&self, realm: &str) -> AgentResult<RgwRealmState>;
    /// Sync progress of `zone` (a zone of this cluster) from every other zone of its zonegroup.
    async fn rgw_sync_status(&self, realm: &str, zone: &str) -> AgentResult<ZoneSync>;
    /// The zonegroup-level and bucket-level sync policy groups of a zonegroup.
    async fn rgw_sync_policy(&self, realm: &str, zone_group: &str) -> AgentResult<Vec<SyncGroup>>;
    /// Mirroring state of one pool: mode, peers, images, schedules, rbd-mirror daemon.
    async fn rbd_pool(&self, pool: &str) -> AgentResult<RbdPoolState>;
    /// [`rbd_pool`](Self::rbd_pool) narrowed to the named images (those that exist) and without schedules:
    /// what a caller following a few images of a large pool needs, at a cost that grows with those only.
    async fn rbd_images(&self, pool: &str, images: &[String]) -> AgentResult<RbdPoolState>;
    /// Creates a peer bootstrap token for `pool` (`rbd mirror pool peer bootstrap create`).
    async fn create_bootstrap_token(&self, pool: &str, site_name: &str) -> AgentResult<Sensitive<String>>;
    /// The size and BLAKE3 of image `pool/image` as of its snapshot `snap_id` (mirror snapshots included),
    /// read in bounded memory without writing anything. NotFound when the image or the snapshot is gone.
    async fn image_checksum(&self, pool: &str, image: &str, snap_id: u64) -> AgentResult<ImageChecksum>;
    /// The pool's images with their delta-sync snapshots and this agent's transfers of them.
    async fn sync_pool(&self, pool: &str) -> AgentResult<SyncPool>;
    /// Runs one idempotent change.
    async fn execute(&self, step: &Step) -> AgentResult<()>;
}

/// A value that must never reach a log, an Event or a status: Debug prints `<redacted>`. It serializes as the
/// plain value because the operator sends it to the agent that needs it (over TLS).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Sensitive<T>(pub T);

impl<T> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T> Sensitive<T> {
    pub fn expose(&self) -> &T {
        &self.0
    }
}

/// S3 keys of the RGW system user that zones sync with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemKeys {
    pub access_key: String,
    pub secret_key: Sensitive<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInfo {
    pub fsid: String,
    /// Ceph version, e.g. `16.2.15`.
    pub version: String,
    /// HEALTH_OK, HEALTH_WARN or HEALTH_ERR.
    pub health: String,
    /// Names of active health checks.
    pub checks: Vec<String>,
    /// A cephdr backup store (`cephdr agent --backup-dir`) rather than a Ceph cluster: `version` is
    /// cephdr's, and only delta-sync copies can live there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backup_store: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RgwRealmState {
    /// Realm id, when this cluster has the realm.
    pub realm_id: Option<String>,
    /// The realm's current period as this cluster has it.
    pub period: Option<Period>,
    /// Zones defined on this cluster (whether or not the period has them yet).
    pub local_zones: Vec<LocalZone>,
    /// Whether the sync system user exists on this cluster (only the master zone's cluster creates it;
    /// secondaries receive it by metadata sync).
    pub system_user: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Period {
    pub id: String,
    pub epoch: u32,
    pub master_zone_group: String,
    pub master_zone: String,
    pub zone_groups: Vec<ZoneGroupInfo>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZoneGroupInfo {
    pub name: String,
    pub id: String,
    pub is_master: bool,
    pub endpoints: Vec<String>,
    /// Name of the zonegroup's master zone (empty before one is set).
    pub master_zone: String,
    pub zones: Vec<ZoneInfo>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZoneInfo {
    pub name: String,
    pub id: String,
    pub endpoints: Vec<String>,
    pub read_only: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalZone {
    pub name: String,
    pub id: String,
    pub zone_group: String,
    /// The system access key the zone syncs with (none when the zone was created without one).
    pub system_access_key: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZoneSync {
    /// None on the metadata master (it does not sync metadata).
    pub metadata: Option<SyncShards>,
    pub data: Vec<SourceSync>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncShards {
    /// `init`, `building-full-sync-maps`, `sync` (from Ceph's status field).
    pub state: String,
    pub total_shards: u32,
    pub behind_shards: u32,
    /// Shards still in full sync.
    pub full_sync_shards: u32,
    /// Timestamp of the oldest change not yet applied, when any shard is behind.
    pub oldest_change: Option<Timestamp>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceSync {
    pub source_zone: String,
    pub shards: SyncShards,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolMirrorMode {
    #[default]
    Disabled,
    Image,
    Pool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerDirection {
    RxOnly,
    TxOnly,
    RxTx,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageMirrorMode {
    Snapshot,
    Journal,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RbdPoolState {
    pub exists: bool,
    pub mode: PoolMirrorMode,
    /// This cluster's site name in peer lists.
    pub site_name: Option<String>,
    pub peers: Vec<RbdPeer>,
    pub images: Vec<RbdImage>,
    /// Pool-level and image-level mirror-snapshot schedules.
    pub schedules: Vec<ScheduleEntry>,
    /// The local rbd-mirror daemon as the service map reports it; None when none runs.
    pub daemon: Option<DaemonHealth>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RbdPeer {
    pub uuid: String,
    pub site_name: String,
    pub direction: PeerDirection,
    pub mon_host: Option<String>,
    pub client_name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RbdImage {
    pub name: String,
    /// None when mirroring is disabled on the image.
    pub mirroring: Option<ImageMirroring>,
    /// rbd-mirror's view of the image on this cluster (absent on a primary without a local daemon).
    pub replay: Option<ReplayStatus>,
    /// The newest complete mirror snapshot (snapshot mode).
    pub last_mirror_snapshot: Option<MirrorSnapshot>,
}

impl RbdImage {
    /// The newest point in time this copy is known to hold: rbd-mirror's last snapshot sync, else the
    /// creation of its newest complete received (`non-primary`) mirror snapshot. rbd-mirror reports no sync
    /// time until it has synced a snapshot since it (re)started replaying the image, as after a promotion on
    /// the peer, while the snapshot it received before that is still a point the copy holds.
    pub fn synced_point(&self) -> Option<Timestamp> {
        self.replay.as_ref().and_then(|r| r.last_synced).or_else(|| {
            self.last_mirror_snapshot
                .as_ref()
                .filter(|snap| snap.state == "non-primary" && snap.complete)
                .map(|snap| snap.created)
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageMirroring {
    pub mode: ImageMirrorMode,
    pub primary: bool,
    pub global_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayStatus {
    /// Ceph's state without the `up+` prefix: `replaying`, `syncing`, `stopped`, `starting_replay`,
    /// `stopping_replay`, `error`, `unknown`.
    pub state: String,
    /// Whether an rbd-mirror daemon reports the image (`up+`).
    pub up: bool,
    pub description: String,
    /// For a non-primary image: time of the newest primary snapshot it has applied.
    pub last_synced: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MirrorSnapshot {
    pub id: u64,
    pub name: String,
    pub created: Timestamp,
    /// `primary`, `demoted`, `non-primary` (a copy received from the peer).
    pub state: String,
    pub complete: bool,
    /// For a copy received from the peer (a `.mirror.non_primary.*` snapshot): the id of the peer's
    /// snapshot it mirrors, in the peer's image.
    #[serde(default)]
    pub primary_snap_id: Option<u64>,
}

/// What one image holds as of one snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageChecksum {
    /// Bytes: the image's size at the snapshot.
    pub size: u64,
    /// BLAKE3 of those bytes, hex.
    pub blake3: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleEntry {
    /// None for a pool-level schedule.
    pub image: Option<String>,
    pub interval: String,
    pub start_time: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonHealth {
    /// `OK`, `WARNING` or `ERROR`.
    pub health: String,
}

/// One change to one Ceph cluster. Variants are verbs; all are idempotent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "PascalCase")]
pub enum Step {
    // --- RGW multisite
    CreateRealm {
        realm: String,
    },
    CreateZoneGroup {
        realm: String,
        zone_group: String,
        endpoints: Vec<String>,
        master: bool,
    },
    /// Creates the zone, or brings its endpoints, keys and flags to these values.
    CreateZone {
        realm: String,
        zone_group: String,
        zone: String,
        endpoints: Vec<String>,
        master: bool,
        read_only: bool,
        keys: SystemKeys,
    },
    /// Changes flags of an existing zone: master (`--master`) and read-only.
    ModifyZone {
        realm: String,
        zone_group: String,
        zone: String,
        master: Option<bool>,
        read_only: Option<bool>,
    },
    CreateSystemUser {
        uid: String,
        keys: SystemKeys,
    },
    /// `period update --commit`.
    CommitPeriod {
        realm: String,
    },
    /// `realm pull` from the master zone's endpoint with the system keys.
    PullRealm {
        realm: String,
        url: String,
        keys: SystemKeys,
    },
    /// `period pull`: a zone that missed period changes catches up.
    PullPeriod {
        realm: String,
        url: String,
        keys: SystemKeys,
    },
    /// `sync init` / restarting metadata sync on a wedged secondary.
    InitMetadataSync {
        realm: String,
        zone: String,
    },
    /// Replaces the zonegroup's sync policy groups with these.
    SetSyncPolicy {
        realm: String,
        zone_group: String,
        groups: Vec<SyncGroup>,
    },
    /// Removes the zone from its zonegroup and deletes it.
    DeleteZone {
        realm: String,
        zone_group: String,
        zone: String,
    },
    /// Deletes the zonegroup's local object; the next period commit drops it from the period.
    DeleteZoneGroup {
        realm: String,
        zone_group: String,
    },
    DeleteRealm {
        realm: String,
    },

    // --- RBD mirroring
    /// Creates the pool and initialises it for RBD.
    CreatePool {
        pool: String,
    },
    EnablePoolMirroring {
        pool: String,
        mode: PoolMirrorMode,
        site_name: String,
    },
    DisablePoolMirroring {
        pool: String,
    },
    ImportPeer {
        pool: String,
        token: Sensitive<String>,
        direction: PeerDirection,
        site_name: String,
    },
    SetPeerDirection {
        pool: String,
        uuid: String,
        direction: PeerDirection,
    },
    RemovePeer {
        pool: String,
        uuid: String,
    },
    EnableImageMirroring {
        pool: String,
        image: String,
        mode: ImageMirrorMode,
    },
    DisableImageMirroring {
        pool: String,
        image: String,
    },
    CreateMirrorSnapshot {
        pool: String,
        image: String,
    },
    PromoteImage {
        pool: String,
        image: String,
        force: bool,
    },
    DemoteImage {
        pool: String,
        image: String,
    },
    ResyncImage {
        pool: String,
        image: String,
    },
    AddSnapshotSchedule {
        pool: String,
        image: Option<String>,
        interval: String,
        start_time: Option<String>,
    },
    RemoveSnapshotSchedule {
        pool: String,
        image: Option<String>,
        interval: String,
        start_time: Option<String>,
    },

    // --- delta-sync
    /// `rbd snap create` of a sync snapshot ([`delta_sync::snapshot_name`]).
    CreateSyncSnapshot {
        pool: String,
        image: String,
        snap: String,
    },
    /// `rbd snap rm` of a sync snapshot.
    RemoveSyncSnapshot {
        pool: String,
        image: String,
        snap: String,
    },
    /// Makes a delta-sync copy a primary (an emergency failover): rolls the image back to `from_snap`, the
    /// newest point it fully holds, when it changed since (a delta was half applied), then takes sync
    /// snapshot `snap`, after which receivers refuse every delta ending before it. Nothing when the image
    /// holds `snap` already.
    PromoteSyncCopy {
        pool: String,
        image: String,
        from_snap: String,
        snap: String,
    },
    /// Starts shipping the image's delta from `from_snap` (none: the whole image) to `to_snap` to the
    /// peer's receiver, in the background; [`ClusterAgent::sync_pool`] reports it. Leaves a transfer of the
    /// image that is still running alone.
    SendDelta {
        pool: String,
        image: String,
        from_snap: Option<String>,
        to_snap: String,
        peer: SyncPeer,
        options: TransferOptions,
    },
}

impl Step {
    /// A short verb, as step names in status and metric labels use it.
    pub fn verb(&self) -> &'static str {
        match self {
            Step::CreateRealm { .. } => "create-realm",
            Step::CreateZoneGroup { .. } => "create-zonegroup",
            Step::CreateZone { .. } => "create-zone",
            Step::ModifyZone { .. } => "modify-zone",
            Step::CreateSystemUser { .. } => "create-system-user",
            Step::CommitPeriod { .. } => "commit-period",
            Step::PullRealm { .. } => "pull-realm",
            Step::PullPeriod { .. } => "pull-period",
            Step::InitMetadataSync { .. } => "init-metadata-sync",
            Step::SetSyncPolicy { .. } => "set-sync-policy",
            Step::DeleteZone { .. } => "delete-zone",
            Step::DeleteZoneGroup { .. } => "delete-zonegroup",
            Step::DeleteRealm { .. } => "delete-realm",
            Step::CreatePool { .. } => "create-pool",
            Step::EnablePoolMirroring { .. } => "enable-pool-mirroring",
            Step::DisablePoolMirroring { .. } => "disable-pool-mirroring",
            Step::ImportPeer { .. } => "import-peer",
            Step::SetPeerDirection { .. } => "set-peer-direction",
            Step::RemovePeer { .. } => "remove-peer",
            Step::EnableImageMirroring { .. } => "enable-image-mirroring",
            Step::DisableImageMirroring { .. } => "disable-image-mirroring",
            Step::CreateMirrorSnapshot { .. } => "mirror-snapshot",
            Step::PromoteImage { force: true, .. } => "force-promote",
            Step::PromoteImage { .. } => "promote",
            Step::DemoteImage { .. } => "demote",
            Step::ResyncImage { .. } => "resync",
            Step::AddSnapshotSchedule { .. } => "add-snapshot-schedule",
            Step::RemoveSnapshotSchedule { .. } => "remove-snapshot-schedule",
            Step::CreateSyncSnapshot { .. } => "create-sync-snapshot",
            Step::RemoveSyncSnapshot { .. } => "remove-sync-snapshot",
            Step::PromoteSyncCopy { .. } => "promote-sync-copy",
            Step::SendDelta { .. } => "send-delta",
        }
    }

    /// What the step acts on, e.g. `rbd/db-vol` or `production/us-east`; never a secret.
    pub fn target(&self) -> String {
        match self {
            Step::CreateRealm { realm } | Step::CommitPeriod { realm } | Step::DeleteRealm { realm } => {
                realm.clone()
            }
            Step::PullRealm { realm, url, .. } | Step::PullPeriod { realm, url, .. } => {
                format!("{realm} from {url}")
            }
            Step::CreateZoneGroup {
                realm, zone_group, ..
            }
            | Step::SetSyncPolicy {
                realm, zone_group, ..
            }
            | Step::DeleteZoneGroup { realm, zone_group } => {
                format!("{realm}/{zone_group}")
            }
            Step::CreateZone {
                realm,
                zone_group,
                zone,
                ..
            }
            | Step::ModifyZone {
                realm,
                zone_group,
                zone,
                ..
            }
            | Step::DeleteZone {
                realm,
                zone_group,
                zone,
            } => format!("{realm}/{zone_group}/{zone}"),
            Step::InitMetadataSync { realm, zone } => format!("{realm}/{zone}"),
            Step::CreateSystemUser { uid, .. } => uid.clone(),
            Step::CreatePool { pool }
            | Step::EnablePoolMirroring { pool, .. }
            | Step::DisablePoolMirroring { pool }
            | Step::ImportPeer { pool, .. } => pool.clone(),
            Step::SetPeerDirection { pool, uuid, .. } | Step::RemovePeer { pool, uuid } => {
                format!("{pool} peer {uuid}")
            }
            Step::EnableImageMirroring { pool, image, .. }
            | Step::DisableImageMirroring { pool, image }
            | Step::CreateMirrorSnapshot { pool, image }
            | Step::PromoteImage { pool, image, .. }
            | Step::DemoteImage { pool, image }
            | Step::ResyncImage { pool, image } => format!("{pool}/{image}"),
            Step::AddSnapshotSchedule {
                pool,
                image,
                interval,
                ..
            }
            | Step::RemoveSnapshotSchedule {
                pool,
                image,
                interval,
                ..
            } => match image {
                Some(image) => format!("{pool}/{image} every {interval}"),
                None => format!("{pool} every {interval}"),
            },
            Step::CreateSyncSnapshot { pool, image, snap }
            | Step::RemoveSyncSnapshot { pool, image, snap } => {
                format!("{pool}/{image}@{snap}")
            }
            Step::PromoteSyncCopy {
                pool,
                image,
                from_snap,
                snap,
            } => format!("{pool}/{image}@{from_snap}..{snap}"),
            Step::SendDelta {
                pool,
                image,
                from_snap,
                to_snap,
                peer,
                ..
            } => match from_snap {
                Some(from) => format!("{pool}/{image}@{from}..{to_snap} to {}", peer.address),
                None => format!("{pool}/{image}@{to_snap} (full) to {}", peer.address),
            },
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb(), self.target())
    }
}

/// Why an agent call failed. Messages say what was attempted, where, and Ceph's own words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum AgentError {
    #[error("agent of site {site} unreachable: {message}")]
    Unreachable { site: String, message: String },
    /// The agent answers but its Ceph cluster does not (monitors down, or no answer within the timeout).
    #[error("ceph cluster of site {site} unreachable: {message}")]
    ClusterUnreachable { site: String, message: String },
    #[error("agent of site {site} refused the credentials")]
    Unauthorized { site: String },
    #[error("`{command}` failed on site {site} (exit {exit_code:?}): {stderr}")]
    CommandFailed {
        site: String,
        command: String,
        exit_code: Option<i32>,
        stderr: String,
    },
    #[error("{what} not found on site {site}")]
    NotFound { site: String, what: String },
    #[error("site {site} refused {action}: {message}")]
    Refused {
        site: String,
        action: String,
        message: String,
    },
    #[error("unexpected output of `{command}` on site {site}: {message}")]
    Parse {
        site: String,
        command: String,
        message: String,
    },
}

impl AgentError {
    /// A fixed CamelCase reason for conditions, Events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            AgentError::Unreachable { .. } => "AgentUnreachable",
            AgentError::ClusterUnreachable { .. } => "CephClusterUnreachable",
            AgentError::Unauthorized { .. } => "AgentUnauthorized",
            AgentError::CommandFailed { .. } => "CephCommandFailed",
            AgentError::NotFound { .. } => "NotFound",
            AgentError::Refused { .. } => "Refused",
            AgentError::Parse { .. } => "UnexpectedCephOutput",
        }
    }

    /// Whether retrying the same call later can succeed without anything else changing.
    pub fn is_transient(&self) -> bool {
        self.is_unreachable() || matches!(self, AgentError::CommandFailed { .. })
    }

    /// Whether the site did not answer at all (its agent or its cluster): nothing can be known there, and
    /// nothing it was asked to do may be taken as done or as refused.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            AgentError::Unreachable { .. } | AgentError::ClusterUnreachable { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_or_display() {
        let step = Step::ImportPeer {
            pool: "rbd".into(),
            token: Sensitive("eyJmc2lkIjoi-secret".into()),
            direction: PeerDirection::RxTx,
            site_name: "site-b".into(),
        };
        assert!(!format!("{step:?}").contains("secret"));
        assert!(!step.to_string().contains("secret"));
        let keys = SystemKeys {
            access_key: "AK".into(),
            secret_key: Sensitive("top-secret".into()),
        };
        assert!(!format!("{keys:?}").contains("top-secret"));
    }

    #[test]
    fn steps_travel_as_tagged_json() {
        let step = Step::PromoteImage {
            pool: "rbd".into(),
            image: "db".into(),
            force: true,
        };
        let json = serde_json::to_value(&step).unwrap();
        assert_eq!(json["step"], "PromoteImage");
        assert_eq!(serde_json::from_value::<Step>(json).unwrap(), step);
        assert_eq!(step.to_string(), "force-promote rbd/db");
    }

    #[test]
    fn the_synced_point_is_the_last_sync_else_the_newest_received_snapshot() {
        let at = |second: i64| Timestamp::from_second(1_780_000_000 + second).unwrap();
        let snapshot = |state: &str, complete: bool| MirrorSnapshot {
            id: 7,
            name: ".mirror.snap".into(),
            created: at(10),
            state: state.into(),
            complete,
            primary_snap_id: None,
        };
        let replay = |last_synced| ReplayStatus {
            state: "replaying".into(),
            up: true,
            description: String::new(),
            last_synced,
        };
        let image = |replay, snapshot| RbdImage {
            name: "db".into(),
            mirroring: None,
            replay,
            last_mirror_snapshot: snapshot,
        };
        let received = Some(snapshot("non-primary", true));
        assert_eq!(
            image(Some(replay(Some(at(5)))), received.clone()).synced_point(),
            Some(at(5))
        );
        assert_eq!(image(Some(replay(None)), received).synced_point(), Some(at(10)));
        assert_eq!(
            image(None, Some(snapshot("non-primary", false))).synced_point(),
            None
        );
        assert_eq!(image(None, Some(snapshot("demoted", true))).synced_point(), None);
        assert_eq!(image(None, Some(snapshot("primary", true))).synced_point(), None);
    }
}
