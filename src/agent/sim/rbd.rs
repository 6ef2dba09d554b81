//! RBD mirroring on a simulated cluster: pools, peers, images and their mirror history, and the steps that change
//! them. Replication between sites and what rbd-mirror reports live in `rbd_sync.rs`.
//!
//! An image's history is a list of [`Point`]s: mirror snapshots in snapshot mode, journal positions in journal
//! mode. A non-primary image copies the primary's points; whether it may be promoted without force, whether it is
//! in split brain and what it replays all follow from which points it holds.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    time::Duration,
};

use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;

use super::{command_failed, not_found, refused, ClusterState, IdGen, WorldState};
use crate::agent::{
    split::Schedule, AgentResult, ImageMirrorMode, PeerDirection, PoolMirrorMode, ScheduleEntry, Sensitive,
    Step,
};

/// `rbd_mirroring_max_mirroring_snapshots` on 16.2.15: older mirror snapshots are pruned.
const MAX_MIRROR_SNAPSHOTS: usize = 5;
/// The cephx user `rbd mirror pool peer bootstrap create` makes for the peer to connect with.
const PEER_CLIENT: &str = "client.rbd-mirror-peer";
const IMPORT_COMMAND: &str = "rbd mirror pool peer bootstrap import";

#[derive(Debug, Default)]
pub(super) struct RbdSite {
    /// The cluster-wide mirroring site name (`--site-name`); Ceph falls back to the fsid when none is set.
    pub(super) site_name: Option<String>,
    pub(super) pools: BTreeMap<String, Pool>,
    pub(super) daemon: Daemon,
}

impl RbdSite {
    pub(super) fn site_name_or(&self, fsid: &str) -> String {
        self.site_name.clone().unwrap_or_else(|| fsid.to_string())
    }
}

/// The local rbd-mirror daemon; none runs until a test starts it.
#[derive(Debug)]
pub(super) struct Daemon {
    pub(super) running: bool,
    pub(super) health: String,
}

