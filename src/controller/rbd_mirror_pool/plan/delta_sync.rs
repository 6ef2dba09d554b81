//! Pure planner for a pool with `engine: delta-sync`: the primary site's agent ships snapshot deltas to the
//! other site's receiver.
//!
//! What each copy holds is read from the images' sync snapshots on both sites, never from a transfer's own
//! account: the receiver creates the snapshot on the copy only once it applied the delta up to it. Per image:
//! 1. while a transfer runs, wait for it;
//! 2. when the primary's newest sync snapshot is not on the copy, ship the delta to it from the newest
//!    snapshot both hold (the whole image when there is none), at most `maxConcurrentTransfers` at once;
//!    a failed transfer is started again, and resumes where the receiver's checkpoint stands;
//! 3. otherwise, when a snapshot schedule is due since that snapshot, take a new one;
//! 4. while no transfer runs, snapshots older than the newest common one go from the primary (only that one
//!    is a delta's base), and from the copy beyond the newest `keepSnapshots`.
//!
//! Snapshots are named `cephdr-sync-<taken on>_<other site>-<Unix time>`, a series per pair of sites (see
//! [`series`](crate::agent::delta_sync::series)): pools copying one Ceph pool to different sites (a replica,
//! and a backup store behind a `cephdr agent --backup-dir`) each plan their own series, and after a
//! failover the reversed direction ships from the snapshot both copies hold.
//!
//! The primary is the site the pool's `cephdr.io/primary-site` annotation names, else the one with
//! `role: primary` (see [`RbdMirrorPool::delta_sync_sites`](crate::api::RbdMirrorPool::delta_sync_sites)).

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

use super::{conditions, requeue, PoolPlan, REQUEUE_CONVERGED};
use crate::{
    agent::{
        delta_sync::{is_snapshot_for, series, snapshot_name, snapshot_time},
        Step, SyncImage, SyncPeer, SyncPool, Transfer, TransferOptions,
    },
    api::{
        common::DeletionPolicy,
        conditions::{condition, reason, READY, RPO_MET, SYNCED},
        rbd_mirror_pool::{
            ImageStatus, RbdMirrorPoolSpec, RbdMirrorPoolStatus, SnapshotSchedule, TransferStatus,
        },
    },
    controller::rbd_mirror_pool::status::{self as pool_status, seconds_since},
    plan::{describe, SiteStep},
};

/// Condition reason while the other site's `CephSite` names no receiver, or its credentials are missing.
pub const NO_RECEIVER: &str = "NoSyncReceiver";
/// Condition reason when a transfer failed after its retries.
pub const TRANSFER_FAILED: &str = "TransferFailed";
/// Image state: the first full copy is on its way or waits for a transfer slot.
pub const STATE_SYNCING: &str = "syncing";

const DEFAULT_MAX_TRANSFERS: usize = 4;
/// How long after a refused transfer it is tried again.
const RETRY_REFUSED: std::time::Duration = std::time::Duration::from_secs(300);

