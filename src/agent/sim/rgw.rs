//! RGW multisite on a simulated cluster: realms, zonegroups, zones, periods, system users and sync status.
//!
//! Zonegroups and zones are local objects; `CommitPeriod` turns them into a period the way `radosgw-admin period
//! update --commit` does: on the master zone's cluster (forwarded there from a secondary), with a new period id
//! when the master zone changes, the next epoch when anything else changed, and nothing when nothing did.

use std::collections::{BTreeMap, VecDeque};

use k8s_openapi::jiff::Timestamp;

use super::{command_failed, not_found, refused, WorldState};
use crate::agent::{
    split::{Pull, WantedZone, WantedZoneGroup, ZoneChange, ZoneGroupRef, ZoneRef},
    AgentResult, LocalZone, Period, RgwRealmState, SourceSync, Step, SyncGroup, SyncShards, SystemKeys,
    ZoneGroupInfo, ZoneInfo, ZoneSync,
};

/// `rgw_md_log_max_shards` and `rgw_data_log_num_shards` as the test bed configures them.
const LOG_SHARDS: u32 = 8;
const COMMIT_COMMAND: &str = "radosgw-admin period update --commit";

#[derive(Debug, Default)]
pub(super) struct RgwSite {
    pub(super) realms: BTreeMap<String, Realm>,
    users: BTreeMap<String, User>,
    /// Changes secondaries' metadata sync applies (users); read from the metadata master's cluster.
    metadata_log: ChangeLog,
}

#[derive(Clone, Debug)]
struct User {
    keys: SystemKeys,
    created: Timestamp,
}

#[derive(Debug)]
pub(super) struct Realm {
    id: String,
    zone_groups: BTreeMap<String, ZoneGroup>,
    /// Zones whose objects live on this cluster.
    zones: BTreeMap<String, Zone>,
    period: Option<CommittedPeriod>,
}

#[derive(Clone, Debug, PartialEq)]
struct ZoneGroup {
    info: ZoneGroupInfo,
    sync_policy: Vec<SyncGroup>,
}

#[derive(Debug)]
struct Zone {
    id: String,
    zone_group: String,
    keys: Option<SystemKeys>,
    data_log: ChangeLog,
    /// Set by a test to wedge metadata sync; cleared by `InitMetadataSync`.
    metadata_sync_stalled_at: Option<Timestamp>,
    metadata_sync_restarted_at: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq)]
struct PeriodConfig {
    master_zone_group: String,
    master_zone: String,
    zone_groups: Vec<ZoneGroup>,
}

#[derive(Clone, Debug)]
struct CommittedPeriod {
    id: String,
    /// Counts periods (new master zones), so that the newer of two periods is known.
    realm_epoch: u64,
    epoch: u32,
    config: PeriodConfig,
}

/// A log's not-yet-forgotten changes by time and shard. Entries every peer has received are forgotten, and
/// changes at one instant collapse to one entry per shard: sync status only needs shards and oldest times.
#[derive(Debug, Default)]
struct ChangeLog {
    entries: VecDeque<(Timestamp, u32)>,
    next_shard: u32,
}

impl ChangeLog {
    fn record(&mut self, at: Timestamp, count: u32, forget_up_to: Timestamp) {
        while self
            .entries
            .front()
            .is_some_and(|(when, _)| *when <= forget_up_to)
        {
            self.entries.pop_front();
        }
        for _ in 0..count.min(LOG_SHARDS) {
            self.entries.push_back((at, self.next_shard));
            self.next_shard = (self.next_shard + 1) % LOG_SHARDS;
        }
    }

    /// Sync progress of a reader that has applied every change up to `applied_up_to`.
    fn shards_after(&self, applied_up_to: Timestamp) -> SyncShards {
        let pending: Vec<&(Timestamp, u32)> = self
            .entries
            .iter()
            .filter(|(at, _)| *at > applied_up_to)
            .collect();
        let mut behind: Vec<u32> = pending.iter().map(|(_, shard)| *shard).collect();
        behind.sort_unstable();
        behind.dedup();
        SyncShards {
            state: "sync".into(),
            total_shards: LOG_SHARDS,
            behind_shards: behind.len() as u32,
            full_sync_shards: 0,
            oldest_change: pending.iter().map(|(at, _)| *at).min(),
        }
    }
}

