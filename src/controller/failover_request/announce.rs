//! What a request's status change tells humans and dashboards: an Event per phase transition (and when a
//! request starts waiting behind another or leaves images to resync), the failover duration metric; and
//! which requests go first when several target the same pool or realm. Pure but for `announce`.

use kube::{runtime::events::EventType, ResourceExt};

use super::plan::{BLOCKED, RESYNC_REQUIRED};
use crate::{
    api::{
        conditions::{self, READY, STALLED},
        FailoverPhase, FailoverRequest, FailoverRequestSpec, FailoverRequestStatus,
    },
    controller::{apply::publish_event, context::Context},
};

/// Event reasons.
pub mod reason {
    pub const STARTED: &str = "FailoverStarted";
    pub const PROGRESSING: &str = "FailoverProgressing";
    pub const COMPLETED: &str = "FailoverCompleted";
    pub const FAILED: &str = "FailoverFailed";
    pub const BLOCKED: &str = "FailoverBlocked";
    pub const RESYNC_REQUIRED: &str = "ResyncRequired";
}

/// Metric outcomes.
const COMPLETED: &str = "completed";
const FAILED: &str = "failed";

/// Publishes the Events and records the metric for a change from `before` to `after`.
pub(super) async fn announce(
    ctx: &Context,
    request: &FailoverRequest,
    before: &FailoverRequestStatus,
    after: &FailoverRequestStatus,
) {
    for notice in notices(&request.spec, before, after) {
        publish_event(ctx, request, notice.type_, notice.reason, "Failover", notice.note).await;
    }
    if let Some((outcome, seconds)) = finished(&request.spec, before, after) {
        ctx.metrics
            .failover_finished(request.spec.action.as_str(), outcome, seconds);
    }
}

#[derive(Debug)]
pub(super) struct Notice {
    pub type_: EventType,
    pub reason: &'static str,
    pub note: String,
}

fn message<'a>(status: &'a FailoverRequestStatus, type_: &str) -> &'a str {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map_or("", |c| c.message.as_str())
}

fn newly_true(before: &FailoverRequestStatus, after: &FailoverRequestStatus, type_: &str) -> bool {
    conditions::is_true(&after.conditions, type_) && !conditions::is_true(&before.conditions, type_)
}

/// The Events a status change deserves.
pub(super) fn notices(
    spec: &FailoverRequestSpec,
    before: &FailoverRequestStatus,
    after: &FailoverRequestStatus,
) -> Vec<Notice> {
    let mut notices = Vec::new();
    let notice = |type_, reason, note: String| Notice { type_, reason, note };
    let (from, to) = (before.phase, after.phase);
    if from != to {
        let what = format!("{} to site {}", spec.action.as_str(), spec.target_site);
        notices.push(match to {
            FailoverPhase::Completed => {
                notice(EventType::Normal, reason::COMPLETED, message(after, READY).into())
            }
            FailoverPhase::Failed => {
                notice(EventType::Warning, reason::FAILED, message(after, STALLED).into())
            }
            _ if from == FailoverPhase::Pending => notice(
                EventType::Normal,
                reason::STARTED,
                format!("{what} started, now {to:?}: {}", message(after, READY)),
            ),
            _ => notice(
                EventType::Normal,
                reason::PROGRESSING,
                format!("{what}: {from:?} → {to:?}: {}", message(after, READY)),
            ),
        });
    }
    if newly_true(before, after, BLOCKED) {
        notices.push(notice(
            EventType::Normal,
            reason::BLOCKED,
            message(after, BLOCKED).into(),
        ));
    }
    if newly_true(before, after, RESYNC_REQUIRED) {
        let note = message(after, RESYNC_REQUIRED).into();
        notices.push(notice(EventType::Warning, reason::RESYNC_REQUIRED, note));
    }
    notices
}

/// The metric outcome and duration of a request that just finished (dry runs are not failovers).
pub(super) fn finished(
    spec: &FailoverRequestSpec,
    before: &FailoverRequestStatus,
    after: &FailoverRequestStatus,
) -> Option<(&'static str, f64)> {
    if spec.dry_run || before.phase.is_terminal() || !after.phase.is_terminal() {
        return None;
    }
    let outcome = match after.phase {
        FailoverPhase::Completed => COMPLETED,
        _ => FAILED,
    };
    let seconds = match (&after.started_at, &after.completed_at) {
        (Some(start), Some(end)) => end.0.duration_since(start.0).as_secs_f64().max(0.0),
        _ => 0.0,
    };
    Some((outcome, seconds))
}