/// One site of a delta-sync pool as the reconciler observed it.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedSyncSite {
    pub site: String,
    /// `Err` carries why it could not be observed.
    pub pool: Result<SyncPool, String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DeltaObserved {
    /// The site with `role: primary`, and the other one.
    pub primary: ObservedSyncSite,
    pub copy: ObservedSyncSite,
    /// How the primary's agent reaches the copy's receiver; `Err((reason, message))` says why it cannot.
    pub receiver: Result<SyncPeer, (&'static str, String)>,
    pub deleting: bool,
}

pub fn plan(spec: &RbdMirrorPoolSpec, observed: &DeltaObserved, now: Timestamp) -> PoolPlan {
    if observed.deleting {
        return deletion(spec, observed);
    }
    let mut steps = Vec::new();
    let mut unreachable = Vec::new();
    let primary = observe(&observed.primary, &mut unreachable);
    let copy = observe(&observed.copy, &mut unreachable);
    let mut waiting = Vec::new();
    if copy.is_some_and(|pool| !pool.exists) {
        steps.push(SiteStep::new(
            &observed.copy.site,
            Step::CreatePool {
                pool: spec.pool.clone(),
            },
        ));
    }
    let mut images = Vec::new();
    let series = series(&observed.primary.site, &observed.copy.site);
    let running = primary.map_or(0, |pool| running_transfers(pool, &series));
    match primary {
        Some(pool) if !pool.exists => waiting.push(format!(
            "pool {} does not exist on {}",
            spec.pool, observed.primary.site
        )),
        Some(pool) => {
            let copies = copy.filter(|pool| pool.exists);
            let mut shipping = ImagePlanner {
                spec,
                observed,
                now,
                series: &series,
                free_slots: max_transfers(spec).saturating_sub(running),
                steps: &mut steps,
            };
            for name in selected(spec, pool) {
                let source = pool.images.iter().find(|image| image.name == name);
                let target = copies.and_then(|pool| pool.images.iter().find(|image| image.name == name));
                images.push(match source {
                    Some(source) => shipping.image(source, target, copies.is_some()),
                    None => missing(&name, &observed.primary.site),
                });
            }
        }
        None => {}
    }
    let status = pool_status_of(spec, &observed.primary.site, images);
    let conditions = converging_conditions(spec, observed, &unreachable, &waiting, &status, &steps);
    let settled = next_due(spec, now).min(REQUEUE_CONVERGED);
    let requeue = requeue(
        !steps.is_empty() || running > 0,
        conditions::healthy(&conditions),
        settled,
    );
    PoolPlan::new(steps, conditions, requeue, status)
}

/// The pool names no valid primary (its annotation names a site it does not have): nothing is touched,
/// and the pool keeps the image status it last reported until a person corrects it.
pub fn invalid_primary(previous: Option<&RbdMirrorPoolStatus>, message: &str) -> PoolPlan {
    let conditions = conditions::invalid_spec(message);
    PoolPlan::new(
        vec![],
        conditions,
        REQUEUE_CONVERGED,
        previous.cloned().unwrap_or_default(),
    )
}

fn observe<'a>(site: &'a ObservedSyncSite, unreachable: &mut Vec<String>) -> Option<&'a SyncPool> {
    match &site.pool {
        Ok(pool) => Some(pool),
        Err(error) => {
            unreachable.push(format!("{}: {error}", site.site));
            None
        }
    }
}

/// The images the spec selects, in its order (`all`: the primary's, in its order).
fn selected(spec: &RbdMirrorPoolSpec, primary: &SyncPool) -> Vec<String> {
    if spec.images.all {
        primary.images.iter().map(|image| image.name.clone()).collect()
    } else {
        spec.images.names.clone()
    }
}

fn max_transfers(spec: &RbdMirrorPoolSpec) -> usize {
    spec.delta_sync
        .as_ref()
        .and_then(|options| options.max_concurrent_transfers)
        .map_or(DEFAULT_MAX_TRANSFERS, |n| n as usize)
}

/// How many of the primary's transfers of `series` run now.
fn running_transfers(primary: &SyncPool, series: &str) -> usize {
    primary
        .images
        .iter()
        .filter(|image| transfer_of(image, series).is_some_and(Transfer::running))
        .count()
}

struct ImagePlanner<'a> {
    spec: &'a RbdMirrorPoolSpec,
    observed: &'a DeltaObserved,
    now: Timestamp,
    /// The pair's snapshot series.
    series: &'a str,
    free_slots: usize,
    steps: &'a mut Vec<SiteStep>,
}

