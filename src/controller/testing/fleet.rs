//! A `CephRealm` and its `CephZone`s as the controllers see them, planned against the RGW model: what each
//! reconciler observes is derived here the way `observe` does it, and each plan's status is kept (with
//! conditions merged) for the next round, as the status writer does.

use k8s_openapi::jiff::Timestamp;

use super::{keys, rgw::RgwWorld, zone, ZoneBuilder, REALM};
use crate::{
    agent::Step,
    api::{
        conditions::merge,
        realm::{CephRealmSpec, CephRealmStatus},
        zone::CephZoneStatus,
    },
    controller::{
        realm::plan::{self as realm_plan, MemberZone, RealmPlan},
        zone::plan::{self as zone_plan, RealmContext, RealmMaster, ZonePlan},
    },
    plan::{testing::rendered, SiteStep},
};

pub const SITES: [&str; 3] = ["site-a", "site-b", "site-c"];

pub fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).expect("valid test timestamp")
}

pub const EPOCH: i64 = 1_800_000_000;

/// `us-east` (master, `site-a`) and `us-west` (secondary, `site-b`) in zonegroup `us` of `realm`, nothing in
/// Ceph yet.
pub fn pair(realm: CephRealmSpec) -> Fleet {
    Fleet::new(realm)
        .zone(zone("us-east", "site-a").master())
        .zone(zone("us-west", "site-b"))
}

/// A `CephZone` object: name, spec, the status the last reconcile wrote, and whether it is being deleted.
#[derive(Clone, Debug)]
pub struct ZoneObject {
    pub name: String,
    pub spec: crate::api::zone::CephZoneSpec,
    pub status: CephZoneStatus,
    pub deleting: bool,
}

#[derive(Clone, Debug)]
pub struct Fleet {
    pub world: RgwWorld,
    pub now: Timestamp,
    pub realm: CephRealmSpec,
    pub realm_status: CephRealmStatus,
    pub realm_deleting: bool,
    /// The `CephRealm` object is gone (its finalizer released).
    pub realm_gone: bool,
    pub zones: Vec<ZoneObject>,
    /// Whether the realm's sync user Secret exists (the zone controller reads its keys).
    pub keys_available: bool,
}

impl Fleet {
    /// `realm` on three empty clusters, without zones.
    pub fn new(realm: CephRealmSpec) -> Fleet {
        Fleet {
            world: RgwWorld::with_sites(&SITES),
            now: at(EPOCH),
            realm,
            realm_status: CephRealmStatus::default(),
            realm_deleting: false,
            realm_gone: false,
            zones: Vec::new(),
            keys_available: true,
        }
    }

    pub fn zone(mut self, zone: ZoneBuilder) -> Fleet {
        self.zones.push(ZoneObject {
            name: zone.name,
            spec: zone.spec,
            status: CephZoneStatus::default(),
            deleting: false,
        });
        self
    }

    pub fn zone_object(&self, name: &str) -> &ZoneObject {
        self.zones
            .iter()
            .find(|z| z.name == name)
            .unwrap_or_else(|| panic!("no CephZone {name}"))
    }

    pub fn zone_object_mut(&mut self, name: &str) -> &mut ZoneObject {
        self.zones
            .iter_mut()
            .find(|z| z.name == name)
            .unwrap_or_else(|| panic!("no CephZone {name}"))
    }

    /// The master `CephZone` of the realm's master zonegroup.
    pub fn realm_master(&self) -> Option<&ZoneObject> {
        let group = self.realm.master_zone_group()?;
        self.zones
            .iter()
            .find(|z| z.spec.master && z.spec.zone_group == group.name)
    }

    /// What the CephRealm controller leaves once it ran before any zone existed: the realm and its
    /// zonegroups (with their policies) on the master zone's site, and the realm id in its status.
    pub fn with_realm_in_ceph(mut self) -> Fleet {
        let plan = self.plan_realm();
        self.world
            .apply(&plan.plan.steps)
            .expect("the realm controller's first steps apply");
        self.record_realm(&plan);
        let site = self.realm_master().expect("a master zone").spec.site.clone();
        self.realm_status.realm_id = self.world.realm(&site).map(|r| r.id.clone());
        self
    }

