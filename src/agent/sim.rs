//! `SimulatedCluster`: an in-memory Ceph (Pacific 16.2) — a test double for reconciler tests, scale benchmarks
//! and the no-Ceph demo. It is never a backend for real clusters: the only way to build one is
//! [`SimulatedWorld::add_site`], which production code has no reason to call.
//!
//! Fidelity goes where safety depends on it: promote/demote/resync refusals, peer bootstrap on both clusters,
//! period commits forwarded to the master zone, and epochs that move only when the configuration changes. The
//! rules follow `librbd`/`rbd-mirror`/`radosgw-admin` behaviour measured on real sites (`notes/`).
//!
//! Replication is computed lazily whenever a cluster is observed or changed, from timestamps on the world's
//! [`SimClock`]: a change on one site reaches another once it is older than the configured lag and nothing (a
//! partition, a site that is down, a stopped rbd-mirror daemon) blocks the link. No background task runs, so tests
//! are deterministic with a frozen clock and cheap at scale (ordered maps, no sleeping).

mod rbd;
mod rbd_content;
mod rbd_sync;
#[cfg(test)]
mod rbd_tests;
mod rgw;
#[cfg(test)]
mod rgw_tests;
#[cfg(test)]
pub(crate) mod testing;

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use async_trait::async_trait;
use k8s_openapi::jiff::Timestamp;

use super::{
    split::{RbdStep, RgwStep, Split},
    AgentError, AgentResult, ClusterAgent, ClusterInfo, ImageChecksum, RbdPoolState, RgwRealmState,
    Sensitive, Step, SyncGroup, SyncPool, ZoneSync,
};

/// The time the simulation runs on: real time (the default) or a frozen instant, either shifted by `advance`.
#[derive(Clone, Debug, Default)]
pub struct SimClock(Arc<Mutex<ClockState>>);

#[derive(Debug, Default)]
struct ClockState {
    frozen_at: Option<Timestamp>,
    offset: Duration,
}

impl SimClock {
    /// Wall-clock time; `advance` still moves it forward on top of real time.
    pub fn real() -> Self {
        Self::default()
    }

    /// Time that stands still at `start` until `advance` moves it: deterministic tests.
    pub fn frozen_at(start: Timestamp) -> Self {
        Self(Arc::new(Mutex::new(ClockState {
            frozen_at: Some(start),
            offset: Duration::ZERO,
        })))
    }

    pub fn now(&self) -> Timestamp {
        let state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let base = state.frozen_at.unwrap_or_else(Timestamp::now);
        base.checked_add(state.offset).unwrap_or(Timestamp::MAX)
    }

    pub fn advance(&self, by: Duration) {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        state.offset = state.offset.saturating_add(by);
    }
}

/// Several simulated Ceph clusters, one per site, linked for replication, with the faults a test injects.
#[derive(Clone, Debug)]
pub struct SimulatedWorld {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    clock: SimClock,
    state: Mutex<WorldState>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, WorldState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for SimulatedWorld {
    fn default() -> Self {
        Self::new()
    }
}

impl SimulatedWorld {
    /// A world on real time with no replication lag.
    pub fn new() -> Self {
        Self::with_clock(SimClock::real())
    }

    pub fn with_clock(clock: SimClock) -> Self {
        let state = WorldState {
            clusters: BTreeMap::new(),
            lag: Duration::ZERO,
            partitions: BTreeMap::new(),
            ids: IdGen::default(),
        };
        Self {
            shared: Arc::new(Shared {
                clock,
                state: Mutex::new(state),
            }),
        }
    }

    pub fn clock(&self) -> SimClock {
        self.shared.clock.clone()
    }

    /// The cluster of `site`, created empty (healthy, Ceph 16.2.15, no pools, no realms) on first use.
    pub fn add_site(&self, site: &str) -> Arc<SimulatedCluster> {
        let mut state = self.shared.lock();
        if !state.clusters.contains_key(site) {
            let fsid = state.ids.uuid();
            state.clusters.insert(site.to_string(), ClusterState::new(fsid));
        }
        Arc::new(SimulatedCluster {
            shared: self.shared.clone(),
            site: site.to_string(),
        })
    }

