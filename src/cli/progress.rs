//! What `cephdr failover watch` prints as one request changes: the plan when it appears, each row's new
//! state, phase changes, and the conditions a human acts on. Pure: successive objects in, lines out.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;

use super::Error;
use crate::{
    api::{
        conditions::{self, find as condition, READY, STALLED},
        failover_request::{StepState, StepStatus},
        FailoverPhase, FailoverRequest, FailoverRequestStatus,
    },
    controller::failover_request::plan::{BLOCKED, RESYNC_REQUIRED, SITE_UNREACHABLE},
};

/// The last version of the request seen; lines describe what changed since.
#[derive(Default)]
pub(super) struct Progress {
    seen: Option<FailoverRequestStatus>,
}

impl Progress {
    pub fn update(&mut self, request: &FailoverRequest) -> Vec<String> {
        let after = request.status.clone().unwrap_or_default();
        let first = self.seen.is_none();
        let before = self.seen.replace(after.clone()).unwrap_or_default();
        let mut lines = Vec::new();
        if first {
            lines.push(header(request));
        }
        if before.steps.is_empty() && !after.steps.is_empty() {
            lines.push(format!("plan: {} step(s)", after.steps.len()));
        }
        let changed: Vec<&StepStatus> = after
            .steps
            .iter()
            .enumerate()
            .filter(|(i, row)| {
                let was = before.steps.get(*i).map_or(StepState::Pending, |b| b.state);
                was != row.state
            })
            .map(|(_, row)| row)
            .collect();
        let widths = widths(&after.steps);
        // Rows that finished belong to the phase being left, rows that started to the phase entered.
        let (settled, started): (Vec<_>, Vec<_>) = changed.into_iter().partition(|r| r.state.is_settled());
        lines.extend(settled.into_iter().map(|row| step_line(row, widths)));
        if first || before.phase != after.phase {
            lines.push(format!("phase {:?}", after.phase));
        }
        lines.extend(started.into_iter().map(|row| step_line(row, widths)));
        for type_ in [BLOCKED, SITE_UNREACHABLE, RESYNC_REQUIRED] {
            let was = conditions::is_true(&before.conditions, type_);
            if let Some(now) = true_condition(&after.conditions, type_).filter(|_| !was) {
                lines.push(format!("{type_}: {}", now.message));
            }
        }
        if after.phase == FailoverPhase::Completed && before.phase != FailoverPhase::Completed {
            if let Some(ready) = true_condition(&after.conditions, READY) {
                lines.push(format!("Completed: {}", ready.message));
            }
            if let Some(window) = after.data_loss_window_seconds {
                lines.push(format!("data loss window: {window} s"));
            }
        }
        lines
    }
}

/// How the request ended: `None` while it runs, the failure's reason and message when it failed.
pub(super) fn finished(request: &FailoverRequest) -> Option<Result<(), Error>> {
    let status = request.status.as_ref()?;
    match status.phase {
        FailoverPhase::Completed => Some(Ok(())),
        FailoverPhase::Failed => {
            let why = condition(&status.conditions, STALLED).or_else(|| condition(&status.conditions, READY));
            Some(Err(Error::Failed {
                namespace: request.namespace().unwrap_or_default(),
                name: request.name_any(),
                reason: why.map_or_else(|| "Unknown".to_string(), |c| c.reason.clone()),
                message: why.map(|c| c.message.clone()).unwrap_or_default(),
            }))
        }
        _ => None,
    }
}

fn header(request: &FailoverRequest) -> String {
    let spec = &request.spec;
    let mut targets = Vec::new();
    if !spec.targets.rbd_mirror_pools.is_empty() {
        targets.push(format!("pools {}", spec.targets.rbd_mirror_pools.join(", ")));
    }
    if !spec.targets.realms.is_empty() {
        targets.push(format!("realms {}", spec.targets.realms.join(", ")));
    }
    let dry_run = if spec.dry_run { " (dry run)" } else { "" };
    format!(
        "FailoverRequest {}/{}: {}{dry_run} to site {}, {}",
        request.namespace().unwrap_or_default(),
        request.name_any(),
        spec.action.as_str(),
        spec.target_site,
        targets.join("; ")
    )
}

fn true_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    condition(conditions, type_).filter(|c| c.status == "True")
}

/// Widths of the name and target columns: every row of the plan fits, so lines align as they come.
fn widths(rows: &[StepStatus]) -> (usize, usize) {
    rows.iter().fold((0, 0), |(name, target), row| {
        (name.max(row.name.len()), target.max(row.target.len()))
    })
}

