//! RBD pools, one behaviour per test: each action driven to its end against the simulated sites.

use std::time::Duration;

use super::{image_of, request, row_of, start_time, Lab, Request, SpecExt, A, B, POOL};
use crate::{
    agent::{AgentError, ImageMirrorMode, Step},
    api::{
        conditions::{reason as common, READY, STALLED},
        failover_request::{FailoverAction, FailoverPhase, FailoverRequestSpec, StepState, StepStatus},
    },
    controller::failover_request::plan::{
        needs_site, next, reason, BLOCKED, DRY_RUN, RESYNC_REQUIRED, SITE_UNREACHABLE,
    },
    plan::SiteStep,
};

fn snapshots() -> Lab {
    Lab::new().with_pool(&["db"], ImageMirrorMode::Snapshot)
}

/// Site A went down `after` the last snapshot reached B; B was force-promoted by an emergency request, then A
/// came back: both are primary.
fn after_emergency(after: Duration) -> Lab {
    let lab = snapshots();
    lab.clock.advance(after);
    lab.world.set_down(A, true);
    let mut emergency = Request::new(request(FailoverAction::Emergency, B));
    lab.run_to_end(&mut emergency);
    assert_eq!(emergency.status.phase, FailoverPhase::Completed);
    lab.world.set_down(A, false);
    assert_eq!(lab.primaries("db"), [A, B], "split brain once A is back");
    lab
}

