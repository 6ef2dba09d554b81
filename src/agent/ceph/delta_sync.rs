//! Delta-sync on a real cluster: sync snapshots through `rbd snap`, and transfers that the agent runs in
//! the background with the sync engine's [`Sender`] (it reads `rbd export-diff` next to the cluster and
//! resumes from the receiver's checkpoint on every retry).

use std::{collections::HashMap, sync::Mutex};

use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;
use tracing::{info, warn, Instrument};

use super::{
    command::{absent_on_enoent, ok_if, CephCommand, Target, EEXIST, ENOENT},
    parse::json,
    CephCli,
};
use crate::{
    agent::{
        delta_sync::{
            snapshot_time, SyncImage, SyncPeer, SyncPool, Transfer, TransferOptions, TransferReport,
        },
        split::{DeltaSyncStep, ImageRef},
        AgentResult,
    },
    error_chain,
    sync::{
        frame::{FrameOptions, DEFAULT_CHUNK_SIZE},
        rbd::RbdCli,
        sidecar::Sender,
    },
};

/// Attempts of one transfer before it is reported failed; the operator starts it again later, and it
/// resumes where the receiver's checkpoint stands.
const SEND_ATTEMPTS: u32 = 4;

/// The transfers this agent runs or ran, newest per image (`pool/image`) and receiver.
#[derive(Debug, Default)]
pub(super) struct Transfers(Mutex<HashMap<(String, String), Transfer>>);

impl Transfers {
    /// The image's transfers, one per receiver.
    fn of(&self, image: &str) -> Vec<Transfer> {
        let mut transfers: Vec<Transfer> = self
            .lock()
            .iter()
            .filter(|((of, _), _)| of == image)
            .map(|(_, transfer)| transfer.clone())
            .collect();
        transfers.sort_by(|a, b| a.peer.cmp(&b.peer));
        transfers
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Transfer>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a new transfer of `image` unless one to the same receiver is running; whether it was
    /// recorded.
    fn begin(&self, image: &str, transfer: Transfer) -> bool {
        let key = (image.to_string(), transfer.peer.clone());
        let mut transfers = self.lock();
        if transfers.get(&key).is_some_and(Transfer::running) {
            return false;
        }
        transfers.insert(key, transfer);
        true
    }

    /// Records how a transfer ended: its report, or its error and whether that error is permanent.
    fn end(&self, image: &str, peer: &str, outcome: Result<TransferReport, (String, bool)>) {
        if let Some(transfer) = self.lock().get_mut(&(image.to_string(), peer.to_string())) {
            transfer.finished = Some(Timestamp::now());
            match outcome {
                Ok(report) => transfer.report = Some(report),
                Err((error, permanent)) => {
                    transfer.error = Some(error);
                    transfer.permanent = permanent;
                }
            }
        }
    }
}

impl CephCli {
    pub(super) async fn read_sync_pool(&self, pool: &str) -> AgentResult<SyncPool> {
        let listing = CephCommand::rbd(["ls", "-l", "--format=json", pool]);
        let Some(out) = absent_on_enoent(self.run(listing).await)? else {
            return Ok(SyncPool::default());
        };
        let mut images = sync_images(&json::<Vec<ListedEntry>>(&out)?);
        for image in &mut images {
            image.transfers = self.transfers.of(&format!("{pool}/{}", image.name));
        }
        Ok(SyncPool { exists: true, images })
    }

