//! A small pure model of RGW multisite on several Ceph clusters, for planner tests. Steps run with the
//! preconditions Ceph enforces, so a step planned too early or on the wrong site fails the test:
//!
//! - zonegroups and zones are local objects; `CommitPeriod` stages them into a period (refused while a
//!   zonegroup has no master zone among its zones, as `RGWPeriod::update` does) on the master zone's cluster, or forwards the commit there signed with a local zone's system key, and pushes the result to
//!   every reachable cluster of the realm (a changed master zone starts a new period, any other change the
//!   next epoch, no change nothing);
//! - `PullRealm`/`PullPeriod` need a reachable cluster serving the URL for a local zone, and the system keys;
//! - the system user is created on the metadata master (the period's master zone) and reaches the others
//!   by metadata sync, here at once.

use std::collections::{BTreeMap, BTreeSet};

mod steps;

use crate::agent::{
    AgentError, AgentResult, LocalZone, Period, RgwRealmState, SourceSync, SyncGroup, SyncShards, SystemKeys,
    ZoneGroupInfo, ZoneInfo, ZoneSync,
};

#[derive(Clone, Debug, Default)]
pub struct RgwWorld {
    pub sites: BTreeMap<String, SiteModel>,
    next_id: u64,
}

/// One Ceph cluster: its copy of the realm, its RGW users, and whether its agent answers.
#[derive(Clone, Debug, Default)]
pub struct SiteModel {
    pub realm: Option<RealmCopy>,
    pub users: BTreeMap<String, SystemKeys>,
    /// `Some(message)` when the agent does not answer.
    pub unreachable: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RealmCopy {
    pub name: String,
    pub id: String,
    /// Local zonegroup objects, by name.
    pub zone_groups: BTreeMap<String, ZoneGroupModel>,
    /// Zone objects on this cluster.
    pub zones: BTreeMap<String, ZoneModel>,
    pub period: Option<CommittedPeriod>,
    /// Bucket-level sync groups, by zonegroup: bucket metadata that applies at once, in no period.
    pub bucket_policy: BTreeMap<String, Vec<SyncGroup>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ZoneGroupModel {
    pub info: ZoneGroupInfo,
    pub policy: Vec<SyncGroup>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ZoneModel {
    pub id: String,
    pub zone_group: String,
    pub keys: Option<SystemKeys>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CommittedPeriod {
    pub id: String,
    /// Counts periods (master zone changes), so that the newer of two periods is known.
    pub realm_epoch: u32,
    pub epoch: u32,
    pub config: PeriodConfig,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PeriodConfig {
    pub master_zone_group: String,
    pub master_zone: String,
    pub zone_groups: BTreeMap<String, ZoneGroupModel>,
}

impl RealmCopy {
    /// What `period update` stages from the local zonegroups.
    fn staged(&self) -> PeriodConfig {
        let master = self.zone_groups.values().find(|g| g.info.is_master);
        PeriodConfig {
            master_zone_group: master.map(|g| g.info.name.clone()).unwrap_or_default(),
            master_zone: master.map(|g| g.info.master_zone.clone()).unwrap_or_default(),
            zone_groups: self.zone_groups.clone(),
        }
    }

    /// Takes a newer period and its zonegroups, as a pull or a pushed commit does.
    fn receive(&mut self, period: &CommittedPeriod) {
        let newer = self
            .period
            .as_ref()
            .is_none_or(|p| (period.realm_epoch, period.epoch) > (p.realm_epoch, p.epoch));
        if newer {
            for (name, group) in &period.config.zone_groups {
                self.zone_groups.insert(name.clone(), group.clone());
            }
            self.period = Some(period.clone());
        }
    }

    /// Whether `zone` is a member of the committed period.
    pub fn in_period(&self, zone: &str) -> bool {
        self.period.as_ref().is_some_and(|p| {
            p.config
                .zone_groups
                .values()
                .any(|g| g.info.zones.iter().any(|z| z.name == zone))
        })
    }
}

fn require(ok: bool, error: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(error.to_string())
    }
}

fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

impl RgwWorld {
    /// Clusters `names`, none holding anything.
    pub fn with_sites(names: &[&str]) -> RgwWorld {
        RgwWorld {
            sites: names
                .iter()
                .map(|n| (n.to_string(), SiteModel::default()))
                .collect(),
            next_id: 0,
        }
    }

    fn next(&mut self, kind: &str) -> String {
        self.next_id += 1;
        format!("{kind}-{}", self.next_id)
    }

    pub fn site(&self, site: &str) -> &SiteModel {
        self.sites
            .get(site)
            .unwrap_or_else(|| panic!("no site {site} in the model"))
    }

    pub fn site_mut(&mut self, site: &str) -> &mut SiteModel {
        self.sites
            .get_mut(site)
            .unwrap_or_else(|| panic!("no site {site} in the model"))
    }

    pub fn realm(&self, site: &str) -> Option<&RealmCopy> {
        self.site(site).realm.as_ref()
    }

    pub fn realm_mut(&mut self, site: &str) -> Option<&mut RealmCopy> {
        self.site_mut(site).realm.as_mut()
    }

    fn reachable(&self, site: &str) -> bool {
        self.sites.get(site).is_some_and(|s| s.unreachable.is_none())
    }

    /// The realm as the agent of `site` reports it.
    pub fn state(&self, site: &str) -> AgentResult<RgwRealmState> {
        let model = self.site(site);
        if let Some(message) = &model.unreachable {
            return Err(AgentError::Unreachable {
                site: site.to_string(),
                message: message.clone(),
            });
        }
        let Some(realm) = &model.realm else {
            return Ok(RgwRealmState {
                system_user: self.visible_users(site).first().map(|(uid, _)| uid.clone()),
                ..RgwRealmState::default()
            });
        };
        Ok(RgwRealmState {
            realm_id: Some(realm.id.clone()),
            period: realm.period.as_ref().map(|p| Period {
                id: p.id.clone(),
                epoch: p.epoch,
                master_zone_group: p.config.master_zone_group.clone(),
                master_zone: p.config.master_zone.clone(),
                zone_groups: p.config.zone_groups.values().map(|g| g.info.clone()).collect(),
            }),
            local_zones: realm
                .zones
                .iter()
                .map(|(name, zone)| LocalZone {
                    name: name.clone(),
                    id: zone.id.clone(),
                    zone_group: zone.zone_group.clone(),
                    system_access_key: zone.keys.as_ref().map(|k| k.access_key.clone()),
                })
                .collect(),
            system_user: self.visible_users(site).first().map(|(uid, _)| uid.clone()),
        })
    }

    /// The sync policy of each zonegroup of `names` that the site's local objects have, bucket groups last.
    pub fn policies(&self, site: &str, names: &[String]) -> Vec<(String, Vec<SyncGroup>)> {
        let Some(realm) = self.realm(site) else {
            return Vec::new();
        };
        names
            .iter()
            .filter_map(|name| {
                let mut groups = realm.zone_groups.get(name)?.policy.clone();
                groups.extend(realm.bucket_policy.get(name).into_iter().flatten().cloned());
                Some((name.clone(), groups))
            })
            .collect()
    }

    /// Sync status RGW reports for a secondary zone: caught up on metadata and on data from every other zone
    /// of its zonegroup (the model has no traffic).
    pub fn sync_status(&self, site: &str, zone: &str) -> AgentResult<ZoneSync> {
        let not_found = || AgentError::NotFound {
            site: site.to_string(),
            what: format!("zone {zone} in a committed period"),
        };
        let period = self
            .realm(site)
            .and_then(|realm| realm.period.as_ref())
            .ok_or_else(not_found)?;
        let group = period
            .config
            .zone_groups
            .values()
            .find(|g| g.info.zones.iter().any(|z| z.name == zone))
            .ok_or_else(not_found)?;
        let caught_up = || SyncShards {
            state: "sync".into(),
            total_shards: 64,
            ..SyncShards::default()
        };
        Ok(ZoneSync {
            metadata: (period.config.master_zone != zone).then(caught_up),
            data: group
                .info
                .zones
                .iter()
                .filter(|z| z.name != zone)
                .map(|z| SourceSync {
                    source_zone: z.name.clone(),
                    shards: caught_up(),
                })
                .collect(),
        })
    }

    /// The cluster holding zone object `zone` of the realm with id `realm_id`.
    fn zone_host(&self, realm_id: &str, zone: &str) -> Option<String> {
        self.sites
            .iter()
            .find(|(_, s)| {
                s.realm
                    .as_ref()
                    .is_some_and(|r| r.id == realm_id && r.zones.contains_key(zone))
            })
            .map(|(name, _)| name.clone())
    }

    /// Users a cluster knows: its own, and once it syncs metadata (a local zone in the period) those of every
    /// other site with a zone in the period: metadata sync has copied them from the master, which keeps them
    /// when a failover moves the master elsewhere.
    fn visible_users(&self, site: &str) -> Vec<(String, SystemKeys)> {
        let model = self.site(site);
        let mut users: Vec<(String, SystemKeys)> =
            model.users.iter().map(|(u, k)| (u.clone(), k.clone())).collect();
        let Some(realm) = model
            .realm
            .as_ref()
            .filter(|r| r.zones.keys().any(|z| r.in_period(z)))
        else {
            return users;
        };
        let zones = realm.period.iter().flat_map(|p| p.config.zone_groups.values());
        let hosts: BTreeSet<String> = zones
            .flat_map(|g| g.info.zones.iter())
            .filter_map(|z| self.zone_host(&realm.id, &z.name))
            .filter(|host| host != site)
            .collect();
        for host in hosts {
            users.extend(self.site(&host).users.iter().map(|(u, k)| (u.clone(), k.clone())));
        }
        users
    }

    fn accepts(&self, host: &str, keys: &SystemKeys) -> bool {
        self.visible_users(host).iter().any(|(_, k)| k == keys)
    }

    /// Changes zone `zone` in every copy of the realm, local zonegroups and committed periods alike, as a
    /// commit made by hand would (the next epoch).
    pub fn edit_zone_everywhere(&mut self, zone: &str, edit: impl Fn(&mut ZoneInfo)) {
        for realm in self.sites.values_mut().filter_map(|s| s.realm.as_mut()) {
            let period = realm.period.as_mut().map(|p| {
                p.epoch += 1;
                &mut p.config.zone_groups
            });
            let groups = realm
                .zone_groups
                .values_mut()
                .chain(period.into_iter().flat_map(|g| g.values_mut()));
            for group in groups {
                group
                    .info
                    .zones
                    .iter_mut()
                    .filter(|z| z.name == zone)
                    .for_each(&edit);
            }
        }
    }
}
