//! Writing one call's outcome into the status: phase, figures, conditions and when to look again.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::{
    ledger::{Ledger, Target, Task},
    plan::{reason, Ctx, Outcome, Run, Transition, BLOCKED, DRY_RUN, RESYNC_REQUIRED, SITE_UNREACHABLE},
};
use crate::api::{
    conditions::{self, reason as common_reason},
    failover_request::{FailoverAction, FailoverPhase, FailoverRequestStatus, StepState},
    rbd_mirror_pool::ReplicationEngine,
};

const REQUEUE_AFTER_STEPS: Duration = Duration::from_secs(2);
/// Nothing to wait for: the next call only reads more.
const REQUEUE_READ_MORE: Duration = Duration::ZERO;
const REQUEUE_WAITING: Duration = Duration::from_secs(5);
const REQUEUE_BLOCKED: Duration = Duration::from_secs(15);
const REQUEUE_DRY_RUN: Duration = Duration::from_secs(1);
/// Terminal requests plan nothing; an occasional look costs nothing.
const REQUEUE_IDLE: Duration = Duration::from_secs(3600);

pub(super) fn unchanged(status: &FailoverRequestStatus) -> Transition {
    Transition {
        status: status.clone(),
        steps: Vec::new(),
        then: Vec::new(),
        checks: Vec::new(),
        handovers: Vec::new(),
        requeue: REQUEUE_IDLE,
    }
}

/// Writes the outcome into the status: phase, figures, conditions and requeue.
pub(super) fn conclude(ctx: &Ctx, run: Run, outcome: Outcome) -> Transition {
    let Run {
        mut status,
        mut ledger,
        steps,
        then,
        checks,
        handovers,
    } = run;
    if matches!(outcome, Outcome::Unchanged) {
        return unchanged(&status);
    }
    let now = ctx.now;
    let condition = |type_: &str, value: bool, reason: &str, message: &str| {
        conditions::condition(type_, value, reason, message, None)
    };
    let (mut desired, requeue) = match &outcome {
        Outcome::Unchanged | Outcome::Completed | Outcome::Failed(_) => (Vec::new(), REQUEUE_IDLE),
        Outcome::DryRunListed => {
            let message = format!(
                "dry run: {} step(s) planned in status.steps; nothing runs",
                ledger.rows().len()
            );
            let desired = running_conditions(common_reason::PROGRESSING, &message);
            (desired, REQUEUE_DRY_RUN)
        }
        Outcome::Blocked => {
            let names = ctx.observed.blocking_requests.join(", ");
            let message =
                format!("waiting for FailoverRequests {names}, which started earlier on the same targets");
            let mut desired = running_conditions(common_reason::WAITING_FOR_DEPENDENCY, &message);
            desired.push(condition(BLOCKED, true, reason::BLOCKED_BY_REQUEST, &message));
            (desired, REQUEUE_BLOCKED)
        }
        Outcome::Working { message } => {
            let requeue = if steps.is_empty() && then.is_empty() && checks.is_empty() && handovers.is_empty()
            {
                REQUEUE_WAITING
            } else {
                REQUEUE_AFTER_STEPS
            };
            (running_conditions(common_reason::PROGRESSING, message), requeue)
        }
        Outcome::ReadEveryImage => {
            let message = format!("{:?}: reading every image of the plan", status.phase);
            (
                running_conditions(common_reason::PROGRESSING, &message),
                REQUEUE_READ_MORE,
            )
        }
        Outcome::Unreachable {
            site,
            reason,
            error,
            for_seconds,
            gives_up,
        } => {
            let retrying = if *gives_up {
                format!("retrying for up to {} s", ctx.unreachable_timeout())
            } else {
                format!(
                    "site {} may already have taken over, so the request waits for site {site} to come \
                     back (delete the request to give up)",
                    ctx.target()
                )
            };
            let message = format!(
                "site {site} unreachable for {for_seconds} s during {:?}; {retrying}: {error}",
                status.phase
            );
            let mut desired = running_conditions(reason, &message);
            desired.push(condition(SITE_UNREACHABLE, true, reason, &message));
            (desired, Duration::from_secs((for_seconds / 4).clamp(5, 60)))
        }
    };
    match outcome {
        Outcome::Failed(failure) => {
            ledger.fail_running(now, &format!("not confirmed: {}", failure.message), None);
            status.phase = FailoverPhase::Failed;
            status.completed_at = Some(Time(now));
            desired.push(condition(
                conditions::READY,
                false,
                failure.reason,
                &failure.message,
            ));
            desired.push(condition(
                conditions::RECONCILING,
                false,
                failure.reason,
                &failure.message,
            ));
            desired.push(condition(
                conditions::STALLED,
                true,
                failure.reason,
                &failure.message,
            ));
        }
        Outcome::Completed => {
            status.phase = FailoverPhase::Completed;
            status.completed_at = Some(Time(now));
            if !ctx.spec.dry_run {
                status.rto_seconds = status
                    .started_at
                    .as_ref()
                    .map(|t| now.duration_since(t.0).as_secs_f64());
            }
            let message = completion_message(ctx, &status, &ledger);
            desired.push(condition(
                conditions::READY,
                true,
                common_reason::RECONCILED,
                &message,
            ));
            desired.push(condition(
                conditions::RECONCILING,
                false,
                common_reason::RECONCILED,
                &message,
            ));
            desired.push(condition(
                conditions::STALLED,
                false,
                common_reason::RECONCILED,
                &message,
            ));
            if let Some(message) = resync_required(ctx, &ledger) {
                desired.push(condition(RESYNC_REQUIRED, true, reason::FORCE_PROMOTED, &message));
            }
        }
        _ => {}
    }
    if ctx.spec.dry_run {
        let message = match status.phase {
            FailoverPhase::Pending => "dry run: the plan is listed in status.steps; nothing runs",
            _ => "dry run: nothing was changed",
        };
        desired.push(condition(DRY_RUN, true, reason::DRY_RUN, message));
    }
    status.steps = ledger.into_rows();
    status.conditions = conditions::merge(&status.conditions, desired, now);
    Transition {
        status,
        steps,
        then,
        checks,
        handovers,
        requeue,
    }
}