    pub(super) async fn run_delta_sync_step(&self, step: DeltaSyncStep<'_>) -> AgentResult<()> {
        match step {
            DeltaSyncStep::CreateSnapshot(image, snap) => {
                let spec = format!("{}@{snap}", image.spec());
                ok_if(
                    self.run(CephCommand::rbd(["snap", "create", &spec])).await,
                    EEXIST,
                    "",
                )
            }
            DeltaSyncStep::PromoteCopy {
                image,
                from_snap,
                snap,
            } => self.promote_copy(image, from_snap, snap).await,
            DeltaSyncStep::RemoveSnapshot(image, snap) => {
                let spec = format!("{}@{snap}", image.spec());
                ok_if(
                    self.run(CephCommand::rbd(["snap", "rm", &spec])).await,
                    ENOENT,
                    "",
                )
            }
            DeltaSyncStep::Send {
                image,
                from_snap,
                to_snap,
                peer,
                options,
            } => {
                self.start_transfer(image, from_snap, to_snap, peer, options);
                Ok(())
            }
        }
    }

    /// See [`Step::PromoteSyncCopy`](crate::agent::Step::PromoteSyncCopy).
    async fn promote_copy(&self, image: ImageRef<'_>, from_snap: &str, snap: &str) -> AgentResult<()> {
        let spec = image.spec();
        let held = self.read_sync_pool(image.pool).await?;
        let holds = |name: &str| {
            held.images
                .iter()
                .any(|i| i.name == image.image && i.has_snapshot(name))
        };
        if holds(snap) {
            return Ok(());
        }
        let at = |name: &str| format!("{spec}@{name}");
        let diff = ["diff", "--from-snap", from_snap, &spec, "--format", "json"];
        let changed = self.run(CephCommand::rbd(diff)).await?;
        if json::<Vec<serde_json::Value>>(&changed)?.is_empty() {
            info!(image = %spec, from_snap, "the copy holds its newest sync snapshot unchanged");
        } else {
            warn!(image = %spec, from_snap, "rolling a half-applied delta back");
            let rollback = ["snap", "rollback", "--no-progress", &at(from_snap)];
            self.run(CephCommand::rbd(rollback)).await?;
        }
        ok_if(
            self.run(CephCommand::rbd(["snap", "create", &at(snap)])).await,
            EEXIST,
            "",
        )
    }

