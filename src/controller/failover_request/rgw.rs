//! RGW realms in a failover: the target site's zone becomes the master of its zonegroup.
//!
//! Planned and failback: when the target holds a different period than the other sites (a site back
//! from an emergency still holds the period that made it master) it first pulls the current one; then
//! `zone modify --master` and `period update --commit` on the target; then every other site pulls the new
//! period unless the commit's push already reached it. Emergency: only the modify and commit on the target
//! (the old master may be gone; a later failback reconciles it). The old master stays writable.
//!
//! Periods carry no realm epoch in the agent's types, so "current" is decided by agreement between sites
//! and by the chain's order: the target's catch-up pull is settled once it holds the same period as the
//! others, and only after that does the target's own master flag count.

use super::{
    ledger::{Chain, Entry, Target, Task},
    plan::{seconds_between, Ctx, Eval, Failure, ObservedRealm, ObservedZone},
};
use crate::{
    agent::{Period, Step, ZoneSync},
    api::{conditions::reason, failover_request::FailoverAction},
    plan::SiteStep,
};

/// One target realm seen from the target site.
struct RealmView<'a> {
    realm: &'a ObservedRealm,
    target: &'a str,
}

impl<'a> RealmView<'a> {
    fn find(ctx: &'a Ctx, name: &str) -> Option<RealmView<'a>> {
        let realm = ctx.observed.realms.iter().find(|r| r.name == name)?;
        ctx.spec
            .targets
            .realms
            .contains(&realm.name)
            .then_some(RealmView {
                realm,
                target: ctx.target(),
            })
    }

    /// The realm's zones on the target site: each becomes the master of its zonegroup.
    fn target_zones(&self) -> impl Iterator<Item = &'a ObservedZone> + '_ {
        self.realm.zones.iter().filter(move |z| z.site == self.target)
    }

    /// Sites with a zone in the zonegroups the target has a zone in.
    fn other_sites(&self) -> Vec<&'a str> {
        let mut sites: Vec<&str> = self
            .realm
            .zones
            .iter()
            .filter(|z| z.site != self.target && self.target_zones().any(|t| t.zone_group == z.zone_group))
            .map(|z| z.site.as_str())
            .collect();
        sites.sort();
        sites.dedup();
        sites
    }

    /// The period `site` holds (every zone of a site shares the site's view).
    fn period_on(&self, site: &str) -> Option<&'a Period> {
        let zone = self.realm.zones.iter().find(|z| z.site == site)?;
        zone.local.as_ref().ok()?.period.as_ref()
    }

    fn holds_same_period(&self, site: &str) -> bool {
        matches!((self.period_on(site), self.period_on(self.target)), (Some(a), Some(b)) if a.id == b.id)
    }

    /// Whether `zone` is the master of `zone_group` in the period the target holds.
    fn is_master(&self, zone_group: &str, zone: &str) -> bool {
        self.period_on(self.target)
            .and_then(|p| p.zone_groups.iter().find(|g| g.name == zone_group))
            .is_some_and(|g| g.master_zone == zone)
    }

    fn target_is_master(&self) -> bool {
        self.target_zones()
            .all(|z| self.is_master(&z.zone_group, &z.zone))
    }

    /// Where to pull `site`'s period from: the zone its period names as the realm's master.
    fn master_endpoint_of(&self, site: &str) -> Option<&'a str> {
        let master = &self.period_on(site)?.master_zone;
        let zone = self.realm.zones.iter().find(|z| &z.zone == master);
        zone.or_else(|| self.realm.zones.iter().find(|z| z.site == site))
            .map(|z| z.endpoint.as_str())
    }

    fn pull(&self, site: &str, from: Option<&str>) -> Eval {
        let name = &self.realm.name;
        match (&self.realm.sync_keys, from) {
            (Some(keys), Some(url)) => Eval::Emit(vec![SiteStep::new(
                site,
                Step::PullPeriod {
                    realm: name.clone(),
                    url: url.to_string(),
                    keys: keys.clone(),
                },
            )]),
            (None, _) => Eval::Wait(format!(
                "the sync keys of realm {name} are unavailable: cannot pull the period on site {site}"
            )),
            (Some(_), None) => Eval::Wait(format!(
                "no endpoint known to pull realm {name}'s period to site {site}"
            )),
        }
    }
}

