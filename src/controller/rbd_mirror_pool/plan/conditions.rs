//! The conditions an `RbdMirrorPool` plan reports: `Ready`, `Reconciling`, `Stalled`, `Synced`, `RpoMet`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::{super::status, SNAPSHOTS_STALE};
use crate::{
    agent::ImageMirrorMode,
    api::{
        common::DeletionPolicy,
        conditions::{condition, is_true, reason, READY, RECONCILING, RPO_MET, STALLED, SYNCED},
        rbd_mirror_pool::{RbdMirrorPoolSpec, RbdMirrorPoolStatus},
    },
    plan::SiteStep,
};
use status::{ImageView, Placement};

/// Condition reasons a human acts on, with the reason of the Event that announces each when it appears.
const ANNOUNCED: [(&str, &str); 2] = [
    (reason::SPLIT_BRAIN, "SplitBrainDetected"),
    (SNAPSHOTS_STALE, SNAPSHOTS_STALE),
];

/// Names listed in a message before the rest is counted: messages stay readable with thousands of images.
const LISTED: usize = 10;

/// What keeps the pool from being Ready or Synced, gathered while planning.
#[derive(Debug, Default)]
pub(super) struct Findings {
    /// `site: error` for each site whose pool could not be observed.
    pub unreachable: Vec<String>,
    pub split_brain: Vec<String>,
    pub conflicts: Vec<String>,
    /// Why the pool is not Ready although no step can help now.
    pub waiting: Vec<String>,
    pub stale_snapshots: Vec<StaleSnapshot>,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct StaleSnapshot {
    pub image: String,
    /// Age of the newest primary mirror snapshot; None when the image has none.
    pub age_seconds: Option<u64>,
    pub limit_seconds: u64,
}

impl Findings {
    pub fn note_images(&mut self, views: &[ImageView]) {
        let mut missing = Vec::new();
        for view in views {
            match view.placement {
                Placement::SplitBrain => self.split_brain.push(view.name.clone()),
                Placement::Conflict => self.conflicts.push(view.name.clone()),
                Placement::Missing => missing.push(view.name.clone()),
                _ => {}
            }
        }
        if !missing.is_empty() {
            self.waiting
                .push(format!("images not found on either site: {}", list(&missing)));
        }
    }

