//! Pure planner for `RbdMirrorPool`: spec + what both sites report -> steps, conditions, status figures.
//!
//! Convergence runs in stages, each gated on what the sites report rather than on steps planned in the same
//! round, because a peer or an image only exists once Ceph says so:
//! 1. the pool exists on both sites with mirroring enabled in the spec's mode and the site's name;
//! 2. peers: the receiving sites import the other site's bootstrap token (rx-tx), every peer between the two
//!    sites is rx-tx, peers to sites outside the spec go;
//! 3. selected images get mirroring on the site they are primary on, pool-level snapshot schedules match the
//!    spec, and the snapshot watchdog takes a mirror snapshot of images whose schedule stopped producing any.
//!
//! Promotion and demotion are never planned here: moving the primary is the `FailoverRequest`'s job.

mod conditions;
mod deletion;
pub mod delta_sync;
#[cfg(test)]
mod tests;

use std::{collections::BTreeSet, time::Duration};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Condition, jiff::Timestamp};

use super::status::{self, ImageView, Placement, SitePair};
use crate::{
    agent::{self, PeerDirection, RbdPoolState, Sensitive, Step},
    api::rbd_mirror_pool::{
        ImageMirrorMode, PoolMirrorMode, RbdMirrorPoolSpec, RbdMirrorPoolStatus, SiteRole,
    },
    plan::{Plan, SiteStep},
};
pub use conditions::announcements;
use conditions::{Findings, StaleSnapshot};

/// Condition reason for `Synced=False` when a snapshot schedule stopped producing mirror snapshots.
pub const SNAPSHOTS_STALE: &str = "SnapshotsStale";

const REQUEUE_CONVERGING: Duration = Duration::from_secs(5);
const REQUEUE_DEGRADED: Duration = Duration::from_secs(15);
const REQUEUE_CONVERGED: Duration = Duration::from_secs(60);

/// One of the pool's two sites as the reconciler observed it.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedSite {
    /// `CephSite` resource name.
    pub site: String,
    /// The site's name in Ceph peer lists (`CephSite::ceph_site_name`).
    pub ceph_site_name: String,
    /// The pool on that cluster; `Err` carries why it could not be observed (agent unreachable, ...).
    pub pool: Result<RbdPoolState, String>,
    /// A bootstrap token created on this site, kept in the resource's Secret; `None` until created.
    pub bootstrap_token: Option<Sensitive<String>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// In the order of `spec.sites`.
    pub sites: Vec<ObservedSite>,
    /// Whether the object is being deleted (finalizer cleanup plans the undo steps).
    pub deleting: bool,
}

/// The planner's result: the common plan plus the status figures computed from the observation.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolPlan {
    pub plan: Plan,
    pub status: RbdMirrorPoolStatus,
    /// Sites whose bootstrap token the reconciler must create before the next plan can peer them.
    pub tokens_needed: Vec<String>,
    /// While deleting: nothing is left to undo on either site, so the finalizer may go. An empty plan is not
    /// enough: a site that could not be observed plans nothing but may still hold peers and mirroring.
    pub cleanup_complete: bool,
}

impl PoolPlan {
    /// A plan that needs no bootstrap token and finishes no cleanup.
    fn new(
        steps: Vec<SiteStep>,
        conditions: Vec<Condition>,
        requeue: Duration,
        status: RbdMirrorPoolStatus,
    ) -> PoolPlan {
        PoolPlan {
            plan: Plan {
                steps,
                conditions,
                requeue,
            },
            status,
            tokens_needed: Vec::new(),
            cleanup_complete: false,
        }
    }

    /// A finalizer's plan: `steps` undo what is left; `complete` once nothing is.
    fn cleanup(
        steps: Vec<SiteStep>,
        conditions: Vec<Condition>,
        status: RbdMirrorPoolStatus,
        complete: bool,
    ) -> PoolPlan {
        let requeue = requeue(!steps.is_empty(), complete, REQUEUE_CONVERGED);
        PoolPlan {
            cleanup_complete: complete,
            ..PoolPlan::new(steps, conditions, requeue, status)
        }
    }
}

