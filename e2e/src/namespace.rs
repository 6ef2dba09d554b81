//! A namespace of the real API server for one test: create resources from JSON manifests, wait for their
//! status, wait for them to be gone.

use std::{fmt::Debug, time::Duration};

use anyhow::{bail, Result};
use k8s_openapi::api::{core::v1::Namespace, events::v1::Event};
use kube::{
    api::{Api, ListParams, ObjectMeta, PostParams},
    core::NamespaceResourceScope,
    Client, Resource,
};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::json;

use crate::unique_name;

/// A namespaced kind the helpers can create and read.
pub trait Namespaced:
    Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Serialize + Debug
{
}

impl<K> Namespaced for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug
{
}

/// How often `wait` looks again.
const POLL: Duration = Duration::from_millis(200);

pub struct TestNamespace {
    pub client: Client,
    pub name: String,
}

impl TestNamespace {
    /// Creates a namespace named after `prefix`, unique to this process and call.
    pub async fn new(client: Client, prefix: &str) -> Result<TestNamespace> {
        let name = unique_name(prefix);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await?;
        Ok(TestNamespace { client, name })
    }

    pub fn api<K: Namespaced>(&self) -> Api<K> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Creates an object from a manifest without `apiVersion` and `kind` (they follow from `K`).
    pub async fn create<K: Namespaced>(&self, mut manifest: serde_json::Value) -> Result<K> {
        manifest["apiVersion"] = json!(K::api_version(&()));
        manifest["kind"] = json!(K::kind(&()));
        let object: K = serde_json::from_value(manifest)?;
        Ok(self.api::<K>().create(&PostParams::default(), &object).await?)
    }

    /// Polls the object until `done` holds; fails with the last seen object after `timeout`.
    pub async fn wait<K: Namespaced>(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&K) -> bool,
    ) -> Result<K> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let current = self.api::<K>().get_opt(name).await?;
            if let Some(object) = current.as_ref().filter(|object| done(object)) {
                return Ok(object.clone());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{} {name}: not {what} after {timeout:?}; last seen: {current:#?}",
                    K::kind(&())
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Reasons of the Events published about the object `name` in this namespace.
    pub async fn event_reasons(&self, name: &str) -> Result<Vec<String>> {
        event_reasons(&self.client, &self.name, name).await
    }

    /// Polls until the object no longer exists (its finalizers have run).
    pub async fn wait_gone<K: Namespaced>(&self, name: &str, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        while let Some(object) = self.api::<K>().get_opt(name).await? {
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{} {name} still exists after {timeout:?}: {object:#?}",
                    K::kind(&())
                );
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }
}

/// Reasons of the Events published about the object `name` in `namespace`.
pub async fn event_reasons(client: &Client, namespace: &str, name: &str) -> Result<Vec<String>> {
    let events = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?;
    Ok(events
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reason)
        .collect())
}
