//! The delta-sync planner against a small model of the two sites: the primary's agent runs transfers, and a
//! finished one leaves its snapshot on the copy, as the receiver does.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::{find, rendered, spec};
use crate::{
    agent::{
        delta_sync::snapshot_name, Sensitive, Step, SyncImage, SyncPeer, SyncPool, Transfer, TransferReport,
    },
    api::{
        conditions::{reason, READY, RPO_MET, SYNCED},
        rbd_mirror_pool::{RbdMirrorPoolSpec, SnapshotSchedule},
    },
    controller::rbd_mirror_pool::{
        plan::{
            delta_sync::{plan, DeltaObserved, ObservedSyncSite, NO_RECEIVER, TRANSFER_FAILED},
            PoolPlan,
        },
        status::{STATE_ERROR, STATE_MISSING, STATE_SYNCED},
    },
};

struct Sites {
    site_a: Result<SyncPool, String>,
    site_b: Result<SyncPool, String>,
    /// Where the images are primary (site-a unless a test fails over).
    primary: &'static str,
    receiver: Result<SyncPeer, (&'static str, String)>,
    deleting: bool,
    now: Timestamp,
}

fn receiver() -> SyncPeer {
    SyncPeer {
        address: "sync-b:7444".into(),
        server_name: "sync-b".into(),
        ca_pem: None,
        token: Sensitive("token".into()),
    }
}

fn pool_with(images: &[&str]) -> SyncPool {
    SyncPool {
        exists: true,
        images: images
            .iter()
            .map(|name| SyncImage {
                name: name.to_string(),
                ..SyncImage::default()
            })
            .collect(),
    }
}

impl Sites {
    /// `images` on the primary, the pool absent on the copy, a receiver configured; 12:00:30 UTC.
    fn new(images: &[&str]) -> Sites {
        Sites {
            site_a: Ok(pool_with(images)),
            site_b: Ok(SyncPool::default()),
            primary: "site-a",
            receiver: Ok(receiver()),
            deleting: false,
            now: "2026-12-02T12:00:30Z".parse().unwrap(),
        }
    }

    fn plan(&self, spec: &RbdMirrorPoolSpec) -> PoolPlan {
        let observed = DeltaObserved {
            primary: ObservedSyncSite {
                site: self.primary.into(),
                pool: self.observed(self.primary).clone(),
            },
            copy: ObservedSyncSite {
                site: self.copy_site().into(),
                pool: self.observed(self.copy_site()).clone(),
            },
            receiver: self.receiver.clone(),
            deleting: self.deleting,
        };
        plan(spec, &observed, self.now)
    }

    fn copy_site(&self) -> &'static str {
        match self.primary {
            "site-a" => "site-b",
            _ => "site-a",
        }
    }

    fn observed(&self, site: &str) -> &Result<SyncPool, String> {
        match site {
            "site-a" => &self.site_a,
            _ => &self.site_b,
        }
    }

    fn pool(&mut self, site: &str) -> &mut SyncPool {
        let pool = match site {
            "site-a" => &mut self.site_a,
            _ => &mut self.site_b,
        };
        pool.as_mut().expect("observed")
    }

    fn image(&mut self, site: &str, name: &str) -> &mut SyncImage {
        let pool = self.pool(site);
        if !pool.images.iter().any(|i| i.name == name) {
            pool.images.push(SyncImage {
                name: name.into(),
                ..SyncImage::default()
            });
        }
        pool.images.iter_mut().find(|i| i.name == name).unwrap()
    }

    /// Runs the plan's steps as the agents would; transfers start and keep running.
    fn apply(&mut self, plan: &PoolPlan) {
        let now = self.now;
        for step in &plan.plan.steps {
            match &step.step {
                Step::CreatePool { .. } => self.pool(&step.site).exists = true,
                Step::CreateSyncSnapshot { image, snap, .. } => {
                    self.image(&step.site, image).snapshots.push(snap.clone())
                }
                Step::RemoveSyncSnapshot { image, snap, .. } => {
                    self.image(&step.site, image).snapshots.retain(|s| s != snap)
                }
                Step::SendDelta {
                    image,
                    from_snap,
                    to_snap,
                    peer,
                    ..
                } => {
                    let transfers = &mut self.image(&step.site, image).transfers;
                    let previous = transfers.iter().position(|t| t.peer == peer.address);
                    if let Some(index) = previous {
                        assert!(!transfers[index].running(), "{image} shipped twice");
                        transfers.remove(index);
                    }
                    transfers.push(Transfer {
                        peer: peer.address.clone(),
                        from_snap: from_snap.clone(),
                        to_snap: to_snap.clone(),
                        started: now,
                        finished: None,
                        report: None,
                        error: None,
                        permanent: false,
                    });
                }
                other => panic!("unexpected step {other}"),
            }
        }
    }

