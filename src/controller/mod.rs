//! Controllers: one per kind. Each reconcile observes (agents, cache), plans (pure), applies the steps
//! through the agents and writes status.

pub mod apply;
pub mod context;
pub mod error;
pub mod failover_request;
pub mod rbd_mirror_pool;
pub mod realm;
pub mod secrets;
pub mod site;
pub mod status;
#[cfg(test)]
pub mod testing;
pub mod zone;

use std::{future::Future, sync::Arc};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    api::Api,
    runtime::{
        controller::{Action, Config as ControllerConfig},
        reflector::{self, reflector, ObjectRef},
        watcher, Controller, WatchStreamExt,
    },
    Client, Resource, ResourceExt,
};
use tracing::{debug, info, warn};

pub use context::{AgentConnector, Context, FixedAgents, Stores};
pub use error::{Error, Result};

use crate::{
    api::{CephRealm, CephSite, CephZone, FailoverPhase, FailoverRequest, RbdMirrorPool},
    metrics::Metrics,
};

/// Field manager of every write, and the Event reporter.
pub const FIELD_MANAGER: &str = "cephdr-operator";
/// The label on every object cephdr creates (with [`FIELD_MANAGER`] as its value).
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Finalizer on resources that configured something in Ceph.
pub const FINALIZER: &str = "cephdr.io/cleanup";

/// Where the controllers watch: every namespace, or one (which needs only namespaced RBAC).
#[derive(Clone, Debug, Default)]
pub enum WatchScope {
    #[default]
    AllNamespaces,
    Namespace(String),
}

impl WatchScope {
    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
    {
        match self {
            WatchScope::AllNamespaces => Api::all(client.clone()),
            WatchScope::Namespace(ns) => Api::namespaced(client.clone(), ns),
        }
    }
}

/// How the controllers run.
#[derive(Clone, Debug)]
pub struct Settings {
    pub scope: WatchScope,
    /// Reconciles in flight per controller. Unbounded, a cold start with a thousand resources opens a
    /// thousand connections to the API server and the agents at once (measured: 2,600 sockets and most of
    /// the operator's 190 MiB), and the API server only queues them. A resource whose site's agent times out
    /// holds its slot for that timeout.
    pub concurrency: u16,
}

impl Settings {
    /// The default number of reconciles in flight per controller.
    pub const DEFAULT_CONCURRENCY: u16 = 32;

    pub fn new(scope: WatchScope) -> Self {
        Settings {
            scope,
            concurrency: Self::DEFAULT_CONCURRENCY,
        }
    }
}

