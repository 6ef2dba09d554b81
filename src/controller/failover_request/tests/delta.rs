//! A planned failover of a delta-sync pool against a small model of the two sites: each holds the pool's
//! images with their sync snapshots, the pool records its primary, and the pool's delta-sync (not the
//! request) ships a snapshot when the test says so.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::{request, A, B, POOL};
use crate::{
    agent::{delta_sync::snapshot_name, AgentError, RbdPoolState, Step, SyncImage, SyncPool},
    api::{
        conditions::{self, reason},
        failover_request::{
            FailoverAction, FailoverPhase, FailoverRequestSpec, FailoverRequestStatus, StepState,
        },
        rbd_mirror_pool::RbdMirrorPoolSpec,
    },
    controller::failover_request::plan::{
        next, reason as request_reason, Handover, Observed, ObservedPool, ObservedPoolSite, Transition,
        BLOCKED, RESYNC_REQUIRED, SITE_UNREACHABLE,
    },
};

struct Model {
    spec: RbdMirrorPoolSpec,
    /// Per site (A, B): the pool's images; `None` while the site does not answer.
    sites: [Option<SyncPool>; 2],
    primary: &'static str,
    now: Timestamp,
}

/// The sync snapshot taken on site A at `seconds`.
fn snapshot(seconds: i64) -> String {
    taken_on(A, seconds)
}

fn taken_on(site: &str, seconds: i64) -> String {
    let other = if site == A { B } else { A };
    snapshot_name(site, other, Timestamp::from_second(seconds).unwrap())
}

impl Model {
    /// Images `db` and `logs` on both sites, each holding snapshot 1000 (taken 60 s ago); A is primary.
    fn new() -> Model {
        let spec = serde_json::from_value(serde_json::json!({
            "pool": POOL,
            "engine": "delta-sync",
            "sites": [{"site": A, "role": "primary"}, {"site": B, "role": "secondary"}],
            "snapshotSchedules": [{"interval": "5m"}],
        }))
        .unwrap();
        let images = ["db", "logs"].map(|name| SyncImage {
            name: name.into(),
            snapshots: vec![snapshot(1000)],
            transfers: Vec::new(),
        });
        let pool = SyncPool {
            exists: true,
            images: images.to_vec(),
        };
        Model {
            spec,
            sites: [Some(pool.clone()), Some(pool)],
            primary: A,
            now: Timestamp::from_second(1060).unwrap(),
        }
    }

    fn index(site: &str) -> usize {
        usize::from(site == B)
    }

    fn image(&mut self, site: &str, image: &str) -> &mut SyncImage {
        let pool = self.sites[Model::index(site)].as_mut().expect("site answers");
        pool.images.iter_mut().find(|i| i.name == image).unwrap()
    }

    fn observe(&self) -> Observed {
        let sites = [A, B]
            .iter()
            .zip(&self.sites)
            .map(|(site, pool)| ObservedPoolSite {
                site: site.to_string(),
                pool: match pool {
                    Some(pool) => Ok(RbdPoolState {
                        exists: pool.exists,
                        ..RbdPoolState::default()
                    }),
                    None => Err(AgentError::Unreachable {
                        site: site.to_string(),
                        message: "connection refused".into(),
                    }),
                },
                sync: pool.clone(),
            });
        Observed {
            pools: vec![ObservedPool {
                name: POOL.into(),
                spec: self.spec.clone(),
                only_images: None,
                sites: sites.collect(),
                recorded_primary: Some(Ok(self.primary.to_string())),
            }],
            realms: Vec::new(),
            blocking_requests: Vec::new(),
            checked_copies: Vec::new(),
        }
    }

    /// One reconcile: plan, then run the steps and the handovers as the reconciler would; a second later.
    fn round(&mut self, spec: &FailoverRequestSpec, status: &mut FailoverRequestStatus) -> Transition {
        let transition = next(spec, status, &self.observe(), self.now);
        for step in transition.steps.iter().chain(&transition.then) {
            match &step.step {
                Step::CreateSyncSnapshot { image, snap, .. } => {
                    self.image(&step.site, image).snapshots.push(snap.clone())
                }
                Step::PromoteSyncCopy {
                    image,
                    from_snap,
                    snap,
                    ..
                } => {
                    let copy = self.image(&step.site, image);
                    assert_eq!(
                        copy.snapshots.last(),
                        Some(from_snap),
                        "promoted from the newest point"
                    );
                    copy.snapshots.push(snap.clone());
                }
                other => panic!("unexpected step {other}"),
            }
        }
        for Handover { pool, site } in &transition.handovers {
            assert_eq!(pool, POOL);
            self.primary = if site == A { A } else { B };
        }
        *status = transition.status.clone();
        self.now = self.now.checked_add(SignedDuration::from_secs(1)).unwrap();
        transition
    }

