//! `cephdr failover plan|start|watch`: create FailoverRequests and follow them through a watch on the one
//! object. The operator does the failover; these commands only ask for it and show its status.

use std::{io::Write, pin::pin, time::Duration};

use futures::StreamExt;
use kube::{
    api::{Api, ObjectMeta, PostParams},
    runtime::{
        watcher::{self, watch_object},
        WatchStreamExt,
    },
    ResourceExt,
};
use tracing::warn;

use super::{
    api_error, is_final,
    progress::{finished, Progress},
    table::Table,
    Error, KubeArgs, Result,
};
use crate::{
    api::{
        conditions, failover_request::FailoverTargets, FailoverAction, FailoverPhase, FailoverRequest,
        FailoverRequestSpec,
    },
    controller::failover_request::plan::DRY_RUN,
};

#[derive(clap::Args, Debug)]
pub struct FailoverArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(subcommand)]
    pub command: FailoverCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum FailoverCommand {
    /// Ask the operator for the plan (a dry-run FailoverRequest) and print its ordered steps; nothing runs.
    Plan {
        #[command(flatten)]
        request: RequestArgs,
        /// How long to wait for the operator to list the plan.
        #[arg(long, default_value_t = 120)]
        timeout_seconds: u64,
    },
    /// Create a FailoverRequest; with --wait, follow it like `watch`.
    Start {
        #[command(flatten)]
        request: RequestArgs,
        /// Name of the request (default: generated from the action and the target site).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        limits: Limits,
        /// Follow the request until it completes (exit 0) or fails (exit 1).
        #[arg(long)]
        wait: bool,
    },
    /// Follow a FailoverRequest, printing each step as it changes, until it completes (exit 0) or fails
    /// (exit 1).
    Watch {
        /// The FailoverRequest's name.
        name: String,
    },
}

/// When a request gives up.
#[derive(clap::Args, Debug, Default)]
pub struct Limits {
    /// Refuse a planned failover while any image lags more than this.
    #[arg(long)]
    pub max_lag_seconds: Option<u32>,
    /// Fail once a site the request needs has been unreachable this long (default 600), unless the target
    /// may already have taken over.
    #[arg(long)]
    pub unreachable_timeout_seconds: Option<u32>,
}

/// What a request asks for.
#[derive(clap::Args, Debug)]
pub struct RequestArgs {
    /// The CephSite that is primary (and RGW master) when the request completes; for a drill, the site
    /// where the copy is checked.
    #[arg(long)]
    pub target_site: String,
    /// An RbdMirrorPool to move (repeat for several).
    #[arg(
        long = "pool",
        value_name = "RBD_MIRROR_POOL",
        required_unless_present = "realms"
    )]
    pub pools: Vec<String>,
    /// A CephRealm whose zone on the target site becomes master (repeat for several).
    #[arg(long = "realm", value_name = "CEPH_REALM")]
    pub realms: Vec<String>,
    #[arg(long, value_enum, default_value_t = FailoverAction::Planned)]
    pub action: FailoverAction,
}

