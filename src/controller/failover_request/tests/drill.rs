//! Drills on RBD pools: the target's copy checked against the primary's snapshot by checksum, driven to
//! the end against the simulated sites.

use std::time::Duration;

use super::{request, Lab, Request, A, B, POOL, READ_TIME};
use crate::{
    agent::ImageMirrorMode,
    api::{
        conditions::{READY, STALLED},
        failover_request::{FailoverAction, FailoverPhase, StepState},
    },
    controller::failover_request::plan::reason,
};

fn snapshots() -> Lab {
    Lab::new().with_pool(&["db"], ImageMirrorMode::Snapshot)
}

/// The id of the newest mirror snapshot of `db` on `site`, and the peer snapshot it mirrors.
fn newest(lab: &Lab, site: &str) -> (u64, Option<u64>) {
    let snapshot = lab
        .image(site, "db")
        .and_then(|i| i.last_mirror_snapshot)
        .expect("a mirror snapshot");
    (snapshot.id, snapshot.primary_snap_id)
}

/// Runs a drill on `target` to its end, which must be Failed; its Stalled reason and message.
fn failed_drill(lab: &Lab, target: &str) -> (String, String) {
    let mut req = Request::new(request(FailoverAction::Drill, target));
    lab.run_to_end(&mut req);
    assert_eq!(req.status.phase, FailoverPhase::Failed, "{:#?}", req.status);
    assert!(req.ran.is_empty(), "a drill runs no step: {:?}", req.ran());
    assert_eq!(req.status.steps[0].state, StepState::Failed);
    assert_eq!(req.status.check_seconds, None);
    let stalled = req.condition(STALLED).expect("Stalled");
    (stalled.reason.clone(), stalled.message.clone())
}

#[test]
fn drill_checks_the_copy_against_the_primary_snapshot_it_mirrors_and_reports_rpo_and_time() {
    let lab = snapshots();
    lab.clock.advance(Duration::from_secs(40));
    let (copy, mirrored) = newest(&lab, B);
    let mut req = Request::new(request(FailoverAction::Drill, B));
    lab.run_to_end(&mut req);

    assert_eq!(req.status.phase, FailoverPhase::Completed, "{:#?}", req.status);
    assert!(req.ran.is_empty(), "a drill runs no step: {:?}", req.ran());
    assert_eq!(req.rows(), ["verify-copy rbd/db@site-b done"]);
    let row = req.status.steps[0].message.clone().unwrap_or_default();
    let mirrored = mirrored.expect("B's copy names A's snapshot");
    assert!(
        row.starts_with(&format!(
            "checksums match: snapshot {copy} on site site-b and snapshot {mirrored} on site site-a"
        )),
        "{row}"
    );
    assert_eq!(req.status.check_seconds, Some(READ_TIME.as_secs_f64()));
    // The copy's age when the drill ended: 5 s lag + 40 s + the reads.
    assert_eq!(req.status.measured_rpo_seconds, Some(46));
    let ready = req.condition(READY).expect("Ready").message.clone();
    assert!(
        ready.contains(
            "1 image copy(ies) match their primary snapshot by checksum (1.0 s); measured RPO 46 s"
        ),
        "{ready}"
    );
    assert_eq!(lab.primaries("db"), [A], "nothing was promoted");
}

#[test]
fn a_copy_that_differs_from_the_primary_snapshot_fails_the_drill_with_copy_mismatch() {
    let lab = snapshots();
    let (damaged, _) = newest(&lab, B);
    assert_eq!(
        lab.b.damage_newest_snapshot(POOL, "db").expect("damaged"),
        damaged
    );
    let (why, message) = failed_drill(&lab, B);

    assert_eq!(why, reason::COPY_MISMATCH);
    let expected = format!(
        "verify-copy rbd/db@site-b: checksum mismatch for rbd/db: snapshot {damaged} on site site-b holds"
    );
    assert!(message.starts_with(&expected), "{message}");
    assert_eq!(lab.primaries("db"), [A]);
}

#[test]
fn a_result_for_a_copy_that_moved_on_meanwhile_is_dropped_and_the_newer_copy_checked() {
    let (lab, mut req) = (snapshots(), Request::new(request(FailoverAction::Drill, B)));
    let first = lab.plan(&req);
    req.persist(&first);
    let [handed_out] = first.checks.as_slice() else {
        panic!("one check: {:?}", first.checks)
    };
    // A write and a snapshot on A reach B before the reads: B's newest copy is another snapshot now.
    lab.a.write_image(POOL, "db").expect("write");
    lab.snapshot(A, "db");
    lab.clock.advance(super::LAG);
    req.checked = lab.check_copies(&first.checks);
    let again = lab.plan(&req);
    req.checked.clear();

    let [newer] = again.checks.as_slice() else {
        panic!("the newer copy is checked: {:?}", again.checks)
    };
    assert_ne!(newer.copy.snap_id, handed_out.copy.snap_id);
    assert_eq!((newer.copy.snap_id, Some(newer.source.snap_id)), newest(&lab, B));
    req.persist(&again);
    lab.run_to_end(&mut req);
    assert_eq!(req.status.phase, FailoverPhase::Completed, "{:#?}", req.status);
}

#[test]
fn a_drill_on_the_primary_copy_fails_saying_it_checks_a_non_primary_one() {
    let (why, message) = failed_drill(&snapshots(), A);

    assert_eq!(why, reason::STEP_FAILED);
    assert!(
        message.contains("is primary on site site-a: a drill checks a non-primary copy"),
        "{message}"
    );
}

#[test]
fn a_copy_behind_what_the_primary_keeps_fails_the_drill() {
    let lab = snapshots();
    let (copy, _) = newest(&lab, B);
    lab.world.partition(A, B);
    // The primary takes more snapshots than it keeps while B receives none.
    for _ in 0..6 {
        lab.a.write_image(POOL, "db").expect("write");
        lab.snapshot(A, "db");
    }
    let (_, message) = failed_drill(&lab, B);

    assert!(
        message.contains("the copy is older than the snapshots the primary keeps"),
        "{message}"
    );
    assert_eq!(newest(&lab, B).0, copy, "B received nothing since");
    assert_eq!(lab.primaries("db"), [A]);
}
