//! What every reconcile shares: the client, the caches of related resources, the way to reach each site's
//! agent, metrics, Events and per-object backoff.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    runtime::{
        events::{Recorder, Reporter},
        reflector::{ObjectRef, Store},
    },
    Client, Resource, ResourceExt,
};
use rand::Rng;

use super::error::{Error, Result};
use crate::{
    agent::ClusterAgent,
    api::{CephRealm, CephSite, CephZone, FailoverRequest, RbdMirrorPool},
    metrics::Metrics,
};

/// How the operator reaches the agent of a `CephSite`.
#[async_trait]
pub trait AgentConnector: Send + Sync {
    async fn connect(&self, site: &CephSite) -> Result<Arc<dyn ClusterAgent>>;
}

/// Agents fixed in advance by `CephSite` name: simulated clusters in tests, benchmarks and the no-Ceph demo.
pub struct FixedAgents(pub HashMap<String, Arc<dyn ClusterAgent>>);

#[async_trait]
impl AgentConnector for FixedAgents {
    async fn connect(&self, site: &CephSite) -> Result<Arc<dyn ClusterAgent>> {
        self.0
            .get(&site.name_any())
            .cloned()
            .ok_or_else(|| Error::SiteNotFound(site.name_any()))
    }
}

/// Read-only caches of the resources controllers look each other up in.
#[derive(Clone)]
pub struct Stores {
    pub sites: Store<CephSite>,
    pub realms: Store<CephRealm>,
    pub zones: Store<CephZone>,
    pub pools: Store<RbdMirrorPool>,
    pub requests: Store<FailoverRequest>,
    /// The Secrets cephdr wrote (bootstrap tokens, sync-user keys), by their `managed-by` label.
    pub owned_secrets: Store<Secret>,
}

pub struct Context {
    pub client: Client,
    pub agents: Arc<dyn AgentConnector>,
    pub stores: Stores,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    backoff: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        agents: Arc<dyn AgentConnector>,
        stores: Stores,
        metrics: Arc<Metrics>,
    ) -> Context {
        let reporter = Reporter {
            controller: super::FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        Context {
            client,
            agents,
            stores,
            metrics,
            recorder,
            backoff: Mutex::new(HashMap::new()),
        }
    }

    /// The `CephSite` named `name` in `namespace`, from the cache.
    pub fn site(&self, namespace: &str, name: &str) -> Result<Arc<CephSite>> {
        self.stores
            .sites
            .get(&ObjectRef::new(name).within(namespace))
            .ok_or_else(|| Error::SiteNotFound(name.into()))
    }

    /// The agent of the `CephSite` named `name` in `namespace`.
    pub async fn agent(&self, namespace: &str, name: &str) -> Result<Arc<dyn ClusterAgent>> {
        let site = self.site(namespace, name)?;
        self.agents.connect(&site).await
    }

    /// The `CephSite` named `name` and what `read` learns through its agent. Only an unknown site is an
    /// error: an unreachable agent or a failed read is the outcome, as a message for the planner to report.
    pub async fn read_site<T, E, Read>(
        &self,
        namespace: &str,
        name: &str,
        read: impl FnOnce(Arc<dyn ClusterAgent>) -> Read,
    ) -> Result<(Arc<CephSite>, std::result::Result<T, String>)>
    where
        E: std::fmt::Display,
        Read: Future<Output = std::result::Result<T, E>>,
    {
        let site = self.site(namespace, name)?;
        let outcome = match self.agents.connect(&site).await {
            Ok(agent) => read(agent).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        Ok((site, outcome))
    }

    /// The next retry delay for `object` (see [`backoff_delay`]) with ±20% jitter, so objects that failed
    /// together do not retry together.
    pub fn next_backoff<K: Resource>(&self, object: &K) -> Duration {
        let mut attempts = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        let n = attempts.entry(backoff_key(object)).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(*n).mul_f64(rand::rng().random_range(0.8..1.2))
    }

    pub fn reset_backoff<K: Resource>(&self, object: &K) {
        self.backoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&backoff_key(object));
    }
}

/// Retry `attempt` (from 1) of a failing object: exponential from 250 ms to 5 min. A short first step
/// because most failures right after a start are passing (caches still listing, a site's status not yet
/// written); the cap because a site that is down for hours should not be hammered.
pub fn backoff_delay(attempt: u32) -> Duration {
    const FIRST: Duration = Duration::from_millis(250);
    const CAP: Duration = Duration::from_secs(300);
    FIRST
        .saturating_mul(1 << attempt.clamp(1, 12).saturating_sub(1))
        .min(CAP)
}

fn backoff_key<K: Resource>(object: &K) -> String {
    format!(
        "{}/{}/{}",
        std::any::type_name::<K>(),
        object.meta().namespace.as_deref().unwrap_or(""),
        object.meta().name.as_deref().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_short_doubles_and_stops_at_five_minutes() {
        let delays: Vec<f64> = (1..=14).map(|n| backoff_delay(n).as_secs_f64()).collect();
        assert_eq!(
            delays,
            [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0, 300.0]
        );
        assert_eq!(backoff_delay(u32::MAX), Duration::from_secs(300));
        assert_eq!(backoff_delay(0), Duration::from_millis(250));
    }
}