/// One row: what, on what, its state and when it got there (status keeps whole seconds, UTC).
fn step_line(row: &StepStatus, (name_width, target_width): (usize, usize)) -> String {
    let when = match row.state {
        StepState::Pending => None,
        StepState::Running => row.started_at.as_ref(),
        StepState::Done | StepState::Failed | StepState::Skipped => row.finished_at.as_ref(),
    };
    let when = when.map_or_else(String::new, |t| format!(" at {}", t.0.strftime("%H:%M:%SZ")));
    let message = match (&row.message, row.state) {
        (Some(message), StepState::Failed | StepState::Skipped) => format!(": {message}"),
        _ => String::new(),
    };
    format!(
        "  {:<name_width$}   {:<target_width$}   {}{when}{message}",
        row.name,
        row.target,
        row.state.as_str()
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        apimachinery::pkg::apis::meta::v1::Time,
        jiff::{SignedDuration, Timestamp},
    };

    use super::*;
    use crate::{
        api::conditions::condition as make, cli::fixtures::request,
        controller::failover_request::plan::DRY_RUN,
    };

    fn at(seconds: i64) -> Time {
        Time(Timestamp::UNIX_EPOCH + SignedDuration::from_secs(seconds))
    }

    #[test]
    fn each_row_is_printed_when_its_state_changes_in_the_phase_it_belongs_to() {
        use FailoverPhase::{Completed, Demoting, Syncing};
        use StepState::{Done, Pending, Running};
        let mut progress = Progress::default();
        let pending = request("move", FailoverPhase::Pending, &[]);
        assert_eq!(
            progress.update(&pending),
            [
                "FailoverRequest dr/move: planned to site site-b, pools rbd",
                "phase Pending"
            ]
        );
        assert!(progress.update(&pending).is_empty(), "no change, no line");

        let demoting = request("move", Demoting, &[Running, Pending, Pending]);
        assert_eq!(
            progress.update(&demoting),
            [
                "plan: 3 step(s)",
                "phase Demoting",
                "  demote       rbd/db@site-a   running"
            ]
        );
        let mut syncing = request("move", Syncing, &[Done, Running, Pending]);
        let demote = &mut syncing.status.as_mut().unwrap().steps[0];
        (demote.started_at, demote.finished_at) = (Some(at(3600)), Some(at(3661)));
        assert_eq!(
            progress.update(&syncing),
            [
                "  demote       rbd/db@site-a   done at 01:01:01Z",
                "phase Syncing",
                "  await-sync   rbd/db@site-b   running"
            ]
        );
        let completed = request("move", Completed, &[Done, Done, Done]);
        assert_eq!(
            progress.update(&completed),
            [
                "  await-sync   rbd/db@site-b   done",
                "  promote      rbd/db@site-b   done",
                "phase Completed",
                "Completed: planned failover to site site-b completed in 3.2 s"
            ]
        );
        assert!(matches!(finished(&completed), Some(Ok(()))));
    }

    #[test]
    fn a_request_seen_midway_shows_where_it_is_and_a_blocked_one_says_why_once() {
        use StepState::*;
        let mut progress = Progress::default();
        let mut blocked = request("move", FailoverPhase::Pending, &[]);
        blocked.status.as_mut().unwrap().conditions = vec![make(
            BLOCKED,
            true,
            "BlockedByRequest",
            "waiting for FailoverRequests first",
            None,
        )];
        let lines = progress.update(&blocked);
        assert_eq!(
            lines.last().map(String::as_str),
            Some("Blocked: waiting for FailoverRequests first")
        );
        assert!(progress.update(&blocked).is_empty());

        let mut late = Progress::default();
        let lines = late.update(&request(
            "move",
            FailoverPhase::Promoting,
            &[Done, Skipped, Running],
        ));
        assert_eq!(
            lines[1..],
            [
                "plan: 3 step(s)",
                "  demote       rbd/db@site-a   done",
                "  await-sync   rbd/db@site-b   skipped",
                "phase Promoting",
                "  promote      rbd/db@site-b   running",
            ]
        );
    }

    #[test]
    fn a_failed_request_ends_with_its_reason_and_the_failed_row_says_why() {
        let mut failed = request(
            "move",
            FailoverPhase::Failed,
            &[StepState::Done, StepState::Failed],
        );
        let status = failed.status.as_mut().unwrap();
        status.steps[1].message = Some("site-b refused".into());
        status.conditions = vec![make(STALLED, true, "StepFailed", "await-sync failed", None)];
        let lines = Progress::default().update(&failed);
        assert!(
            lines.contains(&"  await-sync   rbd/db@site-b   failed: site-b refused".to_string()),
            "{lines:?}"
        );
        let Some(Err(error)) = finished(&failed) else {
            panic!("a failed request ends with an error");
        };
        assert_eq!(
            error.to_string(),
            "FailoverRequest dr/move failed (StepFailed): await-sync failed"
        );
        assert!(finished(&request("move", FailoverPhase::Syncing, &[])).is_none());
        let mut dry = request("what-if", FailoverPhase::Pending, &[]);
        dry.status.as_mut().unwrap().conditions = vec![make(DRY_RUN, true, "DryRun", "listed", None)];
        assert!(finished(&dry).is_none(), "a listed dry run has not finished");
    }
}
