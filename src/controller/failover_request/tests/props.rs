//! Property tests: whatever the interleaving of operator restarts (a handed-out step dropped, run partly or
//! run twice), site outages, partitions, lag and client writes, a request never leaves two primaries for an
//! image or two master zones, never promotes before the demote on the planned path, never hands out a step
//! whose row is settled, and plans nothing once terminal.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use proptest::{prelude::*, test_runner::TestCaseError};

use super::{image_of, request, row_of, Lab, Request, SpecExt, A, B, LAG, POOL, REALM};
use crate::{
    agent::{ImageMirrorMode, Step},
    api::{
        conditions::{reason as common, STALLED},
        failover_request::{
            FailoverAction, FailoverPhase, FailoverRequestSpec, FailoverRequestStatus, StepState,
        },
    },
    controller::failover_request::plan::{reason, Transition},
    plan::SiteStep,
};

const IMAGES: [&str; 3] = ["db", "logs", "cache"];
const MAX_FINAL_ROUNDS: usize = 400;
/// Longer than any lag the events set.
const SETTLED: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
enum Event {
    Reconcile,
    /// The operator persisted the status and died before running any step.
    CrashBeforeSteps,
    /// The operator died after running this many of the handed-out steps.
    CrashMidway(usize),
    /// The last handed-out steps run a second time: calls of a dying operator still in flight.
    ReplayLast,
    /// The site goes down after the operator observed it, while the steps run.
    DownDuringSteps(&'static str),
    Down(&'static str),
    Up(&'static str),
    Partition,
    Heal,
    Lag(u64),
    Advance(u64),
    /// Clients write where they can, and the primaries take a mirror snapshot.
    Write,
}

fn site() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just(A), Just(B)]
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    let event = prop_oneof![
        6 => Just(Event::Reconcile),
        2 => Just(Event::CrashBeforeSteps),
        1 => (1usize..4).prop_map(Event::CrashMidway),
        1 => Just(Event::ReplayLast),
        1 => site().prop_map(Event::DownDuringSteps),
        1 => site().prop_map(Event::Down),
        2 => site().prop_map(Event::Up),
        1 => Just(Event::Partition),
        1 => Just(Event::Heal),
        1 => (0u64..30).prop_map(Event::Lag),
        1 => (1u64..90).prop_map(Event::Advance),
        1 => Just(Event::Write),
    ];
    prop::collection::vec(event, 0..40)
}

/// What the request covers: some images of pool `rbd` in one mirror mode, and/or realm `production`.
#[derive(Clone, Debug)]
struct Subjects {
    images: Vec<&'static str>,
    mode: ImageMirrorMode,
    realm: bool,
}

fn subjects() -> impl Strategy<Value = Subjects> {
    let mode = prop_oneof![Just(ImageMirrorMode::Snapshot), Just(ImageMirrorMode::Journal)];
    (
        prop::sample::subsequence(IMAGES.to_vec(), 0..=3),
        mode,
        any::<bool>(),
    )
        .prop_filter("at least one subject", |(images, _, realm)| {
            !images.is_empty() || *realm
        })
        .prop_map(|(images, mode, realm)| Subjects { images, mode, realm })
}

impl Subjects {
    /// The sites set up long enough ago that everything reached both, whatever lag the events set later.
    fn lab(&self) -> Lab {
        let mut lab = Lab::new();
        if !self.images.is_empty() {
            lab = lab.with_pool(&self.images, self.mode);
        }
        if self.realm {
            lab = lab.with_realm();
        }
        lab.clock.advance(SETTLED);
        lab
    }

