//! The failover state machine, pure: request + persisted status + what the sites report -> the next steps
//! and the new status. Persisted before each step runs, so a restarted operator resumes.
//!
//! Every call rebuilds its decisions from observations. `status.steps` holds the plan (one row per task,
//! in run order) and which rows are settled; a `running` row only says its step was handed out, not that it
//! ran, so each call asks the sites whether its effect is there (an image's primary flag, a received
//! demotion snapshot, the master zone of the committed period) and hands the step out again when it is
//! not. Steps are idempotent, so running one twice changes nothing. One call advances as many phases as
//! the observation allows and stops at the first phase that hands out steps or waits.
//!
//! Phases: Pending → Preflight → Demoting → Syncing → Promoting → Verifying → Completed | Failed. Which
//! task runs in which phase is fixed per task kind (see `ledger`), so every action walks the same phases
//! and skips the ones it has no task in.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::{
    check::{CheckedCopy, CopyCheck},
    gate::gate,
    ledger::{Chain, Entry, Ledger, Subject, Target, Task},
    rbd,
    report::{conclude, unchanged},
    rgw,
};
use crate::{
    agent::{AgentError, RbdPoolState, RgwRealmState, SyncPool, SystemKeys, ZoneSync},
    api::{
        conditions,
        failover_request::{
            FailoverAction, FailoverPhase, FailoverRequestSpec, FailoverRequestStatus, StepState,
        },
        rbd_mirror_pool::RbdMirrorPoolSpec,
    },
    plan::SiteStep,
};

/// Condition types this controller sets besides `Ready`, `Reconciling` and `Stalled`.
pub const DRY_RUN: &str = "DryRun";
pub const BLOCKED: &str = "Blocked";
pub const RESYNC_REQUIRED: &str = "ResyncRequired";
pub const SITE_UNREACHABLE: &str = "SiteUnreachable";

/// Condition reasons of failover requests (the common ones live in `api::conditions::reason`).
pub mod reason {
    pub const PREFLIGHT_FAILED: &str = "PreflightFailed";
    pub const STEP_FAILED: &str = "StepFailed";
    /// A drill read the copy and the snapshot it mirrors, and their checksums differ.
    pub const COPY_MISMATCH: &str = "CopyMismatch";
    pub const VERIFICATION_FAILED: &str = "VerificationFailed";
    pub const INVALID_STATUS: &str = "InvalidStatus";
    pub const DRY_RUN: &str = "DryRun";
    pub const BLOCKED_BY_REQUEST: &str = "BlockedByRequest";
    pub const FORCE_PROMOTED: &str = "ForcePromoted";
    pub const UNREACHABLE_TOO_LONG: &str = "UnreachableTooLong";
}

/// How long a site may stay unreachable after the preflight before the request fails, unless the spec says.
const UNREACHABLE_TIMEOUT_SECONDS: u32 = 600;
const DEFAULT_CONCURRENCY: u32 = 16;

