//! `FailoverRequest` effects: read the request fresh, observe the pools and realms it targets through the
//! sites' agents, let `plan::next` decide, persist the new status, and only then run the handed-out steps
//! and a drill's copy checks (whose results are planned on at once).
//! Deciding is left to `plan`; `announce` turns status changes into Events and metrics.
//!
//! What a decision rests on is read from the API server, not from the caches: right after a start a
//! cache may still be empty, and a missing pool, zone or competing request would then fail a running
//! failover or let two run at once. (Waiting for another controller's cache to fill is no way out: that
//! wait can miss its wake-up when the other controller waits on it too.)

use std::{slice, sync::Arc, time::Instant};

use futures::{future, stream, StreamExt};
use k8s_openapi::jiff::Timestamp;
use kube::{
    api::{Api, ListParams, Patch, PatchParams},
    runtime::controller::Action,
    ResourceExt,
};
use serde_json::json;
use tracing::{debug, info, instrument};

use super::{
    announce::{announce, blocking_requests},
    check::{CheckedCopy, CopyCheck},
    plan::{
        self, Handover, Observed, ObservedPool, ObservedPoolSite, ObservedRealm, ObservedZone, Transition,
    },
};
use crate::{
    agent::{AgentError, RbdPoolState},
    api::{
        rbd_mirror_pool::{ReplicationEngine, PRIMARY_SITE_ANNOTATION},
        CephRealm, CephZone, FailoverPhase, FailoverRequest, FailoverRequestStatus, RbdMirrorPool,
    },
    controller::{
        apply::run_steps,
        context::Context,
        error::{Error, Result},
        realm::{member_zones, sync_user_secret_name},
        secrets, status,
    },
};

pub const CONTROLLER: &str = "failoverrequest";

