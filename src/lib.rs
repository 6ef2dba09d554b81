//! cephdr: a Kubernetes operator for Ceph multisite disaster recovery.

pub mod agent;
pub mod api;
pub mod cli;
pub mod controller;
pub mod metrics;
pub mod operator;
pub mod plan;
pub mod sync;
