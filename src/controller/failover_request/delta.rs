//! Delta-sync pools in a failover. Their images are plain RBD images on both sites: Ceph holds no primary
//! flag for them and cannot make the old primary refuse writes. The pool records its primary instead (its
//! `cephdr.io/primary-site` annotation), and a planned failover hands that record over once the target
//! holds the source's last point. Chain per image (S = the recorded primary, T = the target):
//! - final-snapshot on S: a last sync snapshot of the pair's series;
//! - await-sync on T: T holds S's newest sync snapshot (the pool's delta-sync ships it);
//! - promote on T: record T as the pool's primary (every image's row asks for the same one record).
//!
//! From then on the pool ships T's snapshots to S as deltas from that point. Writes on S after its last
//! shipped snapshot are never merged: S's receiver refuses the next delta onto them, and the pool says so.
//!
//! An emergency, with S gone, runs force-promote on T alone: T's copy goes back to the newest sync snapshot
//! it fully holds (a delta may have been half applied), takes a promotion snapshot of the pair's series,
//! and T is recorded as primary. The data-loss window is the age of that newest snapshot. Receivers refuse
//! a delta ending before the copy's newest snapshot of its series, so S, once back, cannot finish a delta
//! it began before into the promoted copy; and T's deltas are refused on S while S holds writes of its own
//! (written since the delta's base). Failback, resync and drill are refused for delta-sync pools (not
//! built).

use k8s_openapi::jiff::Timestamp;

use super::{
    ledger::{Chain, Task},
    plan::{seconds_between, Ctx, Eval, Failure, Handover, ObservedPool},
    rbd::{earliest, entry, ImageTask},
};
use crate::{
    agent::{
        delta_sync::{series, snapshot_name, snapshot_time},
        Step, SyncImage, SyncPool,
    },
    api::{conditions::reason, failover_request::FailoverAction},
    plan::SiteStep,
};

/// The preflight of a delta-sync pool: the request's action, the sites it needs answering with the pool,
/// (planned) every image's copy recent enough; then each image's chain, with the oldest of the target's
/// newest points (an emergency's data-loss window runs from it).
pub(super) fn chains(ctx: &Ctx, pool: &ObservedPool) -> Result<(Vec<Chain>, Option<Timestamp>), Failure> {
    let name = &pool.name;
    let emergency = match ctx.action() {
        FailoverAction::Planned => false,
        FailoverAction::Emergency => true,
        other => {
            return Err(Failure::preflight(format!(
                "RbdMirrorPool {name} replicates by delta-sync: a FailoverRequest moves it by a planned or \
                 emergency failover only ({} is not built for delta-sync pools)",
                other.as_str()
            )))
        }
    };
    let target = ctx.target();
    let source = match pool.spec.other_site(target) {
        Some(source) if pool.spec.sites.iter().any(|s| s.site == target) => source,
        _ => {
            return Err(Failure::preflight(format!(
                "site {target} is not a site of RbdMirrorPool {name}"
            )))
        }
    };
    let primary = recorded_primary(pool).map_err(Failure::preflight)?;
    let on_target = answered(pool, target)?;
    let pair = series(target, source);
    let ceph_pool = pool.spec.pool.as_str();
    let skip = (primary == target).then(|| format!("site {target} is the pool's primary already"));
    let mut chains = Vec::new();
    if emergency {
        // The images the target holds: the source may be gone.
        let mut oldest_point = None;
        for image in selected(pool, on_target) {
            let point = newest(on_target, &image, &pair).and_then(|snap| snapshot_time(snap));
            if point.is_none() && skip.is_none() {
                return Err(Failure::preflight(format!(
                    "site {target} holds no synced snapshot of image {ceph_pool}/{image}: there is nothing to promote"
                )));
            }
            oldest_point = earliest(oldest_point, point);
            chains.push(Chain {
                entries: vec![entry(Task::ForcePromote, ceph_pool, &image, target)],
                skip: skip.clone(),
            });
        }
        return Ok((chains, oldest_point.filter(|_| skip.is_none())));
    }
    let on_source = answered(pool, source)?;
    for image in selected(pool, on_source) {
        let label = format!("{ceph_pool}/{image}");
        if skip.is_none() {
            let source_image = find(on_source, &image)
                .ok_or_else(|| Failure::preflight(format!("image {label} not found on site {source}")))?;
            check_lag(ctx, &label, source_image, find(on_target, &image), &pair)?;
        }
        chains.push(Chain {
            entries: vec![
                entry(Task::FinalSnapshot, ceph_pool, &image, source),
                entry(Task::AwaitSync, ceph_pool, &image, target),
                entry(Task::Promote, ceph_pool, &image, target),
            ],
            skip: skip.clone(),
        });
    }
    Ok((chains, None))
}

