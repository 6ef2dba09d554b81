//! Planner tests against the simulated Ceph of `agent::sim`: a `Lab` of two sites with a mirrored pool
//! and/or an RGW realm, and a driver that plays the reconciler (observe, `next`, persist, run the steps,
//! let time pass) so every action is walked to its end on clusters that refuse what real Ceph refuses.

mod delta;
mod drill;
mod props;
mod rbd;
mod reads;
mod rgw;

use std::{future::Future, sync::Arc, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::{
    check::{CheckedCopy, CopyCheck},
    plan::{
        images_to_read, next, ImageReads, Observed, ObservedPool, ObservedPoolSite, ObservedRealm,
        ObservedZone, Transition,
    },
};
use crate::{
    agent::{
        sim::{
            testing::{keys, multisite_realm, TwoSites, URL_A, URL_B},
            SimClock, SimulatedCluster, SimulatedWorld,
        },
        AgentError, ClusterAgent, ImageMirrorMode, PeerDirection, PoolMirrorMode, RbdImage, Step,
    },
    api::{
        failover_request::{FailoverAction, FailoverRequestSpec, FailoverRequestStatus, FailoverTargets},
        rbd_mirror_pool::RbdMirrorPoolSpec,
    },
    plan::SiteStep,
};

pub use crate::agent::sim::testing::{start_time, A, B, LAG, REALM};

pub const POOL: &str = "rbd";
/// The realm's zones: name, site, endpoint; `us-east` on A starts as master.
const ZONES: [(&str, &str, &str); 2] = [("us-east", A, URL_A), ("us-west", B, URL_B)];
/// More rounds than any request needs, even waiting out the unreachable deadline.
const MAX_ROUNDS: usize = 400;
/// How long reading a copy and the snapshot it mirrors takes on the simulated sites.
pub const READ_TIME: Duration = Duration::from_secs(1);

/// The sim's futures never wait on anything: they complete on first poll.
pub fn block<T>(future: impl Future<Output = T>) -> T {
    futures::executor::block_on(future)
}

/// A request for `action` to `target` on pool `rbd`; the builders below change it.
pub fn request(action: FailoverAction, target: &str) -> FailoverRequestSpec {
    FailoverRequestSpec {
        action,
        target_site: target.into(),
        targets: FailoverTargets {
            rbd_mirror_pools: vec![POOL.into()],
            realms: Vec::new(),
        },
        max_lag_seconds: None,
        unreachable_timeout_seconds: None,
        concurrency: None,
        dry_run: false,
    }
}

pub trait SpecExt {
    /// Targets realm `production` only.
    fn realm_only(self) -> Self;
    fn with_realm(self) -> Self;
    fn max_lag(self, seconds: u32) -> Self;
    fn concurrency(self, n: u32) -> Self;
    fn dry_run(self) -> Self;
}

impl SpecExt for FailoverRequestSpec {
    fn realm_only(mut self) -> Self {
        self.targets.rbd_mirror_pools.clear();
        self.with_realm()
    }
    fn with_realm(mut self) -> Self {
        self.targets.realms = vec![REALM.into()];
        self
    }
    fn max_lag(mut self, seconds: u32) -> Self {
        self.max_lag_seconds = Some(seconds);
        self
    }
    fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = Some(n);
        self
    }
    fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }
}

/// Two simulated sites on a frozen clock, with what the Kubernetes side would declare about them.
pub struct Lab {
    pub world: SimulatedWorld,
    pub clock: SimClock,
    pub a: Arc<SimulatedCluster>,
    pub b: Arc<SimulatedCluster>,
    pools: Vec<(String, RbdMirrorPoolSpec)>,
    has_realm: bool,
}

impl Lab {
    pub fn new() -> Lab {
        let TwoSites { world, clock, a, b } = TwoSites::new();
        Lab {
            world,
            clock,
            a,
            b,
            pools: Vec::new(),
            has_realm: false,
        }
    }