    /// Finishes every running transfer, applied (its snapshot appears on the copy) or failed.
    fn finish_transfers(&mut self, failure: Option<&str>) {
        self.end_transfers(failure, false)
    }

    fn end_transfers(&mut self, failure: Option<&str>, permanent: bool) {
        let now = self.now;
        let mut applied = Vec::new();
        for image in &mut self.pool(self.primary).images {
            let Some(transfer) = image.transfers.iter_mut().find(|t| t.running()) else {
                continue;
            };
            transfer.finished = Some(now.checked_add(SignedDuration::from_secs(3)).unwrap());
            match failure {
                Some(error) => {
                    transfer.error = Some(error.into());
                    transfer.permanent = permanent;
                }
                None => {
                    transfer.report = Some(TransferReport {
                        changed_bytes: 4096,
                        wire_bytes: 4200,
                        chunks: 1,
                        chunks_sent: 1,
                    });
                    applied.push((image.name.clone(), transfer.to_snap.clone()));
                }
            }
        }
        for (image, snap) in applied {
            self.image(self.copy_site(), &image).snapshots.push(snap);
        }
    }

    fn advance(&mut self, seconds: i64) {
        self.now = self.now.checked_add(SignedDuration::from_secs(seconds)).unwrap();
    }

    /// Plans and applies until a plan has no steps, finishing transfers in between.
    fn settle(&mut self, spec: &RbdMirrorPoolSpec) -> PoolPlan {
        for _ in 0..10 {
            let plan = self.plan(spec);
            if plan.plan.steps.is_empty() {
                return plan;
            }
            self.apply(&plan);
            self.finish_transfers(None);
        }
        panic!("no fixed point in 10 rounds");
    }
}

const A: &str = "site-a";
const B: &str = "site-b";

fn delta_spec() -> RbdMirrorPoolSpec {
    spec().delta_sync().all_images().schedule("5m").build()
}

#[test]
fn a_new_pool_creates_the_copy_pool_and_snapshots_every_image() {
    let spec = delta_spec();
    let sites = Sites::new(&["db", "logs"]);
    let plan = sites.plan(&spec);
    let snap = snapshot_name(A, B, sites.now);
    assert_eq!(
        rendered(&plan.plan.steps),
        [
            "create-pool rbd@site-b".to_string(),
            format!("create-sync-snapshot rbd/db@{snap}@site-a"),
            format!("create-sync-snapshot rbd/logs@{snap}@site-a"),
        ]
    );
    assert_eq!(find(&plan.plan.conditions, READY).reason, reason::PROGRESSING);
    assert_eq!(plan.plan.requeue, Duration::from_secs(5));
}