/// Other requests of the namespace that share a pool or realm with `request` and go first: not finished,
/// not dry runs, and started already, or created earlier while both wait (the name breaks ties). The order
/// is total, so of two waiting requests exactly one goes first.
pub(super) fn blocking_requests(request: &FailoverRequest, others: &[FailoverRequest]) -> Vec<String> {
    let order = |r: &FailoverRequest| {
        let waiting = r
            .status
            .as_ref()
            .is_none_or(|s| s.phase == FailoverPhase::Pending);
        let created = r.metadata.creation_timestamp.as_ref().map(|t| t.0);
        (waiting, created, r.name_any())
    };
    let mut names: Vec<String> = others
        .iter()
        .filter(|other| other.namespace() == request.namespace() && other.name_any() != request.name_any())
        .filter(|other| !other.spec.dry_run)
        .filter(|other| other.status.as_ref().is_none_or(|s| !s.phase.is_terminal()))
        .filter(|other| other.spec.targets.overlap(&request.spec.targets) && order(other) < order(request))
        .map(|other| other.name_any())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        apimachinery::pkg::apis::meta::v1::Time,
        jiff::{SignedDuration, Timestamp},
    };

    use super::*;
    use crate::api::{conditions::condition, FailoverAction};

    fn spec(pools: &[&str], realms: &[&str]) -> FailoverRequestSpec {
        serde_json::from_value(serde_json::json!({
            "action": "planned", "targetSite": "site-b",
            "targets": {"rbdMirrorPools": pools, "realms": realms},
        }))
        .expect("valid spec")
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH + SignedDuration::from_secs(seconds)
    }

    fn req(
        name: &str,
        created: i64,
        phase: Option<FailoverPhase>,
        spec: FailoverRequestSpec,
    ) -> FailoverRequest {
        let mut request = FailoverRequest::new(name, spec);
        request.metadata.namespace = Some("dr".into());
        request.metadata.creation_timestamp = Some(Time(at(created)));
        request.status = phase.map(|phase| FailoverRequestStatus {
            phase,
            ..FailoverRequestStatus::default()
        });
        request
    }

    #[test]
    fn of_two_waiting_requests_on_one_pool_the_older_goes_first() {
        let older = req("older", 10, None, spec(&["rbd"], &[]));
        let newer = req("newer", 20, None, spec(&["rbd"], &[]));
        let all = [older.clone(), newer.clone()];
        assert!(blocking_requests(&older, &all).is_empty());
        assert_eq!(blocking_requests(&newer, &all), ["older"]);
    }

    #[test]
    fn a_started_request_goes_before_an_older_waiting_one_and_a_finished_one_blocks_nothing() {
        let waiting = req("waiting", 10, Some(FailoverPhase::Pending), spec(&[], &["prod"]));
        let running = req(
            "running",
            20,
            Some(FailoverPhase::Syncing),
            spec(&["rbd"], &["prod"]),
        );
        let done = req("done", 5, Some(FailoverPhase::Completed), spec(&[], &["prod"]));
        let all = [waiting.clone(), running.clone(), done];
        assert_eq!(blocking_requests(&waiting, &all), ["running"]);
        assert!(blocking_requests(&running, &all).is_empty());
    }

    #[test]
    fn requests_on_other_targets_and_dry_runs_never_block() {
        let mine = req("mine", 30, None, spec(&["rbd"], &[]));
        let other_pool = req(
            "other",
            10,
            Some(FailoverPhase::Demoting),
            spec(&["logs"], &["prod"]),
        );
        let mut dry = spec(&["rbd"], &[]);
        dry.dry_run = true;
        let dry_run = req("dry", 10, None, dry);
        assert!(blocking_requests(&mine, &[mine.clone(), other_pool, dry_run]).is_empty());
    }

    fn status(phase: FailoverPhase, conditions: &[(&str, bool, &str)]) -> FailoverRequestStatus {
        FailoverRequestStatus {
            phase,
            started_at: Some(Time(at(100))),
            completed_at: phase.is_terminal().then(|| Time(at(112))),
            conditions: conditions
                .iter()
                .map(|(type_, value, message)| condition(type_, *value, "Reason", *message, None))
                .collect(),
            ..FailoverRequestStatus::default()
        }
    }

    #[test]
    fn every_phase_transition_gets_one_event_and_a_finished_request_its_duration() {
        let spec = spec(&["rbd"], &[]);
        let pending = status(FailoverPhase::Pending, &[]);
        let demoting = status(
            FailoverPhase::Demoting,
            &[(READY, false, "Demoting: running 1 step(s)")],
        );
        let started = notices(&spec, &pending, &demoting);
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].reason, reason::STARTED);
        assert!(
            started[0]
                .note
                .contains("planned to site site-b started, now Demoting"),
            "{}",
            started[0].note
        );
        assert!(
            notices(&spec, &demoting, &demoting).is_empty(),
            "no change, no Event"
        );

        let failed = status(FailoverPhase::Failed, &[(STALLED, true, "promote failed")]);
        let events = notices(&spec, &demoting, &failed);
        assert_eq!(
            (events[0].reason, events[0].note.as_str()),
            (reason::FAILED, "promote failed")
        );
        assert!(matches!(events[0].type_, EventType::Warning));
        assert_eq!(finished(&spec, &demoting, &failed), Some((FAILED, 12.0)));
        assert_eq!(finished(&spec, &failed, &failed), None, "recorded once");
    }

    #[test]
    fn a_request_that_starts_waiting_or_leaves_a_resync_says_so_once() {
        let mut spec = spec(&["rbd"], &[]);
        spec.action = FailoverAction::Emergency;
        let pending = status(FailoverPhase::Pending, &[]);
        let blocked = status(FailoverPhase::Pending, &[(BLOCKED, true, "waiting for older")]);
        let reasons = |events: Vec<Notice>| events.into_iter().map(|e| e.reason).collect::<Vec<_>>();
        assert_eq!(reasons(notices(&spec, &pending, &blocked)), [reason::BLOCKED]);
        assert!(notices(&spec, &blocked, &blocked).is_empty());

        let verifying = status(FailoverPhase::Verifying, &[]);
        let completed = status(
            FailoverPhase::Completed,
            &[(READY, true, "done"), (RESYNC_REQUIRED, true, "resync site-a")],
        );
        assert_eq!(
            reasons(notices(&spec, &verifying, &completed)),
            [reason::COMPLETED, reason::RESYNC_REQUIRED]
        );
        spec.dry_run = true;
        assert_eq!(
            finished(&spec, &verifying, &completed),
            None,
            "a dry run is no failover"
        );
    }
}
