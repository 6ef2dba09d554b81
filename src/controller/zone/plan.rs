//! Pure planner for `CephZone`: the zone on its site, period commits, realm pull, sync status.
//!
//! The zone controller creates the zone, commits the periods that carry it (the first one of the realm
//! included: Ceph cannot commit a period before the master zone exists), creates the sync user on the
//! master, pulls the realm onto a secondary site, and watches the secondary's sync.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Condition, jiff::Timestamp};

use crate::{
    agent::{
        AgentError, LocalZone, Period, RgwRealmState, Step, SystemKeys, ZoneGroupInfo, ZoneInfo, ZoneSync,
    },
    api::{
        conditions::reason,
        zone::{CephZoneSpec, CephZoneStatus, ZoneRole},
    },
    plan::{describe, Health, Plan, SiteStep},
};

mod deletion;
mod sync;
#[cfg(test)]
mod tests;

pub use sync::{wedge_reason, WEDGED};

/// Look again soon while something is changing or awaited.
const REQUEUE_CONVERGING: Duration = Duration::from_secs(5);
/// A converged secondary is probed this often to keep its sync status (and wedge detection) fresh.
const REQUEUE_SECONDARY: Duration = Duration::from_secs(30);
/// A converged master or a stalled zone changes only when someone edits it; the watch wakes us for that.
const REQUEUE_IDLE: Duration = Duration::from_secs(60);

/// What the zone needs from its realm before it can be created.
#[derive(Clone, Debug, PartialEq)]
pub struct RealmContext {
    /// The realm id from `CephRealm.status` once the realm exists in Ceph.
    pub realm_id: Option<String>,
    /// Whether the zonegroup is one of the realm's (`spec.zoneGroups`).
    pub zone_group_declared: bool,
    /// The sync user's keys from the realm's Secret.
    pub keys: Option<SystemKeys>,
    /// Endpoint of the zonegroup's master zone (where secondaries pull the realm from).
    pub master_endpoint: Option<String>,
    /// Other `CephZone`s of the same zonegroup with `master: true`.
    pub other_masters: Vec<String>,
    /// The `CephZone` that is master of the realm's master zonegroup (known while the `CephRealm` exists).
    pub realm_master: Option<RealmMaster>,
    /// Where every `CephZone` of the realm runs, this one included: `(zone, CephSite)`. Tells the site of the
    /// period's master zone, where period changes are committed, even once the `CephRealm` is gone.
    pub zone_sites: Vec<(String, String)>,
}

/// The realm's master zone as its `CephZone` declares it.
#[derive(Clone, Debug, PartialEq)]
pub struct RealmMaster {
    pub zone: String,
    /// `CephSite` resource name.
    pub site: String,
    /// The zone's first endpoint.
    pub endpoint: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub zone: String,
    pub realm: String,
    /// `CephSite` resource name.
    pub site: String,
    pub context: RealmContext,
    /// The realm as the zone's site sees it; `Err` says why it could not be observed.
    pub local: Result<RgwRealmState, AgentError>,
    /// Sync status of the zone, when it exists and is a secondary.
    pub sync: Option<Result<ZoneSync, AgentError>>,
    /// Sync status figures of previous probes (newest last), for wedge detection.
    pub previous: Option<CephZoneStatus>,
    pub deleting: bool,
    /// While deleting a zone of another site than the period's master zone: the realm as the master's site
    /// sees it ([`period_master_site_to_read`] names the site).
    pub period_master: Option<Result<RgwRealmState, AgentError>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ZonePlan {
    pub plan: Plan,
    pub status: CephZoneStatus,
    /// While deleting: nothing of the zone is left in Ceph (or the policy keeps it), so the finalizer may go.
    /// An empty plan is not enough: a master waiting for its secondaries, or a site that cannot be read,
    /// plans nothing yet still holds the zone.
    pub cleanup_complete: bool,
}

/// The uid of the realm's sync system user, created on the master zone's site.
pub fn sync_user_uid(realm: &str) -> String {
    format!("cephdr-sync-{realm}")
}

/// The site whose realm a deletion must also observe, once the zone's own site has been read.
pub fn period_master_site_to_read(spec: &CephZoneSpec, observed: &Observed) -> Option<String> {
    let local = observed.local.as_ref().ok().filter(|_| observed.deleting)?;
    let view = ZoneView::of(local, &spec.zone_group, &observed.zone);
    deletion::period_master_site_to_read(spec, observed, &view)
}

pub fn plan(spec: &CephZoneSpec, observed: &Observed, now: Timestamp) -> ZonePlan {
    let local = observed.local.as_ref().ok();
    let view = local
        .map(|state| ZoneView::of(state, &spec.zone_group, &observed.zone))
        .unwrap_or_default();
    let status = CephZoneStatus {
        zone_id: view
            .local
            .map(|z| z.id.clone())
            .or_else(|| view.in_period.map(|z| z.id.clone())),
        role: view.role(),
        ..CephZoneStatus::default()
    };
    if observed.deleting {
        return deletion::plan(spec, observed, &view).into_plan(status);
    }
    let report = sync::assess(spec, observed, now);
    let status = CephZoneStatus {
        sync: report.figures.sync.clone(),
        lag_seconds: report.figures.lag_seconds,
        last_sync_check: report.figures.last_sync_check.clone(),
        ..status
    };
    let (steps, health) = match prerequisites(spec, observed) {
        Err(health) => (Vec::new(), health),
        Ok(ready) => match configuration_steps(spec, observed, &ready, &view) {
            Err(health) => (Vec::new(), health),
            Ok(steps) if !steps.is_empty() => {
                let message = format!("applying {}", describe(&steps));
                (steps, Health::progressing(reason::PROGRESSING, message))
            }
            Ok(_) => match &report.wedge {
                Some(wedge) => (wedge.recovery_steps(observed, &ready), wedge.health()),
                None => (Vec::new(), converged_health(spec, &view, &report.answer)),
            },
        },
    };
    let mut outcome = health.into_outcome(steps);
    outcome.conditions.extend(report.conditions);
    outcome.requeue = match (&outcome.health, view.role()) {
        (Health::Ready(_), Some(ZoneRole::Secondary)) => REQUEUE_SECONDARY,
        _ => outcome.requeue,
    };
    outcome.into_plan(status)
}

/// What the realm must provide before anything can be done on the site.
struct Prerequisites<'a> {
    state: &'a RgwRealmState,
    realm_id: &'a str,
    keys: &'a SystemKeys,
    /// Where to pull the realm and periods from; only secondaries need one.
    master_endpoint: Option<&'a str>,
}