impl Default for Daemon {
    fn default() -> Self {
        Self {
            running: false,
            health: "OK".into(),
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Pool {
    pub(super) mode: PoolMirrorMode,
    pub(super) peers: Vec<Peer>,
    pub(super) images: BTreeMap<String, Image>,
    pub(super) schedules: BTreeSet<ScheduleEntry>,
    /// Snapshot ids are allocated per pool, as Ceph's pool snap sequence does.
    pub(super) last_snap_id: u64,
}

impl Pool {
    /// Whether snapshot mirroring has a peer to send to (`rbd mirror image snapshot` needs one).
    pub(super) fn has_tx_peer(&self) -> bool {
        self.peers.iter().any(|peer| transmits(peer.direction))
    }
}

#[derive(Clone, Debug)]
pub(super) struct Peer {
    pub(super) uuid: String,
    pub(super) site_name: String,
    pub(super) direction: PeerDirection,
    pub(super) mon_host: Option<String>,
    pub(super) client_name: Option<String>,
    /// The simulated site this peer reaches (what `mon_host` would resolve to).
    pub(super) cluster: String,
}

pub(super) fn receives(direction: PeerDirection) -> bool {
    matches!(direction, PeerDirection::RxOnly | PeerDirection::RxTx)
}

fn transmits(direction: PeerDirection) -> bool {
    matches!(direction, PeerDirection::TxOnly | PeerDirection::RxTx)
}

#[derive(Debug, Default)]
pub(super) struct Image {
    pub(super) global_id: String,
    pub(super) mirroring: Option<Mirroring>,
    /// Bumped by every client write; a non-primary image takes the version of the newest point it copied.
    pub(super) content_version: u64,
    /// Mirror snapshots (snapshot mode) or journal positions (journal mode), oldest first.
    pub(super) points: Vec<Point>,
    /// Set by `ResyncImage` until rbd-mirror has rebuilt the image from the primary.
    pub(super) resync_requested_at: Option<Timestamp>,
    /// The peer's demotion this image took over when it was promoted: the old primary may follow it again.
    pub(super) promoted_after: Option<PointRef>,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Mirroring {
    pub(super) mode: ImageMirrorMode,
    pub(super) primary: bool,
}

#[derive(Clone, Debug)]
pub(super) struct Point {
    pub(super) id: u64,
    pub(super) uuid: String,
    pub(super) created: Timestamp,
    pub(super) origin: Origin,
    pub(super) content_version: u64,
    /// Set by a test: the snapshot's bytes differ from the content it was taken with (a faulty copy).
    pub(super) damaged: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Origin {
    /// Taken on this image while primary.
    Primary,
    /// Taken on this image when it was demoted.
    Demoted,
    /// Copied from a peer's `Primary` or `Demoted` point.
    Copy {
        from: PointRef,
        demoted: bool,
        source_created: Timestamp,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PointRef {
    pub(super) site: String,
    pub(super) id: u64,
}

impl Image {
    /// The points a peer may copy: those this image took itself.
    pub(super) fn own_points(&self) -> impl Iterator<Item = &Point> {
        self.points
            .iter()
            .filter(|point| !matches!(point.origin, Origin::Copy { .. }))
    }

    /// Keeps history bounded: the newest snapshots (as Ceph prunes them), or for a journal the newest position
    /// a peer has surely received plus everything after it (newer than `delivered_up_to`).
    pub(super) fn prune(&mut self, delivered_up_to: Timestamp) {
        let journal = matches!(
            self.mirroring,
            Some(Mirroring {
                mode: ImageMirrorMode::Journal,
                ..
            })
        );
        let keep_from = if journal {
            let delivered = self
                .points
                .iter()
                .filter(|point| point.created <= delivered_up_to)
                .count();
            delivered.saturating_sub(1)
        } else {
            self.points.len().saturating_sub(MAX_MIRROR_SNAPSHOTS)
        };
        self.points.drain(..keep_from);
    }
}

/// Allocates the next point of an image; `last_snap_id` is its pool's snapshot sequence.
pub(super) fn new_point(
    ids: &mut IdGen,
    last_snap_id: &mut u64,
    created: Timestamp,
    origin: Origin,
    content_version: u64,
) -> Point {
    *last_snap_id += 1;
    Point {
        id: *last_snap_id,
        uuid: ids.uuid(),
        created,
        origin,
        content_version,
        damaged: false,
    }
}

pub(super) fn pool_mut<'a>(
    clusters: &'a mut BTreeMap<String, ClusterState>,
    site: &str,
    pool: &str,
) -> AgentResult<&'a mut Pool> {
    clusters
        .get_mut(site)
        .and_then(|cluster| cluster.rbd.pools.get_mut(pool))
        .ok_or_else(|| not_found(site, format!("pool {pool}")))
}

fn image_in<'a>(pool_state: &'a mut Pool, site: &str, pool: &str, image: &str) -> AgentResult<&'a mut Image> {
    pool_state
        .images
        .get_mut(image)
        .ok_or_else(|| not_found(site, format!("image {pool}/{image}")))
}

/// An image borrowed from its pool, with what taking points on it needs: the world's ids and the pool's
/// snapshot sequence.
struct ImageMut<'a> {
    image: &'a mut Image,
    ids: &'a mut IdGen,
    last_snap_id: &'a mut u64,
}

impl ImageMut<'_> {
    /// Takes a point of `origin` at `now` with the image's current content, then prunes what peers no longer
    /// need (see [`Image::prune`]).
    fn take_point(&mut self, origin: Origin, now: Timestamp, delivered_up_to: Timestamp) {
        let point = new_point(
            self.ids,
            self.last_snap_id,
            now,
            origin,
            self.image.content_version,
        );
        self.image.points.push(point);
        self.image.prune(delivered_up_to);
    }

    fn enable(&mut self, mode: ImageMirrorMode, now: Timestamp) {
        enable_image(self.image, mode, self.ids, self.last_snap_id, now);
    }
}

impl std::ops::Deref for ImageMut<'_> {
    type Target = Image;

    fn deref(&self) -> &Image {
        self.image
    }
}

impl std::ops::DerefMut for ImageMut<'_> {
    fn deref_mut(&mut self) -> &mut Image {
        self.image
    }
}

/// A mirror-snapshot schedule interval as the rbd_support mgr module takes it: `30m`, `1h`, `1d`, or minutes.
pub(super) fn parse_interval(interval: &str) -> Option<Duration> {
    let (number, unit_seconds) = match interval.char_indices().last()? {
        (at, 'm') => (&interval[..at], 60),
        (at, 'h') => (&interval[..at], 3600),
        (at, 'd') => (&interval[..at], 86_400),
        _ => (interval, 60),
    };
    let count: u64 = number.parse().ok().filter(|count| *count > 0)?;
    Some(Duration::from_secs(count.checked_mul(unit_seconds)?))
}

