//! Running planned steps through the sites' agents, and telling humans when one fails.

use std::{sync::Arc, time::Instant};

use kube::{
    api::{Api, Patch, PatchParams},
    core::NamespaceResourceScope,
    runtime::{
        controller::Action,
        events::{Event, EventType},
    },
    Resource, ResourceExt,
};
use serde::{de::DeserializeOwned, Serialize};
use tracing::{info, warn, Instrument};

use super::{
    context::Context,
    error::{Error, Result},
};
use crate::{api::conditions, plan::SiteStep};

/// Runs `steps` in order; stops at the first failure, which is returned with the site and Ceph's message.
/// Every step is idempotent, so a retry after a partial run repeats nothing harmful.
pub async fn run_steps(ctx: &Context, namespace: &str, steps: &[SiteStep]) -> Result<()> {
    for site_step in steps {
        let span = tracing::info_span!("agent", site = %site_step.site, op = site_step.step.verb());
        async {
            let agent = ctx.agent(namespace, &site_step.site).await?;
            let started = Instant::now();
            let result = agent.execute(&site_step.step).await;
            let outcome = if result.is_ok() { "ok" } else { "error" };
            ctx.metrics.agent_request(
                &site_step.site,
                site_step.step.verb(),
                outcome,
                started.elapsed().as_secs_f64(),
            );
            match &result {
                Ok(()) => info!(step = %site_step.step, "step done"),
                Err(error) => warn!(step = %site_step.step, %error, "step failed"),
            }
            result.map_err(Error::agent(&site_step.site))
        }
        .instrument(span)
        .await?;
    }
    Ok(())
}

/// Publishes an Event on `object`; failures to publish are logged, never fatal.
pub async fn publish_event<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    object: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &object.object_ref(&())).await {
        warn!(%error, reason, "could not publish event");
    }
}

/// Runs a plan's steps for `object`; a failure becomes its Ready=False condition (site, command and Ceph's
/// own message), an Event and an error metric, and is returned so the caller writes status and backs off.
pub async fn execute_plan<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    object: &K,
    controller: &'static str,
    plan: &mut crate::plan::Plan,
) -> Result<()> {
    let namespace = object.meta().namespace.clone().unwrap_or_default();
    let outcome = run_steps(ctx, &namespace, &plan.steps).await;
    if let Err(error) = &outcome {
        ctx.metrics.reconcile_failed(controller, error.reason());
        plan.conditions.retain(|c| c.type_ != conditions::READY);
        plan.conditions.push(conditions::condition(
            conditions::READY,
            false,
            error.reason(),
            error.to_string(),
            None,
        ));
        publish_event(
            ctx,
            object,
            EventType::Warning,
            error.reason(),
            "Reconcile",
            error.to_string(),
        )
        .await;
    }
    outcome
}

/// Field manager of the finalizer, apart from [`super::FIELD_MANAGER`]: its server-side apply owns nothing but
/// the finalizer, so no other write of the operator's can drop it.
const FINALIZER_MANAGER: &str = "cephdr-operator-finalizer";

/// Wraps a converge function in the cleanup finalizer: `converge(object, deleting)`. Unlike kube-runtime's
/// helper, adding the finalizer does not end the reconcile: it is a server-side apply of the one list item,
/// which no newer copy of the object can make fail, and converging goes on in the same reconcile instead of
/// waiting for the watch to deliver the patched object (one reconcile and one stale-copy retry less per
/// new resource).
pub async fn with_finalizer<K, F, Fut>(ctx: &Context, object: Arc<K>, converge: F) -> Result<Action>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
    F: FnOnce(Arc<K>, bool) -> Fut,
    Fut: std::future::Future<Output = Result<Action>>,
{
    let api: Api<K> = Api::namespaced(
        ctx.client.clone(),
        object.meta().namespace.as_deref().unwrap_or_default(),
    );
    let ours = object.finalizers().iter().position(|f| f == super::FINALIZER);
    match (object.meta().deletion_timestamp.is_some(), ours) {
        (false, Some(_)) => converge(object, false).await,
        (false, None) => {
            let patch = serde_json::json!({
                "apiVersion": K::api_version(&()),
                "kind": K::kind(&()),
                // With the uid, an apply onto an object deleted and re-created under the same name since the
                // cache saw it fails (the uid is immutable) instead of putting our finalizer on the new one.
                "metadata": { "uid": object.meta().uid, "finalizers": [super::FINALIZER] },
            });
            api.patch(
                &object.name_any(),
                &PatchParams::apply(FINALIZER_MANAGER),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(Error::AddFinalizer)?;
            converge(object, false).await
        }
        (true, Some(index)) => {
            converge(object.clone(), true).await?;
            // Test-and-remove: only the finalizer this copy saw at this index goes.
            let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
                { "op": "test", "path": format!("/metadata/finalizers/{index}"), "value": super::FINALIZER },
                { "op": "remove", "path": format!("/metadata/finalizers/{index}") },
            ]))
            .expect("a JSON patch of two fixed operations");
            api.patch::<K>(&object.name_any(), &PatchParams::default(), &Patch::Json(patch))
                .await
                .map_err(Error::RemoveFinalizer)?;
            Ok(Action::await_change())
        }
        // Being deleted without our finalizer: nothing of ours is left to undo.
        (true, None) => Ok(Action::await_change()),
    }
}
