//! What each call reads: the preflight every image of the pool, later calls only the images they can act on
//! within the concurrency limit or wait for, the verification every image of the plan.

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
fn after_the_preflight_a_call_reads_only_the_images_it_can_act_on_now_and_verifies_on_all_of_them() {
    let lab = Lab::new().with_pool(&["a", "b", "c"], ImageMirrorMode::Snapshot);
    let mut req = Request::new(request(FailoverAction::Planned, B).concurrency(1));
    let mut calls = Vec::new();
    while !req.status.phase.is_terminal() && calls.len() < 100 {
        let phase = req.status.phase;
        let read = images_to_read(&req.spec, &req.status);
        let transition = lab.reconcile(&mut req);
        calls.push((phase, read, transition.requeue));
    }

    assert_eq!(req.status.phase, FailoverPhase::Completed, "{:#?}", req.status);
    for image in ["a", "b", "c"] {
        assert_eq!(lab.primaries(image), [B]);
    }
    assert_eq!(calls[0].1, None, "the preflight lists the pool");
    for (phase, read, _) in &calls {
        if matches!(phase, FailoverPhase::Demoting | FailoverPhase::Promoting) {
            let images = read.as_ref().map(|r| r[POOL].len());
            assert_eq!(images, Some(1), "one image at a time at concurrency 1: {calls:?}");
        }
    }
    assert!(
        calls
            .iter()
            .any(|(phase, read, _)| *phase == FailoverPhase::Syncing && *read == reads(&["a", "b", "c"])),
        "the demotions are awaited together, unbounded by the concurrency: {calls:?}"
    );
    // The last promote settles on a read of its image alone; the verification reads them all again, at once.
    let [.., (_, before, again), (_, last, _)] = calls.as_slice() else {
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

#[test]
fn a_large_request_reads_no_more_images_than_its_concurrency_while_it_acts() {
    let names: Vec<String> = (0..40).map(|i| format!("img-{i:02}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let lab = Lab::new().with_pool(&names, ImageMirrorMode::Snapshot);
    let mut req = Request::new(request(FailoverAction::Planned, B));
    let mut largest = 0;
    for _ in 0..100 {
        if req.status.phase.is_terminal() {
            break;
        }
        if matches!(
            req.status.phase,
            FailoverPhase::Demoting | FailoverPhase::Promoting
        ) {
            let read = images_to_read(&req.spec, &req.status).expect("a read of some images");
            largest = largest.max(read[POOL].len());
        }
        lab.reconcile(&mut req);
    }
    assert_eq!(req.status.phase, FailoverPhase::Completed, "{:#?}", req.status);
    assert_eq!(largest, 16, "the default concurrency bounds each read");
    for image in names {
        assert_eq!(lab.primaries(image), [B], "{image}");
    }
}
