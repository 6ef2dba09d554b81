//! RGW sync policy: reading the zonegroup's groups (and every bucket's), and replacing them with wanted ones
//! by the smallest set of `radosgw-admin sync group` changes.
//!
//! Facts from Pacific 16.2.15: `sync group create` on an existing group only changes its status;
//! `flow create --flow-type=symmetrical` adds zones to an existing flow instead of replacing them; directional
//! flows keep no id (`--flow-id` is required and ignored), so they are matched by source and destination.
//! Zonegroup-level changes take effect at the next period commit, bucket-level ones at once.

use futures::{stream, StreamExt, TryStreamExt};

use super::{
    command::{absent_on_enoent, ok_if, CephCommand, ENOENT},
    parse,
    rgw::rgw,
    CephCli,
};
use crate::{
    agent::{split::ZoneGroupRef, AgentResult, SyncGroup},
    api::realm::{SyncFlow, SyncFlowType, SyncPipe},
};

/// Buckets whose policies are read at once: one `radosgw-admin` process each.
const BUCKET_READS_IN_FLIGHT: usize = 4;

impl CephCli {
    pub(super) async fn read_sync_policy(
        &self,
        realm: &str,
        zone_group: &str,
    ) -> AgentResult<Vec<SyncGroup>> {
        let zone_group_level =
            rgw(realm, &["sync", "group", "get"]).arg(format!("--rgw-zonegroup={zone_group}"));
        let mut groups = parse::rgw::sync_groups(&self.run(zone_group_level).await?)?;
        let buckets = parse::names(&self.run(rgw(realm, &["bucket", "list"])).await?)?;
        let per_bucket: Vec<Vec<SyncGroup>> = stream::iter(buckets)
            .map(|bucket| async move {
                let command = rgw(realm, &["sync", "group", "get"]).arg(format!("--bucket={bucket}"));
                // A bucket deleted since the listing has no policy to report.
                let Some(out) = absent_on_enoent(self.run(command).await)? else {
                    return Ok(Vec::new());
                };
                let mut groups = parse::rgw::sync_groups(&out)?;
                for group in &mut groups {
                    group.bucket = Some(bucket.clone());
                }
                Ok(groups)
            })
            .buffered(BUCKET_READS_IN_FLIGHT)
            .try_collect()
            .await?;
        groups.extend(per_bucket.into_iter().flatten());
        Ok(groups)
    }

    /// Removes the groups not wanted, then creates or amends the wanted ones.
    pub(super) async fn set_sync_policy(
        &self,
        scope: ZoneGroupRef<'_>,
        wanted: &[SyncGroup],
    ) -> AgentResult<()> {
        let current = self.read_sync_policy(scope.realm, scope.zone_group).await?;
        let same_group = |a: &SyncGroup, b: &SyncGroup| a.id == b.id && a.bucket == b.bucket;
        for group in current
            .iter()
            .filter(|group| !wanted.iter().any(|w| same_group(group, w)))
        {
            self.run(group_command(scope, group, &["remove"])).await?;
        }
        for group in wanted {
            let existing = current.iter().find(|candidate| same_group(candidate, group));
            self.converge_group(scope, group, existing).await?;
        }
        Ok(())
    }

    async fn converge_group(
        &self,
        scope: ZoneGroupRef<'_>,
        wanted: &SyncGroup,
        existing: Option<&SyncGroup>,
    ) -> AgentResult<()> {
        let status = format!("--status={}", status_name(wanted));
        match existing {
            None => self
                .run(group_command(scope, wanted, &["create"]).arg(status))
                .await
                .map(drop)?,
            Some(existing) if existing.status != wanted.status => self
                .run(group_command(scope, wanted, &["modify"]).arg(status))
                .await
                .map(drop)?,
            Some(_) => {}
        }
        let no_flows = Vec::new();
        let no_pipes = Vec::new();
        let (current_flows, current_pipes) =
            existing.map_or((&no_flows, &no_pipes), |group| (&group.flows, &group.pipes));

        for flow in current_flows
            .iter()
            .filter(|flow| !wanted.flows.iter().any(|w| same_flow(flow, w)))
        {
            self.run(group_command(scope, wanted, &["flow", "remove"]).args(flow_args(flow, false)))
                .await?;
        }
        for flow in wanted
            .flows
            .iter()
            .filter(|flow| !current_flows.iter().any(|c| same_flow(c, flow)))
        {
            self.run(group_command(scope, wanted, &["flow", "create"]).args(flow_args(flow, true)))
                .await?;
        }
        for pipe in current_pipes
            .iter()
            .filter(|pipe| !wanted.pipes.iter().any(|w| same_pipe(pipe, w)))
        {
            let remove =
                group_command(scope, wanted, &["pipe", "remove"]).arg(format!("--pipe-id={}", pipe.id));
            ok_if(self.run(remove).await, ENOENT, "could not find pipe")?;
        }
        for pipe in wanted
            .pipes
            .iter()
            .filter(|pipe| !current_pipes.iter().any(|c| same_pipe(c, pipe)))
        {
            self.run(group_command(scope, wanted, &["pipe", "create"]).args(pipe_args(pipe)))
                .await?;
        }
        Ok(())
    }
}

/// `radosgw-admin sync group VERB... --group-id=G` where the group lives: with `--bucket`, or the zonegroup's
/// policy with `--rgw-zonegroup`.
fn group_command(scope: ZoneGroupRef<'_>, group: &SyncGroup, verb: &[&str]) -> CephCommand {
    let args: Vec<&str> = ["sync", "group"]
        .into_iter()
        .chain(verb.iter().copied())
        .collect();
    let command = rgw(scope.realm, &args).arg(format!("--group-id={}", group.id));
    match &group.bucket {
        Some(bucket) => command.arg(format!("--bucket={bucket}")),
        None => command.arg(format!("--rgw-zonegroup={}", scope.zone_group)),
    }
}

