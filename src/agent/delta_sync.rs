//! What the cluster-agent API says about delta-sync replication: the sync snapshots of a pool's images and
//! the transfers the agent runs, and how those snapshots are named.
//!
//! The source site's agent ships deltas (it reads them with `rbd export-diff` next to its cluster); the
//! target site's `cephdr sync serve` receiver applies them. Which point each copy holds is read from the
//! images' snapshots, never from a transfer's own account: a snapshot exists on the target only once the
//! receiver applied the delta up to it.

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::Sensitive;
use crate::sync::frame::ChecksumKind;

/// Prefix of the snapshots cephdr takes for delta-sync; the rest of the name is the Unix time it was taken.
pub const SNAPSHOT_PREFIX: &str = "cephdr-sync-";

/// The name of a sync snapshot taken at `at`.
pub fn snapshot_name(at: Timestamp) -> String {
    format!("{SNAPSHOT_PREFIX}{}", at.as_second())
}

/// When a sync snapshot was taken, from its name; `None` for any other snapshot.
pub fn snapshot_time(name: &str) -> Option<Timestamp> {
    let seconds = name.strip_prefix(SNAPSHOT_PREFIX)?;
    if seconds.is_empty() || !seconds.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Timestamp::from_second(seconds.parse().ok()?).ok()
}

/// One pool as delta-sync sees it on one cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncPool {
    pub exists: bool,
    pub images: Vec<SyncImage>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncImage {
    pub name: String,
    /// cephdr's sync snapshots of the image, oldest first.
    pub snapshots: Vec<String>,
    /// The newest transfer of this image that this agent ran since it started, running or finished.
    pub transfer: Option<Transfer>,
}

impl SyncImage {
    pub fn has_snapshot(&self, snap: &str) -> bool {
        self.snapshots.iter().any(|s| s == snap)
    }
}

/// One shipment of an image's delta between two sync snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transfer {
    /// None for a full copy.
    pub from_snap: Option<String>,
    pub to_snap: String,
    pub started: Timestamp,
    /// None while it runs.
    pub finished: Option<Timestamp>,
    /// Set when it finished applied.
    pub report: Option<TransferReport>,
    /// Set when it finished failed, after its retries.
    pub error: Option<String>,
}

impl Transfer {
    pub fn running(&self) -> bool {
        self.finished.is_none()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferReport {
    /// Bytes the delta changed (written extents; zeroed ranges count 0).
    pub changed_bytes: u64,
    /// Bytes on the wire, framing included, after compression.
    pub wire_bytes: u64,
    pub chunks: u64,
    /// Chunks this run sent: fewer than `chunks` when it resumed from the receiver's checkpoint.
    pub chunks_sent: u64,
}

/// How the source agent reaches the target site's receiver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncPeer {
    /// `host:port`.
    pub address: String,
    /// The name the receiver's certificate must carry.
    pub server_name: String,
    /// PEM CA bundle to check it with; the system's roots when `None`.
    pub ca_pem: Option<String>,
    pub token: Sensitive<String>,
}

/// How a delta travels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferOptions {
    pub checksum: ChecksumKind,
    pub zstd_level: Option<i32>,
    pub bytes_per_second: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_carry_the_time_they_were_taken() {
        let at = Timestamp::from_second(1_764_635_400).unwrap();
        assert_eq!(snapshot_name(at), "cephdr-sync-1764635400");
        assert_eq!(snapshot_time(&snapshot_name(at)), Some(at));
        for other in [
            "cephdr-sync-",
            "cephdr-sync-12a",
            "cephdr-sync--1",
            "daily-1764635400",
            "cephdr-sync-1 ",
        ] {
            assert_eq!(snapshot_time(other), None, "{other}");
        }
    }
}
