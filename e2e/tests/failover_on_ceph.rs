//! FailoverRequests on two real Ceph sites: a planned failover moves the primary to B with every
//! acknowledged write there; an emergency failover with site A unreachable force-promotes B and says how
//! much may be lost; failback brings the primary home once A returns, with what was written on B.

use anyhow::{Context as _, Result};
use cephdr::api::{
    conditions,
    failover_request::{FailoverPhase, StepState},
};
use cephdr_e2e::{operator::OperatorStack, process::random_hex};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn planned_failover_moves_the_primary_to_b_with_every_acknowledged_write() -> Result<()> {
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
    assert!(sites.b.is_primary(&spec)?, "db is primary on B");
    assert!(!sites.a.is_primary(&spec)?, "db is no longer primary on A");
    assert_eq!(
        sites.b.image_checksum(&spec)?,
        acknowledged,
        "no acknowledged write lost"
    );
    sites.b.write_some(&spec).context("B accepts writes")?;
    assert!(
        sites.a.write_some(&spec).is_err(),
        "A refuses writes after demotion"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn emergency_failover_then_failback_when_site_a_returns() -> Result<()> {
    let (mut stack, sites) = OperatorStack::on_rbd_mirror_sites("emergency-e2e").await?;
    let pool = format!("em{}", random_hex(3)?);
    let spec = format!("{pool}/db");
    let (_, replicated) = stack
        .mirrored_image([&sites.a, &sites.b], "vm-disks", &pool, "db", 8, json!({}))
        .await?;

    // Site A's agent goes away: the operator can no longer reach site A.
    stack.agents[0].stop().await;
    let done = stack
        .failover("site-a-lost", "emergency", "site-b", "vm-disks")
        .await?;
    let status = done.status.context("status")?;
    assert_eq!(status.phase, FailoverPhase::Completed, "{:#?}", status);
    assert!(sites.b.is_primary(&spec)?, "db force-promoted on B");
    assert_eq!(
        sites.b.image_checksum(&spec)?,
        replicated,
        "B holds the last synced snapshot's bytes"
    );
    sites
        .b
        .write_some(&spec)
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

    // Site A returns: failback resyncs it from B and moves the primary home, with B's writes.
    stack.agents[0].restart().await?;
    let written_on_b = sites.b.image_checksum(&spec)?;
    let back = stack
        .failover("back-to-a", "failback", "site-a", "vm-disks")
        .await?;
    let status = back.status.context("failback status")?;
    assert_eq!(status.phase, FailoverPhase::Completed, "{:#?}", status);
    assert!(sites.a.is_primary(&spec)?, "db is primary on A again");
    assert!(!sites.b.is_primary(&spec)?, "and only there");
    assert_eq!(
        sites.a.image_checksum(&spec)?,
        written_on_b,
        "the writes made on B are on A"
    );
    Ok(())
}
