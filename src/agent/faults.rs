//! `FaultyAgent`: wraps any [`ClusterAgent`] with faults a test switches on and off while controllers use it —
//! slow calls, failing calls, an unreachable agent — and records the steps that went through.
//!
//! Share it as `Arc<FaultyAgent<_>>`: every control takes `&self`, so a test steers it while a reconciler holds
//! another handle.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use async_trait::async_trait;

use super::{
    AgentError, AgentResult, ClusterAgent, ClusterInfo, ImageChecksum, RbdPoolState, RgwRealmState,
    Sensitive, Step, SyncGroup, SyncPool, ZoneSync,
};

pub struct FaultyAgent<A: ?Sized> {
    site: String,
    inner: Arc<A>,
    faults: Mutex<Faults>,
}

#[derive(Default)]
struct Faults {
    delay: Duration,
    unreachable: bool,
    /// Errors for the next calls, one per call, whatever the call.
    next_calls: VecDeque<AgentError>,
    /// Errors for every step with this verb (`Step::verb`).
    failing_verbs: BTreeMap<String, AgentError>,
    executed: Vec<Step>,
}

impl<A: ClusterAgent + ?Sized> FaultyAgent<A> {
    /// Wraps the agent of `site` (the name unreachable errors carry) with no faults.
    pub fn new(site: impl Into<String>, inner: Arc<A>) -> Self {
        Self {
            site: site.into(),
            inner,
            faults: Mutex::new(Faults::default()),
        }
    }

    pub fn inner(&self) -> &Arc<A> {
        &self.inner
    }

    /// Every call waits this long before it runs (or fails).
    pub fn set_delay(&self, delay: Duration) {
        self.faults().delay = delay;
    }