    fn spec(&self, action: FailoverAction, target: &str) -> FailoverRequestSpec {
        let spec = request(action, target);
        match (self.images.is_empty(), self.realm) {
            (true, _) => spec.realm_only(),
            (false, true) => spec.with_realm(),
            (false, false) => spec,
        }
    }
}

/// Watches every transition and every step that ran.
struct Checker {
    action: FailoverAction,
    target: &'static str,
    /// Where each image is primary, from the starting state and every promote and demote that ran.
    primaries: BTreeMap<String, BTreeSet<String>>,
    /// Images demoted on the site the planned path hands over from.
    demoted_at_source: BTreeSet<String>,
}

impl Checker {
    fn new(lab: &Lab, subjects: &Subjects, action: FailoverAction, target: &'static str) -> Checker {
        let primaries = subjects
            .images
            .iter()
            .map(|image| {
                let sites = lab.primaries(image).into_iter().map(String::from).collect();
                (image.to_string(), sites)
            })
            .collect();
        Checker {
            action,
            target,
            primaries,
            demoted_at_source: BTreeSet::new(),
        }
    }

    fn source(&self) -> &'static str {
        if self.target == A {
            B
        } else {
            A
        }
    }

    fn on_transition(
        &self,
        before: &FailoverRequestStatus,
        transition: &Transition,
    ) -> Result<(), TestCaseError> {
        let handed_out: Vec<&SiteStep> = transition.steps.iter().chain(&transition.then).collect();
        if before.phase.is_terminal() {
            prop_assert!(
                handed_out.is_empty(),
                "terminal request handed out {handed_out:?}"
            );
            prop_assert_eq!(&transition.status, before, "a terminal status never changes");
        }
        let settled: BTreeMap<String, _> = before
            .steps
            .iter()
            .filter(|r| !matches!(r.state, StepState::Pending | StepState::Running))
            .map(|r| (format!("{} {}", r.name, r.target), r.state))
            .collect();
        for step in &handed_out {
            prop_assert!(
                !settled.contains_key(&row_of(step)),
                "{step} handed out again although its row is settled: {:?}",
                before.steps
            );
        }
        for row in &transition.status.steps {
            if let Some(state) = settled.get(&format!("{} {}", row.name, row.target)) {
                prop_assert_eq!(row.state, *state, "a settled row changed: {}", row.name);
            }
        }
        for step in handed_out {
            self.check_step(step)?;
        }
        Ok(())
    }

    /// What each action may hand out at all.
    fn check_step(&self, step: &SiteStep) -> Result<(), TestCaseError> {
        match (&step.step, self.action) {
            (Step::PromoteImage { force: true, .. }, action) => {
                prop_assert_eq!(
                    action,
                    FailoverAction::Emergency,
                    "only an emergency forces: {}",
                    step
                );
                prop_assert_eq!(step.site.as_str(), self.target);
            }
            (Step::PromoteImage { .. }, FailoverAction::Resync) => {
                prop_assert!(false, "a resync never promotes: {}", step);
            }
            (Step::PromoteImage { image, .. }, FailoverAction::Planned | FailoverAction::Failback) => {
                prop_assert_eq!(step.site.as_str(), self.target);
                prop_assert!(
                    self.demoted_at_source.contains(image),
                    "{step} handed out before the demote on {} ran",
                    self.source()
                );
            }
            (_, FailoverAction::Emergency | FailoverAction::Drill) => {
                prop_assert_eq!(step.site.as_str(), self.target, "{} touches another site", step);
            }
            _ => {}
        }
        Ok(())
    }

