//! `RbdMirrorPool` effects: observe both sites, keep bootstrap tokens in an owned Secret, run the plan,
//! write status. Deciding is left to `plan`.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp, ByteString};
use kube::{
    api::Api,
    runtime::{controller::Action, events::EventType, reflector::ObjectRef},
    Resource, ResourceExt,
};
use tracing::{debug, instrument};

use super::{
    plan::{
        self,
        delta_sync::{self, DeltaObserved, ObservedSyncSite},
        Observed, ObservedSite, PoolPlan,
    },
    status as pool_status,
};
use crate::{
    agent::{ClusterAgent, Sensitive, SyncPeer},
    api::{
        common::SecretKeyRef, conditions::reason, rbd_mirror_pool::ReplicationEngine, CephSite,
        RbdMirrorPool, RbdMirrorPoolStatus,
    },
    controller::{
        apply::{execute_plan, publish_event, with_finalizer},
        context::Context,
        error::{Error, Result},
        secrets, status,
    },
};

pub const CONTROLLER: &str = "rbdmirrorpool";

/// The Secret that keeps this pool's peer bootstrap tokens, one key per `CephSite`.
pub fn token_secret_name(pool: &RbdMirrorPool) -> String {
    format!("{}-rbd-mirror-bootstrap", pool.name_any())
}

#[instrument(skip_all, fields(pool = %pool.name_any(), namespace = pool.namespace().unwrap_or_default(), generation = pool.metadata.generation))]
pub async fn reconcile(pool: Arc<RbdMirrorPool>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    with_finalizer(&ctx, pool, |pool, deleting| {
        let ctx = ctx.clone();
        async move { converge(&pool, &ctx, deleting).await }
    })
    .await
}

/// How many observe → plan → apply rounds one reconcile runs while the plan still has steps. Each round
/// sees what the previous one changed, so a new pool converges (mirroring, peers, images, schedules) in one
/// reconcile and one status write instead of one per phase, each triggered by the last status write.
const ROUNDS_PER_RECONCILE: usize = 4;

/// How often a pool left to a running failover looks again, in case the request's end went unseen.
const HELD_BY_FAILOVER: std::time::Duration = std::time::Duration::from_secs(60);

/// Observes, plans and applies until the plan has no steps left (or the rounds run out), then writes status
/// once. On cleanup returns an error until nothing is left to undo, so the finalizer stays until Ceph is
/// clean.
async fn converge(pool: &RbdMirrorPool, ctx: &Context, deleting: bool) -> Result<Action> {
    if pool.spec.engine == ReplicationEngine::DeltaSync {
        return converge_delta_sync(pool, ctx, deleting).await;
    }
    // A failover that moves this pool's images reads them itself; reading every image on both sites here
    // too only competes with its `rbd` calls (at 100 images, a read took 15 to 50 s). Its end wakes this
    // pool through the watch. Delta-sync pools are not held: their planned failover waits on this
    // controller to ship the final snapshot.
    let namespace = pool.namespace();
    let held_by = ctx
        .stores
        .requests
        .find(|request| request.moves_pool(namespace.as_deref(), &pool.name_any()));
    if let (Some(request), false) = (held_by, deleting) {
        debug!(
            request = request.name_any(),
            "a failover moves this pool's images: left to it"
        );
        return Ok(Action::requeue(HELD_BY_FAILOVER));
    }
    let mut tokens = read_tokens(pool, ctx).await?;
    let previous_conditions = pool
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let mut round = 1;
    let (pool_plan, outcome) = loop {
        let observed = observe(pool, ctx, deleting, &tokens).await?;
        let mut pool_plan = plan::plan(&pool.spec, &observed, Timestamp::now());
        let last_round = round == ROUNDS_PER_RECONCILE;
        round += 1;
        if !pool_plan.tokens_needed.is_empty() && !deleting && !last_round {
            tokens = create_tokens(pool, ctx, &observed, &tokens, &pool_plan.tokens_needed).await?;
            continue;
        }
        if pool_plan.plan.steps.is_empty() {
            break (pool_plan, Ok(()));
        }
        let outcome = execute_plan(ctx, pool, CONTROLLER, &mut pool_plan.plan).await;
        // A plan that repairs what it announces (a stalled snapshot schedule, split-brain) is reported as it
        // saw the pool: the next round would see the repair, and the condition and Event would never appear.
        let announces = !plan::announcements(previous_conditions, &pool_plan.plan.conditions).is_empty();
        if outcome.is_err() || last_round || announces {
            break (pool_plan, outcome);
        }
    };
    finish(pool, ctx, deleting, &pool_plan, outcome).await
}

/// Writes status once, then ends the reconcile as the plan's outcome says.
async fn finish(
    pool: &RbdMirrorPool,
    ctx: &Context,
    deleting: bool,
    pool_plan: &PoolPlan,
    outcome: Result<()>,
) -> Result<Action> {
    report(pool, ctx, pool_plan).await?;
    outcome?;
    if deleting && !pool_plan.cleanup_complete {
        return Err(Error::CleanupPending(pool_plan.plan.pending()));
    }
    ctx.reset_backoff(pool);
    Ok(Action::requeue(pool_plan.plan.requeue))
}