fn failure_reason(req: &Request) -> String {
    req.condition(STALLED)
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

#[test]
fn planned_failover_demotes_the_source_waits_for_the_demotion_then_promotes_the_target() {
    let lab = snapshots();
    let mut req = Request::new(request(FailoverAction::Planned, B));
    lab.run_to_end(&mut req);

    assert_eq!(req.status.phase, FailoverPhase::Completed);
    assert_eq!(req.ran(), ["demote rbd/db@site-a", "promote rbd/db@site-b"]);
    assert_eq!(
        req.rows(),
        [
            "demote rbd/db@site-a done",
            "await-sync rbd/db@site-b done",
            "promote rbd/db@site-b done"
        ]
    );
    assert_eq!(lab.primaries("db"), [B]);
    let rto = req.status.rto_seconds.expect("RTO reported");
    assert!(
        rto >= super::LAG.as_secs_f64(),
        "the promote waited for the demotion to arrive: {rto}"
    );
    assert!(req.is_true(READY));
    assert!(
        req.handed_out.iter().all(|steps| steps.len() <= 1),
        "one image, one step at a time: {:?}",
        req.handed_out
    );
}

#[test]
fn planned_failover_of_journal_images_promotes_once_the_target_replayed_the_demotion() {
    let lab = Lab::new().with_pool(&["db", "logs"], ImageMirrorMode::Journal);
    let mut req = Request::new(request(FailoverAction::Planned, B));
    lab.run_to_end(&mut req);

    assert_eq!(req.status.phase, FailoverPhase::Completed, "{:#?}", req.status);
    assert_eq!(lab.primaries("db"), [B]);
    assert_eq!(lab.primaries("logs"), [B]);
    assert!(!req
        .ran
        .iter()
        .any(|s| matches!(s.step, Step::PromoteImage { force: true, .. })));
}

#[test]
fn planned_failover_refuses_to_start_while_the_copy_lags_more_than_max_lag() {
    let lab = snapshots();
    lab.clock.advance(Duration::from_secs(120));
    let mut req = Request::new(request(FailoverAction::Planned, B).max_lag(60));
    lab.run_to_end(&mut req);

    assert_eq!(req.status.phase, FailoverPhase::Failed);
    assert_eq!(failure_reason(&req), common::LAG_ABOVE_TARGET);
    assert!(req.ran.is_empty());
    assert_eq!(lab.primaries("db"), [A]);
}

#[test]
fn planned_failover_within_max_lag_goes_ahead() {
    let lab = snapshots();
    lab.clock.advance(Duration::from_secs(30));
    let mut req = Request::new(request(FailoverAction::Planned, B).max_lag(60));
    lab.run_to_end(&mut req);
    assert_eq!(req.status.phase, FailoverPhase::Completed);
}

#[test]
fn planned_failover_to_the_site_already_primary_skips_every_step() {
    let lab = snapshots();
    let mut req = Request::new(request(FailoverAction::Planned, A));
    lab.run_to_end(&mut req);

    assert_eq!(req.status.phase, FailoverPhase::Completed);
    assert!(req.handed_out.iter().all(Vec::is_empty), "{:?}", req.handed_out);
    assert!(req.status.steps.iter().all(|r| r.state == StepState::Skipped));
    assert_eq!(lab.primaries("db"), [A]);
}

#[test]
fn planned_failover_refuses_a_split_brain() {
    let lab = after_emergency(Duration::ZERO);
    let mut req = Request::new(request(FailoverAction::Planned, B));
    lab.run_to_end(&mut req);

    assert_eq!(req.status.phase, FailoverPhase::Failed);
    assert_eq!(failure_reason(&req), common::SPLIT_BRAIN);
    assert!(req.ran.is_empty());
}

/// A planned failover to B, reconciled until it waits for the demotion to arrive.
fn planned_to_b_until_syncing(lab: &Lab) -> Request {
    let mut req = Request::new(request(FailoverAction::Planned, B));
    while req.status.phase != FailoverPhase::Syncing {
        lab.reconcile(&mut req);
    }
    req
}

#[test]
fn planned_failover_waits_out_a_source_outage_without_promoting_then_completes() {
    let lab = snapshots();
    let mut req = planned_to_b_until_syncing(&lab);
    assert_eq!(req.ran(), ["demote rbd/db@site-a"]);
    lab.world.set_down(A, true);
    for _ in 0..10 {
        let transition = lab.reconcile(&mut req);
        assert!(transition.steps.is_empty() && transition.then.is_empty());
    }
    assert!(req.is_true(SITE_UNREACHABLE));
    assert_eq!(req.status.phase, FailoverPhase::Syncing);
    assert!(
        !lab.is_primary(B, "db"),
        "nothing is promoted while A cannot confirm"
    );

    lab.world.set_down(A, false);
    lab.run_to_end(&mut req);
    assert_eq!(req.status.phase, FailoverPhase::Completed);
    assert_eq!(lab.primaries("db"), [B]);
    assert!(req.condition(SITE_UNREACHABLE).is_none());
}

#[test]
fn planned_failover_fails_after_the_unreachable_deadline_and_suggests_an_emergency() {
    let lab = snapshots();
    let mut req = Request::new(request(FailoverAction::Planned, B));
    lab.reconcile(&mut req);
    lab.world.set_down(A, true);
    lab.run_to_end(&mut req);

    assert_eq!(req.status.phase, FailoverPhase::Failed);
    assert_eq!(failure_reason(&req), reason::UNREACHABLE_TOO_LONG);
    let message = &req.condition(STALLED).expect("Stalled").message;
    assert!(message.contains("emergency"), "{message}");
    assert_eq!(req.ran(), ["demote rbd/db@site-a"]);
    assert!(!lab.is_primary(B, "db"));
    let demote = &req.status.steps[0];
    assert_eq!(
        demote.state,
        StepState::Failed,
        "A went down before the demote was seen"
    );
    assert!(demote
        .message
        .as_deref()
        .is_some_and(|m| m.starts_with("not confirmed")));
}

#[test]
fn the_specs_unreachable_timeout_bounds_how_long_a_source_outage_is_waited_out() {
    let lab = snapshots();
    let mut req = Request::new(FailoverRequestSpec {
        unreachable_timeout_seconds: Some(30),
        ..request(FailoverAction::Planned, B)
    });
    while req.status.phase != FailoverPhase::Syncing {
        lab.reconcile(&mut req);
    }
    lab.world.set_down(A, true);
    let down_at = lab.clock.now();
    lab.reconcile(&mut req);
    let waiting = &req.condition(SITE_UNREACHABLE).expect("SiteUnreachable").message;
    assert!(waiting.contains("retrying for up to 30 s"), "{waiting}");

    lab.run_to_end(&mut req);
    let failed_at = req.status.completed_at.as_ref().expect("completedAt").0;
    let waited = (failed_at - down_at).get_seconds();
    assert!((30..=40).contains(&waited), "failed after {waited} s");
    assert_eq!(req.status.phase, FailoverPhase::Failed);
    assert_eq!(failure_reason(&req), reason::UNREACHABLE_TOO_LONG);
    assert!(
        !lab.is_primary(B, "db"),
        "nothing promoted while A cannot confirm"
    );
}

#[test]
fn planned_failover_with_the_source_down_at_the_start_fails_the_preflight() {
    let lab = snapshots();
    lab.world.set_down(A, true);
    let mut req = Request::new(request(FailoverAction::Planned, B));
    lab.run_to_end(&mut req);
    assert_eq!(req.status.phase, FailoverPhase::Failed);
    assert_eq!(failure_reason(&req), common::AGENT_UNREACHABLE);
    let message = &req.condition(STALLED).expect("Stalled").message;
    assert!(message.contains("emergency"), "{message}");
    assert!(req.status.steps.is_empty());
}

#[test]
fn a_source_down_at_the_start_is_reported_before_anything_else_wrong() {
    let lab = snapshots();
    lab.world.set_down(A, true);
    lab.b.set_rbd_mirror_running(false).expect("site B up");
    let mut req = Request::new(request(FailoverAction::Planned, B));
    lab.run_to_end(&mut req);
    assert_eq!(req.status.phase, FailoverPhase::Failed);
    assert_eq!(
        failure_reason(&req),
        common::AGENT_UNREACHABLE,
        "not the missing rbd-mirror on B"
    );
    let message = &req.condition(STALLED).expect("Stalled").message;
    assert!(message.contains("emergency"), "{message}");
}

/// What the agent of a site whose monitors are down answers.
fn cluster_down(site: &str) -> AgentError {
    AgentError::ClusterUnreachable {
        site: site.into(),
        message: "`rbd ls rbd`: no monitor answered: rbd: couldn't connect to the cluster!".into(),
    }
}

#[test]
fn planned_failover_waits_while_the_source_cluster_does_not_answer() {
    let lab = snapshots();
    let req = planned_to_b_until_syncing(&lab);
    // The agent answers, its cluster does not: as much an outage as an unreachable agent, not a refusal.
    let mut observed = lab.observe(&[]);
    for seen in observed.pools.iter_mut().flat_map(|p| &mut p.sites) {
        if seen.site == A {
            seen.pool = Err(cluster_down(A));
        }
    }
    let transition = next(&req.spec, &req.status, &observed, lab.clock.now());
    assert!(transition.steps.is_empty() && transition.then.is_empty());
    assert_eq!(transition.status.phase, FailoverPhase::Syncing);
    let unreachable = transition
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == SITE_UNREACHABLE)
        .expect("SiteUnreachable");
    assert_eq!(unreachable.reason, "CephClusterUnreachable");
    assert!(
        unreachable.message.contains("couldn't connect"),
        "{}",
        unreachable.message
    );
}