#[derive(Clone, Debug, PartialEq)]
pub struct ObservedPoolSite {
    /// `CephSite` resource name.
    pub site: String,
    /// `Err` when the site's agent could not be reached or the call (or a step the reconciler ran there)
    /// failed. Typed, because only `Unreachable` is waited out. For a delta-sync pool only `exists` is set:
    /// its images are in `sync`.
    pub pool: Result<RbdPoolState, AgentError>,
    /// Delta-sync pools: the pool's images and their sync snapshots, when the site answered.
    pub sync: Option<SyncPool>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ObservedPool {
    /// `RbdMirrorPool` resource name.
    pub name: String,
    pub spec: RbdMirrorPoolSpec,
    /// The images the sites were asked for ([`images_to_read`]); `None` when they were asked for every
    /// image of the pool.
    pub only_images: Option<BTreeSet<String>>,
    pub sites: Vec<ObservedPoolSite>,
    /// Delta-sync pools: the site the pool records as primary (its `cephdr.io/primary-site` annotation,
    /// else its `role: primary` site), or why it records none.
    pub recorded_primary: Option<Result<String, String>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ObservedZone {
    /// Zone name in Ceph.
    pub zone: String,
    pub zone_group: String,
    /// `CephSite` resource name.
    pub site: String,
    /// One of the zone's endpoints (for period pulls).
    pub endpoint: String,
    pub local: Result<RgwRealmState, AgentError>,
    pub sync: Option<Result<ZoneSync, AgentError>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ObservedRealm {
    /// `CephRealm` resource name (= realm name in Ceph).
    pub name: String,
    pub zones: Vec<ObservedZone>,
    /// The realm's sync user keys (its `syncUserSecretRef`), needed to pull a period; `None` when the
    /// Secret could not be read, and a pull then waits.
    pub sync_keys: Option<SystemKeys>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub pools: Vec<ObservedPool>,
    pub realms: Vec<ObservedRealm>,
    /// Names of other FailoverRequests that are running on any of the same targets and started earlier.
    pub blocking_requests: Vec<String>,
    /// Results of the copy checks the previous call handed out (read after it was persisted).
    pub checked_copies: Vec<CheckedCopy>,
}

impl Observed {
    /// Feeds back a step that failed on `site`: Ceph refused it (or the agent rejected it), so the site's
    /// observations become that error and the next call fails the request naming the step. Transient
    /// failures (an unreachable agent, a command that timed out) leave the observation as it is: the step is
    /// handed out again while the sites still show it needed.
    pub fn record_step_failure(&mut self, site: &str, error: &AgentError) {
        if error.is_transient() {
            return;
        }
        let pool_sites = self.pools.iter_mut().flat_map(|p| &mut p.sites);
        for observed in pool_sites.filter(|s| s.site == site) {
            observed.pool = Err(error.clone());
        }
        let zones = self.realms.iter_mut().flat_map(|r| &mut r.zones);
        for zone in zones.filter(|z| z.site == site) {
            zone.local = Err(error.clone());
        }
    }
}

/// What to do now: the steps to run, and the status to persist *before* running them.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub status: FailoverRequestStatus,
    /// Independent steps: run all at once (at most one per image).
    pub steps: Vec<SiteStep>,
    /// Dependent steps (RGW: `ModifyZone` takes effect only with the `CommitPeriod` after it): run one after
    /// another, in order, once every step of `steps` succeeded; stop at the first failure.
    pub then: Vec<SiteStep>,
    /// Drill: copies to read and compare (nothing changes), then plan again with the results.
    pub checks: Vec<CopyCheck>,
    /// Delta-sync pools to record as primary on a site (the handover), after `steps` and `then`.
    pub handovers: Vec<Handover>,
    pub requeue: Duration,
}

/// Record `site` as where the images of delta-sync pool `pool` (the `RbdMirrorPool`'s name) are primary.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Handover {
    pub pool: String,
    pub site: String,
}

pub fn next(
    spec: &FailoverRequestSpec,
    status: &FailoverRequestStatus,
    observed: &Observed,
    now: Timestamp,
) -> Transition {
    let ctx = Ctx { spec, observed, now };
    match Ledger::parse(&status.steps) {
        Ok(ledger) => {
            let mut run = Run::new(status, ledger);
            let outcome = drive(&ctx, &mut run);
            conclude(&ctx, run, outcome)
        }
        Err(message) if !status.phase.is_terminal() => {
            let run = Run::new(status, Ledger::build(Vec::new()));
            let mut transition = conclude(
                &ctx,
                run,
                Outcome::Failed(Failure::new(reason::INVALID_STATUS, message)),
            );
            transition.status.steps = status.steps.clone();
            transition
        }
        Err(_) => unchanged(status),
    }
}

/// Images to read per Ceph pool name: a pool not named here is read without images.
pub type ImageReads = BTreeMap<String, BTreeSet<String>>;

/// Which images of its pools the next call on `status` reads; `None` for every image of every pool (the
/// preflight lists the pools). Afterwards a call reads, of the images with rows still to settle in the
/// current phase, those with a row under way or waiting on Ceph, and as many with an action yet to start as
/// the concurrency limit lets start now; the verification reads every image of the plan. Reading the images
/// of a pool costs processes per image on a real site, so a 100-image request reads 16 at a time, not 100.
pub fn images_to_read(spec: &FailoverRequestSpec, status: &FailoverRequestStatus) -> Option<ImageReads> {
    if matches!(status.phase, FailoverPhase::Pending | FailoverPhase::Preflight) {
        return None;
    }
    let ledger = Ledger::parse(&status.steps).ok()?;
    let mut reads = ImageReads::new();
    let mut read = |entry: &Entry| {
        if let Target::Image { pool, image, .. } = &entry.target {
            reads.entry(pool.clone()).or_default().insert(image.clone());
        }
    };
    if status.phase == FailoverPhase::Verifying {
        ledger.entries().iter().for_each(&mut read);
        return Some(reads);
    }
    let mut startable = Vec::new();
    let mut in_flight = 0;
    for group in ledger.subjects_in(status.phase) {
        let Some(&next) = group.iter().find(|&&i| !ledger.is_settled(i)) else {
            continue;
        };
        let entry = ledger.entry(next);
        if !matches!(entry.target, Target::Image { .. }) {
            continue;
        }
        let acts = entry.task.is_action();
        if ledger.state(next) == StepState::Running || !acts {
            in_flight += usize::from(acts);
            read(entry);
        } else {
            startable.push(entry);
        }
    }
    let free = concurrency(spec).saturating_sub(in_flight);
    startable.into_iter().take(free).for_each(read);
    Some(reads)
}

/// How many image steps may be in flight at once.
pub fn concurrency(spec: &FailoverRequestSpec) -> usize {
    spec.concurrency.unwrap_or(DEFAULT_CONCURRENCY) as usize
}

/// Whether the action needs the site that is not the target: an emergency works on the target alone (the
/// other site may be gone, which is the point of it); a drill reads the snapshots there that the target's
/// copies mirror.
fn needs_peer(action: FailoverAction) -> bool {
    action != FailoverAction::Emergency
}

/// Whether the request touches `site` at all. The reconciler asks no other site: one whose cluster is down
/// takes the agent's whole connect timeout to say so, on every call.
pub fn needs_site(spec: &FailoverRequestSpec, site: &str) -> bool {
    site == spec.target_site || needs_peer(spec.action)
}

/// What one call looks at.
pub(super) struct Ctx<'a> {
    pub spec: &'a FailoverRequestSpec,
    pub observed: &'a Observed,
    pub now: Timestamp,
}

