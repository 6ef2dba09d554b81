//! RPO as a setting on two real Ceph sites: with rbd-mirror on B stopped, the measured lag of an image
//! passes the pool's `rpoSeconds`, `RpoMet` turns False and the lag metric the alert rules compare crosses
//! twice the target; once the daemon runs again B catches up and `RpoMet` clears.

use anyhow::Result;
use cephdr::api::{
    conditions::{self, reason},
    RbdMirrorPool,
};
use cephdr_e2e::{
    operator::{pool_condition, wait_until, OperatorStack, CONVERGE},
    process::random_hex,
};
use serde_json::json;

/// Above the lag a 1-minute schedule leaves between snapshots, so a healthy pool meets it.
const RPO: u32 = 80;

/// The pool once its `RpoMet` condition has `status`.
async fn rpo_met(stack: &OperatorStack, status: &str) -> Result<RbdMirrorPool> {
    let what = format!("RpoMet={status}");
    stack
        .ns
        .wait::<RbdMirrorPool>("bounded", &what, CONVERGE, |p| {
            pool_condition(p, conditions::RPO_MET).is_some_and(|c| c.status == status)
        })
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_rbd_mirror_misses_the_rpo_until_it_runs_again() -> Result<()> {
    let (stack, sites) = OperatorStack::on_rbd_mirror_sites("rpo-e2e").await?;
    let pool = format!("rpo{}", random_hex(3)?);
    let spec = format!("{pool}/db");
    stack
        .mirrored_image(
            [&sites.a, &sites.b],
            "bounded",
            &pool,
            "db",
            8,
            json!({"rpoSeconds": RPO}),
        )
        .await?;
    rpo_met(&stack, "True").await?;

    // B stops replaying; A keeps writing and taking scheduled snapshots.
    let _outage = sites.outage();
    sites.b.stop_daemon("rbd-mirror", false)?;
    sites.a.write_some(&spec)?;
    let written = sites.a.image_checksum(&spec)?;
    let missed = rpo_met(&stack, "False").await?;
    let reported = pool_condition(&missed, conditions::RPO_MET).map(|c| c.reason.as_str());
    assert_eq!(reported, Some(reason::LAG_ABOVE_TARGET));
    let lag = missed
        .status
        .as_ref()
        .and_then(|s| s.images.iter().find(|i| i.name == "db"))
        .and_then(|i| i.lag_seconds);
    assert!(
        lag.is_some_and(|lag| lag > u64::from(RPO)),
        "db's lag in status: {lag:?}"
    );

    // The alert rule's comparison: lag above twice the exported RPO, on the receiving site.
    let labels = [("site", "site-b"), ("pool", pool.as_str())];
    let exported_rpo = stack.metric("cephdr_rbd_pool_rpo_seconds", &labels);
    assert_eq!(exported_rpo, Some(f64::from(RPO)));
    let image_labels = [("site", "site-b"), ("pool", pool.as_str()), ("image", "db")];
    wait_until("the lag metric above twice the RPO", || {
        let lag = stack.metric("cephdr_rbd_image_lag_seconds", &image_labels);
        Ok(lag.filter(|&lag| lag > 2.0 * f64::from(RPO)))
    })
    .await?;
    assert_ne!(
        sites.b.image_checksum(&spec)?,
        written,
        "B has not received the write while rbd-mirror is down"
    );

    // rbd-mirror runs again: B catches up and the RPO is met again.
    sites.b.start_rbd_mirror()?;
    wait_until("the write on B", || {
        Ok((sites.b.image_checksum(&spec)? == written).then_some(()))
    })
    .await?;
    rpo_met(&stack, "True").await?;
    let lag = stack.metric("cephdr_rbd_image_lag_seconds", &image_labels);
    assert!(
        lag.is_some_and(|lag| lag <= f64::from(RPO)),
        "the lag metric back within the RPO: {lag:?}"
    );
    Ok(())
}