    pub fn member_zones(&self) -> Vec<MemberZone> {
        self.zones
            .iter()
            .map(|z| MemberZone {
                zone: z.name.clone(),
                zone_group: z.spec.zone_group.clone(),
                site: z.spec.site.clone(),
                master: z.spec.master,
                endpoints: z.spec.endpoints.clone(),
            })
            .collect()
    }

    /// What the CephRealm reconciler observes.
    pub fn realm_observed(&self) -> realm_plan::Observed {
        let zones = self.member_zones();
        let last_master = self.realm_status.master_zone.clone();
        let acting = realm_plan::acting_master(&self.realm, &zones, last_master.as_deref());
        let master_site = acting.map(|master| {
            let state = self.world.state(&master.site)?;
            let committed: Vec<String> = self
                .realm
                .zone_groups
                .iter()
                .map(|g| g.name.clone())
                .filter(|name| {
                    let period = state.period.as_ref();
                    period.is_some_and(|p| p.zone_groups.iter().any(|g| g.name == *name))
                })
                .collect();
            let policies = self.world.policies(&master.site, &committed);
            Ok((state, policies))
        });
        let sites_holding_realm = if self.realm_deleting {
            self.world
                .sites
                .iter()
                .filter(|(_, s)| s.unreachable.is_some() || s.realm.is_some())
                .map(|(name, _)| name.clone())
                .collect()
        } else {
            Vec::new()
        };
        realm_plan::Observed {
            realm: REALM.into(),
            zones,
            master_site,
            last_master,
            sites_holding_realm,
            deleting: self.realm_deleting,
        }
    }

    /// What the CephZone reconciler gathers from the realm and the zone's siblings.
    pub fn zone_context(&self, name: &str) -> RealmContext {
        let zone = self.zone_object(name);
        let zone_sites = self
            .zones
            .iter()
            .map(|z| (z.name.clone(), z.spec.site.clone()))
            .collect();
        if self.realm_gone {
            return RealmContext {
                realm_id: None,
                zone_group_declared: false,
                keys: None,
                master_endpoint: None,
                other_masters: Vec::new(),
                realm_master: None,
                zone_sites,
            };
        }
        let group: Vec<&ZoneObject> = self
            .zones
            .iter()
            .filter(|z| z.spec.realm == zone.spec.realm && z.spec.zone_group == zone.spec.zone_group)
            .collect();
        RealmContext {
            realm_id: self.realm_status.realm_id.clone(),
            zone_group_declared: self
                .realm
                .zone_groups
                .iter()
                .any(|g| g.name == zone.spec.zone_group),
            keys: self.keys_available.then(keys),
            master_endpoint: group
                .iter()
                .find(|z| z.spec.master)
                .and_then(|z| z.spec.endpoints.first().cloned()),
            other_masters: group
                .iter()
                .filter(|z| z.spec.master && z.name != name)
                .map(|z| z.name.clone())
                .collect(),
            realm_master: self.realm_master().map(|z| RealmMaster {
                zone: z.name.clone(),
                site: z.spec.site.clone(),
                endpoint: z.spec.endpoints.first().cloned(),
            }),
            zone_sites,
        }
    }

    /// What the CephZone reconciler observes: the realm on the zone's site, and sync status when the zone
    /// is in the committed period and not its zonegroup's master.
    pub fn zone_observed(&self, name: &str) -> zone_plan::Observed {
        let zone = self.zone_object(name);
        let local = self.world.state(&zone.spec.site);
        let syncs = local
            .as_ref()
            .ok()
            .and_then(|l| l.period.as_ref())
            .is_some_and(|p| {
                p.zone_groups
                    .iter()
                    .any(|g| g.zones.iter().any(|z| z.name == name) && g.master_zone != name)
            });
        let mut observed = zone_plan::Observed {
            zone: name.into(),
            realm: zone.spec.realm.clone(),
            site: zone.spec.site.clone(),
            context: self.zone_context(name),
            local,
            sync: syncs.then(|| self.world.sync_status(&zone.spec.site, name)),
            previous: Some(zone.status.clone()),
            deleting: zone.deleting,
            period_master: None,
        };
        if let Some(site) = zone_plan::period_master_site_to_read(&zone.spec, &observed) {
            observed.period_master = Some(self.world.state(&site));
        }
        observed
    }

