//! Journal-mode RBD mirroring configured by cephdr on two real Ceph sites: an `RbdMirrorPool` with
//! `images.mirrorMode: journal` journals the image on A, and rbd-mirror on B replays every write, with no
//! mirror snapshot involved. A planned failover of the journaled image moves the primary to B with every
//! write acknowledged on A: the demotion is replayed from the journal, then B is promoted.

use anyhow::{Context as _, Result};
use cephdr::api::failover_request::FailoverPhase;
use cephdr_e2e::{
    operator::{wait_until, OperatorStack},
    process::random_hex,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn journal_mode_image_replays_every_write_on_b() -> Result<()> {
    let (stack, sites) = OperatorStack::on_rbd_mirror_sites("journal-e2e").await?;
    let pool = format!("jr{}", random_hex(3)?);
    let spec = format!("{pool}/db");
    let (mirrored, _) = stack
        .mirrored_image(
            [&sites.a, &sites.b],
            "journaled",
            &pool,
            "db",
            8,
            json!({"images": {"mirrorMode": "journal", "names": ["db"]}, "snapshotSchedules": []}),
        )
        .await?;
    let image = mirrored
        .status
        .as_ref()
        .and_then(|s| s.images.iter().find(|i| i.name == "db"))
        .context("db in status")?;
    assert_eq!(image.primary_site.as_deref(), Some("site-a"));
    assert_eq!(image.state, "replaying");

    // Ceph journals the image on A and B replays the journal.
    let info: serde_json::Value = serde_json::from_str(&sites.a.rbd(&["info", &spec, "--format", "json"])?)?;
    assert_eq!(info["mirroring"]["mode"], "journal", "{info}");
    assert!(
        info["features"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "journaling")),
        "the journaling feature is on: {info}"
    );
    let status = sites
        .b
        .rbd(&["mirror", "image", "status", &spec, "--format", "json"])?;
    let status: serde_json::Value = serde_json::from_str(&status)?;
    assert_eq!(status["state"], "up+replaying", "{status}");

    // Writes after the first sync stream over too: no schedule, no snapshot, only the journal.
    sites.a.write_some(&spec)?;
    let written = sites.a.image_checksum(&spec)?;
    wait_until("B replayed the write", || {
        Ok((sites.b.image_checksum(&spec)? == written).then_some(()))
    })
    .await?;
    let snapshots = sites.a.rbd(&["snap", "ls", "--all", &spec, "--format", "json"])?;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&snapshots)?,
        json!([]),
        "journal mode takes no snapshots"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn planned_failover_of_a_journaled_image_moves_it_to_b_with_every_acknowledged_write() -> Result<()> {
    let (stack, sites) = OperatorStack::on_rbd_mirror_sites("journal-failover").await?;
    let pool = format!("jf{}", random_hex(3)?);
    let spec = format!("{pool}/db");
    stack
        .mirrored_image(
            [&sites.a, &sites.b],
            "journaled-failover",
            &pool,
            "db",
            8,
            json!({"images": {"mirrorMode": "journal", "names": ["db"]}, "snapshotSchedules": []}),
        )
        .await?;
    sites.a.write_some(&spec)?;
    let acknowledged = sites.a.image_checksum(&spec)?;

    let done = stack
        .failover("journal-to-b", "planned", "site-b", "journaled-failover")
        .await?;
    let status = done.status.context("status")?;
    assert_eq!(status.phase, FailoverPhase::Completed, "{status:#?}");
    sites.assert_moved_to_b(&spec, &acknowledged)
}
