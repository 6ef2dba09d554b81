//! Steps on the model, with the preconditions Ceph enforces.

use std::collections::BTreeMap;

use super::{require, same_url, CommittedPeriod, RealmCopy, RgwWorld, ZoneGroupModel, ZoneModel};
use crate::{
    agent::{
        split::{Pull, RgwStep, Split},
        SyncGroup, ZoneGroupInfo, ZoneInfo,
    },
    plan::SiteStep,
};

impl RgwWorld {
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
        match site_step.step.split() {
            Split::Rgw(step) => self.execute_rgw(site, step),
            Split::Rbd(_) | Split::DeltaSync(_) => Err(format!(
                "an RGW planner must never plan {}",
                site_step.step.verb()
            )),
        }
    }

    fn execute_rgw(&mut self, site: &str, step: RgwStep<'_>) -> Result<(), String> {
        match step {
            RgwStep::CreateRealm { realm } => {
                if self.realm(site).is_none() {
                    let id = self.next("realm");
                    self.site_mut(site).realm = Some(RealmCopy {
                        name: realm.to_string(),
                        id,
                        zone_groups: BTreeMap::new(),
                        zones: BTreeMap::new(),
                        period: None,
                        bucket_policy: BTreeMap::new(),
                    });
                }
                Ok(())
            }
            RgwStep::CreateZoneGroup(group, wanted) => {
                let id = self.next("zonegroup");
                let copy = self.local_realm(site, group.realm)?;
                if wanted.master {
                    for other in copy.zone_groups.values_mut() {
                        other.info.is_master = false;
                    }
                }
                let model = copy
                    .zone_groups
                    .entry(group.zone_group.to_string())
                    .or_insert_with(|| ZoneGroupModel {
                        info: ZoneGroupInfo {
                            name: group.zone_group.to_string(),
                            id,
                            ..ZoneGroupInfo::default()
                        },
                        policy: Vec::new(),
                    });
                model.info.endpoints = wanted.endpoints.to_vec();
                // As the agent does it: a zonegroup stops being master only when another becomes master.
                model.info.is_master |= wanted.master;
                Ok(())
            }
            RgwStep::CreateZone(target, wanted) => {
                let (zone_group, zone) = (target.zone_group, target.zone);
                let id = self.next("zone");
                let copy = self.local_realm(site, target.realm)?;
                let group = copy
                    .zone_groups
                    .get_mut(zone_group)
                    .ok_or_else(|| format!("zonegroup {zone_group} not found"))?;
                let local = copy.zones.entry(zone.to_string()).or_insert(ZoneModel {
                    id,
                    zone_group: zone_group.to_string(),
                    keys: None,
                });
                local.keys = Some(wanted.keys.clone());
                group.info.zones.retain(|z| z.name != zone);
                group.info.zones.push(ZoneInfo {
                    name: zone.to_string(),
                    id: local.id.clone(),
                    endpoints: wanted.endpoints.to_vec(),
                    read_only: wanted.read_only,
                });
                group.info.zones.sort_by(|a, b| a.name.cmp(&b.name));
                if wanted.master {
                    group.info.master_zone = zone.to_string();
                } else if group.info.master_zone == zone {
                    group.info.master_zone.clear();
                }
                Ok(())
            }
            RgwStep::ModifyZone(target, change) => {
                let (zone_group, zone) = (target.zone_group, target.zone);
                let copy = self.local_realm(site, target.realm)?;
                require(copy.zones.contains_key(zone), "zone not found")?;
                let group = copy
                    .zone_groups
                    .get_mut(zone_group)
                    .ok_or_else(|| format!("zonegroup {zone_group} not found"))?;
                let info = group
                    .info
                    .zones
                    .iter_mut()
                    .find(|z| z.name == zone)
                    .ok_or("zone not in its zonegroup")?;
                if let Some(read_only) = change.read_only {
                    info.read_only = read_only;
                }
                match change.master {
                    Some(true) => group.info.master_zone = zone.to_string(),
                    Some(false) if group.info.master_zone == zone => group.info.master_zone.clear(),
                    _ => {}
                }
                Ok(())
            }
            RgwStep::CreateSystemUser { uid, keys } => {
                // `user create` refuses to run anywhere but on the metadata master.
                let copy = self.realm(site).ok_or("no realm: not the metadata master")?;
                let master = copy.period.as_ref().map(|p| p.config.master_zone.as_str());
                require(
                    master.is_some_and(|m| copy.zones.contains_key(m)),
                    "not the metadata master",
                )?;
                self.site_mut(site).users.insert(uid.to_string(), keys.clone());
                Ok(())
            }
            RgwStep::CommitPeriod { realm } => self.commit(site, realm),
            RgwStep::Pull(pull) => self.pull(site, pull),
            RgwStep::InitMetadataSync { realm, zone } => {
                let copy = self.local_realm(site, realm)?;
                require(copy.zones.contains_key(zone), "zone not found")
            }
            RgwStep::SetSyncPolicy(target, groups) => {
                let zone_group = target.zone_group;
                let copy = self.local_realm(site, target.realm)?;
                let group = copy
                    .zone_groups
                    .get_mut(zone_group)
                    .ok_or_else(|| format!("zonegroup {zone_group} not found"))?;
                let (buckets, own): (Vec<SyncGroup>, Vec<SyncGroup>) =
                    groups.iter().cloned().partition(|g| g.bucket.is_some());
                group.policy = own;
                copy.bucket_policy.insert(zone_group.to_string(), buckets);
                Ok(())
            }
            RgwStep::DeleteZone(target) => {
                let Some(copy) = self.realm_mut(site).filter(|r| r.name == target.realm) else {
                    return Ok(());
                };
                copy.zones.remove(target.zone);
                if let Some(group) = copy.zone_groups.get_mut(target.zone_group) {
                    group.info.zones.retain(|z| z.name != target.zone);
                    if group.info.master_zone == target.zone {
                        group.info.master_zone.clear();
                    }
                }
                Ok(())
            }
            RgwStep::DeleteZoneGroup(target) => {
                if let Some(copy) = self.realm_mut(site).filter(|r| r.name == target.realm) {
                    copy.zone_groups.remove(target.zone_group);
                }
                Ok(())
            }
            RgwStep::DeleteRealm { realm } => {
                let model = self.site_mut(site);
                if model.realm.as_ref().is_some_and(|r| r.name == realm) {
                    model.realm = None;
                }
                Ok(())
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
        for group in staged.zone_groups.values() {
            let info = &group.info;
            let has_master = info.zones.iter().any(|z| z.name == info.master_zone);
            require(
                has_master,
                &format!("(22) zonegroup {} should have a master zone", info.name),
            )?;
        }
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
            .filter(|s| s.as_str() == site || s.as_str() == authority || self.receives_push(s, &period))
            .cloned()
            .collect();
        for receiver in receivers {
            if let Some(copy) = self.realm_mut(&receiver).filter(|r| r.id == local.id) {
                copy.receive(&period);
            }
        }
        Ok(())
    }

    /// RGW pushes a committed period to the zones in it only: a site whose zone it removed keeps the old one.
    fn receives_push(&self, site: &str, period: &CommittedPeriod) -> bool {
        let hosts_a_zone_of = |copy: &RealmCopy| {
            let mut zones = period
                .config
                .zone_groups
                .values()
                .flat_map(|g| g.info.zones.iter());
            zones.any(|z| copy.zones.contains_key(&z.name))
        };
        self.reachable(site) && self.realm(site).is_some_and(hosts_a_zone_of)
    }

    /// `realm pull` (creating the realm here) or `period pull` from the cluster serving `url`.
    fn pull(&mut self, site: &str, pull: Pull<'_>) -> Result<(), String> {
        let (realm, url) = (pull.realm, pull.url);
        if !pull.create_realm {
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
        require(self.accepts(&host, pull.keys), "(13) Permission denied")?;
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
            bucket_policy: BTreeMap::new(),
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
