//! A backup store for one image in a directory: a full diff plus a chain of incrementals, each an
//! ordinary `rbd diff v1` file (so `rbd import-diff FILE` replays it too), listed with its BLAKE3 in
//! `manifest.json`. Any point restores by replaying the chain from the full; retention keeps the last
//! N points by folding the older ones into a new full.
//!
//! ```text
//! <dir>/manifest.json                 points, oldest first
//! <dir>/000001-s1.diff                full (no from-snap)
//! <dir>/000002-s2.diff                s1 → s2
//! <dir>/000003-s3.diff.partial        a transfer under way, resumed at its checkpoint's position
//! <dir>/checkpoint.json               the receiver's checkpoint
//! ```

use std::{
    io::SeekFrom,
    path::{Path, PathBuf},
};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::{
    fs::{File, OpenOptions},
    io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufReader, BufWriter},
};

use super::{
    checkpoint::{write_atomically, Checkpoint, Transfer},
    diff::{encode_record, DiffReader, DiffWriter, Record, Version, BANNER_V1},
    frame::Chunk,
    session::{Target, TargetError},
};

const MANIFEST: &str = "manifest.json";
/// Granularity at which a folded full diff leaves out zeros.
const SPARSE_BLOCK: usize = 4096;
const IO_BUFFER: usize = 1 << 20;

/// One restorable snapshot of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    pub snap: String,
    /// The point this diff applies on; `None` for a full.
    pub from_snap: Option<String>,
    pub file: String,
    pub size: u64,
    pub bytes: u64,
    pub blake3: String,
}

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Manifest {
    points: Vec<Point>,
}

#[derive(Debug, Clone)]
pub struct DirectoryStore {
    root: PathBuf,
}

