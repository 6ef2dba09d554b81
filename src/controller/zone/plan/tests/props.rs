//! Properties: zones converge from any partial setup or drift and then plan nothing, no zonegroup ever gets
//! a second master, conditions are kstatus-consistent whatever is observed, and a wedged metadata sync is
//! recovered at most once per episode.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use proptest::{prelude::*, sample::subsequence};

use super::{converged_pair, init_shards, plan, probe, shards, west_sync};
use crate::{
    agent::{AgentResult, Step, SyncShards, SystemKeys, ZoneSync},
    api::{
        common::DeletionPolicy,
        conditions::{condition, READY, SYNCED},
        zone::{CephZoneStatus, SyncProgress, ZoneRole, ZoneSyncStatus},
    },
    controller::{
        testing::{
            fleet::{at, Fleet, EPOCH, SITES},
            keys, realm, unreachable_agent, zone, ZoneBuilder,
        },
        zone::plan::WEDGED,
    },
    plan::testing::{find, kstatus_violation, rendered},
};

const SECONDARIES: [&str; 2] = ["us-west", "us-south"];

/// A zone's options: read-only, an RPO target, a second endpoint.
fn options() -> impl Strategy<Value = (bool, Option<u32>, bool)> {
    (any::<bool>(), prop::option::of(30u32..3600), any::<bool>())
}

fn with_options(
    zone: ZoneBuilder,
    (read_only, rpo, two_endpoints): (bool, Option<u32>, bool),
) -> ZoneBuilder {
    let mut zone = zone;
    if read_only {
        zone = zone.read_only();
    }
    if let Some(rpo) = rpo {
        zone = zone.rpo(rpo);
    }
    if two_endpoints {
        let first = zone.spec.endpoints[0].clone();
        zone.spec.endpoints.push(first.replace(":8080", ":8443"));
    }
    zone
}

/// A master `us-east` on any site and up to two secondaries on the other sites.
fn fleets() -> impl Strategy<Value = Fleet> {
    (
        0..3usize,
        subsequence(SECONDARIES.to_vec(), 0..=2),
        options(),
        prop::collection::vec(options(), 2),
    )
        .prop_map(|(master_site, secondaries, master_options, secondary_options)| {
            let mut fleet = Fleet::new(realm().build()).zone(with_options(
                zone("us-east", SITES[master_site]).master(),
                master_options,
            ));
            let others = SITES.iter().filter(|s| **s != SITES[master_site]);
            for ((name, site), options) in secondaries.iter().zip(others).zip(secondary_options) {
                fleet = fleet.zone(with_options(zone(name, site), options));
            }
            fleet
        })
}

/// How a zone may have drifted from its spec after being set up: by hand, or by a lost cluster object.
#[derive(Clone, Copy, Debug)]
enum Drift {
    None,
    LostZoneObject,
    RotatedKey,
    StaleEndpoints,
    FlippedReadOnly,
}

fn drifts() -> impl Strategy<Value = Drift> {
    prop_oneof![
        3 => Just(Drift::None),
        1 => Just(Drift::LostZoneObject),
        1 => Just(Drift::RotatedKey),
        1 => Just(Drift::StaleEndpoints),
        1 => Just(Drift::FlippedReadOnly),
    ]
}

fn drift(fleet: &mut Fleet, name: &str, drift: Drift) {
    let site = fleet.zone_object(name).spec.site.clone();
    let world = &mut fleet.world;
    match drift {
        Drift::None => {}
        Drift::LostZoneObject => {
            if let Some(realm) = world.realm_mut(&site) {
                realm.zones.remove(name);
            }
        }
        Drift::RotatedKey => {
            let local = world.realm_mut(&site).and_then(|r| r.zones.get_mut(name));
            if let Some(local) = local {
                local.keys = Some(SystemKeys {
                    access_key: "ROTATED".into(),
                    ..keys()
                });
            }
        }
        Drift::StaleEndpoints => {
            world.edit_zone_everywhere(name, |z| z.endpoints = vec!["http://old:80".into()])
        }
        Drift::FlippedReadOnly => world.edit_zone_everywhere(name, |z| z.read_only = !z.read_only),
    }
}

/// `fleet` with the realm in Ceph, the first reconcile of some zones run, then each zone drifted.
fn started(mut fleet: Fleet, first: &[bool], drifts: &[Drift]) -> Fleet {
    fleet = fleet.with_realm_in_ceph();
    let names: Vec<String> = fleet.zones.iter().map(|z| z.name.clone()).collect();
    for (name, run) in names.iter().zip(first) {
        if *run {
            let plan = fleet.plan_zone(name);
            // A secondary's first pull fails while its master is not set up: the reconcile retries.
            fleet.apply(&plan.plan.steps).ok();
            fleet.record_zone(name, &plan);
        }
    }
    for (name, how) in names.iter().zip(drifts) {
        drift(&mut fleet, name, *how);
    }
    fleet
}

