//! Status figures of an `RbdMirrorPool`, pure: where each selected image is primary, the state and lag of
//! its copy, the peers and rbd-mirror daemons of both sites, and a summary.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use crate::{
    agent::{ImageMirrorMode, PeerDirection, RbdImage, RbdPoolState},
    api::rbd_mirror_pool::{
        DaemonStatus, ImageStatus, MirrorDirection, PeerStatus, PoolSummary, RbdMirrorPoolSpec,
        RbdMirrorPoolStatus,
    },
};

use super::plan::ObservedSite;

pub const HEALTH_OK: &str = "OK";
pub const HEALTH_WARNING: &str = "WARNING";
pub const HEALTH_ERROR: &str = "ERROR";
pub const DAEMON_NOT_RUNNING: &str = "NotRunning";

/// The state rbd-mirror reports for a copy that follows its primary.
pub const STATE_REPLAYING: &str = "replaying";
pub const STATE_SPLIT_BRAIN: &str = "split-brain";
pub const STATE_CONFLICT: &str = "conflict";
pub const STATE_DISABLED: &str = "disabled";
pub const STATE_MISSING: &str = "missing";
pub const STATE_UNKNOWN: &str = "unknown";
pub const STATE_ERROR: &str = "error";
/// Delta-sync: the copy holds a synced snapshot (a newer delta may be on its way).
pub const STATE_SYNCED: &str = "synced";

/// The pool's two sites in `spec.sites` order, and which of them the spec names primary.
#[derive(Clone, Copy, Debug)]
pub struct SitePair<'a> {
    pub sites: [&'a ObservedSite; 2],
    /// Index into `sites` of the site with `role: primary`.
    pub primary: usize,
}

impl<'a> SitePair<'a> {
    pub fn secondary(&self) -> usize {
        1 - self.primary
    }

    /// The pool as site `index` reports it, when it could be observed.
    pub fn pool(&self, index: usize) -> Option<&'a RbdPoolState> {
        self.sites[index].pool.as_ref().ok()
    }

    /// Sites that run rbd-mirror and pull images: the secondary, and both for two-way mirroring.
    pub fn receivers(&self, direction: MirrorDirection) -> Vec<usize> {
        match direction {
            MirrorDirection::OneWay => vec![self.secondary()],
            MirrorDirection::TwoWay => vec![self.secondary(), self.primary],
        }
    }
}

/// Where an image lives, decided from what both sites report (`mirroring.primary` flags), never from the
/// spec's roles: after a failover images are primary on the other site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// No site has an image by this name.
    Missing,
    /// A plain image on this site only: mirroring can be enabled here.
    Unmirrored(usize),
    /// Plain images by this name on both sites: nothing tells which one is the source.
    Conflict,
    /// Primary on this site only.
    Primary(usize),
    /// Primary on both sites.
    SplitBrain,
    /// Mirrored but primary on neither site (between a demote and a promote, or orphaned).
    NoPrimary,
    /// A site could not be observed and the other one does not show the image primary.
    Unknown,
}

/// One selected image and what each site holds of it.
#[derive(Clone, Debug)]
pub struct ImageView<'a> {
    pub name: String,
    /// The image on each site, in `SitePair::sites` order.
    pub copies: [Option<&'a RbdImage>; 2],
    pub placement: Placement,
}

impl ImageView<'_> {
    /// The mirror mode the image has where it is primary.
    pub fn primary_mode(&self) -> Option<ImageMirrorMode> {
        match self.placement {
            Placement::Primary(site) => self.copies[site]?.mirroring.as_ref().map(|m| m.mode),
            _ => None,
        }
    }
}

/// The images the spec selects: `names`, or with `all` every mirrored image on either site plus the plain
/// images of the site the pool currently mirrors from.
pub fn selected_images(spec: &RbdMirrorPoolSpec, pair: &SitePair) -> Vec<String> {
    if !spec.images.all {
        let mut seen = BTreeSet::new();
        return spec
            .images
            .names
            .iter()
            .filter(|name| seen.insert(name.as_str()))
            .cloned()
            .collect();
    }
    let source = source_site(pair);
    let mut names = BTreeSet::new();
    for index in 0..2 {
        for image in pair.pool(index).map(|p| p.images.as_slice()).unwrap_or_default() {
            if image.mirroring.is_some() || index == source {
                names.insert(image.name.clone());
            }
        }
    }
    names.into_iter().collect()
}

/// The site images are primary on when exactly one site holds primaries; else the spec's primary.
fn source_site(pair: &SitePair) -> usize {
    let has_primaries = |index: usize| {
        pair.pool(index).is_some_and(|p| {
            p.images
                .iter()
                .any(|i| i.mirroring.as_ref().is_some_and(|m| m.primary))
        })
    };
    match (has_primaries(0), has_primaries(1)) {
        (true, false) => 0,
        (false, true) => 1,
        _ => pair.primary,
    }
}

