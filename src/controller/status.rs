//! Writing status: server-side apply of the fields cephdr owns, skipped when nothing changed.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Condition, jiff::Timestamp};
use kube::{
    api::{Api, Patch, PatchParams},
    Resource, ResourceExt,
};
use serde::{de::DeserializeOwned, Serialize};

use super::{error::Result, FIELD_MANAGER};
use crate::api::{self, conditions};

/// A resource with a typed status.
pub trait WithStatus:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug
{
    type Status: Serialize + PartialEq + Clone + Default;
    fn status(&self) -> Option<&Self::Status>;
    fn conditions(&self) -> &[Condition];
}

macro_rules! with_status {
    ($($kind:ty => $status:ty),* $(,)?) => {$(
        impl WithStatus for $kind {
            type Status = $status;
            fn status(&self) -> Option<&$status> {
                self.status.as_ref()
            }
            fn conditions(&self) -> &[Condition] {
                self.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()
            }
        }
    )*};
}

with_status! {
    api::CephSite => api::CephSiteStatus,
    api::CephRealm => api::CephRealmStatus,
    api::CephZone => api::CephZoneStatus,
    api::RbdMirrorPool => api::RbdMirrorPoolStatus,
    api::FailoverRequest => api::FailoverRequestStatus,
}

/// Completes planned conditions: `observedGeneration` from the object, `lastTransitionTime` kept unless the
/// status flipped.
pub fn complete_conditions<K: WithStatus>(
    object: &K,
    planned: Vec<Condition>,
    now: Timestamp,
) -> Vec<Condition> {
    let generation = object.meta().generation;
    let planned = planned
        .into_iter()
        .map(|c| Condition {
            observed_generation: generation,
            ..c
        })
        .collect();
    conditions::merge(object.conditions(), planned, now)
}

/// Server-side applies `status` to the object's status subresource, unless it equals the current status.
pub async fn apply<K: WithStatus>(api: &Api<K>, object: &K, status: &K::Status) -> Result<bool> {
    if object.status() == Some(status) {
        return Ok(false);
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(true)
}
