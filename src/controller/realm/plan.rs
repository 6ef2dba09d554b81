//! Pure planner for `CephRealm`: the realm and its zonegroups on the master zone's site.
//!
//! The realm controller owns the realm, its zonegroups and their sync policies; zones belong to the zone
//! controller, which also commits the first period (Ceph refuses to commit a period without a master zone).

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::{
    agent::{AgentError, Period, RgwRealmState, Step, SyncGroup},
    api::{
        common::DeletionPolicy,
        conditions::reason,
        realm::{CephRealmSpec, CephRealmStatus, PeriodStatus, ZoneGroupSpec},
    },
    plan::{describe, Health, Plan, SiteStep},
};

#[cfg(test)]
mod tests;

/// Look again soon while something is changing or awaited.
const REQUEUE_CONVERGING: Duration = Duration::from_secs(5);
/// A converged or stalled realm changes only when someone edits it; the watch wakes us for that.
const REQUEUE_IDLE: Duration = Duration::from_secs(60);

/// A `CephZone` of this realm, as the realm controller sees it from the cache.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberZone {
    /// Zone name in Ceph.
    pub zone: String,
    pub zone_group: String,
    /// `CephSite` resource name.
    pub site: String,
    pub master: bool,
    pub endpoints: Vec<String>,
}

/// A zonegroup's name and its sync policy groups.
pub type ZoneGroupPolicy = (String, Vec<SyncGroup>);

#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub realm: String,
    pub zones: Vec<MemberZone>,
    /// The realm on the master zone's site, with the sync policy of each zonegroup; `Err` says why it could
    /// not be observed. `None` when no master zone is known (nothing to observe yet).
    pub master_site: Option<Result<(RgwRealmState, Vec<ZoneGroupPolicy>), AgentError>>,
    /// The period's master zone as the realm's status last recorded it (see [`acting_master`]).
    pub last_master: Option<String>,
    /// `CephSite`s whose cluster still holds the realm, observed while deleting. Once the last `CephZone`
    /// is gone the master site can no longer be told from the zones, so the reconciler names the sites to
    /// remove the realm from (the former master's, and any that pulled a copy).
    pub sites_holding_realm: Vec<String>,
    pub deleting: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RealmPlan {
    pub plan: Plan,
    pub status: CephRealmStatus,
    /// While deleting: no site holds the realm any more (or the policy keeps it), so the finalizer may go.
    /// An empty plan is not enough: while zones remain, nothing is planned yet the realm is still in Ceph.
    pub cleanup_complete: bool,
}

pub fn plan(spec: &CephRealmSpec, observed: &Observed, _now: Timestamp) -> RealmPlan {
    if observed.deleting {
        return plan_deletion(spec, observed);
    }
    let (master, state, policies) = match master_site(spec, observed) {
        Ok(found) => found,
        Err(health) => return health.into_plan(Vec::new(), CephRealmStatus::default()),
    };
    let steps = realm_steps(spec, observed, master, state, policies);
    let health = if steps.is_empty() {
        readiness(spec, &observed.zones, state)
    } else {
        let mut message = format!("applying {}", describe(&steps));
        let creates = steps
            .iter()
            .any(|s| matches!(s.step, Step::CreateRealm { .. } | Step::CreateZoneGroup { .. }));
        if creates && !steps.iter().any(|s| matches!(s.step, Step::CommitPeriod { .. })) {
            message.push_str(&format!(
                "; the period is committed once zone {} exists (the CephZone controller creates it)",
                master.zone
            ));
        }
        Health::progressing(reason::PROGRESSING, message)
    };
    health.into_plan(steps, status_of(state))
}

/// The zone whose site the realm is run from: the period's master zone as the realm's status last saw it,
/// when it is a `CephZone` of the master zonegroup (a FailoverRequest may have moved it there), else the
/// master zone the `CephZone`s declare. Metadata changes belong on the metadata master; another site would
/// forward its commits from its own, possibly stale, copy of the zonegroups.
pub fn acting_master<'a>(
    spec: &CephRealmSpec,
    zones: &'a [MemberZone],
    last_master: Option<&str>,
) -> Option<&'a MemberZone> {
    let master_group = &spec.master_zone_group()?.name;
    let committed = last_master.and_then(|name| {
        zones
            .iter()
            .find(|z| z.zone == name && z.zone_group == *master_group)
    });
    committed.or_else(|| zone_group_master(zones, master_group))
}