    /// How long a change takes to reach another site when nothing blocks the link.
    pub fn set_lag(&self, lag: Duration) {
        self.shared.lock().lag = lag;
    }

    /// Cuts the link between two sites (both ways) until [`heal`](Self::heal); each still answers its agent.
    pub fn partition(&self, a: &str, b: &str) {
        let now = self.shared.clock.now();
        self.shared.lock().partitions.entry(link_key(a, b)).or_insert(now);
    }

    pub fn heal(&self, a: &str, b: &str) {
        self.shared.lock().partitions.remove(&link_key(a, b));
    }

    /// Takes a whole site down (every call to it fails `Unreachable`, nothing replicates to or from it) or back up.
    pub fn set_down(&self, site: &str, down: bool) {
        let now = self.shared.clock.now();
        if let Some(cluster) = self.shared.lock().clusters.get_mut(site) {
            match (down, cluster.down_since) {
                (true, None) => cluster.down_since = Some(now),
                (false, Some(_)) => cluster.down_since = None,
                _ => {}
            }
        }
    }
}

/// One simulated Ceph cluster; see the module documentation. Test controls stand in for what users and daemons
/// do outside the operator's reach (writing data, starting rbd-mirror).
#[derive(Debug)]
pub struct SimulatedCluster {
    shared: Arc<Shared>,
    site: String,
}

impl SimulatedCluster {
    pub fn site(&self) -> &str {
        &self.site
    }

    /// Runs `f` on the world as this site's agent would: refused with `Unreachable` while the site is down.
    fn with_world<T>(
        &self,
        f: impl FnOnce(&mut WorldState, &str, Timestamp) -> AgentResult<T>,
    ) -> AgentResult<T> {
        let now = self.shared.clock.now();
        let mut state = self.shared.lock();
        if state.cluster(&self.site)?.down_since.is_some() {
            return Err(AgentError::Unreachable {
                site: self.site.clone(),
                message: "site is down (simulated)".into(),
            });
        }
        f(&mut state, &self.site, now)
    }

    /// Sets the version `ceph versions` reports, e.g. to test upgrade checks.
    pub fn set_version(&self, version: &str) -> AgentResult<()> {
        self.with_world(|world, site, _| {
            world.cluster_mut(site)?.version = version.to_string();
            Ok(())
        })
    }

    /// Sets the overall health (`HEALTH_OK`/`HEALTH_WARN`/`HEALTH_ERR`) and the names of active checks.
    pub fn set_health(&self, health: &str, checks: &[&str]) -> AgentResult<()> {
        self.with_world(|world, site, _| {
            let cluster = world.cluster_mut(site)?;
            cluster.health = health.to_string();
            cluster.checks = checks.iter().map(|check| check.to_string()).collect();
            Ok(())
        })
    }

    /// `rbd create`: an image the way ceph-csi makes one; in a pool-mode pool it is mirrored at once (journal).
    pub fn create_image(&self, pool: &str, image: &str) -> AgentResult<()> {
        self.with_world(|world, site, now| world.create_image(site, pool, image, now))
    }

    /// A client write to the image; returns its new content version. Refused on a non-primary image.
    pub fn write_image(&self, pool: &str, image: &str) -> AgentResult<u64> {
        self.with_world(|world, site, now| world.write_image(site, pool, image, now))
    }

    /// The content version of the image as this site holds it (after applying any due replication).
    pub fn image_content_version(&self, pool: &str, image: &str) -> AgentResult<u64> {
        self.with_world(|world, site, now| world.image_content_version(site, pool, image, now))
    }

    /// Makes the newest mirror snapshot of the image here (as last observed) hold other bytes than it was
    /// taken with (a faulty copy, bit rot): what a drill's checksums must catch. Returns the snapshot's id.
    pub fn damage_newest_snapshot(&self, pool: &str, image: &str) -> AgentResult<u64> {
        self.with_world(|world, site, _| world.damage_newest_snapshot(site, pool, image))
    }