    /// The pool's delta-sync: every image's newest snapshot on the primary reaches the other site.
    fn ship(&mut self) {
        let copy = if self.primary == A { B } else { A };
        for name in ["db", "logs"] {
            let newest = self.image(self.primary, name).snapshots.last().cloned().unwrap();
            let target = self.image(copy, name);
            if !target.snapshots.contains(&newest) {
                target.snapshots.push(newest);
            }
        }
    }
}

fn rows(status: &FailoverRequestStatus) -> Vec<(String, String, StepState)> {
    status
        .steps
        .iter()
        .map(|row| (row.name.clone(), row.target.clone(), row.state))
        .collect()
}

#[test]
fn planned_failover_takes_a_final_snapshot_waits_until_the_target_holds_it_then_records_the_target() {
    let mut model = Model::new();
    let spec = request(FailoverAction::Planned, B);
    let mut status = FailoverRequestStatus::default();

    let demoting = model.round(&spec, &mut status);
    assert_eq!(status.phase, FailoverPhase::Demoting);
    let finals: Vec<String> = demoting.steps.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        finals,
        [
            format!("create-sync-snapshot rbd/db@{}@site-a", snapshot(1060)),
            format!("create-sync-snapshot rbd/logs@{}@site-a", snapshot(1060)),
        ],
        "a final snapshot of the pair's series on the source"
    );

    for _ in 0..3 {
        let waiting = model.round(&spec, &mut status);
        assert_eq!(status.phase, FailoverPhase::Syncing);
        assert!(waiting.steps.is_empty() && waiting.handovers.is_empty());
        let ready = conditions::find(&status.conditions, conditions::READY).unwrap();
        assert!(
            ready.message.contains("waiting for site site-b to receive"),
            "{}",
            ready.message
        );
    }
    model.ship();

    let handing_over = model.round(&spec, &mut status);
    assert_eq!(status.phase, FailoverPhase::Promoting);
    assert_eq!(
        handing_over.handovers,
        [Handover {
            pool: POOL.into(),
            site: B.into()
        }],
        "one record for the pool, however many images"
    );
    assert_eq!(model.primary, B);
    model.round(&spec, &mut status);
    assert_eq!(status.phase, FailoverPhase::Completed, "{:?}", status.conditions);
    let target = |image: &str, site: &str| format!("rbd/{image}@{site}");
    assert_eq!(
        rows(&status),
        [
            ("final-snapshot".into(), target("db", A), StepState::Done),
            ("final-snapshot".into(), target("logs", A), StepState::Done),
            ("await-sync".into(), target("db", B), StepState::Done),
            ("await-sync".into(), target("logs", B), StepState::Done),
            ("promote".into(), target("db", B), StepState::Done),
            ("promote".into(), target("logs", B), StepState::Done),
        ]
    );
}

#[test]
fn a_newer_snapshot_on_the_source_must_reach_the_target_before_the_handover() {
    let mut model = Model::new();
    let spec = request(FailoverAction::Planned, B);
    let mut status = FailoverRequestStatus::default();
    model.round(&spec, &mut status);
    model.ship();
    // The pool's schedule took another snapshot on A after the final one reached B.
    let later = snapshot(model.now.as_second());
    model.image(A, "db").snapshots.push(later);
    let held = model.round(&spec, &mut status);
    assert_eq!(status.phase, FailoverPhase::Syncing);
    assert!(held.handovers.is_empty(), "A's newest point is not on B yet");
    assert_eq!(model.primary, A);
    model.ship();
    model.round(&spec, &mut status);
    assert_eq!(model.primary, B);
    model.round(&spec, &mut status);
    assert_eq!(status.phase, FailoverPhase::Completed);
    assert_eq!(model.primary, B);
}

#[test]
fn a_pool_already_primary_on_the_target_completes_without_a_handover() {
    let mut model = Model::new();
    model.primary = B;
    let spec = request(FailoverAction::Planned, B);
    let mut status = FailoverRequestStatus::default();
    let transition = model.round(&spec, &mut status);
    assert_eq!(status.phase, FailoverPhase::Completed);
    assert!(transition.steps.is_empty() && transition.handovers.is_empty());
    assert!(rows(&status)
        .iter()
        .all(|(_, _, state)| *state == StepState::Skipped));
}

