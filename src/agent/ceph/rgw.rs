//! RGW multisite through `radosgw-admin`: realm state, sync status and the realm/zonegroup/zone/user steps.
//!
//! Every command names the realm (`--rgw-realm`), so a cluster may hold several. New realms, zonegroups and
//! zones become the cluster's default only when it has none yet: RGW daemons started with just `--rgw-zone`
//! and `CreateSystemUser` (whose step names no realm) rely on the defaults.

use futures::future::try_join_all;

use super::{
    command::{absent_on_enoent, failed_with, ok_if, CephCommand, EACCES, EEXIST, ENOENT},
    parse::{self, rgw::ZoneParams},
    CephCli,
};
use crate::agent::{
    split::{Pull, WantedZone, WantedZoneGroup, ZoneChange, ZoneGroupRef, ZoneRef},
    AgentError, AgentResult, LocalZone, RgwRealmState, SourceSync, SyncShards, SystemKeys, ZoneGroupInfo,
    ZoneSync,
};

/// `radosgw-admin ARGS --rgw-realm=REALM`.
pub(super) fn rgw(realm: &str, args: &[&str]) -> CephCommand {
    CephCommand::radosgw_admin(args.iter().copied()).arg(format!("--rgw-realm={realm}"))
}

/// `user info` fails with EINVAL and these words, not ENOENT, when the user does not exist.
const NO_SUCH_USER: &str = "no user info saved";
/// On a secondary zone, looking a key up before metadata sync has brought its user fails with EACCES.
const KEY_NOT_SYNCED: &str = "user.init failed";

impl CephCli {
    pub(super) async fn read_rgw_realm(&self, realm: &str) -> AgentResult<RgwRealmState> {
        let Some(found) = absent_on_enoent(self.run(rgw(realm, &["realm", "get"])).await)? else {
            return Ok(RgwRealmState::default());
        };
        let realm_id = parse::rgw::realm(&found)?.id;
        let period = parse::rgw::period(&self.run(rgw(realm, &["period", "get"])).await?)?;
        let (groups, zones) =
            tokio::try_join!(self.local_zone_groups(realm, &realm_id), self.listed_zones(realm))?;
        // Pacific leaves `realm_id` empty in a zone's parameters until something rewrites them, so a zone
        // belongs to the realm when one of the realm's zonegroups lists it.
        let zones: Vec<ZoneParams> = zones
            .into_iter()
            .filter(|zone| {
                zone.realm_id == realm_id
                    || groups
                        .iter()
                        .any(|group| group.zones.iter().any(|member| member.id == zone.id))
            })
            .collect();
        let keyed_zone = zones.iter().find(|zone| !zone.access_key.is_empty());
        let system_user = match keyed_zone {
            Some(zone) => self.user_with_key(realm, &zone.name, &zone.access_key).await?,
            None => None,
        };
        let local_zones = zones
            .into_iter()
            .map(|zone| LocalZone {
                zone_group: groups
                    .iter()
                    .find(|group| group.zones.iter().any(|member| member.id == zone.id))
                    .map(|group| group.name.clone())
                    .unwrap_or_default(),
                system_access_key: Some(zone.access_key).filter(|key| !key.is_empty()),
                name: zone.name,
                id: zone.id,
            })
            .collect();
        Ok(RgwRealmState {
            realm_id: Some(realm_id),
            period: Some(period),
            local_zones,
            system_user,
        })
    }

    /// Zonegroups stored on this cluster for the realm (`zonegroup list` also names a `default` placeholder).
    async fn local_zone_groups(&self, realm: &str, realm_id: &str) -> AgentResult<Vec<ZoneGroupInfo>> {
        let listing =
            parse::rgw::listing(&self.run(rgw(realm, &["zonegroup", "list"])).await?, "zonegroups")?;
        let groups = try_join_all(listing.names.iter().map(|name| self.zone_group(realm, name))).await?;
        Ok(groups
            .into_iter()
            .flatten()
            .filter(|group| group.realm_id == realm_id)
            .map(|group| group.info)
            .collect())
    }

    async fn zone_group(&self, realm: &str, name: &str) -> AgentResult<Option<parse::rgw::LocalZoneGroup>> {
        let command = rgw(realm, &["zonegroup", "get"]).arg(format!("--rgw-zonegroup={name}"));
        absent_on_enoent(self.run(command).await)?
            .map(|out| parse::rgw::zone_group(&out))
            .transpose()
    }