/// The master zone of the master zonegroup and what its site reports, or why the realm cannot be planned.
fn master_site<'a>(
    spec: &CephRealmSpec,
    observed: &'a Observed,
) -> Result<(&'a MemberZone, &'a RgwRealmState, &'a [ZoneGroupPolicy]), Health> {
    if let Some(conflict) = conflicting_masters(&observed.zones) {
        return Err(conflict);
    }
    let Some(master_group) = spec.master_zone_group() else {
        return Err(Health::stalled(
            reason::INVALID_SPEC,
            "no zoneGroup has master: true",
        ));
    };
    let Some(master) = acting_master(spec, &observed.zones, observed.last_master.as_deref()) else {
        return Err(Health::progressing(
            reason::WAITING_FOR_DEPENDENCY,
            format!("no CephZone is master of zonegroup {}", master_group.name),
        ));
    };
    match &observed.master_site {
        None => Err(Health::progressing(
            reason::PROGRESSING,
            format!("realm not observed on site {} yet", master.site),
        )),
        Some(Err(error)) => Err(Health::progressing(
            error.reason(),
            format!(
                "cannot read realm {} on site {}: {error}",
                observed.realm, master.site
            ),
        )),
        Some(Ok((state, policies))) => Ok((master, state, policies.as_slice())),
    }
}

/// Two zones claiming master of one zonegroup: Ceph would take whichever committed last, so nothing moves
/// until a human settles it.
fn conflicting_masters(zones: &[MemberZone]) -> Option<Health> {
    let mut groups: Vec<&str> = zones.iter().map(|z| z.zone_group.as_str()).collect();
    groups.sort_unstable();
    groups.dedup();
    groups.into_iter().find_map(|group| {
        let claims: Vec<&str> = zones
            .iter()
            .filter(|z| z.master && z.zone_group == group)
            .map(|z| z.zone.as_str())
            .collect();
        (claims.len() > 1).then(|| {
            Health::stalled(
                reason::CONFLICT,
                format!(
                    "zones {} all claim master of zonegroup {group}",
                    claims.join(" and ")
                ),
            )
        })
    })
}

fn zone_group_master<'a>(zones: &'a [MemberZone], zone_group: &str) -> Option<&'a MemberZone> {
    zones.iter().find(|z| z.master && z.zone_group == zone_group)
}

/// Realm, master zonegroup, sync policies, and the commit that publishes them, all on the master site.
/// Another zonegroup is created by its master zone's controller, where that zone runs: Ceph commits no period
/// with a zonegroup that has no master zone, so one created here ahead of its zone would block every commit.
fn realm_steps(
    spec: &CephRealmSpec,
    observed: &Observed,
    master: &MemberZone,
    state: &RgwRealmState,
    policies: &[(String, Vec<SyncGroup>)],
) -> Vec<SiteStep> {
    let realm = &observed.realm;
    let on_master = |step| SiteStep::new(&master.site, step);
    let mut steps = Vec::new();
    if state.realm_id.is_none() {
        steps.push(on_master(Step::CreateRealm { realm: realm.clone() }));
    }
    let period = state.period.as_ref();
    let committed = |name: &str| period.is_some_and(|p| p.zone_groups.iter().any(|g| g.name == name));
    for group in spec.zone_groups.iter().filter(|g| g.master) {
        if !committed(&group.name) {
            let endpoints = zone_group_master(&observed.zones, &group.name)
                .map(|z| z.endpoints.clone())
                .unwrap_or_default();
            steps.push(on_master(Step::CreateZoneGroup {
                realm: realm.clone(),
                zone_group: group.name.clone(),
                endpoints,
                master: group.master,
            }));
        }
    }
    let master_zone_exists = state.local_zones.iter().any(|z| z.name == master.zone)
        || period.is_some_and(|p| {
            p.zone_groups
                .iter()
                .any(|g| g.zones.iter().any(|z| z.name == master.zone))
        });
    // A zonegroup's policy is set once the zonegroup is on this site: the master one is created above, the
    // others arrive with the period that commits them. `radosgw-admin sync group` also needs a zone to run
    // in: before the master zone exists it fails ("Cannot find zone id"), so policies wait for it, and for
    // every zone they name (see `zones_not_in_period`).
    let policy_groups = spec.zone_groups.iter().filter(|g| {
        master_zone_exists && (g.master || committed(&g.name)) && zones_not_in_period(g, period).is_empty()
    });
    // A commit makes every RGW reload its realm, after which a secondary's metadata sync stalls for a minute
    // or more (measured on 16.2.15); bucket-level groups live in bucket metadata, which metadata sync
    // carries, so only what the period holds is committed: new realm objects and zonegroup-level groups.
    let mut period_changed = !steps.is_empty();
    for group in policy_groups {
        let desired = group
            .sync_policy
            .as_ref()
            .map(|p| p.groups.as_slice())
            .unwrap_or_default();
        let current = policies
            .iter()
            .find(|(name, _)| *name == group.name)
            .map(|(_, groups)| groups.as_slice())
            .unwrap_or_default();
        if canonical(desired) != canonical(current) {
            period_changed |= canonical(&zone_group_level(desired)) != canonical(&zone_group_level(current));
            steps.push(on_master(Step::SetSyncPolicy {
                realm: realm.clone(),
                zone_group: group.name.clone(),
                groups: desired.to_vec(),
            }));
        }
    }
    if period_changed && master_zone_exists {
        steps.push(on_master(Step::CommitPeriod { realm: realm.clone() }));
    }
    steps
}