    /// While set, every call fails with `AgentError::Unreachable` and nothing reaches the wrapped agent.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.faults().unreachable = unreachable;
    }

    /// The next `count` calls (observations or steps) fail with `error`.
    pub fn fail_next_calls(&self, count: usize, error: AgentError) {
        self.faults().next_calls.extend(std::iter::repeat_n(error, count));
    }

    /// Every step whose [`Step::verb`] is `verb` fails with `error` until [`clear_faults`](Self::clear_faults).
    pub fn fail_steps(&self, verb: &str, error: AgentError) {
        self.faults().failing_verbs.insert(verb.to_string(), error);
    }

    /// Removes every fault; the record of executed steps stays.
    pub fn clear_faults(&self) {
        let mut faults = self.faults();
        let executed = std::mem::take(&mut faults.executed);
        *faults = Faults {
            executed,
            ..Faults::default()
        };
    }

    /// The steps the wrapped agent ran successfully, in order.
    pub fn executed_steps(&self) -> Vec<Step> {
        self.faults().executed.clone()
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies the injected delay, then the injected failure for this call, if any.
    async fn before_call(&self, step: Option<&Step>) -> AgentResult<()> {
        let (delay, outcome) = {
            let mut faults = self.faults();
            let outcome = if faults.unreachable {
                Err(AgentError::Unreachable {
                    site: self.site.clone(),
                    message: "injected fault: agent unreachable".into(),
                })
            } else if let Some(error) = faults.next_calls.pop_front() {
                Err(error)
            } else if let Some(error) = step.and_then(|step| faults.failing_verbs.get(step.verb())) {
                Err(error.clone())
            } else {
                Ok(())
            };
            (faults.delay, outcome)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        outcome
    }
}

#[async_trait]
impl<A: ClusterAgent + ?Sized> ClusterAgent for FaultyAgent<A> {
    async fn cluster_info(&self) -> AgentResult<ClusterInfo> {
        self.before_call(None).await?;
        self.inner.cluster_info().await
    }

    async fn rgw_realm(&self, realm: &str) -> AgentResult<RgwRealmState> {
        self.before_call(None).await?;
        self.inner.rgw_realm(realm).await
    }

    async fn rgw_sync_status(&self, realm: &str, zone: &str) -> AgentResult<ZoneSync> {
        self.before_call(None).await?;
        self.inner.rgw_sync_status(realm, zone).await
    }

    async fn rgw_sync_policy(&self, realm: &str, zone_group: &str) -> AgentResult<Vec<SyncGroup>> {
        self.before_call(None).await?;
        self.inner.rgw_sync_policy(realm, zone_group).await
    }

    async fn rbd_pool(&self, pool: &str) -> AgentResult<RbdPoolState> {
        self.before_call(None).await?;
        self.inner.rbd_pool(pool).await
    }

    async fn rbd_images(&self, pool: &str, images: &[String]) -> AgentResult<RbdPoolState> {
        self.before_call(None).await?;
        self.inner.rbd_images(pool, images).await
    }

    async fn create_bootstrap_token(&self, pool: &str, site_name: &str) -> AgentResult<Sensitive<String>> {
        self.before_call(None).await?;
        self.inner.create_bootstrap_token(pool, site_name).await
    }

    async fn image_checksum(&self, pool: &str, image: &str, snap_id: u64) -> AgentResult<ImageChecksum> {
        self.before_call(None).await?;
        self.inner.image_checksum(pool, image, snap_id).await
    }

    async fn sync_pool(&self, pool: &str) -> AgentResult<SyncPool> {
        self.before_call(None).await?;
        self.inner.sync_pool(pool).await
    }

    async fn execute(&self, step: &Step) -> AgentResult<()> {
        self.before_call(Some(step)).await?;
        self.inner.execute(step).await?;
        self.faults().executed.push(step.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::agent::sim::{SimulatedCluster, SimulatedWorld};

    fn faulty_site() -> Arc<FaultyAgent<SimulatedCluster>> {
        let world = SimulatedWorld::new();
        Arc::new(FaultyAgent::new("site-a", world.add_site("site-a")))
    }

    fn ceph_error() -> AgentError {
        AgentError::CommandFailed {
            site: "site-a".into(),
            command: "rbd".into(),
            exit_code: Some(16),
            stderr: "(16) Device or resource busy".into(),
        }
    }

    fn create_pool() -> Step {
        Step::CreatePool { pool: "rbd".into() }
    }

    #[tokio::test]
    async fn the_next_calls_fail_then_calls_pass_again() {
        let agent = faulty_site();
        agent.fail_next_calls(2, ceph_error());

        assert_eq!(agent.cluster_info().await, Err(ceph_error()));
        assert_eq!(agent.execute(&create_pool()).await, Err(ceph_error()));
        assert!(
            !agent.inner().rbd_pool("rbd").await.unwrap().exists,
            "the failed step must not reach Ceph"
        );

        agent.execute(&create_pool()).await.unwrap();
        assert!(agent.rbd_pool("rbd").await.unwrap().exists);
        assert_eq!(agent.executed_steps(), vec![create_pool()]);
    }

    #[tokio::test]
    async fn steps_fail_by_verb_and_others_pass() {
        let agent = faulty_site();
        agent.execute(&create_pool()).await.unwrap();
        agent.fail_steps("enable-pool-mirroring", ceph_error());
        let enable = Step::EnablePoolMirroring {
            pool: "rbd".into(),
            mode: crate::agent::PoolMirrorMode::Image,
            site_name: "site-a".into(),
        };

        assert_eq!(agent.execute(&enable).await, Err(ceph_error()));
        assert_eq!(
            agent.execute(&enable).await,
            Err(ceph_error()),
            "a verb fault lasts until cleared"
        );
        assert!(agent.rbd_pool("rbd").await.is_ok(), "observations are not steps");

        agent.clear_faults();
        agent.execute(&enable).await.unwrap();
        assert_eq!(
            agent.rbd_pool("rbd").await.unwrap().mode,
            crate::agent::PoolMirrorMode::Image
        );
        assert_eq!(agent.executed_steps(), vec![create_pool(), enable]);
    }

    #[tokio::test]
    async fn an_unreachable_agent_fails_every_call_until_switched_back() {
        let agent = faulty_site();
        agent.set_unreachable(true);

        let error = agent.execute(&create_pool()).await.unwrap_err();
        assert!(matches!(&error, AgentError::Unreachable { site, .. } if site == "site-a"));
        assert!(error.is_transient());
        assert!(matches!(
            agent.cluster_info().await,
            Err(AgentError::Unreachable { .. })
        ));

        agent.set_unreachable(false);
        assert_eq!(agent.cluster_info().await.unwrap().version, "16.2.15");
    }

    #[tokio::test]
    async fn delays_slow_down_calls_and_faults_change_while_calls_are_in_flight() {
        let agent = faulty_site();
        agent.set_delay(Duration::from_millis(200));
        let started = Instant::now();
        let in_flight = tokio::spawn({
            let agent = agent.clone();
            async move { agent.cluster_info().await }
        });
        // The fault decision is taken when the call starts; later changes apply to later calls.
        tokio::time::sleep(Duration::from_millis(50)).await;
        agent.set_unreachable(true);

        assert!(in_flight.await.unwrap().is_ok());
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(matches!(
            agent.cluster_info().await,
            Err(AgentError::Unreachable { .. })
        ));
    }
}