#[test]
fn only_an_emergency_leaves_the_other_site_unasked() {
    for (action, asks_a) in [
        (FailoverAction::Planned, true),
        (FailoverAction::Failback, true),
        (FailoverAction::Resync, true),
        (FailoverAction::Emergency, false),
        (FailoverAction::Drill, true),
    ] {
        let spec = request(action, B);
        assert!(needs_site(&spec, B), "{action:?} needs its target");
        assert_eq!(needs_site(&spec, A), asks_a, "{action:?}");
    }
}

#[test]
fn emergency_failover_force_promotes_the_target_and_records_the_data_loss_window() {
    let lab = snapshots();
    lab.clock.advance(Duration::from_secs(100));
    lab.world.set_down(A, true);
    let window = lab.clock.now().duration_since(start_time()).as_secs();
    let mut req = Request::new(request(FailoverAction::Emergency, B));
    lab.run_to_end(&mut req);

    assert_eq!(req.status.phase, FailoverPhase::Completed);
    assert_eq!(req.ran(), ["force-promote rbd/db@site-b"]);
    assert_eq!(req.status.data_loss_window_seconds, Some(window as u64));
    let resync = req.condition(RESYNC_REQUIRED).expect("ResyncRequired");
    assert_eq!(
        (resync.status.as_str(), resync.reason.as_str()),
        ("True", reason::FORCE_PROMOTED)
    );
    assert!(resync.message.contains("failback"), "{}", resync.message);
    assert!(lab.is_primary(B, "db"));
}

