//! FailoverRequests on two real Ceph sites: a drill proves by checksum that B holds what A wrote, changing
//! nothing; a planned failover moves the primary to B with every acknowledged write there; with every daemon
//! of site A killed a planned failover is refused and an emergency failover force-promotes B and says how
//! much may be lost; once A returns a resync rebuilds it from B and a planned failover brings the primary
//! home, with what was written on B.

use anyhow::{Context as _, Result};
use cephdr::api::{
    conditions,
    failover_request::{FailoverPhase, StepState},
};
use cephdr_e2e::{
    operator::{wait_until, OperatorStack},
    process::random_hex,
    CephSite,
};
use serde_json::json;
use tokio::sync::RwLock;

/// Tests share the two sites; one that takes a site down holds this exclusively.
static SITES_IN_USE: RwLock<()> = RwLock::const_new(());

/// The newest snapshot id of image `spec` on the site (any namespace; ids only grow), and its image list.
fn footprint(site: &CephSite, pool: &str, spec: &str) -> Result<(u64, String)> {
    let snaps: serde_json::Value =
        serde_json::from_str(&site.rbd(&["snap", "ls", "--all", spec, "--format", "json"])?)?;
    let newest = snaps
        .as_array()
        .context("rbd snap ls lists snapshots")?
        .iter()
        .filter_map(|snap| snap["id"].as_u64())
        .max()
        .unwrap_or(0);
    Ok((newest, site.rbd(&["ls", pool])?))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drill_proves_by_checksum_that_b_holds_what_a_wrote_and_changes_nothing() -> Result<()> {
    let _shared = SITES_IN_USE.read().await;
    let (stack, sites) = OperatorStack::on_rbd_mirror_sites("drill-e2e").await?;
    let (a, b) = (&sites.a, &sites.b);
    let pool = format!("dr{}", random_hex(3)?);
    let spec = format!("{pool}/db");
    // No schedule: the only mirror snapshot after the first is the one taken here.
    stack
        .mirrored_image(
            [a, b],
            "vm-disks",
            &pool,
            "db",
            8,
            json!({"snapshotSchedules": []}),
        )
        .await?;
    a.write_some(&spec)?;
    let written = a.image_checksum(&spec)?;
    a.rbd(&["mirror", "image", "snapshot", &spec])?;
    wait_until("A's write synced to B", || {
        Ok((b.image_checksum(&spec)? == written).then_some(()))
    })
    .await?;
    let before = (footprint(a, &pool, &spec)?, footprint(b, &pool, &spec)?);

    let done = stack.failover("drill-b", "drill", "site-b", "vm-disks").await?;
    let status = done.status.context("status")?;
    assert_eq!(status.phase, FailoverPhase::Completed, "{status:#?}");
    let row = status.steps.first().context("verify-copy row")?;
    let message = row.message.clone().unwrap_or_default();
    assert!(
        row.state == StepState::Done && message.starts_with("checksums match") && message.contains(&written),
        "B's copy and A's snapshot both hash like what A wrote: {row:#?}"
    );
    assert!(status.measured_rpo_seconds.is_some(), "{status:#?}");
    assert!(status.check_seconds.is_some_and(|s| s >= 0.0), "{status:#?}");

    // Nothing changed: no new image or snapshot on either site, A still the only primary.
    let after = (footprint(a, &pool, &spec)?, footprint(b, &pool, &spec)?);
    assert!(
        after.0 .0 <= before.0 .0 && after.1 .0 <= before.1 .0,
        "no snapshot taken: {before:?} then {after:?}"
    );
    assert_eq!(
        (&after.0 .1, &after.1 .1),
        (&before.0 .1, &before.1 .1),
        "no image added"
    );
    assert!(a.is_primary(&spec)? && !b.is_primary(&spec)?);

    // A drill of the primary's own copy is refused, saying why.
    let refused = stack.failover("drill-a", "drill", "site-a", "vm-disks").await?;
    let refused = refused.status.context("status")?;
    assert_eq!(refused.phase, FailoverPhase::Failed, "{refused:#?}");
    let stalled = conditions::find(&refused.conditions, conditions::STALLED).context("Stalled")?;
    assert!(
        stalled
            .message
            .contains("is primary on site site-a: a drill checks a non-primary copy"),
        "{stalled:#?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn planned_failover_moves_the_primary_to_b_with_every_acknowledged_write() -> Result<()> {
    let _shared = SITES_IN_USE.read().await;
    let (stack, sites) = OperatorStack::on_rbd_mirror_sites("failover-e2e").await?;
    let pool = format!("fo{}", random_hex(3)?);
    let spec = format!("{pool}/db");
    stack
        .mirrored_image([&sites.a, &sites.b], "vm-disks", &pool, "db", 16, json!({}))
        .await?;

    // Writes acknowledged on A after the last scheduled snapshot: the demotion snapshot must carry them.
    sites.a.write_some(&spec)?;
    let acknowledged = sites.a.image_checksum(&spec)?;

    let done = stack
        .failover("move-to-b", "planned", "site-b", "vm-disks")
        .await?;
    let status = done.status.context("status")?;
    assert_eq!(status.phase, FailoverPhase::Completed, "{:#?}", status);
    assert!(
        status
            .steps
            .iter()
            .all(|s| s.state == StepState::Done || s.state == StepState::Skipped),
        "{:#?}",
        status.steps
    );
    assert!(
        status.rto_seconds.is_some_and(|rto| rto > 0.0),
        "RTO reported: {:?}",
        status.rto_seconds
    );

    // Exactly one primary, on B, holding every acknowledged write.
    sites.assert_moved_to_b(&spec, &acknowledged)
}

#[tokio::test(flavor = "multi_thread")]
async fn emergency_failover_with_site_a_killed_then_resync_and_move_back_when_it_returns() -> Result<()> {
    let (stack, sites) = OperatorStack::on_rbd_mirror_sites("emergency-e2e").await?;
    let (a, b) = (&sites.a, &sites.b);
    let pool = format!("em{}", random_hex(3)?);
    let spec = format!("{pool}/db");
    let (_, replicated) = stack
        .mirrored_image([a, b], "vm-disks", &pool, "db", 8, json!({}))
        .await?;

    // From here on site A goes down and site B's rbd-mirror stops: no other test may use them meanwhile.
    let _alone = SITES_IN_USE.write().await;
    let _outage = sites.outage();
    // A write that A acknowledges but that never reaches B (B pulls nothing while its rbd-mirror is
    // stopped); then every daemon of A dies. A's agent stays up and finds no monitor.
    b.stop_daemon("rbd-mirror", false)?;
    a.write_some(&spec)?;
    let lost = a.image_checksum(&spec)?;
    assert_ne!(lost, replicated);
    a.kill_all()?;
    b.start_rbd_mirror()?;

    // A planned failover cannot confirm A's demotion: refused at once, pointing at the emergency.
    let refused = stack
        .failover("planned-while-a-is-down", "planned", "site-b", "vm-disks")
        .await?
        .status
        .context("status")?;
    assert_eq!(refused.phase, FailoverPhase::Failed, "{refused:#?}");
    let stalled = refused
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::STALLED)
        .context("Stalled")?;
    assert_eq!(stalled.reason, "CephClusterUnreachable", "{stalled:#?}");
    assert!(stalled.message.contains("emergency"), "{}", stalled.message);
    assert!(refused.steps.is_empty(), "nothing ran: {refused:#?}");

    let done = stack
        .failover("site-a-lost", "emergency", "site-b", "vm-disks")
        .await?;
    let status = done.status.context("status")?;
    assert_eq!(status.phase, FailoverPhase::Completed, "{status:#?}");
    assert!(b.is_primary(&spec)?, "db force-promoted on B");
    assert_eq!(
        b.image_checksum(&spec)?,
        replicated,
        "B holds the last synced snapshot's bytes, without the write A acknowledged after it"
    );
    b.write_some(&spec)
        .context("B accepts writes after the forced promotion")?;
    assert!(
        status.data_loss_window_seconds.is_some(),
        "the loss window is reported: {status:#?}"
    );
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "ResyncRequired" && c.status == "True"),
        "the old primary is marked for resync: {:#?}",
        status.conditions
    );
    assert!(!conditions::is_true(&status.conditions, conditions::STALLED));

    // Site A returns, still primary: a split brain. A resync from B demotes A and rebuilds it from B's copy
    // while B stays primary; a planned failover then moves the primary home with B's writes.
    a.restart_stopped()?;
    let resynced = stack
        .failover("resync-a-from-b", "resync", "site-b", "vm-disks")
        .await?
        .status
        .context("resync status")?;
    assert_eq!(resynced.phase, FailoverPhase::Completed, "{resynced:#?}");
    assert!(b.is_primary(&spec)? && !a.is_primary(&spec)?, "one primary, on B");
    b.write_some(&spec)?;
    let written_on_b = b.image_checksum(&spec)?;
    let back = stack
        .failover("back-to-a", "planned", "site-a", "vm-disks")
        .await?;
    let status = back.status.context("planned status")?;
    assert_eq!(status.phase, FailoverPhase::Completed, "{:#?}", status);
    assert!(a.is_primary(&spec)?, "db is primary on A again");
    assert!(!b.is_primary(&spec)?, "and only there");
    assert_eq!(
        a.image_checksum(&spec)?,
        written_on_b,
        "the writes made on B are on A"
    );
    Ok(())
}
