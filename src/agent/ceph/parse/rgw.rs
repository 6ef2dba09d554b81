//! `radosgw-admin` output: realms, periods, zonegroups, zones, users, sync status and sync policy.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;

use super::{flag, json};
use crate::{
    agent::{
        ceph::command::CommandOutput, AgentResult, Period, Sensitive, SyncGroup, SyncShards, ZoneGroupInfo,
        ZoneInfo,
    },
    api::realm::{SyncFlow, SyncFlowType, SyncGroupStatus, SyncPipe},
};

/// `realm get`.
#[derive(Debug, Deserialize, PartialEq)]
pub(in crate::agent::ceph) struct Realm {
    pub id: String,
    pub name: String,
}

pub(in crate::agent::ceph) fn realm(out: &CommandOutput) -> AgentResult<Realm> {
    json(out)
}

#[derive(Deserialize)]
struct RawZoneGroup {
    id: String,
    name: String,
    #[serde(deserialize_with = "flag")]
    is_master: bool,
    #[serde(default)]
    endpoints: Vec<String>,
    /// Zone id; empty before a master zone is set.
    #[serde(default)]
    master_zone: String,
    #[serde(default)]
    zones: Vec<RawZone>,
    #[serde(default)]
    realm_id: String,
}

#[derive(Deserialize)]
struct RawZone {
    id: String,
    name: String,
    #[serde(default)]
    endpoints: Vec<String>,
    #[serde(default, deserialize_with = "flag")]
    read_only: bool,
}

impl RawZoneGroup {
    fn zone_name(&self, id: &str) -> Option<&str> {
        self.zones
            .iter()
            .find(|zone| zone.id == id)
            .map(|zone| zone.name.as_str())
    }

    fn into_info(self) -> ZoneGroupInfo {
        ZoneGroupInfo {
            master_zone: self.zone_name(&self.master_zone).unwrap_or_default().to_string(),
            name: self.name,
            id: self.id,
            is_master: self.is_master,
            endpoints: self.endpoints,
            zones: self
                .zones
                .into_iter()
                .map(|zone| ZoneInfo {
                    name: zone.name,
                    id: zone.id,
                    endpoints: zone.endpoints,
                    read_only: zone.read_only,
                })
                .collect(),
        }
    }
}

/// `period get`: ids of the master zonegroup and zone become names, as the domain types carry them.
pub(in crate::agent::ceph) fn period(out: &CommandOutput) -> AgentResult<Period> {
    #[derive(Deserialize)]
    struct RawPeriod {
        id: String,
        epoch: u32,
        period_map: PeriodMap,
        #[serde(default)]
        master_zonegroup: String,
        #[serde(default)]
        master_zone: String,
    }
    #[derive(Deserialize)]
    struct PeriodMap {
        #[serde(default)]
        zonegroups: Vec<RawZoneGroup>,
    }
    let raw: RawPeriod = json(out)?;
    let groups = raw.period_map.zonegroups;
    let master_zone_group = groups
        .iter()
        .find(|group| group.id == raw.master_zonegroup)
        .map(|group| group.name.clone());
    let master_zone = groups
        .iter()
        .find_map(|group| group.zone_name(&raw.master_zone))
        .map(str::to_string);
    Ok(Period {
        id: raw.id,
        epoch: raw.epoch,
        master_zone_group: master_zone_group.unwrap_or_default(),
        master_zone: master_zone.unwrap_or_default(),
        zone_groups: groups.into_iter().map(RawZoneGroup::into_info).collect(),
    })
}

/// What a period commit would change: `period update` (the staging period) and `period get` (the current
/// one) are equal on these fields exactly when committing is a no-op. Ids and epochs always differ.
pub(in crate::agent::ceph) fn period_configuration(out: &CommandOutput) -> AgentResult<serde_json::Value> {
    let mut period: serde_json::Value = json(out)?;
    let mut map = period
        .get_mut("period_map")
        .and_then(serde_json::Value::as_object_mut)
        .map(std::mem::take)
        .ok_or_else(|| out.parse_error("no period_map object"))?;
    map.remove("id");
    Ok(serde_json::json!([
        map,
        period["master_zonegroup"],
        period["master_zone"],
        period["period_config"]
    ]))
}

