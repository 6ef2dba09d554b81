//! Table tests: what the realm waits for, how it comes up with its zonegroups and sync policies, conflicts,
//! and deletion.

use std::time::Duration;

use super::{converged, policy_in_ceph};
use crate::{
    agent::Step,
    api::{
        conditions::{reason, READY},
        realm::{SyncGroupStatus, SyncPolicy},
    },
    controller::{
        realm::plan::{acting_master, plan},
        testing::{
            agent_failures, assert_stalls, assert_waits, bucket_group, endpoint,
            fleet::{pair, Fleet},
            mirror_group, realm, zone,
        },
    },
    plan::{
        testing::{find, kstatus_violation, rendered, status_reason},
        SiteStep,
    },
};

#[test]
fn nothing_is_planned_until_a_zone_is_master_of_the_master_zonegroup() {
    let fleet = Fleet::new(realm().build()).zone(zone("us-west", "site-b"));
    let plan = fleet.plan_realm();
    assert_waits(
        &plan.plan,
        reason::WAITING_FOR_DEPENDENCY,
        "no CephZone is master of zonegroup us",
    );
    assert_eq!(plan.status.realm_id, None);
}

#[test]
fn the_realm_and_its_zonegroup_are_created_on_the_master_site_without_a_commit() {
    let fleet = pair(realm().build());
    let plan = fleet.plan_realm();
    assert_eq!(
        rendered(&plan.plan.steps),
        ["create-realm prod@site-a", "create-zonegroup prod/us@site-a"]
    );
    assert_eq!(
        plan.plan.steps[1].step,
        Step::CreateZoneGroup {
            realm: "prod".into(),
            zone_group: "us".into(),
            endpoints: vec![endpoint("us-east")],
            master: true
        }
    );
    let ready = find(&plan.plan.conditions, READY);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", reason::PROGRESSING)
    );
    assert!(
        ready
            .message
            .contains("the period is committed once zone us-east exists"),
        "{}",
        ready.message
    );
}

#[test]
fn the_zone_controller_commits_the_first_period_and_the_realm_becomes_ready() {
    let mut fleet = pair(realm().build()).with_realm_in_ceph();
    let master = fleet.plan_zone("us-east");
    fleet.apply(&master.plan.steps).unwrap();
    let plan = fleet.plan_realm();
    assert!(plan.plan.steps.is_empty(), "{:?}", rendered(&plan.plan.steps));
    assert_eq!(status_reason(&plan.plan.conditions, READY).0, "True");
    let status = &plan.status;
    assert!(status.realm_id.is_some());
    assert_eq!(status.period.as_ref().map(|p| p.epoch), Some(1));
    assert_eq!(
        (status.master_zone_group.as_deref(), status.master_zone.as_deref()),
        (Some("us"), Some("us-east"))
    );
    assert_eq!(plan.plan.requeue, Duration::from_secs(60), "a ready realm idles");
    assert_eq!(kstatus_violation(&plan.plan.conditions), None);
}

#[test]
fn a_converged_realm_plans_nothing() {
    let policy = vec![mirror_group("all", &["us-east", "us-west"])];
    let fleet = converged(realm().policy("us", policy).build());
    let plan = fleet.plan_realm();
    assert!(plan.plan.steps.is_empty(), "{:?}", rendered(&plan.plan.steps));
    assert_eq!(status_reason(&plan.plan.conditions, READY).0, "True");
    assert_eq!(
        fleet.world.policies("site-b", &["us".into()])[0].1.len(),
        1,
        "committed to every site"
    );
}

#[test]
fn a_policy_in_the_first_spec_waits_for_the_master_zone() {
    let policy = vec![mirror_group("all", &["us-east", "us-west"])];
    let mut fleet = pair(realm().policy("us", policy.clone()).build());
    assert_eq!(
        rendered(&fleet.plan_realm().plan.steps),
        ["create-realm prod@site-a", "create-zonegroup prod/us@site-a"],
        "radosgw-admin cannot set a policy before a zone exists"
    );
    fleet.converge(false, 3).unwrap();
    assert_eq!(
        fleet.world.policies("site-a", &["us".into()])[0].1,
        policy,
        "set once the master zone exists"
    );
    assert!(fleet.plan_realm().plan.steps.is_empty());
}

#[test]
fn a_policy_waits_for_every_zone_it_names_to_join_the_period() {
    let policy = vec![mirror_group("all", &["us-east", "us-west"])];
    let mut fleet =
        Fleet::new(realm().policy("us", policy.clone()).build()).zone(zone("us-east", "site-a").master());
    fleet.converge(false, 4).unwrap();
    let waiting = fleet.plan_realm();
    assert_waits(
        &waiting.plan,
        reason::WAITING_FOR_DEPENDENCY,
        "the sync policy of zonegroup us waits for zone us-west to join it in the period",
    );
    assert!(
        fleet.world.policies("site-a", &["us".into()])[0].1.is_empty(),
        "radosgw-admin would keep the unresolved name us-west, which never matches the zone's id"
    );

    let mut fleet = fleet.zone(zone("us-west", "site-b"));
    fleet.converge(false, 6).unwrap();
    assert_eq!(fleet.world.policies("site-a", &["us".into()])[0].1, policy);
    assert_eq!(
        status_reason(&fleet.plan_realm().plan.conditions, READY).0,
        "True"
    );
}

