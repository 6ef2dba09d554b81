//! FailoverRequests against a real kube-apiserver, with simulated Ceph sites: each action ends in the
//! phase and Ceph state it promises, with the figures, conditions, Events and metrics that say so; one
//! request at a time per pool; a restarted operator picks up where the old one stopped.

mod common;

use anyhow::{Context as _, Result};
use cephdr::{
    agent::{ClusterAgent, Step},
    api::{conditions, FailoverPhase, FailoverRequest},
    controller::failover_request::{
        plan::{self, BLOCKED, DRY_RUN, RESYNC_REQUIRED},
        reason,
    },
};
use common::{mirrored, primary, Bed, PATIENCE, POOL};
use serde_json::json;

fn request(name: &str, action: &str, target: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({"action": action, "targetSite": target, "targets": {"rbdMirrorPools": [POOL]}});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    json!({"metadata": {"name": name}, "spec": spec})
}

async fn wait_phase(bed: &Bed, name: &str, phase: FailoverPhase) -> Result<FailoverRequest> {
    let what = format!("{phase:?}");
    bed.wait::<FailoverRequest>(name, &what, PATIENCE, |r| {
        r.status.as_ref().is_some_and(|s| s.phase == phase)
    })
    .await
}

fn is_true(request: &FailoverRequest, type_: &str) -> bool {
    request
        .status
        .as_ref()
        .is_some_and(|s| conditions::is_true(&s.conditions, type_))
}

/// How many steps with this verb ran on `site`.
fn ran(bed: &Bed, site: &str, verb: &str) -> usize {
    bed.steps_on(site).iter().filter(|s| s.verb() == verb).count()
}

/// Reasons of the Events published about the request `name`.
async fn event_reasons(bed: &Bed, name: &str) -> Result<Vec<String>> {
    cephdr_e2e::namespace::event_reasons(&bed.client, &bed.ns, name).await
}