fn mon_host(site: &str) -> String {
    format!("[v2:{site}.sim:3300/0,v1:{site}.sim:6789/0]")
}

/// What a bootstrap token carries, as `rbd mirror pool peer bootstrap create` encodes it.
#[derive(Deserialize)]
struct BootstrapToken {
    fsid: String,
    key: String,
}

/// The token is opaque to everyone but the importing cluster: hex-encoded JSON with the fields Ceph's has.
fn encode_token(fsid: &str, site: &str) -> String {
    let json = serde_json::json!({
        "fsid": fsid,
        "client_id": "rbd-mirror-peer",
        "key": cephx_key(fsid),
        "mon_host": mon_host(site),
    });
    json.to_string().bytes().fold(String::new(), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    })
}

fn decode_token(token: &str) -> Option<BootstrapToken> {
    let bytes = (0..token.len())
        .step_by(2)
        .map(|at| {
            token
                .get(at..at + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()?;
    serde_json::from_slice(&bytes).ok()
}

/// The simulated cephx key of a cluster's peer user: stands in for the secret the token carries.
fn cephx_key(fsid: &str) -> String {
    format!("sim-cephx-{fsid}")
}

/// Who a bootstrap peer is: the site name it goes by, its fsid and the simulated site it reaches.
struct PeerIdentity<'a> {
    site_name: &'a str,
    fsid: &'a str,
    cluster: &'a str,
}

/// `create_bootstrap_peer` of librbd: the first (only) peer is reused, direction kept, when it names the same site.
fn add_bootstrap_peer(
    pool: &mut Pool,
    direction: PeerDirection,
    who: PeerIdentity<'_>,
    uuid: String,
) -> Result<(), &'static str> {
    match pool.peers.first_mut() {
        None => pool.peers.push(Peer {
            uuid,
            site_name: who.site_name.to_string(),
            direction,
            mon_host: Some(mon_host(who.cluster)),
            client_name: Some(PEER_CLIENT.to_string()),
            cluster: who.cluster.to_string(),
        }),
        Some(peer) if peer.site_name == who.site_name || peer.site_name == who.fsid => {
            peer.site_name = who.site_name.to_string();
            peer.mon_host = Some(mon_host(who.cluster));
            peer.cluster = who.cluster.to_string();
        }
        Some(_) => return Err("multiple peers are not currently supported"),
    }
    Ok(())
}

impl WorldState {
    /// Image `pool/image` on `site`, ready to take points.
    fn image_mut(&mut self, site: &str, pool: &str, image: &str) -> AgentResult<ImageMut<'_>> {
        let WorldState { clusters, ids, .. } = self;
        let Pool {
            images, last_snap_id, ..
        } = pool_mut(clusters, site, pool)?;
        let image = images
            .get_mut(image)
            .ok_or_else(|| not_found(site, format!("image {pool}/{image}")))?;
        Ok(ImageMut {
            image,
            ids,
            last_snap_id,
        })
    }

    pub(super) fn enable_pool_mirroring(
        &mut self,
        site: &str,
        pool: &str,
        mode: PoolMirrorMode,
        site_name: &str,
        step: &Step,
        now: Timestamp,
    ) -> AgentResult<()> {
        if mode == PoolMirrorMode::Disabled {
            return self.disable_pool_mirroring(site, pool, step);
        }
        let WorldState { clusters, ids, .. } = self;
        let pool_state = pool_mut(clusters, site, pool)?;
        pool_state.mode = mode;
        if mode == PoolMirrorMode::Pool {
            // Pool mode mirrors every image (with journaling) without asking.
            for image in pool_state
                .images
                .values_mut()
                .filter(|image| image.mirroring.is_none())
            {
                enable_image(
                    image,
                    ImageMirrorMode::Journal,
                    ids,
                    &mut pool_state.last_snap_id,
                    now,
                );
            }
        }
        self.cluster_mut(site)?.rbd.site_name = Some(site_name.to_string());
        Ok(())
    }

    pub(super) fn disable_pool_mirroring(&mut self, site: &str, pool: &str, step: &Step) -> AgentResult<()> {
        let pool_state = pool_mut(&mut self.clusters, site, pool)?;
        if pool_state.mode == PoolMirrorMode::Disabled {
            return Ok(());
        }
        if !pool_state.peers.is_empty() {
            return Err(refused(site, step, "mirror peers still registered"));
        }
        let mirrored = pool_state.images.values().any(|image| image.mirroring.is_some());
        if pool_state.mode == PoolMirrorMode::Image && mirrored {
            return Err(refused(site, step, "mirroring is enabled on one or more images"));
        }
        for image in pool_state.images.values_mut() {
            image.mirroring = None;
            image.points.clear();
        }
        pool_state.mode = PoolMirrorMode::Disabled;
        Ok(())
    }

    pub(super) fn create_bootstrap_token(
        &mut self,
        site: &str,
        pool: &str,
        site_name: &str,
    ) -> AgentResult<Sensitive<String>> {
        if pool_mut(&mut self.clusters, site, pool)?.mode == PoolMirrorMode::Disabled {
            return Err(command_failed(
                site,
                "rbd mirror pool peer bootstrap create",
                22,
                "rbd: failed to create mirroring bootstrap token: (22) Invalid argument",
            ));
        }
        let cluster = self.cluster_mut(site)?;
        cluster.rbd.site_name = Some(site_name.to_string());
        Ok(Sensitive(encode_token(&cluster.fsid, site)))
    }

    /// `rbd mirror pool peer bootstrap import`, following librbd: rx-tx also registers this site on the token's
    /// cluster; rx-only leaves that to rbd-mirror's peer ping (see `rbd_sync.rs`).
    pub(super) fn import_peer(
        &mut self,
        site: &str,
        pool: &str,
        token: &Sensitive<String>,
        direction: PeerDirection,
        site_name: &str,
        step: &Step,
    ) -> AgentResult<()> {
        if direction == PeerDirection::TxOnly {
            return Err(refused(site, step, "invalid mirror peer direction"));
        }
        let unreachable = || {
            command_failed(
                site,
                IMPORT_COMMAND,
                110,
                "failed to connect to peer cluster: (110) Connection timed out",
            )
        };
        let token = decode_token(token.expose()).ok_or_else(|| {
            command_failed(site, IMPORT_COMMAND, 22, "invalid bootstrap token JSON received")
        })?;
        let remote = self
            .clusters
            .iter()
            .find(|(_, cluster)| cluster.fsid == token.fsid)
            .map(|(remote, _)| remote.clone())
            .ok_or_else(unreachable)?;
        if remote == site {
            return Err(refused(site, step, "cannot import token for local cluster"));
        }
        if !self.reachable(site, &remote) {
            return Err(unreachable());
        }
        if token.key != cephx_key(&token.fsid) {
            return Err(refused(
                site,
                step,
                "failed to connect to peer cluster: (13) Permission denied",
            ));
        }
        pool_mut(&mut self.clusters, site, pool)?;
        let local = self.cluster_mut(site)?;
        local.rbd.site_name = Some(site_name.to_string());
        let (local_fsid, local_site_name) = (local.fsid.clone(), local.rbd.site_name_or(&local.fsid));
        let remote_cluster = self.cluster(&remote)?;
        let remote_site_name = remote_cluster.rbd.site_name_or(&remote_cluster.fsid);
        if remote_site_name == local_site_name {
            return Err(refused(site, step, "cannot import token for duplicate site name"));
        }
        let remote_mode = match remote_cluster
            .rbd
            .pools
            .get(pool)
            .map(|remote_pool| remote_pool.mode)
        {
            None => {
                return Err(command_failed(
                    site,
                    IMPORT_COMMAND,
                    2,
                    "remote pool does not exist",
                ))
            }
            Some(PoolMirrorMode::Disabled) => {
                return Err(refused(site, step, "mirroring is not enabled on the remote pool"));
            }
            Some(mode) => mode,
        };
        if direction == PeerDirection::RxTx {
            let uuid = self.ids.uuid();
            let remote_pool = pool_mut(&mut self.clusters, &remote, pool)?;
            let local_identity = PeerIdentity {
                site_name: &local_site_name,
                fsid: &local_fsid,
                cluster: site,
            };
            add_bootstrap_peer(remote_pool, PeerDirection::RxTx, local_identity, uuid).map_err(
                |message| {
                    refused(
                        site,
                        step,
                        format!("failed to add local peer to remote cluster: {message}"),
                    )
                },
            )?;
        }
        let uuid = self.ids.uuid();
        let local_pool = pool_mut(&mut self.clusters, site, pool)?;
        if local_pool.mode == PoolMirrorMode::Disabled {
            local_pool.mode = remote_mode;
        }
        let remote_identity = PeerIdentity {
            site_name: &remote_site_name,
            fsid: &token.fsid,
            cluster: &remote,
        };
        add_bootstrap_peer(local_pool, direction, remote_identity, uuid)
            .map_err(|message| refused(site, step, message))
    }

    pub(super) fn set_peer_direction(
        &mut self,
        site: &str,
        pool: &str,
        uuid: &str,
        direction: PeerDirection,
    ) -> AgentResult<()> {
        let peer = pool_mut(&mut self.clusters, site, pool)?
            .peers
            .iter_mut()
            .find(|peer| peer.uuid == uuid)
            .ok_or_else(|| not_found(site, format!("peer {uuid} of pool {pool}")))?;
        peer.direction = direction;
        Ok(())
    }

    pub(super) fn create_image(
        &mut self,
        site: &str,
        pool: &str,
        image: &str,
        now: Timestamp,
    ) -> AgentResult<()> {
        let WorldState { clusters, ids, .. } = self;
        let pool_state = pool_mut(clusters, site, pool)?;
        if pool_state.images.contains_key(image) {
            return Ok(());
        }
        let mut new_image = Image::default();
        if pool_state.mode == PoolMirrorMode::Pool {
            enable_image(
                &mut new_image,
                ImageMirrorMode::Journal,
                ids,
                &mut pool_state.last_snap_id,
                now,
            );
        }
        pool_state.images.insert(image.to_string(), new_image);
        Ok(())
    }

    pub(super) fn write_image(
        &mut self,
        site: &str,
        pool: &str,
        image: &str,
        now: Timestamp,
    ) -> AgentResult<u64> {
        let delivered_up_to = self.oldest_undelivered_from(site, now);
        let mut target = self.image_mut(site, pool, image)?;
        if target.mirroring.is_some_and(|mirroring| !mirroring.primary) {
            return Err(refused(
                site,
                format!("write {pool}/{image}"),
                "image is non-primary and read-only",
            ));
        }
        target.content_version += 1;
        if target
            .mirroring
            .is_some_and(|mirroring| mirroring.mode == ImageMirrorMode::Journal)
        {
            // Every write is a journal event the peer replays.
            target.take_point(Origin::Primary, now, delivered_up_to);
        }
        Ok(target.content_version)
    }

    pub(super) fn enable_image_mirroring(
        &mut self,
        site: &str,
        pool: &str,
        image: &str,
        mode: ImageMirrorMode,
        step: &Step,
        now: Timestamp,
    ) -> AgentResult<()> {
        let pool_mode = pool_mut(&mut self.clusters, site, pool)?.mode;
        let mut target = self.image_mut(site, pool, image)?;
        match target.mirroring {
            Some(mirroring) if mirroring.mode == mode => return Ok(()),
            Some(_) => {
                return Err(refused(
                    site,
                    step,
                    "mirroring is already enabled in another mode",
                ))
            }
            None => {}
        }
        match pool_mode {
            PoolMirrorMode::Disabled => Err(refused(
                site,
                step,
                "cannot enable mirroring: mirroring is not enabled on a pool",
            )),
            PoolMirrorMode::Pool => Err(refused(
                site,
                step,
                "cannot enable mirroring: pool is not in image mirror mode",
            )),
            PoolMirrorMode::Image => {
                target.enable(mode, now);
                Ok(())
            }
        }
    }

    /// A copy is disabled too: the Ceph backend passes the `--force` that Ceph requires for one.
    pub(super) fn disable_image_mirroring(&mut self, site: &str, pool: &str, image: &str) -> AgentResult<()> {
        let target = image_in(pool_mut(&mut self.clusters, site, pool)?, site, pool, image)?;
        if target.mirroring.is_some() {
            *target = Image {
                content_version: target.content_version,
                ..Image::default()
            };
        }
        Ok(())
    }

    pub(super) fn create_mirror_snapshot(
        &mut self,
        site: &str,
        pool: &str,
        image: &str,
        step: &Step,
        now: Timestamp,
    ) -> AgentResult<()> {
        let has_tx_peer = pool_mut(&mut self.clusters, site, pool)?.has_tx_peer();
        let mut target = self.image_mut(site, pool, image)?;
        match target.mirroring {
            Some(Mirroring {
                mode: ImageMirrorMode::Snapshot,
                primary: true,
            }) if has_tx_peer => {
                target.take_point(Origin::Primary, now, now);
                Ok(())
            }
            Some(Mirroring {
                mode: ImageMirrorMode::Snapshot,
                primary: true,
            }) => Err(refused(site, step, "no mirror tx peers configured for the pool")),
            Some(Mirroring {
                mode: ImageMirrorMode::Snapshot,
                primary: false,
            }) => Err(refused(site, step, "image is not primary")),
            _ => Err(refused(site, step, "snapshot based mirroring is not enabled")),
        }
    }

    /// `rbd mirror image promote`: without force only once the peer's demotion snapshot (or journal tag) has been
    /// copied here; with force always, which splits the brain if the peer is still primary.
    pub(super) fn promote_image(
        &mut self,
        site: &str,
        pool: &str,
        image: &str,
        force: bool,
        step: &Step,
        now: Timestamp,
    ) -> AgentResult<()> {
        self.sync_image(site, pool, image, now);
        let delivered_up_to = self.oldest_undelivered_from(site, now);
        let mut handle = self.image_mut(site, pool, image)?;
        // The image itself, whose fields borrow apart: `mirroring` is changed after `points` is read.
        let target = &mut *handle;
        let Some(mirroring) = target.mirroring.as_mut() else {
            return Err(refused(site, step, "mirroring not enabled on the image"));
        };
        if mirroring.primary {
            return Ok(());
        }
        let handed_over = match target.points.last() {
            Some(Point {
                origin: Origin::Copy {
                    from, demoted: true, ..
                },
                ..
            }) => Some(from.clone()),
            _ => None,
        };
        if handed_over.is_none() && !force {
            let message = if target.resync_requested_at.is_some() {
                "image is being resynchronised"
            } else {
                "image is still primary within a remote cluster (or its demotion has not replicated yet)"
            };
            return Err(refused(site, step, message));
        }
        mirroring.primary = true;
        target.promoted_after = handed_over;
        target.resync_requested_at = None;
        handle.take_point(Origin::Primary, now, delivered_up_to);
        Ok(())
    }

    pub(super) fn demote_image(
        &mut self,
        site: &str,
        pool: &str,
        image: &str,
        step: &Step,
        now: Timestamp,
    ) -> AgentResult<()> {
        let delivered_up_to = self.oldest_undelivered_from(site, now);
        let mut target = self.image_mut(site, pool, image)?;
        let Some(mirroring) = target.mirroring.as_mut() else {
            return Err(refused(site, step, "mirroring not enabled on the image"));
        };
        if !mirroring.primary {
            return Ok(());
        }
        mirroring.primary = false;
        target.take_point(Origin::Demoted, now, delivered_up_to);
        Ok(())
    }

    /// `rbd mirror image resync`: rbd-mirror recreates the image empty and copies it from the primary again.
    pub(super) fn resync_image(
        &mut self,
        site: &str,
        pool: &str,
        image: &str,
        step: &Step,
        now: Timestamp,
    ) -> AgentResult<()> {
        let target = image_in(pool_mut(&mut self.clusters, site, pool)?, site, pool, image)?;
        match target.mirroring {
            None => Err(refused(site, step, "mirroring not enabled on the image")),
            Some(Mirroring { primary: true, .. }) => {
                Err(refused(site, step, "image is primary, cannot resync to itself"))
            }
            Some(_) => {
                target.resync_requested_at = Some(now);
                target.points.clear();
                target.content_version = 0;
                target.promoted_after = None;
                Ok(())
            }
        }
    }

    pub(super) fn add_snapshot_schedule(
        &mut self,
        site: &str,
        pool: &str,
        schedule: Schedule<'_>,
        step: &Step,
    ) -> AgentResult<()> {
        if parse_interval(schedule.interval).is_none() {
            let message = format!("invalid interval ({})", schedule.interval);
            return Err(refused(site, step, message));
        }
        let pool_state = pool_mut(&mut self.clusters, site, pool)?;
        if let Some(image) = schedule.image {
            image_in(pool_state, site, pool, image)?;
        }
        pool_state.schedules.insert(schedule.entry());
        Ok(())
    }
}

/// Enabling takes the first mirror snapshot (snapshot mode) or opens the journal at the current position.
fn enable_image(
    image: &mut Image,
    mode: ImageMirrorMode,
    ids: &mut IdGen,
    last_snap_id: &mut u64,
    now: Timestamp,
) {
    image.global_id = ids.uuid();
    image.mirroring = Some(Mirroring { mode, primary: true });
    image.points = vec![new_point(
        ids,
        last_snap_id,
        now,
        Origin::Primary,
        image.content_version,
    )];
    image.resync_requested_at = None;
    image.promoted_after = None;
}
