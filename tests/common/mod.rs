//! What the integration tests share: a namespace of the real API server with the controllers running on
//! it against two simulated Ceph sites, which a test can stop and start again like an operator restart.

// Every test binary compiles its own copy of this module and uses only part of it.
#![allow(dead_code)]

use std::{collections::HashMap, fmt::Debug, sync::Arc, time::Duration};

use anyhow::{bail, Result};
use cephdr::{
    agent::{
        faults::FaultyAgent,
        sim::{SimulatedCluster, SimulatedWorld},
        ClusterAgent, Step,
    },
    api::{self, conditions, CephRealm, CephSite, CephZone, RbdMirrorPool},
    controller::{self, FixedAgents, WatchScope},
    metrics::Metrics,
};
use cephdr_e2e::{install_crds, shared_control_plane, unique_name};
use k8s_openapi::{api::core::v1::Namespace, apimachinery::pkg::apis::meta::v1::Condition};
use kube::{
    api::{Api, ObjectMeta, PostParams},
    Client, Resource,
};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::{sync::oneshot, task::JoinHandle};

/// How long anything the controllers do may take in these tests.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The pool [`mirrored`] sets up.
pub const POOL: &str = "rbd";

/// A namespace of the real API server with the controllers running on it against two simulated sites.
pub struct Bed {
    pub client: Client,
    pub ns: String,
    pub world: SimulatedWorld,
    pub a: Arc<SimulatedCluster>,
    pub b: Arc<SimulatedCluster>,
    /// The agents the controllers reach the sites through: the simulated clusters, recording every step
    /// that ran.
    agents: HashMap<String, Arc<FaultyAgent<SimulatedCluster>>>,
    metrics: Arc<Metrics>,
    running: Option<Controllers>,
}