pub fn image_views<'a>(spec: &RbdMirrorPoolSpec, pair: &SitePair<'a>) -> Vec<ImageView<'a>> {
    selected_images(spec, pair)
        .into_iter()
        .map(|name| view(name, pair))
        .collect()
}

fn view<'a>(name: String, pair: &SitePair<'a>) -> ImageView<'a> {
    let copies = [0, 1].map(|i| {
        pair.pool(i)
            .and_then(|p| p.images.iter().find(|img| img.name == name))
    });
    let is_primary = copies.map(|c| {
        c.and_then(|img| img.mirroring.as_ref())
            .is_some_and(|m| m.primary)
    });
    let both_observed = pair.pool(0).is_some() && pair.pool(1).is_some();
    let placement = match (is_primary, copies) {
        ([true, true], _) => Placement::SplitBrain,
        ([true, false], _) => Placement::Primary(0),
        ([false, true], _) => Placement::Primary(1),
        _ if !both_observed => Placement::Unknown,
        (_, [None, None]) => Placement::Missing,
        _ if copies.iter().flatten().any(|img| img.mirroring.is_some()) => Placement::NoPrimary,
        (_, [Some(_), None]) => Placement::Unmirrored(0),
        (_, [None, Some(_)]) => Placement::Unmirrored(1),
        (_, [Some(_), Some(_)]) => Placement::Conflict,
    };
    ImageView {
        name,
        copies,
        placement,
    }
}

/// Seconds from `then` to `now`, zero when `then` lies in the future (clock skew between sites).
pub fn seconds_since(then: Timestamp, now: Timestamp) -> u64 {
    u64::try_from(now.as_second().saturating_sub(then.as_second())).unwrap_or(0)
}

/// The figures of `RbdMirrorPoolStatus`; conditions are the planner's.
pub fn figures(
    spec: &RbdMirrorPoolSpec,
    pair: &SitePair,
    views: &[ImageView],
    now: Timestamp,
) -> RbdMirrorPoolStatus {
    let images: Vec<ImageStatus> = views.iter().map(|v| image_status(v, pair, now)).collect();
    let daemons = daemons(spec, pair);
    RbdMirrorPoolStatus {
        observed_generation: None,
        primary_site: primary_site(pair, views),
        peers: peers(pair),
        summary: Some(summary(spec, &images, &daemons)),
        daemons,
        images,
        conditions: Vec::new(),
    }
}

/// The site where every mirrored selected image is primary; the spec's primary before any image mirrors.
fn primary_site(pair: &SitePair, views: &[ImageView]) -> Option<String> {
    let mut sites = BTreeSet::new();
    for view in views {
        match view.placement {
            Placement::Primary(index) => {
                sites.insert(index);
            }
            Placement::SplitBrain | Placement::NoPrimary | Placement::Unknown => return None,
            Placement::Missing | Placement::Unmirrored(_) | Placement::Conflict => {}
        }
    }
    let mut primaries = sites.into_iter();
    match (primaries.next(), primaries.next()) {
        (None, _) => Some(pair.sites[pair.primary].site.clone()),
        (Some(index), None) => Some(pair.sites[index].site.clone()),
        (Some(_), Some(_)) => None,
    }
}

fn image_status(view: &ImageView, pair: &SitePair, now: Timestamp) -> ImageStatus {
    let site_name = |index: usize| pair.sites[index].site.as_str();
    let plain = |state: &str, description: String| ImageStatus {
        name: view.name.clone(),
        state: state.to_string(),
        description: Some(description),
        ..ImageStatus::default()
    };
    match view.placement {
        Placement::Primary(primary) => copy_status(view, pair, primary, now),
        Placement::SplitBrain => plain(
            STATE_SPLIT_BRAIN,
            format!("primary on both {} and {}", site_name(0), site_name(1)),
        ),
        Placement::Conflict => plain(
            STATE_CONFLICT,
            format!(
                "unmirrored images by this name on both {} and {}",
                site_name(0),
                site_name(1)
            ),
        ),
        Placement::Unmirrored(index) => plain(
            STATE_DISABLED,
            format!("mirroring not enabled on {}", site_name(index)),
        ),
        Placement::Missing => plain(STATE_MISSING, "no image by this name on either site".to_string()),
        Placement::NoPrimary => {
            let replay = view.copies.iter().flatten().find_map(|img| img.replay.as_ref());
            ImageStatus {
                name: view.name.clone(),
                state: replay.map_or(STATE_UNKNOWN, |r| r.state.as_str()).to_string(),
                description: Some("primary on neither site".to_string()),
                ..ImageStatus::default()
            }
        }
        Placement::Unknown => plain(STATE_UNKNOWN, unreachable_description(pair)),
    }
}

fn unreachable_description(pair: &SitePair) -> String {
    let unreachable: Vec<&str> = (0..2)
        .filter(|&i| pair.pool(i).is_none())
        .map(|i| pair.sites[i].site.as_str())
        .collect();
    format!("site {} not observed", unreachable.join(", "))
}