#[test]
fn emergency_failover_to_a_site_already_primary_needs_no_resync() {
    let lab = snapshots();
    let mut req = Request::new(request(FailoverAction::Emergency, A));
    lab.run_to_end(&mut req);
    assert_eq!(req.status.phase, FailoverPhase::Completed);
    assert!(req.ran.is_empty());
    assert!(req.condition(RESYNC_REQUIRED).is_none());
}

#[test]
fn resync_after_an_emergency_rebuilds_the_old_primary_from_the_target() {
    let lab = after_emergency(Duration::from_secs(30));
    let mut req = Request::new(request(FailoverAction::Resync, B));
    lab.run_to_end(&mut req);

    assert_eq!(req.status.phase, FailoverPhase::Completed, "{:#?}", req.status);
    assert_eq!(
        req.ran(),
        [
            "demote rbd/db@site-a",
            "resync rbd/db@site-a",
            "mirror-snapshot rbd/db@site-b"
        ]
    );
    assert_eq!(lab.primaries("db"), [B]);
    let copy = lab.image(A, "db").and_then(|i| i.replay).expect("A replays");
    assert_eq!(copy.state, "replaying");
}

#[test]
fn failback_after_an_emergency_recovers_the_old_site_then_hands_the_images_back() {
    let lab = after_emergency(Duration::from_secs(30));
    let written = lab.b.write_image(POOL, "db").expect("B takes writes");
    let mut req = Request::new(request(FailoverAction::Failback, A));
    lab.run_to_end(&mut req);

    assert_eq!(req.status.phase, FailoverPhase::Completed, "{:#?}", req.status);
    assert_eq!(
        req.ran(),
        [
            "demote rbd/db@site-a",
            "resync rbd/db@site-a",
            "mirror-snapshot rbd/db@site-b",
            "demote rbd/db@site-b",
            "promote rbd/db@site-a"
        ]
    );
    assert_eq!(lab.primaries("db"), [A]);
    assert_eq!(
        lab.a.image_content_version(POOL, "db").expect("A answers"),
        written,
        "A has B's writes"
    );
}

#[test]
fn a_resync_handed_out_is_not_sent_again_before_rbd_mirror_had_time_to_act() {
    let lab = after_emergency(Duration::from_secs(30));
    let mut req = Request::new(request(FailoverAction::Failback, A));
    lab.reconcile(&mut req);
    assert_eq!(req.ran(), ["demote rbd/db@site-a"]);
    // The resync is handed out, but rbd-mirror has not acted on it when the site is next observed.
    let resync = lab.plan(&req);
    req.persist(&resync);
    assert_eq!(
        resync.steps.iter().map(row_of).collect::<Vec<_>>(),
        ["resync rbd/db@site-a"]
    );

    lab.clock.advance(Duration::from_secs(5));
    let soon = lab.plan(&req);
    assert!(soon.steps.is_empty() && soon.then.is_empty(), "{soon:#?}");
    req.persist(&soon);
    let message = &req.condition(READY).expect("Ready").message;
    assert!(
        message.contains("waiting for rbd-mirror on site site-a to start resyncing"),
        "{message}"
    );

    lab.clock.advance(Duration::from_secs(30));
    let later = lab.plan(&req);
    assert_eq!(
        later.steps, resync.steps,
        "handed out again once a status refresh passed"
    );
}