/// Sync that has not started: every shard still in full sync.
fn initial_shards(state: &str) -> SyncShards {
    SyncShards {
        state: state.into(),
        total_shards: LOG_SHARDS,
        behind_shards: LOG_SHARDS,
        full_sync_shards: LOG_SHARDS,
        oldest_change: None,
    }
}

fn realm_mut<'a>(world: &'a mut WorldState, site: &str, realm: &str) -> AgentResult<&'a mut Realm> {
    world
        .cluster_mut(site)?
        .rgw
        .realms
        .get_mut(realm)
        .ok_or_else(|| not_found(site, format!("realm {realm}")))
}

fn local_realm<'a>(world: &'a WorldState, site: &str, realm: &str) -> AgentResult<&'a Realm> {
    world
        .cluster(site)?
        .rgw
        .realms
        .get(realm)
        .ok_or_else(|| not_found(site, format!("realm {realm}")))
}

fn zone_mut<'a>(world: &'a mut WorldState, site: &str, realm: &str, zone: &str) -> AgentResult<&'a mut Zone> {
    realm_mut(world, site, realm)?
        .zones
        .get_mut(zone)
        .ok_or_else(|| not_found(site, format!("zone {zone}")))
}

fn zone_group_mut<'a>(realm: &'a mut Realm, site: &str, zone_group: &str) -> AgentResult<&'a mut ZoneGroup> {
    realm
        .zone_groups
        .get_mut(zone_group)
        .ok_or_else(|| not_found(site, format!("zonegroup {zone_group}")))
}

impl Realm {
    /// The configuration `period update` would stage from the local zonegroups.
    fn staged(&self) -> PeriodConfig {
        let master = self
            .zone_groups
            .values()
            .find(|zone_group| zone_group.info.is_master);
        PeriodConfig {
            master_zone_group: master
                .map(|zone_group| zone_group.info.name.clone())
                .unwrap_or_default(),
            master_zone: master
                .map(|zone_group| zone_group.info.master_zone.clone())
                .unwrap_or_default(),
            zone_groups: self.zone_groups.values().cloned().collect(),
        }
    }

    /// Takes a newer period and the zonegroups in it, as `period pull` or a pushed commit does.
    fn receive_period(&mut self, period: &CommittedPeriod) {
        let newer = self
            .period
            .as_ref()
            .is_none_or(|current| (period.realm_epoch, period.epoch) > (current.realm_epoch, current.epoch));
        if newer {
            for zone_group in &period.config.zone_groups {
                self.zone_groups
                    .insert(zone_group.info.name.clone(), zone_group.clone());
            }
            self.period = Some(period.clone());
        }
    }

    fn zone_in_period(&self, zone: &str) -> Option<&ZoneGroup> {
        let period = self.period.as_ref()?;
        period
            .config
            .zone_groups
            .iter()
            .find(|zone_group| zone_group.info.zones.iter().any(|info| info.name == zone))
    }
}

impl WorldState {
    pub(super) fn create_realm(&mut self, site: &str, realm: &str) -> AgentResult<()> {
        let WorldState { clusters, ids, .. } = self;
        let cluster = clusters
            .get_mut(site)
            .ok_or_else(|| not_found(site, "simulated site"))?;
        cluster
            .rgw
            .realms
            .entry(realm.to_string())
            .or_insert_with(|| Realm {
                id: ids.uuid(),
                zone_groups: BTreeMap::new(),
                zones: BTreeMap::new(),
                period: None,
            });
        Ok(())
    }

