//! The delta-sync engine: ships the changes between two RBD snapshots as checksummed, optionally
//! compressed frames that a receiver applies to an image or keeps in a backup store. A library of
//! streams and files only; it knows nothing of Kubernetes.

pub mod checkpoint;
pub mod diff;
pub mod frame;
pub mod rbd;
pub mod session;
pub mod sidecar;
pub mod store;
pub mod transport;
