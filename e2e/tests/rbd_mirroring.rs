//! RBD mirroring configured by cephdr alone on two real Ceph sites: an `RbdMirrorPool` creates the pool,
//! exchanges bootstrap tokens, enables snapshot mirroring and its schedule; bytes written on A read back
//! identical on B; deleting the resource undoes the configuration in Ceph.

use std::time::Duration;

use anyhow::{bail, Result};
use cephdr::{
    api::{conditions, RbdMirrorPool},
    controller::rbd_mirror_pool::token_secret_name,
};
use cephdr_e2e::{operator::OperatorStack, process::random_hex, shared_ceph_sites, shared_control_plane};
use k8s_openapi::api::core::v1::Secret;
use serde_json::json;

/// Real Ceph is slow to peer and to copy the first snapshot on a loaded CI machine.
const CONVERGE: Duration = Duration::from_secs(180);

async fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match probe() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last_error = Some(error),
        }
        if tokio::time::Instant::now() > deadline {
            bail!("not {what} after {timeout:?}; last error: {last_error:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn rbd_mirror_pool_replicates_real_images_and_deletion_disables_mirroring() -> Result<()> {
    let plane = shared_control_plane().await?;
    let sites = shared_ceph_sites().await?;
    for site in [&sites.a, &sites.b] {
        site.start_rbd_mirror()?;
    }
    let stack = OperatorStack::start(plane, [&sites.a, &sites.b], "rbd-e2e").await?;
    let pool = format!("rbd{}", random_hex(3)?);
    let name = "mirrored";
    stack
        .ns
        .create::<RbdMirrorPool>(json!({"metadata": {"name": name}, "spec": {
            "pool": pool, "mode": "image", "direction": "two-way", "deletionPolicy": "Delete",
            "sites": [{"site": "site-a", "role": "primary"}, {"site": "site-b", "role": "secondary"}],
            "images": {"mirrorMode": "snapshot", "names": ["db"]},
            "snapshotSchedules": [{"interval": "1m"}], "rpoSeconds": 600}}))
        .await?;

    // The operator creates the pool on both sites; the user's application then writes its image on A.
    wait_until("pool created on site A", CONVERGE, || {
        Ok(sites.a.pool_exists(&pool)?.then_some(()))
    })
    .await?;
    sites.a.import_random_image(&pool, "db", 16)?;
    let source = sites.a.image_checksum(&format!("{pool}/db"))?;

    let mirrored = stack
        .ns
        .wait::<RbdMirrorPool>(name, "Ready with db replaying", CONVERGE, |p| {
            p.status.as_ref().is_some_and(|st| {
                conditions::is_true(&st.conditions, conditions::READY)
                    && st.images.iter().any(|i| i.name == "db" && i.state == "replaying")
            })
        })
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

    // Bytes written on A read back identical on B, once the first mirror snapshot has been copied.
    let replica = wait_until("db identical on site B", CONVERGE, || {
        let on_b = sites.b.image_checksum(&format!("{pool}/db"))?;
        Ok((on_b == source).then_some(on_b))
    })
    .await?;
    assert_eq!(replica, source);
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
