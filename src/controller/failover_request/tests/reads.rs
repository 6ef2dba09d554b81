//! What each call reads: the preflight every image of the pool, later calls only the images left to act on
//! or wait for, the verification every image of the plan.

use std::{collections::BTreeSet, time::Duration};

use super::{request, Lab, Request, SpecExt, B, POOL};
use crate::{
    agent::ImageMirrorMode,
    api::failover_request::{FailoverAction, FailoverPhase},
    controller::failover_request::plan::{images_to_read, ImageReads},
};

fn reads(images: &[&str]) -> Option<ImageReads> {
    let images: BTreeSet<String> = images.iter().map(|i| i.to_string()).collect();
    Some(ImageReads::from([(POOL.to_string(), images)]))
}

#[test]
fn after_the_preflight_a_call_reads_only_unsettled_images_and_verifies_on_all_of_them() {
    let lab = Lab::new().with_pool(&["a", "b", "c"], ImageMirrorMode::Snapshot);
    let mut req = Request::new(request(FailoverAction::Planned, B).concurrency(1));
    let mut calls = Vec::new();
    while !req.status.phase.is_terminal() && calls.len() < 100 {
        let read = images_to_read(&req.status);
        let transition = lab.reconcile(&mut req);
        calls.push((read, transition.requeue));
    }

    assert_eq!(req.status.phase, FailoverPhase::Completed, "{:#?}", req.status);
    for image in ["a", "b", "c"] {
        assert_eq!(lab.primaries(image), [B]);
    }
    assert_eq!(calls[0].0, None, "the preflight lists the pool");
    assert!(
        calls.iter().any(|(read, _)| *read == reads(&["b", "c"])),
        "a handed over is no longer read while b and c move: {calls:?}"
    );
    // The last promote settles on a read of its image alone; the verification reads them all again, at once.
    let [.., (before, again), (last, _)] = calls.as_slice() else {
        panic!("too few calls: {calls:?}");
    };
    assert_eq!((before, *again), (&reads(&["c"]), Duration::ZERO));
    assert_eq!(*last, reads(&["a", "b", "c"]));
}

#[test]
fn a_request_that_settles_every_image_in_one_call_verifies_on_that_read() {
    let lab = Lab::new().with_pool(&["a", "b"], ImageMirrorMode::Snapshot);
    let mut req = Request::new(request(FailoverAction::Planned, B));
    let mut calls = 0;
    while !req.status.phase.is_terminal() && calls < 100 {
        let transition = lab.reconcile(&mut req);
        assert_ne!(
            transition.requeue,
            Duration::ZERO,
            "no second read: {:#?}",
            req.status
        );
        calls += 1;
    }
    assert_eq!(req.status.phase, FailoverPhase::Completed, "{:#?}", req.status);
}
