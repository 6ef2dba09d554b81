//! Sync assessment of a secondary: `Synced`, lag, `RpoMet`, a failed probe, and the bounded recovery of a
//! wedged metadata sync across successive probes.

use k8s_openapi::jiff::Timestamp;

use super::{converged_pair, init_shards, pair, plan_observed, probe, shards, west_sync};
use crate::{
    agent::{AgentError, AgentResult, Step, SyncShards, ZoneSync},
    api::conditions::{reason, READY, RECONCILING, RPO_MET, STALLED, SYNCED},
    controller::{
        testing::{
            fleet::{at, Fleet},
            zone,
        },
        zone::plan::{wedge_reason, WEDGED},
    },
    plan::testing::{find, has, rendered, status_reason},
};

fn seconds_ago(fleet: &Fleet, seconds: i64) -> Option<Timestamp> {
    Some(at(fleet.now.as_second() - seconds))
}

fn stuck_metadata(oldest: i64) -> AgentResult<ZoneSync> {
    Ok(west_sync(shards(3, Some(at(oldest))), shards(0, None)))
}

#[test]
fn a_caught_up_secondary_is_synced_with_zero_lag() {
    let fleet = converged_pair();
    let plan = fleet.plan_zone("us-west");
    let conditions = &plan.plan.conditions;
    assert_eq!(status_reason(conditions, SYNCED), ("True", reason::CAUGHT_UP));
    assert_eq!(status_reason(conditions, READY).0, "True");
    assert!(!has(conditions, RPO_MET), "no target, no RpoMet");
    assert_eq!(plan.status.lag_seconds, Some(0));
    assert_eq!(plan.status.last_sync_check.as_ref().map(|t| t.0), Some(fleet.now));
    let sync = plan.status.sync.expect("figures");
    assert_eq!(sync.metadata.expect("metadata").state, "caught-up");
    assert_eq!(
        (sync.data[0].source.as_str(), sync.data[0].state.as_str()),
        ("us-east", "caught-up")
    );
}

#[test]
fn the_master_is_not_probed_and_reports_no_sync() {
    let plan = converged_pair().plan_zone("us-east");
    assert!(!has(&plan.plan.conditions, SYNCED));
    assert_eq!((plan.status.sync, plan.status.lag_seconds), (None, None));
}

#[test]
fn behind_shards_make_synced_false_with_the_lag_of_the_oldest_change() {
    let fleet = converged_pair();
    let sync = west_sync(shards(0, None), shards(3, seconds_ago(&fleet, 90)));
    let plan = plan_observed(&fleet, "us-west", |o| o.sync = Some(Ok(sync)));
    let conditions = &plan.plan.conditions;
    assert_eq!(status_reason(conditions, SYNCED), ("False", reason::BEHIND));
    assert_eq!(
        find(conditions, SYNCED).message,
        "data from us-east behind on 3/64 shards"
    );
    assert_eq!(
        status_reason(conditions, READY).0,
        "True",
        "lag is reported, not a reconcile failure"
    );
    assert!(plan.plan.steps.is_empty());
    assert_eq!(plan.status.lag_seconds, Some(90));
    let data = &plan.status.sync.expect("figures").data[0];
    assert_eq!(
        (
            data.state.as_str(),
            data.behind_shards,
            data.oldest_change_seconds
        ),
        ("behind", 3, Some(90))
    );
}

#[test]
fn full_sync_and_initialising_metadata_are_not_synced() {
    let fleet = converged_pair();
    let full = SyncShards {
        full_sync_shards: 10,
        ..shards(10, None)
    };
    let plan = plan_observed(&fleet, "us-west", |o| {
        o.sync = Some(Ok(west_sync(init_shards(), full)))
    });
    assert_eq!(
        find(&plan.plan.conditions, SYNCED).message,
        "metadata sync in state init; data from us-east in full sync on 10/64 shards"
    );
    assert_eq!(plan.status.sync.expect("figures").data[0].state, "full-sync");
}

fn rpo_of(lag: Option<i64>, metadata: SyncShards) -> (String, String, String) {
    let fleet = pair().zone(zone("us-south", "site-c").rpo(60)).converged();
    let data = shards(u32::from(lag.is_some()), lag.and_then(|l| seconds_ago(&fleet, l)));
    let plan = plan_observed(&fleet, "us-south", |o| {
        o.sync = Some(Ok(ZoneSync {
            metadata: Some(metadata),
            ..west_sync(shards(0, None), data)
        }))
    });
    let rpo = find(&plan.plan.conditions, RPO_MET);
    (rpo.status.clone(), rpo.reason.clone(), rpo.message.clone())
}

#[test]
fn rpo_is_met_while_the_lag_is_within_the_target() {
    let (status, why, message) = rpo_of(Some(30), shards(0, None));
    assert_eq!(
        (status.as_str(), why.as_str()),
        ("True", reason::LAG_WITHIN_TARGET)
    );
    assert_eq!(message, "lag 30 s within target 60 s");
}

#[test]
fn rpo_is_missed_once_the_lag_exceeds_the_target() {
    let (status, why, message) = rpo_of(Some(90), shards(0, None));
    assert_eq!(
        (status.as_str(), why.as_str()),
        ("False", reason::LAG_ABOVE_TARGET)
    );
    assert_eq!(message, "lag 90 s above target 60 s");
}