/// `zonegroup get`, with the realm it belongs to.
pub(in crate::agent::ceph) struct LocalZoneGroup {
    pub info: ZoneGroupInfo,
    pub realm_id: String,
}

pub(in crate::agent::ceph) fn zone_group(out: &CommandOutput) -> AgentResult<LocalZoneGroup> {
    let raw: RawZoneGroup = json(out)?;
    let realm_id = raw.realm_id.clone();
    Ok(LocalZoneGroup {
        info: raw.into_info(),
        realm_id,
    })
}

/// `zone get`: the zone's own parameters. The zonegroup, not the zone, holds its endpoints and flags.
pub(in crate::agent::ceph) struct ZoneParams {
    pub id: String,
    pub name: String,
    pub realm_id: String,
    /// Empty when the zone has no system key.
    pub access_key: String,
    pub secret_key: Sensitive<String>,
}

pub(in crate::agent::ceph) fn zone_params(out: &CommandOutput) -> AgentResult<ZoneParams> {
    #[derive(Deserialize)]
    struct Raw {
        id: String,
        name: String,
        #[serde(default)]
        realm_id: String,
        #[serde(default)]
        system_key: SystemKey,
    }
    #[derive(Default, Deserialize)]
    struct SystemKey {
        #[serde(default)]
        access_key: String,
        #[serde(default)]
        secret_key: Sensitive<String>,
    }
    let raw: Raw = json(out)?;
    Ok(ZoneParams {
        id: raw.id,
        name: raw.name,
        realm_id: raw.realm_id,
        access_key: raw.system_key.access_key,
        secret_key: raw.system_key.secret_key,
    })
}

/// `realm list`, `zonegroup list`, `zone list`: the names, and the id of the cluster's default one.
#[derive(Debug, PartialEq)]
pub(in crate::agent::ceph) struct Listing {
    pub default_id: Option<String>,
    pub names: Vec<String>,
}

pub(in crate::agent::ceph) fn listing(out: &CommandOutput, field: &str) -> AgentResult<Listing> {
    let mut listing: BTreeMap<String, serde_json::Value> = json(out)?;
    let names = listing
        .remove(field)
        .ok_or_else(|| out.parse_error(format!("no `{field}` list")))?;
    let names = serde_json::from_value(names)
        .map_err(|_| out.parse_error(format!("`{field}` is not a list of names")))?;
    let default_id = match listing.remove("default_info") {
        Some(serde_json::Value::String(id)) => Some(id).filter(|id| !id.is_empty()),
        None => None,
        Some(_) => return Err(out.parse_error("`default_info` is not a string")),
    };
    Ok(Listing { default_id, names })
}

/// `user info`.
pub(in crate::agent::ceph) struct UserInfo {
    pub uid: String,
    pub system: bool,
    pub keys: Vec<(String, Sensitive<String>)>,
}

pub(in crate::agent::ceph) fn user_info(out: &CommandOutput) -> AgentResult<UserInfo> {
    #[derive(Deserialize)]
    struct Raw {
        user_id: String,
        #[serde(default)]
        keys: Vec<Key>,
        #[serde(default, deserialize_with = "flag")]
        system: bool,
    }
    #[derive(Deserialize)]
    struct Key {
        access_key: String,
        secret_key: Sensitive<String>,
    }
    let raw: Raw = json(out)?;
    Ok(UserInfo {
        uid: raw.user_id,
        system: raw.system,
        keys: raw
            .keys
            .into_iter()
            .map(|key| (key.access_key, key.secret_key))
            .collect(),
    })
}

#[derive(Deserialize)]
#[serde(bound = "M: Deserialize<'de>")]
struct RawSyncStatus<M> {
    sync_status: SyncStatusBody<M>,
}