/// When to look again: soon while steps run, after `settled` when all is well, in between when not.
fn requeue(working: bool, well: bool, settled: Duration) -> Duration {
    if working {
        REQUEUE_CONVERGING
    } else if well {
        settled
    } else {
        REQUEUE_DEGRADED
    }
}

pub fn plan(spec: &RbdMirrorPoolSpec, observed: &Observed, now: Timestamp) -> PoolPlan {
    let pair = match resolve(spec, observed) {
        Ok(pair) => pair,
        Err(problem) => return invalid_spec(spec, observed, problem),
    };
    let views = status::image_views(spec, &pair);
    let figures = status::figures(spec, &pair, &views, now);
    if observed.deleting {
        deletion::plan(spec, &pair, figures)
    } else {
        converge(spec, &pair, &views, figures, now)
    }
}

/// Pairs the observed sites with the spec's; the CRD's validation makes a mismatch a reconciler bug or an
/// object that bypassed validation, either way nothing is safe to plan.
fn resolve<'a>(spec: &RbdMirrorPoolSpec, observed: &'a Observed) -> Result<SitePair<'a>, String> {
    let [first, second] = observed.sites.as_slice() else {
        return Err(format!(
            "expected two observed sites, got {}",
            observed.sites.len()
        ));
    };
    let names_match = spec.sites.len() == 2
        && spec
            .sites
            .iter()
            .zip([first, second])
            .all(|(want, seen)| want.site == seen.site);
    if !names_match {
        return Err("the observed sites are not the two sites of spec.sites".to_string());
    }
    let primaries: Vec<usize> = (0..2)
        .filter(|&i| spec.sites[i].role == SiteRole::Primary)
        .collect();
    let [primary] = primaries.as_slice() else {
        return Err("exactly one site must have role: primary".to_string());
    };
    if first.ceph_site_name.is_empty() || first.ceph_site_name == second.ceph_site_name {
        return Err(format!(
            "sites {} and {} need distinct Ceph site names to tell their peers apart",
            first.site, second.site
        ));
    }
    Ok(SitePair {
        sites: [first, second],
        primary: *primary,
    })
}

fn invalid_spec(spec: &RbdMirrorPoolSpec, observed: &Observed, problem: String) -> PoolPlan {
    let conditions = conditions::invalid_spec(&problem);
    PoolPlan {
        // Nothing can be undone without knowing the sites; Retain asks for nothing to be undone.
        cleanup_complete: observed.deleting
            && spec.deletion_policy == crate::api::common::DeletionPolicy::Retain,
        ..PoolPlan::new(
            Vec::new(),
            conditions,
            REQUEUE_CONVERGED,
            RbdMirrorPoolStatus::default(),
        )
    }
}

fn converge(
    spec: &RbdMirrorPoolSpec,
    pair: &SitePair,
    views: &[ImageView],
    status: RbdMirrorPoolStatus,
    now: Timestamp,
) -> PoolPlan {
    let mut findings = Findings::default();
    let mut steps = Vec::new();
    for site in pair.sites {
        match &site.pool {
            Ok(pool) => steps.extend(pool_steps(spec, site, pool)),
            Err(error) => findings.unreachable.push(format!("{}: {error}", site.site)),
        }
    }
    let ready = [0, 1].map(|i| ready_pool(spec, pair, i));
    for (index, pool) in ready.iter().enumerate() {
        if let Some(pool) = pool {
            steps.extend(foreign_peer_removals(spec, pair, index, pool));
        }
    }
    let mut tokens_needed = Vec::new();
    let peered = match ready {
        [Some(first), Some(second)] => {
            let peering = peering(spec, pair, [first, second]);
            steps.extend(peering.steps);
            tokens_needed = peering.tokens_needed;
            findings.waiting.extend(peering.waiting);
            peering.peered.then_some([first, second])
        }
        _ => None,
    };
    let stale = stale_snapshots(spec, views, now);
    if let Some(pools) = peered {
        steps.extend(image_steps(spec, pair, views));
        steps.extend(schedule_steps(spec, pair, views, pools));
        steps.extend(snapshot_repairs(spec, pair, &stale, pools));
    }
    findings.note_images(views);
    findings.note_daemons(&status);
    findings.stale_snapshots = stale.into_iter().map(|(_, snapshot)| snapshot).collect();
    let conditions = conditions::converging(spec, &findings, views, &status, &steps, &tokens_needed);
    let working = !steps.is_empty() || !tokens_needed.is_empty();
    let requeue = requeue(working, conditions::healthy(&conditions), REQUEUE_CONVERGED);
    PoolPlan {
        tokens_needed,
        ..PoolPlan::new(steps, conditions, requeue, status)
    }
}

