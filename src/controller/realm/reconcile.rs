//! `CephRealm` effects: the sync user's Secret, the realm on the master zone's site, status.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::{runtime::controller::Action, Api, Resource, ResourceExt};
use tracing::instrument;

use super::plan::{self, MemberZone, Observed, ZoneGroupPolicy};
use crate::{
    agent::{AgentError, RgwRealmState},
    api::{CephRealm, CephZone},
    controller::{
        apply::{execute_plan, with_finalizer},
        context::Context,
        error::Result,
        secrets, status,
    },
};

pub const CONTROLLER: &str = "cephrealm";

/// The Secret holding the sync user's keys: the one the spec names, or `<realm>-sync-user`, generated.
pub fn sync_user_secret_name(realm: &CephRealm) -> String {
    realm
        .spec
        .sync_user_secret_ref
        .as_ref()
        .map(|r| r.name.clone())
        .unwrap_or_else(|| format!("{}-sync-user", realm.name_any()))
}

/// The `CephZone`s of `realm` among `zones` (same namespace), as the realm planner sees them.
pub fn member_zones<'a>(realm: &CephRealm, zones: impl IntoIterator<Item = &'a CephZone>) -> Vec<MemberZone> {
    zones
        .into_iter()
        .filter(|z| z.namespace() == realm.namespace() && z.spec.realm == realm.name_any())
        .map(|z| MemberZone {
            zone: z.zone_name(),
            zone_group: z.spec.zone_group.clone(),
            site: z.spec.site.clone(),
            master: z.spec.master,
            endpoints: z.spec.endpoints.clone(),
        })
        .collect()
}

#[instrument(skip_all, fields(realm = %realm.name_any(), namespace = realm.namespace().unwrap_or_default(), generation = realm.metadata.generation))]
pub async fn reconcile(realm: Arc<CephRealm>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    with_finalizer(&ctx, realm, |realm, deleting| {
        let ctx = ctx.clone();
        async move { converge(&realm, &ctx, deleting).await }
    })
    .await
}

async fn converge(realm: &CephRealm, ctx: &Context, deleting: bool) -> Result<Action> {
    let namespace = realm.namespace().unwrap_or_default();
    let secret_name = sync_user_secret_name(realm);
    if !deleting && realm.spec.sync_user_secret_ref.is_none() {
        secrets::ensure_system_keys(&ctx.client, realm, &namespace, &secret_name).await?;
    }
    let observed = observe(realm, ctx, deleting).await;
    let mut realm_plan = plan::plan(&realm.spec, &observed, Timestamp::now());
    let outcome = execute_plan(ctx, realm, CONTROLLER, &mut realm_plan.plan).await;

    let now = Timestamp::now();
    let mut new_status = realm_plan.status;
    new_status.observed_generation = realm.meta().generation;
    new_status.sync_user_secret = Some(secret_name);
    new_status.conditions = status::complete_conditions(realm, realm_plan.plan.conditions.clone(), now);
    status::apply(
        &Api::namespaced(ctx.client.clone(), &namespace),
        realm,
        &new_status,
    )
    .await?;
    outcome?;
    if deleting && !realm_plan.cleanup_complete {
        return Err(crate::controller::Error::CleanupPending(
            realm_plan.plan.pending(),
        ));
    }
    ctx.reset_backoff(realm);
    Ok(Action::requeue(realm_plan.plan.requeue))
}

/// Observes the realm on the site of the master zone of the master zonegroup, when one is declared.
async fn observe(realm: &CephRealm, ctx: &Context, deleting: bool) -> Observed {
    let zones = member_zones(realm, ctx.stores.zones.state().iter().map(AsRef::as_ref));
    let last_master = realm.status.as_ref().and_then(|s| s.master_zone.clone());
    let master_site =
        plan::acting_master(&realm.spec, &zones, last_master.as_deref()).map(|z| z.site.clone());
    let master_state = match master_site {
        None => None,
        Some(site) => Some(observe_site(realm, ctx, &site).await),
    };
    let sites_holding_realm = if deleting {
        sites_holding_realm(realm, ctx).await
    } else {
        Vec::new()
    };
    Observed {
        realm: realm.name_any(),
        zones,
        master_site: master_state,
        last_master,
        sites_holding_realm,
        deleting,
    }
}

/// Every `CephSite` of the namespace whose cluster has the realm. A site that cannot be asked counts as
/// holding it: its DeleteRealm step then fails and the finalizer stays until it answers.
async fn sites_holding_realm(realm: &CephRealm, ctx: &Context) -> Vec<String> {
    let mut holding = Vec::new();
    for site in ctx
        .stores
        .sites
        .state()
        .iter()
        .filter(|s| s.namespace() == realm.namespace())
    {
        let has_realm = match ctx.agents.connect(site).await {
            Ok(agent) => agent
                .rgw_realm(&realm.name_any())
                .await
                .map(|r| r.realm_id.is_some())
                .unwrap_or(true),
            Err(_) => true,
        };
        if has_realm {
            holding.push(site.name_any());
        }
    }
    holding
}

async fn observe_site(
    realm: &CephRealm,
    ctx: &Context,
    site: &str,
) -> Result<(RgwRealmState, Vec<ZoneGroupPolicy>), AgentError> {
    let agent = ctx
        .agent(&realm.namespace().unwrap_or_default(), site)
        .await
        .map_err(|e| e.into_agent_error(site))?;
    let name = realm.name_any();
    let state = agent.rgw_realm(&name).await?;
    let mut policies = Vec::new();
    if state.realm_id.is_some() {
        for group in &realm.spec.zone_groups {
            let exists = state
                .period
                .as_ref()
                .is_some_and(|p| p.zone_groups.iter().any(|g| g.name == group.name));
            if exists {
                let policy = agent.rgw_sync_policy(&name, &group.name).await?;
                policies.push((group.name.clone(), policy));
            }
        }
    }
    Ok((state, policies))
}
