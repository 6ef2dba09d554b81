//! One transfer between a sender and a receiver over any byte stream (TLS in production):
//!
//! ```text
//! sender                               receiver
//!   Hello(transfer)            ──▶       loads its checkpoint of that transfer
//!                              ◀──     Resume(checkpoint)
//!   chunks next_seq..          ──▶       verifies, applies, commits every commit_every bytes,
//!                                        saves the checkpoint after each commit
//!   End { chunks }             ──▶       commits, creates the to-snap
//!                              ◀──     Done(checkpoint) | Reject { seq, reason }
//! ```
//!
//! The sender re-reads the same diff (snapshots do not change) and skips the chunks the checkpoint
//! names as applied; chunking is deterministic, so sequence numbers match. A chunk that fails its
//! checksum is rejected by sequence number; the next attempt resumes from the last checkpoint and
//! sends it again.

use std::{
    future::Future,
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite, BufReader, BufWriter};

use super::{
    checkpoint::{Checkpoint, Transfer},
    diff::{DiffError, DiffReader, Record},
    frame::{
        Chunk, ChunkBuilder, Control, Frame, FrameError, FrameOptions, FrameReader, FrameWriter, WireStats,
    },
};
use crate::error_chain;

/// Chunk sizes a sender accepts; others are clamped into this range.
pub const MIN_CHUNK_SIZE: u32 = 64;
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;

/// Where a receiver applies chunks: an RBD image, a backup store.
#[async_trait]
pub trait Target: Send {
    /// Prepares to apply the checkpoint's transfer after the chunks it names as applied;
    /// `checkpoint.target_position` is what [`Target::commit`] returned then (0 when it never ran:
    /// the receiver commits once right after `begin`).
    async fn begin(&mut self, checkpoint: &Checkpoint) -> Result<(), TargetError>;
    async fn apply(&mut self, chunk: &Chunk) -> Result<(), TargetError>;
    /// Makes everything applied so far durable; returns the position to record in the checkpoint.
    async fn commit(&mut self) -> Result<u64, TargetError>;
    /// After the last commit: makes the target hold the to-snap.
    async fn finish(&mut self) -> Result<(), TargetError>;
}

