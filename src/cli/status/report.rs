//! The report `cephdr status` shows: objects in, one serde struct per object out.

use kube::ResourceExt;
use serde::{Deserialize, Serialize};

use super::Objects;
use crate::{
    api::{
        conditions::{find as condition, READY, RPO_MET, SYNCED},
        failover_request::StepState,
        zone::{ZoneRole, ZoneSyncStatus},
        CephRealm, CephSite, CephZone, FailoverAction, FailoverPhase, FailoverRequest, RbdMirrorPool,
    },
    cli::condition_state as state,
};

/// Everything `cephdr status` shows. Values come from the objects' statuses; a value the operator has not
/// reported (yet) is absent (`null` in JSON). `ready`, `synced` and `rpoMet` are the objects' conditions
/// of those types.
#[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub sites: Vec<SiteReport>,
    pub realms: Vec<RealmReport>,
    pub zones: Vec<ZoneReport>,
    pub pools: Vec<PoolReport>,
    /// FailoverRequests that are neither Completed nor Failed.
    pub failovers: Vec<FailoverReport>,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SiteReport {
    pub namespace: String,
    pub name: String,
    /// Whether the last probe of the site's agent succeeded.
    pub reachable: Option<bool>,
    /// HEALTH_OK, HEALTH_WARN or HEALTH_ERR.
    pub health: Option<String>,
    pub health_checks: Vec<String>,
    pub ceph_version: Option<String>,
    pub ready: Option<bool>,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RealmReport {
    pub namespace: String,
    pub name: String,
    pub master_zone_group: Option<String>,
    pub master_zone: Option<String>,
    pub period_epoch: Option<u32>,
    pub ready: Option<bool>,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ZoneReport {
    pub namespace: String,
    pub name: String,
    pub realm: String,
    pub zone_group: String,
    pub site: String,
    pub role: Option<ZoneRole>,
    /// RGW's sync status of the zone: metadata, and data per source zone.
    pub sync: Option<ZoneSyncStatus>,
    /// Age in seconds of the oldest change not yet synced.
    pub lag_seconds: Option<u64>,
    /// The zone's target recovery point.
    pub rpo_seconds: Option<u32>,
    pub synced: Option<bool>,
    pub rpo_met: Option<bool>,
    pub ready: Option<bool>,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PoolReport {
    pub namespace: String,
    pub name: String,
    /// The pool's name in Ceph.
    pub pool: String,
    /// Where the images are primary; absent while they are split between sites.
    pub primary_site: Option<String>,
    /// OK, WARNING or ERROR.
    pub health: Option<String>,
    pub max_lag_seconds: Option<u64>,
    /// The pool's target recovery point.
    pub rpo_seconds: Option<u32>,
    pub synced: Option<bool>,
    pub rpo_met: Option<bool>,
    pub ready: Option<bool>,
    pub images: Vec<ImageReport>,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageReport {
    pub name: String,
    pub primary_site: Option<String>,
    /// rbd-mirror's state on the receiving site: `replaying`, `syncing`, `stopped`, `error`, ...
    pub state: String,
    pub lag_seconds: Option<u64>,
    /// Whether the lag is within the pool's `rpoSeconds` (absent without a lag or a target).
    pub within_rpo: Option<bool>,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailoverReport {
    pub namespace: String,
    pub name: String,
    pub action: FailoverAction,
    pub target_site: String,
    pub dry_run: bool,
    pub phase: FailoverPhase,
    pub steps_done: usize,
    pub steps: usize,
    /// The `Ready` condition's message: what the request is doing or waiting for.
    pub message: Option<String>,
}

impl Report {
    pub fn new(objects: &Objects) -> Report {
        Report {
            sites: objects.sites.iter().map(site).collect(),
            realms: objects.realms.iter().map(realm).collect(),
            zones: objects.zones.iter().map(zone).collect(),
            pools: objects.pools.iter().map(pool).collect(),
            failovers: objects
                .requests
                .iter()
                .filter(|r| !r.status.as_ref().is_some_and(|s| s.phase.is_terminal()))
                .map(failover)
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self == &Report::default()
    }
}

fn site(site: &CephSite) -> SiteReport {
    let status = site.status.clone().unwrap_or_default();
    SiteReport {
        namespace: site.namespace().unwrap_or_default(),
        name: site.name_any(),
        reachable: status.reachable,
        health: status.health,
        health_checks: status.health_checks,
        ceph_version: status.ceph_version,
        ready: state(&status.conditions, READY),
    }
}

fn realm(realm: &CephRealm) -> RealmReport {
    let status = realm.status.clone().unwrap_or_default();
    RealmReport {
        namespace: realm.namespace().unwrap_or_default(),
        name: realm.name_any(),
        master_zone_group: status.master_zone_group,
        master_zone: status.master_zone,
        period_epoch: status.period.map(|p| p.epoch),
        ready: state(&status.conditions, READY),
    }
}

fn zone(zone: &CephZone) -> ZoneReport {
    let status = zone.status.clone().unwrap_or_default();
    ZoneReport {
        namespace: zone.namespace().unwrap_or_default(),
        name: zone.name_any(),
        realm: zone.spec.realm.clone(),
        zone_group: zone.spec.zone_group.clone(),
        site: zone.spec.site.clone(),
        role: status.role,
        sync: status.sync,
        lag_seconds: status.lag_seconds,
        rpo_seconds: zone.spec.rpo_seconds,
        synced: state(&status.conditions, SYNCED),
        rpo_met: state(&status.conditions, RPO_MET),
        ready: state(&status.conditions, READY),
    }
}

fn pool(pool: &RbdMirrorPool) -> PoolReport {
    let status = pool.status.clone().unwrap_or_default();
    let rpo = pool.spec.rpo_seconds;
    PoolReport {
        namespace: pool.namespace().unwrap_or_default(),
        name: pool.name_any(),
        pool: pool.spec.pool.clone(),
        primary_site: status.primary_site,
        health: status.summary.as_ref().map(|s| s.health.clone()),
        max_lag_seconds: status.summary.and_then(|s| s.max_lag_seconds),
        rpo_seconds: rpo,
        synced: state(&status.conditions, SYNCED),
        rpo_met: state(&status.conditions, RPO_MET),
        ready: state(&status.conditions, READY),
        images: status
            .images
            .into_iter()
            .map(|image| ImageReport {
                within_rpo: image.lag_seconds.zip(rpo).map(|(lag, rpo)| lag <= u64::from(rpo)),
                name: image.name,
                primary_site: image.primary_site,
                state: image.state,
                lag_seconds: image.lag_seconds,
            })
            .collect(),
    }
}

fn failover(request: &FailoverRequest) -> FailoverReport {
    let status = request.status.clone().unwrap_or_default();
    FailoverReport {
        namespace: request.namespace().unwrap_or_default(),
        name: request.name_any(),
        action: request.spec.action,
        target_site: request.spec.target_site.clone(),
        dry_run: request.spec.dry_run,
        phase: status.phase,
        steps_done: status
            .steps
            .iter()
            .filter(|s| matches!(s.state, StepState::Done | StepState::Skipped))
            .count(),
        steps: status.steps.len(),
        message: condition(&status.conditions, READY).map(|c| c.message.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::fixtures::objects;

    #[test]
    fn the_report_holds_what_the_statuses_say_and_only_running_failovers() {
        let report = Report::new(&objects());
        let b = &report.sites[1];
        assert_eq!(
            (b.reachable, b.health.as_deref(), b.ready),
            (Some(false), Some("HEALTH_WARN"), Some(false))
        );
        assert_eq!(report.realms[0].period_epoch, Some(3));
        assert_eq!(report.zones[1].lag_seconds, Some(40));
        assert_eq!(report.zones[1].role, Some(ZoneRole::Secondary));
        let within: Vec<_> = report.pools[0]
            .images
            .iter()
            .map(|i| (i.name.as_str(), i.within_rpo))
            .collect();
        assert_eq!(within, [("db", Some(true)), ("logs", Some(false))]);
        let running: Vec<_> = report
            .failovers
            .iter()
            .map(|f| (f.name.as_str(), f.steps_done, f.steps))
            .collect();
        assert_eq!(running, [("move", 1, 2)]);
    }

    #[test]
    fn json_field_names_are_the_documented_camel_case_ones() {
        let json = serde_json::to_value(Report::new(&objects())).unwrap();
        let pool = &json["pools"][0];
        assert_eq!(pool["primarySite"], "site-a");
        assert_eq!(pool["images"][1]["withinRpo"], false);
        assert_eq!(json["zones"][1]["sync"]["data"][0]["behindShards"], 2);
        assert_eq!(json["failovers"][0]["phase"], "Syncing");
        let back: Report =
            serde_yaml::from_str(&serde_yaml::to_string(&Report::new(&objects())).unwrap()).unwrap();
        assert_eq!(back, Report::new(&objects()));
    }
}