#[instrument(skip_all, fields(request = %request.name_any(), namespace = request.namespace().unwrap_or_default(), action = request.spec.action.as_str()))]
pub async fn reconcile(request: Arc<FailoverRequest>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    let namespace = request.namespace().unwrap_or_default();
    let api: Api<FailoverRequest> = Api::namespaced(ctx.client.clone(), &namespace);
    // The cache may not have the status the previous reconcile wrote yet: resume from the latest one.
    let Some(request) = api.get_opt(&request.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let before = request.status.clone().unwrap_or_default();
    if before.phase.is_terminal() {
        return Ok(Action::await_change());
    }
    let others = api.list(&ListParams::default()).await?.items;
    let blocking = blocking_requests(&request, &others);
    let waiting = before.phase == FailoverPhase::Pending && !request.spec.dry_run && !blocking.is_empty();
    let observed = match waiting {
        // A blocked request only waits: nothing to ask the sites.
        true => Observed {
            pools: Vec::new(),
            realms: Vec::new(),
            blocking_requests: blocking.clone(),
            checked_copies: Vec::new(),
        },
        false => observe(&request, &before, &ctx, blocking.clone()).await?,
    };
    let transition = plan::next(&request.spec, &before, &observed, Timestamp::now());
    debug!(from = ?before.phase, to = ?transition.status.phase, steps = transition.steps.len() + transition.then.len(), "planned");
    persist(&api, &request, &ctx, &before, &transition).await?;

    let failures = execute(&ctx, &namespace, &request, &transition).await?;
    let checked_copies = check_copies(&ctx, &namespace, &request, &transition.checks).await?;
    let transition = if failures.iter().all(|(_, error)| error.is_transient()) && checked_copies.is_empty() {
        transition
    } else {
        // Ceph refused a step, or copies were checked: plan again on what the sites show now, with the
        // refusal or the checksums, so the status says so at once.
        let mut observed = observe(&request, &transition.status, &ctx, blocking).await?;
        for (site, error) in &failures {
            observed.record_step_failure(site, error);
        }
        observed.checked_copies = checked_copies;
        let after = plan::next(&request.spec, &transition.status, &observed, Timestamp::now());
        persist(&api, &request, &ctx, &transition.status, &after).await?;
        after
    };
    ctx.reset_backoff(&request);
    Ok(Action::requeue(transition.requeue))
}

/// Writes the transition's status (before any of its steps runs), then tells humans what changed.
async fn persist(
    api: &Api<FailoverRequest>,
    request: &FailoverRequest,
    ctx: &Context,
    before: &FailoverRequestStatus,
    transition: &Transition,
) -> Result<()> {
    let generation = request.metadata.generation;
    let mut new_status = transition.status.clone();
    new_status.observed_generation = generation;
    for condition in &mut new_status.conditions {
        condition.observed_generation = generation;
    }
    status::apply(api, request, &new_status).await?;
    announce(ctx, request, before, &new_status).await;
    Ok(())
}

/// Runs the independent steps at most `concurrency` at a time, then the dependent ones in order while they
/// succeed. Returns the steps' agent failures by site; other errors end the reconcile.
async fn execute(
    ctx: &Context,
    namespace: &str,
    request: &FailoverRequest,
    transition: &Transition,
) -> Result<Vec<(String, AgentError)>> {
    let mut failures = Vec::new();
    let runs: Vec<_> = transition
        .steps
        .iter()
        .map(|step| run_steps(ctx, namespace, slice::from_ref(step)))
        .collect();
    let results: Vec<Result<()>> = stream::iter(runs)
        .buffer_unordered(plan::concurrency(&request.spec))
        .collect()
        .await;
    for result in results {
        record(result, &mut failures)?;
    }
    if failures.is_empty() {
        for step in &transition.then {
            record(
                run_steps(ctx, namespace, slice::from_ref(step)).await,
                &mut failures,
            )?;
            if !failures.is_empty() {
                break;
            }
        }
    }
    if failures.is_empty() {
        for handover in &transition.handovers {
            hand_over(ctx, namespace, handover).await?;
        }
    }
    Ok(failures)
}

/// Records where a delta-sync pool's images are primary now, in the pool's annotation (see `delta`).
async fn hand_over(ctx: &Context, namespace: &str, handover: &Handover) -> Result<()> {
    let api: Api<RbdMirrorPool> = Api::namespaced(ctx.client.clone(), namespace);
    let annotation = json!({"metadata": {"annotations": {PRIMARY_SITE_ANNOTATION: handover.site}}});
    api.patch(
        &handover.pool,
        &PatchParams::default(),
        &Patch::Merge(&annotation),
    )
    .await?;
    info!(pool = %handover.pool, site = %handover.site, "delta-sync pool handed over");
    Ok(())
}

/// Runs the checks, at most `concurrency` at a time.
async fn check_copies(
    ctx: &Context,
    namespace: &str,
    request: &FailoverRequest,
    checks: &[CopyCheck],
) -> Result<Vec<CheckedCopy>> {
    let runs: Vec<_> = checks
        .iter()
        .map(|check| check_copy(ctx, namespace, check))
        .collect();
    let results: Vec<Result<CheckedCopy>> = stream::iter(runs)
        .buffer_unordered(plan::concurrency(&request.spec))
        .collect()
        .await;
    results.into_iter().collect()
}

/// Reads both snapshots of a check at once, timed.
async fn check_copy(ctx: &Context, namespace: &str, check: &CopyCheck) -> Result<CheckedCopy> {
    let copy_agent = ctx.agent(namespace, &check.copy.site).await?;
    let source_agent = ctx.agent(namespace, &check.source.site).await?;
    let started = Instant::now();
    let (copy, source) = tokio::join!(
        copy_agent.image_checksum(&check.pool, &check.image, check.copy.snap_id),
        source_agent.image_checksum(&check.pool, &check.image, check.source.snap_id),
    );
    debug!(pool = %check.pool, image = %check.image, ?copy, ?source, "copy checked");
    Ok(CheckedCopy {
        check: check.clone(),
        copy,
        source,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn record(result: Result<()>, failures: &mut Vec<(String, AgentError)>) -> Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(Error::Agent { site, source }) => {
            failures.push((site, source));
            Ok(())
        }
        Err(other) => Err(other),
    }
}

/// What the sites show of every pool and realm the request targets (targets that do not exist are left
/// out: the preflight reports them), for a call on `status`: of the pools, the images it needs.
async fn observe(
    request: &FailoverRequest,
    status: &FailoverRequestStatus,
    ctx: &Context,
    blocking: Vec<String>,
) -> Result<Observed> {
    let namespace = request.namespace().unwrap_or_default();
    let targets = &request.spec.targets;
    let reads = plan::images_to_read(&request.spec, status);
    let mut pools = Vec::new();
    let pool_api: Api<RbdMirrorPool> = Api::namespaced(ctx.client.clone(), &namespace);
    for name in &targets.rbd_mirror_pools {
        let Some(pool) = pool_api.get_opt(name).await? else {
            continue;
        };
        let delta_sync = pool.spec.engine == ReplicationEngine::DeltaSync;
        // A delta-sync pool is read whole: one listing holds every image's sync snapshots.
        let only_images = reads
            .as_ref()
            .filter(|_| !delta_sync)
            .map(|reads| reads.get(&pool.spec.pool).cloned().unwrap_or_default());
        let image_names: Option<Vec<String>> =
            only_images.as_ref().map(|only| only.iter().cloned().collect());
        // Both sites at once: reading a pool of many images takes seconds on each.
        let needed = pool
            .spec
            .sites
            .iter()
            .filter(|s| plan::needs_site(&request.spec, &s.site));
        let sites = future::try_join_all(needed.map(|pool_site| async {
            let agent = ctx.agent(&namespace, &pool_site.site).await?;
            let (state, sync) = match &image_names {
                _ if delta_sync => match agent.sync_pool(&pool.spec.pool).await {
                    Ok(sync) => {
                        let state = RbdPoolState {
                            exists: sync.exists,
                            ..RbdPoolState::default()
                        };
                        (Ok(state), Some(sync))
                    }
                    Err(error) => (Err(error), None),
                },
                Some(images) => (agent.rbd_images(&pool.spec.pool, images).await, None),
                None => (agent.rbd_pool(&pool.spec.pool).await, None),
            };
            Ok::<_, Error>(ObservedPoolSite {
                site: pool_site.site.clone(),
                pool: state,
                sync,
            })
        }))
        .await?;
        pools.push(ObservedPool {
            name: name.clone(),
            spec: pool.spec.clone(),
            only_images,
            sites,
            recorded_primary: delta_sync
                .then(|| pool.delta_sync_sites().map(|(primary, _)| primary.to_string())),
        });
    }
    let mut realms = Vec::new();
    let realm_api: Api<CephRealm> = Api::namespaced(ctx.client.clone(), &namespace);
    let all_zones = match targets.realms.is_empty() {
        true => Vec::new(),
        false => {
            Api::<CephZone>::namespaced(ctx.client.clone(), &namespace)
                .list(&ListParams::default())
                .await?
                .items
        }
    };
    for name in &targets.realms {
        let Some(realm) = realm_api.get_opt(name).await? else {
            continue;
        };
        let mut zones = Vec::new();
        for member in member_zones(&realm, &all_zones) {
            let agent = ctx.agent(&namespace, &member.site).await?;
            // Only the target's zones are checked for lag (planned) or measured (drill).
            let sync = match member.site == request.spec.target_site {
                true => Some(agent.rgw_sync_status(name, &member.zone).await),
                false => None,
            };
            zones.push(ObservedZone {
                local: agent.rgw_realm(name).await,
                sync,
                endpoint: member.endpoints.first().cloned().unwrap_or_default(),
                zone: member.zone,
                zone_group: member.zone_group,
                site: member.site,
            });
        }
        let secret = sync_user_secret_name(&realm);
        realms.push(ObservedRealm {
            name: name.clone(),
            zones,
            sync_keys: secrets::read_system_keys(&ctx.client, &namespace, &secret)
                .await
                .ok(),
        });
    }
    Ok(Observed {
        pools,
        realms,
        blocking_requests: blocking,
        checked_copies: Vec::new(),
    })
}
