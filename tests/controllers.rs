//! The controllers against a real kube-apiserver, with simulated Ceph sites: resources converge, simulated
//! Ceph ends in the state the spec asks for, status and conditions say so, deletion undoes it.

use std::{collections::HashMap, fmt::Debug, sync::Arc, time::Duration};

use anyhow::{bail, Context as _, Result};
use cephdr::{
    agent::{
        sim::{SimulatedCluster, SimulatedWorld},
        ClusterAgent, PeerDirection, PoolMirrorMode,
    },
    api::{self, conditions, CephRealm, CephSite, CephZone, RbdMirrorPool},
    controller::{self, FixedAgents, WatchScope},
    metrics::Metrics,
};
use cephdr_e2e::{install_crds, shared_control_plane, unique_name};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    api::{Api, DeleteParams, ObjectMeta, PostParams},
    Client, Resource,
};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::{sync::oneshot, task::JoinHandle};

/// A namespace of the real API server with the controllers running on it against two simulated sites.
struct Bed {
    client: Client,
    ns: String,
    world: SimulatedWorld,
    a: Arc<SimulatedCluster>,
    b: Arc<SimulatedCluster>,
    stop: Option<oneshot::Sender<()>>,
    controllers: Option<JoinHandle<()>>,
}

impl Bed {
    async fn start() -> Result<Bed> {
        let client = shared_control_plane().await?.client().await?;
        install_crds(&client, &api::crds()).await?;
        let ns = unique_name("controllers");
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: ObjectMeta {
                        name: Some(ns.clone()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await?;
        let world = SimulatedWorld::new();
        world.set_lag(Duration::from_millis(100));
        let a = world.add_site("site-a");
        let b = world.add_site("site-b");
        let agents: HashMap<String, Arc<dyn ClusterAgent>> = HashMap::from([
            ("site-a".to_string(), a.clone() as Arc<dyn ClusterAgent>),
            ("site-b".to_string(), b.clone() as Arc<dyn ClusterAgent>),
        ]);
        let (stop, stopped) = oneshot::channel::<()>();
        let controllers = tokio::spawn(controller::run(
            client.clone(),
            WatchScope::Namespace(ns.clone()),
            Arc::new(FixedAgents(agents)),
            Arc::new(Metrics::default()),
            async move {
                let _ = stopped.await;
            },
        ));
        let bed = Bed {
            client,
            ns,
            world,
            a,
            b,
            stop: Some(stop),
            controllers: Some(controllers),
        };
        for site in ["site-a", "site-b"] {
            bed.create::<CephSite>(json!({"metadata": {"name": site}, "spec": {"agent": {
                "url": format!("https://{site}.agents.invalid:7443"),
                "tokenSecretRef": {"name": format!("{site}-agent"), "key": "token"}}}}))
                .await?;
        }
        Ok(bed)
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn create<K>(&self, mut manifest: serde_json::Value) -> Result<K>
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
    async fn wait<K>(&self, name: &str, what: &str, timeout: Duration, done: impl Fn(&K) -> bool) -> Result<K>
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

    async fn wait_gone<K>(&self, name: &str, timeout: Duration) -> Result<()>
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
}

impl Drop for Bed {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.controllers.take() {
            task.abort();
        }
    }
}

fn ready(conds: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> bool {
    conditions::is_true(conds, conditions::READY)
}

#[tokio::test]
async fn site_reports_identity_and_becomes_unready_when_its_agent_is_unreachable() -> Result<()> {
    let bed = Bed::start().await?;
    let site = bed
        .wait::<CephSite>("site-a", "Ready", Duration::from_secs(20), |s| {
            s.status.as_ref().is_some_and(|st| ready(&st.conditions))
        })
        .await?;
    let status = site.status.clone().context("status")?;
    assert_eq!(status.reachable, Some(true));
    assert_eq!(
        status.fsid.as_deref(),
        Some(bed.a.cluster_info().await?.fsid.as_str())
    );
    assert_eq!(status.ceph_version.as_deref(), Some("16.2.15"));
    assert_eq!(status.observed_generation, site.metadata.generation);

    bed.world.set_down("site-a", true);
    // Any change makes the controller look again; a label is the least intrusive one.
    let mut touched = site.clone();
    touched.metadata.labels = Some([("touched".to_string(), "1".to_string())].into());
    touched.metadata.managed_fields = None;
    bed.api::<CephSite>()
        .replace("site-a", &PostParams::default(), &touched)
        .await?;
    let down = bed
        .wait::<CephSite>("site-a", "unreachable", Duration::from_secs(20), |s| {
            s.status.as_ref().is_some_and(|st| st.reachable == Some(false))
        })
        .await?;
    let ready = down
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == conditions::READY)
        .context("Ready")?;
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason, "AgentUnreachable");
    assert!(
        ready.message.contains("site-a"),
        "the message names the site: {}",
        ready.message
    );
    Ok(())
}

fn pool_manifest(name: &str, direction: &str, deletion: &str) -> serde_json::Value {
    json!({"metadata": {"name": name}, "spec": {
        "pool": name, "mode": "image", "direction": direction, "deletionPolicy": deletion,
        "sites": [{"site": "site-a", "role": "primary"}, {"site": "site-b", "role": "secondary"}],
        "images": {"mirrorMode": "snapshot", "names": ["db"]},
        "snapshotSchedules": [{"interval": "15m"}], "rpoSeconds": 1800}})
}

async fn wait_pool_ready(bed: &Bed, name: &str) -> Result<RbdMirrorPool> {
    bed.wait::<RbdMirrorPool>(name, "Ready", Duration::from_secs(30), |p| {
        p.status
            .as_ref()
            .is_some_and(|st| ready(&st.conditions) && st.images.iter().any(|i| i.state == "replaying"))
    })
    .await
}

#[tokio::test]
async fn rbd_mirror_pool_converges_in_simulated_ceph_and_reports_images() -> Result<()> {
    let bed = Bed::start().await?;
    bed.b.set_rbd_mirror_running(true)?;
    bed.create::<RbdMirrorPool>(pool_manifest("rbd", "one-way", "Delete"))
        .await?;
    // The user's image appears on the primary once the operator has created the pool.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !bed.a.rbd_pool("rbd").await?.exists {
        if tokio::time::Instant::now() > deadline {
            bail!("the operator never created pool rbd on site-a");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bed.a.create_image("rbd", "db")?;
    let pool = wait_pool_ready(&bed, "rbd").await?;
    let status = pool.status.clone().context("status")?;
    assert_eq!(status.primary_site.as_deref(), Some("site-a"));
    assert_eq!(status.images.len(), 1);
    assert_eq!(status.images[0].primary_site.as_deref(), Some("site-a"));
    assert!(
        status
            .daemons
            .iter()
            .any(|d| d.site == "site-b" && d.health == "OK"),
        "{:?}",
        status.daemons
    );

    // Simulated Ceph is in the state the spec asks for.
    let on_a = bed.a.rbd_pool("rbd").await?;
    let on_b = bed.b.rbd_pool("rbd").await?;
    assert_eq!(on_a.mode, PoolMirrorMode::Image);
    assert_eq!(on_b.mode, PoolMirrorMode::Image);
    assert!(
        on_b.peers
            .iter()
            .any(|p| p.site_name == "site-a" && p.direction == PeerDirection::RxTx),
        "{:?}",
        on_b.peers
    );
    assert!(on_a
        .images
        .iter()
        .any(|i| i.name == "db" && i.mirroring.as_ref().is_some_and(|m| m.primary)));
    assert!(on_b
        .images
        .iter()
        .any(|i| i.name == "db" && i.mirroring.as_ref().is_some_and(|m| !m.primary)));
    assert!(
        on_a.schedules
            .iter()
            .any(|s| s.interval == "15m" && s.image.is_none()),
        "{:?}",
        on_a.schedules
    );

    // The bootstrap token lives in a Secret owned by the pool, never in status.
    let secret = bed
        .api::<Secret>()
        .get(&cephdr::controller::rbd_mirror_pool::token_secret_name(&pool))
        .await?;
    assert!(secret
        .metadata
        .owner_references
        .unwrap_or_default()
        .iter()
        .any(|o| o.kind == "RbdMirrorPool" && o.name == "rbd"));
    let token = String::from_utf8(
        secret
            .data
            .unwrap_or_default()
            .remove("site-a")
            .context("token of site-a")?
            .0,
    )?;
    let shown = serde_json::to_string(&bed.api::<RbdMirrorPool>().get("rbd").await?)?;
    assert!(
        !shown.contains(&token),
        "the token must not appear in the resource"
    );
    Ok(())
}

#[tokio::test]
async fn deleting_a_pool_undoes_mirroring_unless_retained() -> Result<()> {
    let bed = Bed::start().await?;
    bed.b.set_rbd_mirror_running(true)?;
    bed.create::<RbdMirrorPool>(pool_manifest("gone", "one-way", "Delete"))
        .await?;
    bed.create::<RbdMirrorPool>(pool_manifest("kept", "one-way", "Retain"))
        .await?;
    for pool in ["gone", "kept"] {
        bed.wait::<RbdMirrorPool>(pool, "peered", Duration::from_secs(30), |p| {
            p.status.as_ref().is_some_and(|s| !s.peers.is_empty())
        })
        .await?;
    }
    for pool in ["gone", "kept"] {
        bed.api::<RbdMirrorPool>()
            .delete(pool, &DeleteParams::default())
            .await?;
        bed.wait_gone::<RbdMirrorPool>(pool, Duration::from_secs(30))
            .await?;
    }
    let gone = bed.b.rbd_pool("gone").await?;
    assert_eq!(gone.mode, PoolMirrorMode::Disabled, "Delete disables mirroring");
    assert!(gone.peers.is_empty(), "Delete removes peers: {:?}", gone.peers);
    assert!(gone.exists, "the pool and its data stay");
    let kept = bed.b.rbd_pool("kept").await?;
    assert_eq!(kept.mode, PoolMirrorMode::Image, "Retain leaves Ceph as it was");
    assert!(!kept.peers.is_empty());
    Ok(())
}

fn zone_manifest(name: &str, site: &str, master: bool) -> serde_json::Value {
    json!({"metadata": {"name": name}, "spec": {
        "realm": "production", "zoneGroup": "us", "site": site, "master": master,
        "endpoints": [format!("http://{site}.rgw.invalid:8080")], "rpoSeconds": 300}})
}

#[tokio::test]
async fn realm_and_zones_converge_to_one_period_on_both_sites() -> Result<()> {
    let bed = Bed::start().await?;
    bed.create::<CephRealm>(
        json!({"metadata": {"name": "production"}, "spec": {"zoneGroups": [{"name": "us", "master": true}]}}),
    )
    .await?;
    bed.create::<CephZone>(zone_manifest("us-east", "site-a", true))
        .await?;
    bed.create::<CephZone>(zone_manifest("us-west", "site-b", false))
        .await?;
    for zone in ["us-east", "us-west"] {
        bed.wait::<CephZone>(zone, "Ready", Duration::from_secs(40), |z| {
            z.status.as_ref().is_some_and(|s| ready(&s.conditions))
        })
        .await?;
    }
    let realm = bed
        .wait::<CephRealm>("production", "Ready", Duration::from_secs(20), |r| {
            r.status.as_ref().is_some_and(|s| ready(&s.conditions))
        })
        .await?;
    let realm_status = realm.status.context("status")?;
    assert_eq!(realm_status.master_zone.as_deref(), Some("us-east"));
    assert!(bed
        .api::<Secret>()
        .get(realm_status.sync_user_secret.as_deref().context("secret")?)
        .await
        .is_ok());

    let on_a = bed.a.rgw_realm("production").await?;
    let on_b = bed.b.rgw_realm("production").await?;
    assert!(
        on_a.realm_id.is_some() && on_a.realm_id == on_b.realm_id,
        "both sites share one realm"
    );
    let (pa, pb) = (
        on_a.period.context("period on A")?,
        on_b.period.context("period on B")?,
    );
    assert_eq!(
        (pa.id.clone(), pa.epoch),
        (pb.id.clone(), pb.epoch),
        "both sites hold the same period"
    );
    assert_eq!(pa.master_zone, "us-east");
    let group = pa
        .zone_groups
        .iter()
        .find(|g| g.name == "us")
        .context("zonegroup us")?;
    let mut zones: Vec<_> = group.zones.iter().map(|z| z.name.as_str()).collect();
    zones.sort();
    assert_eq!(zones, ["us-east", "us-west"]);
    let west = bed
        .api::<CephZone>()
        .get("us-west")
        .await?
        .status
        .context("status")?;
    assert_eq!(west.role, Some(api::zone::ZoneRole::Secondary));
    Ok(())
}

#[tokio::test]
async fn two_master_zones_in_one_zonegroup_are_refused_with_a_condition() -> Result<()> {
    let bed = Bed::start().await?;
    bed.create::<CephRealm>(
        json!({"metadata": {"name": "production"}, "spec": {"zoneGroups": [{"name": "us", "master": true}]}}),
    )
    .await?;
    bed.create::<CephZone>(zone_manifest("us-east", "site-a", true))
        .await?;
    bed.create::<CephZone>(zone_manifest("us-west", "site-b", true))
        .await?;
    let realm = bed
        .wait::<CephRealm>("production", "in conflict", Duration::from_secs(20), |r| {
            r.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.reason == conditions::reason::CONFLICT)
            })
        })
        .await?;
    let conflict = realm
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.reason == conditions::reason::CONFLICT)
        .unwrap();
    assert!(
        conflict.message.contains("us-east") && conflict.message.contains("us-west"),
        "{}",
        conflict.message
    );
    assert!(
        bed.a.rgw_realm("production").await?.realm_id.is_none(),
        "nothing is created while the spec conflicts"
    );
    Ok(())
}