    pub(super) fn create_zone_group(
        &mut self,
        site: &str,
        group: ZoneGroupRef<'_>,
        wanted: WantedZoneGroup<'_>,
    ) -> AgentResult<()> {
        let WantedZoneGroup { endpoints, master } = wanted;
        let id = self.ids.uuid();
        let realm_state = realm_mut(self, site, group.realm)?;
        if master {
            for other in realm_state.zone_groups.values_mut() {
                other.info.is_master = false;
            }
        }
        let entry = realm_state
            .zone_groups
            .entry(group.zone_group.to_string())
            .or_insert_with(|| ZoneGroup {
                info: ZoneGroupInfo {
                    name: group.zone_group.to_string(),
                    id,
                    ..ZoneGroupInfo::default()
                },
                sync_policy: Vec::new(),
            });
        entry.info.endpoints = endpoints.to_vec();
        entry.info.is_master = master;
        Ok(())
    }

    pub(super) fn create_zone(
        &mut self,
        site: &str,
        target: ZoneRef<'_>,
        spec: WantedZone<'_>,
    ) -> AgentResult<()> {
        let (realm, zone_group, zone) = (target.realm, target.zone_group, target.zone);
        let new_id = self.ids.uuid();
        let realm_state = realm_mut(self, site, realm)?;
        zone_group_mut(realm_state, site, zone_group)?;
        let local = realm_state.zones.entry(zone.to_string()).or_insert_with(|| Zone {
            id: new_id,
            zone_group: zone_group.to_string(),
            keys: None,
            data_log: ChangeLog::default(),
            metadata_sync_stalled_at: None,
            metadata_sync_restarted_at: None,
        });
        local.zone_group = zone_group.to_string();
        local.keys = Some(spec.keys.clone()).filter(|keys| !keys.access_key.is_empty());
        let info = ZoneInfo {
            name: zone.to_string(),
            id: local.id.clone(),
            endpoints: spec.endpoints.to_vec(),
            read_only: spec.read_only,
        };
        let group = zone_group_mut(realm_state, site, zone_group)?;
        group.info.zones.retain(|existing| existing.name != zone);
        group.info.zones.push(info);
        group.info.zones.sort_by(|a, b| a.name.cmp(&b.name));
        if spec.master {
            group.info.master_zone = zone.to_string();
        } else if group.info.master_zone == zone {
            group.info.master_zone.clear();
        }
        Ok(())
    }

    pub(super) fn modify_zone(
        &mut self,
        site: &str,
        target: ZoneRef<'_>,
        change: ZoneChange,
        now: Timestamp,
    ) -> AgentResult<()> {
        let (realm, zone_group, zone) = (target.realm, target.zone_group, target.zone);
        let ZoneChange { master, read_only } = change;
        if master == Some(true) {
            self.keep_synced_users(site, realm, now)?;
        }
        let realm_state = realm_mut(self, site, realm)?;
        if !realm_state.zones.contains_key(zone) {
            return Err(not_found(site, format!("zone {zone}")));
        }
        let group = zone_group_mut(realm_state, site, zone_group)?;
        let info = group.info.zones.iter_mut().find(|info| info.name == zone);
        let info = info.ok_or_else(|| not_found(site, format!("zone {zone} in zonegroup {zone_group}")))?;
        if let Some(read_only) = read_only {
            info.read_only = read_only;
        }
        match master {
            Some(true) => group.info.master_zone = zone.to_string(),
            Some(false) if group.info.master_zone == zone => group.info.master_zone.clear(),
            _ => {}
        }
        Ok(())
    }

    pub(super) fn create_system_user(
        &mut self,
        site: &str,
        uid: &str,
        keys: &SystemKeys,
        now: Timestamp,
    ) -> AgentResult<()> {
        let forget_up_to = self.metadata_forget_bound(site, now);
        let rgw = &mut self.cluster_mut(site)?.rgw;
        if rgw.users.get(uid).is_some_and(|user| user.keys == *keys) {
            return Ok(());
        }
        rgw.users.insert(
            uid.to_string(),
            User {
                keys: keys.clone(),
                created: now,
            },
        );
        rgw.metadata_log.record(now, 1, forget_up_to);
        Ok(())
    }

