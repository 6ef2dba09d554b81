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
//! Other actions are refused for delta-sync pools (not built).

use super::{
    ledger::{Chain, Task},
    plan::{seconds_between, Ctx, Eval, Failure, Handover, ObservedPool},
    rbd::{entry, ImageTask},
};
use crate::{
    agent::{
        delta_sync::{is_snapshot_for, series, snapshot_name, snapshot_time},
        Step, SyncImage, SyncPool,
    },
    api::{conditions::reason, failover_request::FailoverAction},
    plan::SiteStep,
};

/// The preflight of a delta-sync pool: the request's action, both sites answering with the pool, every
/// image's copy recent enough; then each image's chain.
pub(super) fn chains(ctx: &Ctx, pool: &ObservedPool) -> Result<Vec<Chain>, Failure> {
    let name = &pool.name;
    if ctx.action() != FailoverAction::Planned {
        return Err(Failure::preflight(format!(
            "RbdMirrorPool {name} replicates by delta-sync: a FailoverRequest moves it by a planned failover \
             only ({} is not built for delta-sync pools)",
            ctx.action().as_str()
        )));
    }
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
    let [on_target, on_source] = [target, source].map(|site| answered(pool, site));
    let (on_target, on_source) = (on_target?, on_source?);
    let pair = series(target, source);
    let images: Vec<String> = match pool.spec.images.all {
        true => on_source.images.iter().map(|i| i.name.clone()).collect(),
        false => pool.spec.images.names.clone(),
    };
    let mut chains = Vec::with_capacity(images.len());
    for image in images {
        let label = format!("{}/{image}", pool.spec.pool);
        let skip = (primary == target).then(|| format!("site {target} is the pool's primary already"));
        if skip.is_none() {
            let source_image = find(on_source, &image)
                .ok_or_else(|| Failure::preflight(format!("image {label} not found on site {source}")))?;
            check_lag(ctx, &label, source_image, find(on_target, &image), &pair)?;
        }
        let ceph_pool = pool.spec.pool.as_str();
        chains.push(Chain {
            entries: vec![
                entry(Task::FinalSnapshot, ceph_pool, &image, source),
                entry(Task::AwaitSync, ceph_pool, &image, target),
                entry(Task::Promote, ceph_pool, &image, target),
            ],
            skip,
        });
    }
    Ok(chains)
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
    let common = copy.and_then(|copy| snapshots(source, pair).rev().find(|snap| copy.has_snapshot(snap)));
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
    let (Some(here), Some(there)) = (synced(pool, site), synced(pool, other)) else {
        return Eval::Wait("waiting for both sites to answer".to_string());
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
            match (find(here, image), taken_since_start) {
                (None, _) => Eval::Fail(format!("image {label} not found on site {site}")),
                (Some(_), true) => Eval::Satisfied,
                (Some(_), false) => Eval::Emit(vec![SiteStep::new(
                    site,
                    Step::CreateSyncSnapshot {
                        pool: ceph_pool.to_string(),
                        image: image.to_string(),
                        snap: snapshot_name(&pair, ctx.now),
                    },
                )]),
            }
        }
        Task::AwaitSync | Task::Promote if primary == site => Eval::Satisfied,
        Task::AwaitSync | Task::Promote => {
            let Some(point) = newest(there, image, &pair) else {
                return Eval::Fail(format!("image {label} has no sync snapshot on site {other}"));
            };
            let received = find(here, image).is_some_and(|copy| copy.has_snapshot(point));
            match (received, task) {
                (false, _) => Eval::Wait(format!(
                    "waiting for site {site} to receive {point} of {label} from site {other} (the pool's delta-sync ships it)"
                )),
                (true, Task::Promote) => Eval::HandOver(Handover {
                    pool: pool.name.clone(),
                    site: site.to_string(),
                }),
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
fn newest<'a>(pool: &'a SyncPool, image: &str, pair: &str) -> Option<&'a String> {
    find(pool, image)?
        .snapshots
        .iter()
        .rev()
        .find(|snap| is_snapshot_for(snap, pair))
}

fn find<'a>(pool: &'a SyncPool, image: &str) -> Option<&'a SyncImage> {
    pool.images.iter().find(|i| i.name == image)
}

/// The image's sync snapshots of `pair`, oldest first.
fn snapshots<'a>(image: &'a SyncImage, pair: &'a str) -> impl DoubleEndedIterator<Item = &'a String> {
    image
        .snapshots
        .iter()
        .filter(move |snap| is_snapshot_for(snap, pair))
}