#[tokio::test]
async fn planned_failover_moves_the_pool_to_the_target_and_reports_the_rto() -> Result<()> {
    let bed = mirrored("failover").await?;
    bed.create::<FailoverRequest>(request("to-b", "planned", "site-b", json!({})))
        .await?;
    let done = wait_phase(&bed, "to-b", FailoverPhase::Completed).await?;

    let status = done.status.clone().context("status")?;
    assert!(
        status.rto_seconds.is_some_and(|rto| rto > 0.0),
        "{:?}",
        status.rto_seconds
    );
    assert!(is_true(&done, conditions::READY));
    assert_eq!(
        (primary(&bed.a).await?, primary(&bed.b).await?),
        (Some(false), Some(true)),
        "exactly one primary, on site-b"
    );
    assert_eq!(
        (ran(&bed, "site-a", "demote"), ran(&bed, "site-b", "promote")),
        (1, 1)
    );
    let reasons = event_reasons(&bed, "to-b").await?;
    for expected in [reason::STARTED, reason::COMPLETED] {
        assert!(reasons.iter().any(|r| r == expected), "{expected} in {reasons:?}");
    }
    let metrics = bed.metrics();
    assert!(
        metrics
            .contains("cephdr_failover_duration_seconds_count{action=\"planned\",outcome=\"completed\"} 1"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn emergency_failover_with_the_source_down_force_promotes_and_records_the_data_loss_window(
) -> Result<()> {
    let bed = mirrored("failover").await?;
    // Writes the copy on site-b never got: at least a second's worth.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    bed.world.set_down("site-a", true);
    bed.create::<FailoverRequest>(request("rescue", "emergency", "site-b", json!({})))
        .await?;
    let done = wait_phase(&bed, "rescue", FailoverPhase::Completed).await?;

    let status = done.status.clone().context("status")?;
    assert!(
        status.data_loss_window_seconds.is_some_and(|s| s >= 1),
        "{:?}",
        status.data_loss_window_seconds
    );
    assert!(is_true(&done, RESYNC_REQUIRED));
    assert_eq!(primary(&bed.b).await?, Some(true));
    assert!(bed.steps_on("site-b").contains(&Step::PromoteImage {
        pool: POOL.into(),
        image: "db".into(),
        force: true
    }));
    assert_eq!(ran(&bed, "site-a", "demote"), 0, "the down site is left alone");
    let reasons = event_reasons(&bed, "rescue").await?;
    assert!(
        reasons.iter().any(|r| r == reason::RESYNC_REQUIRED),
        "{reasons:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_second_request_for_the_same_pool_waits_blocked_until_the_first_finishes() -> Result<()> {
    let bed = mirrored("failover").await?;
    // The demotion cannot reach site-b: the first request holds in Syncing.
    bed.world.partition("site-a", "site-b");
    bed.create::<FailoverRequest>(request("first", "planned", "site-b", json!({})))
        .await?;
    wait_phase(&bed, "first", FailoverPhase::Syncing).await?;
    bed.create::<FailoverRequest>(request("second", "planned", "site-b", json!({})))
        .await?;
    let blocked = bed
        .wait::<FailoverRequest>("second", "Blocked", PATIENCE, |r| is_true(r, BLOCKED))
        .await?;
    let status = blocked.status.clone().context("status")?;
    assert_eq!(status.phase, FailoverPhase::Pending);
    assert!(status.steps.is_empty(), "a blocked request plans nothing yet");
    let message = &status
        .conditions
        .iter()
        .find(|c| c.type_ == BLOCKED)
        .context("Blocked")?
        .message;
    assert!(message.contains("first"), "{message}");

    bed.world.heal("site-a", "site-b");
    wait_phase(&bed, "first", FailoverPhase::Completed).await?;
    let second = wait_phase(&bed, "second", FailoverPhase::Completed).await?;
    assert!(!is_true(&second, BLOCKED));
    assert_eq!(
        ran(&bed, "site-b", "promote"),
        1,
        "the second found site-b primary already"
    );
    Ok(())
}

#[tokio::test]
async fn dry_run_shows_the_plan_and_leaves_the_sites_untouched() -> Result<()> {
    let bed = mirrored("failover").await?;
    bed.create::<FailoverRequest>(request("what-if", "planned", "site-b", json!({"dryRun": true})))
        .await?;
    let done = wait_phase(&bed, "what-if", FailoverPhase::Completed).await?;

    let status = done.status.clone().context("status")?;
    let plan: Vec<String> = status
        .steps
        .iter()
        .map(|s| format!("{} {}", s.name, s.target))
        .collect();
    assert_eq!(
        plan,
        [
            "demote rbd/db@site-a",
            "await-sync rbd/db@site-b",
            "promote rbd/db@site-b"
        ]
    );
    assert!(is_true(&done, DRY_RUN));
    assert_eq!(status.rto_seconds, None);
    assert_eq!(
        (primary(&bed.a).await?, primary(&bed.b).await?),
        (Some(true), Some(false))
    );
    for (site, verb) in [("site-a", "demote"), ("site-b", "promote")] {
        assert_eq!(ran(&bed, site, verb), 0, "{verb} on {site}");
    }
    Ok(())
}

#[tokio::test]
async fn an_operator_restart_mid_failover_resumes_without_repeating_completed_steps() -> Result<()> {
    let mut bed = mirrored("failover").await?;
    bed.world.partition("site-a", "site-b");
    bed.create::<FailoverRequest>(request("move", "planned", "site-b", json!({})))
        .await?;
    wait_phase(&bed, "move", FailoverPhase::Syncing).await?;
    bed.stop_controllers().await?;

    let persisted = bed.api::<FailoverRequest>().get("move").await?;
    let before = persisted.status.context("status")?;
    assert_eq!(
        before.phase,
        FailoverPhase::Syncing,
        "the stopped operator left its progress in status"
    );
    let demote = before.steps.first().context("demote row")?.clone();
    assert_eq!(
        (demote.name.as_str(), ran(&bed, "site-a", "demote")),
        ("demote", 1)
    );

    bed.world.heal("site-a", "site-b");
    bed.start_controllers();
    let done = match wait_phase(&bed, "move", FailoverPhase::Completed).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("DEBUG A {:#?}", bed.a.rbd_pool(POOL).await?);
            eprintln!("DEBUG B {:#?}", bed.b.rbd_pool(POOL).await?);
            eprintln!("DEBUG steps A {:?}", bed.steps_on("site-a"));
            eprintln!("DEBUG steps B {:?}", bed.steps_on("site-b"));
            return Err(e);
        }
    };

    assert_eq!(
        ran(&bed, "site-a", "demote"),
        1,
        "the demote ran once across both operators"
    );
    assert_eq!(ran(&bed, "site-b", "promote"), 1);
    let status = done.status.context("status")?;
    assert_eq!(
        status.steps.first(),
        Some(&demote),
        "the demote's row was kept as it was"
    );
    assert_eq!(status.started_at, before.started_at);
    assert_eq!(
        (primary(&bed.a).await?, primary(&bed.b).await?),
        (Some(false), Some(true))
    );
    Ok(())
}

/// A drill of site-b named `name`, once it reached `phase`.
async fn drill(bed: &Bed, name: &str, phase: FailoverPhase) -> Result<FailoverRequest> {
    bed.create::<FailoverRequest>(request(name, "drill", "site-b", json!({})))
        .await?;
    wait_phase(bed, name, phase).await
}

#[tokio::test]
async fn a_drill_proves_the_copy_by_checksum_and_a_damaged_copy_fails_it() -> Result<()> {
    let bed = mirrored("failover").await?;
    let done = drill(&bed, "drill", FailoverPhase::Completed).await?;
    let status = done.status.clone().context("status")?;
    let row = status.steps.first().context("verify-copy row")?;
    assert_eq!(
        (row.name.as_str(), row.target.as_str()),
        ("verify-copy", "rbd/db@site-b")
    );
    let message = row.message.clone().unwrap_or_default();
    assert!(message.starts_with("checksums match: snapshot "), "{message}");
    assert!(status.check_seconds.is_some(), "{status:#?}");
    assert!(status.measured_rpo_seconds.is_some(), "{status:#?}");
    assert!(is_true(&done, conditions::READY));
    for (site, verb) in [
        ("site-a", "demote"),
        ("site-b", "promote"),
        ("site-b", "force-promote"),
    ] {
        assert_eq!(
            ran(&bed, site, verb),
            0,
            "a drill changes nothing: {verb} on {site}"
        );
    }
    assert_eq!(
        (primary(&bed.a).await?, primary(&bed.b).await?),
        (Some(true), Some(false))
    );

    bed.b.damage_newest_snapshot(POOL, "db")?;
    let failed = drill(&bed, "drill-again", FailoverPhase::Failed).await?;
    let held = failed.status.context("status")?.conditions;
    let stalled = conditions::find(&held, conditions::STALLED).context("Stalled")?;
    assert_eq!(
        (
            stalled.reason.as_str(),
            stalled.message.contains("checksum mismatch for rbd/db")
        ),
        (plan::reason::COPY_MISMATCH, true),
        "{stalled:#?}"
    );
    Ok(())
}