    /// A receiving site without a healthy rbd-mirror replicates nothing; deploying it is outside cephdr.
    pub fn note_daemons(&mut self, status: &RbdMirrorPoolStatus) {
        for daemon in &status.daemons {
            if daemon.health == status::DAEMON_NOT_RUNNING {
                self.waiting
                    .push(format!("no rbd-mirror daemon runs on site {}", daemon.site));
            } else if daemon.health == status::HEALTH_ERROR {
                self.waiting
                    .push(format!("rbd-mirror on site {} reports ERROR", daemon.site));
            }
        }
    }
}

/// Joins names, counting those past the first few.
fn list(names: &[String]) -> String {
    let shown = names.iter().take(LISTED).cloned().collect::<Vec<_>>().join(", ");
    match names.len().saturating_sub(LISTED) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// Ready, Synced and (when present) RpoMet all True: the pool needs looking at only now and then.
pub(super) fn healthy(conditions: &[Condition]) -> bool {
    let rpo_met = !conditions.iter().any(|c| c.type_ == RPO_MET) || is_true(conditions, RPO_MET);
    is_true(conditions, READY) && is_true(conditions, SYNCED) && rpo_met
}

/// The Events to publish, as `(reason, note)`, for what `current` reports and `previous` did not: once per
/// appearance, not on every reconcile while it lasts.
pub fn announcements(previous: &[Condition], current: &[Condition]) -> Vec<(&'static str, String)> {
    ANNOUNCED
        .iter()
        .filter(|(condition_reason, _)| !previous.iter().any(|c| c.reason == *condition_reason))
        .filter_map(|&(condition_reason, event_reason)| {
            let appeared = current.iter().find(|c| c.reason == condition_reason)?;
            Some((event_reason, appeared.message.clone()))
        })
        .collect()
}

pub(super) fn invalid_spec(problem: &str) -> Vec<Condition> {
    vec![
        condition(READY, false, reason::INVALID_SPEC, problem, None),
        condition(STALLED, true, reason::INVALID_SPEC, problem, None),
    ]
}

pub(super) fn converging(
    spec: &RbdMirrorPoolSpec,
    findings: &Findings,
    views: &[ImageView],
    status: &RbdMirrorPoolStatus,
    steps: &[SiteStep],
    tokens_needed: &[String],
) -> Vec<Condition> {
    let mut conditions = vec![
        ready(spec, findings, status, steps),
        reconciling(steps, tokens_needed),
    ];
    if let Some(stalled) = stalled(findings) {
        conditions.push(stalled);
    }
    conditions.push(synced(spec, findings, status));
    if let Some(rpo) = spec.rpo_seconds {
        conditions.push(rpo_met(rpo, views, status));
    }
    conditions
}

fn ready(
    spec: &RbdMirrorPoolSpec,
    findings: &Findings,
    status: &RbdMirrorPoolStatus,
    steps: &[SiteStep],
) -> Condition {
    let not_ready = |why: &str, message: String| condition(READY, false, why, message, None);
    if !findings.unreachable.is_empty() {
        return not_ready(
            reason::AGENT_UNREACHABLE,
            format!("cannot observe the pool on {}", findings.unreachable.join("; ")),
        );
    }
    if !findings.split_brain.is_empty() {
        return not_ready(reason::SPLIT_BRAIN, split_brain_message(&findings.split_brain));
    }
    if !findings.conflicts.is_empty() {
        return not_ready(reason::CONFLICT, conflict_message(&findings.conflicts));
    }
    if !steps.is_empty() {
        let shown: Vec<String> = steps.iter().map(SiteStep::to_string).collect();
        return not_ready(
            reason::PROGRESSING,
            format!("{} steps planned: {}", steps.len(), list(&shown)),
        );
    }
    if !findings.waiting.is_empty() {
        return not_ready(reason::WAITING_FOR_DEPENDENCY, findings.waiting.join("; "));
    }
    let images = status.images.len();
    let from = status.primary_site.as_deref().unwrap_or("both sites");
    condition(
        READY,
        true,
        reason::RECONCILED,
        format!("pool {} mirrors {images} images from {from}", spec.pool),
        None,
    )
}

fn split_brain_message(images: &[String]) -> String {
    format!(
        "images primary on both sites: {}; resolve with a FailoverRequest (action: resync)",
        list(images)
    )
}

fn conflict_message(images: &[String]) -> String {
    format!(
        "unmirrored images of the same name on both sites: {}; remove the stale copy",
        list(images)
    )
}

fn reconciling(steps: &[SiteStep], tokens_needed: &[String]) -> Condition {
    if steps.is_empty() && tokens_needed.is_empty() {
        condition(RECONCILING, false, reason::RECONCILED, "no changes needed", None)
    } else if steps.is_empty() {
        let message = format!("creating bootstrap tokens on {}", tokens_needed.join(", "));
        condition(RECONCILING, true, reason::PROGRESSING, message, None)
    } else {
        condition(
            RECONCILING,
            true,
            reason::PROGRESSING,
            format!("applying {} steps", steps.len()),
            None,
        )
    }
}

/// Split brain and same-name conflicts need a person: cephdr never picks which copy loses its writes.
fn stalled(findings: &Findings) -> Option<Condition> {
    if !findings.split_brain.is_empty() {
        Some(condition(
            STALLED,
            true,
            reason::SPLIT_BRAIN,
            split_brain_message(&findings.split_brain),
            None,
        ))
    } else if !findings.conflicts.is_empty() {
        Some(condition(
            STALLED,
            true,
            reason::CONFLICT,
            conflict_message(&findings.conflicts),
            None,
        ))
    } else {
        None
    }
}

fn synced(spec: &RbdMirrorPoolSpec, findings: &Findings, status: &RbdMirrorPoolStatus) -> Condition {
    if !findings.split_brain.is_empty() {
        return condition(
            SYNCED,
            false,
            reason::SPLIT_BRAIN,
            split_brain_message(&findings.split_brain),
            None,
        );
    }
    if !findings.stale_snapshots.is_empty() {
        let described: Vec<String> = findings.stale_snapshots.iter().map(describe_stale).collect();
        let message = format!("mirror snapshots stale: {}", list(&described));
        return condition(SYNCED, false, SNAPSHOTS_STALE, message, None);
    }
    let behind: Vec<String> = status
        .images
        .iter()
        .filter(|image| !status::is_caught_up(image, spec.rpo_seconds))
        .map(
            |image| match (image.lag_seconds, status::lag_above(image, spec.rpo_seconds)) {
                (Some(lag), true) => format!("{} lags {lag}s", image.name),
                _ => format!("{} is {}", image.name, image.state),
            },
        )
        .collect();
    if behind.is_empty() {
        let message = format!("{} images replaying", status.images.len());
        condition(SYNCED, true, reason::CAUGHT_UP, message, None)
    } else {
        condition(SYNCED, false, reason::BEHIND, list(&behind), None)
    }
}

fn describe_stale(stale: &StaleSnapshot) -> String {
    match stale.age_seconds {
        Some(age) => format!(
            "{} newest {age}s old (limit {}s)",
            stale.image, stale.limit_seconds
        ),
        None => format!("{} has no mirror snapshot", stale.image),
    }
}

/// The recovery point of snapshot-mode images: a copy that never synced counts as the worst lag.
fn rpo_met(rpo: u32, views: &[ImageView], status: &RbdMirrorPoolStatus) -> Condition {
    let worst = views
        .iter()
        .zip(&status.images)
        .filter(|(view, _)| view.primary_mode() == Some(ImageMirrorMode::Snapshot))
        .max_by_key(|(_, image)| image.lag_seconds.unwrap_or(u64::MAX));
    match worst {
        Some((_, image)) if image.lag_seconds.is_none_or(|lag| lag > u64::from(rpo)) => {
            let message = match image.lag_seconds {
                Some(lag) => format!("{} lags {lag}s, above the {rpo}s target", image.name),
                None => format!("{} has no synced copy yet (target {rpo}s)", image.name),
            };
            condition(RPO_MET, false, reason::LAG_ABOVE_TARGET, message, None)
        }
        Some((_, image)) => {
            let lag = image.lag_seconds.unwrap_or_default();
            let message = format!("largest lag {lag}s ({}) within the {rpo}s target", image.name);
            condition(RPO_MET, true, reason::LAG_WITHIN_TARGET, message, None)
        }
        None => condition(
            RPO_MET,
            true,
            reason::LAG_WITHIN_TARGET,
            "no snapshot-mode images lag",
            None,
        ),
    }
}

/// While deleting, Ready says what the cleanup still waits for.
pub(super) fn deleting(
    policy: DeletionPolicy,
    unreachable: &[String],
    steps: &[SiteStep],
    cleanup_complete: bool,
) -> Vec<Condition> {
    let (why, message) = match policy {
        DeletionPolicy::Retain => (
            reason::PROGRESSING,
            "being deleted; deletionPolicy Retain leaves Ceph as it is".to_string(),
        ),
        DeletionPolicy::Delete if !unreachable.is_empty() => (
            reason::AGENT_UNREACHABLE,
            format!(
                "being deleted; cannot undo mirroring on {} (set deletionPolicy: Retain to leave it)",
                unreachable.join("; ")
            ),
        ),
        DeletionPolicy::Delete if cleanup_complete => (
            reason::PROGRESSING,
            "being deleted; mirroring undone on both sites".to_string(),
        ),
        DeletionPolicy::Delete => (
            reason::PROGRESSING,
            format!("being deleted; undoing mirroring ({} steps)", steps.len()),
        ),
    };
    vec![
        condition(READY, false, why, message, None),
        reconciling(steps, &[]),
    ]
}