#[test]
fn the_first_snapshot_ships_whole_then_the_next_as_a_delta_from_the_common_one() {
    let spec = delta_spec();
    let mut sites = Sites::new(&["db"]);
    sites.apply(&sites.plan(&spec));
    let first = snapshot_name(A, B, sites.now);
    let ship = sites.plan(&spec);
    assert_eq!(
        ship.plan.steps[0].step,
        Step::SendDelta {
            pool: "rbd".into(),
            image: "db".into(),
            from_snap: None,
            to_snap: first.clone(),
            peer: receiver(),
            options: Default::default(),
        }
    );
    sites.apply(&ship);
    let running = sites.plan(&spec);
    assert!(running.plan.steps.is_empty(), "a running transfer is waited for");
    assert_eq!(running.status.images[0].state, "syncing");
    sites.finish_transfers(None);

    let synced = sites.plan(&spec);
    assert!(synced.plan.steps.is_empty(), "the next snapshot is not due yet");
    let image = &synced.status.images[0];
    assert_eq!(
        (image.state.as_str(), image.synced_snapshot.as_deref()),
        (STATE_SYNCED, Some(first.as_str()))
    );
    assert_eq!(image.lag_seconds, Some(0));
    let transfer = image.last_transfer.as_ref().unwrap();
    assert_eq!(
        (
            transfer.bytes_changed,
            transfer.bytes_shipped,
            transfer.duration_seconds
        ),
        (Some(4096), Some(4200), Some(3))
    );
    assert_eq!(find(&synced.plan.conditions, READY).status, "True");
    assert_eq!(find(&synced.plan.conditions, SYNCED).status, "True");
    assert_eq!(
        synced.plan.requeue,
        Duration::from_secs(60),
        "the 12:05 slot is 270 s away; status refreshes each minute"
    );
    sites.advance(250);
    assert_eq!(
        sites.plan(&spec).plan.requeue,
        Duration::from_secs(20),
        "12:04:40 wakes at 12:05"
    );
    sites.advance(-250);

    sites.advance(300);
    let second = snapshot_name(A, B, sites.now);
    let settled = sites.settle(&spec);
    assert_eq!(
        settled.status.images[0].synced_snapshot.as_deref(),
        Some(second.as_str())
    );
    let transfer = settled.status.images[0].last_transfer.as_ref().unwrap();
    assert_eq!(
        transfer.from_snapshot.as_deref(),
        Some(first.as_str()),
        "a delta, not a full copy"
    );
    for site in ["site-a", "site-b"] {
        assert_eq!(
            sites.image(site, "db").snapshots,
            std::slice::from_ref(&second),
            "{site} keeps only the common snapshot"
        );
    }
}

#[test]
fn transfers_beyond_the_limit_wait_for_a_slot() {
    let spec = spec()
        .delta_sync()
        .all_images()
        .schedule("5m")
        .max_transfers(2)
        .build();
    let mut sites = Sites::new(&["a1", "a2", "a3", "a4", "a5"]);
    sites.apply(&sites.plan(&spec));
    let ship = sites.plan(&spec);
    let sends = ship
        .plan
        .steps
        .iter()
        .filter(|s| s.step.verb() == "send-delta")
        .count();
    assert_eq!(sends, 2);
    sites.apply(&ship);
    assert!(sites.plan(&spec).plan.steps.is_empty(), "no slot while two run");
    sites.finish_transfers(None);
    let next = sites.plan(&spec);
    assert_eq!(
        next.plan
            .steps
            .iter()
            .filter(|s| s.step.verb() == "send-delta")
            .count(),
        2
    );
    let waiting = next.status.images.iter().find(|i| i.name == "a5").unwrap();
    assert!(
        waiting
            .description
            .as_deref()
            .unwrap()
            .contains("waits to be shipped"),
        "{waiting:?}"
    );
    let settled = sites.settle(&spec);
    assert!(settled.status.images.iter().all(|i| i.state == STATE_SYNCED));
}

#[test]
fn a_failed_transfer_is_reported_and_started_again() {
    let spec = delta_spec();
    let mut sites = Sites::new(&["db"]);
    sites.apply(&sites.plan(&spec));
    sites.apply(&sites.plan(&spec));
    sites.finish_transfers(Some("chunk 3 failed its checksum 5 times"));
    let plan = sites.plan(&spec);
    let ready = find(&plan.plan.conditions, READY);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", TRANSFER_FAILED)
    );
    assert!(
        ready.message.contains("chunk 3 failed its checksum"),
        "{}",
        ready.message
    );
    assert_eq!(plan.status.images[0].state, STATE_ERROR);
    assert_eq!(rendered(&plan.plan.steps).len(), 1);
    assert_eq!(
        plan.plan.steps[0].step.verb(),
        "send-delta",
        "the retry resumes from the receiver's checkpoint"
    );
}

#[test]
fn without_a_receiver_nothing_ships_and_ready_says_why() {
    let spec = delta_spec();
    let mut sites = Sites::new(&["db"]);
    sites.receiver = Err((
        NO_RECEIVER,
        "CephSite site-b names no delta-sync receiver (spec.sync)".into(),
    ));
    sites.apply(&sites.plan(&spec));
    let plan = sites.plan(&spec);
    assert!(plan.plan.steps.is_empty());
    let ready = find(&plan.plan.conditions, READY);
    assert_eq!(
        (ready.reason.as_str(), ready.message.contains("spec.sync")),
        (NO_RECEIVER, true)
    );
}

