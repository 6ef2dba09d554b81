//! `cephdr status`: the sites, realms, zones, pools, images and running failovers of a namespace (or all),
//! as their statuses report them. `-o json|yaml` prints [`Report`], whose field names are part of the CLI's
//! interface; the table shows the same values.

mod render;
mod report;

use kube::{Client, Resource};

pub use render::render_table;
pub use report::{FailoverReport, ImageReport, PoolReport, RealmReport, Report, SiteReport, ZoneReport};

use super::{api_error, KubeArgs, Result};
use crate::{
    api::{CephRealm, CephSite, CephZone, FailoverRequest, RbdMirrorPool},
    controller::WatchScope,
};

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// All namespaces.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// Prints the status of the namespace (or of all namespaces) to `out`.
pub async fn run(args: &StatusArgs, out: &mut impl std::io::Write) -> Result<()> {
    let client = args.kube.client().await?;
    let scope = match args.all_namespaces {
        true => WatchScope::AllNamespaces,
        false => WatchScope::Namespace(args.kube.namespace(&client)),
    };
    let objects = Objects::list(&client, &scope).await?;
    let report = Report::new(&objects);
    let text = match args.output {
        Format::Table => render_table(&report, &scope),
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Yaml => serde_yaml::to_string(&report)?,
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// The objects a report is made of, as the API server lists them.
pub struct Objects {
    pub sites: Vec<CephSite>,
    pub realms: Vec<CephRealm>,
    pub zones: Vec<CephZone>,
    pub pools: Vec<RbdMirrorPool>,
    pub requests: Vec<FailoverRequest>,
}

impl Objects {
    async fn list(client: &Client, scope: &WatchScope) -> Result<Objects> {
        let (sites, realms, zones, pools, requests) = tokio::try_join!(
            list(client, scope),
            list(client, scope),
            list(client, scope),
            list(client, scope),
            list(client, scope),
        )?;
        Ok(Objects {
            sites,
            realms,
            zones,
            pools,
            requests,
        })
    }
}

async fn list<K>(client: &Client, scope: &WatchScope) -> Result<Vec<K>>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let place = match scope {
        WatchScope::AllNamespaces => "all namespaces".to_string(),
        WatchScope::Namespace(ns) => format!("namespace {ns}"),
    };
    let what = format!("list {}s in {place}", K::kind(&()));
    let list = scope
        .api::<K>(client)
        .list(&Default::default())
        .await
        .map_err(api_error(what))?;
    Ok(list.items)
}
