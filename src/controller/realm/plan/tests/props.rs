//! Properties of the realm planner, run together with the zone planner the way the two controllers share a
//! realm: any realm with one or two zonegroups converges and then plans nothing, policy edits converge again,
//! conflicting masters plan nothing, conditions are kstatus-consistent whatever is observed, and tearing
//! everything down removes the realm unless it is retained.

use proptest::{prelude::*, sample::subsequence};

use crate::{
    agent::{Step, SyncGroup},
    api::{
        common::DeletionPolicy,
        conditions::{reason, READY, STALLED},
        realm::CephRealmSpec,
    },
    controller::{
        realm::plan::plan,
        testing::{
            bucket_group,
            fleet::{Fleet, SITES},
            mirror_group, realm, unreachable_agent, zone, MASTER_GROUP,
        },
    },
    plan::testing::{find, kstatus_violation, rendered},
};

/// Zonegroup `eu` with a master zone on `site` and maybe a secondary on another site.
#[derive(Clone, Debug)]
struct Europe {
    master_site: usize,
    secondary: bool,
}

#[derive(Clone, Debug)]
struct Layout {
    us_master_site: usize,
    us_secondaries: usize,
    europe: Option<Europe>,
}

fn layouts() -> impl Strategy<Value = Layout> {
    (0..3usize, 0..3usize, prop::option::of((0..3usize, any::<bool>()))).prop_map(
        |(us_master_site, us_secondaries, europe)| Layout {
            us_master_site,
            us_secondaries,
            europe: europe.map(|(master_site, secondary)| Europe {
                master_site,
                secondary,
            }),
        },
    )
}

/// A zonegroup's policy: none, or some of a mirror group between its zones and a bucket group.
fn policies() -> impl Strategy<Value = Option<Vec<usize>>> {
    prop::option::of(subsequence(vec![0, 1], 0..=2))
}

fn policy_of(choice: &Option<Vec<usize>>, zones: &[String]) -> Option<Vec<SyncGroup>> {
    let names: Vec<&str> = zones.iter().map(String::as_str).collect();
    choice.as_ref().map(|chosen| {
        chosen
            .iter()
            .map(|which| match which {
                0 => mirror_group("all", &names),
                _ => bucket_group("logs", "logs", names[0], names[names.len() - 1]),
            })
            .collect()
    })
}

fn spec_of(
    layout: &Layout,
    us: &Option<Vec<usize>>,
    eu: &Option<Vec<usize>>,
    fleet: &Fleet,
) -> CephRealmSpec {
    let zones_of = |group: &str| -> Vec<String> {
        let zones = fleet.zones.iter().filter(|z| z.spec.zone_group == group);
        zones.map(|z| z.name.clone()).collect()
    };
    let mut spec = realm();
    if let Some(groups) = policy_of(us, &zones_of(MASTER_GROUP)) {
        spec = spec.policy(MASTER_GROUP, groups);
    }
    if layout.europe.is_some() {
        spec = spec.zone_group("eu");
        if let Some(groups) = policy_of(eu, &zones_of("eu")) {
            spec = spec.policy("eu", groups);
        }
    }
    spec.build()
}

fn fleet_of(layout: &Layout, us: &Option<Vec<usize>>, eu: &Option<Vec<usize>>) -> Fleet {
    let mut fleet = Fleet::new(realm().build()).zone(zone("us-east", SITES[layout.us_master_site]).master());
    let others = (1..3).map(|offset| SITES[(layout.us_master_site + offset) % 3]);
    for (site, name) in others.zip(["us-west", "us-south"]).take(layout.us_secondaries) {
        fleet = fleet.zone(zone(name, site));
    }
    if let Some(europe) = &layout.europe {
        fleet = fleet.zone(zone("eu-1", SITES[europe.master_site]).in_group("eu").master());
        if europe.secondary {
            fleet = fleet.zone(zone("eu-2", SITES[(europe.master_site + 1) % 3]).in_group("eu"));
        }
    }
    fleet.realm = spec_of(layout, us, eu, &fleet);
    fleet
}

fn fleets() -> impl Strategy<Value = Fleet> {
    (layouts(), policies(), policies()).prop_map(|(layout, us, eu)| fleet_of(&layout, &us, &eu))
}