    pub fn plan_realm(&self) -> RealmPlan {
        realm_plan::plan(&self.realm, &self.realm_observed(), self.now)
    }

    pub fn plan_zone(&self, name: &str) -> ZonePlan {
        zone_plan::plan(&self.zone_object(name).spec, &self.zone_observed(name), self.now)
    }

    pub fn record_realm(&mut self, plan: &RealmPlan) {
        let conditions = merge(
            &self.realm_status.conditions,
            plan.plan.conditions.clone(),
            self.now,
        );
        self.realm_status = CephRealmStatus {
            conditions,
            ..plan.status.clone()
        };
    }

    pub fn record_zone(&mut self, name: &str, plan: &ZonePlan) {
        let now = self.now;
        let zone = self.zone_object_mut(name);
        let conditions = merge(&zone.status.conditions, plan.plan.conditions.clone(), now);
        zone.status = CephZoneStatus {
            conditions,
            ..plan.status.clone()
        };
    }

    /// What a planned RGW failover does to zone `name`'s site: makes the zone master there and commits.
    pub fn fail_over_zone(&mut self, name: &str) {
        let zone = self.zone_object(name);
        let (site, zone_group) = (zone.spec.site.clone(), zone.spec.zone_group.clone());
        let modify = Step::ModifyZone {
            realm: REALM.into(),
            zone_group,
            zone: name.into(),
            master: Some(true),
            read_only: None,
        };
        let commit = Step::CommitPeriod { realm: REALM.into() };
        self.apply(&[SiteStep::new(&site, modify), SiteStep::new(&site, commit)])
            .unwrap_or_else(|e| panic!("failing over to {name}: {e}"));
    }

    pub fn apply(&mut self, steps: &[SiteStep]) -> Result<(), String> {
        self.world.apply(steps)
    }

    /// One reconcile of the realm (unless `zones_only` or it is gone) then of each zone, in order, each
    /// against the world the previous one left; an object being deleted goes once its cleanup is complete.
    /// Then five seconds pass. Returns how many steps ran and objects went.
    pub fn round(&mut self, zones_only: bool) -> Result<usize, String> {
        let mut activity = 0;
        if !zones_only && !self.realm_gone {
            let plan = self.plan_realm();
            self.apply(&plan.plan.steps).map_err(|e| format!("realm: {e}"))?;
            self.record_realm(&plan);
            activity += plan.plan.steps.len();
            if self.realm_deleting && plan.cleanup_complete {
                self.realm_gone = true;
                activity += 1;
            }
        }
        let names: Vec<String> = self.zones.iter().map(|z| z.name.clone()).collect();
        for name in names {
            let plan = self.plan_zone(&name);
            self.apply(&plan.plan.steps)
                .map_err(|e| format!("zone {name}: {e}"))?;
            self.record_zone(&name, &plan);
            activity += plan.plan.steps.len();
            if self.zone_object(&name).deleting && plan.cleanup_complete {
                self.zones.retain(|z| z.name != name);
                activity += 1;
            }
        }
        self.now = at(self.now.as_second() + 5);
        Ok(activity)
    }

    /// Rounds until one does nothing; returns how many rounds did something.
    pub fn converge(&mut self, zones_only: bool, max_rounds: usize) -> Result<usize, String> {
        for round in 0..=max_rounds {
            if self
                .round(zones_only)
                .map_err(|e| format!("round {}: {e}", round + 1))?
                == 0
            {
                return Ok(round);
            }
        }
        Err(format!(
            "not converged after {max_rounds} rounds: {}",
            self.pending()
        ))
    }

    /// The fleet after the realm and zone controllers reconciled it until nothing was left to do.
    pub fn converged(mut self) -> Fleet {
        if let Err(error) = self.converge(false, 8) {
            panic!("the fixture does not converge: {error}");
        }
        self
    }

    /// The steps every controller would still plan, for failure messages.
    pub fn pending(&self) -> String {
        let mut pending = vec![format!("realm: {:?}", rendered(&self.plan_realm().plan.steps))];
        for zone in &self.zones {
            let plan = self.plan_zone(&zone.name);
            pending.push(format!("{}: {:?}", zone.name, rendered(&plan.plan.steps)));
        }
        pending.join("; ")
    }
}