#[test]
fn an_unreachable_copy_site_ships_nothing_and_prunes_nothing() {
    let spec = delta_spec();
    let mut sites = Sites::new(&["db"]);
    sites.settle(&spec);
    sites.advance(300);
    sites.apply(&sites.plan(&spec));
    sites.site_b = Err("agent of site site-b unreachable: connection refused".into());
    let plan = sites.plan(&spec);
    assert!(plan.plan.steps.is_empty(), "{:?}", rendered(&plan.plan.steps));
    assert_eq!(
        find(&plan.plan.conditions, READY).reason,
        reason::AGENT_UNREACHABLE
    );
}

#[test]
fn snapshots_a_running_transfer_reads_are_kept() {
    let spec = delta_spec();
    let mut sites = Sites::new(&["db"]);
    sites.settle(&spec);
    let first = sites.image("site-a", "db").snapshots[0].clone();
    sites.advance(300);
    sites.apply(&sites.plan(&spec));
    sites.apply(&sites.plan(&spec));
    let running = sites.plan(&spec);
    assert!(running.plan.steps.is_empty());
    assert!(
        sites.image("site-a", "db").has_snapshot(&first),
        "the delta's base stays while it ships"
    );
}

#[test]
fn a_named_image_missing_on_the_primary_is_reported() {
    let spec = spec().delta_sync().images(&["db", "gone"]).schedule("5m").build();
    let sites = Sites::new(&["db"]);
    let plan = sites.plan(&spec);
    let gone = plan.status.images.iter().find(|i| i.name == "gone").unwrap();
    assert_eq!(gone.state, STATE_MISSING);
    assert!(plan.plan.steps.iter().all(|s| !s.step.target().contains("gone")));
}

#[test]
fn a_missing_primary_pool_waits_and_plans_nothing_there() {
    let spec = delta_spec();
    let mut sites = Sites::new(&[]);
    sites.site_a = Ok(SyncPool::default());
    let plan = sites.plan(&spec);
    assert_eq!(rendered(&plan.plan.steps), ["create-pool rbd@site-b"]);
    let ready = find(&plan.plan.conditions, READY);
    assert_eq!(ready.reason, reason::WAITING_FOR_DEPENDENCY);
    assert!(
        ready.message.contains("does not exist on site-a"),
        "{}",
        ready.message
    );
}

#[test]
fn lag_beyond_the_rpo_clears_rpo_met() {
    let spec = spec().delta_sync().all_images().schedule("1h").rpo(600).build();
    let mut sites = Sites::new(&["db"]);
    sites.settle(&spec);
    assert_eq!(find(&sites.plan(&spec).plan.conditions, RPO_MET).status, "True");
    sites.advance(900);
    let plan = sites.plan(&spec);
    let rpo = find(&plan.plan.conditions, RPO_MET);
    assert_eq!(
        (rpo.status.as_str(), rpo.reason.as_str()),
        ("False", reason::LAG_ABOVE_TARGET)
    );
}

#[test]
fn schedules_take_snapshots_on_their_start_time_slots() {
    let mut spec = delta_spec();
    spec.snapshot_schedules = vec![SnapshotSchedule {
        interval: "1h".into(),
        start_time: Some("00:30:00".into()),
    }];
    let mut sites = Sites::new(&["db"]);
    sites.now = "2026-12-02T12:31:00Z".parse().unwrap();
    sites.settle(&spec);
    sites.advance(58 * 60);
    assert!(
        sites.plan(&spec).plan.steps.is_empty(),
        "13:29 is still in the 12:30 slot"
    );
    sites.advance(60);
    let plan = sites.plan(&spec);
    assert_eq!(
        plan.plan.steps[0].step.verb(),
        "create-sync-snapshot",
        "13:30 starts a new slot"
    );
}

#[test]
fn deleting_removes_cephdrs_snapshots_on_both_sites_or_keeps_them_with_retain() {
    let spec = delta_spec();
    let mut sites = Sites::new(&["db"]);
    sites.settle(&spec);
    sites.deleting = true;
    let plan = sites.plan(&spec);
    assert_eq!(plan.plan.steps.len(), 2);
    assert!(plan
        .plan
        .steps
        .iter()
        .all(|s| s.step.verb() == "remove-sync-snapshot"));
    assert!(!plan.cleanup_complete);
    sites.apply(&plan);
    assert!(sites.plan(&spec).cleanup_complete);

    let mut retained = delta_spec();
    retained.deletion_policy = crate::api::common::DeletionPolicy::Retain;
    let mut sites = Sites::new(&["db"]);
    sites.settle(&retained);
    sites.deleting = true;
    let plan = sites.plan(&retained);
    assert!(plan.plan.steps.is_empty() && plan.cleanup_complete);
}

