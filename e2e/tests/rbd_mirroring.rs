//! RBD mirroring configured by cephdr alone on two real Ceph sites: an `RbdMirrorPool` creates the pool,
//! exchanges bootstrap tokens, enables snapshot mirroring and its schedule; bytes written on A read back
//! identical on B; deleting the resource undoes the configuration in Ceph.

use anyhow::Result;
use cephdr::{api::RbdMirrorPool, controller::rbd_mirror_pool::token_secret_name};
use cephdr_e2e::{
    operator::{OperatorStack, CONVERGE},
    process::random_hex,
};
use k8s_openapi::api::core::v1::Secret;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn rbd_mirror_pool_replicates_real_images_and_deletion_disables_mirroring() -> Result<()> {
    let (stack, sites) = OperatorStack::on_rbd_mirror_sites("rbd-e2e").await?;
    let pool = format!("rbd{}", random_hex(3)?);
    let name = "mirrored";
    let (mirrored, source) = stack
        .mirrored_image([&sites.a, &sites.b], name, &pool, "db", 16, json!({}))
        .await?;
    let status = mirrored.status.clone().unwrap_or_default();
    assert_eq!(status.primary_site.as_deref(), Some("site-a"));
    let image = status
        .images
        .iter()
        .find(|i| i.name == "db")
        .expect("db in status");
    assert_eq!(image.primary_site.as_deref(), Some("site-a"));
    assert!(
        status
            .daemons
            .iter()
            .any(|d| d.site == "site-b" && d.health == "OK"),
        "rbd-mirror on B reported healthy: {:?}",
        status.daemons
    );
    let info = sites.b.rbd(&[
        "mirror",
        "image",
        "status",
        &format!("{pool}/db"),
        "--format",
        "json",
    ])?;
    assert!(info.contains("up+replaying"), "B replays db: {info}");
    let schedules = sites
        .a
        .rbd(&["mirror", "snapshot", "schedule", "ls", "--pool", &pool])?;
    assert!(schedules.contains("1m"), "schedule applied on A: {schedules}");

    // The bootstrap token is in a Secret owned by the resource, never in its status.
    let secret = stack
        .ns
        .api::<Secret>()
        .get(&token_secret_name(&mirrored))
        .await?;
    let owners = secret.metadata.owner_references.unwrap_or_default();
    assert!(
        owners.iter().any(|o| o.kind == "RbdMirrorPool" && o.name == name),
        "{owners:?}"
    );
    let status_json = serde_json::to_string(&mirrored.status)?;
    for value in secret.data.unwrap_or_default().values() {
        let token = String::from_utf8_lossy(&value.0).into_owned();
        assert!(
            !status_json.contains(&token),
            "a bootstrap token leaked into status"
        );
    }

    // Deleting the resource disables mirroring and removes the peers on both sites; the data stays.
    stack
        .ns
        .api::<RbdMirrorPool>()
        .delete(name, &Default::default())
        .await?;
    stack.ns.wait_gone::<RbdMirrorPool>(name, CONVERGE).await?;
    for site in [&sites.a, &sites.b] {
        let info = site.rbd(&["mirror", "pool", "info", &pool, "--format", "json"])?;
        let info: serde_json::Value = serde_json::from_str(&info)?;
        assert_eq!(
            info["mode"], "disabled",
            "mirroring disabled on {}: {info}",
            site.name
        );
        assert_eq!(
            info["peers"].as_array().map_or(0, Vec::len),
            0,
            "peers removed on {}",
            site.name
        );
    }
    assert_eq!(
        sites.a.image_checksum(&format!("{pool}/db"))?,
        source,
        "the primary's data is untouched"
    );
    Ok(())
}