#[test]
fn rpo_counts_as_missed_while_the_lag_is_unknown() {
    let (status, _, message) = rpo_of(None, init_shards());
    assert_eq!(status, "False");
    assert!(
        message.starts_with("lag unknown while not in incremental sync"),
        "{message}"
    );
}

#[test]
fn a_failed_probe_keeps_the_last_figures_and_waits_for_rgw() {
    let mut fleet = converged_pair();
    let behind = Ok(west_sync(shards(0, None), shards(2, seconds_ago(&fleet, 40))));
    let answered = probe(&mut fleet, behind, 5);
    let rgw_reloading = AgentError::CommandFailed {
        site: "site-b".into(),
        command: "radosgw-admin sync status".into(),
        exit_code: Some(5),
        stderr: "503 Service Unavailable".into(),
    };
    let failed = probe(&mut fleet, Err(rgw_reloading), 5);
    assert!(failed.plan.steps.is_empty());
    assert_eq!(failed.status.sync, answered.status.sync);
    assert_eq!(failed.status.lag_seconds, Some(40));
    assert_eq!(failed.status.last_sync_check, answered.status.last_sync_check);
    assert_eq!(
        status_reason(&failed.plan.conditions, SYNCED),
        ("False", reason::BEHIND)
    );
    assert_eq!(
        status_reason(&failed.plan.conditions, READY),
        ("False", reason::PROGRESSING)
    );
    assert!(find(&failed.plan.conditions, READY)
        .message
        .contains("503 Service Unavailable"));
}

#[test]
fn a_secondary_without_a_sync_answer_is_not_ready_yet() {
    let fleet = converged_pair();
    let plan = plan_observed(&fleet, "us-west", |o| o.sync = None);
    assert_eq!(
        status_reason(&plan.plan.conditions, READY),
        ("False", reason::PROGRESSING)
    );
}

#[test]
fn wedged_metadata_sync_is_recovered_once_then_stalls_until_it_moves() {
    let mut fleet = converged_pair();
    let oldest = fleet.now.as_second() - 130;
    let first = probe(&mut fleet, stuck_metadata(oldest), 30);
    assert!(first.plan.steps.is_empty(), "one probe shows no stall");
    assert!(!has(&first.plan.conditions, WEDGED));

    let detected = probe(&mut fleet, stuck_metadata(oldest), 30);
    assert_eq!(
        rendered(&detected.plan.steps),
        [
            "pull-period prod from http://us-east.rgw.example:8080@site-b",
            "init-metadata-sync prod/us-west@site-b"
        ]
    );
    assert!(
        matches!(&detected.plan.steps[0].step, Step::PullPeriod { keys, .. } if *keys == crate::controller::testing::keys())
    );
    assert_eq!(
        status_reason(&detected.plan.conditions, WEDGED),
        ("True", wedge_reason::METADATA_SYNC_STUCK)
    );
    assert_eq!(
        status_reason(&detected.plan.conditions, READY),
        ("False", wedge_reason::METADATA_SYNC_STUCK)
    );

    let recovering = probe(&mut fleet, stuck_metadata(oldest), 140);
    assert!(
        recovering.plan.steps.is_empty(),
        "the recovery runs once per episode"
    );
    assert_eq!(status_reason(&recovering.plan.conditions, RECONCILING).0, "True");

    let failed = probe(&mut fleet, stuck_metadata(oldest), 30);
    assert!(failed.plan.steps.is_empty(), "a failed recovery is not repeated");
    assert_eq!(
        status_reason(&failed.plan.conditions, STALLED),
        ("True", wedge_reason::RECOVERY_FAILED)
    );
    assert_eq!(
        status_reason(&failed.plan.conditions, WEDGED),
        ("True", wedge_reason::RECOVERY_FAILED)
    );
    assert!(find(&failed.plan.conditions, STALLED).message.contains("by hand"));

    let moving = probe(&mut fleet, Ok(west_sync(shards(0, None), shards(0, None))), 5);
    assert!(!has(&moving.plan.conditions, WEDGED));
    assert!(!has(&moving.plan.conditions, STALLED));
    assert_eq!(status_reason(&moving.plan.conditions, READY).0, "True");
}

#[test]
fn metadata_sync_stuck_in_init_past_the_limit_is_wedged() {
    let mut fleet = converged_pair();
    let first = probe(&mut fleet, Ok(west_sync(init_shards(), shards(0, None))), 121);
    assert!(first.plan.steps.is_empty());
    let second = probe(&mut fleet, Ok(west_sync(init_shards(), shards(0, None))), 5);
    assert_eq!(second.plan.steps.len(), 2, "{:?}", rendered(&second.plan.steps));
    assert!(find(&second.plan.conditions, WEDGED)
        .message
        .contains("metadata sync in state init"));
}

#[test]
fn moving_or_young_metadata_backlogs_are_not_wedged() {
    for (first_oldest, second_oldest) in [(130, 100), (10, 10)] {
        let mut fleet = converged_pair();
        let now = fleet.now.as_second();
        probe(&mut fleet, stuck_metadata(now - first_oldest), 30);
        let second = probe(&mut fleet, stuck_metadata(now - second_oldest), 5);
        assert!(
            second.plan.steps.is_empty(),
            "{first_oldest} then {second_oldest}"
        );
        assert!(!has(&second.plan.conditions, WEDGED));
        assert_eq!(status_reason(&second.plan.conditions, SYNCED).0, "False");
    }
}
