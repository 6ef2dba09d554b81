//! Planned failovers on two real Ceph sites under faults: the operator killed the moment a request enters
//! each phase (agent calls cut off mid-step), and the source site's agent unreachable in the middle of the
//! handover. Each run must end with exactly one primary holding every acknowledged write.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use cephdr::api::{
    conditions,
    failover_request::{FailoverPhase, FailoverRequest, StepState},
    RbdMirrorPool,
};
use cephdr_e2e::{
    operator::{OperatorStack, CONVERGE},
    process::random_hex,
};
use serde_json::json;

/// The request's phase now (Pending until the operator first wrote a status).
async fn phase_of(stack: &OperatorStack, name: &str) -> Result<FailoverPhase> {
    let request = stack.ns.api::<FailoverRequest>().get(name).await?;
    Ok(request.status.map(|s| s.phase).unwrap_or_default())
}

/// Where a request stands: its phase and the state of each step.
type Progress = (FailoverPhase, Vec<StepState>);

/// Polls the request every 100 ms and calls `fault` once each time its progress moved (a phase entered, a
/// step started or settled), until it is terminal. Returns the progress points seen, in order.
async fn on_each_move(
    stack: &mut OperatorStack,
    name: &str,
    mut fault: impl AsyncFnMut(&mut OperatorStack, FailoverPhase) -> Result<()>,
) -> Result<Vec<Progress>> {
    let deadline = tokio::time::Instant::now() + CONVERGE;
    let mut seen: Vec<Progress> = Vec::new();
    loop {
        let status = stack
            .ns
            .api::<FailoverRequest>()
            .get(name)
            .await?
            .status
            .unwrap_or_default();
        if status.phase.is_terminal() {
            return Ok(seen);
        }
        let now = (status.phase, status.steps.iter().map(|s| s.state).collect());
        if seen.last() != Some(&now) {
            seen.push(now);
            fault(stack, status.phase).await?;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("request {name} not finished after {CONVERGE:?}; progress seen {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn planned_failovers_survive_a_killed_operator_in_every_phase_and_an_unreachable_source() -> Result<()>
{
    let (mut stack, sites) = OperatorStack::on_rbd_mirror_sites("faults-e2e").await?;
    let pool = format!("fx{}", random_hex(3)?);
    let spec = format!("{pool}/db");
    stack
        .mirrored_image([&sites.a, &sites.b], "vm-disks", &pool, "db", 8, json!({}))
        .await?;

    // A → B, the operator killed as the request enters each phase and started again 3 s later.
    sites.a.write_some(&spec)?;
    let acknowledged = sites.a.image_checksum(&spec)?;
    stack
        .request_failover("killed-operator", "planned", "site-b", "vm-disks")
        .await?;
    let killed_at = on_each_move(&mut stack, "killed-operator", async |stack, _| {
        stack.kill_controllers().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        stack.start_controllers();
        Ok(())
    })
    .await?;
    // Syncing may pass within one reconcile when the demotion arrived quickly; the phases that run Ceph
    // steps are always seen.
    for phase in [FailoverPhase::Demoting, FailoverPhase::Promoting] {
        assert!(
            killed_at.iter().any(|(p, _)| *p == phase),
            "killed in {phase:?}: {killed_at:?}"
        );
    }
    let done = stack.finished("killed-operator").await?;
    let status = done.status.context("status")?;
    assert_eq!(status.phase, FailoverPhase::Completed, "{status:#?}");
    for step in &status.steps {
        assert_eq!(step.state, StepState::Done, "{status:#?}");
    }
    assert!(
        sites.b.is_primary(&spec)? && !sites.a.is_primary(&spec)?,
        "one primary, on B"
    );
    assert_eq!(
        sites.b.image_checksum(&spec)?,
        acknowledged,
        "no acknowledged write lost"
    );

    // B → A, B's agent (the source) stopped as the request starts demoting: the
    // request says so and waits, then finishes once the agent is back.
    // The way back needs A to have received a snapshot from B: a planned failover checks the lag first.
    stack
        .ns
        .wait::<RbdMirrorPool>("vm-disks", "site-a receiving from site-b", CONVERGE, |pool| {
            pool.status.as_ref().is_some_and(|st| {
                st.images.iter().any(|i| {
                    i.primary_site.as_deref() == Some("site-b")
                        && i.state == "replaying"
                        && i.last_sync_time.is_some()
                })
            })
        })
        .await?;
    sites.b.write_some(&spec)?;
    let acknowledged = sites.b.image_checksum(&spec)?;
    stack
        .request_failover("unreachable-source", "planned", "site-a", "vm-disks")
        .await?;
    let mut outage = false;
    on_each_move(&mut stack, "unreachable-source", async |stack, phase| {
        if outage || phase != FailoverPhase::Demoting {
            return Ok(());
        }
        outage = true;
        stack.agents[1].stop().await;
        stack
            .ns
            .wait::<FailoverRequest>(
                "unreachable-source",
                "reporting site-b unreachable",
                CONVERGE,
                |r| {
                    r.status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.type_ == "SiteUnreachable" && c.status == "True")
                            && !s.phase.is_terminal()
                    })
                },
            )
            .await?;
        // The source cannot confirm its demotion: nothing is promoted and the request neither fails nor
        // finishes while it is away.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let phase = phase_of(stack, "unreachable-source").await?;
        assert!(!phase.is_terminal(), "waits for site-b, in {phase:?}");
        assert!(
            !sites.a.is_primary(&spec)?,
            "nothing promoted while the source is away"
        );
        stack.agents[1].restart().await
    })
    .await?;
    let done = stack.finished("unreachable-source").await?;
    let status = done.status.context("status")?;
    assert!(outage, "site-b's agent was stopped mid-failover: {status:#?}");
    assert_eq!(status.phase, FailoverPhase::Completed, "{status:#?}");
    assert!(!conditions::is_true(&status.conditions, conditions::STALLED));
    assert!(
        sites.a.is_primary(&spec)? && !sites.b.is_primary(&spec)?,
        "one primary, on A"
    );
    assert_eq!(
        sites.a.image_checksum(&spec)?,
        acknowledged,
        "no acknowledged write lost"
    );
    Ok(())
}