fn wanted_pool_mode(spec: &RbdMirrorPoolSpec) -> agent::PoolMirrorMode {
    match spec.mode {
        PoolMirrorMode::Image => agent::PoolMirrorMode::Image,
        PoolMirrorMode::Pool => agent::PoolMirrorMode::Pool,
    }
}

fn wanted_image_mode(spec: &RbdMirrorPoolSpec) -> agent::ImageMirrorMode {
    match spec.images.mirror_mode {
        ImageMirrorMode::Snapshot => agent::ImageMirrorMode::Snapshot,
        ImageMirrorMode::Journal => agent::ImageMirrorMode::Journal,
    }
}

/// Stage 1: the pool exists and mirrors in the spec's mode under the site's Ceph name.
fn pool_steps(spec: &RbdMirrorPoolSpec, site: &ObservedSite, pool: &RbdPoolState) -> Vec<SiteStep> {
    let enable = SiteStep::new(
        &site.site,
        Step::EnablePoolMirroring {
            pool: spec.pool.clone(),
            mode: wanted_pool_mode(spec),
            site_name: site.ceph_site_name.clone(),
        },
    );
    if !pool.exists {
        vec![
            SiteStep::new(
                &site.site,
                Step::CreatePool {
                    pool: spec.pool.clone(),
                },
            ),
            enable,
        ]
    } else if pool.mode != wanted_pool_mode(spec) || pool.site_name.as_deref() != Some(&site.ceph_site_name) {
        vec![enable]
    } else {
        Vec::new()
    }
}

/// The pool of site `index` when stage 1 is complete there.
fn ready_pool<'a>(spec: &RbdMirrorPoolSpec, pair: &SitePair<'a>, index: usize) -> Option<&'a RbdPoolState> {
    let site = pair.sites[index];
    pair.pool(index).filter(|pool| {
        pool.exists
            && pool.mode == wanted_pool_mode(spec)
            && pool.site_name.as_deref() == Some(site.ceph_site_name.as_str())
    })
}

fn has_peer(pool: &RbdPoolState, ceph_site_name: &str) -> bool {
    pool.peers.iter().any(|peer| peer.site_name == ceph_site_name)
}

/// Peers to clusters that are not the pool's other site: left over from an earlier setup, they would
/// make rbd-mirror pull from or push to a cluster nobody manages.
fn foreign_peer_removals(
    spec: &RbdMirrorPoolSpec,
    pair: &SitePair,
    index: usize,
    pool: &RbdPoolState,
) -> Vec<SiteStep> {
    let other = &pair.sites[1 - index].ceph_site_name;
    pool.peers
        .iter()
        .filter(|peer| &peer.site_name != other)
        .map(|peer| {
            SiteStep::new(
                &pair.sites[index].site,
                Step::RemovePeer {
                    pool: spec.pool.clone(),
                    uuid: peer.uuid.clone(),
                },
            )
        })
        .collect()
}

