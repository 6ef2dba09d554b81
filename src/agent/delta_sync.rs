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

/// Prefix of the snapshots cephdr takes for delta-sync: `cephdr-sync-<taken on>_<other site>-<Unix time>`
/// (site names never contain `_`).
pub const SNAPSHOT_PREFIX: &str = "cephdr-sync-";

/// The series of sync snapshots between two sites, whichever took them: their names, sorted, joined by
/// `_`. It names the pair, not the direction, so after a failover the reversed direction finds the
/// snapshots both copies hold and ships a delta from them; pools that copy one Ceph pool to different
/// sites (a replica, a backup store) still keep a series each.
pub fn series(site: &str, other_site: &str) -> String {
    let (first, second) = match site <= other_site {
        true => (site, other_site),
        false => (other_site, site),
    };
    format!("{first}_{second}")
}

/// The name of the sync snapshot `taken_on` a site, for the series with `other_site`, at `at`. Naming the
/// site that took it keeps two snapshots taken in the same second on both sites (during a handover) from
/// passing for one point.
pub fn snapshot_name(taken_on: &str, other_site: &str, at: Timestamp) -> String {
    format!("{SNAPSHOT_PREFIX}{taken_on}_{other_site}-{}", at.as_second())
}

/// When a sync snapshot was taken, from its name; `None` for any other snapshot.
pub fn snapshot_time(name: &str) -> Option<Timestamp> {
    let (_, seconds) = name.strip_prefix(SNAPSHOT_PREFIX)?.rsplit_once('-')?;
    if seconds.is_empty() || !seconds.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Timestamp::from_second(seconds.parse().ok()?).ok()
}

/// The [`series`] of a sync snapshot; `None` for any other snapshot.
pub fn series_of(name: &str) -> Option<String> {
    let (sites, seconds) = name.strip_prefix(SNAPSHOT_PREFIX)?.rsplit_once('-')?;
    let (taken_on, other) = sites.split_once('_')?;
    let valid = !seconds.is_empty() && seconds.bytes().all(|b| b.is_ascii_digit());
    valid.then(|| series(taken_on, other))
}

/// Whether `name` is a sync snapshot of `series`.
pub fn is_snapshot_for(name: &str, series: &str) -> bool {
    series_of(name).as_deref() == Some(series)
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
    /// cephdr's sync snapshots of the image (every series), oldest first.
    pub snapshots: Vec<String>,
    /// Per receiver, the newest transfer of this image that this agent ran since it started.
    #[serde(default)]
    pub transfers: Vec<Transfer>,
}

impl SyncImage {
    pub fn has_snapshot(&self, snap: &str) -> bool {
        self.snapshots.iter().any(|s| s == snap)
    }

    /// The image's sync snapshots of `series`, oldest first.
    pub fn snapshots_of<'a>(&'a self, series: &'a str) -> impl DoubleEndedIterator<Item = &'a String> {
        self.snapshots
            .iter()
            .filter(move |snap| is_snapshot_for(snap, series))
    }
}

/// One shipment of an image's delta between two sync snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transfer {
    /// `host:port` of the receiver.
    pub peer: String,
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
    /// The failure will repeat until something changes: the receiver refused the transfer (a copy
    /// written since its base, an image that exists), or the source could not read it.
    #[serde(default)]
    pub permanent: bool,
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
    fn snapshot_names_carry_the_site_that_took_them_the_other_site_and_the_time() {
        let at = Timestamp::from_second(1_764_635_400).unwrap();
        assert_eq!(series("site-b", "site-a"), series("site-a", "site-b"));
        let pair = series("site-b", "site-a");
        let name = snapshot_name("site-a", "site-b", at);
        assert_eq!(name, "cephdr-sync-site-a_site-b-1764635400");
        assert_eq!(snapshot_time(&name), Some(at));
        assert!(is_snapshot_for(&name, &pair));
        let taken_on_b = snapshot_name("site-b", "site-a", at);
        assert_ne!(
            taken_on_b, name,
            "the same second on the other site is another point"
        );
        assert!(is_snapshot_for(&taken_on_b, &pair), "of the same series");
        assert!(
            !is_snapshot_for(&name, &series("site-a", "vault")),
            "another pair's series"
        );
        assert!(!is_snapshot_for(&name, "site-a"));
        assert!(!is_snapshot_for(&name, &series("site-a", "site")));
        for other in [
            "cephdr-sync-a_b-",
            "cephdr-sync-a_b-12a",
            "daily-1764635400",
            "cephdr-sync-1 ",
            "cephdr-sync-a_b-1 ",
        ] {
            assert_eq!(snapshot_time(other), None, "{other}");
        }
    }
}