#[async_trait]
impl<T: Target + ?Sized> Target for &mut T {
    async fn begin(&mut self, checkpoint: &Checkpoint) -> Result<(), TargetError> {
        (**self).begin(checkpoint).await
    }
    async fn apply(&mut self, chunk: &Chunk) -> Result<(), TargetError> {
        (**self).apply(chunk).await
    }
    async fn commit(&mut self) -> Result<u64, TargetError> {
        (**self).commit().await
    }
    async fn finish(&mut self) -> Result<(), TargetError> {
        (**self).finish().await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("target i/o failed")]
    Io(#[from] io::Error),
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("transfer from {from:?} does not continue the chain, which ends at {last:?}")]
    ChainBroken {
        from: Option<String>,
        last: Option<String>,
    },
    #[error("image {0} exists: a full transfer writes only into an image it created")]
    Exists(String),
    #[error(
        "image {image} was written since {since}: a delta applies only onto the snapshot it starts from"
    )]
    Diverged { image: String, since: String },
    #[error("image {image} holds {newer}, from {to} or later: the copy went on without this sender")]
    Superseded {
        image: String,
        to: String,
        newer: String,
    },
    #[error("no restore point {0:?} in the store")]
    NoSuchPoint(String),
    #[error("backup file {file} does not match its BLAKE3 in the manifest")]
    HashMismatch { file: String },
    #[error("backup file {file} is damaged")]
    Damaged {
        file: String,
        #[source]
        source: DiffError,
    },
    #[error("offsite copy: {action} {key}")]
    Offsite {
        action: &'static str,
        key: String,
        #[source]
        source: s3::error::S3Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("diff stream")]
    Diff(#[from] DiffError),
    #[error("frame stream")]
    Frame(#[from] FrameError),
    #[error("connection")]
    Io(#[from] io::Error),
    #[error("target")]
    Target(#[from] TargetError),
    #[error("the diff names no to-snap")]
    NoToSnap,
    #[error("expected {expected}, got another frame")]
    Unexpected { expected: &'static str },
    #[error("the peer answered for another transfer")]
    OtherTransfer,
    #[error("expected chunk {expected}, got {found}")]
    OutOfOrder { expected: u64, found: u64 },
    #[error("the checkpoint says chunk {seq} ends at {checkpoint}, the diff has it end at {diff}")]
    CheckpointMismatch { seq: u64, checkpoint: u64, diff: u64 },
    #[error("the peer rejected chunk {seq}: {reason}")]
    Rejected {
        seq: u64,
        reason: String,
        permanent: bool,
    },
    #[error("the connection closed before the transfer ended")]
    Closed,
    #[error("the receiver refuses {image}: {reason}")]
    Refused { image: String, reason: &'static str },
}

impl SyncError {
    /// Whether another attempt of the same transfer would fail the same way.
    pub fn permanent(&self) -> bool {
        matches!(
            self,
            SyncError::Refused { .. }
                | SyncError::NoToSnap
                | SyncError::OtherTransfer
                | SyncError::Target(
                    TargetError::ChainBroken { .. }
                        | TargetError::Exists(_)
                        | TargetError::Diverged { .. }
                        | TargetError::Superseded { .. }
                )
                | SyncError::Rejected { permanent: true, .. }
        )
    }

    /// The chunk the error is about, when there is one: a corrupted or rejected chunk.
    pub fn seq(&self) -> Option<u64> {
        match self {
            SyncError::Frame(e) => e.seq(),
            SyncError::Rejected { seq, .. } | SyncError::OutOfOrder { found: seq, .. } => Some(*seq),
            _ => None,
        }
    }
}

/// What a sender did.
#[derive(Debug, Clone)]
pub struct SendReport {
    /// The first chunk sent: 0, or where the receiver's checkpoint resumed.
    pub resumed_at: u64,
    pub chunks: u64,
    pub chunks_sent: u64,
    /// Bytes of extents in the diff (written and zeroed ranges' data; zeroed ranges count 0).
    pub changed_bytes: u64,
    pub wire: WireStats,
    pub checkpoint: Checkpoint,
}

/// Sends the diff read by `diff` as transfer of `image`, over `stream`, to a [`receive`]r.
pub async fn send<D, S>(
    image: &str,
    diff: DiffReader<D>,
    chunk_size: u32,
    stream: S,
    options: &FrameOptions,
) -> Result<SendReport, SyncError>
where
    D: AsyncRead + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let chunk_size = chunk_size.clamp(MIN_CHUNK_SIZE, MAX_CHUNK_SIZE);
    // Writes are cut at the chunk size, the same way on every run; a piece of that size gets a chunk
    // of its own.
    let mut diff = diff.with_max_chunk(chunk_size as usize);
    let (mut from_snap, mut to_snap, mut size) = (None, None, 0);
    let first = loop {
        match diff.next().await? {
            Some(Record::FromSnap(s)) => from_snap = Some(s),
            Some(Record::ToSnap(s)) => to_snap = Some(s),
            Some(Record::Size(s)) => size = s,
            Some(Record::Protected(_)) => {}
            data => break data,
        }
    };
    let transfer = Transfer {
        image: image.to_string(),
        from_snap,
        to_snap: to_snap.ok_or(SyncError::NoToSnap)?,
        size,
        chunk_size,
    };
    let (read, write) = tokio::io::split(stream);
    let mut reader = FrameReader::new(BufReader::new(read))?;
    let mut writer = FrameWriter::new(BufWriter::with_capacity(1 << 20, write), options)?;
    writer.control(&Control::Hello(transfer.clone())).await?;
    let resume = match reader.next().await? {
        Some(Frame::Control(Control::Resume(c))) if c.transfer == transfer => c,
        Some(Frame::Control(Control::Resume(_))) => return Err(SyncError::OtherTransfer),
        Some(Frame::Control(Control::Reject {
            seq,
            reason,
            permanent,
        })) => {
            return Err(SyncError::Rejected {
                seq,
                reason,
                permanent,
            })
        }
        _ => return Err(SyncError::Unexpected { expected: "Resume" }),
    };
    let mut report = SendReport {
        resumed_at: resume.next_seq,
        chunks: 0,
        chunks_sent: 0,
        changed_bytes: 0,
        wire: WireStats::default(),
        checkpoint: resume.clone(),
    };
    let streamed = stream_chunks(&mut diff, first, &resume, &mut writer, &mut report).await;
    if let Err(error) = streamed {
        // A receiver that refused a chunk says why before it hangs up: report that rather than the
        // broken pipe it caused.
        let answer = tokio::time::timeout(Duration::from_secs(5), reader.next()).await;
        return Err(match answer {
            Ok(Ok(Some(Frame::Control(Control::Reject {
                seq,
                reason,
                permanent,
            })))) => SyncError::Rejected {
                seq,
                reason,
                permanent,
            },
            _ => error,
        });
    }
    report.wire = writer.stats();
    match reader.next().await? {
        Some(Frame::Control(Control::Done(c))) if c.transfer == transfer && c.complete => {
            report.checkpoint = c;
            Ok(report)
        }
        Some(Frame::Control(Control::Reject {
            seq,
            reason,
            permanent,
        })) => Err(SyncError::Rejected {
            seq,
            reason,
            permanent,
        }),
        None => Err(SyncError::Closed),
        _ => Err(SyncError::Unexpected { expected: "Done" }),
    }
}

async fn stream_chunks<D, W>(
    diff: &mut DiffReader<D>,
    first: Option<Record>,
    resume: &Checkpoint,
    writer: &mut FrameWriter<W>,
    report: &mut SendReport,
) -> Result<(), SyncError>
where
    D: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut builder = ChunkBuilder::new(resume.transfer.chunk_size);
    let mut next = first;
    loop {
        let chunk = match &next {
            Some(record) => {
                if let Record::Write { data, .. } = record {
                    report.changed_bytes += data.len() as u64;
                }
                builder.push(record)
            }
            None => builder.take(),
        };
        if let Some(chunk) = chunk {
            report.chunks = chunk.seq + 1;
            if chunk.seq + 1 == resume.next_seq && chunk.end() != resume.offset {
                return Err(SyncError::CheckpointMismatch {
                    seq: chunk.seq,
                    checkpoint: resume.offset,
                    diff: chunk.end(),
                });
            }
            if chunk.seq >= resume.next_seq {
                writer.chunk(&chunk).await?;
                report.chunks_sent += 1;
            }
        }
        if next.is_none() {
            break;
        }
        next = diff.next().await?;
    }
    if report.chunks < resume.next_seq {
        return Err(SyncError::CheckpointMismatch {
            seq: resume.next_seq - 1,
            checkpoint: resume.offset,
            diff: 0,
        });
    }
    writer
        .control(&Control::End {
            chunks: report.chunks,
        })
        .await?;
    Ok(())
}

/// Receives one transfer from a [`send`]er over `stream` into `target`, committing every
/// `commit_every` payload bytes and keeping its checkpoint at `checkpoint_path`.
pub async fn receive<S, T>(
    stream: S,
    target: &mut T,
    checkpoint_path: &Path,
    commit_every: u64,
) -> Result<Checkpoint, SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: Target,
{
    let path = checkpoint_path.to_path_buf();
    receive_with(stream, commit_every, |_| async move { Ok((target, path)) }).await
}

/// Like [`receive`], with the target and its checkpoint file chosen by `choose` once the sender said
/// which transfer it brings; an error of `choose` is sent back as the reason of a `Reject`.
pub async fn receive_with<S, T, F, Fut>(
    stream: S,
    commit_every: u64,
    choose: F,
) -> Result<Checkpoint, SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: Target,
    F: FnOnce(Transfer) -> Fut,
    Fut: Future<Output = Result<(T, PathBuf), SyncError>>,
{
    let (read, write) = tokio::io::split(stream);
    let mut reader = FrameReader::new(BufReader::with_capacity(1 << 20, read))?;
    let mut writer = FrameWriter::new(BufWriter::new(write), &FrameOptions::default())?;
    let transfer = match reader.next().await? {
        Some(Frame::Control(Control::Hello(t))) => t,
        _ => return Err(SyncError::Unexpected { expected: "Hello" }),
    };
    let (mut target, checkpoint_path) = match choose(transfer.clone()).await {
        Ok(chosen) => chosen,
        Err(error) => {
            let reject = Control::Reject {
                seq: 0,
                reason: error_chain(&error),
                permanent: error.permanent(),
            };
            let _ = writer.control(&reject).await;
            return Err(error);
        }
    };
    let checkpoint_path = checkpoint_path.as_path();
    let mut checkpoint = match Checkpoint::load(checkpoint_path).await? {
        Some(c) if c.transfer == transfer => c,
        _ => Checkpoint::start(transfer),
    };
    writer.control(&Control::Resume(checkpoint.clone())).await?;
    let result = apply_chunks(
        &mut reader,
        &mut target,
        &mut checkpoint,
        checkpoint_path,
        commit_every,
    )
    .await;
    match result {
        Ok(()) => {
            writer.control(&Control::Done(checkpoint.clone())).await?;
            Ok(checkpoint)
        }
        Err(error) => {
            let seq = error.seq().unwrap_or(checkpoint.next_seq);
            let reject = Control::Reject {
                seq,
                reason: error_chain(&error),
                permanent: error.permanent(),
            };
            // The sender may already be gone; the error that matters is ours.
            let _ = writer.control(&reject).await;
            Err(error)
        }
    }
}

async fn apply_chunks<R, T>(
    reader: &mut FrameReader<R>,
    target: &mut T,
    checkpoint: &mut Checkpoint,
    checkpoint_path: &Path,
    commit_every: u64,
) -> Result<(), SyncError>
where
    R: AsyncRead + Unpin,
    T: Target,
{
    if !checkpoint.complete {
        target.begin(checkpoint).await?;
        // Records what `begin` did (created the image, wrote a file header) before any chunk.
        let (next_seq, offset) = (checkpoint.next_seq, checkpoint.offset);
        commit(target, checkpoint, next_seq, offset, checkpoint_path).await?;
    }
    let mut expected = checkpoint.next_seq;
    let mut uncommitted = 0u64;
    let mut last_end = checkpoint.offset;
    loop {
        match reader.next().await? {
            Some(Frame::Chunk(chunk)) => {
                if chunk.seq != expected || checkpoint.complete {
                    return Err(SyncError::OutOfOrder {
                        expected,
                        found: chunk.seq,
                    });
                }
                target.apply(&chunk).await?;
                expected += 1;
                last_end = chunk.end();
                uncommitted += chunk.records.len() as u64;
                if uncommitted >= commit_every {
                    commit(target, checkpoint, expected, last_end, checkpoint_path).await?;
                    uncommitted = 0;
                }
            }
            Some(Frame::Control(Control::End { chunks })) => {
                if checkpoint.complete {
                    return Ok(());
                }
                if chunks != expected {
                    return Err(SyncError::OutOfOrder {
                        expected,
                        found: chunks,
                    });
                }
                commit(target, checkpoint, expected, last_end, checkpoint_path).await?;
                target.finish().await?;
                checkpoint.complete = true;
                checkpoint.save(checkpoint_path).await?;
                return Ok(());
            }
            Some(Frame::Control(_)) => {
                return Err(SyncError::Unexpected {
                    expected: "a chunk or End",
                })
            }
            None => return Err(SyncError::Closed),
        }
    }
}

async fn commit<T: Target>(
    target: &mut T,
    checkpoint: &mut Checkpoint,
    next_seq: u64,
    offset: u64,
    path: &Path,
) -> Result<(), SyncError> {
    checkpoint.target_position = target.commit().await?;
    checkpoint.next_seq = next_seq;
    checkpoint.offset = offset;
    checkpoint.save(path).await?;
    Ok(())
}

#[cfg(test)]
mod tests;