impl DirectoryStore {
    /// Opens the store at `root`, creating the directory.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self, TargetError> {
        let root = root.into();
        tokio::fs::create_dir_all(&root).await?;
        Ok(DirectoryStore { root })
    }

    /// Where a receiver into this store keeps its checkpoint.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.root.join("checkpoint.json")
    }

    /// The restorable points, oldest first.
    pub async fn points(&self) -> Result<Vec<Point>, TargetError> {
        Ok(self.manifest().await?.points)
    }

    async fn manifest(&self) -> Result<Manifest, TargetError> {
        Ok(read_json(&self.root.join(MANIFEST)).await?.unwrap_or_default())
    }

    async fn save_manifest(&self, manifest: &Manifest) -> Result<(), TargetError> {
        let json = serde_json::to_vec_pretty(manifest).map_err(std::io::Error::other)?;
        Ok(write_atomically(&self.root.join(MANIFEST), &json).await?)
    }

    /// The diff files that rebuild `snap`, full first, each checked against its BLAKE3.
    pub async fn chain(&self, snap: &str) -> Result<Vec<PathBuf>, TargetError> {
        let points = self.points().await?;
        let mut files = Vec::new();
        for point in chain_of(&points, snap)? {
            let path = self.root.join(&point.file);
            if hash_file(&path).await? != point.blake3 {
                return Err(TargetError::HashMismatch {
                    file: point.file.clone(),
                });
            }
            files.push(path);
        }
        Ok(files)
    }

    /// Writes the raw image of `snap` to `out` (created or truncated; sparse where the image is).
    pub async fn restore(&self, snap: &str, out: &Path) -> Result<(), TargetError> {
        let mut image = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(out)
            .await?;
        for path in self.chain(snap).await? {
            replay(&path, &mut image).await?;
        }
        image.sync_all().await?;
        Ok(())
    }

    /// Keeps the newest `keep` points (at least 1): the oldest kept becomes a full, older files go.
    pub async fn retain(&self, keep: usize) -> Result<(), TargetError> {
        let mut manifest = self.manifest().await?;
        let keep = keep.max(1);
        if manifest.points.len() <= keep {
            return Ok(());
        }
        let mut unused: Vec<Point> = manifest.points.drain(..manifest.points.len() - keep).collect();
        if manifest.points[0].from_snap.is_some() {
            let full = self.fold(&manifest.points[0]).await?;
            unused.push(std::mem::replace(&mut manifest.points[0], full));
        }
        // The manifest moves first: a crash before the removals leaves files nothing refers to.
        self.save_manifest(&manifest).await?;
        for point in unused {
            tokio::fs::remove_file(self.root.join(&point.file)).await?;
        }
        Ok(())
    }

    /// A full diff of `point`'s snapshot: the chain replayed into a scratch image, then its non-zero
    /// blocks written out.
    async fn fold(&self, point: &Point) -> Result<Point, TargetError> {
        let scratch = self.root.join("fold.img");
        self.restore(&point.snap, &scratch).await?;
        let file = format!("{}.full", point.file.trim_end_matches(".diff"));
        let out = self.root.join(format!("{file}.diff"));
        let mut image = File::open(&scratch).await?;
        let mut writer = DiffWriter::new(
            BufWriter::with_capacity(IO_BUFFER, File::create(&out).await?),
            Version::V1,
        )
        .await?;
        writer.record(&Record::ToSnap(point.snap.clone())).await?;
        writer.record(&Record::Size(point.size)).await?;
        let mut buf = vec![0u8; IO_BUFFER];
        let mut offset = 0u64;
        loop {
            let n = read_full(&mut image, &mut buf).await?;
            if n == 0 {
                break;
            }
            let mut run: Option<usize> = None;
            for (i, block) in buf[..n].chunks(SPARSE_BLOCK).enumerate() {
                let zero = block.iter().all(|b| *b == 0);
                match (zero, run) {
                    (false, None) => run = Some(i * SPARSE_BLOCK),
                    (true, Some(start)) => {
                        let data = bytes::Bytes::copy_from_slice(&buf[start..i * SPARSE_BLOCK]);
                        writer
                            .record(&Record::Write {
                                offset: offset + start as u64,
                                data,
                            })
                            .await?;
                        run = None;
                    }
                    _ => {}
                }
            }
            if let Some(start) = run {
                let data = bytes::Bytes::copy_from_slice(&buf[start..n]);
                writer
                    .record(&Record::Write {
                        offset: offset + start as u64,
                        data,
                    })
                    .await?;
            }
            offset += n as u64;
        }
        writer.finish().await?.into_inner().sync_all().await?;
        tokio::fs::remove_file(&scratch).await?;
        let name = format!("{file}.diff");
        Ok(Point {
            snap: point.snap.clone(),
            from_snap: None,
            bytes: tokio::fs::metadata(&out).await?.len(),
            blake3: hash_file(&out).await?,
            file: name,
            size: point.size,
        })
    }

    /// A [`Target`] that adds the transfer it receives as the store's next point.
    pub fn target(&self) -> StoreTarget {
        StoreTarget {
            store: self.clone(),
            transfer: None,
            file: None,
            position: 0,
        }
    }
}

/// The points whose diffs rebuild `snap`: from the newest full before it, up to it.
fn chain_of<'a>(points: &'a [Point], snap: &str) -> Result<&'a [Point], TargetError> {
    let end = points
        .iter()
        .position(|p| p.snap == snap)
        .ok_or_else(|| TargetError::NoSuchPoint(snap.to_string()))?;
    let start = points[..=end]
        .iter()
        .rposition(|p| p.from_snap.is_none())
        .ok_or_else(|| TargetError::NoSuchPoint(snap.to_string()))?;
    Ok(&points[start..=end])
}

/// The JSON file at `path`, or `None` when there is none.
async fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    match tokio::fs::read(path).await {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes).map_err(std::io::Error::other)?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads until `buf` is full or the file ends.
async fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let got = file.read(&mut buf[n..]).await?;
        if got == 0 {
            break;
        }
        n += got;
    }
    Ok(n)
}

async fn hash_file(path: &Path) -> Result<String, TargetError> {
    let mut file = File::open(path).await?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; IO_BUFFER];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// Applies the diff in `path` to a raw image file.
async fn replay(path: &Path, image: &mut File) -> Result<(), TargetError> {
    let name = path.display().to_string();
    let damaged = |source| TargetError::Damaged {
        file: name.clone(),
        source,
    };
    let mut reader = DiffReader::new(BufReader::with_capacity(IO_BUFFER, File::open(path).await?))
        .await
        .map_err(damaged)?;
    let zeros = vec![0u8; IO_BUFFER];
    while let Some(record) = reader.next().await.map_err(damaged)? {
        match record {
            Record::Size(size) => image.set_len(size).await?,
            Record::Write { offset, data } => {
                image.seek(SeekFrom::Start(offset)).await?;
                image.write_all(&data).await?;
            }
            Record::Zero { offset, mut length } => {
                image.seek(SeekFrom::Start(offset)).await?;
                while length > 0 {
                    let n = length.min(zeros.len() as u64) as usize;
                    image.write_all(&zeros[..n]).await?;
                    length -= n as u64;
                }
            }
            Record::FromSnap(_) | Record::ToSnap(_) | Record::Protected(_) => {}
        }
    }
    Ok(())
}