/// [`converge`] for `engine: delta-sync`: a snapshot taken in one round is shipped in the next.
async fn converge_delta_sync(pool: &RbdMirrorPool, ctx: &Context, deleting: bool) -> Result<Action> {
    let api: Api<RbdMirrorPool> = Api::namespaced(ctx.client.clone(), &pool.namespace().unwrap_or_default());
    let mut round = 1;
    let (pool_plan, outcome) = loop {
        // Which site is primary is read fresh each round: a FailoverRequest may have handed the pool over
        // since the cache's copy, and a snapshot taken on the old primary after that would start a
        // history the new primary's deltas do not continue.
        let Some(current) = api.get_opt(&pool.name_any()).await? else {
            return Ok(Action::await_change());
        };
        let sites = match current.delta_sync_sites() {
            Ok(sites) => sites,
            // Cleanup reaches both sites whichever one is primary, so a bad annotation need not block it.
            Err(_) if deleting => current.spec.primary_and_other().map_err(Error::InvalidSpec)?,
            Err(message) => {
                break (
                    delta_sync::invalid_primary(current.status.as_ref(), &message),
                    Ok(()),
                )
            }
        };
        let observed = observe_delta_sync(&current, sites, ctx, deleting).await?;
        let mut pool_plan = delta_sync::plan(&current.spec, &observed, Timestamp::now());
        if pool_plan.plan.steps.is_empty() {
            break (pool_plan, Ok(()));
        }
        let outcome = execute_plan(ctx, pool, CONTROLLER, &mut pool_plan.plan).await;
        if outcome.is_err() || round == ROUNDS_PER_RECONCILE {
            break (pool_plan, outcome);
        }
        round += 1;
    };
    finish(pool, ctx, deleting, &pool_plan, outcome).await
}

/// Reads both sites of a delta-sync pool: `(primary, copy)`.
async fn observe_delta_sync(
    pool: &RbdMirrorPool,
    (primary, copy): (&str, &str),
    ctx: &Context,
    deleting: bool,
) -> Result<DeltaObserved> {
    let namespace = pool.namespace().unwrap_or_default();
    let sync_pool = |agent: Arc<dyn ClusterAgent>| async move { agent.sync_pool(&pool.spec.pool).await };
    let (_, primary_state) = ctx.read_site(&namespace, primary, sync_pool).await?;
    let (copy_site, copy_state) = ctx.read_site(&namespace, copy, sync_pool).await?;
    let receiver = match deleting {
        true => Err((reason::PROGRESSING, "deleting".to_string())),
        false => receiver(ctx, &copy_site).await,
    };
    let observed = |site: &str, pool| ObservedSyncSite {
        site: site.to_string(),
        pool,
    };
    Ok(DeltaObserved {
        primary: observed(primary, primary_state),
        copy: observed(copy, copy_state),
        receiver,
        deleting,
    })
}

/// How the primary's agent reaches the copy site's receiver, with its token and CA from their Secrets.
async fn receiver(ctx: &Context, site: &CephSite) -> std::result::Result<SyncPeer, (&'static str, String)> {
    let Some(endpoint) = &site.spec.sync else {
        let message = format!(
            "CephSite {} names no delta-sync receiver (spec.sync)",
            site.name_any()
        );
        return Err((delta_sync::NO_RECEIVER, message));
    };
    let namespace = site.namespace().unwrap_or_default();
    let read = |reference: SecretKeyRef| {
        let (client, namespace) = (ctx.client.clone(), namespace.clone());
        async move { secrets::read_key(&client, &namespace, &reference.name, &reference.key).await }
    };
    let failed = |error: Error| (error.reason(), error.to_string());
    let token = read(endpoint.token_secret_ref.clone()).await.map_err(failed)?;
    let ca_pem = match &endpoint.ca_secret_ref {
        Some(reference) => Some(read(reference.clone()).await.map_err(failed)?.0),
        None => None,
    };
    Ok(SyncPeer {
        address: endpoint.address.clone(),
        server_name: endpoint.server_name().to_string(),
        ca_pem,
        token,
    })
}

async fn observe(
    pool: &RbdMirrorPool,
    ctx: &Context,
    deleting: bool,
    tokens: &BTreeMap<String, Sensitive<String>>,
) -> Result<Observed> {
    let namespace = pool.namespace().unwrap_or_default();
    let mut sites = Vec::with_capacity(pool.spec.sites.len());
    for pool_site in &pool.spec.sites {
        let (site, state) = ctx
            .read_site(&namespace, &pool_site.site, |agent| async move {
                agent.rbd_pool(&pool.spec.pool).await
            })
            .await?;
        sites.push(ObservedSite {
            site: pool_site.site.clone(),
            ceph_site_name: site.ceph_site_name(),
            pool: state,
            bootstrap_token: tokens.get(&pool_site.site).cloned(),
        });
    }
    Ok(Observed { sites, deleting })
}

