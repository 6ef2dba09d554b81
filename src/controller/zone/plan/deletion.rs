//! Finalizer cleanup with `deletionPolicy: Delete`: the zone leaves the period, then its site.
//!
//! - Another zone than the period's master leaves by a commit on the master zone's site: the zone is
//!   removed from the master's copy of its zonegroup there (the master of another zonegroup, once alone in
//!   it, takes its zonegroup along: Ceph commits no zonegroup without a master zone), the period is
//!   committed, and then the zone's own site deletes it. Committing from the zone's own site would not do:
//!   once it has deleted its zone it has no system key left to sign the commit it forwards to the master.
//! - The period's master zone goes last: Ceph commits no period without it, so once it is the only zone of
//!   the period it is deleted locally, and the realm's own deletion takes the period away.

use super::{unobserved, Observed, Outcome, RealmContext, ZoneView};
use crate::{
    agent::Step,
    api::{common::DeletionPolicy, conditions::reason, zone::CephZoneSpec},
    plan::{describe, Health, SiteStep},
};

pub(super) fn plan(spec: &CephZoneSpec, observed: &Observed, view: &ZoneView) -> Outcome {
    if spec.deletion_policy == DeletionPolicy::Retain {
        return Health::progressing(
            reason::PROGRESSING,
            "deleting; the zone stays in Ceph (deletionPolicy Retain)",
        )
        .into_outcome(Vec::new())
        .cleanup_complete(true);
    }
    if let Err(error) = &observed.local {
        return unobserved(observed, error).into_outcome(Vec::new());
    }
    let steps = match steps(spec, observed, view) {
        Ok(steps) => steps,
        Err(waiting) => {
            return Health::progressing(reason::WAITING_FOR_DEPENDENCY, waiting).into_outcome(Vec::new())
        }
    };
    let message = if steps.is_empty() {
        "deleting; the zone is gone from its site".to_string()
    } else {
        format!("deleting: {}", describe(&steps))
    };
    let gone = steps.is_empty();
    Health::progressing(reason::PROGRESSING, message)
        .into_outcome(steps)
        .cleanup_complete(gone)
}

/// The steps that remove the zone now, or what its removal waits for.
fn steps(spec: &CephZoneSpec, observed: &Observed, view: &ZoneView) -> Result<Vec<SiteStep>, String> {
    let (realm, zone) = (&observed.realm, &observed.zone);
    let on_site = |site: &str, step| SiteStep::new(site, step);
    let delete_zone = |site: &str| {
        on_site(
            site,
            Step::DeleteZone {
                realm: realm.clone(),
                zone_group: spec.zone_group.clone(),
                zone: zone.clone(),
            },
        )
    };
    let (Some(period), Some(_)) = (view.period, view.in_period) else {
        return Ok(view
            .local
            .map(|_| delete_zone(&observed.site))
            .into_iter()
            .collect());
    };
    let others = |zones: &mut dyn Iterator<Item = &crate::agent::ZoneInfo>| -> Vec<String> {
        zones
            .filter(|z| z.name != *zone)
            .map(|z| z.name.clone())
            .collect()
    };
    if period.master_zone == *zone {
        let remaining = others(&mut period.zone_groups.iter().flat_map(|g| g.zones.iter()));
        if !remaining.is_empty() {
            return Err(format!(
                "master zone {zone} of realm {realm} cannot be deleted while other zones exist: {}",
                remaining.join(", ")
            ));
        }
        return Ok(view
            .local
            .map(|_| delete_zone(&observed.site))
            .into_iter()
            .collect());
    }
    let Some(master_site) = period_master_site(&observed.context, view) else {
        return Err(format!(
            "no CephZone of realm {realm} is its master zone; zone {zone} leaves the period by a commit on the \
             master zone's site"
        ));
    };
    let commit = on_site(master_site, Step::CommitPeriod { realm: realm.clone() });
    let master_view = if master_site == observed.site {
        *view
    } else {
        match &observed.period_master {
            Some(Ok(state)) => ZoneView::of(state, &spec.zone_group, zone),
            Some(Err(error)) => {
                return Err(format!(
                    "cannot read realm {realm} on site {master_site}, where zone {zone} leaves the period: {error}"
                ))
            }
            None => return Err(format!("realm {realm} on site {master_site} is not read yet")),
        }
    };
    let mut steps = match master_view.in_period {
        None => Vec::new(),
        Some(_) if !master_view.is_period_master() => vec![delete_zone(master_site), commit],
        Some(_) => {
            let members = others(&mut master_view.zone_group.iter().flat_map(|g| g.zones.iter()));
            if !members.is_empty() {
                return Err(format!(
                    "master zone {zone} of zonegroup {} cannot be deleted while its other zones exist: {}",
                    spec.zone_group,
                    members.join(", ")
                ));
            }
            let delete_group = on_site(
                master_site,
                Step::DeleteZoneGroup {
                    realm: realm.clone(),
                    zone_group: spec.zone_group.clone(),
                },
            );
            // The zone leaves its zonegroup before the zonegroup goes, where both live on one site.
            if master_site == observed.site {
                vec![delete_zone(master_site), delete_group, commit]
            } else {
                vec![delete_group, commit]
            }
        }
    };
    if master_site != observed.site {
        steps.extend(view.local.map(|_| delete_zone(&observed.site)));
    }
    Ok(steps)
}

/// The site whose realm the cleanup must read besides the zone's own: the period master zone's, when the zone
/// lives elsewhere. RGW pushes a commit only to the zones of the new period, so the zone's own site keeps the
/// period from before the zone left it; only the master's copy tells whether it has.
pub(super) fn period_master_site_to_read(
    spec: &CephZoneSpec,
    observed: &Observed,
    view: &ZoneView,
) -> Option<String> {
    if spec.deletion_policy == DeletionPolicy::Retain || view.in_period.is_none() {
        return None;
    }
    let period = view.period?;
    if period.master_zone == observed.zone {
        return None;
    }
    period_master_site(&observed.context, view)
        .filter(|site| *site != observed.site)
        .map(str::to_string)
}

/// The site of the period's master zone (as the zone's site has the period), or else of the declared one.
pub(super) fn period_master_site<'a>(context: &'a RealmContext, view: &ZoneView) -> Option<&'a str> {
    let site_of = |zone: &str| {
        let placed = context.zone_sites.iter().find(|(name, _)| name == zone);
        placed.map(|(_, site)| site.as_str())
    };
    let committed = view
        .period
        .map(|p| p.master_zone.as_str())
        .filter(|m| !m.is_empty());
    committed
        .and_then(site_of)
        .or_else(|| context.realm_master.as_ref().map(|m| m.site.as_str()))
}