    pub fn site(&self, site: &str) -> &SimulatedCluster {
        if site == A {
            &self.a
        } else {
            &self.b
        }
    }

    /// Pool `rbd` mirrored two-way (rbd-mirror on both sites), `images` primary on A with one write each,
    /// replicated to B.
    pub fn with_pool(mut self, images: &[&str], mode: ImageMirrorMode) -> Lab {
        for (cluster, site_name) in [(&self.a, A), (&self.b, B)] {
            cluster.set_rbd_mirror_running(true).expect("site up");
            run(cluster, Step::CreatePool { pool: POOL.into() });
            let enable = Step::EnablePoolMirroring {
                pool: POOL.into(),
                mode: PoolMirrorMode::Image,
                site_name: site_name.into(),
            };
            run(cluster, enable);
        }
        let token = block(self.a.create_bootstrap_token(POOL, A)).expect("token");
        let import = Step::ImportPeer {
            pool: POOL.into(),
            token,
            direction: PeerDirection::RxTx,
            site_name: B.into(),
        };
        run(&self.b, import);
        for image in images {
            self.a.create_image(POOL, image).expect("create image");
            let enable = Step::EnableImageMirroring {
                pool: POOL.into(),
                image: image.to_string(),
                mode,
            };
            run(&self.a, enable);
            self.a.write_image(POOL, image).expect("write");
            if mode == ImageMirrorMode::Snapshot {
                self.snapshot(A, image);
            }
        }
        self.clock.advance(LAG);
        let mirror_mode = match mode {
            ImageMirrorMode::Snapshot => "snapshot",
            ImageMirrorMode::Journal => "journal",
        };
        let spec = serde_json::from_value(serde_json::json!({
            "pool": POOL, "mode": "image", "direction": "two-way",
            "sites": [{"site": A, "role": "primary"}, {"site": B, "role": "secondary"}],
            "images": {"mirrorMode": mirror_mode, "names": images},
        }))
        .expect("valid pool spec");
        self.pools.push((POOL.into(), spec));
        self
    }

    /// Realm `production`, zonegroup `us`: master zone `us-east` on A, `us-west` on B, one period on both.
    pub fn with_realm(mut self) -> Lab {
        block(multisite_realm(&self.a, &self.b));
        self.clock.advance(LAG);
        self.has_realm = true;
        self
    }

    /// A mirror snapshot of `image` on `site` (what a schedule would take).
    pub fn snapshot(&self, site: &str, image: &str) {
        let step = Step::CreateMirrorSnapshot {
            pool: POOL.into(),
            image: image.into(),
        };
        run(self.site(site), step);
    }

    /// What the reconciler would observe now, reading every image.
    pub fn observe(&self, blocking_requests: &[&str]) -> Observed {
        self.observe_images(blocking_requests, None)
    }

    /// What the reconciler would observe now, reading the images of `reads` (every image with `None`).
    pub fn observe_images(&self, blocking_requests: &[&str], reads: Option<ImageReads>) -> Observed {
        let pools = self.pools.iter().map(|(name, spec)| {
            let only_images = reads
                .as_ref()
                .map(|reads| reads.get(&spec.pool).cloned().unwrap_or_default());
            let read = |site: &str| match &only_images {
                Some(only) => {
                    let images: Vec<String> = only.iter().cloned().collect();
                    block(self.site(site).rbd_images(&spec.pool, &images))
                }
                None => block(self.site(site).rbd_pool(&spec.pool)),
            };
            ObservedPool {
                name: name.clone(),
                spec: spec.clone(),
                sites: spec
                    .sites
                    .iter()
                    .map(|s| ObservedPoolSite {
                        site: s.site.clone(),
                        pool: read(&s.site),
                        sync: None,
                    })
                    .collect(),
                only_images,
                recorded_primary: None,
            }
        });
        let realm = self.has_realm.then(|| ObservedRealm {
            name: REALM.into(),
            zones: ZONES
                .iter()
                .map(|(zone, site, endpoint)| ObservedZone {
                    zone: zone.to_string(),
                    zone_group: "us".into(),
                    site: site.to_string(),
                    endpoint: endpoint.to_string(),
                    local: block(self.site(site).rgw_realm(REALM)),
                    sync: Some(block(self.site(site).rgw_sync_status(REALM, zone))),
                })
                .collect(),
            sync_keys: Some(keys()),
        });
        Observed {
            pools: pools.collect(),
            realms: realm.into_iter().collect(),
            blocking_requests: blocking_requests.iter().map(|s| s.to_string()).collect(),
            checked_copies: Vec::new(),
        }
    }