/// The pool's tokens from the cache of owned Secrets; from the API server only when the cache has none
/// (a Secret written moments ago, or none yet), so a converged pool costs no read.
async fn read_tokens(pool: &RbdMirrorPool, ctx: &Context) -> Result<BTreeMap<String, Sensitive<String>>> {
    let namespace = pool.namespace().unwrap_or_default();
    let name = token_secret_name(pool);
    if let Some(cached) = ctx
        .stores
        .owned_secrets
        .get(&ObjectRef::new(&name).within(&namespace))
    {
        return Ok(tokens_of(cached.as_ref().clone()));
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    Ok(secrets.get_opt(&name).await?.map(tokens_of).unwrap_or_default())
}

/// The tokens a bootstrap-token Secret holds, one per `CephSite`.
fn tokens_of(secret: Secret) -> BTreeMap<String, Sensitive<String>> {
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(site, bytes)| {
            String::from_utf8(bytes.0)
                .ok()
                .map(|token| (site, Sensitive(token)))
        })
        .collect()
}

/// Creates bootstrap tokens on the named sites and keeps them, with the ones the pool already had, in the
/// pool's Secret, owned by the pool so they go when it goes; returns the Secret's tokens as written. The
/// Secret is applied whole: a server-side apply without a key this manager wrote before would delete it.
/// Tokens never appear in logs, Events or status.
async fn create_tokens(
    pool: &RbdMirrorPool,
    ctx: &Context,
    observed: &Observed,
    known: &BTreeMap<String, Sensitive<String>>,
    sites: &[String],
) -> Result<BTreeMap<String, Sensitive<String>>> {
    let namespace = pool.namespace().unwrap_or_default();
    let mut data: BTreeMap<String, ByteString> = known
        .iter()
        .map(|(site, token)| (site.clone(), ByteString(token.expose().as_bytes().to_vec())))
        .collect();
    for site_name in sites {
        let Some(site) = observed.sites.iter().find(|s| &s.site == site_name) else {
            continue;
        };
        let agent = ctx.agent(&namespace, site_name).await?;
        let token = agent
            .create_bootstrap_token(&pool.spec.pool, &site.ceph_site_name)
            .await
            .map_err(Error::agent(site_name))?;
        data.insert(site_name.clone(), ByteString(token.expose().as_bytes().to_vec()));
    }
    let written = secrets::apply_owned(&ctx.client, pool, &namespace, &token_secret_name(pool), data).await?;
    Ok(tokens_of(written))
}

/// The pool's figures as metrics: per image the lag and whether its copy replays (on the site that holds
/// the copy), per site the RPO, per receiving site whether rbd-mirror runs.
fn record_metrics(pool: &RbdMirrorPool, ctx: &Context, status: &RbdMirrorPoolStatus) {
    let ceph_pool = &pool.spec.pool;
    for image in &status.images {
        let Some(copy_site) = pool
            .spec
            .sites
            .iter()
            .find(|s| Some(&s.site) != image.primary_site.as_ref())
        else {
            continue;
        };
        if let Some(lag) = image.lag_seconds {
            ctx.metrics
                .set_image_lag(&copy_site.site, ceph_pool, &image.name, lag as f64);
        }
        ctx.metrics.set_image_replaying(
            &copy_site.site,
            ceph_pool,
            &image.name,
            pool_status::is_caught_up(image, None),
        );
        let finished = image
            .last_transfer
            .as_ref()
            .and_then(|t| Some((t.bytes_changed?, t.bytes_shipped?, t.duration_seconds?)));
        if let (Some((changed, shipped, seconds)), Some(primary)) = (finished, &image.primary_site) {
            ctx.metrics
                .set_last_transfer(primary, ceph_pool, &image.name, changed, shipped, seconds as f64);
        }
    }
    if let Some(rpo) = pool.spec.rpo_seconds {
        for site in &pool.spec.sites {
            ctx.metrics.set_rbd_pool_rpo(&site.site, ceph_pool, rpo);
        }
    }
    for daemon in &status.daemons {
        ctx.metrics.set_rbd_mirror_daemon_up(
            &daemon.site,
            ceph_pool,
            daemon.health != pool_status::DAEMON_NOT_RUNNING,
        );
    }
}

async fn report(pool: &RbdMirrorPool, ctx: &Context, pool_plan: &PoolPlan) -> Result<()> {
    let now = Timestamp::now();
    let mut new_status = pool_plan.status.clone();
    new_status.observed_generation = pool.meta().generation;
    new_status.conditions = status::complete_conditions(pool, pool_plan.plan.conditions.clone(), now);
    record_metrics(pool, ctx, &new_status);
    let previous = pool
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    for (reason, note) in plan::announcements(previous, &new_status.conditions) {
        publish_event(ctx, pool, EventType::Warning, reason, "Observe", note).await;
    }
    let api: Api<RbdMirrorPool> = Api::namespaced(ctx.client.clone(), &pool.namespace().unwrap_or_default());
    status::apply(&api, pool, &new_status).await?;
    Ok(())
}