/// An image primary on one site, reported from its copy: rbd-mirror's state on the receiving side, and how
/// long ago the copy last caught up.
fn copy_status(view: &ImageView, pair: &SitePair, primary: usize, now: Timestamp) -> ImageStatus {
    let receiver = 1 - primary;
    let receiver_site = &pair.sites[receiver].site;
    let copy = view.copies[receiver];
    let replay = copy.and_then(|img| img.replay.as_ref());
    let (state, description) = match (pair.pool(receiver), copy, replay) {
        (None, _, _) => (
            STATE_UNKNOWN.to_string(),
            Some(format!("site {receiver_site} not observed")),
        ),
        (Some(_), None, _) => (
            STATE_UNKNOWN.to_string(),
            Some(format!("no copy on {receiver_site} yet")),
        ),
        (Some(_), Some(_), None) => (
            STATE_UNKNOWN.to_string(),
            Some("no rbd-mirror reports the copy".into()),
        ),
        (Some(_), Some(_), Some(r)) => (
            r.state.clone(),
            Some(r.description.clone()).filter(|d| !d.is_empty()),
        ),
    };
    let last_sync = copy.and_then(RbdImage::synced_point);
    // Journal mode streams writes: its lag is in journal entries, not in time since a snapshot.
    let lag = (view.primary_mode() == Some(ImageMirrorMode::Snapshot))
        .then(|| last_sync.map(|t| seconds_since(t, now)))
        .flatten();
    ImageStatus {
        name: view.name.clone(),
        primary_site: Some(pair.sites[primary].site.clone()),
        state,
        description,
        last_sync_time: last_sync.map(Time),
        lag_seconds: lag,
        synced_snapshot: None,
        last_transfer: None,
    }
}

fn peers(pair: &SitePair) -> Vec<PeerStatus> {
    (0..2)
        .filter_map(|i| pair.pool(i).map(|pool| (pair.sites[i], pool)))
        .flat_map(|(site, pool)| {
            pool.peers.iter().map(|peer| PeerStatus {
                site: site.site.clone(),
                peer_site: peer.site_name.clone(),
                uuid: peer.uuid.clone(),
                direction: direction_name(peer.direction).to_string(),
            })
        })
        .collect()
}

pub fn direction_name(direction: PeerDirection) -> &'static str {
    match direction {
        PeerDirection::RxOnly => "rx-only",
        PeerDirection::TxOnly => "tx-only",
        PeerDirection::RxTx => "rx-tx",
    }
}

/// rbd-mirror on each receiving site that could be observed.
fn daemons(spec: &RbdMirrorPoolSpec, pair: &SitePair) -> Vec<DaemonStatus> {
    pair.receivers(spec.direction)
        .into_iter()
        .filter_map(|i| {
            pair.pool(i).map(|pool| DaemonStatus {
                site: pair.sites[i].site.clone(),
                health: pool
                    .daemon
                    .as_ref()
                    .map_or(DAEMON_NOT_RUNNING, |d| d.health.as_str())
                    .to_string(),
            })
        })
        .collect()
}

/// Whether an image's copy follows (rbd-mirror replays it, or delta-sync synced it) and, when a
/// recovery-point target is set, is close enough to it.
pub fn is_caught_up(image: &ImageStatus, rpo_seconds: Option<u32>) -> bool {
    [STATE_REPLAYING, STATE_SYNCED].contains(&image.state.as_str()) && !lag_above(image, rpo_seconds)
}

pub fn lag_above(image: &ImageStatus, rpo_seconds: Option<u32>) -> bool {
    matches!((image.lag_seconds, rpo_seconds), (Some(lag), Some(rpo)) if lag > u64::from(rpo))
}

pub fn summary(spec: &RbdMirrorPoolSpec, images: &[ImageStatus], daemons: &[DaemonStatus]) -> PoolSummary {
    let mut states = BTreeMap::new();
    for image in images {
        *states.entry(image.state.clone()).or_insert(0u32) += 1;
    }
    let broken_image = images
        .iter()
        .any(|i| [STATE_ERROR, STATE_SPLIT_BRAIN, STATE_CONFLICT].contains(&i.state.as_str()));
    let broken_daemon = daemons
        .iter()
        .any(|d| d.health == DAEMON_NOT_RUNNING || d.health == HEALTH_ERROR);
    let degraded = images.iter().any(|i| !is_caught_up(i, spec.rpo_seconds))
        || daemons.iter().any(|d| d.health != HEALTH_OK);
    let health = if broken_image || broken_daemon {
        HEALTH_ERROR
    } else if degraded {
        HEALTH_WARNING
    } else {
        HEALTH_OK
    };
    PoolSummary {
        health: health.to_string(),
        images: u32::try_from(images.len()).unwrap_or(u32::MAX),
        max_lag_seconds: images.iter().filter_map(|i| i.lag_seconds).max(),
        states,
    }
}