    /// `period update --commit`, run where the (new) master zone lives or forwarded to the current master zone's
    /// cluster with the local zone's system key; the result is pushed to every cluster of the realm in reach.
    pub(super) fn commit_period(
        &mut self,
        site: &str,
        realm: &str,
        step: &Step,
        now: Timestamp,
    ) -> AgentResult<()> {
        let local = local_realm(self, site, realm)?;
        let staged = local.staged();
        if staged.master_zone.is_empty() {
            return Err(refused(site, step, "the master zonegroup has no master zone"));
        }
        let realm_id = local.id.clone();
        let authority = if local.zones.contains_key(&staged.master_zone) {
            site.to_string()
        } else {
            let master_zone = local
                .period
                .as_ref()
                .map_or(&staged.master_zone, |period| &period.config.master_zone);
            let host = self.zone_host(&realm_id, master_zone).filter(|host| host != site);
            let host = host
                .ok_or_else(|| command_failed(site, COMMIT_COMMAND, 2, "could not find the master zone"))?;
            if !self.reachable(site, &host) {
                return Err(command_failed(
                    site,
                    COMMIT_COMMAND,
                    110,
                    "request failed: (110) Connection timed out",
                ));
            }
            let host_realm = self.realm_by_id(&host, &realm_id);
            let mut local_keys = local.zones.values().filter_map(|zone| zone.keys.as_ref());
            if !local_keys.any(|keys| self.accepts_keys(&host, host_realm, keys, now)) {
                return Err(refused(site, step, "request failed: (13) Permission denied"));
            }
            host
        };
        let base = self
            .realm_by_id(&authority, &realm_id)
            .and_then(|realm| realm.period.clone());
        let period = match base {
            Some(current) if current.config.master_zone == staged.master_zone && current.config == staged => {
                current
            }
            Some(current) if current.config.master_zone == staged.master_zone => CommittedPeriod {
                epoch: current.epoch + 1,
                config: staged,
                ..current
            },
            previous => CommittedPeriod {
                id: self.ids.uuid(),
                realm_epoch: previous.map_or(1, |previous| previous.realm_epoch + 1),
                epoch: 1,
                config: staged,
            },
        };
        // RGW pushes a commit to the endpoints of the zones in the new period only: a site whose zone the
        // commit removed keeps its old copy of the period.
        let hosts_a_zone_of_the_period = |other: &str| {
            self.realm_by_id(other, &realm_id).is_some_and(|realm| {
                period
                    .config
                    .zone_groups
                    .iter()
                    .flat_map(|group| group.info.zones.iter())
                    .any(|zone| realm.zones.contains_key(&zone.name))
            })
        };
        let receivers: Vec<String> = self
            .clusters
            .keys()
            .filter(|other| {
                other.as_str() == site
                    || other.as_str() == authority
                    || (self.reachable(&authority, other) && hosts_a_zone_of_the_period(other))
            })
            .cloned()
            .collect();
        for receiver in receivers {
            if let Some(realm) = self.realm_by_id_mut(&receiver, &realm_id) {
                realm.receive_period(&period);
            }
        }
        Ok(())
    }

    /// `realm pull` (creating the realm here) or `period pull` from the zone serving `url`.
    pub(super) fn pull_realm(
        &mut self,
        site: &str,
        pull: Pull<'_>,
        step: &Step,
        now: Timestamp,
    ) -> AgentResult<()> {
        let Pull {
            realm,
            url,
            keys,
            create_realm,
        } = pull;
        let command = if create_realm {
            "radosgw-admin realm pull"
        } else {
            "radosgw-admin period pull"
        };
        if !create_realm {
            realm_mut(self, site, realm)?;
        }
        let host = self.url_host(site, realm, url);
        let host = host.ok_or_else(|| {
            command_failed(
                site,
                command,
                111,
                format!("request to {url} failed: (111) Connection refused"),
            )
        })?;
        if !self.reachable(site, &host) {
            return Err(command_failed(
                site,
                command,
                110,
                format!("request to {url} failed: (110) Connection timed out"),
            ));
        }
        let host_realm = self.cluster(&host)?.rgw.realms.get(realm);
        if !self.accepts_keys(&host, host_realm, keys, now) {
            return Err(refused(site, step, "request failed: (13) Permission denied"));
        }
        let Some(remote) = host_realm else {
            return Err(command_failed(
                site,
                command,
                2,
                "request failed: (2) No such file or directory",
            ));
        };
        let (realm_id, period) = (remote.id.clone(), remote.period.clone());
        let local_realms = &mut self.cluster_mut(site)?.rgw.realms;
        let local = local_realms.entry(realm.to_string()).or_insert_with(|| Realm {
            id: realm_id.clone(),
            zone_groups: BTreeMap::new(),
            zones: BTreeMap::new(),
            period: None,
        });
        if local.id != realm_id {
            return Err(refused(
                site,
                step,
                format!("local realm {realm} has another id than the one at {url}"),
            ));
        }
        if let Some(period) = period {
            local.receive_period(&period);
        }
        Ok(())
    }