/// Zones the zonegroup's policy names that its committed zonegroup lacks. `radosgw-admin` stores a zone
/// name it cannot resolve as is, which never matches the zone's id once the zone exists, and prints it
/// back by that name: a policy set before its zones would look applied and sync nothing.
fn zones_not_in_period<'a>(group: &'a ZoneGroupSpec, period: Option<&Period>) -> Vec<&'a str> {
    let members = period
        .and_then(|p| p.zone_groups.iter().find(|g| g.name == group.name))
        .map(|g| g.zones.as_slice())
        .unwrap_or_default();
    let groups = group.sync_policy.iter().flat_map(|p| &p.groups);
    let flow_zones = groups.clone().flat_map(|g| &g.flows).flat_map(|flow| {
        flow.zones
            .iter()
            .chain(flow.source_zone.as_ref())
            .chain(flow.dest_zone.as_ref())
    });
    let pipe_zones = groups
        .flat_map(|g| &g.pipes)
        .flat_map(|pipe| pipe.source_zones.iter().chain(&pipe.dest_zones));
    let mut missing: Vec<&str> = flow_zones
        .chain(pipe_zones)
        .map(String::as_str)
        .filter(|zone| *zone != "*" && !members.iter().any(|m| m.name == *zone))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    missing
}

/// The groups of a zonegroup's own policy, the part of it that lives in the period.
fn zone_group_level(groups: &[SyncGroup]) -> Vec<SyncGroup> {
    groups.iter().filter(|g| g.bucket.is_none()).cloned().collect()
}

/// Sync groups in one canonical form: Ceph keeps groups, flows, pipes and zone lists in maps and sets, and
/// spells unset buckets as `*`, so it returns the same policy in another shape than the spec wrote it.
fn canonical(groups: &[SyncGroup]) -> Vec<SyncGroup> {
    let wildcard_as_unset = |value: &mut Option<String>| {
        if value.as_deref().is_some_and(|v| v.is_empty() || v == "*") {
            *value = None;
        }
    };
    let mut groups = groups.to_vec();
    for group in &mut groups {
        for flow in &mut group.flows {
            flow.zones.sort();
        }
        group.flows.sort_by(|a, b| a.id.cmp(&b.id));
        for pipe in &mut group.pipes {
            pipe.source_zones.sort();
            pipe.dest_zones.sort();
            wildcard_as_unset(&mut pipe.source_bucket);
            wildcard_as_unset(&mut pipe.dest_bucket);
            if pipe.prefix.as_deref() == Some("") {
                pipe.prefix = None;
            }
        }
        group.pipes.sort_by(|a, b| a.id.cmp(&b.id));
    }
    groups.sort_by(|a, b| (&a.bucket, &a.id).cmp(&(&b.bucket, &b.id)));
    groups
}

