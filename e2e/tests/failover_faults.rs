//! Planned failovers on two real Ceph sites under faults: the operator killed the moment a request enters
//! each phase (agent calls cut off mid-step), and the source site's agent unreachable in the middle of the
//! handover; and every daemon of the source site killed as it is being demoted. Each run must end with
//! exactly one primary holding every acknowledged write, or stop in a clear Failed state that an emergency
//! request finishes.

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
use tokio::sync::RwLock;

/// Tests share the two sites; one that takes a site down holds this exclusively.
static SITES_IN_USE: RwLock<()> = RwLock::const_new(());

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
    let _shared = SITES_IN_USE.read().await;
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

/// Site A dies as a planned failover to B demotes it. The request cannot confirm the handover: it promotes
/// nothing and fails after its `unreachableTimeoutSeconds`, pointing at an emergency, unless B had the
/// demotion snapshot and was promoted first. An emergency then finishes it: B holds every acknowledged write
/// (the demotion snapshot arrived) or the last synced snapshot, never a torn copy. Once A is back, a
/// failback brings the primary home with what was written on B.
#[tokio::test(flavor = "multi_thread")]
async fn site_a_killed_mid_planned_failover_is_finished_by_an_emergency_then_failed_back() -> Result<()> {
    let _alone = SITES_IN_USE.write().await;
    let (mut stack, sites) = OperatorStack::on_rbd_mirror_sites("killed-a-e2e").await?;
    let _outage = sites.outage();
    let (a, b) = (&sites.a, &sites.b);
    let pool = format!("ka{}", random_hex(3)?);
    let spec = format!("{pool}/db");
    let (_, replicated) = stack
        .mirrored_image([a, b], "vm-disks", &pool, "db", 8, json!({}))
        .await?;
    a.write_some(&spec)?;
    let acknowledged = a.image_checksum(&spec)?;

    stack
        .ns
        .create::<FailoverRequest>(json!({"metadata": {"name": "interrupted"}, "spec": {
            "action": "planned", "targetSite": "site-b", "targets": {"rbdMirrorPools": ["vm-disks"]},
            "maxLagSeconds": 600, "unreachableTimeoutSeconds": 20}}))
        .await?;
    let mut killed_in = None;
    on_each_move(&mut stack, "interrupted", async |_, phase| {
        if killed_in.is_none() && phase >= FailoverPhase::Demoting {
            killed_in = Some(phase);
            a.kill_all()?;
        }
        Ok(())
    })
    .await?;
    let interrupted = stack.finished("interrupted").await?.status.context("status")?;
    let killed_in = killed_in.context("site A was killed mid-failover")?;
    if interrupted.phase == FailoverPhase::Completed {
        // B had the demotion snapshot before A died: the planned failover could finish alone.
        assert!(b.is_primary(&spec)?, "{interrupted:#?}");
        assert_eq!(
            b.image_checksum(&spec)?,
            acknowledged,
            "no acknowledged write lost"
        );
    } else {
        assert_eq!(interrupted.phase, FailoverPhase::Failed, "{interrupted:#?}");
        let stalled = interrupted
            .conditions
            .iter()
            .find(|c| c.type_ == conditions::STALLED)
            .context("Stalled")?;
        assert_eq!(stalled.reason, "UnreachableTooLong", "{interrupted:#?}");
        assert!(stalled.message.contains("emergency"), "{}", stalled.message);
        assert!(
            interrupted
                .steps
                .iter()
                .all(|s| s.name != "promote" || s.state == StepState::Pending),
            "nothing promoted after A was killed in {killed_in:?}: {interrupted:#?}"
        );
        assert!(
            !b.is_primary(&spec)?,
            "B is not promoted by a planned failover it cannot confirm"
        );

        let rescued = stack
            .failover("finish-on-b", "emergency", "site-b", "vm-disks")
            .await?
            .status
            .context("emergency status")?;
        assert_eq!(rescued.phase, FailoverPhase::Completed, "{rescued:#?}");
        assert!(b.is_primary(&spec)?, "db force-promoted on B");
        let on_b = b.image_checksum(&spec)?;
        assert!(
            on_b == acknowledged || on_b == replicated,
            "B holds the demotion snapshot or the last one synced before it, not a torn copy"
        );
    }
    b.write_some(&spec).context("B accepts writes")?;
    let written_on_b = b.image_checksum(&spec)?;

    a.restart_stopped()?;
    let back = stack
        .failover("back-to-a", "failback", "site-a", "vm-disks")
        .await?
        .status
        .context("failback status")?;
    assert_eq!(back.phase, FailoverPhase::Completed, "{back:#?}");
    assert!(a.is_primary(&spec)? && !b.is_primary(&spec)?, "one primary, on A");
    assert_eq!(
        a.image_checksum(&spec)?,
        written_on_b,
        "the writes made on B are on A"
    );
    Ok(())
}