fn running_conditions(reason: &str, message: &str) -> Vec<Condition> {
    vec![
        conditions::condition(conditions::READY, false, reason, message, None),
        conditions::condition(conditions::RECONCILING, true, reason, message, None),
        conditions::condition(conditions::STALLED, false, reason, message, None),
    ]
}

fn completion_message(ctx: &Ctx, status: &FailoverRequestStatus, ledger: &Ledger) -> String {
    let target = ctx.target();
    if ctx.spec.dry_run {
        return "dry run: nothing was changed".to_string();
    }
    let rto = status
        .rto_seconds
        .map(|s| format!(" in {s:.1} s"))
        .unwrap_or_default();
    match ctx.action() {
        FailoverAction::Planned => format!("planned failover to site {target} completed{rto}"),
        FailoverAction::Emergency => format!("emergency failover to site {target} completed{rto}"),
        FailoverAction::Failback => format!("failback to site {target} completed{rto}"),
        FailoverAction::Resync => format!("resync from site {target} completed{rto}"),
        FailoverAction::Drill => {
            let matched = (0..ledger.entries().len())
                .filter(|&i| ledger.entry(i).task == Task::VerifyCopy && ledger.state(i) == StepState::Done)
                .count();
            let checked = match (matched, status.check_seconds) {
                (0, _) => String::new(),
                (n, Some(seconds)) => {
                    format!(": {n} image copy(ies) match their primary snapshot by checksum ({seconds:.1} s)")
                }
                (n, None) => format!(": {n} image copy(ies) match their primary snapshot by checksum"),
            };
            let rpo = status
                .measured_rpo_seconds
                .map(|rpo| format!("; measured RPO {rpo} s"))
                .unwrap_or_default();
            format!("drill on site {target} completed{checked}{rpo}")
        }
    }
}

/// After an emergency, the pools with force-promoted images need the old primary resynced.
fn resync_required(ctx: &Ctx, ledger: &Ledger) -> Option<String> {
    if ctx.action() != FailoverAction::Emergency {
        return None;
    }
    let mut pools: Vec<&str> = Vec::new();
    for (i, entry) in ledger.entries().iter().enumerate() {
        if let (Task::ForcePromote, Target::Image { pool, .. }, StepState::Done) =
            (entry.task, &entry.target, ledger.state(i))
        {
            if !pools.contains(&pool.as_str()) {
                pools.push(pool);
            }
        }
    }
    let delta_sync = |pool: &&str| {
        ctx.observed
            .pools
            .iter()
            .any(|p| p.spec.pool == *pool && p.spec.engine == ReplicationEngine::DeltaSync)
    };
    let (copied, mirrored): (Vec<&str>, Vec<&str>) = pools.into_iter().partition(delta_sync);
    let target = ctx.target();
    let mut parts = Vec::new();
    if !mirrored.is_empty() {
        parts.push(format!(
            "images of pool(s) {} were force-promoted on site {target}: the other site's copies must be \
             resynced; create a failback FailoverRequest once it is back",
            mirrored.join(", ")
        ));
    }
    if !copied.is_empty() {
        parts.push(format!(
            "delta-sync pool(s) {} were promoted on site {target}: once the other site is back, its receiver \
             refuses deltas onto images written after the last point it shipped; roll those back to the \
             newest sync snapshot both sites hold (rbd snap rollback) to resume (failback of delta-sync \
             pools is not built)",
            copied.join(", ")
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}