#[test]
fn dry_run_lists_the_plan_then_completes_without_touching_ceph() {
    let lab = snapshots();
    let mut req = Request::new(request(FailoverAction::Planned, B).dry_run());
    let listed = lab.reconcile(&mut req);

    assert_eq!(req.status.phase, FailoverPhase::Pending);
    assert!(listed.steps.is_empty() && listed.then.is_empty());
    assert_eq!(
        req.rows(),
        [
            "demote rbd/db@site-a pending",
            "await-sync rbd/db@site-b pending",
            "promote rbd/db@site-b pending"
        ]
    );
    assert!(req.is_true(DRY_RUN));
    lab.run_to_end(&mut req);
    assert_eq!(req.status.phase, FailoverPhase::Completed);
    assert!(req.ran.is_empty());
    assert_eq!(req.status.rto_seconds, None);
    assert_eq!(lab.primaries("db"), [A]);
    assert!(lab
        .image(A, "db")
        .and_then(|i| i.last_mirror_snapshot)
        .is_some_and(|s| s.state == "primary"));
}

#[test]
fn dry_run_of_an_impossible_request_fails_with_the_reason() {
    let lab = snapshots();
    lab.clock.advance(Duration::from_secs(120));
    let mut req = Request::new(request(FailoverAction::Planned, B).max_lag(60).dry_run());
    lab.run_to_end(&mut req);
    assert_eq!(req.status.phase, FailoverPhase::Failed);
    assert_eq!(failure_reason(&req), common::LAG_ABOVE_TARGET);
    assert!(req
        .condition(STALLED)
        .is_some_and(|c| c.message.starts_with("dry run")));
}

#[test]
fn concurrency_bounds_the_image_steps_in_flight() {
    let images = ["i1", "i2", "i3", "i4", "i5"];
    let lab = Lab::new().with_pool(&images, ImageMirrorMode::Snapshot);
    let mut req = Request::new(request(FailoverAction::Planned, B).concurrency(2));
    lab.run_to_end(&mut req);

    assert_eq!(req.status.phase, FailoverPhase::Completed);
    assert!(
        req.handed_out.iter().all(|steps| steps.len() <= 2),
        "{:?}",
        req.handed_out
    );
    for image in images {
        assert_eq!(lab.primaries(image), [B], "{image}");
    }
}

#[test]
fn a_request_blocked_by_an_earlier_one_waits_pending_with_a_blocked_condition() {
    let lab = snapshots();
    let mut req = Request::new(request(FailoverAction::Planned, B));
    req.blocking = vec!["earlier"];
    let transition = lab.reconcile(&mut req);

    assert_eq!(req.status.phase, FailoverPhase::Pending);
    assert!(transition.steps.is_empty() && req.status.steps.is_empty());
    let blocked = req.condition(BLOCKED).expect("Blocked");
    assert_eq!(blocked.reason, reason::BLOCKED_BY_REQUEST);
    assert!(blocked.message.contains("earlier"), "{}", blocked.message);

    req.blocking.clear();
    lab.run_to_end(&mut req);
    assert_eq!(req.status.phase, FailoverPhase::Completed);
    assert!(req.condition(BLOCKED).is_none());
}

#[test]
fn a_step_handed_out_but_never_run_is_handed_out_again_after_a_restart() {
    let lab = snapshots();
    let mut req = Request::new(request(FailoverAction::Planned, B));
    let lost = lab.plan(&req);
    req.persist(&lost);
    assert_eq!(req.status.steps[0].state, StepState::Running);
    let again = lab.plan(&req);
    assert_eq!(again.steps, lost.steps, "the running demote is handed out again");

    lab.run_to_end(&mut req);
    assert_eq!(req.status.phase, FailoverPhase::Completed);
    assert_eq!(req.ran(), ["demote rbd/db@site-a", "promote rbd/db@site-b"]);
}