/// Preflight of every target realm, then its chain.
pub(super) fn plan(ctx: &Ctx) -> Result<Vec<Chain>, Failure> {
    let target = ctx.target();
    let mut chains = Vec::new();
    for name in &ctx.spec.targets.realms {
        let view = RealmView::find(ctx, name)
            .ok_or_else(|| Failure::preflight(format!("CephRealm {name} was not found")))?;
        if ctx.action() == FailoverAction::Resync {
            return Err(Failure::preflight(format!(
                "resync recovers RBD images; realm {name} has nothing to resync"
            )));
        }
        if view.target_zones().next().is_none() {
            return Err(Failure::preflight(format!(
                "realm {name} has no zone on site {target}"
            )));
        }
        let mut sites = vec![target];
        if ctx.needs_peer() {
            sites.extend(view.other_sites());
        }
        for site in &sites {
            for zone in view.realm.zones.iter().filter(|z| z.site == *site) {
                let state = zone.local.as_ref().map_err(|e| Failure::site(site, e))?;
                if state.period.is_none() {
                    return Err(Failure::preflight(format!(
                        "site {site} holds no period of realm {name}"
                    )));
                }
            }
        }
        if let (FailoverAction::Planned, Some(max)) = (ctx.action(), ctx.spec.max_lag_seconds) {
            for zone in view.target_zones() {
                let sync = match &zone.sync {
                    Some(Ok(sync)) => sync,
                    Some(Err(e)) => return Err(Failure::site(target, e)),
                    None => continue,
                };
                match oldest_unsynced(sync).map(|t| seconds_between(ctx.now, t)) {
                    Some(lag) if lag > u64::from(max) => {
                        return Err(Failure::new(
                            reason::LAG_ABOVE_TARGET,
                            format!("lag {lag} s above maxLagSeconds {max} for zone {}", zone.zone),
                        ))
                    }
                    _ => {}
                }
            }
        }
        chains.push(chain(ctx, &view));
    }
    Ok(chains)
}

fn chain(ctx: &Ctx, view: &RealmView) -> Chain {
    let (realm, target) = (&view.realm.name, view.target);
    let at = |site: &str| Target::Realm {
        realm: realm.clone(),
        site: site.to_string(),
    };
    let task = |task: Task, target: Target| Entry { task, target };
    let make_master = view.target_zones().map(|z| {
        let zone = Target::Zone {
            realm: realm.clone(),
            zone_group: z.zone_group.clone(),
            zone: z.zone.clone(),
            site: target.to_string(),
        };
        task(Task::ModifyZone, zone)
    });
    let mut entries = Vec::new();
    let skip = match ctx.action() {
        FailoverAction::Drill => {
            entries.push(task(Task::CheckZoneSync, at(target)));
            None
        }
        FailoverAction::Emergency => {
            entries.extend(make_master);
            entries.push(task(Task::CommitPeriod, at(target)));
            view.target_is_master()
                .then(|| format!("site {target} holds the master zone already"))
        }
        FailoverAction::Planned | FailoverAction::Failback | FailoverAction::Resync => {
            entries.push(task(Task::PullPeriod, at(target)));
            entries.extend(make_master);
            entries.push(task(Task::CommitPeriod, at(target)));
            let others = view.other_sites();
            entries.extend(others.iter().map(|site| task(Task::PullPeriod, at(site))));
            let settled = view.target_is_master() && others.iter().all(|s| view.holds_same_period(s));
            settled.then(|| format!("site {target} holds the master zone already, and every site agrees"))
        }
    };
    Chain { entries, skip }
}

