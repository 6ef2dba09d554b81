//! Running planned steps through the sites' agents, and telling humans when one fails.

use std::time::Instant;

use kube::{
    runtime::events::{Event, EventType},
    Resource,
};
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

/// Wraps a converge function in the cleanup finalizer: `converge(object, deleting)`.
pub async fn with_finalizer<K, F, Fut>(
    ctx: &Context,
    object: std::sync::Arc<K>,
    converge: F,
) -> Result<kube::runtime::controller::Action>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    F: Fn(std::sync::Arc<K>, bool) -> Fut,
    Fut: std::future::Future<Output = Result<kube::runtime::controller::Action>>,
{
    let api: kube::Api<K> = kube::Api::namespaced(
        ctx.client.clone(),
        object.meta().namespace.as_deref().unwrap_or_default(),
    );
    kube::runtime::finalizer(&api, super::FINALIZER, object, |event| async {
        match event {
            kube::runtime::finalizer::Event::Apply(object) => converge(object, false).await,
            kube::runtime::finalizer::Event::Cleanup(object) => converge(object, true).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}