    /// Every zone stored on this cluster (`zone list` is not scoped by realm).
    async fn listed_zones(&self, realm: &str) -> AgentResult<Vec<ZoneParams>> {
        let listing = parse::rgw::listing(&self.run(rgw(realm, &["zone", "list"])).await?, "zones")?;
        let zones = try_join_all(listing.names.iter().map(|name| self.zone_params(realm, name))).await?;
        Ok(zones.into_iter().flatten().collect())
    }

    async fn zone_params(&self, realm: &str, zone: &str) -> AgentResult<Option<ZoneParams>> {
        let command = rgw(realm, &["zone", "get"]).arg(format!("--rgw-zone={zone}"));
        absent_on_enoent(self.run(command).await)?
            .map(|out| parse::rgw::zone_params(&out))
            .transpose()
    }

    /// The uid of the user owning `access_key`: the system user a zone syncs with, whatever its uid.
    async fn user_with_key(&self, realm: &str, zone: &str, access_key: &str) -> AgentResult<Option<String>> {
        let command = rgw(realm, &["user", "info"])
            .arg(format!("--rgw-zone={zone}"))
            .arg(format!("--access-key={access_key}"));
        match self.run(command).await {
            Ok(out) => Ok(Some(parse::rgw::user_info(&out)?.uid)),
            Err(error) if failed_with(&error, ENOENT, NO_SUCH_USER) => Ok(None),
            Err(error) if failed_with(&error, EACCES, KEY_NOT_SYNCED) => Ok(None),
            Err(error) => Err(error),
        }
    }

    pub(super) async fn read_rgw_sync_status(&self, realm: &str, zone: &str) -> AgentResult<ZoneSync> {
        let period = parse::rgw::period(&self.run(rgw(realm, &["period", "get"])).await?)?;
        let group = period
            .zone_groups
            .iter()
            .find(|group| group.zones.iter().any(|member| member.name == zone))
            .ok_or_else(|| AgentError::NotFound {
                site: self.site().to_string(),
                what: format!("zone {zone} in the current period of realm {realm}"),
            })?;
        let in_zone = |args: &[&str]| rgw(realm, args).arg(format!("--rgw-zone={zone}"));
        let sources: Vec<&str> = group
            .zones
            .iter()
            .map(|member| member.name.as_str())
            .filter(|name| *name != zone)
            .collect();
        let metadata = async {
            // The master zone of the master zonegroup is the metadata authority: it does not sync metadata.
            if period.master_zone == zone {
                return Ok(None);
            }
            let out = self.run(in_zone(&["metadata", "sync", "status"])).await?;
            parse::rgw::metadata_sync(&out).map(Some)
        };
        let data = try_join_all(sources.iter().map(|source| async move {
            let command = in_zone(&["data", "sync", "status"]).arg(format!("--source-zone={source}"));
            parse::rgw::data_sync(&self.run(command).await?)
        }));
        let (lags, metadata, data) =
            tokio::try_join!(self.run(in_zone(&["sync", "status"])), metadata, data)?;
        let lags = parse::rgw::sync_lags(&lags)?;
        Ok(ZoneSync {
            metadata: metadata.map(|shards| with_lag(shards, lags.metadata.as_ref())),
            data: sources
                .iter()
                .zip(data)
                .map(|(source, shards)| SourceSync {
                    source_zone: source.to_string(),
                    shards: with_lag(shards, lags.data.get(*source)),
                })
                .collect(),
        })
    }

    pub(super) async fn create_realm(&self, realm: &str) -> AgentResult<()> {
        let mut command = rgw(realm, &["realm", "create"]);
        if self.default_id("realm", "realms").await?.is_none() {
            command = command.arg("--default");
        }
        ok_if(self.run(command).await, EEXIST, "")
    }

    /// The id of the cluster's default realm (`kind` = `realm`), zonegroup or zone. A cluster that never had
    /// one fails the listing with ENOENT.
    async fn default_id(&self, kind: &str, field: &str) -> AgentResult<Option<String>> {
        let listing = absent_on_enoent(self.run(CephCommand::radosgw_admin([kind, "list"])).await)?;
        match listing {
            Some(out) => Ok(parse::rgw::listing(&out, field)?.default_id),
            None => Ok(None),
        }
    }