#[derive(Default)]
struct Peering {
    steps: Vec<SiteStep>,
    tokens_needed: Vec<String>,
    waiting: Vec<String>,
    /// Every receiving site has its peer, and every peer between the two sites is rx-tx.
    peered: bool,
}

/// Stage 2. Every peer is rx-tx: snapshot mirroring needs a tx peer on the primary (`rbd mirror image
/// snapshot` fails without one), and rx on both sides lets a failover reverse the direction without
/// reconfiguring peers.
fn peering(spec: &RbdMirrorPoolSpec, pair: &SitePair, pools: [&RbdPoolState; 2]) -> Peering {
    let mut peering = Peering {
        peered: true,
        ..Peering::default()
    };
    for (index, pool) in pools.iter().enumerate() {
        let other = &pair.sites[1 - index].ceph_site_name;
        for peer in pool
            .peers
            .iter()
            .filter(|p| &p.site_name == other && p.direction != PeerDirection::RxTx)
        {
            peering.peered = false;
            peering.steps.push(SiteStep::new(
                &pair.sites[index].site,
                Step::SetPeerDirection {
                    pool: spec.pool.clone(),
                    uuid: peer.uuid.clone(),
                    direction: PeerDirection::RxTx,
                },
            ));
        }
    }
    let secondary_peered = has_peer(pools[pair.secondary()], &pair.sites[pair.primary].ceph_site_name);
    for receiver in pair.receivers(spec.direction) {
        let (site, source) = (pair.sites[receiver], pair.sites[1 - receiver]);
        if has_peer(pools[receiver], &source.ceph_site_name) {
            continue;
        }
        peering.peered = false;
        // The secondary's rx-tx import registers a peer on the primary too; importing on the primary in the
        // same round would race it, so the primary imports only when that peer still lacks afterwards.
        if receiver == pair.primary && !secondary_peered {
            continue;
        }
        match &source.bootstrap_token {
            Some(token) => peering.steps.push(SiteStep::new(
                &site.site,
                Step::ImportPeer {
                    pool: spec.pool.clone(),
                    token: token.clone(),
                    direction: PeerDirection::RxTx,
                    site_name: site.ceph_site_name.clone(),
                },
            )),
            None => {
                peering.tokens_needed.push(source.site.clone());
                peering
                    .waiting
                    .push(format!("waiting for a bootstrap token from site {}", source.site));
            }
        }
    }
    let (primary, secondary) = (pair.sites[pair.primary], pair.sites[pair.secondary()]);
    if secondary_peered && !has_peer(pools[pair.primary], &secondary.ceph_site_name) {
        peering.waiting.push(format!(
            "site {} has no peer for site {} yet: snapshot mirroring needs one to send",
            primary.site, secondary.site
        ));
    }
    peering
}

/// Stage 3a: mirroring on plain images, on the one site that has them. In pool mode Ceph mirrors every
/// journaled image by itself.
fn image_steps(spec: &RbdMirrorPoolSpec, pair: &SitePair, views: &[ImageView]) -> Vec<SiteStep> {
    if spec.mode == PoolMirrorMode::Pool {
        return Vec::new();
    }
    views
        .iter()
        .filter_map(|view| match view.placement {
            Placement::Unmirrored(index) => Some(SiteStep::new(
                &pair.sites[index].site,
                Step::EnableImageMirroring {
                    pool: spec.pool.clone(),
                    image: view.name.clone(),
                    mode: wanted_image_mode(spec),
                },
            )),
            _ => None,
        })
        .collect()
}

/// Sites that need the pool-level schedules: those where selected images are primary (the mgr takes
/// mirror snapshots of primary images only), or the spec's primary before any image is.
fn schedule_sites(pair: &SitePair, views: &[ImageView]) -> BTreeSet<usize> {
    let sites: BTreeSet<usize> = views
        .iter()
        .filter_map(|view| match view.placement {
            Placement::Primary(index) => Some(index),
            _ => None,
        })
        .collect();
    if sites.is_empty() {
        BTreeSet::from([pair.primary])
    } else {
        sites
    }
}