impl clap::ValueEnum for FailoverAction {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            FailoverAction::Planned,
            FailoverAction::Emergency,
            FailoverAction::Failback,
            FailoverAction::Resync,
            FailoverAction::Drill,
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

pub async fn run(args: &FailoverArgs, out: &mut impl Write) -> Result<()> {
    let client = args.kube.client().await?;
    let namespace = args.kube.namespace(&client);
    let api: Api<FailoverRequest> = Api::namespaced(client, &namespace);
    match &args.command {
        FailoverCommand::Plan {
            request,
            timeout_seconds,
        } => {
            let created = create(
                &api,
                &namespace,
                new_request(request, None, true, &Limits::default()),
                out,
            )
            .await?;
            let name = created.name_any();
            let listed = follow(&api, &namespace, &name, |r| listed_plan(r).transpose());
            let listed = tokio::time::timeout(Duration::from_secs(*timeout_seconds), listed)
                .await
                .map_err(|_| Error::NoPlan {
                    namespace: namespace.clone(),
                    name,
                    seconds: *timeout_seconds,
                })??;
            out.write_all(render_plan(&listed).as_bytes())?;
        }
        FailoverCommand::Start {
            request,
            name,
            limits,
            wait,
        } => {
            let request = new_request(request, name.as_deref(), false, limits);
            let created = create(&api, &namespace, request, out).await?;
            match wait {
                true => watch(&api, &namespace, &created.name_any(), out).await?,
                false => writeln!(
                    out,
                    "follow it with: cephdr failover watch {} -n {namespace}",
                    created.name_any()
                )?,
            }
        }
        FailoverCommand::Watch { name } => watch(&api, &namespace, name, out).await?,
    }
    Ok(())
}

/// The request the flags describe; without a name the API server generates one from the action and site.
pub fn new_request(
    args: &RequestArgs,
    name: Option<&str>,
    dry_run: bool,
    limits: &Limits,
) -> FailoverRequest {
    let plan = if dry_run { "plan-" } else { "" };
    FailoverRequest {
        metadata: ObjectMeta {
            name: name.map(str::to_string),
            generate_name: name
                .is_none()
                .then(|| format!("{}-{}-{plan}", args.action.as_str(), args.target_site)),
            ..ObjectMeta::default()
        },
        spec: FailoverRequestSpec {
            action: args.action,
            target_site: args.target_site.clone(),
            targets: FailoverTargets {
                rbd_mirror_pools: args.pools.clone(),
                realms: args.realms.clone(),
            },
            max_lag_seconds: limits.max_lag_seconds,
            unreachable_timeout_seconds: limits.unreachable_timeout_seconds,
            concurrency: None,
            dry_run,
        },
        status: None,
    }
}

async fn create(
    api: &Api<FailoverRequest>,
    namespace: &str,
    request: FailoverRequest,
    out: &mut impl Write,
) -> Result<FailoverRequest> {
    let what = match &request.metadata.name {
        Some(name) => format!("create FailoverRequest {namespace}/{name}"),
        None => format!("create a FailoverRequest in namespace {namespace}"),
    };
    let created = api
        .create(&PostParams::default(), &request)
        .await
        .map_err(api_error(what))?;
    let dry_run = if created.spec.dry_run { " (dry run)" } else { "" };
    writeln!(
        out,
        "failoverrequest.cephdr.io/{} created{dry_run}",
        created.name_any()
    )?;
    Ok(created)
}

/// Prints the request's progress as it happens until it completes or fails.
async fn watch(api: &Api<FailoverRequest>, namespace: &str, name: &str, out: &mut impl Write) -> Result<()> {
    let mut progress = Progress::default();
    follow(api, namespace, name, |request| {
        for line in progress.update(request) {
            writeln!(out, "{line}")?;
        }
        out.flush()?;
        finished(request).transpose()
    })
    .await
}

/// Feeds every version of the request to `on` until it returns a value or an error.
async fn follow<T>(
    api: &Api<FailoverRequest>,
    namespace: &str,
    name: &str,
    mut on: impl FnMut(&FailoverRequest) -> Result<Option<T>>,
) -> Result<T> {
    // A wrong name or missing access is reported at once; a watch would wait for the object to appear.
    let current = api
        .get(name)
        .await
        .map_err(api_error(format!("get FailoverRequest {namespace}/{name}")))?;
    if let Some(done) = on(&current)? {
        return Ok(done);
    }
    let lost = |why| Error::Lost {
        namespace: namespace.to_string(),
        name: name.to_string(),
        why,
    };
    let mut versions = pin!(watch_object(api.clone(), name).default_backoff());
    while let Some(event) = versions.next().await {
        match event {
            Ok(Some(request)) => {
                if let Some(done) = on(&request)? {
                    return Ok(done);
                }
            }
            Ok(None) => return Err(lost("it was deleted")),
            Err(error) => {
                let error = watch_error(format!("watch FailoverRequest {namespace}/{name}"), error);
                if is_final(&error) {
                    return Err(error);
                }
                // Connections drop and watches expire; the watcher starts over by itself.
                warn!(error = %error, "watch interrupted, resuming");
            }
        }
    }
    Err(lost("the watch ended"))
}

fn watch_error(what: String, error: watcher::Error) -> Error {
    match error {
        watcher::Error::InitialListFailed(source)
        | watcher::Error::WatchStartFailed(source)
        | watcher::Error::WatchFailed(source) => api_error(what)(source),
        other => Error::Watch { what, source: other },
    }
}

/// The dry run's request once the operator has listed its plan (or completed it); its failure otherwise.
fn listed_plan(request: &FailoverRequest) -> Option<Result<FailoverRequest>> {
    if let Some(Err(failed)) = finished(request) {
        return Some(Err(failed));
    }
    let status = request.status.as_ref()?;
    let listed = status.phase == FailoverPhase::Completed || conditions::is_true(&status.conditions, DRY_RUN);
    listed.then(|| Ok(request.clone()))
}

/// The plan of a dry run: its steps in the order they would run.
pub fn render_plan(request: &FailoverRequest) -> String {
    let steps = request
        .status
        .as_ref()
        .map(|s| s.steps.as_slice())
        .unwrap_or_default();
    let mut table = Table::new(&["#", "STEP", "TARGET"]);
    for (i, step) in steps.iter().enumerate() {
        table.row(vec![(i + 1).to_string(), step.name.clone(), step.target.clone()]);
    }
    let summary = format!(
        "plan of a {} failover to site {}: {} step(s); nothing was changed",
        request.spec.action.as_str(),
        request.spec.target_site,
        steps.len()
    );
    match steps.is_empty() {
        true => format!("{summary}\n"),
        false => format!("{summary}\n{}", table.render()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{
        api::{conditions::condition, failover_request::StepState},
        cli::fixtures::request,
    };

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        request: RequestArgs,
    }

    fn flags(args: &[&str]) -> Result<RequestArgs, clap::Error> {
        Flags::try_parse_from(std::iter::once("test").chain(args.iter().copied())).map(|f| f.request)
    }

    #[test]
    fn the_flags_become_the_request_spec() {
        let args = flags(&[
            "--target-site",
            "site-b",
            "--pool",
            "rbd",
            "--pool",
            "logs",
            "--realm",
            "prod",
            "--action",
            "emergency",
        ])
        .unwrap();
        let limits = Limits {
            max_lag_seconds: Some(30),
            unreachable_timeout_seconds: Some(60),
        };
        let named = new_request(&args, Some("rescue"), false, &limits);
        assert_eq!(named.metadata.name.as_deref(), Some("rescue"));
        assert_eq!(named.metadata.generate_name, None);
        let spec = serde_json::to_value(&named.spec).unwrap();
        assert_eq!(
            spec,
            serde_json::json!({"action": "emergency", "targetSite": "site-b", "maxLagSeconds": 30,
                "unreachableTimeoutSeconds": 60, "concurrency": null, "dryRun": false,
                "targets": {"rbdMirrorPools": ["rbd", "logs"], "realms": ["prod"]}})
        );
        let dry = new_request(&args, None, true, &Limits::default());
        assert_eq!(
            dry.metadata.generate_name.as_deref(),
            Some("emergency-site-b-plan-")
        );
        assert!(dry.spec.dry_run);
    }

    #[test]
    fn a_request_needs_a_target_and_a_known_action() {
        let planned = flags(&["--target-site", "b", "--realm", "prod"]).unwrap();
        assert_eq!(planned.action, FailoverAction::Planned);
        assert!(flags(&["--target-site", "b"]).is_err(), "no pool and no realm");
        let unknown = flags(&["--target-site", "b", "--pool", "rbd", "--action", "panic"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            unknown.contains("[possible values: planned, emergency, failback, resync, drill]"),
            "{unknown}"
        );
    }

    #[test]
    fn a_listed_dry_run_prints_its_steps_in_order() {
        let mut listed = request("what-if", FailoverPhase::Pending, &[StepState::Pending; 3]);
        assert!(listed_plan(&listed).is_none(), "not listed before DryRun=True");
        listed
            .status
            .as_mut()
            .unwrap()
            .conditions
            .push(condition(DRY_RUN, true, "DryRun", "", None));
        let Some(Ok(plan)) = listed_plan(&listed) else {
            panic!("listed");
        };
        assert_eq!(
            render_plan(&plan),
            "plan of a planned failover to site site-b: 3 step(s); nothing was changed\n\
             #   STEP         TARGET\n\
             1   demote       rbd/db@site-a\n\
             2   await-sync   rbd/db@site-b\n\
             3   promote      rbd/db@site-b\n"
        );
        let mut refused = request("what-if", FailoverPhase::Failed, &[]);
        refused.status.as_mut().unwrap().conditions = vec![condition(
            conditions::STALLED,
            true,
            "PreflightFailed",
            "dry run: RbdMirrorPool nope not found",
            None,
        )];
        assert!(matches!(listed_plan(&refused), Some(Err(Error::Failed { .. }))));
    }
}