/// Runs every controller until `shutdown` resolves. Returns when all have stopped.
pub async fn run(
    client: Client,
    settings: Settings,
    agents: Arc<dyn AgentConnector>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let scope = settings.scope;
    let config = watcher::Config::default().any_semantic();
    let limits = ControllerConfig::default().concurrency(settings.concurrency);
    let sites = Controller::new(scope.api::<CephSite>(&client), config.clone()).with_config(limits.clone());
    let pools =
        Controller::new(scope.api::<RbdMirrorPool>(&client), config.clone()).with_config(limits.clone());
    let realms = Controller::new(scope.api::<CephRealm>(&client), config.clone()).with_config(limits.clone());
    let zones = Controller::new(scope.api::<CephZone>(&client), config.clone()).with_config(limits.clone());
    let requests =
        Controller::new(scope.api::<FailoverRequest>(&client), config.clone()).with_config(limits.clone());
    // Only the Secrets cephdr writes (labelled so): a watch of every Secret would cache the cluster's secrets.
    let owned_secrets = config.clone().labels(&format!("{MANAGED_BY}={FIELD_MANAGER}"));
    let (secret_store, secret_writer) = reflector::store();
    let secret_cache = reflector(
        secret_writer,
        watcher(scope.api::<Secret>(&client), owned_secrets.clone()),
    )
    .default_backoff()
    .for_each(|_| futures::future::ready(()));
    let stores = Stores {
        sites: sites.store(),
        pools: pools.store(),
        realms: realms.store(),
        zones: zones.store(),
        requests: requests.store(),
        owned_secrets: secret_store,
    };
    let ctx = Arc::new(Context::new(client.clone(), agents, stores.clone(), metrics));

    // A site that changes (becomes reachable, changes version) re-reconciles what lives on it.
    let pool_store = stores.pools.clone();
    let pools = pools.watches(
        scope.api::<CephSite>(&client),
        config.clone(),
        move |site: CephSite| {
            refs_where(&pool_store, |pool| {
                pool.namespace() == site.namespace()
                    && pool.spec.sites.iter().any(|s| s.site == site.name_any())
            })
        },
    );

    // A failover that starts or ends hands its pools over or back (see the pool controller's hold-off).
    let pool_store = stores.pools.clone();
    let pools = pools.watches(
        scope.api::<FailoverRequest>(&client),
        config.clone(),
        move |request: FailoverRequest| {
            refs_where(&pool_store, |pool| {
                pool.namespace() == request.namespace()
                    && request.spec.targets.rbd_mirror_pools.contains(&pool.name_any())
            })
        },
    );

    // A zone that changes re-reconciles its realm (the realm is created where the master zone lives).
    let realms = realms.watches(
        scope.api::<CephZone>(&client),
        config.clone(),
        |zone: CephZone| {
            let realm = ObjectRef::new(&zone.spec.realm);
            Some(match zone.namespace() {
                Some(ns) => realm.within(&ns),
                None => realm,
            })
        },
    );
    // A realm that changes (its id appears, a zonegroup is added) re-reconciles its zones; so does a site.
    let zone_store = stores.zones.clone();
    let zones = zones.watches(
        scope.api::<CephRealm>(&client),
        config.clone(),
        move |realm: CephRealm| {
            refs_where(&zone_store, |zone| {
                zone.namespace() == realm.namespace() && zone.spec.realm == realm.name_any()
            })
        },
    );
    let zone_store = stores.zones.clone();
    let zones = zones.watches(
        scope.api::<CephSite>(&client),
        config.clone(),
        move |site: CephSite| {
            refs_where(&zone_store, |zone| {
                zone.namespace() == site.namespace() && zone.spec.site == site.name_any()
            })
        },
    );

    // A pool or realm that changes (its status follows the sites) re-reconciles the requests targeting it.
    let request_store = stores.requests.clone();
    let requests = requests.watches(
        scope.api::<RbdMirrorPool>(&client),
        config.clone(),
        move |pool: RbdMirrorPool| {
            refs_where(&request_store, |request| {
                request.namespace() == pool.namespace()
                    && request.spec.targets.rbd_mirror_pools.contains(&pool.name_any())
            })
        },
    );
    let request_store = stores.requests.clone();
    let requests = requests.watches(
        scope.api::<CephRealm>(&client),
        config.clone(),
        move |realm: CephRealm| {
            refs_where(&request_store, |request| {
                request.namespace() == realm.namespace()
                    && request.spec.targets.realms.contains(&realm.name_any())
            })
        },
    );
    // A request that changes (finishes, above all) lets the ones waiting behind it on its targets go.
    let request_store = stores.requests.clone();
    let requests = requests.watches(
        scope.api::<FailoverRequest>(&client),
        config.clone(),
        move |changed: FailoverRequest| {
            refs_where(&request_store, |request| {
                request.namespace() == changed.namespace()
                    && request.name_any() != changed.name_any()
                    && request.spec.targets.overlap(&changed.spec.targets)
                    && request
                        .status
                        .as_ref()
                        .is_none_or(|s| s.phase == FailoverPhase::Pending)
            })
        },
    );

    // Every controller drains its in-flight reconciles when the same shutdown signal fires.
    let shutdown = shutdown.shared();
    let sites = sites
        .graceful_shutdown_on(shutdown.clone())
        .run(
            site::reconcile,
            error_policy::<CephSite>(site::CONTROLLER),
            ctx.clone(),
        )
        .for_each(log_result);
    let pools = pools
        .owns(scope.api::<Secret>(&client), owned_secrets.clone())
        .graceful_shutdown_on(shutdown.clone())
        .run(
            rbd_mirror_pool::reconcile,
            error_policy::<RbdMirrorPool>(rbd_mirror_pool::CONTROLLER),
            ctx.clone(),
        )
        .for_each(log_result);
    let realms = realms
        .owns(scope.api::<Secret>(&client), owned_secrets.clone())
        .graceful_shutdown_on(shutdown.clone())
        .run(
            realm::reconcile,
            error_policy::<CephRealm>(realm::CONTROLLER),
            ctx.clone(),
        )
        .for_each(log_result);
    let zones = zones
        .graceful_shutdown_on(shutdown.clone())
        .run(
            zone::reconcile,
            error_policy::<CephZone>(zone::CONTROLLER),
            ctx.clone(),
        )
        .for_each(log_result);
    let requests = requests
        .graceful_shutdown_on(shutdown.clone())
        .run(
            failover_request::reconcile,
            error_policy::<FailoverRequest>(failover_request::CONTROLLER),
            ctx.clone(),
        )
        .for_each(log_result);
    info!("controllers started");
    // The Secret cache has no end of its own: it stops with the controllers.
    tokio::select! {
        _ = async { tokio::join!(sites, pools, realms, zones, requests) } => {}
        _ = secret_cache => {}
    }
    info!("controllers stopped");
}

/// References to the cached objects that `keep` selects, for mapping a change of one kind to another.
fn refs_where<K>(store: &kube::runtime::reflector::Store<K>, keep: impl Fn(&K) -> bool) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .state()
        .iter()
        .filter(|object| keep(object))
        .map(|object| ObjectRef::from_obj(object.as_ref()))
        .collect()
}

/// How soon a reconcile that started from a stale copy of its object runs again (the watch delivers the
/// current one within milliseconds).
const STALE_OBJECT_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Permanent errors wait for a change of the object; others retry with per-object backoff.
fn error_policy<K: Resource>(controller: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |object, error, ctx| {
        if error.is_stale_object() {
            return Action::requeue(STALE_OBJECT_RETRY);
        }
        ctx.metrics.reconcile_failed(controller, error.reason());
        if error.is_permanent() {
            Action::await_change()
        } else {
            Action::requeue(ctx.next_backoff(object.as_ref()))
        }
    }
}

async fn log_result<K: Resource, Q: std::error::Error>(
    result: Result<(ObjectRef<K>, Action), kube::runtime::controller::Error<Error, Q>>,
) {
    match result {
        Ok(_) => {}
        Err(kube::runtime::controller::Error::ReconcilerFailed(error, object)) if error.is_stale_object() => {
            debug!(%object, "reconcile started from a stale copy of the object; retrying")
        }
        Err(error) => warn!(%error, "reconcile failed"),
    }
}