fn status_name(group: &SyncGroup) -> &'static str {
    use crate::api::realm::SyncGroupStatus;
    match group.status {
        SyncGroupStatus::Enabled => "enabled",
        SyncGroupStatus::Allowed => "allowed",
        SyncGroupStatus::Forbidden => "forbidden",
    }
}

fn sorted(zones: &[String]) -> Vec<&str> {
    let mut zones: Vec<&str> = zones.iter().map(String::as_str).collect();
    zones.sort_unstable();
    zones.dedup();
    zones
}

fn same_flow(a: &SyncFlow, b: &SyncFlow) -> bool {
    match (a.flow_type, b.flow_type) {
        (SyncFlowType::Symmetrical, SyncFlowType::Symmetrical) => {
            a.id == b.id && sorted(&a.zones) == sorted(&b.zones)
        }
        (SyncFlowType::Directional, SyncFlowType::Directional) => {
            a.source_zone == b.source_zone && a.dest_zone == b.dest_zone
        }
        _ => false,
    }
}

/// Bucket `*` is every bucket, the default a spec leaves out.
fn bucket_or_any(bucket: &Option<String>) -> Option<&str> {
    bucket
        .as_deref()
        .filter(|bucket| *bucket != "*" && !bucket.is_empty())
}

fn same_pipe(a: &SyncPipe, b: &SyncPipe) -> bool {
    a.id == b.id
        && sorted(&a.source_zones) == sorted(&b.source_zones)
        && sorted(&a.dest_zones) == sorted(&b.dest_zones)
        && bucket_or_any(&a.source_bucket) == bucket_or_any(&b.source_bucket)
        && bucket_or_any(&a.dest_bucket) == bucket_or_any(&b.dest_bucket)
        && a.prefix.as_deref().filter(|p| !p.is_empty()) == b.prefix.as_deref().filter(|p| !p.is_empty())
}

/// Flow arguments. A symmetrical flow is removed whole (no `--zones`); directional flows need a `--flow-id`
/// that Ceph ignores, so one is made up from the zones when the flow has none.
fn flow_args(flow: &SyncFlow, create: bool) -> Vec<String> {
    let source = flow.source_zone.as_deref().unwrap_or_default();
    let dest = flow.dest_zone.as_deref().unwrap_or_default();
    let id = if flow.id.is_empty() {
        format!("{source}-to-{dest}")
    } else {
        flow.id.clone()
    };
    match flow.flow_type {
        SyncFlowType::Symmetrical => {
            let mut args = vec![format!("--flow-id={id}"), "--flow-type=symmetrical".to_string()];
            if create {
                args.push(format!("--zones={}", flow.zones.join(",")));
            }
            args
        }
        SyncFlowType::Directional => vec![
            format!("--flow-id={id}"),
            "--flow-type=directional".to_string(),
            format!("--source-zone={source}"),
            format!("--dest-zone={dest}"),
        ],
    }
}

fn pipe_args(pipe: &SyncPipe) -> Vec<String> {
    let mut args = vec![
        format!("--pipe-id={}", pipe.id),
        format!("--source-zones={}", pipe.source_zones.join(",")),
        format!("--dest-zones={}", pipe.dest_zones.join(",")),
    ];
    if let Some(bucket) = bucket_or_any(&pipe.source_bucket) {
        args.push(format!("--source-bucket={bucket}"));
    }
    if let Some(bucket) = bucket_or_any(&pipe.dest_bucket) {
        args.push(format!("--dest-bucket={bucket}"));
    }
    if let Some(prefix) = pipe.prefix.as_deref().filter(|prefix| !prefix.is_empty()) {
        args.push(format!("--prefix={prefix}"));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::realm::SyncGroupStatus;

    fn pipe(id: &str, source_bucket: Option<&str>) -> SyncPipe {
        SyncPipe {
            id: id.into(),
            source_zones: vec!["b".into(), "a".into()],
            dest_zones: vec!["*".into()],
            source_bucket: source_bucket.map(str::to_string),
            dest_bucket: None,
            prefix: None,
        }
    }

    #[test]
    fn star_bucket_and_zone_order_do_not_make_pipes_differ() {
        let mut reordered = pipe("p", None);
        reordered.source_zones.reverse();
        assert!(same_pipe(&pipe("p", Some("*")), &reordered));
        assert!(!same_pipe(&pipe("p", Some("critical-*")), &pipe("p", None)));
    }

    #[test]
    fn directional_flows_match_by_zones_and_get_a_made_up_id() {
        let flow = |id: &str| SyncFlow {
            id: id.into(),
            flow_type: SyncFlowType::Directional,
            zones: vec![],
            source_zone: Some("east".into()),
            dest_zone: Some("west".into()),
        };
        assert!(same_flow(&flow(""), &flow("e2w")));
        assert_eq!(flow_args(&flow(""), false)[0], "--flow-id=east-to-west");
    }

    #[test]
    fn bucket_groups_are_addressed_by_bucket() {
        let scope = ZoneGroupRef {
            realm: "prod",
            zone_group: "us",
        };
        let mut group = SyncGroup {
            id: "g".into(),
            status: SyncGroupStatus::Enabled,
            bucket: None,
            flows: vec![],
            pipes: vec![],
        };
        let zone_group_level = group_command(scope, &group, &["remove"]).to_string();
        assert_eq!(
            zone_group_level,
            "radosgw-admin sync group remove --rgw-realm=prod --group-id=g --rgw-zonegroup=us"
        );
        group.bucket = Some("logs".into());
        assert!(group_command(scope, &group, &["create"])
            .to_string()
            .ends_with("--group-id=g --bucket=logs"));
    }
}
