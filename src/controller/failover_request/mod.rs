//! `FailoverRequest`: planned failover, emergency failover, failback, resync and drill.

mod gate;
mod ledger;
pub mod plan;
mod rbd;
mod report;
mod rgw;
#[cfg(test)]
mod tests;
