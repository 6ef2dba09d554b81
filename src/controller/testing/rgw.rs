//! A small pure model of RGW multisite on several Ceph clusters, for planner tests. Steps run with the
//! preconditions Ceph enforces, so a step planned too early or on the wrong site fails the test:
//!
//! - zonegroups and zones are local objects; `CommitPeriod` stages them into a period on the master zone's
//!   cluster, or forwards the commit there signed with a local zone's system key, and pushes the result to
//!   every reachable cluster of the realm (a changed master zone starts a new period, any other change the
//!   next epoch, no change nothing);
//! - `PullRealm`/`PullPeriod` need a reachable cluster serving the URL for a local zone, and the system keys;
//! - the system user is created on the metadata master (the period's master zone) and reaches the others
//!   by metadata sync, here at once.

use std::collections::BTreeMap;

use crate::{
    agent::{
        LocalZone, Period, RgwRealmState, SourceSync, Step, SyncGroup, SyncShards, SystemKeys, ZoneGroupInfo,
        ZoneInfo, ZoneSync,
    },
    plan::SiteStep,
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
    /// `Some(error)` when the agent does not answer.
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
    pub fn state(&self, site: &str) -> Result<RgwRealmState, String> {
        let model = self.site(site);
        if let Some(error) = &model.unreachable {
            return Err(error.clone());
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

    /// The sync policy of each zonegroup of `names` that the site's local objects have.
    pub fn policies(&self, site: &str, names: &[String]) -> Vec<(String, Vec<SyncGroup>)> {
        let Some(realm) = self.realm(site) else {
            return Vec::new();
        };
        names
            .iter()
            .filter_map(|name| Some((name.clone(), realm.zone_groups.get(name)?.policy.clone())))
            .collect()
    }

    /// Sync status RGW reports for a secondary zone: caught up on metadata and on data from every other zone
    /// of its zonegroup (the model has no traffic).
    pub fn sync_status(&self, site: &str, zone: &str) -> Result<ZoneSync, String> {
        let realm = self.realm(site).ok_or("no realm")?;
        let period = realm.period.as_ref().ok_or("no period")?;
        let group = period
            .config
            .zone_groups
            .values()
            .find(|g| g.info.zones.iter().any(|z| z.name == zone))
            .ok_or("zone not in the period")?;
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

    /// Users a cluster knows: its own, and the metadata master's once it syncs metadata (a local zone in the
    /// period, the master zone elsewhere).
    fn visible_users(&self, site: &str) -> Vec<(String, SystemKeys)> {
        let model = self.site(site);
        let mut users: Vec<(String, SystemKeys)> =
            model.users.iter().map(|(u, k)| (u.clone(), k.clone())).collect();
        let master_host = model.realm.as_ref().and_then(|realm| {
            let period = realm.period.as_ref()?;
            let syncs = realm.zones.keys().any(|z| realm.in_period(z));
            let host = self.zone_host(&realm.id, &period.config.master_zone)?;
            (syncs && host != site).then_some(host)
        });
        if let Some(host) = master_host {
            users.extend(self.site(&host).users.iter().map(|(u, k)| (u.clone(), k.clone())));
        }
        users
    }

    fn accepts(&self, host: &str, keys: &SystemKeys) -> bool {
        self.visible_users(host).iter().any(|(_, k)| k == keys)
    }

    /// Runs every step in order; the first failure stops the run.
    pub fn apply(&mut self, steps: &[SiteStep]) -> Result<(), String> {
        for step in steps {
            self.execute(step).map_err(|e| format!("{step}: {e}"))?;
        }
        Ok(())
    }

    pub fn execute(&mut self, site_step: &SiteStep) -> Result<(), String> {
        let site = site_step.site.as_str();
        require(self.sites.contains_key(site), "no such site")?;
        require(self.reachable(site), "site unreachable")?;
        match &site_step.step {
            Step::CreateRealm { realm } => {
                if self.realm(site).is_none() {
                    let id = self.next("realm");
                    self.site_mut(site).realm = Some(RealmCopy {
                        name: realm.clone(),
                        id,
                        zone_groups: BTreeMap::new(),
                        zones: BTreeMap::new(),
                        period: None,
                    });
                }
                Ok(())
            }
            Step::CreateZoneGroup {
                realm,
                zone_group,
                endpoints,
                master,
            } => {
                let id = self.next("zonegroup");
                let copy = self.local_realm(site, realm)?;
                if *master {
                    for other in copy.zone_groups.values_mut() {
                        other.info.is_master = false;
                    }
                }
                let group = copy
                    .zone_groups
                    .entry(zone_group.clone())
                    .or_insert_with(|| ZoneGroupModel {
                        info: ZoneGroupInfo {
                            name: zone_group.clone(),
                            id,
                            ..ZoneGroupInfo::default()
                        },
                        policy: Vec::new(),
                    });
                group.info.endpoints = endpoints.clone();
                group.info.is_master = *master;
                Ok(())
            }
            Step::CreateZone {
                realm,
                zone_group,
                zone,
                endpoints,
                master,
                read_only,
                keys,
            } => {
                let id = self.next("zone");
                let copy = self.local_realm(site, realm)?;
                let group = copy
                    .zone_groups
                    .get_mut(zone_group)
                    .ok_or_else(|| format!("zonegroup {zone_group} not found"))?;
                let local = copy.zones.entry(zone.clone()).or_insert(ZoneModel {
                    id,
                    zone_group: zone_group.clone(),
                    keys: None,
                });
                local.keys = Some(keys.clone());
                group.info.zones.retain(|z| z.name != *zone);
                group.info.zones.push(ZoneInfo {
                    name: zone.clone(),
                    id: local.id.clone(),
                    endpoints: endpoints.clone(),
                    read_only: *read_only,
                });
                group.info.zones.sort_by(|a, b| a.name.cmp(&b.name));
                if *master {
                    group.info.master_zone = zone.clone();
                } else if group.info.master_zone == *zone {
                    group.info.master_zone.clear();
                }
                Ok(())
            }
            Step::ModifyZone {
                realm,
                zone_group,
                zone,
                master,
                read_only,
            } => {
                let copy = self.local_realm(site, realm)?;
                require(copy.zones.contains_key(zone), "zone not found")?;
                let group = copy
                    .zone_groups
                    .get_mut(zone_group)
                    .ok_or_else(|| format!("zonegroup {zone_group} not found"))?;
                let info = group
                    .info
                    .zones
                    .iter_mut()
                    .find(|z| z.name == *zone)
                    .ok_or("zone not in its zonegroup")?;
                if let Some(read_only) = read_only {
                    info.read_only = *read_only;
                }
                match master {
                    Some(true) => group.info.master_zone = zone.clone(),
                    Some(false) if group.info.master_zone == *zone => group.info.master_zone.clear(),
                    _ => {}
                }
                Ok(())
            }
            Step::CreateSystemUser { uid, keys } => {
                // `user create` refuses to run anywhere but on the metadata master.
                let copy = self.realm(site).ok_or("no realm: not the metadata master")?;
                let master = copy.period.as_ref().map(|p| p.config.master_zone.as_str());
                require(
                    master.is_some_and(|m| copy.zones.contains_key(m)),
                    "not the metadata master",
                )?;
                self.site_mut(site).users.insert(uid.clone(), keys.clone());
                Ok(())
            }
            Step::CommitPeriod { realm } => self.commit(site, realm),
            Step::PullRealm { realm, url, keys } => self.pull(site, realm, url, keys, true),
            Step::PullPeriod { realm, url, keys } => self.pull(site, realm, url, keys, false),
            Step::InitMetadataSync { realm, zone } => {
                let copy = self.local_realm(site, realm)?;
                require(copy.zones.contains_key(zone), "zone not found")
            }
            Step::SetSyncPolicy {
                realm,
                zone_group,
                groups,
            } => {
                let copy = self.local_realm(site, realm)?;
                let group = copy
                    .zone_groups
                    .get_mut(zone_group)
                    .ok_or_else(|| format!("zonegroup {zone_group} not found"))?;
                group.policy = groups.clone();
                Ok(())
            }
            Step::DeleteZone {
                realm,
                zone_group,
                zone,
            } => {
                let Some(copy) = self.realm_mut(site).filter(|r| r.name == *realm) else {
                    return Ok(());
                };
                copy.zones.remove(zone);
                if let Some(group) = copy.zone_groups.get_mut(zone_group) {
                    group.info.zones.retain(|z| z.name != *zone);
                    if group.info.master_zone == *zone {
                        group.info.master_zone.clear();
                    }
                }
                Ok(())
            }
            Step::DeleteRealm { realm } => {
                let model = self.site_mut(site);
                if model.realm.as_ref().is_some_and(|r| r.name == *realm) {
                    model.realm = None;
                }
                Ok(())
            }
            other => Err(format!("an RGW planner must never plan {}", other.verb())),
        }
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

    fn local_realm(&mut self, site: &str, realm: &str) -> Result<&mut RealmCopy, String> {
        self.realm_mut(site)
            .filter(|r| r.name == realm)
            .ok_or_else(|| format!("realm {realm} not found"))
    }

    fn commit(&mut self, site: &str, realm: &str) -> Result<(), String> {
        let local = self.local_realm(site, realm)?.clone();
        let staged = local.staged();
        require(
            !staged.master_zone.is_empty(),
            "the master zonegroup has no master zone",
        )?;
        let authority = if local.zones.contains_key(&staged.master_zone) {
            site.to_string()
        } else {
            let master = local
                .period
                .as_ref()
                .map_or(&staged.master_zone, |p| &p.config.master_zone);
            let host = self
                .zone_host(&local.id, master)
                .filter(|h| h != site)
                .ok_or("could not find the master zone")?;
            require(self.reachable(&host), "(110) Connection timed out")?;
            let signed = local
                .zones
                .values()
                .filter_map(|z| z.keys.as_ref())
                .any(|keys| self.accepts(&host, keys));
            require(
                signed,
                "(13) Permission denied: no local zone key the master accepts",
            )?;
            host
        };
        let base = self
            .realm(&authority)
            .and_then(|r| r.period.clone())
            .filter(|_| self.realm(&authority).is_some_and(|r| r.id == local.id));
        let period = match base {
            Some(current) if current.config == staged => current,
            Some(current) if current.config.master_zone == staged.master_zone => CommittedPeriod {
                epoch: current.epoch + 1,
                config: staged,
                ..current
            },
            previous => CommittedPeriod {
                id: self.next("period"),
                realm_epoch: previous.map_or(1, |p| p.realm_epoch + 1),
                epoch: 1,
                config: staged,
            },
        };
        let receivers: Vec<String> = self
            .sites
            .keys()
            .filter(|s| s.as_str() == site || self.reachable(s))
            .cloned()
            .collect();
        for receiver in receivers {
            if let Some(copy) = self.realm_mut(&receiver).filter(|r| r.id == local.id) {
                copy.receive(&period);
            }
        }
        Ok(())
    }

    /// `realm pull` (creating the realm here) or `period pull` from the cluster serving `url`.
    fn pull(
        &mut self,
        site: &str,
        realm: &str,
        url: &str,
        keys: &SystemKeys,
        create: bool,
    ) -> Result<(), String> {
        if !create {
            self.local_realm(site, realm)?;
        }
        let serves = |copy: &RealmCopy| {
            copy.name == realm
                && copy.zone_groups.values().any(|g| {
                    g.info.zones.iter().any(|z| {
                        copy.zones.contains_key(&z.name) && z.endpoints.iter().any(|e| same_url(e, url))
                    })
                })
        };
        let host = self
            .sites
            .iter()
            .find(|(name, s)| name.as_str() != site && s.realm.as_ref().is_some_and(serves))
            .map(|(name, _)| name.clone())
            .ok_or_else(|| format!("request to {url} failed: (111) Connection refused"))?;
        require(self.reachable(&host), "(110) Connection timed out")?;
        require(self.accepts(&host, keys), "(13) Permission denied")?;
        let remote = self
            .realm(&host)
            .cloned()
            .ok_or("(2) No such file or directory")?;
        let model = self.site_mut(site);
        let local = model.realm.get_or_insert_with(|| RealmCopy {
            name: realm.to_string(),
            id: remote.id.clone(),
            zone_groups: BTreeMap::new(),
            zones: BTreeMap::new(),
            period: None,
        });
        require(
            local.id == remote.id,
            "local realm has another id than the one at the URL",
        )?;
        if let Some(period) = &remote.period {
            local.receive(period);
        }
        Ok(())
    }
}
