//! RBD images in a failover: which images a request covers, the chain of tasks each goes through, and what
//! the two sites must show before a task counts as done.
//!
//! Chains (T = target site, S = the pool's other site):
//! - planned: the handover S → T: demote on S, wait until T received the demotion, promote on T;
//! - failback (T is the original site, S took over in an emergency): the recovery of T's stale copy from S
//!   (demote it if still primary, resync, a mirror snapshot on S, wait until T is in sync), then the same
//!   handover S → T;
//! - resync: the recovery of S's stale copy from T;
//! - emergency: force-promote on T; drill: check T's copy against S's snapshot by checksum (`drill`).
//!
//! What the sites must show for each task is read by `evidence`.

mod drill;
mod evidence;

use k8s_openapi::jiff::Timestamp;

use self::evidence::{
    demotion_received, fresh_snapshot_since, in_sync, is_primary, journal_caught_up, last_synced,
    newest_copy, receiving, replaying, resync_took_hold, seen_primary, Seen, STATUS_REFRESH,
};
use super::{
    delta,
    gate::emergency_hint,
    ledger::{Chain, Entry, Target, Task},
    plan::{seconds_between, Ctx, Eval, Failure, ObservedPool},
};
use crate::{
    agent::{ImageMirrorMode, Step},
    api::{
        conditions::reason,
        failover_request::FailoverAction,
        rbd_mirror_pool::{self, ReplicationEngine},
    },
    plan::SiteStep,
};

/// One image row to evaluate: its task, the image (Ceph pool name), the site it acts on and when it was
/// first handed out or waited on.
pub(super) struct ImageTask<'a> {
    pub task: Task,
    pub pool: &'a str,
    pub image: &'a str,
    pub site: &'a str,
    pub since: Option<Timestamp>,
}

/// The preflight's result for the pools.
pub(super) struct ImagesPlan {
    pub chains: Vec<Chain>,
    /// Emergency: seconds since the oldest `last_synced` of the images to force-promote.
    pub data_loss_window_seconds: Option<u64>,
}

fn seen<'a>(pool: &'a ObservedPool, site: &str, image: &str) -> Seen<'a> {
    match pool.sites.iter().find(|s| s.site == site).map(|s| &s.pool) {
        Some(Ok(state)) => state
            .images
            .iter()
            .find(|i| i.name == image)
            .map_or(Seen::Missing, Seen::Image),
        _ => Seen::Unobserved,
    }
}

/// The target pool with Ceph pool name `pool` that has a copy on `site`.
fn find_pool<'a>(ctx: &'a Ctx, pool: &str, site: &str) -> Option<&'a ObservedPool> {
    ctx.observed.pools.iter().find(|p| {
        p.spec.pool == pool
            && ctx.spec.targets.rbd_mirror_pools.contains(&p.name)
            && p.spec.sites.iter().any(|s| s.site == site)
    })
}

fn mode_of(pool: &ObservedPool, sides: [Seen; 2]) -> ImageMirrorMode {
    let observed = sides.iter().find_map(|side| match side {
        Seen::Image(image) => image.mirroring.as_ref().map(|m| m.mode),
        _ => None,
    });
    observed.unwrap_or(match pool.spec.images.mirror_mode {
        rbd_mirror_pool::ImageMirrorMode::Snapshot => ImageMirrorMode::Snapshot,
        rbd_mirror_pool::ImageMirrorMode::Journal => ImageMirrorMode::Journal,
    })
}

fn handover(pool: &str, image: &str, source: &str, target: &str) -> Vec<Entry> {
    vec![
        entry(Task::Demote, pool, image, source),
        entry(Task::AwaitSync, pool, image, target),
        entry(Task::Promote, pool, image, target),
    ]
}