    /// The image as `site` shows it; panics when the site is down.
    pub fn image(&self, site: &str, image: &str) -> Option<RbdImage> {
        let pool = block(self.site(site).rbd_pool(POOL)).expect("site answers");
        pool.images.into_iter().find(|i| i.name == image)
    }

    pub fn is_primary(&self, site: &str, image: &str) -> bool {
        self.image(site, image)
            .and_then(|i| i.mirroring)
            .is_some_and(|m| m.primary)
    }

    /// The sites where `image` is primary, as the sites that answer show it.
    pub fn primaries(&self, image: &str) -> Vec<&'static str> {
        [A, B]
            .into_iter()
            .filter(|site| {
                block(self.site(site).rbd_pool(POOL)).is_ok_and(|pool| {
                    pool.images
                        .iter()
                        .any(|i| i.name == image && i.mirroring.as_ref().is_some_and(|m| m.primary))
                })
            })
            .collect()
    }

    /// The master zone of zonegroup `us` in the period `site` holds.
    pub fn master_zone(&self, site: &str) -> String {
        let state = block(self.site(site).rgw_realm(REALM)).expect("site answers");
        let period = state.period.expect("a period");
        let group = period
            .zone_groups
            .iter()
            .find(|g| g.name == "us")
            .expect("zonegroup us");
        group.master_zone.clone()
    }

    pub fn period_id(&self, site: &str) -> String {
        let state = block(self.site(site).rgw_realm(REALM)).expect("site answers");
        state.period.expect("a period").id
    }

    pub fn execute(&self, step: &SiteStep) -> Result<(), AgentError> {
        block(self.site(&step.site).execute(&step.step))
    }

    /// One reconcile: observe, plan, persist the status, run the steps as the reconciler does (`steps`, then
    /// `then` in order while they succeed) and its copy checks (then plan and persist again with their
    /// results), then let the requeue time pass.
    pub fn reconcile(&self, request: &mut Request) -> Transition {
        let mut transition = self.plan(request);
        request.persist(&transition);
        self.run_steps(request, &transition, usize::MAX);
        if !transition.checks.is_empty() {
            request.checked = self.check_copies(&transition.checks);
            transition = self.plan(request);
            request.persist(&transition);
            request.checked.clear();
        }
        self.clock.advance(transition.requeue);
        transition
    }

    /// What `next` returns now for `request`, with the step failures and copy checks of its last run fed
    /// back.
    pub fn plan(&self, request: &Request) -> Transition {
        let reads = images_to_read(&request.spec, &request.status);
        let mut observed = self.observe_images(&request.blocking, reads);
        for (site, error) in &request.failures {
            observed.record_step_failure(site, error);
        }
        observed.checked_copies = request.checked.clone();
        next(&request.spec, &request.status, &observed, self.clock.now())
    }

    /// Reads both snapshots of each check, as the reconciler does; the reads take [`READ_TIME`].
    pub fn check_copies(&self, checks: &[CopyCheck]) -> Vec<CheckedCopy> {
        let read = |check: &CopyCheck, site: &str, snap_id| {
            block(self.site(site).image_checksum(&check.pool, &check.image, snap_id))
        };
        let checked = checks
            .iter()
            .map(|check| CheckedCopy {
                check: check.clone(),
                copy: read(check, &check.copy.site, check.copy.snap_id),
                source: read(check, &check.source.site, check.source.snap_id),
                seconds: READ_TIME.as_secs_f64(),
            })
            .collect();
        self.clock.advance(READ_TIME);
        checked
    }

    /// Runs at most `limit` of the transition's steps: fewer when the operator dies on the way.
    pub fn run_steps(&self, request: &mut Request, transition: &Transition, limit: usize) {
        request.failures.clear();
        let independent = transition.steps.iter().take(limit);
        for step in independent {
            self.record(request, step);
        }
        if request.failures.is_empty() {
            let dependent = transition
                .then
                .iter()
                .take(limit.saturating_sub(transition.steps.len()));
            for step in dependent {
                if !self.record(request, step) {
                    break;
                }
            }
        }
    }

    fn record(&self, request: &mut Request, step: &SiteStep) -> bool {
        match self.execute(step) {
            Ok(()) => {
                request.ran.push(step.clone());
                true
            }
            Err(error) => {
                request.failures.push((step.site.clone(), error));
                false
            }
        }
    }

    /// Reconciles until the request is Completed or Failed.
    pub fn run_to_end(&self, request: &mut Request) {
        for _ in 0..MAX_ROUNDS {
            if request.status.phase.is_terminal() {
                return;
            }
            self.reconcile(request);
        }
        panic!("not terminal after {MAX_ROUNDS} rounds: {:#?}", request.status);
    }
}