impl Ctx<'_> {
    pub(super) fn target(&self) -> &str {
        &self.spec.target_site
    }

    pub(super) fn action(&self) -> FailoverAction {
        self.spec.action
    }

    /// Seconds an unreachable site is waited out before the request fails.
    pub(super) fn unreachable_timeout(&self) -> u64 {
        self.spec
            .unreachable_timeout_seconds
            .unwrap_or(UNREACHABLE_TIMEOUT_SECONDS)
            .into()
    }

    pub(super) fn needs_peer(&self) -> bool {
        needs_peer(self.spec.action)
    }

    pub(super) fn is_relevant(&self, site: &str) -> bool {
        needs_site(self.spec, site)
    }
}

/// What the sites show of one row's task.
pub(super) enum Eval {
    /// The task's effect is there.
    Satisfied,
    /// Nothing to run yet; says what the task waits for.
    Wait(String),
    /// Run these steps to make progress.
    Emit(Vec<SiteStep>),
    /// Record this handover of a delta-sync pool to make progress.
    HandOver(Handover),
    /// The task cannot succeed: the request fails with this message.
    Fail(String),
    /// The task does not apply to this subject (skipped with this message).
    NotApplicable(String),
    /// Read and compare these snapshots (a drill), then evaluate again with the result.
    Check(CopyCheck),
    /// A check found the task's effect there: done, with this message.
    Confirmed(String),
    /// A check found the sites disagree: the request fails with reason `CopyMismatch`.
    Mismatch(String),
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct Failure {
    pub reason: &'static str,
    pub message: String,
}

impl Failure {
    pub(super) fn new(reason: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            reason,
            message: message.into(),
        }
    }

    pub(super) fn preflight(message: impl Into<String>) -> Failure {
        Failure::new(reason::PREFLIGHT_FAILED, message)
    }

    pub(super) fn site(site: &str, error: &AgentError) -> Failure {
        Failure::new(error.reason(), format!("site {site}: {error}"))
    }
}

/// Whole seconds from `earlier` to `later`, zero when `later` is not later.
pub(super) fn seconds_between(later: Timestamp, earlier: Timestamp) -> u64 {
    u64::try_from(later.duration_since(earlier).as_secs()).unwrap_or(0)
}