    pub(super) async fn create_zone_group(
        &self,
        group: ZoneGroupRef<'_>,
        wanted: WantedZoneGroup<'_>,
    ) -> AgentResult<()> {
        let ZoneGroupRef { realm, zone_group } = group;
        let WantedZoneGroup { endpoints, master } = wanted;
        let existing = self.zone_group(realm, zone_group).await?;
        let verb = match &existing {
            // A zonegroup stops being master only when another becomes master: `master: false` changes nothing.
            Some(group) if group.info.endpoints == endpoints && (group.info.is_master || !master) => {
                return Ok(())
            }
            Some(_) => "modify",
            None => "create",
        };
        let mut command = rgw(realm, &["zonegroup", verb])
            .arg(format!("--rgw-zonegroup={zone_group}"))
            .arg(format!("--endpoints={}", endpoints.join(",")));
        if master {
            command = command.arg("--master");
            if existing.is_none() && self.default_id("zonegroup", "zonegroups").await?.is_none() {
                command = command.arg("--default");
            }
        }
        ok_if(self.run(command).await, EEXIST, "")
    }

    /// Creates the zone, or brings an existing one to the wanted endpoints, flags and system key. Keys travel
    /// as the runner's secret arguments: `radosgw-admin` has no other way to take them.
    pub(super) async fn create_zone(&self, target: ZoneRef<'_>, wanted: WantedZone<'_>) -> AgentResult<()> {
        let (realm, zone_group, zone) = (target.realm, target.zone_group, target.zone);
        let verb = match self.zone_params(realm, zone).await? {
            Some(params) if self.zone_matches(realm, zone_group, &params, &wanted).await? => return Ok(()),
            Some(_) => "modify",
            None => "create",
        };
        let mut command = rgw(realm, &["zone", verb])
            .arg(format!("--rgw-zonegroup={zone_group}"))
            .arg(format!("--rgw-zone={zone}"))
            .arg(format!("--endpoints={}", wanted.endpoints.join(",")))
            .arg(format!("--access-key={}", wanted.keys.access_key))
            .secret("--secret", &wanted.keys.secret_key)
            .arg(format!("--read-only={}", wanted.read_only));
        if wanted.master {
            command = command.arg("--master");
        }
        if verb == "create" && self.default_id("zone", "zones").await?.is_none() {
            command = command.arg("--default");
        }
        ok_if(self.run(command).await, EEXIST, "")
    }

    async fn zone_matches(
        &self,
        realm: &str,
        zone_group: &str,
        params: &ZoneParams,
        wanted: &WantedZone<'_>,
    ) -> AgentResult<bool> {
        if params.access_key != wanted.keys.access_key || params.secret_key != wanted.keys.secret_key {
            return Ok(false);
        }
        let Some(group) = self.zone_group(realm, zone_group).await? else {
            return Ok(false);
        };
        let Some(member) = group.info.zones.iter().find(|member| member.id == params.id) else {
            return Ok(false);
        };
        // As with zonegroups, `master: false` changes nothing: another zone's promotion demotes this one.
        let master_ok = !wanted.master || group.info.master_zone == params.name;
        Ok(member.endpoints == wanted.endpoints && member.read_only == wanted.read_only && master_ok)
    }

    /// `zone modify --master` / `--read-only=`, when the zonegroup does not already say so. `master:
    /// Some(false)` changes nothing: a zone stops being master when another zone is made master.
    pub(super) async fn modify_zone(&self, target: ZoneRef<'_>, change: ZoneChange) -> AgentResult<()> {
        let (realm, zone_group, zone) = (target.realm, target.zone_group, target.zone);
        let not_found = || AgentError::NotFound {
            site: self.site().to_string(),
            what: format!("zone {zone} in zonegroup {zone_group} of realm {realm}"),
        };
        let group = self.zone_group(realm, zone_group).await?.ok_or_else(not_found)?;
        let member = group
            .info
            .zones
            .iter()
            .find(|member| member.name == zone)
            .ok_or_else(not_found)?;
        let promote = change.master == Some(true) && group.info.master_zone != zone;
        let read_only = change.read_only.filter(|wanted| *wanted != member.read_only);
        if !promote && read_only.is_none() {
            return Ok(());
        }
        let mut command = rgw(realm, &["zone", "modify"])
            .arg(format!("--rgw-zonegroup={zone_group}"))
            .arg(format!("--rgw-zone={zone}"));
        if promote {
            command = command.arg("--master");
        }
        if let Some(read_only) = read_only {
            command = command.arg(format!("--read-only={read_only}"));
        }
        self.run(command).await.map(drop)
    }