impl ImagePlanner<'_> {
    /// Plans one image's next step and reports it. `copy_pool_ready`: the pool exists on the copy's site.
    fn image(
        &mut self,
        source: &SyncImage,
        target: Option<&SyncImage>,
        copy_pool_ready: bool,
    ) -> ImageStatus {
        let ours: Vec<&String> = source.snapshots_of(self.series).collect();
        let theirs: Vec<&String> = target
            .map(|t| t.snapshots_of(self.series).collect())
            .unwrap_or_default();
        let common = ours.iter().rev().find(|snap| theirs.contains(snap)).copied();
        let newest = ours.last().copied();
        let transfer = transfer_of(source, self.series);
        let running = transfer.is_some_and(Transfer::running);
        let mut description = None;
        if running {
            description = transfer.map(shipping);
        } else if let Some(newest) = newest.filter(|snap| Some(*snap) != common) {
            match (&self.observed.receiver, copy_pool_ready) {
                _ if self.holds_back(transfer) => {
                    description = Some(format!(
                    "{newest} waits: the last transfer was refused; it is tried again {} s after it ended",
                    RETRY_REFUSED.as_secs()
                ))
                }
                (Ok(peer), true) if self.free_slots > 0 => {
                    self.free_slots -= 1;
                    let send = self.send(source, common, newest, peer);
                    description = Some(format!("shipping {}", send.step.target()));
                    self.steps.push(send);
                }
                _ => description = Some(format!("{newest} waits to be shipped")),
            }
        } else if self.due(newest.map(String::as_str)) {
            self.steps.push(self.on_primary(Step::CreateSyncSnapshot {
                pool: self.spec.pool.clone(),
                image: source.name.clone(),
                snap: snapshot_name(&self.observed.primary.site, &self.observed.copy.site, self.now),
            }));
        }
        if let (Some(common), false) = (common, running) {
            self.prune(&source.name, &ours, &theirs, common);
        }
        let failed = transfer.and_then(|t| t.error.as_ref()).filter(|_| !running);
        let synced_at = common.and_then(|snap| snapshot_time(snap));
        let state = match (failed, common) {
            (Some(_), _) => pool_status::STATE_ERROR,
            (None, Some(_)) => pool_status::STATE_SYNCED,
            (None, None) => STATE_SYNCING,
        };
        ImageStatus {
            name: source.name.clone(),
            primary_site: Some(self.observed.primary.site.clone()),
            state: state.to_string(),
            description: failed
                .map(|error| format!("transfer failed: {error}"))
                .or(description),
            last_sync_time: synced_at.map(Time),
            lag_seconds: synced_at.map(|at| seconds_since(at, self.now)),
            synced_snapshot: common.cloned(),
            last_transfer: transfer.map(transfer_status),
        }
    }

    /// Whether the last transfer failed in a way that repeats until something changes (a copy written
    /// since its base), recently enough not to try again yet: a retry every reconcile only adds noise.
    fn holds_back(&self, transfer: Option<&Transfer>) -> bool {
        transfer
            .filter(|t| t.permanent && t.error.is_some())
            .and_then(|t| t.finished)
            .is_some_and(|ended| seconds_since(ended, self.now) < RETRY_REFUSED.as_secs())
    }

    fn on_primary(&self, step: Step) -> SiteStep {
        SiteStep::new(&self.observed.primary.site, step)
    }

    fn send(&self, source: &SyncImage, from: Option<&String>, to: &str, peer: &SyncPeer) -> SiteStep {
        let options = self
            .spec
            .delta_sync
            .as_ref()
            .map_or_else(TransferOptions::default, |o| TransferOptions {
                checksum: o.checksum,
                zstd_level: o.zstd_level,
                bytes_per_second: o.bytes_per_second,
            });
        self.on_primary(Step::SendDelta {
            pool: self.spec.pool.clone(),
            image: source.name.clone(),
            from_snap: from.cloned(),
            to_snap: to.to_string(),
            peer: peer.clone(),
            options,
        })
    }

    /// Whether a schedule wants a snapshot taken after `newest` (none yet: at once).
    fn due(&self, newest: Option<&str>) -> bool {
        let Some(taken) = newest.and_then(snapshot_time) else {
            return true;
        };
        self.spec
            .snapshot_schedules
            .iter()
            .filter_map(Slots::of)
            .any(|slots| slots.index(self.now) > slots.index(taken))
    }

    /// With no transfer of the image running (a receiver may be writing the copy): the primary keeps only
    /// `common`, the next delta's base; the copy keeps its newest `keepSnapshots` up to `common`.
    fn prune(&mut self, image: &str, ours: &[&String], theirs: &[&String], common: &str) {
        let older = |snap: &&&String| snapshot_time(snap) < snapshot_time(common);
        let keep_older = self
            .spec
            .delta_sync
            .as_ref()
            .and_then(|o| o.keep_snapshots)
            .unwrap_or(1) as usize
            - 1;
        let copy_older: Vec<&&String> = theirs.iter().filter(older).collect();
        let copy_excess = copy_older.len().saturating_sub(keep_older);
        let removals = [
            (
                &self.observed.primary.site,
                ours.iter().filter(older).collect::<Vec<_>>(),
            ),
            (
                &self.observed.copy.site,
                copy_older.into_iter().take(copy_excess).collect(),
            ),
        ];
        for (site, snaps) in removals {
            for snap in snaps {
                self.steps.push(SiteStep::new(
                    site,
                    Step::RemoveSyncSnapshot {
                        pool: self.spec.pool.clone(),
                        image: image.to_string(),
                        snap: (*snap).clone(),
                    },
                ));
            }
        }
    }
}