fn recovery(pool: &str, image: &str, stale: &str, primary: &str, mode: ImageMirrorMode) -> Vec<Entry> {
    let mut chain = vec![
        entry(Task::Demote, pool, image, stale),
        entry(Task::Resync, pool, image, stale),
    ];
    // Journal images cannot take mirror snapshots; their resync needs none.
    if mode == ImageMirrorMode::Snapshot {
        chain.push(entry(Task::MirrorSnapshot, pool, image, primary));
    }
    chain.push(entry(Task::AwaitResync, pool, image, stale));
    chain
}

pub(super) fn entry(task: Task, pool: &str, image: &str, site: &str) -> Entry {
    Entry {
        task,
        target: Target::Image {
            pool: pool.into(),
            image: image.into(),
            site: site.into(),
        },
    }
}

/// Preflight of every target pool: sites answer, rbd-mirror runs where copies are received, images are
/// mirrored and (planned) recent enough; then each image's chain.
pub(super) fn plan(ctx: &Ctx) -> Result<ImagesPlan, Failure> {
    let target = ctx.target();
    let mut chains = Vec::new();
    let mut oldest_synced = None;
    for name in &ctx.spec.targets.rbd_mirror_pools {
        let pool = ctx
            .observed
            .pools
            .iter()
            .find(|p| &p.name == name)
            .ok_or_else(|| Failure::preflight(format!("RbdMirrorPool {name} was not found")))?;
        if pool.spec.engine == ReplicationEngine::DeltaSync {
            let (delta_chains, oldest_point) = delta::chains(ctx, pool)?;
            chains.extend(delta_chains);
            oldest_synced = earliest(oldest_synced, oldest_point);
            continue;
        }
        let peer = match pool.spec.other_site(target) {
            Some(peer) if pool.spec.sites.iter().any(|s| s.site == target) => peer,
            _ => {
                return Err(Failure::preflight(format!(
                    "site {target} is not a site of RbdMirrorPool {name}"
                )))
            }
        };
        let sites: Vec<&str> = [target, peer]
            .into_iter()
            .filter(|s| ctx.is_relevant(s))
            .collect();
        check_sites(ctx, pool, &sites)?;
        let ceph_pool = pool.spec.pool.as_str();
        for image in selected_images(pool, &sites) {
            let (t, s) = (seen(pool, target, &image), seen(pool, peer, &image));
            for (site, side) in sites
                .iter()
                .zip(sites.iter().map(|site| seen(pool, site, &image)))
            {
                if !matches!(side, Seen::Image(i) if i.mirroring.is_some()) {
                    return Err(Failure::preflight(format!(
                        "image {ceph_pool}/{image} is not mirrored on site {site}"
                    )));
                }
            }
            let mode = mode_of(pool, [t, s]);
            let label = format!("{ceph_pool}/{image}");
            let (entries, skip) = match ctx.action() {
                FailoverAction::Planned => {
                    check_planned(ctx, &label, t, s, mode)?;
                    (
                        handover(ceph_pool, &image, peer, target),
                        handed_over(t, s, target),
                    )
                }
                FailoverAction::Failback => {
                    let mut chain = recovery(ceph_pool, &image, target, peer, mode);
                    chain.extend(handover(ceph_pool, &image, peer, target));
                    (chain, handed_over(t, s, target))
                }
                FailoverAction::Resync => {
                    if !seen_primary(t) {
                        return Err(Failure::preflight(format!(
                            "image {label} is not primary on site {target}: a resync copies from targetSite to the other site"
                        )));
                    }
                    let skip = (in_sync(s, t, mode)).then(|| format!("in sync with site {target} already"));
                    (recovery(ceph_pool, &image, peer, target, mode), skip)
                }
                FailoverAction::Emergency => {
                    // The worst case over the images about to be force-promoted.
                    if let Seen::Image(copy) = t {
                        let synced = copy.synced_point().filter(|_| !is_primary(copy));
                        oldest_synced = earliest(oldest_synced, synced);
                    }
                    let skip = seen_primary(t).then(|| format!("already primary on site {target}"));
                    (vec![entry(Task::ForcePromote, ceph_pool, &image, target)], skip)
                }
                FailoverAction::Drill => (vec![entry(Task::VerifyCopy, ceph_pool, &image, target)], None),
            };
            chains.push(Chain { entries, skip });
        }
    }
    let data_loss_window_seconds = oldest_synced.map(|t| seconds_between(ctx.now, t));
    Ok(ImagesPlan {
        chains,
        data_loss_window_seconds,
    })
}