fn prerequisites<'a>(spec: &CephZoneSpec, observed: &'a Observed) -> Result<Prerequisites<'a>, Health> {
    let context = &observed.context;
    if spec.master && !context.other_masters.is_empty() {
        return Err(Health::stalled(
            reason::CONFLICT,
            format!(
                "zones {} of zonegroup {} also claim master; set master: true on one zone only",
                context.other_masters.join(", "),
                spec.zone_group
            ),
        ));
    }
    let Some(realm_id) = context.realm_id.as_deref() else {
        return Err(Health::progressing(
            reason::WAITING_FOR_DEPENDENCY,
            format!("CephRealm {} has no realm id yet", observed.realm),
        ));
    };
    if !context.zone_group_declared {
        return Err(Health::progressing(
            reason::WAITING_FOR_DEPENDENCY,
            format!(
                "zonegroup {} is not declared in CephRealm {}",
                spec.zone_group, observed.realm
            ),
        ));
    }
    let Some(keys) = &context.keys else {
        return Err(Health::progressing(
            reason::SECRET_MISSING,
            format!(
                "the sync user keys of realm {} are not available yet",
                observed.realm
            ),
        ));
    };
    let master_endpoint = context.master_endpoint.as_deref();
    if !spec.master && master_endpoint.is_none() {
        return Err(Health::progressing(
            reason::WAITING_FOR_DEPENDENCY,
            format!("zonegroup {} has no master zone endpoint yet", spec.zone_group),
        ));
    }
    let state = observed
        .local
        .as_ref()
        .map_err(|error| unobserved(observed, error))?;
    Ok(Prerequisites {
        state,
        realm_id,
        keys,
        master_endpoint,
    })
}

/// The realm could not be read on the zone's site; the condition reason says what failed.
fn unobserved(observed: &Observed, error: &AgentError) -> Health {
    Health::progressing(
        error.reason(),
        format!(
            "cannot read realm {} on site {}: {error}",
            observed.realm, observed.site
        ),
    )
}

/// The zone as the site's realm state shows it: locally defined, and in the site's committed period.
#[derive(Clone, Copy, Debug, Default)]
struct ZoneView<'a> {
    period: Option<&'a Period>,
    zone_group: Option<&'a ZoneGroupInfo>,
    in_period: Option<&'a ZoneInfo>,
    local: Option<&'a LocalZone>,
}

