//! What the rbd-mirror daemons and the snapshot scheduler do between calls, applied lazily when a pool is looked
//! at, and what `rbd mirror pool status`/`info` then report.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::jiff::Timestamp;

use super::{
    rbd::{new_point, parse_interval, receives, Image, Mirroring, Origin, Peer, Point, PointRef, Pool},
    ClusterState, IdGen, WorldState,
};
use crate::agent::{
    AgentResult, DaemonHealth, ImageMirrorMode, ImageMirroring, MirrorSnapshot, PeerDirection,
    PoolMirrorMode, RbdImage, RbdPeer, RbdPoolState, ReplayStatus,
};

/// A peer this site's rbd-mirror pulls from, and how far its changes have arrived.
struct Source {
    site: String,
    delivered_up_to: Timestamp,
    reachable: bool,
}

/// Everything a pull needs besides the image itself.
struct PullContext<'a> {
    clusters: &'a BTreeMap<String, ClusterState>,
    sources: &'a [Source],
    local_site: &'a str,
    pool: &'a str,
    lag: Duration,
    now: Timestamp,
}

impl WorldState {
    /// The pool as `site` shows it; with `only`, just those images and no schedules. rbd-mirror works on every
    /// image whether or not it is read, so the whole pool is brought up to date either way.
    pub(super) fn rbd_pool(
        &mut self,
        site: &str,
        pool: &str,
        only: Option<&[String]>,
        now: Timestamp,
    ) -> AgentResult<RbdPoolState> {
        self.sync_pool(site, pool, None, now);
        let cluster = self.cluster(site)?;
        let Some(pool_state) = cluster.rbd.pools.get(pool) else {
            return Ok(RbdPoolState::default());
        };
        let sources = self.sources(site, pool_state, now);
        // rbd-mirror reports on a pool only while it replays it from some peer.
        let reports = cluster.rbd.daemon.running && !sources.is_empty();
        let images = pool_state
            .images
            .iter()
            .filter(|(name, _)| only.is_none_or(|only| only.contains(name)))
            .map(|(name, image)| RbdImage {
                name: name.clone(),
                mirroring: image.mirroring.map(|mirroring| ImageMirroring {
                    mode: mirroring.mode,
                    primary: mirroring.primary,
                    global_id: image.global_id.clone(),
                }),
                replay: reports
                    .then(|| self.replay_status(site, pool, pool_state, name, image, &sources))
                    .flatten(),
                last_mirror_snapshot: last_mirror_snapshot(image),
            })
            .collect();
        Ok(RbdPoolState {
            exists: true,
            mode: pool_state.mode,
            site_name: (pool_state.mode != PoolMirrorMode::Disabled)
                .then(|| cluster.rbd.site_name_or(&cluster.fsid)),
            peers: pool_state.peers.iter().map(rbd_peer).collect(),
            images,
            schedules: match only {
                Some(_) => Vec::new(),
                None => pool_state.schedules.iter().cloned().collect(),
            },
            daemon: cluster.rbd.daemon.running.then(|| DaemonHealth {
                health: cluster.rbd.daemon.health.clone(),
            }),
        })
    }

    pub(super) fn image_content_version(
        &mut self,
        site: &str,
        pool: &str,
        image: &str,
        now: Timestamp,
    ) -> AgentResult<u64> {
        self.sync_image(site, pool, image, now);
        Ok(self.image(site, pool, image)?.content_version)
    }

    pub(super) fn sync_image(&mut self, site: &str, pool: &str, image: &str, now: Timestamp) {
        self.sync_pool(site, pool, Some(image), now);
    }