/// The primary agent's newest transfer of the image in `series`.
fn transfer_of<'i>(image: &'i SyncImage, series: &str) -> Option<&'i Transfer> {
    image
        .transfers
        .iter()
        .find(|transfer| is_snapshot_for(&transfer.to_snap, series))
}

/// A schedule's slots: `interval` long, counted from the start time of day (from midnight UTC without one),
/// so snapshots land on the times the schedule names.
struct Slots {
    interval: i64,
    offset: i64,
}

impl Slots {
    /// None for an interval the schema refuses.
    fn of(schedule: &SnapshotSchedule) -> Option<Slots> {
        let interval = schedule.interval_seconds().filter(|&seconds| seconds > 0)? as i64;
        let offset = schedule
            .start_time
            .as_deref()
            .and_then(seconds_of_day)
            .unwrap_or(0);
        Some(Slots { interval, offset })
    }

    /// The slot `at` falls in.
    fn index(&self, at: Timestamp) -> i64 {
        (at.as_second() - self.offset).div_euclid(self.interval)
    }

    fn seconds_until_next(&self, now: Timestamp) -> i64 {
        (self.index(now) + 1) * self.interval + self.offset - now.as_second()
    }
}

/// `HH:MM:SS` as seconds after midnight.
fn seconds_of_day(time: &str) -> Option<i64> {
    let mut parts = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    Some(h * 3600 + m * 60 + s)
}

/// How long until a schedule's next slot starts (at least a second).
fn next_due(spec: &RbdMirrorPoolSpec, now: Timestamp) -> std::time::Duration {
    let wait = spec
        .snapshot_schedules
        .iter()
        .filter_map(Slots::of)
        .map(|slots| slots.seconds_until_next(now))
        .min()
        .unwrap_or(60);
    std::time::Duration::from_secs(wait.max(1) as u64)
}

fn shipping(transfer: &Transfer) -> String {
    match &transfer.from_snap {
        Some(from) => format!("shipping {from}..{}", transfer.to_snap),
        None => format!("shipping {} (full copy)", transfer.to_snap),
    }
}

fn transfer_status(transfer: &Transfer) -> TransferStatus {
    TransferStatus {
        from_snapshot: transfer.from_snap.clone(),
        to_snapshot: transfer.to_snap.clone(),
        start_time: Some(Time(transfer.started)),
        duration_seconds: transfer
            .finished
            .map(|end| end.duration_since(transfer.started).as_secs().max(0) as u64),
        bytes_changed: transfer.report.as_ref().map(|r| r.changed_bytes),
        bytes_shipped: transfer.report.as_ref().map(|r| r.wire_bytes),
        error: transfer.error.clone(),
    }
}

fn missing(name: &str, primary_site: &str) -> ImageStatus {
    ImageStatus {
        name: name.to_string(),
        primary_site: None,
        state: pool_status::STATE_MISSING.to_string(),
        description: Some(format!("no image {name} on {primary_site}")),
        ..ImageStatus::default()
    }
}

fn pool_status_of(
    spec: &RbdMirrorPoolSpec,
    primary_site: &str,
    images: Vec<ImageStatus>,
) -> RbdMirrorPoolStatus {
    RbdMirrorPoolStatus {
        primary_site: Some(primary_site.to_string()),
        summary: Some(pool_status::summary(spec, &images, &[])),
        images,
        ..RbdMirrorPoolStatus::default()
    }
}

