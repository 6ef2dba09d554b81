//! The controllers against a real kube-apiserver, with simulated Ceph sites: resources converge, simulated
//! Ceph ends in the state the spec asks for, status and conditions say so, deletion undoes it.

mod common;

use std::time::Duration;

use anyhow::{Context as _, Result};
use cephdr::{
    agent::{ClusterAgent, PeerDirection, PoolMirrorMode},
    api::{self, conditions, CephRealm, CephSite, CephZone, RbdMirrorPool},
};
use common::{pool_manifest, ready, realm_manifest, zone_manifest, Bed};
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Condition};
use kube::api::{DeleteParams, Patch, PatchParams};

#[tokio::test]
async fn site_reports_identity_and_becomes_unready_when_its_agent_is_unreachable() -> Result<()> {
    let bed = Bed::start("controllers").await?;
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
    // Any change makes the controller look again; a label is the least intrusive one. A merge patch, not
    // a replace: the controller may have written status since `site` was read (a 409 otherwise).
    let touched = serde_json::json!({"metadata": {"labels": {"touched": "1"}}});
    bed.api::<CephSite>()
        .patch("site-a", &PatchParams::default(), &Patch::Merge(&touched))
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

#[tokio::test]
async fn rbd_mirror_pool_converges_in_simulated_ceph_and_reports_images() -> Result<()> {
    let bed = Bed::start("controllers").await?;
    bed.b.set_rbd_mirror_running(true)?;
    // The user's image appears on the primary once the operator has created the pool.
    let pool = bed
        .mirrored_pool(pool_manifest("rbd", "one-way", "Delete"))
        .await?;
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
    let bed = Bed::start("controllers").await?;
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

#[tokio::test]
async fn realm_and_zones_converge_to_one_period_on_both_sites() -> Result<()> {
    let bed = Bed::start("controllers").await?;
    let realm = bed.converged_realm().await?;
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
    let bed = Bed::start("controllers").await?;
    // The zones first: a realm that already exists when only one master zone does is created in Ceph at
    // once (its first reconcile no longer waits for the finalizer's watch event), before the second appears.
    bed.create::<CephZone>(zone_manifest("us-east", "site-a", true))
        .await?;
    bed.create::<CephZone>(zone_manifest("us-west", "site-b", true))
        .await?;
    bed.create::<CephRealm>(realm_manifest()).await?;
    let conflict =
        condition_with_reason::<CephRealm>(&bed, "production", conditions::reason::CONFLICT, |r| {
            r.status.as_ref().map(|s| s.conditions.as_slice())
        })
        .await?;
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

#[tokio::test]
async fn a_delta_sync_pool_whose_primary_annotation_names_an_unknown_site_says_so_and_touches_nothing(
) -> Result<()> {
    let bed = Bed::start("controllers").await?;
    let mut manifest = pool_manifest("typo", "one-way", "Delete");
    manifest["spec"]["engine"] = "delta-sync".into();
    manifest["metadata"]["annotations"] =
        serde_json::json!({api::rbd_mirror_pool::PRIMARY_SITE_ANNOTATION: "site-c"});
    bed.create::<RbdMirrorPool>(manifest).await?;
    let ready = condition_with_reason::<RbdMirrorPool>(&bed, "typo", conditions::reason::INVALID_SPEC, |p| {
        p.status.as_ref().map(|s| s.conditions.as_slice())
    })
    .await?;
    assert_eq!(
        (ready.type_.as_str(), ready.status.as_str()),
        (conditions::READY, "False")
    );
    assert!(ready.message.contains("site-c"), "{}", ready.message);
    assert!(
        !bed.b.rbd_pool("typo").await?.exists,
        "nothing is created on the copy site while the primary is unknown"
    );
    Ok(())
}

/// Waits until `name`'s status holds a condition with `reason`, and returns the first such condition.
async fn condition_with_reason<K>(
    bed: &Bed,
    name: &str,
    reason: &str,
    conditions_of: impl Fn(&K) -> Option<&[Condition]>,
) -> Result<Condition>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let with_reason = |object: &K| {
        conditions_of(object)
            .unwrap_or_default()
            .iter()
            .find(|c| c.reason == reason)
            .cloned()
    };
    let object = bed
        .wait::<K>(name, reason, Duration::from_secs(20), |o| {
            with_reason(o).is_some()
        })
        .await?;
    with_reason(&object).context("the condition went away")
}