    /// Brings `pool` on `site` (or only `only_image` in it) up to date: peer pings, due scheduled snapshots, new
    /// images adopted from peers, snapshots or journal entries copied, images whose primary went away removed.
    fn sync_pool(&mut self, site: &str, pool: &str, only_image: Option<&str>, now: Timestamp) {
        self.record_peer_pings(site, pool);
        let Some(cluster) = self.clusters.get(site) else {
            return;
        };
        let Some(pool_state) = cluster.rbd.pools.get(pool) else {
            return;
        };
        let sources = if cluster.rbd.daemon.running {
            self.sources(site, pool_state, now)
        } else {
            Vec::new()
        };
        let WorldState {
            clusters, ids, lag, ..
        } = self;
        let Some(local_pool) = clusters
            .get_mut(site)
            .and_then(|cluster| cluster.rbd.pools.get_mut(pool))
        else {
            return;
        };
        // Lift the images out so the peers' pools can be read while these change.
        let mut images = std::mem::take(&mut local_pool.images);
        let mut last_snap_id = local_pool.last_snap_id;
        let snapshot_intervals = schedule_intervals(local_pool);
        let can_snapshot = local_pool.has_tx_peer();
        let mirroring_enabled = local_pool.mode != PoolMirrorMode::Disabled;
        let context = PullContext {
            clusters,
            sources: &sources,
            local_site: site,
            pool,
            lag: *lag,
            now,
        };
        if mirroring_enabled {
            adopt_new_images(&context, only_image, &mut images);
        }
        let mut gone = Vec::new();
        let selected = images
            .iter_mut()
            .filter(|(name, _)| only_image.is_none_or(|only| only == name.as_str()));
        for (name, image) in selected {
            if can_snapshot {
                take_scheduled_snapshot(image, &snapshot_intervals, name, ids, &mut last_snap_id, now);
            }
            if !pull_image(&context, name, image, ids, &mut last_snap_id) {
                gone.push(name.clone());
            }
        }
        for name in gone {
            images.remove(&name);
        }
        if let Some(local_pool) = clusters
            .get_mut(site)
            .and_then(|cluster| cluster.rbd.pools.get_mut(pool))
        {
            local_pool.images = images;
            local_pool.last_snap_id = last_snap_id;
        }
    }

    fn sources(&self, site: &str, pool: &Pool, now: Timestamp) -> Vec<Source> {
        pool.peers
            .iter()
            .filter(|peer| receives(peer.direction))
            .map(|peer| Source {
                site: peer.cluster.clone(),
                delivered_up_to: self.delivered_up_to(&peer.cluster, site, now),
                reachable: self.reachable(site, &peer.cluster),
            })
            .collect()
    }

    /// rbd-mirror on a receiving site pings the pool it pulls from, which registers it there as a tx-only peer
    /// (`mirror_peer_ping`): how an rx-only bootstrap import gives the primary its tx peer.
    fn record_peer_pings(&mut self, site: &str, pool: &str) {
        let pingers: Vec<(String, String)> = self
            .clusters
            .iter()
            .filter(|(other, cluster)| {
                other.as_str() != site && cluster.rbd.daemon.running && self.reachable(site, other)
            })
            .filter(|(_, cluster)| {
                let peers = cluster
                    .rbd
                    .pools
                    .get(pool)
                    .map(|other_pool| other_pool.peers.as_slice())
                    .unwrap_or_default();
                peers
                    .iter()
                    .any(|peer| peer.cluster == site && receives(peer.direction))
            })
            .map(|(other, cluster)| (other.clone(), cluster.rbd.site_name_or(&cluster.fsid)))
            .collect();
        let WorldState { clusters, ids, .. } = self;
        let Some(local_pool) = clusters
            .get_mut(site)
            .and_then(|cluster| cluster.rbd.pools.get_mut(pool))
        else {
            return;
        };
        if local_pool.mode == PoolMirrorMode::Disabled {
            return;
        }
        for (cluster, site_name) in pingers {
            if !local_pool
                .peers
                .iter()
                .any(|peer| peer.cluster == cluster || peer.site_name == site_name)
            {
                local_pool.peers.push(Peer {
                    uuid: ids.uuid(),
                    site_name,
                    direction: PeerDirection::TxOnly,
                    mon_host: None,
                    client_name: None,
                    cluster,
                });
            }
        }
    }