/// One call's work in progress: the status being built, the plan, and the steps handed out so far.
pub(super) struct Run {
    pub status: FailoverRequestStatus,
    pub ledger: Ledger,
    pub steps: Vec<SiteStep>,
    pub then: Vec<SiteStep>,
    pub checks: Vec<CopyCheck>,
    pub handovers: Vec<Handover>,
}

impl Run {
    fn new(status: &FailoverRequestStatus, ledger: Ledger) -> Run {
        Run {
            status: status.clone(),
            ledger,
            steps: Vec::new(),
            then: Vec::new(),
            checks: Vec::new(),
            handovers: Vec::new(),
        }
    }
}

/// Where one call ends.
pub(super) enum Outcome {
    Unchanged,
    DryRunListed,
    Blocked,
    Working {
        message: String,
    },
    Unreachable {
        site: String,
        /// The error's reason: the site's agent or only its Ceph cluster does not answer.
        reason: &'static str,
        error: String,
        for_seconds: u64,
        /// Whether the request fails once the site stays away past its `unreachableTimeoutSeconds`.
        gives_up: bool,
    },
    Failed(Failure),
    /// Every row is settled but not every image of the plan was read: verify on a read of all of them.
    ReadEveryImage,
    Completed,
}

fn drive(ctx: &Ctx, run: &mut Run) -> Outcome {
    loop {
        let phase = run.status.phase;
        match phase {
            FailoverPhase::Pending if ctx.spec.dry_run => return dry_run(ctx, run),
            FailoverPhase::Pending if !ctx.observed.blocking_requests.is_empty() => return Outcome::Blocked,
            FailoverPhase::Pending => {
                run.status.started_at = Some(Time(ctx.now));
                run.status.phase = FailoverPhase::Preflight;
            }
            FailoverPhase::Preflight => match preflight(ctx) {
                Ok((ledger, data_loss_window_seconds)) => {
                    run.ledger = ledger;
                    run.status.data_loss_window_seconds = data_loss_window_seconds;
                    run.status.phase = FailoverPhase::Demoting;
                }
                Err(failure) => return Outcome::Failed(failure),
            },
            FailoverPhase::Demoting
            | FailoverPhase::Syncing
            | FailoverPhase::Promoting
            | FailoverPhase::Verifying => {
                if let Some(outcome) = gate(ctx, run) {
                    return outcome;
                }
                match advance(ctx, run, phase) {
                    Some(outcome) => return outcome,
                    None if phase == FailoverPhase::Verifying => return verify(ctx, run),
                    None => run.status.phase = following(phase),
                }
            }
            FailoverPhase::Completed | FailoverPhase::Failed => return Outcome::Unchanged,
        }
    }
}

fn following(phase: FailoverPhase) -> FailoverPhase {
    match phase {
        FailoverPhase::Pending => FailoverPhase::Preflight,
        FailoverPhase::Preflight => FailoverPhase::Demoting,
        FailoverPhase::Demoting => FailoverPhase::Syncing,
        FailoverPhase::Syncing => FailoverPhase::Promoting,
        FailoverPhase::Promoting => FailoverPhase::Verifying,
        FailoverPhase::Verifying | FailoverPhase::Completed => FailoverPhase::Completed,
        FailoverPhase::Failed => FailoverPhase::Failed,
    }
}

/// Checks the request against what the sites show and lays out the plan; returns it with the emergency's
/// data-loss window.
fn preflight(ctx: &Ctx) -> Result<(Ledger, Option<u64>), Failure> {
    let images = rbd::plan(ctx)?;
    let mut chains: Vec<Chain> = images.chains;
    chains.extend(rgw::plan(ctx)?);
    Ok((Ledger::build(chains), images.data_loss_window_seconds))
}

/// First call lists the plan and stays Pending; the next one completes. Nothing runs either time.
fn dry_run(ctx: &Ctx, run: &mut Run) -> Outcome {
    if conditions::is_true(&run.status.conditions, DRY_RUN) {
        return Outcome::Completed;
    }
    match preflight(ctx) {
        Ok((ledger, _)) => {
            run.ledger = ledger;
            Outcome::DryRunListed
        }
        Err(failure) => Outcome::Failed(Failure {
            message: format!("dry run: {}", failure.message),
            ..failure
        }),
    }
}