struct Controllers {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Bed {
    /// A fresh namespace named after `prefix`, sites `site-a` and `site-b` as `CephSite`s, and the
    /// controllers running.
    pub async fn start(prefix: &str) -> Result<Bed> {
        // The controllers' logs, shown with a failing test's output (`RUST_LOG` overrides the filter).
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("cephdr=info,kube=warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
        let client = shared_control_plane().await?.client().await?;
        install_crds(&client, &api::crds()).await?;
        let ns = unique_name(prefix);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await?;
        let world = SimulatedWorld::new();
        world.set_lag(Duration::from_millis(100));
        let (a, b) = (world.add_site("site-a"), world.add_site("site-b"));
        let agents = HashMap::from([
            (
                "site-a".to_string(),
                Arc::new(FaultyAgent::new("site-a", a.clone())),
            ),
            (
                "site-b".to_string(),
                Arc::new(FaultyAgent::new("site-b", b.clone())),
            ),
        ]);
        let mut bed = Bed {
            client,
            ns,
            world,
            a,
            b,
            agents,
            metrics: Arc::new(Metrics::default()),
            running: None,
        };
        bed.start_controllers();
        for site in ["site-a", "site-b"] {
            bed.create::<CephSite>(json!({"metadata": {"name": site}, "spec": {"agent": {
                "url": format!("https://{site}.agents.invalid:7443"),
                "tokenSecretRef": {"name": format!("{site}-agent"), "key": "token"}}}}))
                .await?;
        }
        Ok(bed)
    }

    /// Starts the controllers (fresh caches, fresh backoff), as a new operator process would.
    pub fn start_controllers(&mut self) {
        let agents: HashMap<String, Arc<dyn ClusterAgent>> = self
            .agents
            .iter()
            .map(|(site, agent)| (site.clone(), agent.clone() as Arc<dyn ClusterAgent>))
            .collect();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(controller::run(
            self.client.clone(),
            controller::Settings::new(WatchScope::Namespace(self.ns.clone())),
            Arc::new(FixedAgents(agents)),
            self.metrics.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        self.running = Some(Controllers { stop, task });
    }

    /// Stops the controllers the way a terminating operator does: in-flight reconciles finish first.
    pub async fn stop_controllers(&mut self) -> Result<()> {
        if let Some(Controllers { stop, task }) = self.running.take() {
            let _ = stop.send(());
            tokio::time::timeout(PATIENCE, task).await??;
        }
        Ok(())
    }

    /// The steps that ran on `site` through the controllers, in order.
    pub fn steps_on(&self, site: &str) -> Vec<Step> {
        self.agents
            .get(site)
            .map(|agent| agent.executed_steps())
            .unwrap_or_default()
    }

    /// The metrics the controllers record, as `/metrics` renders them.
    pub fn metrics(&self) -> String {
        self.metrics.render()
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn create<K>(&self, mut manifest: serde_json::Value) -> Result<K>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + Debug,
    {
        manifest["apiVersion"] = json!(K::api_version(&()));
        manifest["kind"] = json!(K::kind(&()));
        let object: K = serde_json::from_value(manifest)?;
        Ok(self.api::<K>().create(&PostParams::default(), &object).await?)
    }

    /// Polls the object until `done` holds; fails with the last seen object after `timeout`.
    pub async fn wait<K>(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&K) -> bool,
    ) -> Result<K>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let current = self.api::<K>().get_opt(name).await?;
            if let Some(object) = &current {
                if done(object) {
                    return Ok(object.clone());
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{} {name}: not {what} after {timeout:?}; last seen: {current:#?}",
                    K::kind(&())
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn wait_gone<K>(&self, name: &str, timeout: Duration) -> Result<()>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        while let Some(object) = self.api::<K>().get_opt(name).await? {
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{} {name} still exists after {timeout:?}: {object:#?}",
                    K::kind(&())
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Creates the pool from `manifest`, creates the user's image `db` on site-a once the operator has
    /// created the pool there, and waits until the pool is Ready with the image replaying.
    pub async fn mirrored_pool(&self, manifest: serde_json::Value) -> Result<RbdMirrorPool> {
        let pool: RbdMirrorPool = self.create(manifest).await?;
        let name = pool.spec.pool.clone();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !self.a.rbd_pool(&name).await?.exists {
            if tokio::time::Instant::now() > deadline {
                bail!("the operator never created pool {name} on site-a");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.a.create_image(&name, "db")?;
        self.wait::<RbdMirrorPool>(&name, "Ready", PATIENCE, |p| {
            p.status
                .as_ref()
                .is_some_and(|st| ready(&st.conditions) && st.images.iter().any(|i| i.state == "replaying"))
        })
        .await
    }
}

impl Bed {
    /// Creates realm `production` with zones `us-east` (master, site-a) and `us-west` (site-b), and waits
    /// until the zones and the realm are Ready.
    pub async fn converged_realm(&self) -> Result<CephRealm> {
        self.create::<CephRealm>(realm_manifest()).await?;
        self.create::<CephZone>(zone_manifest("us-east", "site-a", true))
            .await?;
        self.create::<CephZone>(zone_manifest("us-west", "site-b", false))
            .await?;
        for zone in ["us-east", "us-west"] {
            self.wait::<CephZone>(zone, "Ready", PATIENCE, |z| {
                z.status.as_ref().is_some_and(|s| ready(&s.conditions))
            })
            .await?;
        }
        self.wait::<CephRealm>("production", "Ready", PATIENCE, |r| {
            r.status.as_ref().is_some_and(|s| ready(&s.conditions))
        })
        .await
    }
}

/// A bed named after `prefix` whose sites mirror pool `rbd` both ways (rbd-mirror on both), image `db`
/// primary on site-a and replaying on site-b.
pub async fn mirrored(prefix: &str) -> Result<Bed> {
    let bed = Bed::start(prefix).await?;
    bed.a.set_rbd_mirror_running(true)?;
    bed.b.set_rbd_mirror_running(true)?;
    bed.mirrored_pool(pool_manifest(POOL, "two-way", "Retain"))
        .await?;
    Ok(bed)
}

/// Whether image `db` of [`POOL`] is primary on the cluster (`None`: no such mirrored image).
pub async fn primary(cluster: &SimulatedCluster) -> Result<Option<bool>> {
    let pool = cluster.rbd_pool(POOL).await?;
    let image = pool.images.into_iter().find(|i| i.name == "db");
    Ok(image.and_then(|i| i.mirroring).map(|m| m.primary))
}

impl Drop for Bed {
    fn drop(&mut self) {
        if let Some(Controllers { stop, task }) = self.running.take() {
            let _ = stop.send(());
            task.abort();
        }
    }
}

pub fn ready(conds: &[Condition]) -> bool {
    conditions::is_true(conds, conditions::READY)
}

/// An `RbdMirrorPool` named like its Ceph pool, `site-a` primary, image `db` mirrored by snapshots every
/// 15 minutes.
pub fn pool_manifest(name: &str, direction: &str, deletion: &str) -> serde_json::Value {
    json!({"metadata": {"name": name}, "spec": {
        "pool": name, "mode": "image", "direction": direction, "deletionPolicy": deletion,
        "sites": [{"site": "site-a", "role": "primary"}, {"site": "site-b", "role": "secondary"}],
        "images": {"mirrorMode": "snapshot", "names": ["db"]},
        "snapshotSchedules": [{"interval": "15m"}], "rpoSeconds": 1800}})
}

/// A `CephRealm` named `production` with one zonegroup, `us`.
pub fn realm_manifest() -> serde_json::Value {
    json!({"metadata": {"name": "production"}, "spec": {"zoneGroups": [{"name": "us", "master": true}]}})
}

/// A `CephZone` of realm `production`, zonegroup `us`, on `site`, with a 5-minute RPO.
pub fn zone_manifest(name: &str, site: &str, master: bool) -> serde_json::Value {
    json!({"metadata": {"name": name}, "spec": {
        "realm": "production", "zoneGroup": "us", "site": site, "master": master,
        "endpoints": [format!("http://{site}.rgw.invalid:8080")], "rpoSeconds": 300}})
}