fn run(cluster: &SimulatedCluster, step: Step) {
    let site = cluster.site().to_string();
    block(cluster.execute(&step)).unwrap_or_else(|e| panic!("setup step {step}@{site}: {e}"));
}

/// One FailoverRequest as the reconciler sees it: spec, persisted status, and what ran for it.
pub struct Request {
    pub spec: FailoverRequestSpec,
    pub status: FailoverRequestStatus,
    /// Names of earlier requests on the same targets still running.
    pub blocking: Vec<&'static str>,
    /// Steps that succeeded, in the order they ran.
    pub ran: Vec<SiteStep>,
    /// Every transition's steps, in order (`steps` then `then`).
    pub handed_out: Vec<Vec<SiteStep>>,
    /// Failures of the last run, fed back into the next observation.
    pub failures: Vec<(String, AgentError)>,
    /// Copy checks read in this reconcile, fed into its second plan.
    pub checked: Vec<CheckedCopy>,
}

impl Request {
    pub fn new(spec: FailoverRequestSpec) -> Request {
        Request {
            spec,
            status: FailoverRequestStatus::default(),
            blocking: Vec::new(),
            ran: Vec::new(),
            handed_out: Vec::new(),
            failures: Vec::new(),
            checked: Vec::new(),
        }
    }

    pub fn persist(&mut self, transition: &Transition) {
        self.status = transition.status.clone();
        let mut steps = transition.steps.clone();
        steps.extend(transition.then.iter().cloned());
        self.handed_out.push(steps);
    }

    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status.conditions.iter().find(|c| c.type_ == type_)
    }

    pub fn is_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }

    /// Rows of `status.steps` as `name target state`.
    pub fn rows(&self) -> Vec<String> {
        self.status
            .steps
            .iter()
            .map(|r| format!("{} {} {:?}", r.name, r.target, r.state).to_lowercase())
            .collect()
    }

    /// Steps that ran, rendered `verb target@site`.
    pub fn ran(&self) -> Vec<String> {
        self.ran.iter().map(SiteStep::to_string).collect()
    }
}

/// The status row a step belongs to, as `name target` (pull-period rows name the realm only).
pub fn row_of(step: &SiteStep) -> String {
    let target = match &step.step {
        Step::PullPeriod { realm, .. } => realm.clone(),
        other => other.target(),
    };
    format!("{} {target}@{}", step.step.verb(), step.site)
}

/// The image a step acts on.
pub fn image_of(step: &Step) -> Option<&str> {
    match step {
        Step::PromoteImage { image, .. }
        | Step::DemoteImage { image, .. }
        | Step::ResyncImage { image, .. }
        | Step::CreateMirrorSnapshot { image, .. } => Some(image),
        _ => None,
    }
}
