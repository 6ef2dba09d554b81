//! The snapshot-schedule watchdog on two real Ceph sites: when the mgr's scheduler stops taking mirror
//! snapshots of an image, cephdr notices within twice the interval, says so in a condition and an Event,
//! and takes the snapshot itself, which carries the writes since to site B.

use anyhow::{Context as _, Result};
use cephdr::{
    api::{conditions, RbdMirrorPool},
    controller::rbd_mirror_pool::plan::SNAPSHOTS_STALE,
};
use cephdr_e2e::{
    operator::{pool_condition, wait_until, OperatorStack, CONVERGE},
    process::random_hex,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_snapshot_schedule_is_reported_and_repaired() -> Result<()> {
    let (stack, sites) = OperatorStack::on_rbd_mirror_sites("watchdog-e2e").await?;
    let pool = format!("wd{}", random_hex(3)?);
    let spec = format!("{pool}/db");
    // The smallest interval the CRD allows: the watchdog's limit is twice it, 120 s.
    stack
        .mirrored_image([&sites.a, &sites.b], "guarded", &pool, "db", 8, json!({}))
        .await?;

    // The scheduler stops for db while the pool's schedule stays as cephdr set it: an image-level schedule,
    // made behind cephdr's back, takes precedence in the mgr and next fires at midnight.
    sites.a.rbd(&[
        "mirror", "snapshot", "schedule", "add", "--pool", &pool, "--image", "db", "1d",
    ])?;
    wait_until("the mgr's next snapshot of db at midnight", || {
        let status = sites.a.rbd(&[
            "mirror", "snapshot", "schedule", "status", "--pool", &pool, "--image", "db", "--format", "json",
        ])?;
        Ok(status.contains(" 00:00:00").then_some(()))
    })
    .await?;
    let before = sites.a.primary_mirror_snapshots(&spec)?;
    let last_before = *before.last().context("db has a mirror snapshot")?;
    // Written after the last scheduled snapshot: only a new mirror snapshot carries it to B.
    sites.a.write_some(&spec)?;
    let written = sites.a.image_checksum(&spec)?;

    let stale = stack
        .ns
        .wait::<RbdMirrorPool>("guarded", "reporting stale snapshots", CONVERGE, |p| {
            pool_condition(p, conditions::SYNCED)
                .is_some_and(|c| c.status == "False" && c.reason == SNAPSHOTS_STALE)
        })
        .await?;
    let message = &pool_condition(&stale, conditions::SYNCED)
        .context("Synced")?
        .message;
    assert!(
        message.contains("db newest") && message.contains("(limit 120s)"),
        "{message}"
    );
    let reasons = stack.ns.event_reasons("guarded").await?;
    assert!(
        reasons.iter().any(|r| r == SNAPSHOTS_STALE),
        "a SnapshotsStale Event: {reasons:?}"
    );

    // The repair: a new mirror snapshot on A, which brings the write to B.
    wait_until("a new mirror snapshot of db on A", || {
        let ids = sites.a.primary_mirror_snapshots(&spec)?;
        Ok(ids.into_iter().any(|id| id > last_before).then_some(()))
    })
    .await?;
    wait_until("the write on B", || {
        Ok((sites.b.image_checksum(&spec)? == written).then_some(()))
    })
    .await?;
    let status: serde_json::Value = serde_json::from_str(
        &sites
            .b
            .rbd(&["mirror", "image", "status", &spec, "--format", "json"])?,
    )?;
    assert_eq!(status["state"], "up+replaying", "{status}");
    stack
        .ns
        .wait::<RbdMirrorPool>("guarded", "Synced again", CONVERGE, |p| {
            pool_condition(p, conditions::SYNCED).is_some_and(|c| c.status == "True")
        })
        .await?;
    Ok(())
}
