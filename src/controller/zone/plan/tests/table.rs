//! Table tests: what the zone waits for, how a master and a secondary come up, conflicts, changes to a
//! converged zone, and deletion.

use std::time::Duration;

use super::{converged_pair, pair, plan_observed};
use crate::{
    agent::{Step, SystemKeys},
    api::{
        conditions::{reason, READY, RECONCILING},
        zone::ZoneRole,
    },
    controller::testing::{
        agent_failures, assert_stalls, assert_waits, endpoint, fleet::Fleet, keys, realm, zone,
    },
    plan::{
        testing::{find, kstatus_violation, rendered, status_reason},
        SiteStep,
    },
};

#[test]
fn a_zone_waits_for_the_realm_id_before_touching_its_site() {
    let fleet = pair();
    let plan = fleet.plan_zone("us-east");
    assert_waits(
        &plan.plan,
        reason::WAITING_FOR_DEPENDENCY,
        "CephRealm prod has no realm id yet",
    );
}

#[test]
fn a_zone_waits_until_its_zonegroup_is_declared_in_the_realm() {
    let fleet = pair()
        .zone(zone("eu-1", "site-c").in_group("eu").master())
        .with_realm_in_ceph();
    let plan = fleet.plan_zone("eu-1");
    assert_waits(
        &plan.plan,
        reason::WAITING_FOR_DEPENDENCY,
        "zonegroup eu is not declared in CephRealm prod",
    );
}

#[test]
fn a_zone_waits_for_the_sync_user_keys() {
    let mut fleet = pair().with_realm_in_ceph();
    fleet.keys_available = false;
    assert_waits(
        &fleet.plan_zone("us-east").plan,
        reason::SECRET_MISSING,
        "sync user keys of realm prod",
    );
}

#[test]
fn a_secondary_waits_for_a_master_zone_endpoint() {
    let mut fleet = pair().with_realm_in_ceph();
    fleet.zones.retain(|z| z.name != "us-east");
    assert_waits(
        &fleet.plan_zone("us-west").plan,
        reason::WAITING_FOR_DEPENDENCY,
        "no master zone endpoint",
    );
}

#[test]
fn a_master_zone_waits_for_the_realm_controller_to_create_the_realm_on_its_site() {
    let mut fleet = pair();
    fleet.realm_status.realm_id = Some("realm-from-status".into());
    let plan = fleet.plan_zone("us-east");
    assert_waits(
        &plan.plan,
        reason::WAITING_FOR_DEPENDENCY,
        "the CephRealm controller creates it",
    );
}

#[test]
fn an_unreachable_site_plans_nothing_and_says_so() {
    let mut fleet = pair().with_realm_in_ceph();
    fleet.world.site_mut("site-a").unreachable = Some("connection refused".into());
    let plan = fleet.plan_zone("us-east");
    assert_waits(&plan.plan, reason::AGENT_UNREACHABLE, "connection refused");
}

#[test]
fn a_site_that_cannot_be_read_waits_with_the_reason_of_the_failure() {
    let fleet = pair().with_realm_in_ceph();
    for (failure, why) in agent_failures("site-a") {
        let plan = plan_observed(&fleet, "us-east", |observed| {
            observed.local = Err(failure.clone())
        });
        assert_waits(&plan.plan, why, &failure.to_string());
    }
}

#[test]
fn the_master_zone_is_created_then_committed_then_gets_the_sync_user() {
    let mut fleet = pair().with_realm_in_ceph();
    let plan = fleet.plan_zone("us-east");
    assert_eq!(
        rendered(&plan.plan.steps),
        [
            "create-zone prod/us/us-east@site-a",
            "commit-period prod@site-a",
            "create-system-user cephdr-sync-prod@site-a"
        ]
    );
    assert_eq!(
        plan.plan.steps[0].step,
        Step::CreateZone {
            realm: "prod".into(),
            zone_group: "us".into(),
            zone: "us-east".into(),
            endpoints: vec![endpoint("us-east")],
            master: true,
            read_only: false,
            keys: keys(),
        }
    );
    assert_eq!(
        status_reason(&plan.plan.conditions, READY),
        ("False", reason::PROGRESSING)
    );
    assert_eq!(plan.status.role, None, "not in a period yet");

    fleet.apply(&plan.plan.steps).unwrap();
    let period = fleet.world.state("site-a").unwrap().period.unwrap();
    assert_eq!((period.master_zone.as_str(), period.epoch), ("us-east", 1));
    let after = fleet.plan_zone("us-east");
    assert!(after.plan.steps.is_empty(), "{:?}", rendered(&after.plan.steps));
    assert_eq!(status_reason(&after.plan.conditions, READY).0, "True");
    assert!(find(&after.plan.conditions, READY)
        .message
        .contains("master of zonegroup us at period epoch 1"));
    assert_eq!(after.status.role, Some(ZoneRole::Master));
    assert!(after.status.zone_id.is_some());
    assert_eq!(
        after.plan.requeue,
        Duration::from_secs(60),
        "a converged master idles"
    );
}