/// The earlier of two points, either of which may be unknown.
pub(super) fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn handed_over(t: Seen, s: Seen, target: &str) -> Option<String> {
    (seen_primary(t) && !seen_primary(s)).then(|| format!("already primary on site {target} only"))
}

fn check_sites(ctx: &Ctx, pool: &ObservedPool, sites: &[&str]) -> Result<(), Failure> {
    // The site that receives copies during the request needs an rbd-mirror daemon.
    let receiver = match ctx.action() {
        FailoverAction::Planned | FailoverAction::Failback => Some(ctx.target()),
        FailoverAction::Resync => pool.spec.other_site(ctx.target()),
        FailoverAction::Emergency | FailoverAction::Drill => None,
    };
    // Every site must answer before anything else is judged: a site that does not decides what to do next
    // (an emergency request), whatever else is also wrong.
    let mut answered = Vec::with_capacity(sites.len());
    for site in sites {
        let observed = pool.sites.iter().find(|s| s.site == *site).ok_or_else(|| {
            Failure::preflight(format!(
                "site {site} of RbdMirrorPool {} was not observed",
                pool.name
            ))
        })?;
        let state = observed.pool.as_ref().map_err(|error| {
            let mut failure = Failure::site(site, error);
            if error.is_unreachable() {
                failure.message.push_str(emergency_hint(ctx, site));
            }
            failure
        })?;
        answered.push((site, state));
    }
    for (site, state) in answered {
        if !state.exists {
            return Err(Failure::preflight(format!(
                "pool {} does not exist on site {site}",
                pool.spec.pool
            )));
        }
        if receiver == Some(*site) && state.daemon.is_none() {
            return Err(Failure::preflight(format!(
                "no rbd-mirror daemon runs on site {site} for pool {}",
                pool.spec.pool
            )));
        }
    }
    Ok(())
}