    fn replay_status(
        &self,
        site: &str,
        pool: &str,
        pool_state: &Pool,
        name: &str,
        image: &Image,
        sources: &[Source],
    ) -> Option<ReplayStatus> {
        let mirroring = image.mirroring?;
        let status = |state: &str, description: &str| ReplayStatus {
            state: state.into(),
            up: true,
            description: description.into(),
            last_synced: None,
        };
        if mirroring.primary {
            let split_brain = pool_state
                .peers
                .iter()
                .filter(|peer| self.reachable(site, &peer.cluster))
                .filter_map(|peer| self.remote_image(&peer.cluster, pool, name, &image.global_id))
                .any(is_primary);
            let description = if split_brain {
                "local image is primary; split-brain detected: the peer image is primary too"
            } else {
                "local image is primary"
            };
            return Some(status("stopped", description));
        }
        let remote = sources
            .iter()
            .find_map(|source| self.remote_image(&source.site, pool, name, &image.global_id));
        let Some(remote) = remote else {
            return Some(status("unknown", "remote image does not exist"));
        };
        if image.resync_requested_at.is_some() {
            return Some(match mirroring.mode {
                ImageMirrorMode::Snapshot => status(
                    "unknown",
                    "mirroring not enabled on the image (resync waits for a new mirror snapshot on the primary)",
                ),
                ImageMirrorMode::Journal => status("syncing", "bootstrapping, IMAGE_SYNC/COPY_IMAGE"),
            });
        }
        match image.points.last().map(|point| &point.origin) {
            None => return Some(status("syncing", "bootstrapping, IMAGE_SYNC/CREATE_SYNC_POINT")),
            // What Pacific's rbd-mirror reports once a journaled copy replayed the demotion (measured).
            Some(Origin::Copy { demoted: true, .. }) if mirroring.mode == ImageMirrorMode::Journal => {
                return Some(status("unknown", "remote image is not primary"))
            }
            Some(Origin::Copy { demoted: true, .. }) => {
                return Some(status("unknown", "remote image demoted"))
            }
            _ if !follows(image, remote, site) && is_primary(remote) => {
                return Some(status("error", "split-brain detected"))
            }
            Some(Origin::Demoted) if !is_primary(remote) => {
                return Some(status("unknown", "remote image is not primary"))
            }
            _ => {}
        }
        let last_synced = image.points.iter().rev().find_map(|point| match point.origin {
            Origin::Copy { source_created, .. } => Some(source_created),
            _ => None,
        });
        let description = match mirroring.mode {
            ImageMirrorMode::Snapshot => {
                let local = last_synced.map_or(0, |at| at.as_second());
                let remote_newest = remote
                    .own_points()
                    .last()
                    .map_or(0, |point| point.created.as_second());
                let replay_state = if local >= remote_newest { "idle" } else { "syncing" };
                format!(
                    r#"replaying, {{"local_snapshot_timestamp":{local},"remote_snapshot_timestamp":{remote_newest},"replay_state":"{replay_state}"}}"#
                )
            }
            ImageMirrorMode::Journal => {
                // Every write and the demotion are journal entries; the local image has replayed those up
                // to the newest one it copied.
                let replayed = image
                    .points
                    .iter()
                    .filter_map(|point| match &point.origin {
                        Origin::Copy { from, .. } => Some(from.id),
                        _ => None,
                    })
                    .max()
                    .unwrap_or(0);
                let behind = remote.own_points().filter(|point| point.id > replayed).count();
                format!(r#"replaying, {{"entries_behind_primary":{behind}}}"#)
            }
        };
        Some(ReplayStatus {
            last_synced,
            ..status("replaying", &description)
        })
    }

    /// The peer's copy of a mirrored image: same name (renames are not simulated) and same global id.
    fn remote_image(&self, remote_site: &str, pool: &str, name: &str, global_id: &str) -> Option<&Image> {
        let remote_pool = self.clusters.get(remote_site)?.rbd.pools.get(pool)?;
        remote_pool
            .images
            .get(name)
            .filter(|image| image.mirroring.is_some() && image.global_id == global_id)
    }
}

fn is_primary(image: &Image) -> bool {
    image.mirroring.is_some_and(|mirroring| mirroring.primary)
}

/// Whether `image` (on `local_site`) continues the history of `remote`: it holds nothing yet, its newest point is
/// a copy, or the remote was promoted on top of the demotion this image made. Otherwise both wrote after parting:
/// split brain, which only a resync resolves.
fn follows(image: &Image, remote: &Image, local_site: &str) -> bool {
    match image.points.last() {
        None
        | Some(Point {
            origin: Origin::Copy { .. },
            ..
        }) => true,
        Some(own) => {
            remote.promoted_after
                == Some(PointRef {
                    site: local_site.to_string(),
                    id: own.id,
                })
        }
    }
}

/// Creates local non-primary images for images peers started mirroring (once that has arrived here), all of them
/// or only `only_image`.
fn adopt_new_images(
    context: &PullContext<'_>,
    only_image: Option<&str>,
    images: &mut BTreeMap<String, Image>,
) {
    for source in context.sources {
        let remote_pool = context
            .clusters
            .get(&source.site)
            .and_then(|cluster| cluster.rbd.pools.get(context.pool));
        let Some(remote_pool) = remote_pool else { continue };
        let candidates: Vec<(&String, &Image)> = match only_image {
            Some(only) => remote_pool.images.get_key_value(only).into_iter().collect(),
            None => remote_pool.images.iter().collect(),
        };
        for (name, remote) in candidates {
            let Some(mirroring) = remote.mirroring else {
                continue;
            };
            let arrived = remote
                .own_points()
                .next()
                .is_some_and(|first| first.created <= source.delivered_up_to);
            if arrived && !images.contains_key(name) {
                let replica = Image {
                    global_id: remote.global_id.clone(),
                    mirroring: Some(Mirroring {
                        mode: mirroring.mode,
                        primary: false,
                    }),
                    ..Image::default()
                };
                images.insert(name.clone(), replica);
            }
        }
    }
}

/// Copies the points of the primary that have arrived into a non-primary image. Returns false when rbd-mirror
/// would delete the image: its primary, reachable, no longer mirrors it.
fn pull_image(
    context: &PullContext<'_>,
    name: &str,
    image: &mut Image,
    ids: &mut IdGen,
    last_snap_id: &mut u64,
) -> bool {
    let Some(Mirroring { mode, primary: false }) = image.mirroring else {
        return true;
    };
    let remote_of = |source: &Source| {
        let remote_pool = context.clusters.get(&source.site)?.rbd.pools.get(context.pool)?;
        remote_pool
            .images
            .get(name)
            .filter(|remote| remote.mirroring.is_some() && remote.global_id == image.global_id)
    };
    let Some((source, remote)) = context
        .sources
        .iter()
        .find_map(|source| Some((source, remote_of(source)?)))
    else {
        // Only an image that came from a peer is deleted with its primary; one demoted here stays.
        let replicated = image
            .points
            .last()
            .is_none_or(|point| matches!(point.origin, Origin::Copy { .. }));
        let primary_gone =
            !context.sources.is_empty() && context.sources.iter().all(|source| source.reachable);
        return !(primary_gone && replicated && image.resync_requested_at.is_none());
    };
    if !follows(image, remote, context.local_site) {
        return true;
    }
    let resync_from = image.resync_requested_at;
    if resync_from.is_some_and(|requested| source.delivered_up_to < requested) {
        return true;
    }
    let last_copied = image
        .points
        .iter()
        .filter_map(|point| match &point.origin {
            Origin::Copy { from, .. } if from.site == source.site => Some(from.id),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let arrived: Vec<&Point> = remote
        .own_points()
        .filter(|point| point.id > last_copied && point.created <= source.delivered_up_to)
        // A snapshot-mode resync rebuilds only from a snapshot taken after it was requested (seen on 16.2.15).
        .filter(|point| {
            mode == ImageMirrorMode::Journal || resync_from.is_none_or(|requested| point.created > requested)
        })
        .collect();
    // A journal replays straight to its newest position; snapshots are applied one after another.
    let to_copy = match mode {
        ImageMirrorMode::Journal => arrived.last().map_or(&[][..], std::slice::from_ref),
        ImageMirrorMode::Snapshot => &arrived[..],
    };
    for point in to_copy {
        let origin = Origin::Copy {
            from: PointRef {
                site: source.site.clone(),
                id: point.id,
            },
            demoted: point.origin == Origin::Demoted,
            source_created: point.created,
        };
        let created = point
            .created
            .checked_add(context.lag)
            .unwrap_or(context.now)
            .min(context.now);
        image.points.push(new_point(
            ids,
            last_snap_id,
            created,
            origin,
            point.content_version,
        ));
        image.content_version = point.content_version;
        image.resync_requested_at = None;
    }
    // Nobody copies from a non-primary image: keep only what the status and promotion rules look at.
    image.prune(Timestamp::MAX);
    true
}

/// The shortest schedule interval for each image name (`None`: pool-level schedules).
fn schedule_intervals(pool: &Pool) -> BTreeMap<Option<String>, Duration> {
    let mut intervals = BTreeMap::new();
    for schedule in &pool.schedules {
        if let Some(interval) = parse_interval(&schedule.interval) {
            let entry = intervals.entry(schedule.image.clone()).or_insert(interval);
            *entry = (*entry).min(interval);
        }
    }
    intervals
}

/// The rbd_support mgr module takes a mirror snapshot of a primary image when its schedule is due.
fn take_scheduled_snapshot(
    image: &mut Image,
    intervals: &BTreeMap<Option<String>, Duration>,
    name: &str,
    ids: &mut IdGen,
    last_snap_id: &mut u64,
    now: Timestamp,
) {
    if image
        .mirroring
        .is_none_or(|mirroring| !mirroring.primary || mirroring.mode != ImageMirrorMode::Snapshot)
    {
        return;
    }
    let interval = [intervals.get(&Some(name.to_string())), intervals.get(&None)]
        .into_iter()
        .flatten()
        .min();
    let Some(interval) = interval else { return };
    let newest = image.own_points().last().map(|point| point.created);
    if newest.is_none_or(|created| created.checked_add(*interval).is_ok_and(|due| due <= now)) {
        image.points.push(new_point(
            ids,
            last_snap_id,
            now,
            Origin::Primary,
            image.content_version,
        ));
        image.prune(now);
    }
}

fn last_mirror_snapshot(image: &Image) -> Option<MirrorSnapshot> {
    let mirroring = image.mirroring?;
    if mirroring.mode != ImageMirrorMode::Snapshot {
        return None;
    }
    let point = image.points.last()?;
    let (kind, state) = match point.origin {
        Origin::Primary => ("primary", "primary"),
        Origin::Demoted => ("primary", "demoted"),
        // A received demotion keeps its state: `rbd snap ls --all` shows `.mirror.non_primary.*` as `demoted`.
        Origin::Copy { demoted: true, .. } => ("non_primary", "demoted"),
        Origin::Copy { .. } => ("non_primary", "non-primary"),
    };
    let primary_snap_id = match &point.origin {
        Origin::Copy { from, .. } => Some(from.id),
        Origin::Primary | Origin::Demoted => None,
    };
    Some(MirrorSnapshot {
        id: point.id,
        name: format!(".mirror.{kind}.{}.{}", image.global_id, point.uuid),
        created: point.created,
        state: state.into(),
        complete: true,
        primary_snap_id,
    })
}

fn rbd_peer(peer: &Peer) -> RbdPeer {
    RbdPeer {
        uuid: peer.uuid.clone(),
        site_name: peer.site_name.clone(),
        direction: peer.direction,
        mon_host: peer.mon_host.clone(),
        client_name: peer.client_name.clone(),
    }
}
