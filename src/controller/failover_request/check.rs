//! A drill's copy checks: which snapshots the planner asks to read and compare, and what the reads gave.
//! Reading is an observation, not a step: the reconciler runs the checks through the agents after the
//! status that hands them out is persisted, then plans again with the results.

use crate::agent::{AgentError, ImageChecksum};

/// One snapshot of an image on one site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteSnapshot {
    /// `CephSite` resource name.
    pub site: String,
    pub snap_id: u64,
}

/// The copy of one image on the drill's target site, as of its newest received mirror snapshot, against
/// the snapshot on the other site that it mirrors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyCheck {
    /// The pool's name in Ceph.
    pub pool: String,
    pub image: String,
    pub copy: SiteSnapshot,
    pub source: SiteSnapshot,
}

/// What reading both snapshots of a check gave.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedCopy {
    pub check: CopyCheck,
    pub copy: Result<ImageChecksum, AgentError>,
    pub source: Result<ImageChecksum, AgentError>,
    /// Seconds both reads took (they run at once).
    pub seconds: f64,
}
