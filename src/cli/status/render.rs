//! The report as text: a table per kind, aligned like `kubectl get`.

use super::Report;
use crate::{
    api::zone::{ZoneRole, ZoneSyncStatus},
    cli::table::{cell, duration, Table, UNKNOWN},
    controller::WatchScope,
};

/// The report as tables, one per kind, with a NAMESPACE column when it spans all namespaces.
pub fn render_table(report: &Report, scope: &WatchScope) -> String {
    let WatchScope::Namespace(namespace) = scope else {
        return tables(report, true);
    };
    match report.is_empty() {
        true => format!("No cephdr resources found in namespace {namespace}.\n"),
        false => tables(report, false),
    }
}

fn tables(report: &Report, namespaced: bool) -> String {
    // Prepends the namespace column when the report spans namespaces.
    let table = |header: &[&str]| match namespaced {
        true => Table::new(&[&["NAMESPACE"], header].concat()),
        false => Table::new(header),
    };
    let row = |namespace: &str, cells: Vec<String>| match namespaced {
        true => [vec![namespace.to_string()], cells].concat(),
        false => cells,
    };
    let yes_no = |value: Option<bool>| cell(value.map(|v| if v { "True" } else { "False" }));
    let seconds = |value: Option<u64>| value.map_or_else(|| UNKNOWN.to_string(), duration);

    let mut sites = table(&["SITE", "REACHABLE", "HEALTH", "VERSION", "READY"]);
    for s in &report.sites {
        sites.row(row(
            &s.namespace,
            vec![
                s.name.clone(),
                cell(s.reachable),
                cell(s.health.as_ref()),
                cell(s.ceph_version.as_ref()),
                yes_no(s.ready),
            ],
        ));
    }
    let mut realms = table(&["REALM", "MASTER ZONEGROUP", "MASTER ZONE", "EPOCH", "READY"]);
    for r in &report.realms {
        realms.row(row(
            &r.namespace,
            vec![
                r.name.clone(),
                cell(r.master_zone_group.as_ref()),
                cell(r.master_zone.as_ref()),
                cell(r.period_epoch),
                yes_no(r.ready),
            ],
        ));
    }
    let mut zones = table(&[
        "ZONE",
        "REALM",
        "ZONEGROUP",
        "SITE",
        "ROLE",
        "SYNC",
        "LAG",
        "RPO",
        "READY",
    ]);
    for z in &report.zones {
        zones.row(row(
            &z.namespace,
            vec![
                z.name.clone(),
                z.realm.clone(),
                z.zone_group.clone(),
                z.site.clone(),
                cell(z.role.map(role)),
                z.sync.as_ref().map_or_else(|| UNKNOWN.to_string(), sync),
                seconds(z.lag_seconds),
                seconds(z.rpo_seconds.map(u64::from)),
                yes_no(z.ready),
            ],
        ));
    }
    let mut pools = table(&[
        "POOL",
        "CEPH POOL",
        "PRIMARY",
        "HEALTH",
        "MAX LAG",
        "RPO",
        "RPO MET",
        "READY",
    ]);
    let mut images = table(&["POOL", "IMAGE", "PRIMARY", "STATE", "LAG", "WITHIN RPO"]);
    for p in &report.pools {
        pools.row(row(
            &p.namespace,
            vec![
                p.name.clone(),
                p.pool.clone(),
                cell(p.primary_site.as_ref()),
                cell(p.health.as_ref()),
                seconds(p.max_lag_seconds),
                seconds(p.rpo_seconds.map(u64::from)),
                yes_no(p.rpo_met),
                yes_no(p.ready),
            ],
        ));
        for i in &p.images {
            images.row(row(
                &p.namespace,
                vec![
                    p.name.clone(),
                    i.name.clone(),
                    cell(i.primary_site.as_ref()),
                    i.state.clone(),
                    seconds(i.lag_seconds),
                    yes_no(i.within_rpo),
                ],
            ));
        }
    }
    let mut failovers = table(&["FAILOVER", "ACTION", "TARGET", "PHASE", "STEPS", "MESSAGE"]);
    for f in &report.failovers {
        let action = match f.dry_run {
            true => format!("{} (dry run)", f.action.as_str()),
            false => f.action.as_str().to_string(),
        };
        failovers.row(row(
            &f.namespace,
            vec![
                f.name.clone(),
                action,
                f.target_site.clone(),
                format!("{:?}", f.phase),
                format!("{}/{}", f.steps_done, f.steps),
                cell(f.message.as_ref()),
            ],
        ));
    }
    [sites, realms, zones, pools, images, failovers]
        .iter()
        .filter(|t| !t.is_empty())
        .map(Table::render)
        .collect::<Vec<_>>()
        .join("\n")
}

