//! A tiny pure model of two Ceph clusters mirroring one pool: applies planned steps with the preconditions
//! real Ceph enforces (so a step planned too early fails the test), and plays rbd-mirror between rounds.

use k8s_openapi::jiff::Timestamp;

use super::super::{plan, Observed, ObservedSite, PoolPlan};
use crate::{
    agent::{
        DaemonHealth, ImageMirrorMode, ImageMirroring, MirrorSnapshot, PeerDirection, PoolMirrorMode,
        RbdImage, RbdPeer, RbdPoolState, ReplayStatus, ScheduleEntry, Sensitive, Step,
    },
    api::rbd_mirror_pool::RbdMirrorPoolSpec,
    plan::SiteStep,
};

/// One site: its names, its pool, its token and whether its agent answers.
#[derive(Clone, Debug)]
pub struct SiteModel {
    /// `CephSite` resource name.
    pub name: String,
    /// Site name in Ceph peer lists.
    pub ceph_name: String,
    pub pool: RbdPoolState,
    pub token: Option<String>,
    /// `Some(error)` when the agent does not answer.
    pub unreachable: Option<String>,
}

#[derive(Clone, Debug)]
pub struct World {
    pub sites: [SiteModel; 2],
    pub now: Timestamp,
    next_id: u64,
}

pub fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).expect("valid test timestamp")
}

pub const EPOCH: i64 = 1_800_000_000;

pub fn token_of(ceph_name: &str) -> String {
    format!("token-of-{ceph_name}")
}

impl World {
    /// `site-a` (Ceph name `a`) and `site-b` (`b`), neither with the pool; rbd-mirror runs on `site-b`.
    pub fn empty() -> World {
        let site = |name: &str, ceph_name: &str| SiteModel {
            name: name.to_string(),
            ceph_name: ceph_name.to_string(),
            pool: RbdPoolState::default(),
            token: None,
            unreachable: None,
        };
        let mut world = World {
            sites: [site("site-a", "a"), site("site-b", "b")],
            now: at(EPOCH),
            next_id: 1,
        };
        world.sites[1].pool.daemon = Some(DaemonHealth { health: "OK".into() });
        world
    }

    pub fn index(&self, site: &str) -> usize {
        usize::from(self.sites[0].name != site)
    }

    pub fn site(&mut self, site: &str) -> &mut SiteModel {
        let index = self.index(site);
        &mut self.sites[index]
    }

    pub fn pool(&self, site: &str) -> &RbdPoolState {
        &self.sites[self.index(site)].pool
    }

    pub fn image(&self, site: &str, image: &str) -> Option<&RbdImage> {
        self.pool(site).images.iter().find(|i| i.name == image)
    }

    pub fn image_mut(&mut self, site: &str, image: &str) -> Option<&mut RbdImage> {
        self.site(site).pool.images.iter_mut().find(|i| i.name == image)
    }

    /// A plain (not mirrored) image on `site`; creates the pool when needed, as `rbd create` needs it.
    pub fn with_image(mut self, site: &str, image: &str) -> World {
        let pool = &mut self.site(site).pool;
        pool.exists = true;
        pool.images.push(RbdImage {
            name: image.to_string(),
            ..RbdImage::default()
        });
        self
    }

    pub fn with_daemon(mut self, site: &str, health: Option<&str>) -> World {
        self.site(site).pool.daemon = health.map(|h| DaemonHealth {
            health: h.to_string(),
        });
        self
    }

    pub fn with_token(mut self, site: &str) -> World {
        let site = self.site(site);
        site.token = Some(token_of(&site.ceph_name));
        self
    }

    pub fn unreachable(mut self, site: &str) -> World {
        self.site(site).unreachable = Some("connection refused".to_string());
        self
    }

    pub fn observed(&self, deleting: bool) -> Observed {
        Observed {
            sites: self
                .sites
                .iter()
                .map(|site| ObservedSite {
                    site: site.name.clone(),
                    ceph_site_name: site.ceph_name.clone(),
                    pool: match &site.unreachable {
                        Some(error) => Err(error.clone()),
                        None => Ok(site.pool.clone()),
                    },
                    bootstrap_token: site.token.clone().map(Sensitive),
                })
                .collect(),
            deleting,
        }
    }

    pub fn plan(&self, spec: &RbdMirrorPoolSpec) -> PoolPlan {
        plan(spec, &self.observed(false), self.now)
    }

    fn next_uuid(&mut self, kind: &str) -> String {
        self.next_id += 1;
        format!("{kind}-{}", self.next_id)
    }

    /// Runs a plan's steps in order, creates the tokens it asks for, then lets time pass and rbd-mirror work.
    pub fn apply(&mut self, plan: &PoolPlan) -> Result<(), String> {
        for step in &plan.plan.steps {
            self.execute(step).map_err(|e| format!("{step}: {e}"))?;
        }
        for site in &plan.tokens_needed {
            let site = self.site(site);
            if site.unreachable.is_some() {
                return Err(format!("token requested from unreachable site {}", site.name));
            }
            site.token = Some(token_of(&site.ceph_name));
        }
        self.now = at(self.now.as_second() + 5);
        self.replicate();
        Ok(())
    }

