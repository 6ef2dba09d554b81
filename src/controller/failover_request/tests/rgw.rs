//! RGW realms, one behaviour per test: the master zone moves with the request, and every site ends up
//! holding the period that says so.

use std::time::Duration;

use super::{request, Lab, Request, SpecExt, A, B, REALM};
use crate::{
    agent::ImageMirrorMode,
    api::{
        conditions::{reason as common, STALLED},
        failover_request::{FailoverAction, FailoverPhase, StepState},
    },
    controller::failover_request::plan::{reason, RESYNC_REQUIRED, SITE_UNREACHABLE},
};

fn realm() -> Lab {
    Lab::new().with_realm()
}

fn failure_reason(req: &Request) -> String {
    req.condition(STALLED)
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

/// Master `us-east` on A went down; an emergency request made `us-west` on B master; A is back and still
/// holds the old period.
fn after_realm_emergency() -> Lab {
    let lab = realm();
    lab.world.set_down(A, true);
    let mut emergency = Request::new(request(FailoverAction::Emergency, B).realm_only());
    lab.run_to_end(&mut emergency);
    assert_eq!(emergency.status.phase, FailoverPhase::Completed);
    lab.world.set_down(A, false);
    assert_eq!(
        (lab.master_zone(A), lab.master_zone(B)),
        ("us-east".into(), "us-west".into())
    );
    lab
}

#[test]
fn planned_realm_failover_makes_the_target_zone_master_and_every_site_agrees() {
    let lab = realm();
    let mut req = Request::new(request(FailoverAction::Planned, B).realm_only());
    lab.run_to_end(&mut req);

    assert_eq!(req.status.phase, FailoverPhase::Completed, "{:#?}", req.status);
    assert_eq!(
        req.rows(),
        [
            "pull-period production@site-b skipped",
            "modify-zone production/us/us-west@site-b done",
            "commit-period production@site-b done",
            "pull-period production@site-a skipped"
        ],
        "B already holds A's period, and the commit's push reached A"
    );
    assert_eq!(
        req.ran(),
        [
            "modify-zone production/us/us-west@site-b",
            "commit-period production@site-b"
        ]
    );
    assert_eq!(
        (lab.master_zone(A), lab.master_zone(B)),
        ("us-west".into(), "us-west".into())
    );
    assert_eq!(lab.period_id(A), lab.period_id(B));
}

#[test]
fn planned_realm_failover_to_the_master_site_skips_every_step() {
    let lab = realm();
    let mut req = Request::new(request(FailoverAction::Planned, A).realm_only());
    lab.run_to_end(&mut req);
    assert_eq!(req.status.phase, FailoverPhase::Completed);
    assert!(req.ran.is_empty());
    assert!(req.status.steps.iter().all(|r| r.state == StepState::Skipped));
}

#[test]
fn a_partition_after_the_commit_holds_the_old_master_pull_until_the_link_heals() {
    let lab = realm();
    lab.world.partition(A, B);
    let mut req = Request::new(request(FailoverAction::Planned, B).realm_only());
    for _ in 0..5 {
        lab.reconcile(&mut req);
    }
    assert_eq!(req.status.phase, FailoverPhase::Promoting);
    assert_eq!(lab.master_zone(A), "us-east", "the push did not reach A");
    assert!(
        req.failures.iter().all(|(_, e)| e.is_transient()),
        "the pull on A fails only for the partition: {:?}",
        req.failures
    );

    lab.world.heal(A, B);
    lab.run_to_end(&mut req);
    assert_eq!(req.status.phase, FailoverPhase::Completed, "{:#?}", req.status);
    assert_eq!(lab.master_zone(A), "us-west");
    assert_eq!(lab.period_id(A), lab.period_id(B));
}

#[test]
fn planned_realm_failover_refuses_while_the_target_zone_lags_more_than_max_lag() {
    let lab = realm();
    lab.world.partition(A, B);
    lab.a.put_objects(REALM, "us-east", 3).expect("A takes writes");
    lab.clock.advance(Duration::from_secs(120));
    let mut req = Request::new(request(FailoverAction::Planned, B).realm_only().max_lag(60));
    lab.run_to_end(&mut req);

    assert_eq!(req.status.phase, FailoverPhase::Failed);
    assert_eq!(failure_reason(&req), common::LAG_ABOVE_TARGET);
    assert!(req.ran.is_empty());
    assert_eq!(lab.master_zone(B), "us-east");
}

#[test]
fn emergency_realm_failover_with_the_master_down_commits_on_the_target_alone() {
    let lab = realm();
    lab.world.set_down(A, true);
    let mut req = Request::new(request(FailoverAction::Emergency, B).realm_only());
    lab.run_to_end(&mut req);

    assert_eq!(req.status.phase, FailoverPhase::Completed, "{:#?}", req.status);
    assert_eq!(
        req.ran(),
        [
            "modify-zone production/us/us-west@site-b",
            "commit-period production@site-b"
        ]
    );
    assert_eq!(lab.master_zone(B), "us-west");
    assert!(
        req.condition(RESYNC_REQUIRED).is_none(),
        "only force-promoted images need a resync"
    );
}

#[test]
fn failback_of_a_realm_pulls_the_newer_period_before_taking_the_master_back() {
    let lab = after_realm_emergency();
    let mut req = Request::new(request(FailoverAction::Failback, A).realm_only());
    lab.run_to_end(&mut req);

    assert_eq!(req.status.phase, FailoverPhase::Completed, "{:#?}", req.status);
    assert_eq!(
        req.ran(),
        [
            "pull-period production from http://rgw-b.example:8080@site-a",
            "modify-zone production/us/us-east@site-a",
            "commit-period production@site-a"
        ]
    );
    assert_eq!(
        (lab.master_zone(A), lab.master_zone(B)),
        ("us-east".into(), "us-east".into())
    );
    assert_eq!(lab.period_id(A), lab.period_id(B));
}

#[test]
fn drill_on_a_realm_reports_how_far_the_target_zone_is_behind() {
    let lab = realm();
    lab.world.partition(A, B);
    lab.a.put_objects(REALM, "us-east", 2).expect("A takes writes");
    lab.clock.advance(Duration::from_secs(50));
    let mut req = Request::new(request(FailoverAction::Drill, B).realm_only());
    lab.run_to_end(&mut req);

    assert_eq!(req.status.phase, FailoverPhase::Completed);
    assert!(req.ran.is_empty());
    assert_eq!(req.status.measured_rpo_seconds, Some(50));
    assert_eq!(lab.master_zone(B), "us-east");
}

#[test]
fn resync_of_a_realm_is_refused_in_the_preflight() {
    let lab = realm();
    let mut req = Request::new(request(FailoverAction::Resync, B).realm_only());
    lab.run_to_end(&mut req);
    assert_eq!(req.status.phase, FailoverPhase::Failed);
    assert_eq!(failure_reason(&req), reason::PREFLIGHT_FAILED);
}

#[test]
fn one_request_moves_a_pool_and_a_realm_together() {
    let lab = Lab::new()
        .with_pool(&["db"], ImageMirrorMode::Snapshot)
        .with_realm();
    let mut req = Request::new(request(FailoverAction::Planned, B).with_realm());
    lab.run_to_end(&mut req);

    assert_eq!(req.status.phase, FailoverPhase::Completed, "{:#?}", req.status);
    assert_eq!(lab.primaries("db"), [B]);
    assert_eq!(
        (lab.master_zone(A), lab.master_zone(B)),
        ("us-west".into(), "us-west".into())
    );
    let names: Vec<&str> = req.status.steps.iter().map(|r| r.name.as_str()).collect();
    let promote = names.iter().position(|n| *n == "promote");
    let commit = names.iter().position(|n| *n == "commit-period");
    assert!(
        promote.is_some() && commit.is_some(),
        "both subjects are in one plan: {names:?}"
    );
}

#[test]
fn once_the_target_committed_the_request_waits_for_the_old_master_however_long_it_is_away() {
    let lab = realm();
    let mut req = Request::new(request(FailoverAction::Planned, B).realm_only());
    let commit = lab.plan(&req);
    req.persist(&commit);
    lab.world.set_down(A, true);
    lab.run_steps(&mut req, &commit, usize::MAX);
    assert_eq!(
        lab.master_zone(B),
        "us-west",
        "the commit went through on B alone"
    );
    for _ in 0..60 {
        lab.reconcile(&mut req);
    }
    assert!(lab.clock.now().duration_since(super::start_time()).as_secs() > 1200);
    assert_eq!(
        req.status.phase,
        FailoverPhase::Promoting,
        "failing now would leave A holding the period that names it master"
    );
    let waiting = req.condition(SITE_UNREACHABLE).expect("SiteUnreachable");
    assert!(
        waiting.message.contains("may already have taken over"),
        "{}",
        waiting.message
    );

    lab.world.set_down(A, false);
    lab.run_to_end(&mut req);
    assert_eq!(req.status.phase, FailoverPhase::Completed);
    assert_eq!(
        (lab.master_zone(A), lab.master_zone(B)),
        ("us-west".into(), "us-west".into())
    );
}

#[test]
fn dry_run_of_a_realm_failover_lists_the_period_steps_and_commits_nothing() {
    let lab = realm();
    let period = lab.period_id(A);
    let mut req = Request::new(request(FailoverAction::Planned, B).realm_only().dry_run());
    lab.run_to_end(&mut req);

    assert_eq!(req.status.phase, FailoverPhase::Completed);
    assert!(req.handed_out.iter().all(Vec::is_empty), "{:?}", req.handed_out);
    assert_eq!(
        req.rows(),
        [
            "pull-period production@site-b pending",
            "modify-zone production/us/us-west@site-b pending",
            "commit-period production@site-b pending",
            "pull-period production@site-a pending"
        ]
    );
    assert_eq!((lab.period_id(A), lab.period_id(B)), (period.clone(), period));
    assert_eq!(lab.master_zone(B), "us-east");
}