    /// In the default realm and zone: the step names neither (see the module docs).
    pub(super) async fn create_system_user(&self, uid: &str, keys: &SystemKeys) -> AgentResult<()> {
        let info = CephCommand::radosgw_admin(["user", "info"]).arg(format!("--uid={uid}"));
        let verb = match self.run(info).await {
            Ok(out) => {
                let user = parse::rgw::user_info(&out)?;
                let has_keys = user
                    .keys
                    .iter()
                    .any(|(access, secret)| *access == keys.access_key && *secret == keys.secret_key);
                if user.system && has_keys {
                    return Ok(());
                }
                "modify"
            }
            Err(error) if failed_with(&error, ENOENT, NO_SUCH_USER) => "create",
            Err(error) => return Err(error),
        };
        let mut command = CephCommand::radosgw_admin(["user", verb])
            .arg(format!("--uid={uid}"))
            .arg(format!("--access-key={}", keys.access_key))
            .secret("--secret", &keys.secret_key)
            .arg("--system");
        if verb == "create" {
            command = command.arg("--display-name=cephdr multisite sync user");
        }
        ok_if(self.run(command).await, EEXIST, "")
    }

    /// `period update --commit`, unless the staging period equals the current one (committing again would
    /// only bump the epoch). Never with `--url`/keys: on a secondary, the zone's system key signs the forward
    /// to the master, and explicit keys fail with `user.init ... Permission denied`.
    pub(super) async fn commit_period(&self, realm: &str) -> AgentResult<()> {
        let (staging, current) = tokio::try_join!(
            self.run(rgw(realm, &["period", "update"])),
            self.run(rgw(realm, &["period", "get"]))
        )?;
        if parse::rgw::period_configuration(&staging)? == parse::rgw::period_configuration(&current)? {
            return Ok(());
        }
        self.run(rgw(realm, &["period", "update", "--commit"]))
            .await
            .map(drop)
    }

    /// `realm pull`, the cluster's default realm when it has none yet, or `period pull`.
    pub(super) async fn pull(&self, pull: Pull<'_>) -> AgentResult<()> {
        let what = if pull.create_realm { "realm" } else { "period" };
        let mut command = from_master(rgw(pull.realm, &[what, "pull"]), pull.url, pull.keys);
        if pull.create_realm && self.default_id("realm", "realms").await?.is_none() {
            command = command.arg("--default");
        }
        self.run(command).await.map(drop)
    }

    pub(super) async fn init_metadata_sync(&self, realm: &str, zone: &str) -> AgentResult<()> {
        let command = rgw(realm, &["metadata", "sync", "init"]).arg(format!("--rgw-zone={zone}"));
        self.run(command).await.map(drop)
    }

    pub(super) async fn delete_zone(&self, target: ZoneRef<'_>) -> AgentResult<()> {
        let (realm, zone_group, zone) = (target.realm, target.zone_group, target.zone);
        let remove = rgw(realm, &["zonegroup", "remove"])
            .arg(format!("--rgw-zonegroup={zone_group}"))
            .arg(format!("--rgw-zone={zone}"));
        ok_if(self.run(remove).await, ENOENT, "not found in zonegroup")?;
        let delete = rgw(realm, &["zone", "delete"]).arg(format!("--rgw-zone={zone}"));
        ok_if(self.run(delete).await, ENOENT, "")
    }

    /// Deletes the zonegroup object; its zones leave it first, by `DeleteZone` on their own sites.
    pub(super) async fn delete_zone_group(&self, group: ZoneGroupRef<'_>) -> AgentResult<()> {
        let delete =
            rgw(group.realm, &["zonegroup", "delete"]).arg(format!("--rgw-zonegroup={}", group.zone_group));
        ok_if(self.run(delete).await, ENOENT, "")
    }

    /// Deletes the realm object; its zones go first by `DeleteZone`.
    pub(super) async fn delete_realm(&self, realm: &str) -> AgentResult<()> {
        ok_if(self.run(rgw(realm, &["realm", "delete"])).await, ENOENT, "")
    }
}

/// `--url`, `--access-key` and the secret for commands that read from the master zone's RGW.
fn from_master(command: CephCommand, url: &str, keys: &SystemKeys) -> CephCommand {
    command
        .arg(format!("--url={url}"))
        .arg(format!("--access-key={}", keys.access_key))
        .secret("--secret", &keys.secret_key)
}

/// Shard counts from the JSON status, lag from the text report; when the report cannot tell (the source's
/// logs were unreachable, or sync has not reached incremental), every shard counts as behind.
fn with_lag(shards: SyncShards, lag: Option<&parse::rgw::Lag>) -> SyncShards {
    SyncShards {
        behind_shards: lag
            .and_then(|lag| lag.behind_shards)
            .unwrap_or(shards.total_shards),
        oldest_change: lag.and_then(|lag| lag.oldest_change),
        ..shards
    }
}