/// Stage 3b: pool-level mirror-snapshot schedules equal to the spec's. Image-level schedules are left alone.
fn schedule_steps(
    spec: &RbdMirrorPoolSpec,
    pair: &SitePair,
    views: &[ImageView],
    pools: [&RbdPoolState; 2],
) -> Vec<SiteStep> {
    let wanted: BTreeSet<(&str, Option<&str>)> = spec
        .snapshot_schedules
        .iter()
        .map(|s| (s.interval.as_str(), s.start_time.as_deref()))
        .collect();
    let mut steps = Vec::new();
    for index in schedule_sites(pair, views) {
        let site = &pair.sites[index].site;
        let present: BTreeSet<(&str, Option<&str>)> = pools[index]
            .schedules
            .iter()
            .filter(|s| s.image.is_none())
            .map(|s| (s.interval.as_str(), s.start_time.as_deref()))
            .collect();
        for &(interval, start_time) in wanted.difference(&present) {
            steps.push(SiteStep::new(
                site,
                Step::AddSnapshotSchedule {
                    pool: spec.pool.clone(),
                    image: None,
                    interval: interval.to_string(),
                    start_time: start_time.map(str::to_string),
                },
            ));
        }
        for &(interval, start_time) in present.difference(&wanted) {
            steps.push(SiteStep::new(
                site,
                Step::RemoveSnapshotSchedule {
                    pool: spec.pool.clone(),
                    image: None,
                    interval: interval.to_string(),
                    start_time: start_time.map(str::to_string),
                },
            ));
        }
    }
    steps
}

/// The snapshot watchdog: with schedules set, a snapshot-mode image whose newest primary mirror snapshot is
/// older than twice the shortest interval is not being protected (the mgr's scheduler stalled, or a resync
/// is waiting for a new snapshot). Returns the image's primary site with what to report.
fn stale_snapshots(
    spec: &RbdMirrorPoolSpec,
    views: &[ImageView],
    now: Timestamp,
) -> Vec<(usize, StaleSnapshot)> {
    let Some(shortest) = spec
        .snapshot_schedules
        .iter()
        .filter_map(|s| s.interval_seconds())
        .min()
    else {
        return Vec::new();
    };
    let limit = shortest.saturating_mul(2);
    views
        .iter()
        .filter_map(|view| {
            let Placement::Primary(index) = view.placement else {
                return None;
            };
            if view.primary_mode() != Some(agent::ImageMirrorMode::Snapshot) {
                return None;
            }
            let newest = view.copies[index]?.last_mirror_snapshot.as_ref();
            let age = newest.map(|snapshot| status::seconds_since(snapshot.created, now));
            let stale = age.is_none_or(|age| age > limit);
            stale.then(|| {
                (
                    index,
                    StaleSnapshot {
                        image: view.name.clone(),
                        age_seconds: age,
                        limit_seconds: limit,
                    },
                )
            })
        })
        .collect()
}

/// A mirror snapshot for each stale image, where its primary site has the tx peer Ceph requires.
fn snapshot_repairs(
    spec: &RbdMirrorPoolSpec,
    pair: &SitePair,
    stale: &[(usize, StaleSnapshot)],
    pools: [&RbdPoolState; 2],
) -> Vec<SiteStep> {
    stale
        .iter()
        .filter(|(index, _)| {
            let other = &pair.sites[1 - index].ceph_site_name;
            pools[*index].peers.iter().any(|p| {
                &p.site_name == other && matches!(p.direction, PeerDirection::TxOnly | PeerDirection::RxTx)
            })
        })
        .map(|(index, snapshot)| {
            SiteStep::new(
                &pair.sites[*index].site,
                Step::CreateMirrorSnapshot {
                    pool: spec.pool.clone(),
                    image: snapshot.image.clone(),
                },
            )
        })
        .collect()
}