#[test]
fn a_secondary_pulls_the_realm_from_the_master_endpoint_then_creates_its_zone_and_commits() {
    let mut fleet = pair().with_realm_in_ceph();
    let master = fleet.plan_zone("us-east");
    fleet.apply(&master.plan.steps).unwrap();

    let plan = fleet.plan_zone("us-west");
    assert_eq!(
        rendered(&plan.plan.steps),
        [
            "pull-realm prod from http://us-east.rgw.example:8080@site-b",
            "create-zone prod/us/us-west@site-b",
            "commit-period prod@site-b"
        ]
    );
    assert_eq!(
        plan.plan.steps[0].step,
        Step::PullRealm {
            realm: "prod".into(),
            url: endpoint("us-east"),
            keys: keys()
        }
    );
    assert!(
        matches!(&plan.plan.steps[1].step, Step::CreateZone { master: false, .. }),
        "{:?}",
        plan.plan.steps[1]
    );
    fleet.apply(&plan.plan.steps).unwrap();
    let after = fleet.plan_zone("us-west");
    assert!(after.plan.steps.is_empty(), "{:?}", rendered(&after.plan.steps));
    assert_eq!(after.status.role, Some(ZoneRole::Secondary));
    assert_eq!(status_reason(&after.plan.conditions, READY).0, "True");
    assert_eq!(
        after.plan.requeue,
        Duration::from_secs(30),
        "a secondary's sync is probed"
    );
}

#[test]
fn two_master_zones_in_one_zonegroup_stall_as_a_conflict() {
    let fleet = Fleet::new(realm().build())
        .zone(zone("us-east", "site-a").master())
        .zone(zone("us-west", "site-b").master())
        .with_realm_in_ceph();
    for (name, other) in [("us-east", "us-west"), ("us-west", "us-east")] {
        let plan = fleet.plan_zone(name);
        assert_stalls(
            &plan.plan,
            reason::CONFLICT,
            &format!("zones {other} of zonegroup us"),
        );
    }
}

#[test]
fn a_site_holding_the_realm_under_another_id_stalls_as_a_conflict() {
    let mut fleet = converged_pair();
    fleet.realm_status.realm_id = Some("another-realm-id".into());
    let plan = fleet.plan_zone("us-west");
    assert_stalls(
        &plan.plan,
        reason::CONFLICT,
        "but CephRealm prod has id another-realm-id",
    );
}

#[test]
fn a_converged_pair_plans_nothing_and_reports_roles() {
    let fleet = converged_pair();
    for (name, role) in [("us-east", ZoneRole::Master), ("us-west", ZoneRole::Secondary)] {
        let plan = fleet.plan_zone(name);
        assert!(
            plan.plan.steps.is_empty(),
            "{name}: {:?}",
            rendered(&plan.plan.steps)
        );
        assert_eq!(plan.status.role, Some(role));
        assert_eq!(status_reason(&plan.plan.conditions, READY).0, "True");
        assert_eq!(status_reason(&plan.plan.conditions, RECONCILING).0, "False");
        assert_eq!(kstatus_violation(&plan.plan.conditions), None);
    }
}

#[test]
fn changed_endpoints_update_the_zone_and_commit() {
    let mut fleet = converged_pair();
    fleet.zone_object_mut("us-west").spec.endpoints = vec!["http://us-west-lb.example:80".into()];
    let plan = fleet.plan_zone("us-west");
    assert_eq!(
        rendered(&plan.plan.steps),
        [
            "pull-period prod from http://us-east.rgw.example:8080@site-b",
            "create-zone prod/us/us-west@site-b",
            "commit-period prod@site-b"
        ]
    );
    fleet.apply(&plan.plan.steps).unwrap();
    assert!(fleet.plan_zone("us-west").plan.steps.is_empty());
}

