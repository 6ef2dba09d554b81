//! `cephdr sync`: a [`Receiver`] that serves one TLS port and applies each transfer to the image of the
//! same name on its cluster or to a backup store, and a [`Sender`] that ships one snapshot delta and
//! retries, resuming, until it is applied.

use std::{
    collections::HashSet,
    future::Future,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use tracing::{info, warn};

use super::{
    checkpoint::{Checkpoint, Transfer},
    frame::{Chunk, FrameOptions},
    rbd::{RbdCli, RbdImage},
    session::{receive_with, send, SendReport, SyncError, Target, TargetError},
    store::{offsite::Offsite, DirectoryStore},
    transport::{connect, SyncListener, TransportError},
};
use crate::{agent::Sensitive, error_chain};

/// Where a receiver puts what it receives.
#[derive(Debug, Clone)]
pub enum Destination {
    /// The image of the same `pool/name` on the local cluster, in one of `pools` only.
    Rbd { rbd: RbdCli, pools: Vec<String> },
    /// A backup store per image, in `<dir>/<pool>/<name>`, published to `offsite` after each transfer.
    Backup { dir: PathBuf, offsite: Option<Offsite> },
}

pub struct Receiver {
    destination: Destination,
    /// Checkpoints of transfers into RBD images, one file per image.
    state_dir: PathBuf,
    commit_every: u64,
    busy: Arc<Mutex<HashSet<String>>>,
}

impl Receiver {
    pub fn new(destination: Destination, state_dir: PathBuf, commit_every: u64) -> Arc<Self> {
        Arc::new(Receiver {
            destination,
            state_dir,
            commit_every,
            busy: Arc::default(),
        })
    }

    /// Accepts senders on `listener` until `shutdown` resolves; each connection runs in its own task.
    pub async fn serve(self: Arc<Self>, listener: SyncListener, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let incoming = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(incoming) => incoming,
                    Err(error) => {
                        warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            let receiver = self.clone();
            tokio::spawn(async move {
                let peer = incoming.peer;
                let stream = match incoming.authenticate().await {
                    Ok(stream) => stream,
                    Err(error) => return warn!(%peer, %error, "sync connection refused"),
                };
                let chosen = |transfer| receiver.choose(transfer);
                match receive_with(stream, receiver.commit_every, chosen).await {
                    Ok(c) => {
                        info!(%peer, image = c.transfer.image, to_snap = c.transfer.to_snap, chunks = c.next_seq, "transfer applied");
                        receiver.publish(&c.transfer.image).await;
                    }
                    Err(error) => warn!(%peer, error = %error_chain(&error), "transfer failed"),
                }
            });
        }
    }

    /// Copies a backup just received offsite; one that fails is left to the periodic pass
    /// ([`Offsite::run`]), which reports it.
    async fn publish(&self, image: &str) {
        let Destination::Backup {
            dir,
            offsite: Some(offsite),
        } = &self.destination
        else {
            return;
        };
        let published = match backup_store(dir, image).await {
            Ok(store) => offsite.publish(&store, image).await.map_err(SyncError::from),
            Err(error) => Err(error),
        };
        if let Err(error) = published {
            warn!(image, error = %error_chain(&error), "offsite copy is behind; the next pass retries");
        }
    }

    async fn choose(&self, transfer: Transfer) -> Result<(Guarded, PathBuf), SyncError> {
        let image = transfer.image.clone();
        let refuse = |reason| SyncError::Refused {
            image: image.clone(),
            reason,
        };
        let (pool, name) = split_image(&image).ok_or_else(|| refuse("not a plain pool/image name"))?;
        let (pool, name) = (pool.to_string(), name.to_string());
        let guard = Busy::claim(&self.busy, &image).ok_or_else(|| refuse("a transfer of it is under way"))?;
        let (target, checkpoint): (Box<dyn Target>, PathBuf) = match &self.destination {
            Destination::Rbd { rbd, pools } => {
                if !pools.contains(&pool) {
                    return Err(refuse("its pool is not one this receiver writes"));
                }
                let dir = self.state_dir.join(&pool);
                tokio::fs::create_dir_all(&dir).await?;
                let target = RbdImage::new(rbd.clone(), image.clone());
                (Box::new(target), dir.join(format!("{name}.checkpoint.json")))
            }
            Destination::Backup { dir, .. } => {
                let store = backup_store(dir, &image).await?;
                (Box::new(store.target()), store.checkpoint_path())
            }
        };
        let guarded = Guarded {
            target,
            _guard: guard,
        };
        Ok((guarded, checkpoint))
    }
}

/// The backup store of `image` (`pool/name`) under `dir`, as a receiver into `dir` fills it.
pub async fn backup_store(dir: &Path, image: &str) -> Result<DirectoryStore, SyncError> {
    let (pool, name) = split_image(image).ok_or_else(|| SyncError::Refused {
        image: image.to_string(),
        reason: "not a plain pool/image name",
    })?;
    Ok(DirectoryStore::open(dir.join(pool).join(name)).await?)
}

/// `pool/name` with both parts of letters, digits, `.`, `_` and `-`, neither starting with `.`:
/// safe as path components and as an rbd image spec.
fn split_image(image: &str) -> Option<(&str, &str)> {
    let (pool, name) = image.split_once('/')?;
    let plain = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    (plain(pool) && plain(name)).then_some((pool, name))
}

/// An image with a transfer under way; released when the transfer's target is dropped.
struct Busy {
    set: Arc<Mutex<HashSet<String>>>,
    image: String,
}

impl Busy {
    fn claim(set: &Arc<Mutex<HashSet<String>>>, image: &str) -> Option<Busy> {
        let inserted = set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(image.to_string());
        inserted.then(|| Busy {
            set: set.clone(),
            image: image.to_string(),
        })
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.image);
    }
}