fn role(role: ZoneRole) -> &'static str {
    match role {
        ZoneRole::Master => "master",
        ZoneRole::Secondary => "secondary",
    }
}

/// RGW's sync states in a few words: `metadata caught-up, data caught-up`, naming the source zones when
/// they differ and how many shards are behind.
fn sync(status: &ZoneSyncStatus) -> String {
    let behind = |state: &str, shards: u32| match shards {
        0 => state.to_string(),
        1 => format!("{state} (1 shard)"),
        n => format!("{state} ({n} shards)"),
    };
    let mut parts = Vec::new();
    if let Some(metadata) = &status.metadata {
        parts.push(format!(
            "metadata {}",
            behind(&metadata.state, metadata.behind_shards)
        ));
    }
    let data: Vec<String> = status
        .data
        .iter()
        .map(|d| behind(&d.state, d.behind_shards))
        .collect();
    match data.first() {
        Some(first) if data.iter().all(|d| d == first) => parts.push(format!("data {first}")),
        Some(_) => {
            let per_source: Vec<String> = status
                .data
                .iter()
                .zip(&data)
                .map(|(d, shown)| format!("{}: {shown}", d.source))
                .collect();
            parts.push(format!("data {}", per_source.join(", ")));
        }
        None => {}
    }
    match parts.is_empty() {
        true => UNKNOWN.to_string(),
        false => parts.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::fixtures::objects;

    #[test]
    fn an_object_without_status_yet_shows_nothing_it_does_not_know() {
        let mut objects = objects();
        objects.sites[0].status = None;
        let site = &Report::new(&objects).sites[0];
        assert_eq!(
            (site.reachable, site.health.clone(), site.ready),
            (None, None, None)
        );
        let table = render_table(&Report::new(&objects), &WatchScope::Namespace("dr".into()));
        assert!(
            table.contains("\nsite-a   -           -             -         -\n"),
            "{table}"
        );
    }

    #[test]
    fn the_table_has_a_section_per_kind_aligned_like_kubectl() {
        let table = render_table(&Report::new(&objects()), &WatchScope::Namespace("dr".into()));
        let expected = "\
SITE     REACHABLE   HEALTH        VERSION   READY
site-a   true        HEALTH_OK     18.2.4    True
site-b   false       HEALTH_WARN   18.2.4    False

REALM   MASTER ZONEGROUP   MASTER ZONE   EPOCH   READY
prod    us                 us-east       3       True

ZONE      REALM   ZONEGROUP   SITE     ROLE        SYNC                                         LAG   RPO   READY
us-east   prod    us          site-a   master      -                                            -     5m    True
us-west   prod    us          site-b   secondary   metadata caught-up, data behind (2 shards)   40s   5m    True

POOL   CEPH POOL   PRIMARY   HEALTH   MAX LAG   RPO   RPO MET   READY
rbd    rbd         site-a    OK       40m       30m   False     True

POOL   IMAGE   PRIMARY   STATE       LAG   WITHIN RPO
rbd    db      site-a    replaying   12s   True
rbd    logs    site-a    syncing     40m   False

FAILOVER   ACTION    TARGET   PHASE     STEPS   MESSAGE
move       planned   site-b   Syncing   1/2     Syncing: waiting for rbd/db@site-b
";
        assert_eq!(table, expected);
    }

    #[test]
    fn all_namespaces_adds_the_namespace_column_and_an_empty_namespace_says_so() {
        let table = render_table(&Report::new(&objects()), &WatchScope::AllNamespaces);
        assert!(table.starts_with("NAMESPACE   SITE     REACHABLE"), "{table}");
        assert!(table.contains("\ndr          site-a   true"), "{table}");
        assert_eq!(
            render_table(&Report::default(), &WatchScope::Namespace("dr".into())),
            "No cephdr resources found in namespace dr.\n"
        );
    }
}