/// Ready once every declared zonegroup is committed with one of its `CephZone`s as master (the declared one,
/// or another a failover moved it to) and with the zones its policy names; policies were compared while
/// planning (no steps means they are equal).
fn readiness(spec: &CephRealmSpec, zones: &[MemberZone], state: &RgwRealmState) -> Health {
    let Some(period) = &state.period else {
        return Health::progressing(reason::PROGRESSING, "the realm has no period yet");
    };
    for group in &spec.zone_groups {
        let Some(master) = zone_group_master(zones, &group.name) else {
            return Health::progressing(
                reason::WAITING_FOR_DEPENDENCY,
                format!("no CephZone is master of zonegroup {}", group.name),
            );
        };
        let committed_master = period
            .zone_groups
            .iter()
            .find(|g| g.name == group.name)
            .map(|g| &g.master_zone);
        let is_member = |name: &String| {
            zones
                .iter()
                .any(|z| z.zone == *name && z.zone_group == group.name)
        };
        if !committed_master.is_some_and(is_member) {
            return Health::progressing(
                reason::WAITING_FOR_DEPENDENCY,
                format!(
                    "period epoch {} does not have zone {} as master of zonegroup {} yet",
                    period.epoch, master.zone, group.name
                ),
            );
        }
        let missing = zones_not_in_period(group, Some(period));
        if !missing.is_empty() {
            return Health::progressing(
                reason::WAITING_FOR_DEPENDENCY,
                format!(
                    "the sync policy of zonegroup {} waits for zone {} to join it in the period",
                    group.name,
                    missing.join(", ")
                ),
            );
        }
    }
    Health::Ready(format!(
        "realm at period epoch {} with master zone {} of zonegroup {}",
        period.epoch, period.master_zone, period.master_zone_group
    ))
}

fn status_of(state: &RgwRealmState) -> CephRealmStatus {
    let period = state.period.as_ref();
    let named = |name: Option<&String>| name.filter(|n| !n.is_empty()).cloned();
    CephRealmStatus {
        realm_id: state.realm_id.clone(),
        period: period.map(|p| PeriodStatus {
            id: p.id.clone(),
            epoch: p.epoch,
        }),
        master_zone_group: named(period.map(|p| &p.master_zone_group)),
        master_zone: named(period.map(|p| &p.master_zone)),
        ..CephRealmStatus::default()
    }
}

/// Zones go first (their own finalizers remove them from the period); the realm follows once none is left.
fn plan_deletion(spec: &CephRealmSpec, observed: &Observed) -> RealmPlan {
    if spec.deletion_policy == DeletionPolicy::Retain {
        return Health::progressing(
            reason::PROGRESSING,
            "deleting; the realm stays in Ceph (deletionPolicy Retain)",
        )
        .into_plan(Vec::new(), CephRealmStatus::default())
        .cleanup_complete(true);
    }
    if !observed.zones.is_empty() {
        let names: Vec<&str> = observed.zones.iter().map(|z| z.zone.as_str()).collect();
        return Health::progressing(
            reason::WAITING_FOR_DEPENDENCY,
            format!("zones still exist: {}", names.join(", ")),
        )
        .into_plan(Vec::new(), CephRealmStatus::default());
    }
    let steps: Vec<SiteStep> = observed
        .sites_holding_realm
        .iter()
        .map(|site| {
            SiteStep::new(
                site,
                Step::DeleteRealm {
                    realm: observed.realm.clone(),
                },
            )
        })
        .collect();
    let message = if steps.is_empty() {
        "deleting; the realm is gone from every site".to_string()
    } else {
        format!("deleting: {}", describe(&steps))
    };
    let gone = steps.is_empty();
    Health::progressing(reason::PROGRESSING, message)
        .into_plan(steps, CephRealmStatus::default())
        .cleanup_complete(gone)
}

impl Health {
    fn into_plan(self, steps: Vec<SiteStep>, status: CephRealmStatus) -> RealmPlan {
        let requeue = if self.settled(&steps) {
            REQUEUE_IDLE
        } else {
            REQUEUE_CONVERGING
        };
        let conditions = self.conditions();
        RealmPlan {
            plan: Plan {
                steps,
                conditions: conditions.clone(),
                requeue,
            },
            status: CephRealmStatus { conditions, ..status },
            cleanup_complete: false,
        }
    }
}

impl RealmPlan {
    fn cleanup_complete(self, complete: bool) -> RealmPlan {
        RealmPlan {
            cleanup_complete: complete,
            ..self
        }
    }
}