    /// Plans and applies until a plan has nothing to do; returns the number of rounds that did something.
    pub fn converge(&mut self, spec: &RbdMirrorPoolSpec, max_rounds: usize) -> Result<usize, String> {
        for round in 0..=max_rounds {
            let plan = self.plan(spec);
            if plan.plan.steps.is_empty() && plan.tokens_needed.is_empty() {
                return Ok(round);
            }
            self.apply(&plan)
                .map_err(|e| format!("round {}: {e}", round + 1))?;
        }
        Err(format!(
            "not converged after {max_rounds} rounds: {:?}",
            self.plan(spec).plan.steps
        ))
    }

    pub fn execute(&mut self, site_step: &SiteStep) -> Result<(), String> {
        let index = self.index(&site_step.site);
        if self.sites[index].unreachable.is_some() {
            return Err("site unreachable".into());
        }
        let now = self.now;
        let other = self.sites[1 - index].clone();
        let global_id = self.next_uuid("image");
        let peer_uuid = self.next_uuid("peer");
        let reverse_peer_uuid = self.next_uuid("peer");
        let pool = &mut self.sites[index].pool;
        let mirroring_on = pool.exists && pool.mode != PoolMirrorMode::Disabled;
        match &site_step.step {
            Step::CreatePool { .. } => pool.exists = true,
            Step::EnablePoolMirroring { mode, site_name, .. } => {
                require(pool.exists, "pool does not exist")?;
                pool.mode = *mode;
                pool.site_name = Some(site_name.clone());
                if *mode == PoolMirrorMode::Pool {
                    // Pool mode mirrors every journaled image; the model's images all are.
                    for image in pool.images.iter_mut().filter(|i| i.mirroring.is_none()) {
                        image.mirroring = Some(ImageMirroring {
                            mode: ImageMirrorMode::Journal,
                            primary: true,
                            global_id: global_id.clone(),
                        });
                    }
                }
            }
            Step::DisablePoolMirroring { .. } => {
                require(pool.peers.is_empty(), "mirror peers still registered")?;
                let images_mirror = pool.images.iter().any(|i| i.mirroring.is_some());
                require(
                    pool.mode != PoolMirrorMode::Image || !images_mirror,
                    "images still mirror",
                )?;
                pool.mode = PoolMirrorMode::Disabled;
                for image in &mut pool.images {
                    image.mirroring = None;
                    image.replay = None;
                }
            }
            Step::ImportPeer {
                token,
                direction,
                site_name,
                ..
            } => {
                require(mirroring_on, "mirroring not enabled")?;
                require(
                    other.token.as_deref() == Some(token.expose().as_str()),
                    "token of another site",
                )?;
                require(
                    !pool.peers.iter().any(|p| p.site_name == other.ceph_name),
                    "peer exists",
                )?;
                pool.site_name = Some(site_name.clone());
                pool.peers.push(peer(peer_uuid, &other.ceph_name, *direction));
                // An rx-tx import registers the importing site on the token's site as well.
                let other_pool = &mut self.sites[1 - index].pool;
                let registered = other_pool.peers.iter().any(|p| &p.site_name == site_name);
                if *direction == PeerDirection::RxTx
                    && other_pool.mode != PoolMirrorMode::Disabled
                    && !registered
                {
                    other_pool
                        .peers
                        .push(peer(reverse_peer_uuid, site_name, PeerDirection::RxTx));
                }
            }
            Step::SetPeerDirection { uuid, direction, .. } => {
                find_peer(pool, uuid)?.direction = *direction;
            }
            Step::RemovePeer { uuid, .. } => {
                find_peer(pool, uuid)?;
                pool.peers.retain(|p| &p.uuid != uuid);
            }
            Step::EnableImageMirroring { image, mode, .. } => {
                require(pool.mode == PoolMirrorMode::Image, "pool not in image mode")?;
                let image = find_image(pool, image)?;
                require(image.mirroring.is_none(), "mirroring already enabled")?;
                image.mirroring = Some(ImageMirroring {
                    mode: *mode,
                    primary: true,
                    global_id,
                });
                if *mode == ImageMirrorMode::Snapshot {
                    image.last_mirror_snapshot = Some(snapshot(now, "primary"));
                }
            }
            Step::DisableImageMirroring { image, .. } => {
                require(pool.mode == PoolMirrorMode::Image, "pool not in image mode")?;
                let image = find_image(pool, image)?;
                require(image.mirroring.is_some(), "mirroring not enabled")?;
                image.mirroring = None;
                image.replay = None;
            }
            Step::CreateMirrorSnapshot { image, .. } => {
                let tx_peer = pool.peers.iter().any(|p| p.direction != PeerDirection::RxOnly);
                require(tx_peer, "no mirror tx peers configured")?;
                let image = find_image(pool, image)?;
                let snapshot_primary = image
                    .mirroring
                    .as_ref()
                    .is_some_and(|m| m.primary && m.mode == ImageMirrorMode::Snapshot);
                require(snapshot_primary, "not a primary snapshot-mode image")?;
                image.last_mirror_snapshot = Some(snapshot(now, "primary"));
            }
            Step::AddSnapshotSchedule {
                image,
                interval,
                start_time,
                ..
            } => {
                require(mirroring_on, "mirroring not enabled")?;
                let entry = ScheduleEntry {
                    image: image.clone(),
                    interval: interval.clone(),
                    start_time: start_time.clone(),
                };
                require(!pool.schedules.contains(&entry), "schedule exists")?;
                pool.schedules.push(entry);
            }
            Step::RemoveSnapshotSchedule {
                image,
                interval,
                start_time,
                ..
            } => {
                let entry = ScheduleEntry {
                    image: image.clone(),
                    interval: interval.clone(),
                    start_time: start_time.clone(),
                };
                require(pool.schedules.contains(&entry), "no such schedule")?;
                pool.schedules.retain(|s| s != &entry);
            }
            other => return Err(format!("the pool planner must never plan {}", other.verb())),
        }
        Ok(())
    }