/// `names`, or with `all` every image with mirroring on at any of `sites`.
fn selected_images(pool: &ObservedPool, sites: &[&str]) -> Vec<String> {
    if !pool.spec.images.all {
        return pool.spec.images.names.clone();
    }
    let mut names: Vec<String> = pool
        .sites
        .iter()
        .filter(|s| sites.contains(&s.site.as_str()))
        .filter_map(|s| s.pool.as_ref().ok())
        .flat_map(|state| &state.images)
        .filter(|i| i.mirroring.is_some())
        .map(|i| i.name.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Planned: no split brain, and the copy on the target recent enough.
fn check_planned(ctx: &Ctx, label: &str, t: Seen, s: Seen, mode: ImageMirrorMode) -> Result<(), Failure> {
    let target = ctx.target();
    if seen_primary(t) && seen_primary(s) {
        return Err(Failure::new(
            reason::SPLIT_BRAIN,
            format!("image {label} is primary on both sites: create a resync or failback FailoverRequest"),
        ));
    }
    let (Some(max), true, Seen::Image(copy)) = (ctx.spec.max_lag_seconds, seen_primary(s), t) else {
        return Ok(());
    };
    match (mode, copy.synced_point()) {
        (ImageMirrorMode::Snapshot, None) => Err(Failure::new(
            reason::LAG_ABOVE_TARGET,
            format!("lag of image {label} unknown: site {target} has synced no snapshot of it yet"),
        )),
        (ImageMirrorMode::Snapshot, Some(synced)) => match seconds_between(ctx.now, synced) {
            lag if lag > u64::from(max) => Err(Failure::new(
                reason::LAG_ABOVE_TARGET,
                format!("lag {lag} s above maxLagSeconds {max} for image {label}"),
            )),
            _ => Ok(()),
        },
        (ImageMirrorMode::Journal, _) if !replaying(copy) => {
            let state = copy.replay.as_ref().map_or("unknown", |r| r.state.as_str());
            Err(Failure::new(
                reason::BEHIND,
                format!("image {label} is not replaying on site {target} (state {state})"),
            ))
        }
        (ImageMirrorMode::Journal, _) => Ok(()),
    }
}

/// One image task on `site` as the sites show it.
pub(super) fn evaluate(ctx: &Ctx, row: ImageTask) -> Eval {
    let Some(observed) = find_pool(ctx, row.pool, row.site) else {
        return Eval::Fail(format!(
            "no target RbdMirrorPool has pool {} on site {}",
            row.pool, row.site
        ));
    };
    if observed.spec.engine == ReplicationEngine::DeltaSync {
        return delta::evaluate(ctx, observed, row);
    }
    let ImageTask {
        task,
        pool,
        image,
        site,
        since,
    } = row;
    let Some(other) = observed.spec.other_site(site) else {
        return Eval::Fail(format!("RbdMirrorPool {} names site {site} twice", observed.name));
    };
    let (here, there) = (seen(observed, site, image), seen(observed, other, image));
    let mode = mode_of(observed, [here, there]);
    let label = format!("{pool}/{image}");
    let emit = |step: Step| Eval::Emit(vec![SiteStep::new(site, step)]);
    let (pool, image) = (pool.to_string(), image.to_string());
    let require = |side: Seen<'_>, at: &str| match side {
        Seen::Image(_) => None,
        Seen::Missing => Some(Eval::Fail(format!("image {label} not found on site {at}"))),
        Seen::Unobserved => Some(Eval::Wait(format!("waiting for site {at} to answer"))),
    };
    match task {
        Task::Demote => require(here, site).unwrap_or(match seen_primary(here) {
            true => emit(Step::DemoteImage { pool, image }),
            false => Eval::Satisfied,
        }),
        Task::AwaitSync => {
            if let Some(problem) = require(here, site).or(require(there, other)) {
                return problem;
            }
            let (Seen::Image(receiver), Seen::Image(source)) = (here, there) else {
                return Eval::Wait(format!("waiting for site {site} to answer"));
            };
            let refreshed = since.is_some_and(|t| seconds_between(ctx.now, t) >= STATUS_REFRESH.as_secs());
            let received = match mode {
                ImageMirrorMode::Snapshot => demotion_received(receiver, source),
                ImageMirrorMode::Journal => journal_caught_up(receiver, source, refreshed),
            };
            match (is_primary(receiver), is_primary(source)) {
                (_, true) => Eval::Fail(format!("image {label} is primary on site {other} again")),
                (true, false) => Eval::Satisfied,
                (false, false) if received => Eval::Satisfied,
                (false, false) => Eval::Wait(format!(
                    "waiting for site {site} to receive the demotion of {label} from site {other}"
                )),
            }
        }
        Task::Promote => {
            if let Some(problem) = require(here, site).or(require(there, other)) {
                return problem;
            }
            match (seen_primary(here), seen_primary(there)) {
                (_, true) => Eval::Fail(format!(
                    "refusing to promote {label} on site {site}: it is primary on site {other}"
                )),
                (true, false) => Eval::Satisfied,
                (false, false) => emit(Step::PromoteImage {
                    pool,
                    image,
                    force: false,
                }),
            }
        }
        Task::ForcePromote => require(here, site).unwrap_or(match seen_primary(here) {
            true => Eval::Satisfied,
            false => emit(Step::PromoteImage {
                pool,
                image,
                force: true,
            }),
        }),
        Task::Resync => match here {
            Seen::Unobserved => Eval::Wait(format!("waiting for site {site} to answer")),
            _ if seen_primary(here) => Eval::Fail(format!(
                "image {label} is primary on site {site}; only a demoted copy is resynced"
            )),
            _ if resync_took_hold(here, mode) => Eval::Satisfied,
            _ if since.is_some_and(|t| seconds_between(ctx.now, t) < STATUS_REFRESH.as_secs()) => Eval::Wait(
                format!("waiting for rbd-mirror on site {site} to start resyncing {label}"),
            ),
            _ => emit(Step::ResyncImage { pool, image }),
        },
        Task::MirrorSnapshot => match (require(here, site), seen_primary(here)) {
            (Some(problem), _) => problem,
            (None, false) => Eval::Fail(format!(
                "image {label} is not primary on site {site}: no mirror snapshot can be taken there"
            )),
            (None, true) if receiving(there) => Eval::Satisfied,
            (None, true) if fresh_snapshot_since(here, since, ctx.now) => Eval::Wait(format!(
                "waiting for site {other} to start rebuilding {label} from the mirror snapshot on site {site}"
            )),
            (None, true) => emit(Step::CreateMirrorSnapshot { pool, image }),
        },
        Task::AwaitResync => match in_sync(here, there, mode) {
            true => Eval::Satisfied,
            false => Eval::Wait(format!(
                "waiting for site {site} to resync {label} from site {other}"
            )),
        },
        Task::VerifyCopy => match (require(here, site), here) {
            (Some(problem), _) => problem,
            _ if mode == ImageMirrorMode::Journal => {
                Eval::NotApplicable("journal mirroring keeps no snapshots to check".to_string())
            }
            (_, Seen::Image(copy)) => {
                let sides = drill::Sides {
                    pool: &pool,
                    image: &image,
                    site,
                    copy,
                    other,
                    source: there,
                };
                drill::verify_copy(ctx, sides, since)
            }
            _ => Eval::Wait(format!("waiting for site {site} to answer")),
        },
        Task::PullPeriod | Task::ModifyZone | Task::CommitPeriod | Task::CheckZoneSync => {
            Eval::Fail(format!("{} is not an image task", task.name()))
        }
        Task::FinalSnapshot => Eval::Fail(format!("{} is a task of delta-sync pools only", task.name())),
    }
}

/// The image ends where the request wants it: primary on the target only (resync: the other copy also
/// replays again).
pub(super) fn verify(ctx: &Ctx, pool: &str, image: &str) -> Result<(), String> {
    let target = ctx.target();
    let observed =
        find_pool(ctx, pool, target).ok_or_else(|| format!("pool {pool} not observed on site {target}"))?;
    if observed.spec.engine == ReplicationEngine::DeltaSync {
        return delta::verify(ctx, observed, image);
    }
    let label = format!("{pool}/{image}");
    if !seen_primary(seen(observed, target, image)) {
        return Err(format!("image {label} is not primary on site {target}"));
    }
    if !ctx.needs_peer() {
        return Ok(());
    }
    let peer = observed.spec.other_site(target).unwrap_or_default();
    match seen(observed, peer, image) {
        Seen::Image(copy) if is_primary(copy) => {
            Err(format!("image {label} is still primary on site {peer}"))
        }
        Seen::Image(copy) if ctx.action() == FailoverAction::Resync && !replaying(copy) => {
            Err(format!("image {label} does not replay on site {peer}"))
        }
        Seen::Image(_) => Ok(()),
        Seen::Missing | Seen::Unobserved => Err(format!("image {label} not observed on site {peer}")),
    }
}

/// Drill: the age of the target's newest received snapshot, i.e. the recovery point it would give now.
pub(super) fn copy_age(ctx: &Ctx, pool: &str, image: &str) -> Option<u64> {
    let observed = find_pool(ctx, pool, ctx.target())?;
    let Seen::Image(copy) = seen(observed, ctx.target(), image) else {
        return None;
    };
    let point = last_synced(copy).or_else(|| newest_copy(copy).map(|s| s.created))?;
    Some(seconds_between(ctx.now, point))
}