#[test]
fn a_step_ceph_refuses_fails_the_request_naming_the_step() {
    let lab = snapshots();
    let mut req = Request::new(request(FailoverAction::Planned, B));
    let transition = lab.plan(&req);
    req.persist(&transition);
    let refusal = AgentError::Refused {
        site: A.into(),
        action: "demote rbd/db".into(),
        message: "image is locked".into(),
    };
    req.failures = vec![(A.into(), refusal)];
    lab.reconcile(&mut req);

    assert_eq!(req.status.phase, FailoverPhase::Failed);
    assert_eq!(failure_reason(&req), reason::STEP_FAILED);
    let message = &req.condition(STALLED).expect("Stalled").message;
    assert!(message.contains("demote rbd/db@site-a failed"), "{message}");
    assert_eq!(req.status.steps[0].state, StepState::Failed);
    assert!(req.ran.is_empty());
}

#[test]
fn a_transient_step_failure_is_retried() {
    let lab = snapshots();
    let mut req = Request::new(request(FailoverAction::Planned, B));
    let transition = lab.plan(&req);
    req.persist(&transition);
    let timeout = AgentError::CommandFailed {
        site: A.into(),
        command: "rbd mirror image demote".into(),
        exit_code: Some(110),
        stderr: "timed out".into(),
    };
    req.failures = vec![(A.into(), timeout)];
    let retry = lab.reconcile(&mut req);
    assert_eq!(retry.steps, transition.steps);
    lab.run_to_end(&mut req);
    assert_eq!(req.status.phase, FailoverPhase::Completed);
}

#[test]
fn a_terminal_request_plans_nothing_whatever_the_sites_show() {
    let lab = snapshots();
    let mut req = Request::new(request(FailoverAction::Planned, B));
    lab.run_to_end(&mut req);
    let done = req.status.clone();
    lab.world.set_down(B, true);
    let transition = lab.plan(&req);
    assert!(transition.steps.is_empty() && transition.then.is_empty());
    assert_eq!(transition.status, done);
}

#[test]
fn a_status_with_unknown_steps_fails_the_request_and_keeps_the_rows() {
    let lab = snapshots();
    let mut req = Request::new(request(FailoverAction::Planned, B));
    req.status.phase = FailoverPhase::Demoting;
    req.status.steps = vec![StepStatus {
        name: "reboot".into(),
        target: "rbd/db@site-a".into(),
        ..StepStatus::default()
    }];
    let transition = lab.plan(&req);
    assert_eq!(transition.status.phase, FailoverPhase::Failed);
    assert_eq!(transition.status.steps, req.status.steps);
    assert!(transition.steps.is_empty());
}

#[test]
fn images_are_never_given_two_steps_in_one_transition() {
    let lab = Lab::new().with_pool(&["i1", "i2", "i3"], ImageMirrorMode::Snapshot);
    let mut req = Request::new(request(FailoverAction::Failback, A));
    lab.world.set_down(A, true);
    let mut emergency = Request::new(request(FailoverAction::Emergency, B));
    lab.run_to_end(&mut emergency);
    lab.world.set_down(A, false);
    lab.run_to_end(&mut req);
    assert_eq!(req.status.phase, FailoverPhase::Completed, "{:#?}", req.status);
    for steps in &req.handed_out {
        let mut images: Vec<&str> = steps.iter().filter_map(|s| image_of(&s.step)).collect();
        let count = images.len();
        images.sort();
        images.dedup();
        assert_eq!(images.len(), count, "{steps:?}");
    }
    let promotes: Vec<&SiteStep> = req.ran.iter().filter(|s| s.step.verb() == "promote").collect();
    assert_eq!(promotes.len(), 3);
}
