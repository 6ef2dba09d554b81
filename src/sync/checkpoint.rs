//! What a transfer is and how far it got: the receiver persists a [`Checkpoint`] each time its target
//! made applied chunks durable, so an interrupted transfer resumes after the last of them.

use std::{io, path::Path};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

/// One delta of one image: everything between `from_snap` (none: from an empty image) and `to_snap`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transfer {
    /// The source image, `pool/image`.
    pub image: String,
    pub from_snap: Option<String>,
    pub to_snap: String,
    /// The image size at `to_snap`.
    pub size: u64,
    /// Largest chunk payload before compression; chunk sequence numbers depend on it.
    pub chunk_size: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub transfer: Transfer,
    /// Chunks `0..next_seq` are applied and durable on the target.
    pub next_seq: u64,
    /// The image offset where chunk `next_seq - 1` ends; 0 before the first chunk.
    pub offset: u64,
    /// Where the target's own output stood at that point (for a backup store: bytes in its file).
    pub target_position: u64,
    /// The target holds `to_snap`.
    pub complete: bool,
}

impl Checkpoint {
    /// The checkpoint of a transfer that has applied nothing yet.
    pub fn start(transfer: Transfer) -> Self {
        Checkpoint {
            transfer,
            next_seq: 0,
            offset: 0,
            target_position: 0,
            complete: false,
        }
    }

    /// Reads a checkpoint saved by [`Checkpoint::save`]; `None` when there is none.
    pub async fn load(path: &Path) -> io::Result<Option<Checkpoint>> {
        match tokio::fs::read(path).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the checkpoint at `path` atomically: a crash leaves the old one or the new one.
    pub async fn save(&self, path: &Path) -> io::Result<()> {
        write_atomically(path, &serde_json::to_vec_pretty(self)?).await
    }
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it over `path`.
pub(crate) async fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = tokio::fs::File::create(&tmp).await?;
    file.write_all(bytes).await?;
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(&tmp, path).await
}