/// Everything converged: no steps anywhere, every object Ready, every zonegroup committed with its master
/// zone and every site holding the spec's policies.
fn assert_converged(fleet: &Fleet) -> Result<(), TestCaseError> {
    let realm_plan = fleet.plan_realm();
    prop_assert!(
        realm_plan.plan.steps.is_empty(),
        "realm: {:?}",
        rendered(&realm_plan.plan.steps)
    );
    prop_assert_eq!(&realm_plan, &fleet.plan_realm(), "planning is deterministic");
    prop_assert_eq!(
        &find(&realm_plan.plan.conditions, READY).status,
        "True",
        "{:?}",
        realm_plan.plan.conditions
    );
    prop_assert_eq!(realm_plan.status.master_zone.as_deref(), Some("us-east"));
    for object in &fleet.zones {
        let zone_plan = fleet.plan_zone(&object.name);
        prop_assert!(
            zone_plan.plan.steps.is_empty(),
            "{}: {:?}",
            object.name,
            rendered(&zone_plan.plan.steps)
        );
        let ready = find(&zone_plan.plan.conditions, READY);
        prop_assert_eq!(&ready.status, "True", "{}: {}", object.name, ready.message);
    }
    for (site, model) in &fleet.world.sites {
        let Some(copy) = &model.realm else { continue };
        let period = copy.period.as_ref();
        for group in &fleet.realm.zone_groups {
            let committed = period.and_then(|p| p.config.zone_groups.get(&group.name));
            let master = fleet
                .zones
                .iter()
                .find(|z| z.spec.master && z.spec.zone_group == group.name);
            prop_assert_eq!(
                committed.map(|g| g.info.master_zone.as_str()),
                master.map(|z| z.name.as_str()),
                "{} on {}",
                group.name,
                site
            );
            // The period holds the zonegroup's own groups; bucket groups are bucket metadata.
            let desired: Vec<_> = group
                .sync_policy
                .iter()
                .flat_map(|p| &p.groups)
                .filter(|g| g.bucket.is_none())
                .cloned()
                .collect();
            prop_assert_eq!(
                committed.map(|g| &g.policy),
                Some(&desired),
                "{} on {}",
                group.name,
                site
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn a_realm_and_its_zones_converge_together_and_then_plan_nothing(fleet in fleets()) {
        let mut fleet = fleet;
        let rounds = fleet.converge(false, 8);
        prop_assert!(rounds.is_ok(), "{}", rounds.unwrap_err());
        assert_converged(&fleet)?;
    }

    #[test]
    fn policy_and_zonegroup_edits_converge_again(
        layout in layouts(),
        before in (policies(), policies()),
        after in (policies(), policies()),
    ) {
        let mut fleet = fleet_of(&layout, &before.0, &before.1);
        prop_assert!(fleet.converge(false, 8).is_ok());
        let edited = fleet_of(&layout, &after.0, &after.1);
        fleet.realm = edited.realm;
        let rounds = fleet.converge(false, 4);
        prop_assert!(rounds.is_ok(), "{}", rounds.unwrap_err());
        assert_converged(&fleet)?;
    }

    #[test]
    fn conflicting_masters_plan_nothing_for_the_realm(fleet in fleets(), claimant in 0..5usize, progress in 0..8usize) {
        let mut fleet = fleet;
        for _ in 0..progress {
            let round = fleet.round(false);
            prop_assert!(round.is_ok(), "{}", round.unwrap_err());
        }
        let index = claimant % fleet.zones.len();
        let group = fleet.zones[index].spec.zone_group.clone();
        fleet.zones[index].spec.master = true;
        let result = fleet.plan_realm();
        let claims = fleet.zones.iter().filter(|z| z.spec.master && z.spec.zone_group == group).count();
        prop_assume!(claims > 1, "the claimant was the master already");
        prop_assert!(result.plan.steps.is_empty(), "{:?}", rendered(&result.plan.steps));
        prop_assert_eq!(&find(&result.plan.conditions, STALLED).reason, reason::CONFLICT);
    }

    #[test]
    fn realm_conditions_are_kstatus_consistent_whatever_is_observed(
        fleet in fleets(),
        progress in 0..8usize,
        (unreachable, unobserved, deleting, retain) in (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        kept_zones in prop::collection::vec(any::<bool>(), 5),
        holding in subsequence(SITES.to_vec(), 0..=3),
    ) {
        let mut fleet = fleet;
        for _ in 0..progress {
            let round = fleet.round(false);
            prop_assert!(round.is_ok(), "{}", round.unwrap_err());
        }
        let mut spec = fleet.realm.clone();
        if retain {
            spec.deletion_policy = DeletionPolicy::Retain;
        }
        let mut kept = kept_zones.into_iter();
        fleet.zones.retain(|_| kept.next().unwrap_or(true));
        let master_site = fleet.realm_master().map(|z| z.spec.site.clone());
        let mut observed = fleet.realm_observed();
        if unreachable && observed.master_site.is_some() {
            observed.master_site = Some(Err(unreachable_agent(master_site.as_deref().unwrap_or_default())));
        }
        if unobserved {
            observed.master_site = None;
        }
        observed.deleting = deleting;
        observed.sites_holding_realm = holding.iter().map(|s| s.to_string()).collect();
        let result = plan(&spec, &observed, fleet.now);
        let conditions = &result.plan.conditions;
        prop_assert_eq!(kstatus_violation(conditions), None);
        prop_assert_eq!(&result.status.conditions, conditions);
        if !result.plan.steps.is_empty() {
            prop_assert_eq!(&find(conditions, READY).status, "False", "Ready while steps are planned");
        }
        prop_assert!(!result.cleanup_complete || (deleting && result.plan.steps.is_empty()));
        for step in &result.plan.steps {
            let deletes = matches!(step.step, Step::DeleteRealm { .. });
            prop_assert_eq!(deletes, deleting, "{}", step);
            if deleting {
                prop_assert!(holding.contains(&step.site.as_str()) && fleet.zones.is_empty(), "{}", step);
            } else {
                prop_assert_eq!(Some(&step.site), master_site.as_ref(), "{} off the master site", step);
            }
        }
    }

    #[test]
    fn tearing_everything_down_removes_the_realm_unless_retained(fleet in fleets(), retain in any::<bool>()) {
        let mut fleet = fleet;
        prop_assert!(fleet.converge(false, 8).is_ok());
        if retain {
            fleet.realm.deletion_policy = DeletionPolicy::Retain;
        }
        fleet.realm_deleting = true;
        for object in &mut fleet.zones {
            object.deleting = true;
        }
        let rounds = fleet.converge(false, 8);
        prop_assert!(rounds.is_ok(), "{}", rounds.unwrap_err());
        prop_assert!(fleet.realm_gone, "the realm's finalizer stayed");
        prop_assert!(fleet.zones.is_empty(), "zones left: {}", fleet.pending());
        for (site, model) in &fleet.world.sites {
            let zones = model.realm.as_ref().map(|r| r.zones.len()).unwrap_or_default();
            prop_assert_eq!(zones, 0, "zones left on {}", site);
            if !retain {
                prop_assert!(model.realm.is_none(), "realm left on {}", site);
            }
        }
    }
}
