//! The Ceph CLI backend: [`ClusterAgent`] for a real cluster, by running `ceph`, `rbd` and `radosgw-admin`
//! (JSON output wherever they have it) inside `cephdr agent`.
//!
//! Every step checks the cluster first or treats Ceph's "already so" answers as success, so running it twice
//! changes nothing. Secrets never reach a command line or a log: see [`command`] for how each one travels.
//! Concurrent calls are safe when the client conf gives each CLI process its own admin socket
//! (`admin_socket = $run_dir/$name.$pid.asok` in `[client]`); with one shared path they collide.

mod checksum;
mod command;
mod delta_sync;
mod librbd;
mod parse;
mod rbd;
mod rgw;
mod rgw_policy;

use std::{path::PathBuf, sync::Arc, time::Duration};

use async_trait::async_trait;
use tracing::Instrument;

use self::command::{CephCommand, CommandOutput, Target};
use super::{
    split::{RbdStep, RgwStep, Split},
    AgentResult, ClusterAgent, ClusterInfo, ImageChecksum, RbdPoolState, RgwRealmState, Sensitive, Step,
    SyncGroup, SyncPool, ZoneSync,
};

/// How long one CLI run may take before it is killed: long enough for a period commit forwarded to a
/// remote master or a peer bootstrap that contacts the other cluster.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a CLI hunts for a monitor: a site whose monitors are down is reported within this, well before
/// the operator's request to the agent times out (`timeoutSeconds`, 30 s by default).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A Ceph cluster reached through its command-line tools, as one site of cephdr.
#[derive(Clone, Debug)]
pub struct CephCli {
    target: Target,
    /// Delta-sync transfers this agent runs in the background, shared by its clones.
    transfers: Arc<delta_sync::Transfers>,
}

impl CephCli {
    /// The cluster that Ceph's default configuration (`/etc/ceph/ceph.conf`, `client.admin`) reaches.
    pub fn new(site: impl Into<String>) -> Self {
        Self {
            target: Target {
                site: site.into(),
                conf: None,
                cluster: None,
                client_id: None,
                keyring: None,
                timeout: DEFAULT_TIMEOUT,
                connect_timeout: Some(CONNECT_TIMEOUT),
            },
            transfers: Arc::default(),
        }
    }

    /// `-c PATH` (and `CEPH_CONF`).
    pub fn with_conf(mut self, conf: impl Into<PathBuf>) -> Self {
        self.target.conf = Some(conf.into());
        self
    }

    /// `--cluster NAME`: `/etc/ceph/NAME.conf` and its keyrings.
    pub fn with_cluster(mut self, cluster: impl Into<String>) -> Self {
        self.target.cluster = Some(cluster.into());
        self
    }

    /// `--id ID`: the cephx user `client.ID` instead of `client.admin`.
    pub fn with_client_id(mut self, id: impl Into<String>) -> Self {
        self.target.client_id = Some(id.into());
        self
    }

    pub fn with_keyring(mut self, keyring: impl Into<PathBuf>) -> Self {
        self.target.keyring = Some(keyring.into());
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.target.timeout = timeout;
        self
    }

    pub fn site(&self) -> &str {
        &self.target.site
    }

    async fn run(&self, command: CephCommand) -> AgentResult<CommandOutput> {
        command.run(&self.target).await
    }

    async fn run_step(&self, step: &Step) -> AgentResult<()> {
        match step.split() {
            Split::Rgw(step) => self.run_rgw_step(step).await,
            Split::Rbd(step) => self.run_rbd_step(step).await,
            Split::DeltaSync(step) => self.run_delta_sync_step(step).await,
        }
    }

    async fn run_rgw_step(&self, step: RgwStep<'_>) -> AgentResult<()> {
        match step {
            RgwStep::CreateRealm { realm } => self.create_realm(realm).await,
            RgwStep::CreateZoneGroup(group, wanted) => self.create_zone_group(group, wanted).await,
            RgwStep::CreateZone(zone, wanted) => self.create_zone(zone, wanted).await,
            RgwStep::ModifyZone(zone, change) => self.modify_zone(zone, change).await,
            RgwStep::CreateSystemUser { uid, keys } => self.create_system_user(uid, keys).await,
            RgwStep::CommitPeriod { realm } => self.commit_period(realm).await,
            RgwStep::Pull(pull) => self.pull(pull).await,
            RgwStep::InitMetadataSync { realm, zone } => self.init_metadata_sync(realm, zone).await,
            RgwStep::SetSyncPolicy(group, groups) => self.set_sync_policy(group, groups).await,
            RgwStep::DeleteZone(zone) => self.delete_zone(zone).await,
            RgwStep::DeleteZoneGroup(group) => self.delete_zone_group(group).await,
            RgwStep::DeleteRealm { realm } => self.delete_realm(realm).await,
        }
    }

