//! `FailoverRequest`: planned failover, emergency failover, failback, resync and drill.

mod announce;
pub mod check;
mod delta;
mod gate;
mod ledger;
pub mod plan;
mod rbd;
mod reconcile;
mod report;
mod rgw;
#[cfg(test)]
mod tests;

pub use announce::reason;
pub use reconcile::{reconcile, CONTROLLER};