    pub(super) fn init_metadata_sync(
        &mut self,
        site: &str,
        realm: &str,
        zone: &str,
        now: Timestamp,
    ) -> AgentResult<()> {
        let local = zone_mut(self, site, realm, zone)?;
        local.metadata_sync_stalled_at = None;
        local.metadata_sync_restarted_at = Some(now);
        Ok(())
    }

    pub(super) fn set_metadata_sync_stalled(
        &mut self,
        site: &str,
        realm: &str,
        zone: &str,
        stalled: bool,
        now: Timestamp,
    ) -> AgentResult<()> {
        let local = zone_mut(self, site, realm, zone)?;
        local.metadata_sync_stalled_at = if stalled {
            local.metadata_sync_stalled_at.or(Some(now))
        } else {
            None
        };
        Ok(())
    }

    pub(super) fn set_sync_policy(
        &mut self,
        site: &str,
        group: ZoneGroupRef<'_>,
        groups: &[SyncGroup],
    ) -> AgentResult<()> {
        let realm_state = realm_mut(self, site, group.realm)?;
        zone_group_mut(realm_state, site, group.zone_group)?.sync_policy = groups.to_vec();
        Ok(())
    }

    pub(super) fn delete_zone(&mut self, site: &str, target: ZoneRef<'_>) -> AgentResult<()> {
        let (realm, zone_group, zone) = (target.realm, target.zone_group, target.zone);
        let Some(realm_state) = self.cluster_mut(site)?.rgw.realms.get_mut(realm) else {
            return Ok(());
        };
        realm_state.zones.remove(zone);
        if let Some(group) = realm_state.zone_groups.get_mut(zone_group) {
            group.info.zones.retain(|info| info.name != zone);
            if group.info.master_zone == zone {
                group.info.master_zone.clear();
            }
        }
        Ok(())
    }

    pub(super) fn delete_zone_group(&mut self, site: &str, group: ZoneGroupRef<'_>) -> AgentResult<()> {
        if let Some(realm_state) = self.cluster_mut(site)?.rgw.realms.get_mut(group.realm) {
            realm_state.zone_groups.remove(group.zone_group);
        }
        Ok(())
    }

    pub(super) fn put_objects(
        &mut self,
        site: &str,
        realm: &str,
        zone: &str,
        count: u32,
        now: Timestamp,
    ) -> AgentResult<()> {
        let forget_up_to = self.oldest_undelivered_from(site, now);
        let local = zone_mut(self, site, realm, zone)?;
        local.data_log.record(now, count, forget_up_to);
        Ok(())
    }