    fn on_ran(&mut self, step: &SiteStep) -> Result<(), TestCaseError> {
        let Some(image) = image_of(&step.step) else {
            return Ok(());
        };
        let source = self.source();
        let sites = self.primaries.entry(image.to_string()).or_default();
        match step.step {
            Step::PromoteImage { .. } => {
                sites.insert(step.site.clone());
                if self.action != FailoverAction::Emergency {
                    prop_assert!(sites.len() <= 1, "{image} primary on {sites:?} after {step}");
                }
            }
            Step::DemoteImage { .. } => {
                sites.remove(&step.site);
                if step.site == source {
                    self.demoted_at_source.insert(image.to_string());
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// How one reconcile goes.
#[derive(Clone, Copy)]
struct Run {
    /// How many of the handed-out steps run before the operator dies.
    limit: usize,
    /// The operator dies: the failures it would have fed back are forgotten.
    crash: bool,
    /// A site that goes down between the observation and the steps.
    down: Option<&'static str>,
}

const FULL: Run = Run {
    limit: usize::MAX,
    crash: false,
    down: None,
};

fn reconcile(lab: &Lab, req: &mut Request, checker: &mut Checker, run: Run) -> Result<(), TestCaseError> {
    let Run { limit, crash, down } = run;
    let before = req.status.clone();
    let transition = lab.plan(req);
    checker.on_transition(&before, &transition)?;
    req.persist(&transition);
    if let Some(site) = down {
        lab.world.set_down(site, true);
    }
    let ran_before = req.ran.len();
    lab.run_steps(req, &transition, limit);
    for step in &req.ran[ran_before..] {
        checker.on_ran(step)?;
    }
    if crash {
        req.failures.clear();
    }
    lab.clock.advance(transition.requeue);
    Ok(())
}

fn play(lab: &Lab, req: &mut Request, checker: &mut Checker, events: &[Event]) -> Result<(), TestCaseError> {
    for event in events {
        match event {
            Event::Reconcile => reconcile(lab, req, checker, FULL)?,
            Event::CrashBeforeSteps => reconcile(
                lab,
                req,
                checker,
                Run {
                    limit: 0,
                    crash: true,
                    ..FULL
                },
            )?,
            Event::CrashMidway(n) => reconcile(
                lab,
                req,
                checker,
                Run {
                    limit: *n,
                    crash: true,
                    ..FULL
                },
            )?,
            Event::DownDuringSteps(site) => reconcile(
                lab,
                req,
                checker,
                Run {
                    down: Some(site),
                    ..FULL
                },
            )?,
            Event::ReplayLast => {
                for step in req.handed_out.last().cloned().unwrap_or_default() {
                    if lab.execute(&step).is_ok() {
                        checker.on_ran(&step)?;
                    }
                }
            }
            Event::Down(site) => lab.world.set_down(site, true),
            Event::Up(site) => lab.world.set_down(site, false),
            Event::Partition => lab.world.partition(A, B),
            Event::Heal => lab.world.heal(A, B),
            Event::Lag(seconds) => lab.world.set_lag(Duration::from_secs(*seconds)),
            Event::Advance(seconds) => lab.clock.advance(Duration::from_secs(*seconds)),
            Event::Write => write(lab),
        }
    }
    Ok(())
}

/// Client writes on whichever site takes them, plus a mirror snapshot where an image is primary.
fn write(lab: &Lab) {
    for site in [A, B] {
        let cluster = lab.site(site);
        for image in IMAGES {
            if cluster.write_image(POOL, image).is_ok() {
                let _ = lab.execute(&SiteStep::new(
                    site,
                    Step::CreateMirrorSnapshot {
                        pool: POOL.into(),
                        image: image.into(),
                    },
                ));
            }
        }
        let _ = cluster.put_objects(REALM, if site == A { "us-east" } else { "us-west" }, 1);
    }
}

/// Everything comes back and the request runs to its end; then it plans nothing more.
fn finish(lab: &Lab, req: &mut Request, checker: &mut Checker) -> Result<(), TestCaseError> {
    lab.world.set_down(A, false);
    lab.world.set_down(B, false);
    lab.world.heal(A, B);
    lab.world.set_lag(LAG);
    for _ in 0..MAX_FINAL_ROUNDS {
        if req.status.phase.is_terminal() {
            break;
        }
        reconcile(lab, req, checker, FULL)?;
    }
    prop_assert!(req.status.phase.is_terminal(), "not terminal: {:#?}", req.status);
    for _ in 0..3 {
        write(lab);
        reconcile(lab, req, checker, FULL)?;
    }
    Ok(())
}

fn failure_reason(req: &Request) -> String {
    req.condition(STALLED)
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

/// The failures a request may end in when sites were down: the preflight found one down, or the outage
/// outlasted the deadline.
fn failed_for_an_outage(req: &Request) -> bool {
    let why = failure_reason(req);
    why == common::AGENT_UNREACHABLE || why == reason::UNREACHABLE_TOO_LONG
}

/// Every image primary on `site` only, and every site holding the period that makes `site`'s zone master.
fn assert_moved_to(lab: &Lab, subjects: &Subjects, site: &str) -> Result<(), TestCaseError> {
    for image in &subjects.images {
        prop_assert_eq!(lab.primaries(image), vec![site], "{}", image);
    }
    if subjects.realm {
        let master = if site == A { "us-east" } else { "us-west" };
        prop_assert_eq!(lab.master_zone(A), master);
        prop_assert_eq!(lab.master_zone(B), master);
    }
    Ok(())
}

/// Never two primaries for an image, and the sites agree on one master zone.
fn assert_no_split(lab: &Lab, subjects: &Subjects) -> Result<(), TestCaseError> {
    for image in &subjects.images {
        prop_assert!(
            lab.primaries(image).len() <= 1,
            "{} is primary on both sites",
            image
        );
    }
    if subjects.realm {
        prop_assert_eq!(lab.master_zone(A), lab.master_zone(B), "two master zones");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn planned_failover_survives_restarts_outages_and_lag(subjects in subjects(), events in events()) {
        let lab = subjects.lab();
        let mut req = Request::new(subjects.spec(FailoverAction::Planned, B));
        let mut checker = Checker::new(&lab, &subjects, FailoverAction::Planned, B);
        play(&lab, &mut req, &mut checker, &events)?;
        finish(&lab, &mut req, &mut checker)?;
        match req.status.phase {
            FailoverPhase::Completed => assert_moved_to(&lab, &subjects, B)?,
            _ => prop_assert!(failed_for_an_outage(&req), "failed: {:#?}", req.status),
        }
        assert_no_split(&lab, &subjects)?;
    }

    #[test]
    fn a_converged_request_never_hands_out_a_step(subjects in subjects(), events in events()) {
        let lab = subjects.lab();
        let mut req = Request::new(subjects.spec(FailoverAction::Planned, A));
        let mut checker = Checker::new(&lab, &subjects, FailoverAction::Planned, A);
        play(&lab, &mut req, &mut checker, &events)?;
        finish(&lab, &mut req, &mut checker)?;
        prop_assert!(req.handed_out.iter().all(Vec::is_empty), "{:?}", req.handed_out);
        assert_moved_to(&lab, &subjects, A)?;
    }

    /// After the emergency, a failback to A or (for images only, once B took over) a resync of A from B.
    #[test]
    fn emergency_then_failback_or_resync_ends_with_one_primary_and_one_master(
        subjects in subjects(),
        resync in any::<bool>(),
        during_emergency in events(),
        during_recovery in events(),
    ) {
        let lab = subjects.lab();
        lab.world.set_down(A, true);
        let mut emergency = Request::new(subjects.spec(FailoverAction::Emergency, B));
        let mut checker = Checker::new(&lab, &subjects, FailoverAction::Emergency, B);
        play(&lab, &mut emergency, &mut checker, &during_emergency)?;
        finish(&lab, &mut emergency, &mut checker)?;
        prop_assert!(
            emergency.status.phase == FailoverPhase::Completed || failed_for_an_outage(&emergency),
            "{:#?}",
            emergency.status
        );

        let took_over = emergency.status.phase == FailoverPhase::Completed;
        let (action, target) = match resync && took_over && !subjects.realm {
            true => (FailoverAction::Resync, B),
            false => (FailoverAction::Failback, A),
        };
        let mut recovery = Request::new(subjects.spec(action, target));
        let mut checker = Checker::new(&lab, &subjects, action, target);
        play(&lab, &mut recovery, &mut checker, &during_recovery)?;
        finish(&lab, &mut recovery, &mut checker)?;
        match recovery.status.phase {
            FailoverPhase::Completed => assert_moved_to(&lab, &subjects, target)?,
            _ => prop_assert!(failed_for_an_outage(&recovery), "failed: {:#?}", recovery.status),
        }
    }
}