#[test]
fn endpoints_in_another_order_or_with_a_trailing_slash_plan_nothing() {
    let mut fleet = pair()
        .zone(zone("us-south", "site-c").endpoints(&["http://b.example:80", "http://a.example:80"]))
        .converged();
    fleet.zone_object_mut("us-south").spec.endpoints =
        vec!["http://a.example:80/".into(), "http://b.example:80".into()];
    let plan = fleet.plan_zone("us-south");
    assert!(plan.plan.steps.is_empty(), "{:?}", rendered(&plan.plan.steps));
}

#[test]
fn a_read_only_change_modifies_the_zone_and_commits() {
    let mut fleet = converged_pair();
    fleet.zone_object_mut("us-west").spec.read_only = true;
    let plan = fleet.plan_zone("us-west");
    assert_eq!(
        rendered(&plan.plan.steps[..1]),
        ["pull-period prod from http://us-east.rgw.example:8080@site-b"]
    );
    assert_eq!(
        plan.plan.steps[1..],
        [
            SiteStep::new(
                "site-b",
                Step::ModifyZone {
                    realm: "prod".into(),
                    zone_group: "us".into(),
                    zone: "us-west".into(),
                    master: None,
                    read_only: Some(true)
                }
            ),
            SiteStep::new("site-b", Step::CommitPeriod { realm: "prod".into() })
        ]
    );
}

#[test]
fn a_rotated_sync_key_updates_the_zone_without_a_commit() {
    let mut fleet = converged_pair();
    let zone = fleet
        .world
        .realm_mut("site-b")
        .unwrap()
        .zones
        .get_mut("us-west")
        .unwrap();
    zone.keys = Some(SystemKeys {
        access_key: "OLDKEY".into(),
        ..keys()
    });
    let plan = fleet.plan_zone("us-west");
    assert_eq!(rendered(&plan.plan.steps), ["create-zone prod/us/us-west@site-b"]);
}

#[test]
fn a_zone_object_lost_on_its_site_is_created_again_and_committed() {
    let mut fleet = converged_pair();
    fleet.world.realm_mut("site-b").unwrap().zones.remove("us-west");
    let plan = fleet.plan_zone("us-west");
    assert_eq!(
        rendered(&plan.plan.steps),
        [
            "pull-period prod from http://us-east.rgw.example:8080@site-b",
            "create-zone prod/us/us-west@site-b",
            "commit-period prod@site-b"
        ]
    );
    fleet.apply(&plan.plan.steps).unwrap();
    let after = fleet.plan_zone("us-west");
    assert!(
        after.plan.steps.is_empty(),
        "the new incarnation is committed: {:?}",
        rendered(&after.plan.steps)
    );
}

