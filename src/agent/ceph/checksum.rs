//! `image_checksum`: the bytes an image holds as of one mirror snapshot, read through librbd.
//!
//! A snapshot the image took itself (primary or demoted, or a user snapshot) is read at the snapshot.
//! A snapshot received from the peer is not: on 16.2.15 rbd-mirror creates the `.mirror.non_primary.*`
//! snapshot *before* it copies that sync's changes into the image, so the snapshot freezes the state of the
//! previous sync and the data it marks complete lives in the image head until the next sync starts
//! (measured: a received snapshot read at its id checksummed like the primary snapshot before the one it
//! mirrors, while the head checksummed like the one it mirrors). So a received snapshot is read from the
//! head, only while it is the newest mirror snapshot and complete, and the snapshots are listed again
//! after the read: if a newer sync started meanwhile, the head may have changed under the read, and the
//! snapshot counts as gone (`NotFound`), so the caller checks the newer copy instead.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use super::{
    command::{errno, CephCommand, ENOENT},
    librbd::{self, ReadError},
    parse, CephCli, CONNECT_TIMEOUT,
};
use crate::agent::{AgentError, AgentResult, ImageChecksum, MirrorSnapshot};

/// Sets the flag when dropped: the read on the blocking thread stops at its next chunk.
struct Abandon(Arc<AtomicBool>);

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl CephCli {
    pub(super) async fn read_checksum(
        &self,
        pool: &str,
        image: &str,
        snap_id: u64,
    ) -> AgentResult<ImageChecksum> {
        let before = self.mirror_snapshots(pool, image).await?;
        let received = before
            .iter()
            .find(|snap| snap.id == snap_id)
            .is_some_and(|snap| snap.primary_snap_id.is_some());
        if !received {
            return self.read(pool, image, Some(snap_id)).await;
        }
        let superseded = || AgentError::NotFound {
            site: self.site().to_string(),
            what: format!(
                "the data of received snapshot {snap_id} of image {pool}/{image} (a newer sync has started)"
            ),
        };
        if !is_newest_complete(&before, snap_id) {
            return Err(superseded());
        }
        let checksum = self.read(pool, image, None).await?;
        match is_newest_complete(&self.mirror_snapshots(pool, image).await?, snap_id) {
            true => Ok(checksum),
            false => Err(superseded()),
        }
    }

    async fn mirror_snapshots(&self, pool: &str, image: &str) -> AgentResult<Vec<MirrorSnapshot>> {
        let spec = format!("{pool}/{image}");
        let out = self
            .run(CephCommand::rbd(["snap", "ls", "--all", &spec, "--format=json"]))
            .await
            .map_err(|error| match errno(&error) {
                Some(ENOENT) => AgentError::NotFound {
                    site: self.site().to_string(),
                    what: format!("image {spec}"),
                },
                _ => error,
            })?;
        parse::rbd::mirror_snapshots(&out)
    }

    /// Reads on a blocking thread. Dropping the future (the operator's request went away) stops the read at
    /// its next chunk; librados' own timeouts bound each call meanwhile.
    async fn read(&self, pool: &str, image: &str, at: Option<u64>) -> AgentResult<ImageChecksum> {
        let abandon = Abandon(Arc::default());
        let (target, abandoned) = (self.target.clone(), abandon.0.clone());
        let (pool_name, image_name) = (pool.to_string(), image.to_string());
        let read = tokio::task::spawn_blocking(move || {
            let connection = librbd::Connection {
                conf: target.conf.as_deref(),
                cluster: target.cluster.as_deref(),
                client_id: target.client_id.as_deref(),
                keyring: target.keyring.as_deref(),
                connect_timeout: target.connect_timeout.unwrap_or(CONNECT_TIMEOUT),
            };
            librbd::checksum(&connection, &pool_name, &image_name, at, &abandoned)
        })
        .await;
        let site = self.site().to_string();
        let failed = |exit_code, stderr| AgentError::CommandFailed {
            site: site.clone(),
            command: match at {
                Some(snap_id) => format!("librbd read of {pool}/{image} at snapshot {snap_id}"),
                None => format!("librbd read of {pool}/{image}"),
            },
            exit_code,
            stderr,
        };
        let error = match read {
            Ok(Ok(digest)) => {
                return Ok(ImageChecksum {
                    size: digest.size,
                    blake3: digest.blake3,
                })
            }
            Ok(Err(error)) => error,
            Err(join) => return Err(failed(None, format!("the reading thread ended: {join}"))),
        };
        Err(match error {
            ReadError::NotFound { what } => AgentError::NotFound { site, what },
            ReadError::Library { .. } => AgentError::Refused {
                site,
                action: "image-checksum".into(),
                message: error.to_string(),
            },
            ReadError::Unreachable(_) => AgentError::ClusterUnreachable {
                site,
                message: format!("librados: {error}"),
            },
            ReadError::Call { errno, .. } => failed(Some(errno), error.to_string()),
            ReadError::Abandoned => failed(None, error.to_string()),
        })
    }
}

/// Whether `snap_id` is the newest mirror snapshot and complete: no newer sync has started.
fn is_newest_complete(snapshots: &[MirrorSnapshot], snap_id: u64) -> bool {
    snapshots
        .last()
        .is_some_and(|newest| newest.id == snap_id && newest.complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_received_snapshot_is_readable_only_while_no_newer_sync_has_started() {
        let snapshot = |id, complete| MirrorSnapshot {
            id,
            name: format!(".mirror.non_primary.{id}"),
            created: k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            state: "non-primary".into(),
            complete,
            primary_snap_id: Some(id),
        };
        assert!(is_newest_complete(&[snapshot(5, true), snapshot(7, true)], 7));
        assert!(!is_newest_complete(&[snapshot(5, true), snapshot(7, true)], 5));
        assert!(
            !is_newest_complete(&[snapshot(7, true), snapshot(8, false)], 7),
            "a sync under way writes the head"
        );
        assert!(!is_newest_complete(&[], 7));
    }
}