impl<'a> ZoneView<'a> {
    fn of(state: &'a RgwRealmState, zone_group: &str, zone: &str) -> ZoneView<'a> {
        let period = state.period.as_ref();
        let group = period.and_then(|p| p.zone_groups.iter().find(|g| g.name == zone_group));
        ZoneView {
            period,
            zone_group: group,
            in_period: group.and_then(|g| g.zones.iter().find(|z| z.name == zone)),
            local: state.local_zones.iter().find(|z| z.name == zone),
        }
    }

    fn is_period_master(&self) -> bool {
        matches!((self.zone_group, self.in_period), (Some(g), Some(z)) if g.master_zone == z.name)
    }

    fn role(&self) -> Option<ZoneRole> {
        self.in_period.map(|_| {
            if self.is_period_master() {
                ZoneRole::Master
            } else {
                ZoneRole::Secondary
            }
        })
    }

    /// The first endpoint of the period's master zone, which serves the current period.
    fn period_master_endpoint(&self) -> Option<&'a str> {
        let period = self.period?;
        let mut zones = period.zone_groups.iter().flat_map(|g| g.zones.iter());
        let master = zones.find(|z| z.name == period.master_zone)?;
        master.endpoints.first().map(String::as_str)
    }

    fn epoch(&self) -> u32 {
        self.period.map_or(0, |p| p.epoch)
    }
}

/// Steps that bring the zone on its site to the spec, in the order Ceph needs them.
fn configuration_steps(
    spec: &CephZoneSpec,
    observed: &Observed,
    ready: &Prerequisites,
    view: &ZoneView,
) -> Result<Vec<SiteStep>, Health> {
    let realm = &observed.realm;
    let zone = &observed.zone;
    if let Some(local_id) = &ready.state.realm_id {
        if local_id != ready.realm_id {
            return Err(Health::stalled(
                reason::CONFLICT,
                format!(
                    "site {} holds realm {realm} with id {local_id}, but CephRealm {realm} has id {}",
                    observed.site, ready.realm_id
                ),
            ));
        }
    }
    let mut steps = Vec::new();
    let on_site = |step| SiteStep::new(&observed.site, step);
    // Set when another zone is the realm's master: this zone is then not the metadata master, and as master
    // of its own zonegroup it pulls the realm from that zone and creates its zonegroup itself.
    let realm_master = observed.context.realm_master.as_ref().filter(|m| m.zone != *zone);
    // Where this zone pulls the realm and periods from: the zonegroup's declared master, or for the master of
    // another zonegroup the realm's (`prerequisites` holds secondaries back until their master is known); any
    // zone in the period serves it. The declared master itself, made secondary by a failover, pulls from the
    // period's master. Declared endpoints come first: the period may still hold stale ones.
    let declared_upstream = if spec.master {
        realm_master.and_then(|m| m.endpoint.as_deref())
    } else {
        ready.master_endpoint
    };
    let upstream = declared_upstream.or_else(|| view.period_master_endpoint());
    let has_realm = ready.state.realm_id.is_some();
    match upstream {
        Some(url) if !has_realm => steps.push(on_site(Step::PullRealm {
            realm: realm.clone(),
            url: url.to_string(),
            keys: ready.keys.clone(),
        })),
        None if !has_realm && spec.master => {
            return Err(Health::progressing(
                reason::WAITING_FOR_DEPENDENCY,
                format!(
                    "realm {realm} is not on site {} yet; the CephRealm controller creates it",
                    observed.site
                ),
            ))
        }
        _ => {}
    }
    let endpoints_differ = view
        .in_period
        .is_some_and(|z| !same_endpoints(&z.endpoints, &spec.endpoints));
    let key_differs = view
        .local
        .is_some_and(|z| z.system_access_key.as_ref() != Some(&ready.keys.access_key));
    // `master` places the zonegroup's master when the zone joins; from then on only a FailoverRequest moves
    // it, so the period's word stands (re-asserting the spec would undo a failover).
    let master = match view.in_period {
        Some(_) => view.is_period_master(),
        None => spec.master,
    };
    let read_only_differs = view.in_period.is_some_and(|z| z.read_only != spec.read_only);
    let incarnation_differs = matches!((view.local, view.in_period), (Some(l), Some(p)) if l.id != p.id);
    let period_differs = view.in_period.is_none()
        || view.local.is_none()
        || endpoints_differ
        || read_only_differs
        || incarnation_differs;
    // A commit on a site without the master zone is staged from the site's own copy of the zonegroups and
    // replaces the master's period: the period is pulled first, or a zone that joined since this site last
    // heard would be dropped. It goes before any local change, which the pull would overwrite.
    let commit_is_forwarded = view.period.is_some_and(|period| {
        period.master_zone != *zone
            && !ready
                .state
                .local_zones
                .iter()
                .any(|z| z.name == period.master_zone)
    });
    match upstream {
        Some(url) if period_differs && commit_is_forwarded => steps.push(on_site(Step::PullPeriod {
            realm: realm.clone(),
            url: url.to_string(),
            keys: ready.keys.clone(),
        })),
        _ => {}
    }
    // Ceph commits no period with a zonegroup that lacks its master zone, so a zonegroup other than the
    // realm's master one is created where its master zone runs, right before it.
    if spec.master && realm_master.is_some() && view.zone_group.is_none() {
        steps.push(on_site(Step::CreateZoneGroup {
            realm: realm.clone(),
            zone_group: spec.zone_group.clone(),
            endpoints: spec.endpoints.clone(),
            master: false,
        }));
    }
    if view.local.is_none() || endpoints_differ || key_differs {
        steps.push(on_site(Step::CreateZone {
            realm: realm.clone(),
            zone_group: spec.zone_group.clone(),
            zone: zone.clone(),
            endpoints: spec.endpoints.clone(),
            master,
            read_only: spec.read_only,
            keys: ready.keys.clone(),
        }));
    } else if read_only_differs {
        steps.push(on_site(Step::ModifyZone {
            realm: realm.clone(),
            zone_group: spec.zone_group.clone(),
            zone: zone.clone(),
            master: None,
            read_only: Some(spec.read_only),
        }));
    }
    if period_differs {
        steps.push(on_site(Step::CommitPeriod { realm: realm.clone() }));
    }
    // After the commit, so that this zone is the metadata master when the user is created (a moved master
    // normally has the user already, by metadata sync). Only the realm's master zone is the metadata master:
    // `user create` refuses to run elsewhere.
    if spec.master && realm_master.is_none() && ready.state.system_user.is_none() {
        steps.push(on_site(Step::CreateSystemUser {
            uid: sync_user_uid(realm),
            keys: ready.keys.clone(),
        }));
    }
    Ok(steps)
}