/// Makes-master steps of one round, as (zonegroup, zone).
fn made_masters(steps: &[crate::plan::SiteStep]) -> Vec<(String, String)> {
    steps
        .iter()
        .filter_map(|s| match &s.step {
            Step::CreateZone {
                zone_group,
                zone,
                master: true,
                ..
            }
            | Step::ModifyZone {
                zone_group,
                zone,
                master: Some(true),
                ..
            } => Some((zone_group.clone(), zone.clone())),
            _ => None,
        })
        .collect()
}

/// Metadata sync as one probe sees it: caught up, stuck on the change of `EPOCH - 300`, in `init`, or
/// moving (its oldest change `age` seconds old).
fn metadata_probes() -> impl Strategy<Value = (u8, i64, i64)> {
    (0..4u8, 0i64..400, 1i64..200)
}

fn metadata_of(kind: u8, age: i64, now: i64) -> SyncShards {
    match kind {
        0 => shards(0, None),
        1 => shards(4, Some(at(EPOCH - 300))),
        2 => init_shards(),
        _ => shards(4, Some(at(now - age))),
    }
}

/// Any previous status a zone may carry: figures of an earlier probe, and `Synced` and `Wedged` since some
/// time.
fn previous_statuses() -> impl Strategy<Value = Option<CephZoneStatus>> {
    prop::option::of((
        prop::option::of((0..3u8, 0u32..64, prop::option::of(0u64..1000))),
        0i64..1000,
        any::<bool>(),
        prop::option::of(0i64..1000),
    ))
    .prop_map(|previous| {
        previous.map(|(metadata, checked_ago, synced, wedged_ago)| {
            let mut conditions = vec![condition(SYNCED, synced, "Any", "", None)];
            if let Some(ago) = wedged_ago {
                let mut wedged = condition(WEDGED, true, "MetadataSyncStuck", "", None);
                wedged.last_transition_time = Time(at(EPOCH - ago));
                conditions.push(wedged);
            }
            CephZoneStatus {
                sync: Some(ZoneSyncStatus {
                    metadata: metadata.map(|(state, behind, oldest)| SyncProgress {
                        state: ["init", "sync", "behind"][usize::from(state)].into(),
                        behind_shards: behind,
                        oldest_change_seconds: oldest,
                    }),
                    data: Vec::new(),
                }),
                last_sync_check: Some(Time(at(EPOCH - checked_ago))),
                conditions,
                ..CephZoneStatus::default()
            }
        })
    })
}