    pub(super) fn rgw_realm(&self, site: &str, realm: &str, now: Timestamp) -> AgentResult<RgwRealmState> {
        let cluster = self.cluster(site)?;
        let local = cluster.rgw.realms.get(realm);
        Ok(RgwRealmState {
            realm_id: local.map(|local| local.id.clone()),
            period: local
                .and_then(|local| local.period.as_ref())
                .map(|period| Period {
                    id: period.id.clone(),
                    epoch: period.epoch,
                    master_zone_group: period.config.master_zone_group.clone(),
                    master_zone: period.config.master_zone.clone(),
                    zone_groups: period
                        .config
                        .zone_groups
                        .iter()
                        .map(|zone_group| zone_group.info.clone())
                        .collect(),
                }),
            local_zones: local
                .map(|local| {
                    local
                        .zones
                        .iter()
                        .map(|(name, zone)| LocalZone {
                            name: name.clone(),
                            id: zone.id.clone(),
                            zone_group: zone.zone_group.clone(),
                            system_access_key: zone.keys.as_ref().map(|keys| keys.access_key.clone()),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            system_user: self.visible_system_user(site, local, now),
        })
    }

    pub(super) fn rgw_sync_status(
        &self,
        site: &str,
        realm: &str,
        zone: &str,
        now: Timestamp,
    ) -> AgentResult<ZoneSync> {
        let local = local_realm(self, site, realm)?;
        let zone_state = local
            .zones
            .get(zone)
            .ok_or_else(|| not_found(site, format!("zone {zone}")))?;
        let (Some(period), Some(zone_group)) = (local.period.as_ref(), local.zone_in_period(zone)) else {
            return Ok(ZoneSync {
                metadata: Some(initial_shards("init")),
                data: Vec::new(),
            });
        };
        let metadata = (period.config.master_zone != zone).then(|| {
            let restarted = zone_state.metadata_sync_restarted_at;
            if restarted.is_some_and(|at| at.checked_add(self.lag).is_ok_and(|done| now < done)) {
                return initial_shards("building-full-sync-maps");
            }
            let Some(host) = self.zone_host(&local.id, &period.config.master_zone) else {
                return initial_shards("init");
            };
            let mut applied = self.delivered_up_to(&host, site, now);
            if let Some(stalled_at) = zone_state.metadata_sync_stalled_at {
                applied = applied.min(stalled_at);
            }
            self.clusters.get(&host).map_or_else(
                || initial_shards("init"),
                |cluster| cluster.rgw.metadata_log.shards_after(applied),
            )
        });
        let data = zone_group
            .info
            .zones
            .iter()
            .filter(|source| source.name != zone)
            .map(|source| {
                let host = self.zone_host(&local.id, &source.name);
                let log = host
                    .as_deref()
                    .and_then(|host| self.realm_by_id(host, &local.id)?.zones.get(&source.name));
                let shards = match (host.as_deref(), log) {
                    (Some(host), Some(source_zone)) => source_zone
                        .data_log
                        .shards_after(self.delivered_up_to(host, site, now)),
                    _ => initial_shards("init"),
                };
                SourceSync {
                    source_zone: source.name.clone(),
                    shards,
                }
            })
            .collect();
        Ok(ZoneSync { metadata, data })
    }

    pub(super) fn rgw_sync_policy(
        &self,
        site: &str,
        realm: &str,
        zone_group: &str,
    ) -> AgentResult<Vec<SyncGroup>> {
        let local = local_realm(self, site, realm)?;
        let group = local
            .zone_groups
            .get(zone_group)
            .ok_or_else(|| not_found(site, format!("zonegroup {zone_group}")))?;
        Ok(group.sync_policy.clone())
    }

    /// The users a cluster knows: its own, plus the metadata master's once metadata sync brought them over.
    fn visible_users(&self, site: &str, realm: Option<&Realm>, now: Timestamp) -> Vec<(&String, &User)> {
        let Some(cluster) = self.clusters.get(site) else {
            return Vec::new();
        };
        let mut users: Vec<(&String, &User)> = cluster.rgw.users.iter().collect();
        let master_host = realm.and_then(|realm| {
            let period = realm.period.as_ref()?;
            let syncs_metadata = realm
                .zones
                .keys()
                .any(|zone| realm.zone_in_period(zone).is_some());
            let host = self
                .zone_host(&realm.id, &period.config.master_zone)
                .filter(|host| host != site)?;
            syncs_metadata.then_some(host)
        });
        if let Some((host, host_cluster)) = master_host
            .as_deref()
            .and_then(|host| Some((host, self.clusters.get(host)?)))
        {
            let delivered = self.delivered_up_to(host, site, now);
            users.extend(
                host_cluster
                    .rgw
                    .users
                    .iter()
                    .filter(|(_, user)| user.created <= delivered),
            );
        }
        users
    }

    /// A zone about to become master keeps the users metadata sync has already brought it: from then on it
    /// is the metadata master and reads no other cluster's users.
    fn keep_synced_users(&mut self, site: &str, realm: &str, now: Timestamp) -> AgentResult<()> {
        let realm_state = self.cluster(site)?.rgw.realms.get(realm);
        let synced: Vec<(String, User)> = self
            .visible_users(site, realm_state, now)
            .into_iter()
            .map(|(uid, user)| (uid.clone(), user.clone()))
            .collect();
        let users = &mut self.cluster_mut(site)?.rgw.users;
        for (uid, user) in synced {
            users.entry(uid).or_insert(user);
        }
        Ok(())
    }

    /// Whether a cluster would accept requests signed with `keys` (a system user's).
    fn accepts_keys(&self, site: &str, realm: Option<&Realm>, keys: &SystemKeys, now: Timestamp) -> bool {
        self.visible_users(site, realm, now)
            .iter()
            .any(|(_, user)| user.keys == *keys)
    }

    /// The sync user as this cluster has it; the one whose key a local zone syncs with comes first.
    fn visible_system_user(&self, site: &str, realm: Option<&Realm>, now: Timestamp) -> Option<String> {
        let users = self.visible_users(site, realm, now);
        let zone_keys: Vec<&str> = realm
            .map(|realm| {
                realm
                    .zones
                    .values()
                    .filter_map(|zone| Some(zone.keys.as_ref()?.access_key.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        let preferred = users
            .iter()
            .find(|(_, user)| zone_keys.contains(&user.keys.access_key.as_str()));
        preferred.or(users.first()).map(|(uid, _)| (*uid).clone())
    }

    fn realm_by_id(&self, site: &str, realm_id: &str) -> Option<&Realm> {
        self.clusters
            .get(site)?
            .rgw
            .realms
            .values()
            .find(|realm| realm.id == realm_id)
    }

    fn realm_by_id_mut(&mut self, site: &str, realm_id: &str) -> Option<&mut Realm> {
        self.clusters
            .get_mut(site)?
            .rgw
            .realms
            .values_mut()
            .find(|realm| realm.id == realm_id)
    }

    /// The site whose cluster holds `zone` of the realm.
    fn zone_host(&self, realm_id: &str, zone: &str) -> Option<String> {
        self.clusters
            .keys()
            .find(|site| {
                self.realm_by_id(site, realm_id)
                    .is_some_and(|realm| realm.zones.contains_key(zone))
            })
            .cloned()
    }

    /// The site (other than `site`) serving `url` for a local zone of `realm`, directly or as its zonegroup's
    /// endpoint.
    fn url_host(&self, site: &str, realm: &str, url: &str) -> Option<String> {
        let serves = |realm: &Realm| {
            realm.zone_groups.values().any(|group| {
                let hosts_zone = |name: &str| realm.zones.contains_key(name);
                let zone_serves = group
                    .info
                    .zones
                    .iter()
                    .any(|zone| hosts_zone(&zone.name) && zone.endpoints.iter().any(|e| e == url));
                let group_serves = group.info.endpoints.iter().any(|e| e == url)
                    && group.info.zones.iter().any(|zone| hosts_zone(&zone.name));
                zone_serves || group_serves
            })
        };
        self.clusters
            .iter()
            .find(|(other, cluster)| {
                other.as_str() != site && cluster.rgw.realms.get(realm).is_some_and(serves)
            })
            .map(|(other, _)| other.clone())
    }

    /// Metadata changes are forgotten once every peer has them, but never while some zone's sync is wedged.
    fn metadata_forget_bound(&self, site: &str, now: Timestamp) -> Timestamp {
        let stalled = self
            .clusters
            .values()
            .flat_map(|cluster| cluster.rgw.realms.values())
            .flat_map(|realm| realm.zones.values())
            .filter_map(|zone| zone.metadata_sync_stalled_at)
            .min();
        let delivered = self.oldest_undelivered_from(site, now);
        stalled.map_or(delivered, |stalled| delivered.min(stalled))
    }
}