struct Guarded {
    target: Box<dyn Target>,
    _guard: Busy,
}

#[async_trait]
impl Target for Guarded {
    async fn begin(&mut self, checkpoint: &Checkpoint) -> Result<(), TargetError> {
        self.target.begin(checkpoint).await
    }
    async fn apply(&mut self, chunk: &Chunk) -> Result<(), TargetError> {
        self.target.apply(chunk).await
    }
    async fn commit(&mut self) -> Result<u64, TargetError> {
        self.target.commit().await
    }
    async fn finish(&mut self) -> Result<(), TargetError> {
        self.target.finish().await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot reach the receiver")]
    Transport(#[from] TransportError),
    #[error("transfer failed")]
    Sync(#[from] SyncError),
    #[error("rbd export-diff failed")]
    Source(#[from] TargetError),
}

impl SendError {
    /// Whether another attempt may succeed: the connection or the transfer broke, rather than the
    /// receiver refusing it or the source failing.
    pub fn retriable(&self) -> bool {
        match self {
            SendError::Transport(e) => matches!(e, TransportError::Io(_) | TransportError::Timeout),
            SendError::Sync(e) => !e.permanent() && !matches!(e, SyncError::Diff(_)),
            SendError::Source(_) => false,
        }
    }
}

/// Ships deltas of images on the cluster `rbd` reaches to the receiver at `peer`.
pub struct Sender {
    pub rbd: RbdCli,
    /// `host:port` of the receiver.
    pub peer: String,
    /// The name its certificate must carry.
    pub server_name: String,
    /// PEM CA bundle to check it with; the system's roots when `None`.
    pub ca_pem: Option<Vec<u8>>,
    pub token: Sensitive<String>,
    pub options: FrameOptions,
    pub chunk_size: u32,
    /// Attempts before giving up; each resumes where the receiver's checkpoint stands.
    pub attempts: u32,
}

impl Sender {
    pub async fn send(
        &self,
        image: &str,
        from_snap: Option<&str>,
        to_snap: &str,
    ) -> Result<SendReport, SendError> {
        let mut attempt = 1;
        loop {
            match self.attempt(image, from_snap, to_snap).await {
                Ok(report) => return Ok(report),
                Err(error) if error.retriable() && attempt < self.attempts => {
                    let pause = Duration::from_secs(1 << attempt.min(5));
                    warn!(image, attempt, error = %error_chain(&error), ?pause, "transfer attempt failed; resuming");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn attempt(
        &self,
        image: &str,
        from_snap: Option<&str>,
        to_snap: &str,
    ) -> Result<SendReport, SendError> {
        let stream = connect(&self.peer, &self.server_name, self.ca_pem.as_deref(), &self.token).await?;
        let (diff, export) = self.rbd.export_diff(image, from_snap, to_snap).await?;
        let report = send(image, diff, self.chunk_size, stream, &self.options).await?;
        export.wait().await?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::split_image;

    #[test]
    fn only_plain_pool_and_image_names_are_accepted() {
        assert_eq!(split_image("rbd/db-1.img"), Some(("rbd", "db-1.img")));
        for bad in [
            "rbd",
            "rbd/",
            "/db",
            "rbd/../x",
            "../rbd/db",
            "rbd/db/x",
            "rbd/.hidden",
            "rbd/db x",
        ] {
            assert_eq!(split_image(bad), None, "{bad}");
        }
    }
}