    async fn run_rbd_step(&self, step: RbdStep<'_>) -> AgentResult<()> {
        match step {
            RbdStep::CreatePool { pool } => self.create_pool(pool).await,
            RbdStep::EnablePoolMirroring {
                pool,
                mode,
                site_name,
            } => self.enable_pool_mirroring(pool, mode, site_name).await,
            RbdStep::DisablePoolMirroring { pool } => self.disable_pool_mirroring(pool).await,
            RbdStep::ImportPeer {
                pool,
                token,
                direction,
                site_name,
            } => self.import_peer(pool, token, direction, site_name).await,
            RbdStep::SetPeerDirection {
                pool,
                uuid,
                direction,
            } => self.set_peer_direction(pool, uuid, direction).await,
            RbdStep::RemovePeer { pool, uuid } => self.remove_peer(pool, uuid).await,
            RbdStep::EnableImageMirroring { pool, image, mode } => {
                self.enable_image_mirroring(pool, image, mode).await
            }
            RbdStep::DisableImageMirroring { pool, image } => self.disable_image_mirroring(pool, image).await,
            RbdStep::CreateMirrorSnapshot { pool, image } => self.create_mirror_snapshot(pool, image).await,
            RbdStep::PromoteImage { pool, image, force } => self.promote_image(pool, image, force).await,
            RbdStep::DemoteImage { pool, image } => self.demote_image(pool, image).await,
            RbdStep::ResyncImage { pool, image } => self.resync_image(pool, image).await,
            RbdStep::AddSnapshotSchedule { pool, schedule } => {
                self.add_snapshot_schedule(pool, schedule).await
            }
            RbdStep::RemoveSnapshotSchedule { pool, schedule } => {
                self.remove_snapshot_schedule(pool, schedule).await
            }
        }
    }
}

#[async_trait]
impl ClusterAgent for CephCli {
    async fn cluster_info(&self) -> AgentResult<ClusterInfo> {
        let (status, versions) = tokio::try_join!(
            self.run(CephCommand::ceph(["status"])),
            self.run(CephCommand::ceph(["versions"])),
        )?;
        parse::cluster_info(&status, &versions)
    }

    async fn rgw_realm(&self, realm: &str) -> AgentResult<RgwRealmState> {
        self.read_rgw_realm(realm)
            .instrument(tracing::debug_span!("rgw_realm", site = %self.site()))
            .await
    }

    async fn rgw_sync_status(&self, realm: &str, zone: &str) -> AgentResult<ZoneSync> {
        self.read_rgw_sync_status(realm, zone)
            .instrument(tracing::debug_span!("rgw_sync_status", site = %self.site()))
            .await
    }

    async fn rgw_sync_policy(&self, realm: &str, zone_group: &str) -> AgentResult<Vec<SyncGroup>> {
        self.read_sync_policy(realm, zone_group)
            .instrument(tracing::debug_span!("rgw_sync_policy", site = %self.site()))
            .await
    }

    async fn rbd_pool(&self, pool: &str) -> AgentResult<RbdPoolState> {
        self.read_rbd_pool(pool, None)
            .instrument(tracing::debug_span!("rbd_pool", site = %self.site()))
            .await
    }

    async fn rbd_images(&self, pool: &str, images: &[String]) -> AgentResult<RbdPoolState> {
        self.read_rbd_pool(pool, Some(images))
            .instrument(tracing::debug_span!("rbd_images", site = %self.site(), images = images.len()))
            .await
    }

    async fn create_bootstrap_token(&self, pool: &str, site_name: &str) -> AgentResult<Sensitive<String>> {
        let command = CephCommand::rbd(["mirror", "pool", "peer", "bootstrap", "create"])
            .arg(format!("--site-name={site_name}"))
            .arg(pool);
        Ok(Sensitive(self.run(command).await?.stdout.trim().to_string()))
    }

    async fn image_checksum(&self, pool: &str, image: &str, snap_id: u64) -> AgentResult<ImageChecksum> {
        let span = tracing::info_span!("image_checksum", site = %self.site(), pool, image, snap_id);
        self.read_checksum(pool, image, snap_id).instrument(span).await
    }

    async fn sync_pool(&self, pool: &str) -> AgentResult<SyncPool> {
        self.read_sync_pool(pool)
            .instrument(tracing::debug_span!("sync_pool", site = %self.site()))
            .await
    }

    async fn execute(&self, step: &Step) -> AgentResult<()> {
        let span = tracing::info_span!("ceph_step", site = %self.site(), step = %step);
        let started = std::time::Instant::now();
        let result = self.run_step(step).instrument(span).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(()) => tracing::info!(site = %self.site(), step = %step, elapsed_ms, "step done"),
            Err(error) => {
                tracing::warn!(site = %self.site(), step = %step, elapsed_ms, %error, "step failed")
            }
        }
        result
    }
}
