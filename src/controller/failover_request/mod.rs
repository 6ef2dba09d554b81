//! `FailoverRequest`: planned failover, emergency failover, failback, resync and drill.

mod ledger;
pub mod plan;
mod rbd;
mod rgw;