/// Endpoint lists compared as sets: Ceph may return them in another order than the spec lists them.
fn same_endpoints(current: &[String], desired: &[String]) -> bool {
    let sorted = |list: &[String]| {
        let mut list: Vec<String> = list.iter().map(|e| e.trim_end_matches('/').to_string()).collect();
        list.sort();
        list.dedup();
        list
    };
    sorted(current) == sorted(desired)
}

/// A configured zone is Ready once RGW answers sync status (a secondary; after a period commit RGW
/// reloads and answers errors for a while).
fn converged_health(spec: &CephZoneSpec, view: &ZoneView, answer: &sync::Answer) -> Health {
    let master = view.is_period_master();
    let role = if master { "master" } else { "secondary" };
    let moved = if master == spec.master {
        ""
    } else {
        " (a FailoverRequest moved the master; spec.master only places it when the zone joins)"
    };
    match answer {
        sync::Answer::Failed(error) => Health::progressing(
            reason::PROGRESSING,
            format!("waiting for RGW to answer sync status: {error}"),
        ),
        sync::Answer::NotAsked if !master => {
            Health::progressing(reason::PROGRESSING, "waiting for RGW to answer sync status")
        }
        _ => Health::Ready(format!(
            "zone is {role} of zonegroup {} at period epoch {}{moved}",
            spec.zone_group,
            view.epoch()
        )),
    }
}

impl Health {
    fn into_outcome(self, steps: Vec<SiteStep>) -> Outcome {
        let requeue = if self.settled(&steps) {
            REQUEUE_IDLE
        } else {
            REQUEUE_CONVERGING
        };
        Outcome {
            conditions: self.conditions(),
            health: self,
            steps,
            requeue,
            cleanup_complete: false,
        }
    }
}

/// A plan in the making: the health it reports and what the sync assessment adds.
struct Outcome {
    health: Health,
    steps: Vec<SiteStep>,
    conditions: Vec<Condition>,
    requeue: Duration,
    cleanup_complete: bool,
}

impl Outcome {
    fn cleanup_complete(self, complete: bool) -> Outcome {
        Outcome {
            cleanup_complete: complete,
            ..self
        }
    }

    fn into_plan(self, status: CephZoneStatus) -> ZonePlan {
        ZonePlan {
            plan: Plan {
                steps: self.steps,
                conditions: self.conditions.clone(),
                requeue: self.requeue,
            },
            status: CephZoneStatus {
                conditions: self.conditions,
                ..status
            },
            cleanup_complete: self.cleanup_complete,
        }
    }
}