    /// Starts or stops this site's rbd-mirror daemon (none runs on a new site).
    pub fn set_rbd_mirror_running(&self, running: bool) -> AgentResult<()> {
        self.with_world(|world, site, _| {
            world.cluster_mut(site)?.rbd.daemon.running = running;
            Ok(())
        })
    }

    /// The health the rbd-mirror daemon reports in the service map: `OK`, `WARNING` or `ERROR`.
    pub fn set_rbd_mirror_health(&self, health: &str) -> AgentResult<()> {
        self.with_world(|world, site, _| {
            world.cluster_mut(site)?.rbd.daemon.health = health.to_string();
            Ok(())
        })
    }

    /// S3 writes of `count` objects into `zone` (a zone of this site): data-log changes other zones sync.
    pub fn put_objects(&self, realm: &str, zone: &str, count: u32) -> AgentResult<()> {
        self.with_world(|world, site, now| world.put_objects(site, realm, zone, count, now))
    }

    /// Wedges (or unwedges) metadata sync of a secondary zone: it applies nothing new until `InitMetadataSync`.
    pub fn set_metadata_sync_stalled(&self, realm: &str, zone: &str, stalled: bool) -> AgentResult<()> {
        self.with_world(|world, site, now| world.set_metadata_sync_stalled(site, realm, zone, stalled, now))
    }
}

#[async_trait]
impl ClusterAgent for SimulatedCluster {
    async fn cluster_info(&self) -> AgentResult<ClusterInfo> {
        self.with_world(|world, site, _| {
            let cluster = world.cluster(site)?;
            Ok(ClusterInfo {
                fsid: cluster.fsid.clone(),
                version: cluster.version.clone(),
                health: cluster.health.clone(),
                checks: cluster.checks.clone(),
                backup_store: false,
            })
        })
    }

    async fn rgw_realm(&self, realm: &str) -> AgentResult<RgwRealmState> {
        self.with_world(|world, site, now| world.rgw_realm(site, realm, now))
    }

    async fn rgw_sync_status(&self, realm: &str, zone: &str) -> AgentResult<ZoneSync> {
        self.with_world(|world, site, now| world.rgw_sync_status(site, realm, zone, now))
    }

    async fn rgw_sync_policy(&self, realm: &str, zone_group: &str) -> AgentResult<Vec<SyncGroup>> {
        self.with_world(|world, site, _| world.rgw_sync_policy(site, realm, zone_group))
    }

    async fn rbd_pool(&self, pool: &str) -> AgentResult<RbdPoolState> {
        self.with_world(|world, site, now| world.rbd_pool(site, pool, None, now))
    }

    async fn rbd_images(&self, pool: &str, images: &[String]) -> AgentResult<RbdPoolState> {
        self.with_world(|world, site, now| world.rbd_pool(site, pool, Some(images), now))
    }

    async fn create_bootstrap_token(&self, pool: &str, site_name: &str) -> AgentResult<Sensitive<String>> {
        self.with_world(|world, site, _| world.create_bootstrap_token(site, pool, site_name))
    }

    async fn image_checksum(&self, pool: &str, image: &str, snap_id: u64) -> AgentResult<ImageChecksum> {
        self.with_world(|world, site, now| world.image_checksum(site, pool, image, snap_id, now))
    }

    async fn sync_pool(&self, _pool: &str) -> AgentResult<SyncPool> {
        Err(delta_sync_not_simulated(&self.site))
    }