/// The spec's `names`, or with `all` every image `site` holds.
fn selected(pool: &ObservedPool, site: &SyncPool) -> Vec<String> {
    match pool.spec.images.all {
        true => site.images.iter().map(|i| i.name.clone()).collect(),
        false => pool.spec.images.names.clone(),
    }
}

/// The target must hold a snapshot of the pair's series the source also holds, and with
/// `maxLagSeconds`, one taken recently enough.
fn check_lag(
    ctx: &Ctx,
    label: &str,
    source: &SyncImage,
    copy: Option<&SyncImage>,
    pair: &str,
) -> Result<(), Failure> {
    let target = ctx.target();
    let common = copy.and_then(|copy| {
        source
            .snapshots_of(pair)
            .rev()
            .find(|snap| copy.has_snapshot(snap))
    });
    let Some(common) = common else {
        return Err(Failure::new(
            reason::BEHIND,
            format!("site {target} holds no synced snapshot of image {label} yet"),
        ));
    };
    let (Some(max), Some(taken)) = (ctx.spec.max_lag_seconds, snapshot_time(common)) else {
        return Ok(());
    };
    match seconds_between(ctx.now, taken) {
        lag if lag > u64::from(max) => Err(Failure::new(
            reason::LAG_ABOVE_TARGET,
            format!("lag {lag} s above maxLagSeconds {max} for image {label}"),
        )),
        _ => Ok(()),
    }
}

/// One image task of a delta-sync pool as the sites show it.
pub(super) fn evaluate(ctx: &Ctx, pool: &ObservedPool, row: ImageTask) -> Eval {
    let ImageTask {
        task,
        pool: ceph_pool,
        image,
        site,
        since,
    } = row;
    let Some(other) = pool.spec.other_site(site) else {
        return Eval::Fail(format!("RbdMirrorPool {} names site {site} twice", pool.name));
    };
    let primary = match recorded_primary(pool) {
        Ok(primary) => primary,
        Err(message) => return Eval::Fail(message),
    };
    let label = format!("{ceph_pool}/{image}");
    let pair = series(site, other);
    // Named after the time the row started, so every call asks for the same snapshot.
    let snap = snapshot_name(site, other, since.unwrap_or(ctx.now));
    let Some(here) = synced(pool, site) else {
        return Eval::Wait(format!("waiting for site {site} to answer"));
    };
    let Some(copy) = find(here, image) else {
        return Eval::Fail(format!("image {label} not found on site {site}"));
    };
    let hand_over = || {
        Eval::HandOver(Handover {
            pool: pool.name.clone(),
            site: site.to_string(),
        })
    };
    if task == Task::ForcePromote {
        // Back to the newest point the copy fully holds, a promotion snapshot, then the record.
        return match (
            primary == site,
            copy.has_snapshot(&snap),
            newest(here, image, &pair),
        ) {
            (true, _, _) => Eval::Satisfied,
            (false, true, _) => hand_over(),
            (false, false, None) => Eval::Fail(format!(
                "image {label} has no sync snapshot on site {site} to promote from"
            )),
            (false, false, Some(point)) => Eval::Emit(vec![SiteStep::new(
                site,
                Step::PromoteSyncCopy {
                    pool: ceph_pool.to_string(),
                    image: image.to_string(),
                    from_snap: point.clone(),
                    snap,
                },
            )]),
        };
    }
    let Some(there) = synced(pool, other) else {
        return Eval::Wait(format!("waiting for site {other} to answer"));
    };
    match task {
        Task::FinalSnapshot if primary != site => Eval::Fail(format!(
            "the pool records site {primary} as primary, not site {site}: it changed during the request"
        )),
        Task::FinalSnapshot => {
            let taken_since_start = newest(here, image, &pair)
                .and_then(|snap| snapshot_time(snap))
                .zip(since)
                .is_some_and(|(taken, started)| taken >= started);
            match taken_since_start {
                true => Eval::Satisfied,
                false => Eval::Emit(vec![SiteStep::new(
                    site,
                    Step::CreateSyncSnapshot {
                        pool: ceph_pool.to_string(),
                        image: image.to_string(),
                        snap,
                    },
                )]),
            }
        }
        Task::AwaitSync | Task::Promote if primary == site => Eval::Satisfied,
        Task::AwaitSync | Task::Promote => {
            let Some(point) = newest(there, image, &pair) else {
                return Eval::Fail(format!("image {label} has no sync snapshot on site {other}"));
            };
            let received = copy.has_snapshot(point);
            match (received, task) {
                (false, _) => Eval::Wait(format!(
                    "waiting for site {site} to receive {point} of {label} from site {other} (the pool's delta-sync ships it)"
                )),
                (true, Task::Promote) => hand_over(),
                (true, _) => Eval::Satisfied,
            }
        }
        other_task => Eval::Fail(format!(
            "{} is not a task of a delta-sync failover",
            other_task.name()
        )),
    }
}

