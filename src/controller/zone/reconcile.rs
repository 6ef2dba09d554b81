//! `CephZone` effects: gather what the zone needs from its realm, observe its site, run the plan, status.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::{
    runtime::{controller::Action, events::EventType, reflector::ObjectRef},
    Api, Resource, ResourceExt,
};
use tracing::instrument;

use super::plan::{self, Observed, RealmContext, RealmMaster};
use crate::{
    api::{conditions, CephRealm, CephZone},
    controller::{
        apply::{execute_plan, publish_event, with_finalizer},
        context::Context,
        error::{Error, Result},
        realm::sync_user_secret_name,
        secrets, status,
    },
};

pub const CONTROLLER: &str = "cephzone";

#[instrument(skip_all, fields(zone = %zone.name_any(), namespace = zone.namespace().unwrap_or_default(), generation = zone.metadata.generation))]
pub async fn reconcile(zone: Arc<CephZone>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    with_finalizer(&ctx, zone, |zone, deleting| {
        let ctx = ctx.clone();
        async move { converge(&zone, &ctx, deleting).await }
    })
    .await
}

async fn converge(zone: &CephZone, ctx: &Context, deleting: bool) -> Result<Action> {
    let namespace = zone.namespace().unwrap_or_default();
    let observed = observe(zone, ctx, deleting).await?;
    let mut zone_plan = plan::plan(&zone.spec, &observed, Timestamp::now());
    let outcome = execute_plan(ctx, zone, CONTROLLER, &mut zone_plan.plan).await;

    let now = Timestamp::now();
    let mut new_status = zone_plan.status;
    new_status.observed_generation = zone.meta().generation;
    new_status.conditions = status::complete_conditions(zone, zone_plan.plan.conditions.clone(), now);
    if let Some(sync) = &new_status.sync {
        let behind = sync.metadata.as_ref().map_or(0, |m| m.behind_shards)
            + sync.data.iter().map(|d| d.behind_shards).sum::<u32>();
        ctx.metrics.set_rgw_sync(
            &zone.zone_name(),
            behind,
            new_status.lag_seconds.unwrap_or(0) as f64,
        );
    }
    let wedged = conditions::is_true(&new_status.conditions, "Wedged");
    ctx.metrics
        .set_rgw_zone(&zone.zone_name(), zone.spec.rpo_seconds, wedged);
    let became_wedged = wedged && !conditions::is_true(zone_conditions(zone), "Wedged");
    if became_wedged {
        let message = new_status
            .conditions
            .iter()
            .find(|c| c.type_ == "Wedged")
            .map(|c| c.message.clone())
            .unwrap_or_default();
        publish_event(ctx, zone, EventType::Warning, "SyncWedged", "Observe", message).await;
    }
    status::apply(
        &Api::namespaced(ctx.client.clone(), &namespace),
        zone,
        &new_status,
    )
    .await?;
    outcome?;
    if deleting && !zone_plan.cleanup_complete {
        return Err(Error::CleanupPending(zone_plan.plan.pending()));
    }
    ctx.reset_backoff(zone);
    Ok(Action::requeue(zone_plan.plan.requeue))
}

fn zone_conditions(zone: &CephZone) -> &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition] {
    zone.status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default()
}

async fn observe(zone: &CephZone, ctx: &Context, deleting: bool) -> Result<Observed> {
    let namespace = zone.namespace().unwrap_or_default();
    let realm = ctx
        .stores
        .realms
        .get(&ObjectRef::<CephRealm>::new(&zone.spec.realm).within(&namespace));
    let context = realm_context(zone, ctx, realm.as_deref()).await?;
    let agent = ctx.agent(&namespace, &zone.spec.site).await;
    let zone_name = zone.zone_name();
    let (local, sync) = match agent {
        Err(e) => (Err(e.into_agent_error(&zone.spec.site)), None),
        Ok(agent) => {
            let local = agent.rgw_realm(&zone.spec.realm).await;
            // Only a zone in the committed period that is not its zonegroup's master syncs from others.
            let syncs = local
                .as_ref()
                .ok()
                .and_then(|l| l.period.as_ref())
                .is_some_and(|period| {
                    period
                        .zone_groups
                        .iter()
                        .any(|g| g.zones.iter().any(|z| z.name == zone_name) && g.master_zone != zone_name)
                });
            let sync = if syncs {
                Some(agent.rgw_sync_status(&zone.spec.realm, &zone_name).await)
            } else {
                None
            };
            (local, sync)
        }
    };
    let mut observed = Observed {
        zone: zone_name,
        realm: zone.spec.realm.clone(),
        site: zone.spec.site.clone(),
        context,
        local,
        sync,
        previous: zone.status.clone(),
        deleting,
        period_master: None,
    };
    if let Some(site) = plan::period_master_site_to_read(&zone.spec, &observed) {
        observed.period_master = Some(match ctx.agent(&namespace, &site).await {
            Ok(agent) => agent.rgw_realm(&zone.spec.realm).await,
            Err(e) => Err(e.into_agent_error(&site)),
        });
    }
    Ok(observed)
}

async fn realm_context(zone: &CephZone, ctx: &Context, realm: Option<&CephRealm>) -> Result<RealmContext> {
    let namespace = zone.namespace().unwrap_or_default();
    let siblings: Vec<Arc<CephZone>> = ctx
        .stores
        .zones
        .state()
        .into_iter()
        .filter(|z| {
            z.namespace() == zone.namespace()
                && z.spec.realm == zone.spec.realm
                && z.spec.zone_group == zone.spec.zone_group
                && z.name_any() != zone.name_any()
        })
        .collect();
    let zone_sites = ctx
        .stores
        .zones
        .state()
        .into_iter()
        .filter(|z| z.namespace() == zone.namespace() && z.spec.realm == zone.spec.realm)
        .map(|z| (z.zone_name(), z.spec.site.clone()))
        .collect();
    let Some(realm) = realm else {
        return Ok(RealmContext {
            realm_id: None,
            zone_group_declared: false,
            keys: None,
            master_endpoint: None,
            other_masters: vec![],
            realm_master: None,
            zone_sites,
        });
    };
    let master_group = realm.spec.master_zone_group().map(|g| g.name.as_str());
    let realm_master = ctx
        .stores
        .zones
        .state()
        .into_iter()
        .find(|z| {
            z.namespace() == zone.namespace()
                && z.spec.realm == zone.spec.realm
                && z.spec.master
                && Some(z.spec.zone_group.as_str()) == master_group
        })
        .map(|z| RealmMaster {
            zone: z.zone_name(),
            site: z.spec.site.clone(),
            endpoint: z.spec.endpoints.first().cloned(),
        });
    let keys = match secrets::read_system_keys(&ctx.client, &namespace, &sync_user_secret_name(realm)).await {
        Ok(keys) => Some(keys),
        Err(Error::SecretMissing { .. }) => None,
        Err(other) => return Err(other),
    };
    Ok(RealmContext {
        realm_id: realm.status.as_ref().and_then(|s| s.realm_id.clone()),
        zone_group_declared: realm
            .spec
            .zone_groups
            .iter()
            .any(|g| g.name == zone.spec.zone_group),
        keys,
        master_endpoint: siblings
            .iter()
            .chain(std::iter::once(&Arc::new(zone.clone())))
            .find(|z| z.spec.master)
            .and_then(|z| z.spec.endpoints.first().cloned()),
        other_masters: siblings
            .iter()
            .filter(|z| z.spec.master)
            .map(|z| z.name_any())
            .collect(),
        realm_master,
        zone_sites,
    })
}