/// Receives one transfer into a [`DirectoryStore`] as `NNNNNN-<to-snap>.diff`.
pub struct StoreTarget {
    store: DirectoryStore,
    transfer: Option<(Transfer, String)>,
    file: Option<BufWriter<File>>,
    position: u64,
}

impl StoreTarget {
    fn partial(&self) -> Result<(PathBuf, &Transfer, &str), TargetError> {
        let (transfer, name) = self
            .transfer
            .as_ref()
            .ok_or_else(|| TargetError::Io(std::io::Error::other("apply before begin")))?;
        Ok((self.store.root.join(format!("{name}.partial")), transfer, name))
    }

    fn file(&mut self) -> Result<&mut BufWriter<File>, TargetError> {
        self.file
            .as_mut()
            .ok_or_else(|| TargetError::Io(std::io::Error::other("apply before begin")))
    }
}

#[async_trait]
impl Target for StoreTarget {
    async fn begin(&mut self, checkpoint: &Checkpoint) -> Result<(), TargetError> {
        let transfer = checkpoint.transfer.clone();
        let points = self.store.points().await?;
        let last = points.last().map(|p| p.snap.clone());
        if transfer.from_snap.is_some() && transfer.from_snap != last {
            return Err(TargetError::ChainBroken {
                from: transfer.from_snap,
                last,
            });
        }
        let safe: String = transfer
            .to_snap
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let name = format!("{:06}-{safe}.diff", points.len() + 1);
        self.transfer = Some((transfer, name));
        let (path, transfer) = self.partial().map(|(p, t, _)| (p, t.clone()))?;
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .await?;
        if checkpoint.next_seq == 0 {
            let mut header = BANNER_V1.to_vec();
            let records = [
                transfer.from_snap.clone().map(Record::FromSnap),
                Some(Record::ToSnap(transfer.to_snap.clone())),
                Some(Record::Size(transfer.size)),
            ];
            for record in records.iter().flatten() {
                encode_record(Version::V1, record, &mut header)?;
            }
            file.set_len(0).await?;
            file.write_all(&header).await?;
            self.position = header.len() as u64;
        } else {
            // Whatever came after the last commit is dropped; the sender sends it again.
            file.set_len(checkpoint.target_position).await?;
            file.seek(SeekFrom::Start(checkpoint.target_position)).await?;
            self.position = checkpoint.target_position;
        }
        self.file = Some(BufWriter::with_capacity(IO_BUFFER, file));
        Ok(())
    }

    async fn apply(&mut self, chunk: &Chunk) -> Result<(), TargetError> {
        self.file()?.write_all(&chunk.records).await?;
        self.position += chunk.records.len() as u64;
        Ok(())
    }

    async fn commit(&mut self) -> Result<u64, TargetError> {
        let file = self.file()?;
        file.flush().await?;
        file.get_mut().sync_data().await?;
        Ok(self.position)
    }

    async fn finish(&mut self) -> Result<(), TargetError> {
        let file = self.file()?;
        file.write_all(b"e").await?;
        file.flush().await?;
        file.get_mut().sync_all().await?;
        self.file = None;
        let (partial, transfer, name) = self.partial()?;
        let done = self.store.root.join(name);
        tokio::fs::rename(&partial, &done).await?;
        let point = Point {
            snap: transfer.to_snap.clone(),
            from_snap: transfer.from_snap.clone(),
            file: name.to_string(),
            size: transfer.size,
            bytes: tokio::fs::metadata(&done).await?.len(),
            blake3: hash_file(&done).await?,
        };
        let mut manifest = self.store.manifest().await?;
        manifest.points.push(point);
        self.store.save_manifest(&manifest).await
    }
}

pub mod offsite;
#[cfg(test)]
mod tests;