#[test]
fn a_commit_from_a_site_that_missed_a_period_pulls_it_first_and_keeps_what_others_committed() {
    let mut fleet = pair().zone(zone("us-south", "site-c")).converged();
    // us-west moves while site-c is cut off: the commit's push does not reach site-c.
    fleet.world.site_mut("site-c").unreachable = Some("connection refused".into());
    fleet.zone_object_mut("us-west").spec.endpoints = vec!["http://us-west-lb.example:80".into()];
    let moved = fleet.plan_zone("us-west");
    fleet.apply(&moved.plan.steps).unwrap();
    fleet.world.site_mut("site-c").unreachable = None;

    fleet.zone_object_mut("us-south").spec.read_only = true;
    let plan = fleet.plan_zone("us-south");
    assert_eq!(
        rendered(&plan.plan.steps),
        [
            "pull-period prod from http://us-east.rgw.example:8080@site-c",
            "modify-zone prod/us/us-south@site-c",
            "commit-period prod@site-c"
        ]
    );
    fleet.apply(&plan.plan.steps).unwrap();
    let period = fleet.world.state("site-a").unwrap().period.unwrap();
    let zone = |name: &str| {
        period.zone_groups[0]
            .zones
            .iter()
            .find(|z| z.name == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        zone("us-west").endpoints,
        ["http://us-west-lb.example:80"],
        "us-west's move is kept"
    );
    assert!(zone("us-south").read_only);
}

#[test]
fn a_master_moved_by_a_failover_stays_where_it_is_whatever_spec_master_says() {
    let mut fleet = converged_pair();
    fleet.fail_over_zone("us-west");
    for name in ["us-east", "us-west"] {
        let plan = fleet.plan_zone(name);
        assert!(
            plan.plan.steps.is_empty(),
            "{name}: {:?}",
            rendered(&plan.plan.steps)
        );
    }
    assert_eq!(fleet.plan_zone("us-east").status.role, Some(ZoneRole::Secondary));
    let west = fleet.plan_zone("us-west");
    assert_eq!(west.status.role, Some(ZoneRole::Master));
    let ready = find(&west.plan.conditions, READY);
    assert_eq!(ready.status, "True");
    assert!(
        ready.message.contains("a FailoverRequest moved the master"),
        "{}",
        ready.message
    );

    // Declaring the new placement changes nothing in Ceph either.
    fleet.zone_object_mut("us-east").spec.master = false;
    fleet.zone_object_mut("us-west").spec.master = true;
    fleet.converge(true, 3).unwrap();
    let period = fleet.world.state("site-a").unwrap().period.unwrap();
    assert_eq!(period.master_zone, "us-west");
}

#[test]
fn a_secondary_by_failover_pulls_the_period_from_the_new_master_before_its_forwarded_commit() {
    let mut fleet = converged_pair();
    fleet.fail_over_zone("us-west");
    fleet.zone_object_mut("us-east").spec.read_only = true;
    let plan = fleet.plan_zone("us-east");
    assert_eq!(
        rendered(&plan.plan.steps),
        [
            "pull-period prod from http://us-west.rgw.example:8080@site-a",
            "modify-zone prod/us/us-east@site-a",
            "commit-period prod@site-a"
        ]
    );
    fleet.apply(&plan.plan.steps).unwrap();
    let period = fleet.world.state("site-b").unwrap().period.unwrap();
    assert_eq!(period.master_zone, "us-west", "the failover stands");
}

#[test]
fn deleting_a_secondary_commits_its_removal_on_the_master_site_then_deletes_it_locally() {
    let mut fleet = converged_pair();
    fleet.zone_object_mut("us-west").deleting = true;
    let plan = fleet.plan_zone("us-west");
    assert_eq!(
        rendered(&plan.plan.steps),
        [
            "delete-zone prod/us/us-west@site-a",
            "commit-period prod@site-a",
            "delete-zone prod/us/us-west@site-b"
        ]
    );
    assert!(!plan.cleanup_complete);
    fleet.apply(&plan.plan.steps).unwrap();
    let period_zones = |site: &str| -> Vec<String> {
        let state = fleet.world.state(site).unwrap();
        let zones = &state.period.unwrap().zone_groups[0].zones;
        zones.iter().map(|z| z.name.clone()).collect()
    };
    assert_eq!(period_zones("site-a"), ["us-east"]);
    // As on real Ceph: the commit went to the zones of the new period only, so site-b keeps the old one.
    assert_eq!(period_zones("site-b"), ["us-east", "us-west"]);
    for site in ["site-a", "site-b"] {
        let state = fleet.world.state(site).unwrap();
        assert!(state.local_zones.iter().all(|z| z.name != "us-west"));
    }
    let done = fleet.plan_zone("us-west");
    assert!(done.plan.steps.is_empty());
    assert!(done.cleanup_complete);
}

#[test]
fn deleting_a_secondary_while_the_master_site_is_unreachable_changes_nothing_and_keeps_the_finalizer() {
    let mut fleet = converged_pair();
    fleet.zone_object_mut("us-west").deleting = true;
    fleet.world.site_mut("site-a").unreachable = Some("connection refused".into());
    let plan = fleet.plan_zone("us-west");
    assert_waits(
        &plan.plan,
        reason::WAITING_FOR_DEPENDENCY,
        "cannot read realm prod on site site-a",
    );
    assert!(
        plan.plan.steps.is_empty(),
        "us-west stays on site-b until it has left the period"
    );
    assert!(!plan.cleanup_complete);
}

#[test]
fn a_secondary_deleted_by_hand_on_its_site_is_still_taken_out_of_the_masters_period() {
    let mut fleet = converged_pair();
    fleet.zone_object_mut("us-west").deleting = true;
    fleet.world.realm_mut("site-b").unwrap().zones.remove("us-west");
    let plan = fleet.plan_zone("us-west");
    assert_eq!(
        rendered(&plan.plan.steps),
        ["delete-zone prod/us/us-west@site-a", "commit-period prod@site-a"]
    );
    assert!(!plan.cleanup_complete);
    fleet.apply(&plan.plan.steps).unwrap();
    assert!(fleet.plan_zone("us-west").cleanup_complete);
}

#[test]
fn deleting_the_master_waits_for_its_secondaries_and_keeps_the_finalizer() {
    let mut fleet = converged_pair();
    fleet.zone_object_mut("us-east").deleting = true;
    let plan = fleet.plan_zone("us-east");
    assert_waits(
        &plan.plan,
        reason::WAITING_FOR_DEPENDENCY,
        "cannot be deleted while other zones exist: us-west",
    );
    assert!(!plan.cleanup_complete, "the master zone is still in Ceph");
}

#[test]
fn deleting_the_lone_master_deletes_it_locally_without_a_commit() {
    let mut fleet = Fleet::new(realm().build())
        .zone(zone("us-east", "site-a").master())
        .converged();
    fleet.zone_object_mut("us-east").deleting = true;
    let plan = fleet.plan_zone("us-east");
    assert_eq!(rendered(&plan.plan.steps), ["delete-zone prod/us/us-east@site-a"]);
    assert!(!plan.cleanup_complete);
    fleet.apply(&plan.plan.steps).unwrap();
    assert!(fleet.plan_zone("us-east").cleanup_complete);
}

#[test]
fn deleting_with_retain_leaves_the_zone_in_ceph() {
    let mut fleet = converged_pair();
    let west = fleet.zone_object_mut("us-west");
    west.deleting = true;
    west.spec.deletion_policy = crate::api::common::DeletionPolicy::Retain;
    let plan = fleet.plan_zone("us-west");
    assert!(plan.plan.steps.is_empty());
    assert!(plan.cleanup_complete);
    assert!(find(&plan.plan.conditions, READY)
        .message
        .contains("deletionPolicy Retain"));
}

#[test]
fn deleting_while_the_site_is_unreachable_keeps_the_finalizer() {
    let mut fleet = converged_pair();
    fleet.zone_object_mut("us-west").deleting = true;
    fleet.world.site_mut("site-b").unreachable = Some("connection refused".into());
    let plan = fleet.plan_zone("us-west");
    assert_waits(&plan.plan, reason::AGENT_UNREACHABLE, "connection refused");
    assert!(!plan.cleanup_complete, "the zone may still be in Ceph");
}

#[test]
fn deleting_while_the_site_cannot_be_read_waits_with_the_reason_of_the_failure() {
    let mut fleet = converged_pair();
    fleet.zone_object_mut("us-west").deleting = true;
    for (failure, why) in agent_failures("site-b") {
        let plan = plan_observed(&fleet, "us-west", |observed| {
            observed.local = Err(failure.clone())
        });
        assert_waits(&plan.plan, why, &failure.to_string());
        assert!(!plan.cleanup_complete, "the zone may still be in Ceph");
    }
}

#[test]
fn deleting_a_zone_that_never_reached_ceph_completes_at_once() {
    let mut fleet = pair().with_realm_in_ceph();
    fleet.zone_object_mut("us-west").deleting = true;
    let plan = plan_observed(&fleet, "us-west", |_| {});
    assert!(plan.plan.steps.is_empty());
    assert!(plan.cleanup_complete);
}

#[test]
fn deleting_a_secondary_waits_while_no_cephzone_tells_where_the_master_zone_runs() {
    let mut fleet = converged_pair();
    fleet.zone_object_mut("us-west").deleting = true;
    fleet.zones.retain(|z| z.name != "us-east");
    let plan = fleet.plan_zone("us-west");
    assert_waits(
        &plan.plan,
        reason::WAITING_FOR_DEPENDENCY,
        "no CephZone of realm prod is its master zone",
    );
    assert!(!plan.cleanup_complete);
}

#[test]
fn deleting_a_secondary_after_its_cephrealm_went_still_commits_on_the_master_site() {
    let mut fleet = converged_pair();
    fleet.realm_gone = true;
    fleet.zone_object_mut("us-west").deleting = true;
    let plan = fleet.plan_zone("us-west");
    assert_eq!(
        plan.plan.steps[1],
        SiteStep::new("site-a", Step::CommitPeriod { realm: "prod".into() })
    );
}

#[test]
fn deleting_a_secondary_on_the_master_site_commits_there_after_deleting_it() {
    let mut fleet = pair().zone(zone("us-east-2", "site-a")).converged();
    fleet.zone_object_mut("us-east-2").deleting = true;
    let plan = fleet.plan_zone("us-east-2");
    assert_eq!(
        rendered(&plan.plan.steps),
        [
            "delete-zone prod/us/us-east-2@site-a",
            "commit-period prod@site-a"
        ]
    );
    fleet.apply(&plan.plan.steps).unwrap();
    assert!(fleet.plan_zone("us-east-2").cleanup_complete);
}

/// [`converged_pair`] plus zonegroup `eu` with `eu-1` (master) on `site-c` and `eu-2` on `site-b`.
fn two_zonegroups() -> Fleet {
    let mut fleet = converged_pair();
    fleet.realm = realm().zone_group("eu").build();
    fleet
        .zone(zone("eu-1", "site-c").in_group("eu").master())
        .zone(zone("eu-2", "site-b").in_group("eu"))
}

#[test]
fn the_master_of_another_zonegroup_pulls_the_realm_from_the_realm_master_and_creates_its_zonegroup() {
    let mut fleet = two_zonegroups();
    let plan = fleet.plan_zone("eu-1");
    assert_eq!(
        rendered(&plan.plan.steps),
        [
            "pull-realm prod from http://us-east.rgw.example:8080@site-c",
            "create-zonegroup prod/eu@site-c",
            "create-zone prod/eu/eu-1@site-c",
            "commit-period prod@site-c"
        ],
        "no sync user: only the realm's master zone is the metadata master"
    );
    assert!(
        matches!(&plan.plan.steps[1].step, Step::CreateZoneGroup { master: false, endpoints, .. } if *endpoints == [endpoint("eu-1")])
    );
    fleet.apply(&plan.plan.steps).unwrap();
    let period = fleet.world.state("site-a").unwrap().period.unwrap();
    let eu = period
        .zone_groups
        .iter()
        .find(|g| g.name == "eu")
        .expect("eu committed");
    assert_eq!(eu.master_zone, "eu-1");
    fleet.converge(false, 3).unwrap();
    for name in ["eu-1", "eu-2"] {
        assert_eq!(
            status_reason(&fleet.plan_zone(name).plan.conditions, READY).0,
            "True",
            "{name}"
        );
    }
}

#[test]
fn deleting_the_realm_master_waits_for_the_zones_of_every_zonegroup() {
    let mut fleet = two_zonegroups();
    fleet.converge(false, 4).unwrap();
    fleet.zone_object_mut("us-east").deleting = true;
    let plan = fleet.plan_zone("us-east");
    assert_waits(
        &plan.plan,
        reason::WAITING_FOR_DEPENDENCY,
        "other zones exist: eu-1, eu-2, us-west",
    );
}

#[test]
fn deleting_the_last_zone_of_another_zonegroup_deletes_the_zonegroup_on_the_master_site() {
    let mut fleet = two_zonegroups();
    fleet.converge(false, 4).unwrap();
    fleet.zone_object_mut("eu-1").deleting = true;
    let waits = fleet.plan_zone("eu-1");
    assert_waits(
        &waits.plan,
        reason::WAITING_FOR_DEPENDENCY,
        "while its other zones exist: eu-2",
    );

    fleet.zone_object_mut("eu-2").deleting = true;
    fleet.converge(false, 3).unwrap();
    assert!(
        fleet.zones.iter().all(|z| !z.name.starts_with("eu")),
        "both eu zones went"
    );
    let period = fleet.world.state("site-b").unwrap().period.unwrap();
    assert_eq!(
        period
            .zone_groups
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>(),
        ["us"]
    );
}