#[test]
fn the_copy_keeps_its_newest_snapshots_and_other_series_are_left_alone() {
    let mut spec = delta_spec();
    spec.delta_sync
        .get_or_insert_with(Default::default)
        .keep_snapshots = Some(2);
    let mut sites = Sites::new(&["db"]);
    let backup_series = "cephdr-sync-site-a_vault-1700000000".to_string();
    sites.image("site-a", "db").snapshots.push(backup_series.clone());
    let mut taken = Vec::new();
    for _ in 0..3 {
        taken.push(snapshot_name(A, B, sites.now));
        sites.settle(&spec);
        sites.advance(300);
    }
    assert_eq!(
        sites.image("site-b", "db").snapshots,
        taken[1..],
        "the copy keeps two points"
    );
    assert_eq!(
        sites.image("site-a", "db").snapshots,
        [backup_series, taken[2].clone()],
        "the primary keeps the delta base, and another pool's series untouched"
    );
}

#[test]
fn a_refused_transfer_is_tried_again_only_after_a_while() {
    let spec = delta_spec();
    let mut sites = Sites::new(&["db"]);
    sites.settle(&spec);
    sites.advance(300);
    sites.apply(&sites.plan(&spec));
    sites.apply(&sites.plan(&spec));
    sites.end_transfers(
        Some("image rbd/db was written since cephdr-sync-site-a_site-b-1"),
        true,
    );
    sites.advance(5);
    let held = sites.plan(&spec);
    assert!(held.plan.steps.is_empty(), "{:?}", rendered(&held.plan.steps));
    assert_eq!(find(&held.plan.conditions, READY).reason, TRANSFER_FAILED);
    assert!(held.status.images[0]
        .description
        .as_deref()
        .unwrap()
        .contains("written since"));
    sites.advance(300);
    let retried = sites.plan(&spec);
    assert_eq!(rendered(&retried.plan.steps).len(), 1);
    assert_eq!(retried.plan.steps[0].step.verb(), "send-delta");
}

#[test]
fn after_a_failover_the_new_primary_ships_a_delta_from_the_snapshot_both_sites_hold() {
    let spec = delta_spec();
    let mut sites = Sites::new(&["db"]);
    sites.settle(&spec);
    let handed_over = sites.image("site-a", "db").snapshots.clone();
    assert_eq!(sites.image("site-b", "db").snapshots, handed_over);

    sites.primary = "site-b";
    let idle = sites.plan(&spec);
    assert!(idle.plan.steps.is_empty(), "nothing is due on site-b yet");
    assert_eq!(idle.status.primary_site.as_deref(), Some("site-b"));
    sites.advance(300);
    let snapshot = sites.plan(&spec);
    let taken = snapshot_name(B, A, sites.now);
    assert_eq!(
        rendered(&snapshot.plan.steps),
        [format!("create-sync-snapshot rbd/db@{taken}@site-b")],
        "the pair's series goes on, now taken on site-b"
    );
    sites.apply(&snapshot);
    let ship = sites.plan(&spec);
    assert_eq!(ship.plan.steps.len(), 1);
    assert_eq!(ship.plan.steps[0].site, "site-b");
    let Step::SendDelta {
        from_snap, to_snap, ..
    } = &ship.plan.steps[0].step
    else {
        panic!("expected a transfer, got {}", ship.plan.steps[0].step);
    };
    assert_eq!(
        (from_snap.as_ref(), to_snap),
        (handed_over.last(), &taken),
        "a delta from the handed-over snapshot, not a full copy"
    );
    sites.apply(&ship);
    sites.finish_transfers(None);
    let settled = sites.settle(&spec);
    assert_eq!(
        settled.status.images[0].synced_snapshot.as_deref(),
        Some(taken.as_str())
    );
    assert_eq!(sites.image("site-a", "db").snapshots, [taken]);
}