fn converging_conditions(
    spec: &RbdMirrorPoolSpec,
    observed: &DeltaObserved,
    unreachable: &[String],
    waiting: &[String],
    status: &RbdMirrorPoolStatus,
    steps: &[SiteStep],
) -> Vec<Condition> {
    let failed: Vec<String> = status
        .images
        .iter()
        .filter(|image| image.state == pool_status::STATE_ERROR)
        .map(|image| {
            format!(
                "{}: {}",
                image.name,
                image.description.as_deref().unwrap_or_default()
            )
        })
        .collect();
    let missing: Vec<&str> = status
        .images
        .iter()
        .filter(|image| image.state == pool_status::STATE_MISSING)
        .map(|image| image.name.as_str())
        .collect();
    let unsynced = status
        .images
        .iter()
        .filter(|image| image.synced_snapshot.is_none())
        .count();
    let (ready, why, message) = if !unreachable.is_empty() {
        (false, reason::AGENT_UNREACHABLE, unreachable.join("; "))
    } else if let Err((why, message)) = &observed.receiver {
        (false, *why, message.clone())
    } else if !failed.is_empty() {
        (false, TRANSFER_FAILED, failed.join("; "))
    } else if !waiting.is_empty() {
        (false, reason::WAITING_FOR_DEPENDENCY, waiting.join("; "))
    } else if !missing.is_empty() {
        (
            false,
            reason::WAITING_FOR_DEPENDENCY,
            format!(
                "images missing on {}: {}",
                observed.primary.site,
                missing.join(", ")
            ),
        )
    } else if unsynced > 0 {
        let message = format!(
            "{unsynced} of {} images have no synced snapshot on {} yet",
            status.images.len(),
            observed.copy.site
        );
        (false, reason::PROGRESSING, message)
    } else {
        let message = match steps.is_empty() {
            true => format!(
                "{} images replicate by delta-sync to {}",
                status.images.len(),
                observed.copy.site
            ),
            false => format!("replicating; next: {}", describe(steps)),
        };
        (true, reason::RECONCILED, message)
    };
    let mut conditions = vec![condition(READY, ready, why, message, None)];
    let behind: Vec<&str> = status
        .images
        .iter()
        .filter(|image| !pool_status::is_caught_up(image, None))
        .map(|image| image.name.as_str())
        .collect();
    conditions.push(match behind.is_empty() {
        true => condition(
            SYNCED,
            true,
            reason::CAUGHT_UP,
            "every image holds a synced snapshot",
            None,
        ),
        false => condition(
            SYNCED,
            false,
            reason::BEHIND,
            format!("not synced: {}", behind.join(", ")),
            None,
        ),
    });
    if let Some(rpo) = spec.rpo_seconds {
        let late: Vec<String> = status
            .images
            .iter()
            .filter(|image| pool_status::lag_above(image, Some(rpo)) || image.synced_snapshot.is_none())
            .map(|image| image.name.clone())
            .collect();
        conditions.push(match late.is_empty() {
            true => condition(
                RPO_MET,
                true,
                reason::LAG_WITHIN_TARGET,
                format!("every image within {rpo}s"),
                None,
            ),
            false => condition(
                RPO_MET,
                false,
                reason::LAG_ABOVE_TARGET,
                format!("beyond {rpo}s: {}", late.join(", ")),
                None,
            ),
        });
    }
    conditions
}

/// With `deletionPolicy: Delete`, cephdr's sync snapshots go from both sites; the images stay (they hold
/// the user's data). `Retain` leaves everything.
fn deletion(spec: &RbdMirrorPoolSpec, observed: &DeltaObserved) -> PoolPlan {
    let mut steps = Vec::new();
    let mut unreachable = Vec::new();
    if spec.deletion_policy == DeletionPolicy::Delete {
        for site in [&observed.primary, &observed.copy] {
            let Some(pool) = observe(site, &mut unreachable) else {
                continue;
            };
            for image in &pool.images {
                for snap in &image.snapshots {
                    steps.push(SiteStep::new(
                        &site.site,
                        Step::RemoveSyncSnapshot {
                            pool: spec.pool.clone(),
                            image: image.name.clone(),
                            snap: snap.clone(),
                        },
                    ));
                }
            }
        }
    }
    let complete = steps.is_empty() && unreachable.is_empty();
    let conditions = conditions::deleting(spec.deletion_policy, &unreachable, &steps, complete);
    PoolPlan::cleanup(steps, conditions, RbdMirrorPoolStatus::default(), complete)
}