fn preflight_failure(model: &mut Model, spec: &FailoverRequestSpec) -> (String, String) {
    let mut status = FailoverRequestStatus::default();
    let transition = model.round(spec, &mut status);
    assert_eq!(status.phase, FailoverPhase::Failed);
    assert!(transition.steps.is_empty() && transition.handovers.is_empty());
    let ready = conditions::find(&status.conditions, conditions::READY).unwrap();
    (ready.reason.clone(), ready.message.clone())
}

#[test]
fn the_preflight_refuses_other_actions_a_copy_without_a_common_snapshot_and_too_much_lag() {
    for action in [
        FailoverAction::Failback,
        FailoverAction::Resync,
        FailoverAction::Drill,
    ] {
        let (_, message) = preflight_failure(&mut Model::new(), &request(action, B));
        assert!(
            message.contains("planned or emergency failover only"),
            "{message}"
        );
    }

    let mut never_synced = Model::new();
    never_synced.image(B, "logs").snapshots.clear();
    let (why, message) = preflight_failure(&mut never_synced, &request(FailoverAction::Planned, B));
    assert_eq!(why, reason::BEHIND);
    assert!(message.contains("rbd/logs"), "{message}");

    let mut lagging = Model::new();
    let spec = FailoverRequestSpec {
        max_lag_seconds: Some(30),
        ..request(FailoverAction::Planned, B)
    };
    let (why, message) = preflight_failure(&mut lagging, &spec);
    assert_eq!(why, reason::LAG_ABOVE_TARGET);
    assert!(message.contains("lag 60 s"), "{message}");
}

#[test]
fn an_unreachable_target_is_waited_out_and_nothing_is_handed_over() {
    let mut model = Model::new();
    let spec = request(FailoverAction::Planned, B);
    let mut status = FailoverRequestStatus::default();
    model.round(&spec, &mut status);
    let b = model.sites[1].take();
    let waiting = model.round(&spec, &mut status);
    assert!(waiting.handovers.is_empty());
    assert_ne!(status.phase, FailoverPhase::Failed);
    assert!(conditions::is_true(&status.conditions, SITE_UNREACHABLE));
    model.sites[1] = b;
    model.ship();
    for _ in 0..3 {
        model.round(&spec, &mut status);
    }
    assert_eq!(status.phase, FailoverPhase::Completed);
    assert_eq!(model.primary, B);
    assert!(!conditions::is_true(&status.conditions, BLOCKED));
}

#[test]
fn an_emergency_promotes_the_copy_from_its_newest_point_on_the_target_alone_then_records_it() {
    let mut model = Model::new();
    model.sites[0] = None;
    // B received a newer point of db than of logs.
    model.image(B, "db").snapshots.push(snapshot(1030));
    let spec = request(FailoverAction::Emergency, B);
    let mut status = FailoverRequestStatus::default();

    let promoting = model.round(&spec, &mut status);
    assert_eq!(
        status.data_loss_window_seconds,
        Some(60),
        "from the oldest newest point: logs at 1000"
    );
    let steps: Vec<String> = promoting.steps.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        steps,
        [
            format!(
                "promote-sync-copy rbd/db@{}..{}@site-b",
                snapshot(1030),
                taken_on(B, 1060)
            ),
            format!(
                "promote-sync-copy rbd/logs@{}..{}@site-b",
                snapshot(1000),
                taken_on(B, 1060)
            ),
        ]
    );
    assert!(
        promoting.handovers.is_empty(),
        "recorded only once the copies are promoted"
    );
    let recording = model.round(&spec, &mut status);
    assert_eq!(recording.handovers.len(), 1);
    assert!(
        recording.steps.is_empty(),
        "the same promotion snapshot is not asked for twice"
    );
    model.round(&spec, &mut status);
    assert_eq!(status.phase, FailoverPhase::Completed, "{:?}", status.conditions);
    assert_eq!(model.primary, B);
    let resync = conditions::find(&status.conditions, RESYNC_REQUIRED).unwrap();
    assert_eq!(resync.status, "True");
    assert!(resync.message.contains("rbd snap rollback"), "{}", resync.message);
}

#[test]
fn an_emergency_refuses_a_copy_that_never_synced() {
    let mut model = Model::new();
    model.image(B, "logs").snapshots.clear();
    let (why, message) = preflight_failure(&mut model, &request(FailoverAction::Emergency, B));
    assert_eq!(why, request_reason::PREFLIGHT_FAILED);
    assert!(
        message.contains("rbd/logs") && message.contains("nothing to promote"),
        "{message}"
    );
    assert_eq!(model.primary, A);
}