#[derive(Deserialize)]
#[serde(bound = "M: Deserialize<'de>")]
struct SyncStatusBody<M> {
    info: SyncInfo,
    #[serde(default)]
    markers: Vec<Marker<M>>,
}

#[derive(Deserialize)]
struct SyncInfo {
    status: String,
    num_shards: u32,
}

#[derive(Deserialize)]
struct Marker<M> {
    val: M,
}

/// `metadata sync status`: shard markers say `state` 0 (full sync) or 1 (incremental).
pub(in crate::agent::ceph) fn metadata_sync(out: &CommandOutput) -> AgentResult<SyncShards> {
    #[derive(Deserialize)]
    struct MetaMarker {
        state: u32,
    }
    let raw: RawSyncStatus<MetaMarker> = json(out)?;
    let full = raw
        .sync_status
        .markers
        .iter()
        .filter(|marker| marker.val.state == 0)
        .count();
    Ok(shards(raw.sync_status.info, full))
}

/// `data sync status --source-zone=Z`: shard markers say `full-sync` or `incremental-sync`.
pub(in crate::agent::ceph) fn data_sync(out: &CommandOutput) -> AgentResult<SyncShards> {
    #[derive(Deserialize)]
    struct DataMarker {
        status: String,
    }
    let raw: RawSyncStatus<DataMarker> = json(out)?;
    let full = raw
        .sync_status
        .markers
        .iter()
        .filter(|marker| marker.val.status == "full-sync")
        .count();
    Ok(shards(raw.sync_status.info, full))
}

fn shards(info: SyncInfo, full_sync_shards: usize) -> SyncShards {
    SyncShards {
        state: info.status,
        total_shards: info.num_shards,
        behind_shards: 0,
        full_sync_shards: u32::try_from(full_sync_shards).unwrap_or(u32::MAX),
        oldest_change: None,
    }
}

/// How far one sync lags behind its source, as `radosgw-admin sync status` works it out by comparing local
/// markers with the source's logs (which the JSON status commands do not do).
#[derive(Debug, Default, PartialEq)]
pub(in crate::agent::ceph) struct Lag {
    /// None when the text does not say: the comparison failed or sync has not reached incremental yet.
    pub behind_shards: Option<u32>,
    pub oldest_change: Option<Timestamp>,
}

#[derive(Debug, Default, PartialEq)]
pub(in crate::agent::ceph) struct SyncLags {
    /// None on the metadata master.
    pub metadata: Option<Lag>,
    /// By source zone name.
    pub data: BTreeMap<String, Lag>,
}

/// `radosgw-admin sync status`, a text report (it has no JSON form in Pacific).
pub(in crate::agent::ceph) fn sync_lags(out: &CommandOutput) -> AgentResult<SyncLags> {
    let mut lags = SyncLags::default();
    let mut saw_zone = false;
    let mut current: Option<&mut Lag> = None;
    for line in out.stdout.lines().map(str::trim) {
        if line.starts_with("zone ") {
            saw_zone = true;
        } else if let Some(rest) = line.strip_prefix("metadata sync") {
            let master = rest.contains("zone is master");
            lags.metadata = (!master).then(Lag::default);
            current = lags.metadata.as_mut();
        } else if let Some(source) = line.strip_prefix("data sync source:") {
            let name = source
                .rsplit_once('(')
                .and_then(|(_, name)| name.strip_suffix(')'))
                .ok_or_else(|| out.parse_error("a data sync source has no `(name)`"))?;
            current = Some(lags.data.entry(name.to_string()).or_default());
        } else if let Some(lag) = current.as_deref_mut() {
            read_lag_line(out, line, lag)?;
        }
    }
    if !saw_zone {
        return Err(out.parse_error("no `zone` line: not a sync status report"));
    }
    Ok(lags)
}