    async fn execute(&self, step: &Step) -> AgentResult<()> {
        tracing::debug!(site = %self.site, step = %step, "simulated step");
        self.with_world(|world, site, now| world.execute(site, step, now))
    }
}

/// Everything in one lock: steps that touch two clusters (peer bootstrap, forwarded period commits) stay atomic.
#[derive(Debug)]
struct WorldState {
    clusters: BTreeMap<String, ClusterState>,
    lag: Duration,
    /// Cut links, keyed by the ordered pair of sites, with the time each was cut.
    partitions: BTreeMap<(String, String), Timestamp>,
    ids: IdGen,
}

#[derive(Debug)]
struct ClusterState {
    fsid: String,
    version: String,
    health: String,
    checks: Vec<String>,
    down_since: Option<Timestamp>,
    rbd: rbd::RbdSite,
    rgw: rgw::RgwSite,
}

impl ClusterState {
    fn new(fsid: String) -> Self {
        Self {
            fsid,
            version: "16.2.15".into(),
            health: "HEALTH_OK".into(),
            checks: Vec::new(),
            down_since: None,
            rbd: rbd::RbdSite::default(),
            rgw: rgw::RgwSite::default(),
        }
    }
}

/// Ids shaped like Ceph's uuids, sequential so that test failures read easily.
#[derive(Debug, Default)]
struct IdGen {
    next: u64,
}

impl IdGen {
    fn uuid(&mut self) -> String {
        self.next += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.next)
    }
}