#[test]
fn a_new_sync_policy_is_set_and_committed_on_the_master_site() {
    let mut fleet = converged(realm().build());
    let policy = vec![
        mirror_group("all", &["us-east", "us-west"]),
        bucket_group("logs", "logs", "us-east", "us-west"),
    ];
    fleet.realm = realm().policy("us", policy.clone()).build();
    let plan = fleet.plan_realm();
    assert_eq!(
        plan.plan.steps,
        [
            SiteStep::new(
                "site-a",
                Step::SetSyncPolicy {
                    realm: "prod".into(),
                    zone_group: "us".into(),
                    groups: policy
                }
            ),
            SiteStep::new("site-a", Step::CommitPeriod { realm: "prod".into() })
        ]
    );
    fleet.apply(&plan.plan.steps).unwrap();
    assert!(fleet.plan_realm().plan.steps.is_empty());
}

#[test]
fn a_bucket_group_change_is_set_without_a_commit() {
    let zone_group_level = vec![mirror_group("all", &["us-east", "us-west"])];
    let mut fleet = converged(realm().policy("us", zone_group_level.clone()).build());
    let mut policy = zone_group_level;
    policy.push(bucket_group("logs", "logs", "us-east", "us-west"));
    fleet.realm = realm().policy("us", policy).build();
    let plan = fleet.plan_realm();
    assert_eq!(
        rendered(&plan.plan.steps),
        ["set-sync-policy prod/us@site-a"],
        "bucket groups live in bucket metadata: a commit would only make every RGW reload"
    );
    let ready = find(&plan.plan.conditions, READY);
    assert!(
        !ready.message.contains("period is committed"),
        "{}",
        ready.message
    );
    fleet.apply(&plan.plan.steps).unwrap();
    assert!(fleet.plan_realm().plan.steps.is_empty());
}

#[test]
fn a_policy_equal_but_for_order_and_wildcards_plans_nothing() {
    let spec_policy = vec![
        mirror_group("all", &["us-east", "us-west"]),
        bucket_group("logs", "logs", "us-east", "us-west"),
    ];
    let mut fleet = converged(realm().policy("us", spec_policy.clone()).build());
    let mut as_ceph_says = spec_policy;
    as_ceph_says.reverse();
    for group in &mut as_ceph_says {
        for flow in &mut group.flows {
            flow.zones.reverse();
        }
        for pipe in &mut group.pipes {
            pipe.source_zones.reverse();
            pipe.source_bucket = Some("*".into());
            pipe.dest_bucket = Some(String::new());
            pipe.prefix = Some(String::new());
        }
    }
    policy_in_ceph(&mut fleet, as_ceph_says);
    let plan = fleet.plan_realm();
    assert!(plan.plan.steps.is_empty(), "{:?}", rendered(&plan.plan.steps));
}

#[test]
fn a_changed_group_status_or_a_removed_policy_is_set_again() {
    let policy = vec![mirror_group("all", &["us-east", "us-west"])];
    let mut fleet = converged(realm().policy("us", policy.clone()).build());
    let mut forbidden = policy;
    forbidden[0].status = SyncGroupStatus::Forbidden;
    policy_in_ceph(&mut fleet, forbidden);
    assert_eq!(
        rendered(&fleet.plan_realm().plan.steps),
        ["set-sync-policy prod/us@site-a", "commit-period prod@site-a"]
    );

    fleet.realm = realm().build();
    let cleared = fleet.plan_realm();
    assert!(
        matches!(&cleared.plan.steps[0].step, Step::SetSyncPolicy { groups, .. } if groups.is_empty()),
        "{:?}",
        cleared.plan.steps
    );
}

#[test]
fn a_new_zonegroup_is_left_to_its_master_zone_and_its_policy_follows_its_zones() {
    let mut fleet = converged(realm().build());
    let policy = vec![mirror_group("eu-all", &["eu-1", "eu-2"])];
    fleet.realm = realm().zone_group("eu").policy("eu", policy.clone()).build();
    let waiting = fleet.plan_realm();
    assert_waits(
        &waiting.plan,
        reason::WAITING_FOR_DEPENDENCY,
        "no CephZone is master of zonegroup eu",
    );

    fleet = fleet.zone(zone("eu-1", "site-c").in_group("eu").master());
    let plan = fleet.plan_realm();
    assert!(plan.plan.steps.is_empty(), "{:?}", rendered(&plan.plan.steps));
    assert!(find(&plan.plan.conditions, READY)
        .message
        .contains("does not have zone eu-1 as master of zonegroup eu"));

    let eu = fleet.plan_zone("eu-1");
    fleet.apply(&eu.plan.steps).unwrap();
    assert_waits(
        &fleet.plan_realm().plan,
        reason::WAITING_FOR_DEPENDENCY,
        "the sync policy of zonegroup eu waits for zone eu-2",
    );

    fleet = fleet.zone(zone("eu-2", "site-b").in_group("eu"));
    fleet.converge(true, 4).unwrap();
    assert_eq!(
        rendered(&fleet.plan_realm().plan.steps),
        ["set-sync-policy prod/eu@site-a", "commit-period prod@site-a"]
    );
    fleet.converge(false, 3).unwrap();
    assert_eq!(
        status_reason(&fleet.plan_realm().plan.conditions, READY).0,
        "True"
    );
    assert_eq!(
        fleet.world.policies("site-c", &["eu".into()]),
        [("eu".to_string(), policy)]
    );
}