/// A row's task as the sites show it; `since` is when the row was first handed out or waited on.
fn evaluate(ctx: &Ctx, entry: &Entry, since: Option<Timestamp>) -> Eval {
    match &entry.target {
        Target::Image { pool, image, site } => rbd::evaluate(
            ctx,
            rbd::ImageTask {
                task: entry.task,
                pool,
                image,
                site,
                since,
            },
        ),
        Target::Realm { .. } | Target::Zone { .. } => rgw::evaluate(ctx, entry.task, &entry.target),
    }
}

/// A step a row asks for, before the concurrency limit decides whether it runs now.
struct Proposal {
    row: usize,
    steps: Vec<SiteStep>,
    was_running: bool,
    on_image: bool,
}

/// Settles what the sites show as done, hands out the steps of the next task of every subject in `phase`
/// (at most `concurrency` image steps in flight) and returns `None` once every row of the phase is settled.
fn advance(ctx: &Ctx, run: &mut Run, phase: FailoverPhase) -> Option<Outcome> {
    let mut proposals = Vec::new();
    let mut waits = Vec::new();
    // Subjects with rows to settle that this call did not read (see `images_to_read`): a later call will.
    let mut unread = 0;
    for group in run.ledger.subjects_in(phase) {
        if !read(ctx, &run.ledger.entry(group[0]).target.subject()) {
            unread += usize::from(group.iter().any(|&i| !run.ledger.is_settled(i)));
            continue;
        }
        for i in group {
            if run.ledger.is_settled(i) {
                continue;
            }
            let entry = run.ledger.entry(i).clone();
            match evaluate(ctx, &entry, run.ledger.started_at(i)) {
                Eval::Satisfied if entry.task.is_action() && run.ledger.state(i) == StepState::Pending => {
                    let message = Some("nothing to do: already so when first observed".to_string());
                    run.ledger.settle(i, StepState::Skipped, ctx.now, message);
                }
                Eval::Satisfied => run.ledger.settle(i, StepState::Done, ctx.now, None),
                Eval::NotApplicable(message) => {
                    run.ledger.settle(i, StepState::Skipped, ctx.now, Some(message))
                }
                Eval::Wait(message) => {
                    if !entry.task.is_action() {
                        run.ledger.start(i, ctx.now);
                    }
                    waits.push(message);
                    break;
                }
                Eval::Confirmed(message) => run.ledger.settle(i, StepState::Done, ctx.now, Some(message)),
                Eval::Fail(message) => return Some(fail_row(ctx, run, i, reason::STEP_FAILED, message)),
                Eval::Mismatch(message) => {
                    return Some(fail_row(ctx, run, i, reason::COPY_MISMATCH, message))
                }
                Eval::Check(check) => {
                    run.ledger.start(i, ctx.now);
                    run.checks.push(check);
                    break;
                }
                // One record per pool, however many of its images ask for it.
                Eval::HandOver(handover) => {
                    run.ledger.start(i, ctx.now);
                    if !run.handovers.contains(&handover) {
                        run.handovers.push(handover);
                    }
                    break;
                }
                Eval::Emit(steps) => {
                    let was_running = run.ledger.state(i) == StepState::Running;
                    let on_image = matches!(entry.target.subject(), Subject::Image { .. });
                    proposals.push(Proposal {
                        row: i,
                        steps,
                        was_running,
                        on_image,
                    });
                    if !entry.task.joins_next() {
                        break;
                    }
                }
            }
        }
    }

    let concurrency = concurrency(ctx.spec);
    let in_flight = proposals.iter().filter(|p| p.on_image && p.was_running).count();
    let mut free = concurrency.saturating_sub(in_flight);
    let (mut emitted, mut queued) = (0, unread);
    for proposal in proposals {
        let runs_now = !proposal.on_image || proposal.was_running || free > 0;
        if !runs_now {
            queued += 1;
            continue;
        }
        if proposal.on_image && !proposal.was_running {
            free -= 1;
        }
        run.ledger.start(proposal.row, ctx.now);
        emitted += proposal.steps.len();
        if proposal.on_image {
            run.steps.extend(proposal.steps);
        } else {
            run.then.extend(proposal.steps);
        }
    }

    let handing_over = !run.handovers.is_empty();
    if emitted == 0 && waits.is_empty() && queued == 0 && !handing_over && run.ledger.phase_settled(phase) {
        return None;
    }
    let mut parts = Vec::new();
    if emitted > 0 {
        parts.push(format!("running {emitted} step(s)"));
    }
    if handing_over {
        let sites: Vec<String> = run
            .handovers
            .iter()
            .map(|h| format!("{} to site {}", h.pool, h.site))
            .collect();
        parts.push(format!("recording the handover of {}", sites.join(", ")));
    }
    if !run.checks.is_empty() {
        parts.push(format!("checking {} copy(ies) by checksum", run.checks.len()));
    }
    if queued > 0 {
        parts.push(format!("{queued} queued behind concurrency {concurrency}"));
    }
    if let Some(first) = waits.first() {
        let more = match waits.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        parts.push(format!("{first}{more}"));
    }
    Some(Outcome::Working {
        message: format!("{phase:?}: {}", parts.join("; ")),
    })
}