/// The image ends where the request wants it: the pool records the target as primary, and the target holds
/// the image.
pub(super) fn verify(ctx: &Ctx, pool: &ObservedPool, image: &str) -> Result<(), String> {
    let target = ctx.target();
    let primary = recorded_primary(pool)?;
    if primary != target {
        return Err(format!(
            "RbdMirrorPool {} records site {primary} as primary, not site {target}",
            pool.name
        ));
    }
    match synced(pool, target).and_then(|state| find(state, image)) {
        Some(_) => Ok(()),
        None => Err(format!(
            "image {}/{image} not observed on site {target}",
            pool.spec.pool
        )),
    }
}

fn recorded_primary(pool: &ObservedPool) -> Result<&str, String> {
    match &pool.recorded_primary {
        Some(Ok(site)) => Ok(site),
        Some(Err(message)) => Err(format!("RbdMirrorPool {}: {message}", pool.name)),
        None => Err(format!("RbdMirrorPool {} records no primary", pool.name)),
    }
}

/// The site's delta-sync view of the pool, when it answered.
fn synced<'a>(pool: &'a ObservedPool, site: &str) -> Option<&'a SyncPool> {
    pool.sites.iter().find(|s| s.site == site)?.sync.as_ref()
}

/// The site's view, or the preflight's reason why there is none.
fn answered<'a>(pool: &'a ObservedPool, site: &str) -> Result<&'a SyncPool, Failure> {
    let observed = pool.sites.iter().find(|s| s.site == site).ok_or_else(|| {
        Failure::preflight(format!(
            "site {site} of RbdMirrorPool {} was not observed",
            pool.name
        ))
    })?;
    if let Err(error) = &observed.pool {
        return Err(Failure::site(site, error));
    }
    match &observed.sync {
        Some(state) if state.exists => Ok(state),
        _ => Err(Failure::preflight(format!(
            "pool {} does not exist on site {site}",
            pool.spec.pool
        ))),
    }
}

/// The newest sync snapshot of `pair` the site holds of the image.
fn newest<'a>(pool: &'a SyncPool, image: &str, pair: &'a str) -> Option<&'a String> {
    find(pool, image)?.snapshots_of(pair).next_back()
}

fn find<'a>(pool: &'a SyncPool, image: &str) -> Option<&'a SyncImage> {
    pool.images.iter().find(|i| i.name == image)
}