/// One realm task as the sites show it.
pub(super) fn evaluate(ctx: &Ctx, task: Task, target: &Target) -> Eval {
    let realm_name = match target {
        Target::Realm { realm, .. } | Target::Zone { realm, .. } => realm,
        Target::Image { .. } => return Eval::Fail(format!("{} is not a realm task", task.name())),
    };
    let Some(view) = RealmView::find(ctx, realm_name) else {
        return Eval::Fail(format!("CephRealm {realm_name} is not observed"));
    };
    if view.period_on(view.target).is_none() {
        return Eval::Wait(format!(
            "waiting for site {} to report realm {realm_name}'s period",
            view.target
        ));
    }
    match (task, target) {
        // The target catches up with the period the other sites agree on before its own master flag counts.
        (Task::PullPeriod, Target::Realm { site, .. }) if site == view.target => {
            let others = view.other_sites();
            match others
                .iter()
                .find(|s| view.period_on(s).is_some() && !view.holds_same_period(s))
            {
                None => Eval::Satisfied,
                Some(current) => view.pull(site, view.master_endpoint_of(current)),
            }
        }
        (Task::PullPeriod, Target::Realm { site, .. }) => match view.holds_same_period(site) {
            true => Eval::Satisfied,
            false => view.pull(site, view.target_zones().next().map(|z| z.endpoint.as_str())),
        },
        (
            Task::ModifyZone,
            Target::Zone {
                zone_group,
                zone,
                site,
                ..
            },
        ) => match view.is_master(zone_group, zone) {
            true => Eval::Satisfied,
            false => Eval::Emit(vec![SiteStep::new(
                site,
                Step::ModifyZone {
                    realm: realm_name.clone(),
                    zone_group: zone_group.clone(),
                    zone: zone.clone(),
                    master: Some(true),
                    read_only: None,
                },
            )]),
        },
        (Task::CommitPeriod, Target::Realm { site, .. }) => match view.target_is_master() {
            true => Eval::Satisfied,
            false => Eval::Emit(vec![SiteStep::new(
                site,
                Step::CommitPeriod {
                    realm: realm_name.clone(),
                },
            )]),
        },
        (Task::CheckZoneSync, Target::Realm { site, .. }) => {
            match view.target_zones().find_map(|z| z.sync.as_ref()?.as_ref().err()) {
                Some(error) => Eval::Fail(format!("sync status on site {site}: {error}")),
                None => Eval::Satisfied,
            }
        }
        _ => Eval::Fail(format!("{} does not apply to {realm_name}", task.name())),
    }
}

/// The target's zones are masters, and (unless the other sites may be gone) every site holds that period.
pub(super) fn verify(ctx: &Ctx, realm: &str) -> Result<(), String> {
    let view = RealmView::find(ctx, realm).ok_or_else(|| format!("CephRealm {realm} is not observed"))?;
    if !view.target_is_master() {
        return Err(format!(
            "site {}'s zones are not the masters of realm {realm}",
            view.target
        ));
    }
    if !ctx.needs_peer() {
        return Ok(());
    }
    match view
        .other_sites()
        .into_iter()
        .find(|s| !view.holds_same_period(s))
    {
        Some(site) => Err(format!(
            "site {site} holds another period of realm {realm} than site {}",
            view.target
        )),
        None => Ok(()),
    }
}

/// Drill: how far the target's zones are behind (zero when caught up, `None` when unknown).
pub(super) fn sync_lag(ctx: &Ctx, realm: &str) -> Option<u64> {
    let view = RealmView::find(ctx, realm)?;
    let lags = view.target_zones().filter_map(|z| match &z.sync {
        Some(Ok(sync)) => Some(oldest_unsynced(sync).map_or(0, |t| seconds_between(ctx.now, t))),
        _ => None,
    });
    lags.max()
}

/// The oldest change not yet applied from any source, metadata or data.
fn oldest_unsynced(sync: &ZoneSync) -> Option<k8s_openapi::jiff::Timestamp> {
    let shards = sync.metadata.iter().chain(sync.data.iter().map(|d| &d.shards));
    shards
        .filter(|s| s.behind_shards > 0)
        .filter_map(|s| s.oldest_change)
        .min()
}