fn link_key(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

impl WorldState {
    fn cluster(&self, site: &str) -> AgentResult<&ClusterState> {
        self.clusters
            .get(site)
            .ok_or_else(|| not_found(site, format!("simulated site {site}")))
    }

    fn cluster_mut(&mut self, site: &str) -> AgentResult<&mut ClusterState> {
        self.clusters
            .get_mut(site)
            .ok_or_else(|| not_found(site, format!("simulated site {site}")))
    }

    /// Whether `a` can talk to `b` right now: both up and no partition between them.
    fn reachable(&self, a: &str, b: &str) -> bool {
        let up = |site: &str| {
            self.clusters
                .get(site)
                .is_some_and(|cluster| cluster.down_since.is_none())
        };
        up(a) && up(b) && !self.partitions.contains_key(&link_key(a, b))
    }

    /// The newest change time on `from` that has reached `to` by `now`: a change arrives `lag` after it was made,
    /// or as soon as the link is back if it was blocked then.
    fn delivered_up_to(&self, from: &str, to: &str, now: Timestamp) -> Timestamp {
        let down_since = |site: &str| self.clusters.get(site).and_then(|cluster| cluster.down_since);
        let blocked_since = [
            self.partitions.get(&link_key(from, to)).copied(),
            down_since(from),
            down_since(to),
        ]
        .into_iter()
        .flatten()
        .min();
        let until = blocked_since.map_or(now, |since| since.min(now));
        until.checked_sub(self.lag).unwrap_or(Timestamp::MIN)
    }

    /// The oldest change time another site may still be waiting for: logs may forget anything older.
    fn oldest_undelivered_from(&self, site: &str, now: Timestamp) -> Timestamp {
        self.clusters
            .keys()
            .filter(|other| other.as_str() != site)
            .map(|other| self.delivered_up_to(site, other, now))
            .min()
            .unwrap_or_else(|| now.checked_sub(self.lag).unwrap_or(Timestamp::MIN))
    }

    fn execute(&mut self, site: &str, step: &Step, now: Timestamp) -> AgentResult<()> {
        match step.split() {
            Split::Rgw(rgw_step) => match rgw_step {
                RgwStep::CreateRealm { realm } => self.create_realm(site, realm),
                RgwStep::CreateZoneGroup(group, wanted) => self.create_zone_group(site, group, wanted),
                RgwStep::CreateZone(zone, wanted) => self.create_zone(site, zone, wanted),
                RgwStep::ModifyZone(zone, change) => self.modify_zone(site, zone, change, now),
                RgwStep::CreateSystemUser { uid, keys } => self.create_system_user(site, uid, keys, now),
                RgwStep::CommitPeriod { realm } => self.commit_period(site, realm, step, now),
                RgwStep::Pull(pull) => self.pull_realm(site, pull, step, now),
                RgwStep::InitMetadataSync { realm, zone } => self.init_metadata_sync(site, realm, zone, now),
                RgwStep::SetSyncPolicy(group, groups) => self.set_sync_policy(site, group, groups),
                RgwStep::DeleteZone(zone) => self.delete_zone(site, zone),
                RgwStep::DeleteZoneGroup(group) => self.delete_zone_group(site, group),
                RgwStep::DeleteRealm { realm } => {
                    self.cluster_mut(site)?.rgw.realms.remove(realm);
                    Ok(())
                }
            },
            Split::Rbd(rbd_step) => match rbd_step {
                RbdStep::CreatePool { pool } => {
                    self.cluster_mut(site)?
                        .rbd
                        .pools
                        .entry(pool.to_string())
                        .or_default();
                    Ok(())
                }
                RbdStep::EnablePoolMirroring {
                    pool,
                    mode,
                    site_name,
                } => self.enable_pool_mirroring(site, pool, mode, site_name, step, now),
                RbdStep::DisablePoolMirroring { pool } => self.disable_pool_mirroring(site, pool, step),
                RbdStep::ImportPeer {
                    pool,
                    token,
                    direction,
                    site_name,
                } => self.import_peer(site, pool, token, direction, site_name, step),
                RbdStep::SetPeerDirection {
                    pool,
                    uuid,
                    direction,
                } => self.set_peer_direction(site, pool, uuid, direction),
                RbdStep::RemovePeer { pool, uuid } => {
                    rbd::pool_mut(&mut self.clusters, site, pool)?
                        .peers
                        .retain(|peer| peer.uuid != uuid);
                    Ok(())
                }
                RbdStep::EnableImageMirroring { pool, image, mode } => {
                    self.enable_image_mirroring(site, pool, image, mode, step, now)
                }
                RbdStep::DisableImageMirroring { pool, image } => {
                    self.disable_image_mirroring(site, pool, image)
                }
                RbdStep::CreateMirrorSnapshot { pool, image } => {
                    self.create_mirror_snapshot(site, pool, image, step, now)
                }
                RbdStep::PromoteImage { pool, image, force } => {
                    self.promote_image(site, pool, image, force, step, now)
                }
                RbdStep::DemoteImage { pool, image } => self.demote_image(site, pool, image, step, now),
                RbdStep::ResyncImage { pool, image } => self.resync_image(site, pool, image, step, now),
                RbdStep::AddSnapshotSchedule { pool, schedule } => {
                    self.add_snapshot_schedule(site, pool, schedule, step)
                }
                RbdStep::RemoveSnapshotSchedule { pool, schedule } => {
                    rbd::pool_mut(&mut self.clusters, site, pool)?
                        .schedules
                        .remove(&schedule.entry());
                    Ok(())
                }
            },
            Split::DeltaSync(_) => Err(delta_sync_not_simulated(site)),
        }
    }
}

/// The simulation models Ceph's own replication only; delta-sync runs on real clusters (e2e `delta_sync`).
fn delta_sync_not_simulated(site: &str) -> AgentError {
    AgentError::Refused {
        site: site.to_string(),
        action: "delta-sync".into(),
        message: "the simulated cluster does not model the delta-sync engine".into(),
    }
}

fn not_found(site: &str, what: impl Into<String>) -> AgentError {
    AgentError::NotFound {
        site: site.to_string(),
        what: what.into(),
    }
}

/// Ceph said no: `action` is the step (or test-control action) as a human reads it.
fn refused(site: &str, action: impl fmt::Display, message: impl Into<String>) -> AgentError {
    AgentError::Refused {
        site: site.to_string(),
        action: action.to_string(),
        message: message.into(),
    }
}

/// A Ceph command that failed on the site itself, e.g. because the cluster it talks to is out of reach.
fn command_failed(site: &str, command: &str, errno: i32, stderr: impl Into<String>) -> AgentError {
    AgentError::CommandFailed {
        site: site.to_string(),
        command: command.to_string(),
        exit_code: Some(errno),
        stderr: stderr.into(),
    }
}