#[test]
fn two_zones_claiming_master_of_a_zonegroup_stall_the_realm() {
    let mut fleet = converged(realm().build());
    fleet.zone_object_mut("us-west").spec.master = true;
    let plan = fleet.plan_realm();
    assert_stalls(
        &plan.plan,
        reason::CONFLICT,
        "zones us-east and us-west all claim master of zonegroup us",
    );
}

#[test]
fn a_spec_without_a_master_zonegroup_stalls_as_invalid() {
    let mut spec = realm().zone_group("eu").build();
    spec.zone_groups[0].master = false;
    let plan = pair(spec).plan_realm();
    assert_stalls(&plan.plan, reason::INVALID_SPEC, "no zoneGroup has master: true");
}

#[test]
fn an_unreachable_master_site_is_reported_without_steps() {
    let mut fleet = converged(realm().build());
    fleet.world.site_mut("site-a").unreachable = Some("connection refused".into());
    let plan = fleet.plan_realm();
    assert_waits(
        &plan.plan,
        reason::AGENT_UNREACHABLE,
        "cannot read realm prod on site site-a",
    );
}

#[test]
fn a_master_site_that_cannot_be_read_waits_with_the_reason_of_the_failure() {
    let fleet = converged(realm().build());
    for (failure, why) in agent_failures("site-a") {
        let mut observed = fleet.realm_observed();
        observed.master_site = Some(Err(failure.clone()));
        let plan = plan(&fleet.realm, &observed, fleet.now);
        assert_waits(&plan.plan, why, &failure.to_string());
    }
}

#[test]
fn after_a_failover_the_realm_is_run_from_the_new_master_and_stays_ready() {
    let mut fleet = converged(realm().build());
    fleet.fail_over_zone("us-west");
    fleet.converge(false, 3).unwrap();
    assert_eq!(fleet.plan_realm().status.master_zone.as_deref(), Some("us-west"));
    let observed = fleet.realm_observed();
    let acting = acting_master(&fleet.realm, &observed.zones, observed.last_master.as_deref());
    assert_eq!(
        acting.map(|z| z.site.as_str()),
        Some("site-b"),
        "observed where the master now is"
    );
    let plan = fleet.plan_realm();
    assert!(plan.plan.steps.is_empty(), "{:?}", rendered(&plan.plan.steps));
    assert_eq!(find(&plan.plan.conditions, READY).status, "True");

    // A policy change then goes to the new master's site.
    fleet.realm.zone_groups[0].sync_policy = Some(SyncPolicy {
        groups: vec![mirror_group("all", &["us-east", "us-west"])],
    });
    let plan = fleet.plan_realm();
    assert!(!plan.plan.steps.is_empty());
    assert!(
        plan.plan.steps.iter().all(|s| s.site == "site-b"),
        "{:?}",
        rendered(&plan.plan.steps)
    );
}

#[test]
fn deletion_waits_for_the_zones_and_keeps_the_finalizer() {
    let mut fleet = converged(realm().build());
    fleet.realm_deleting = true;
    let plan = fleet.plan_realm();
    assert_waits(
        &plan.plan,
        reason::WAITING_FOR_DEPENDENCY,
        "zones still exist: us-east, us-west",
    );
    assert!(!plan.cleanup_complete, "the realm is still in Ceph");
}

#[test]
fn deletion_removes_the_realm_from_every_site_holding_it() {
    let mut fleet = converged(realm().build());
    fleet.realm_deleting = true;
    fleet.zones.clear();
    let plan = fleet.plan_realm();
    assert_eq!(
        rendered(&plan.plan.steps),
        ["delete-realm prod@site-a", "delete-realm prod@site-b"]
    );
    assert!(!plan.cleanup_complete);
    fleet.apply(&plan.plan.steps).unwrap();
    let done = fleet.plan_realm();
    assert!(done.plan.steps.is_empty() && done.cleanup_complete);
    assert!(find(&done.plan.conditions, READY)
        .message
        .contains("gone from every site"));
}

#[test]
fn deletion_with_retain_leaves_the_realm_in_ceph() {
    let mut fleet = converged(realm().retain().build());
    fleet.realm_deleting = true;
    let plan = fleet.plan_realm();
    assert!(plan.plan.steps.is_empty());
    assert!(plan.cleanup_complete, "Retain lets the finalizer go at once");
    assert!(find(&plan.plan.conditions, READY)
        .message
        .contains("deletionPolicy Retain"));
}