fn read_lag_line(out: &CommandOutput, line: &str, lag: &mut Lag) -> AgentResult<()> {
    if line.ends_with("is caught up with master") || line.ends_with("is caught up with source") {
        lag.behind_shards = Some(0);
    } else if let Some(count) = line.split_once(" is behind on ").map(|(_, rest)| rest) {
        let count = count.trim_end_matches(" shards").trim_end_matches(" shard");
        let count = count
            .parse()
            .map_err(|_| out.parse_error("a shard count is not a number"))?;
        lag.behind_shards = Some(count);
    } else if let Some(rest) = line.strip_prefix("oldest incremental change not applied:") {
        let stamp = rest.split_whitespace().next().unwrap_or_default();
        let parsed = stamp
            .parse()
            .map_err(|_| out.parse_error("the oldest change time does not parse"))?;
        lag.oldest_change = Some(parsed);
    } else if line.starts_with("failed to") || line.starts_with("ERROR") {
        lag.behind_shards = None;
    }
    Ok(())
}

/// `sync group get` (with or without `--bucket`): a `[{key, val}]` list; commands that change groups print
/// `{"groups": [...]}` instead. Ceph keeps no id for directional flows: theirs is empty. Bucket `*` (every
/// bucket, the default) becomes None, as a spec omits it.
pub(in crate::agent::ceph) fn sync_groups(out: &CommandOutput) -> AgentResult<Vec<SyncGroup>> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Listing {
        Keyed(Vec<Keyed>),
        Wrapped { groups: Vec<RawGroup> },
    }
    #[derive(Deserialize)]
    struct Keyed {
        val: RawGroup,
    }
    let groups = match json(out)? {
        Listing::Keyed(groups) => groups.into_iter().map(|keyed| keyed.val).collect(),
        Listing::Wrapped { groups } => groups,
    };
    Ok(groups.into_iter().map(RawGroup::into_group).collect())
}

#[derive(Deserialize)]
struct RawGroup {
    id: String,
    status: SyncGroupStatus,
    #[serde(default)]
    data_flow: DataFlow,
    #[serde(default)]
    pipes: Vec<RawPipe>,
}

#[derive(Default, Deserialize)]
struct DataFlow {
    #[serde(default)]
    symmetrical: Vec<Symmetrical>,
    #[serde(default)]
    directional: Vec<Directional>,
}

#[derive(Deserialize)]
struct Symmetrical {
    id: String,
    #[serde(default)]
    zones: Vec<String>,
}

#[derive(Deserialize)]
struct Directional {
    source_zone: String,
    dest_zone: String,
}

#[derive(Deserialize)]
struct RawPipe {
    id: String,
    source: PipeEnd,
    dest: PipeEnd,
    #[serde(default)]
    params: serde_json::Value,
}

#[derive(Deserialize)]
struct PipeEnd {
    #[serde(default)]
    bucket: Option<String>,
    #[serde(default)]
    zones: Vec<String>,
}

impl RawGroup {
    fn into_group(self) -> SyncGroup {
        let symmetrical = self.data_flow.symmetrical.into_iter().map(|flow| SyncFlow {
            id: flow.id,
            flow_type: SyncFlowType::Symmetrical,
            zones: flow.zones,
            source_zone: None,
            dest_zone: None,
        });
        let directional = self.data_flow.directional.into_iter().map(|flow| SyncFlow {
            id: String::new(),
            flow_type: SyncFlowType::Directional,
            zones: Vec::new(),
            source_zone: Some(flow.source_zone),
            dest_zone: Some(flow.dest_zone),
        });
        let any_bucket = |bucket: Option<String>| bucket.filter(|bucket| bucket != "*" && !bucket.is_empty());
        SyncGroup {
            id: self.id,
            status: self.status,
            bucket: None,
            flows: symmetrical.chain(directional).collect(),
            pipes: self
                .pipes
                .into_iter()
                .map(|pipe| SyncPipe {
                    prefix: pipe.params["source"]["filter"]["prefix"]
                        .as_str()
                        .map(str::to_string),
                    id: pipe.id,
                    source_zones: pipe.source.zones,
                    dest_zones: pipe.dest.zones,
                    source_bucket: any_bucket(pipe.source.bucket),
                    dest_bucket: any_bucket(pipe.dest.bucket),
                })
                .collect(),
        }
    }
}