    fn start_transfer(
        &self,
        image: ImageRef<'_>,
        from_snap: Option<&str>,
        to_snap: &str,
        peer: &SyncPeer,
        options: TransferOptions,
    ) {
        let spec = image.spec();
        let transfer = Transfer {
            peer: peer.address.clone(),
            from_snap: from_snap.map(str::to_string),
            to_snap: to_snap.to_string(),
            started: Timestamp::now(),
            finished: None,
            report: None,
            error: None,
            permanent: false,
        };
        if !self.transfers.begin(&spec, transfer.clone()) {
            return;
        }
        let sender = sender(&self.target, peer, options);
        let transfers = self.transfers.clone();
        let span = tracing::info_span!("send_delta", site = %self.site(), image = %spec, to_snap, peer = %peer.address);
        tokio::spawn(
            async move {
                let outcome = sender
                    .send(&spec, transfer.from_snap.as_deref(), &transfer.to_snap)
                    .await;
                let outcome = match outcome {
                    Ok(report) => {
                        info!(
                            changed_bytes = report.changed_bytes,
                            wire_bytes = report.wire.wire_bytes,
                            chunks_sent = report.chunks_sent,
                            "delta applied on the peer"
                        );
                        Ok(TransferReport {
                            changed_bytes: report.changed_bytes,
                            wire_bytes: report.wire.wire_bytes,
                            chunks: report.chunks,
                            chunks_sent: report.chunks_sent,
                        })
                    }
                    Err(error) => {
                        let permanent = !error.retriable();
                        let error = error_chain(&error);
                        warn!(%error, permanent, "transfer failed");
                        Err((error, permanent))
                    }
                };
                transfers.end(&spec, &transfer.peer, outcome);
            }
            .instrument(span),
        );
    }
}

fn sender(target: &Target, peer: &SyncPeer, options: TransferOptions) -> Sender {
    Sender {
        rbd: RbdCli {
            conf: target.conf.clone(),
            client_id: target.client_id.clone(),
            keyring: target.keyring.clone(),
            concurrency: None,
        },
        peer: peer.address.clone(),
        server_name: peer.server_name.clone(),
        ca_pem: peer.ca_pem.clone().map(String::into_bytes),
        token: peer.token.clone(),
        options: FrameOptions {
            checksum: options.checksum,
            zstd_level: options.zstd_level,
            bytes_per_second: options.bytes_per_second,
        },
        chunk_size: DEFAULT_CHUNK_SIZE,
        attempts: SEND_ATTEMPTS,
    }
}

/// One line of `rbd ls -l --format=json`: an image, or one of its (user) snapshots.
#[derive(Debug, Deserialize)]
struct ListedEntry {
    image: String,
    snapshot: Option<String>,
}

/// The images of a listing with their sync snapshots, oldest first; other snapshots are left out.
fn sync_images(entries: &[ListedEntry]) -> Vec<SyncImage> {
    let mut images: Vec<SyncImage> = Vec::new();
    for entry in entries {
        let index = match images.iter().position(|image| image.name == entry.image) {
            Some(index) => index,
            None => {
                images.push(SyncImage {
                    name: entry.image.clone(),
                    ..SyncImage::default()
                });
                images.len() - 1
            }
        };
        if let Some(snap) = entry.snapshot.as_ref().filter(|s| snapshot_time(s).is_some()) {
            images[index].snapshots.push(snap.clone());
        }
    }
    for image in &mut images {
        image.snapshots.sort_by_key(|snap| snapshot_time(snap));
    }
    images
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_gives_each_image_its_sync_snapshots_oldest_first() {
        let listing = r#"[
            {"image":"db","id":"1","size":1048576,"format":2},
            {"image":"db","id":"1","snapshot":"cephdr-sync-site-a_site-b-1764635460","snapshot_id":5,"size":1048576,"format":2,"protected":"false"},
            {"image":"db","id":"1","snapshot":"nightly","snapshot_id":6,"size":1048576,"format":2,"protected":"false"},
            {"image":"db","id":"1","snapshot":"cephdr-sync-site-a_vault-999999999","snapshot_id":4,"size":1048576,"format":2,"protected":"false"},
            {"image":"logs","id":"2","size":1048576,"format":2}
        ]"#;
        let entries: Vec<ListedEntry> = serde_json::from_str(listing).unwrap();
        let images = sync_images(&entries);
        assert_eq!(images.len(), 2);
        assert_eq!(images[0].name, "db");
        assert_eq!(
            images[0].snapshots,
            [
                "cephdr-sync-site-a_vault-999999999",
                "cephdr-sync-site-a_site-b-1764635460"
            ],
            "every series, by time; other snapshots are not cephdr's"
        );
        assert_eq!(images[1].name, "logs");
        assert!(images[1].snapshots.is_empty());
    }

    #[test]
    fn a_running_transfer_to_a_receiver_is_not_started_twice() {
        let transfers = Transfers::default();
        let transfer = |peer: &str, to: &str| Transfer {
            peer: peer.into(),
            from_snap: None,
            to_snap: to.into(),
            started: Timestamp::UNIX_EPOCH,
            finished: None,
            report: None,
            error: None,
            permanent: false,
        };
        assert!(transfers.begin("rbd/db", transfer("b:7444", "s1")));
        assert!(!transfers.begin("rbd/db", transfer("b:7444", "s2")));
        assert!(
            transfers.begin("rbd/db", transfer("vault:7444", "v1")),
            "another receiver runs alongside"
        );
        transfers.end("rbd/db", "b:7444", Err(("peer refused".into(), true)));
        let ended = &transfers.of("rbd/db")[0];
        assert_eq!(
            (ended.to_snap.as_str(), ended.error.as_deref()),
            ("s1", Some("peer refused"))
        );
        assert!(
            transfers.begin("rbd/db", transfer("b:7444", "s2")),
            "a finished transfer makes room for the next"
        );
    }
}