    /// rbd-mirror on each site with a daemon and a peer it can receive from: copies primaries of the other
    /// site, and removes its copies whose primary stopped mirroring.
    pub fn replicate(&mut self) {
        for receiver in 0..2 {
            let source = self.sites[1 - receiver].clone();
            let site = &mut self.sites[receiver];
            let receives = site.unreachable.is_none()
                && site.pool.daemon.is_some()
                && site.pool.mode != PoolMirrorMode::Disabled
                && site
                    .pool
                    .peers
                    .iter()
                    .any(|p| p.site_name == source.ceph_name && p.direction != PeerDirection::TxOnly);
            if !receives || source.unreachable.is_some() {
                continue;
            }
            let primary_of = |copy: &RbdImage| {
                source
                    .pool
                    .images
                    .iter()
                    .find(|i| i.name == copy.name && i.mirroring.as_ref().is_some_and(|m| m.primary))
            };
            site.pool.images.retain(|copy| {
                copy.mirroring.as_ref().is_none_or(|m| m.primary) || primary_of(copy).is_some()
            });
            for primary in source
                .pool
                .images
                .iter()
                .filter(|i| i.mirroring.as_ref().is_some_and(|m| m.primary))
            {
                let Some(mirroring) = &primary.mirroring else {
                    continue;
                };
                let exists = site.pool.images.iter().any(|i| i.name == primary.name);
                if !exists {
                    site.pool.images.push(RbdImage {
                        name: primary.name.clone(),
                        ..RbdImage::default()
                    });
                }
                let Some(copy) = site.pool.images.iter_mut().find(|i| i.name == primary.name) else {
                    continue;
                };
                if copy.mirroring.as_ref().is_some_and(|m| m.primary) || (exists && copy.mirroring.is_none())
                {
                    continue; // split brain or a plain image in the way: rbd-mirror leaves it alone
                }
                let synced = primary.last_mirror_snapshot.as_ref().map(|s| s.created);
                copy.mirroring = Some(ImageMirroring {
                    primary: false,
                    ..mirroring.clone()
                });
                copy.replay = Some(ReplayStatus {
                    state: "replaying".into(),
                    up: true,
                    description: "replaying".into(),
                    last_synced: synced,
                });
                copy.last_mirror_snapshot = synced.map(|t| snapshot(t, "non-primary"));
            }
        }
    }

    pub fn advance(&mut self, seconds: u64) {
        self.now = at(self.now.as_second() + i64::try_from(seconds).expect("small"));
    }
}

pub fn peer(uuid: String, site_name: &str, direction: PeerDirection) -> RbdPeer {
    RbdPeer {
        uuid,
        site_name: site_name.to_string(),
        direction,
        mon_host: Some("[v2:127.0.0.1:3300/0]".into()),
        client_name: Some("client.rbd-mirror-peer".into()),
    }
}

pub fn snapshot(created: Timestamp, state: &str) -> MirrorSnapshot {
    MirrorSnapshot {
        id: 1,
        name: ".mirror".into(),
        created,
        state: state.into(),
        complete: true,
        primary_snap_id: None,
    }
}

fn require(ok: bool, error: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(error.to_string())
    }
}

fn find_peer<'a>(pool: &'a mut RbdPoolState, uuid: &str) -> Result<&'a mut RbdPeer, String> {
    pool.peers
        .iter_mut()
        .find(|p| p.uuid == uuid)
        .ok_or_else(|| format!("no peer {uuid}"))
}

fn find_image<'a>(pool: &'a mut RbdPoolState, name: &str) -> Result<&'a mut RbdImage, String> {
    pool.images
        .iter_mut()
        .find(|i| i.name == name)
        .ok_or_else(|| format!("no image {name}"))
}