/// Fails row `i` and the request with `reason`, naming the row.
fn fail_row(ctx: &Ctx, run: &mut Run, i: usize, reason: &'static str, message: String) -> Outcome {
    let row = &run.ledger.rows()[i];
    let failure = Failure::new(reason, format!("{} {}: {message}", row.name, row.target));
    run.ledger.settle(i, StepState::Failed, ctx.now, Some(message));
    Outcome::Failed(failure)
}

/// Drill: seconds from handing out the first copy check to the last result.
fn check_seconds(ledger: &Ledger) -> Option<f64> {
    let rows = ledger
        .entries()
        .iter()
        .zip(ledger.rows())
        .filter(|(entry, row)| entry.task == Task::VerifyCopy && row.state == StepState::Done);
    let (started, finished): (Vec<_>, Vec<_>) = rows
        .filter_map(|(_, row)| Some((row.started_at.as_ref()?.0, row.finished_at.as_ref()?.0)))
        .unzip();
    let (first, last) = (started.into_iter().min()?, finished.into_iter().max()?);
    Some(last.duration_since(first).as_secs_f64().max(0.0))
}

/// Whether this call's observation holds `subject`: realms are always read whole.
fn read(ctx: &Ctx, subject: &Subject) -> bool {
    let Subject::Image { pool, image } = *subject else {
        return true;
    };
    ctx.observed
        .pools
        .iter()
        .filter(|observed| observed.spec.pool == pool)
        .all(|observed| {
            observed
                .only_images
                .as_ref()
                .is_none_or(|only| only.contains(image))
        })
}

/// Every subject must end where the request wants it; a drill also reports its measured RPO and how long
/// its copy checks took.
fn verify(ctx: &Ctx, run: &mut Run) -> Outcome {
    let mut subjects: Vec<Subject> = Vec::new();
    for entry in run.ledger.entries() {
        if !subjects.contains(&entry.target.subject()) {
            subjects.push(entry.target.subject());
        }
    }
    if !subjects.iter().all(|subject| read(ctx, subject)) {
        return Outcome::ReadEveryImage;
    }
    if ctx.action() == FailoverAction::Drill {
        let ages = subjects.iter().filter_map(|subject| match *subject {
            Subject::Image { pool, image } => rbd::copy_age(ctx, pool, image),
            Subject::Realm(realm) => rgw::sync_lag(ctx, realm),
        });
        run.status.measured_rpo_seconds = ages.max();
        run.status.check_seconds = check_seconds(&run.ledger);
        return Outcome::Completed;
    }
    let problems: Vec<String> = subjects
        .iter()
        .filter_map(|subject| {
            match *subject {
                Subject::Image { pool, image } => rbd::verify(ctx, pool, image),
                Subject::Realm(realm) => rgw::verify(ctx, realm),
            }
            .err()
        })
        .collect();
    match problems.first() {
        None => Outcome::Completed,
        Some(first) => {
            let more = if problems.len() > 1 {
                format!(" (and {} more)", problems.len() - 1)
            } else {
                String::new()
            };
            Outcome::Failed(Failure::new(
                reason::VERIFICATION_FAILED,
                format!("verification failed: {first}{more}"),
            ))
        }
    }
}
