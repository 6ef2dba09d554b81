//! cephdr: a Kubernetes operator for Ceph multisite disaster recovery.

pub mod agent;
pub mod api;
pub mod cli;
pub mod controller;
pub mod metrics;
pub mod operator;
pub mod plan;
pub mod sync;

/// An error with its causes, each after `: `: many errors' own message ("client error (Connect)", "target")
/// says little without them.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
