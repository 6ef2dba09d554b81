//! Planner tests: table tests per convergence stage and precondition, and property tests against a small
//! pure model of two Ceph clusters (`model.rs`).

mod announce;
mod delta_sync;
mod model;
mod props;
mod table;

use self::model::{peer, snapshot, token_of, World};
pub use crate::plan::testing::{find, has, rendered};
use crate::{
    agent::{
        DaemonHealth, ImageMirrorMode, ImageMirroring, PeerDirection, RbdImage, ReplayStatus, ScheduleEntry,
        Step,
    },
    api::{
        common::DeletionPolicy,
        rbd_mirror_pool::{
            self, ImageSelector, MirrorDirection, PoolMirrorMode, PoolSite, RbdMirrorPoolSpec,
            ReplicationEngine, SiteRole, SnapshotSchedule,
        },
    },
};

/// Builds a spec: pool `rbd`, `site-a` primary and `site-b` secondary, one-way, image mode, snapshot mirroring.
pub struct SpecBuilder(RbdMirrorPoolSpec);

pub fn spec() -> SpecBuilder {
    SpecBuilder(RbdMirrorPoolSpec {
        pool: "rbd".into(),
        mode: PoolMirrorMode::Image,
        sites: vec![
            PoolSite {
                site: "site-a".into(),
                role: SiteRole::Primary,
            },
            PoolSite {
                site: "site-b".into(),
                role: SiteRole::Secondary,
            },
        ],
        direction: MirrorDirection::OneWay,
        images: ImageSelector {
            mirror_mode: rbd_mirror_pool::ImageMirrorMode::Snapshot,
            all: false,
            names: Vec::new(),
        },
        snapshot_schedules: Vec::new(),
        rpo_seconds: None,
        engine: ReplicationEngine::RbdMirror,
        delta_sync: None,
        deletion_policy: DeletionPolicy::Delete,
    })
}

impl SpecBuilder {
    pub fn two_way(mut self) -> Self {
        self.0.direction = MirrorDirection::TwoWay;
        self
    }

    pub fn images(mut self, names: &[&str]) -> Self {
        self.0.images.all = false;
        self.0.images.names = names.iter().map(|n| n.to_string()).collect();
        self
    }

    pub fn all_images(mut self) -> Self {
        self.0.images.all = true;
        self.0.images.names.clear();
        self
    }

    pub fn journal(mut self) -> Self {
        self.0.images.mirror_mode = rbd_mirror_pool::ImageMirrorMode::Journal;
        self
    }

    /// `mode: pool`, which mirrors journaled images only.
    pub fn pool_mode(self) -> Self {
        let mut built = self.journal();
        built.0.mode = PoolMirrorMode::Pool;
        built
    }

    pub fn schedule(mut self, interval: &str) -> Self {
        self.0.snapshot_schedules.push(SnapshotSchedule {
            interval: interval.into(),
            start_time: None,
        });
        self
    }

    pub fn rpo(mut self, seconds: u32) -> Self {
        self.0.rpo_seconds = Some(seconds);
        self
    }

    pub fn retain(mut self) -> Self {
        self.0.deletion_policy = DeletionPolicy::Retain;
        self
    }

    /// `site-b` primary, `site-a` secondary: the role does not follow the list order.
    pub fn primary_b(mut self) -> Self {
        self.0.sites[0].role = SiteRole::Secondary;
        self.0.sites[1].role = SiteRole::Primary;
        self
    }

    /// `engine: delta-sync`.
    pub fn delta_sync(mut self) -> Self {
        self.0.engine = ReplicationEngine::DeltaSync;
        self
    }

    pub fn max_transfers(mut self, n: u32) -> Self {
        self.0
            .delta_sync
            .get_or_insert_with(Default::default)
            .max_concurrent_transfers = Some(n);
        self
    }

    pub fn build(self) -> RbdMirrorPoolSpec {
        self.0
    }
}

/// A world converged for `spec`, built by hand (not by the planner): pools mirroring with rx-tx peers both
/// ways, daemons on the receiving sites, `images` primary on the spec's primary with fresh copies, and the
/// spec's schedules on the primary.
pub fn converged(spec: &RbdMirrorPoolSpec, images: &[&str]) -> World {
    let mut world = World::empty();
    let primary = spec
        .sites
        .iter()
        .position(|s| s.role == SiteRole::Primary)
        .unwrap_or(0);
    let now = world.now;
    let mode = match spec.images.mirror_mode {
        rbd_mirror_pool::ImageMirrorMode::Snapshot => ImageMirrorMode::Snapshot,
        rbd_mirror_pool::ImageMirrorMode::Journal => ImageMirrorMode::Journal,
    };
    for index in 0..2 {
        let other_ceph_name = world.sites[1 - index].ceph_name.clone();
        let site = &mut world.sites[index];
        site.token = Some(token_of(&site.ceph_name));
        let pool = &mut site.pool;
        pool.exists = true;
        pool.mode = match spec.mode {
            PoolMirrorMode::Image => crate::agent::PoolMirrorMode::Image,
            PoolMirrorMode::Pool => crate::agent::PoolMirrorMode::Pool,
        };
        pool.site_name = Some(site.ceph_name.clone());
        pool.peers = vec![peer(
            format!("peer-{index}"),
            &other_ceph_name,
            PeerDirection::RxTx,
        )];
        let receives = index != primary || spec.direction == MirrorDirection::TwoWay;
        pool.daemon = receives.then(|| DaemonHealth { health: "OK".into() });
        let is_primary = index == primary;
        pool.images = images
            .iter()
            .map(|name| RbdImage {
                name: name.to_string(),
                mirroring: Some(ImageMirroring {
                    mode,
                    primary: is_primary,
                    global_id: format!("gid-{name}"),
                }),
                replay: (!is_primary).then(|| ReplayStatus {
                    state: "replaying".into(),
                    up: true,
                    description: "replaying, idle".into(),
                    last_synced: (mode == ImageMirrorMode::Snapshot).then_some(now),
                }),
                last_mirror_snapshot: (mode == ImageMirrorMode::Snapshot)
                    .then(|| snapshot(now, if is_primary { "primary" } else { "non-primary" })),
            })
            .collect();
        if is_primary {
            pool.schedules = spec
                .snapshot_schedules
                .iter()
                .map(|s| ScheduleEntry {
                    image: None,
                    interval: s.interval.clone(),
                    start_time: s.start_time.clone(),
                })
                .collect();
        }
    }
    world
}

/// The image a step acts on, if any.
pub fn image_of(step: &Step) -> Option<&str> {
    match step {
        Step::EnableImageMirroring { image, .. }
        | Step::DisableImageMirroring { image, .. }
        | Step::CreateMirrorSnapshot { image, .. }
        | Step::PromoteImage { image, .. }
        | Step::DemoteImage { image, .. }
        | Step::ResyncImage { image, .. } => Some(image),
        Step::AddSnapshotSchedule { image, .. } | Step::RemoveSnapshotSchedule { image, .. } => {
            image.as_deref()
        }
        _ => None,
    }
}
