//! cephdr: a Kubernetes operator for Ceph multisite disaster recovery.

pub mod api;