fn sync_answers() -> impl Strategy<Value = Option<AgentResult<ZoneSync>>> {
    let one = (0..3u8, 0u32..64, prop::option::of(0i64..1000)).prop_map(|(state, behind, age)| match state {
        0 => init_shards(),
        1 => SyncShards {
            full_sync_shards: behind,
            ..shards(behind, age.map(|a| at(EPOCH - a)))
        },
        _ => shards(behind, age.map(|a| at(EPOCH - a))),
    });
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(Err(unreachable_agent("site-b")))),
        4 => (one.clone(), one).prop_map(|(m, d)| Some(Ok(west_sync(m, d)))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn zones_converge_from_any_partial_setup_and_then_plan_nothing(
        fleet in fleets(),
        first in any::<[bool; 3]>(),
        drifts in prop::collection::vec(drifts(), 3),
    ) {
        let mut fleet = started(fleet, &first, &drifts);
        let rounds = fleet.converge(true, 4);
        prop_assert!(rounds.is_ok(), "{}", rounds.unwrap_err());
        let periods: Vec<_> = SITES.iter().filter_map(|s| fleet.world.state(s).ok()?.period).collect();
        prop_assert!(periods.windows(2).all(|w| w[0] == w[1]), "sites disagree: {:?}", periods);
        for object in &fleet.zones {
            let plan = fleet.plan_zone(&object.name);
            prop_assert!(plan.plan.steps.is_empty(), "{}: {:?}", object.name, rendered(&plan.plan.steps));
            prop_assert_eq!(&plan, &fleet.plan_zone(&object.name), "planning is deterministic");
            prop_assert_eq!(&find(&plan.plan.conditions, READY).status, "True", "{:?}", plan.plan.conditions);
            let role = if object.spec.master { ZoneRole::Master } else { ZoneRole::Secondary };
            prop_assert_eq!(plan.status.role, Some(role));
            let period = &periods[0];
            let info = period.zone_groups[0].zones.iter().find(|z| z.name == object.name);
            prop_assert!(info.is_some_and(|z| z.endpoints == object.spec.endpoints && z.read_only == object.spec.read_only));
        }
    }

    #[test]
    fn no_zonegroup_ever_gets_a_second_master(
        fleet in fleets(),
        converged_first in any::<bool>(),
        masters in prop::collection::vec(any::<bool>(), 3),
        rounds in 1..4usize,
    ) {
        let mut fleet = fleet.with_realm_in_ceph();
        if converged_first {
            prop_assert!(fleet.converge(true, 4).is_ok());
        }
        for (object, master) in fleet.zones.iter_mut().zip(masters) {
            object.spec.master = master;
        }
        let claims = fleet.zones.iter().filter(|z| z.spec.master).count();
        for _ in 0..rounds {
            let mut made = Vec::new();
            let mut reported = Vec::new();
            let names: Vec<String> = fleet.zones.iter().map(|z| z.name.clone()).collect();
            for name in &names {
                let plan = fleet.plan_zone(name);
                made.extend(made_masters(&plan.plan.steps));
                if plan.status.role == Some(ZoneRole::Master) {
                    reported.push(name.clone());
                }
                if fleet.apply(&plan.plan.steps).is_err() {
                    break;
                }
                fleet.record_zone(name, &plan);
            }
            made.sort();
            made.dedup();
            prop_assert!(claims < 2 || made.is_empty(), "{claims} claims, yet made master: {made:?}");
            prop_assert!(made.len() <= 1, "made master in one round: {made:?}");
            prop_assert!(reported.len() <= 1, "zones reporting master: {reported:?}");
            fleet.now = at(fleet.now.as_second() + 5);
        }
    }

    #[test]
    fn conditions_are_kstatus_consistent_whatever_is_observed(
        fleet in fleets(),
        first in any::<[bool; 3]>(),
        drifts in prop::collection::vec(drifts(), 3),
        which in 0..3usize,
        context in (0..3u8, any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        unreachable in any::<bool>(),
        sync in sync_answers(),
        previous in previous_statuses(),
        (deleting, retain) in (any::<bool>(), any::<bool>()),
    ) {
        let fleet = started(fleet, &first, &drifts);
        let object = &fleet.zones[which % fleet.zones.len()];
        let mut spec = object.spec.clone();
        if retain {
            spec.deletion_policy = DeletionPolicy::Retain;
        }
        let mut observed = fleet.zone_observed(&object.name);
        let (realm_id, declared, no_keys, no_endpoint, rogue_master, no_realm_master) = context;
        observed.context.realm_id = match realm_id {
            0 => None,
            1 => observed.context.realm_id,
            _ => Some("another-id".into()),
        };
        observed.context.zone_group_declared = declared;
        if no_keys {
            observed.context.keys = None;
        }
        if no_endpoint {
            observed.context.master_endpoint = None;
        }
        if rogue_master {
            observed.context.other_masters.push("rogue".into());
        }
        if no_realm_master {
            observed.context.realm_master = None;
        }
        if unreachable {
            observed.local = Err(unreachable_agent(&observed.site));
        }
        observed.sync = sync;
        observed.previous = previous;
        observed.deleting = deleting;
        let result = plan(&spec, &observed, fleet.now);
        let conditions = &result.plan.conditions;
        prop_assert_eq!(kstatus_violation(conditions), None);
        prop_assert_eq!(&result.status.conditions, conditions);
        if !result.plan.steps.is_empty() {
            prop_assert_eq!(&find(conditions, READY).status, "False", "Ready while steps are planned");
        }
        prop_assert!(!result.cleanup_complete || (deleting && result.plan.steps.is_empty()));
        let own_or_master = |site: &str| {
            site == observed.site
                || observed.context.realm_master.as_ref().is_some_and(|m| m.site == site)
                || observed.context.zone_sites.iter().any(|(_, zone_site)| zone_site == site)
        };
        for step in &result.plan.steps {
            prop_assert!(own_or_master(&step.site), "{} runs on a foreign site", step);
            let removes = matches!(step.step, Step::DeleteZone { .. });
            prop_assert_eq!(removes, deleting && !matches!(step.step, Step::CommitPeriod { .. }), "{}", step);
        }
        if deleting && retain {
            prop_assert!(result.plan.steps.is_empty() && result.cleanup_complete);
        }
    }

    #[test]
    fn a_wedged_metadata_sync_is_recovered_at_most_once_per_episode(
        probes in prop::collection::vec(metadata_probes(), 2..12),
    ) {
        let mut fleet = converged_pair();
        let mut recoveries = 0;
        for (kind, age, gap) in probes {
            let metadata = metadata_of(kind, age, fleet.now.as_second());
            let caught_up = kind == 0;
            let plan = probe(&mut fleet, Ok(west_sync(metadata, shards(0, None))), gap);
            if !plan.plan.steps.is_empty() {
                prop_assert_eq!(
                    rendered(&plan.plan.steps),
                    vec![
                        "pull-period prod from http://us-east.rgw.example:8080@site-b".to_string(),
                        "init-metadata-sync prod/us-west@site-b".to_string()
                    ]
                );
                recoveries += 1;
            }
            prop_assert!(recoveries <= 1, "recovered twice in one episode");
            if caught_up {
                recoveries = 0;
            }
        }
    }
}
