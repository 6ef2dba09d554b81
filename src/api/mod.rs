//! The cephdr.io/v1alpha1 resources, and their reference rendered from the CRDs. No I/O, no clients.

// Each `printcolumn(...)` repeats `type_ = "string"`; clippy reads the repeats as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod common;
pub mod conditions;
pub mod failover_request;
pub mod rbd_mirror_pool;
pub mod realm;
pub mod reference;
pub mod site;
pub mod zone;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use common::{DeletionPolicy, SecretKeyRef, SecretRef};
pub use failover_request::{
    FailoverAction, FailoverPhase, FailoverRequest, FailoverRequestSpec, FailoverRequestStatus,
};
pub use rbd_mirror_pool::{RbdMirrorPool, RbdMirrorPoolSpec, RbdMirrorPoolStatus};
pub use realm::{CephRealm, CephRealmSpec, CephRealmStatus};
pub use site::{CephSite, CephSiteSpec, CephSiteStatus};
pub use zone::{CephZone, CephZoneSpec, CephZoneStatus};

/// Every CRD cephdr serves, as `cephdr crds` writes them.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        CephSite::crd(),
        CephRealm::crd(),
        CephZone::crd(),
        RbdMirrorPool::crd(),
        FailoverRequest::crd(),
    ]
}
