//! The wire between two sync sidecars: a stream of frames, each a fixed header, a checksum over the
//! header and the payload, and the payload.
//!
//! ```text
//!  0  magic "\xcdS"       2 bytes
//!  2  kind                u8   1 chunk, 2 control
//!  3  flags               u8   bit 0 zstd-compressed payload, bit 1 BLAKE3 checksum (else crc32c)
//!  4  extents             le32 records in a chunk
//!  8  sequence number     le64 chunks count from 0 within a transfer
//! 16  image offset        le64 where the chunk's first extent starts
//! 24  span                le64 bytes of image from there to the end of its last extent
//! 32  raw length          le32 payload bytes before compression
//! 36  wire length         le32 payload bytes that follow the checksum
//! 40  checksum            crc32c (le32) or BLAKE3 (32 bytes) of bytes 0..40 and the wire payload
//!     payload
//! ```
//!
//! A chunk's payload is a run of `w` and `z` records exactly as `rbd export-diff` v1 encodes them, so
//! many small extents share one frame (and one compression context), and a receiver feeding
//! `rbd import-diff` passes the bytes through. A control frame's payload is a JSON [`Control`].
//! A frame is applied only after its checksum matched; a mismatch is [`FrameError::Checksum`] naming
//! the sequence number.

use std::{io, time::Duration};

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{
    checkpoint::{Checkpoint, Transfer},
    diff::{encode_record, DataRecords, Record, Version},
};

const MAGIC: [u8; 2] = [0xcd, b'S'];
const HEADER_LEN: usize = 40;
const KIND_CHUNK: u8 = 1;
const KIND_CONTROL: u8 = 2;
const FLAG_ZSTD: u8 = 1;
const FLAG_BLAKE3: u8 = 2;
/// Payloads above this are refused before anything is allocated for them.
pub const MAX_PAYLOAD: usize = 64 << 20;
/// Chunk payload size when none is configured.
pub const DEFAULT_CHUNK_SIZE: u32 = 4 << 20;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumKind {
    /// CRC-32C (Castagnoli): catches transmission errors, hardware-accelerated, 4 bytes.
    #[default]
    Crc32c,
    /// BLAKE3: a cryptographic hash, 32 bytes.
    Blake3,
}

impl ChecksumKind {
    fn len(self) -> usize {
        match self {
            ChecksumKind::Crc32c => 4,
            ChecksumKind::Blake3 => 32,
        }
    }

    fn compute(self, header: &[u8], payload: &[u8], out: &mut [u8; 32]) {
        match self {
            ChecksumKind::Crc32c => {
                let crc = crc32c::crc32c_append(crc32c::crc32c(header), payload);
                out[..4].copy_from_slice(&crc.to_le_bytes());
            }
            ChecksumKind::Blake3 => {
                let mut hasher = blake3::Hasher::new();
                hasher.update(header);
                hasher.update(payload);
                out.copy_from_slice(hasher.finalize().as_bytes());
            }
        }
    }
}

/// How a sender frames: checksum, compression, rate.
#[derive(Debug, Clone, Default)]
pub struct FrameOptions {
    pub checksum: ChecksumKind,
    /// zstd level for chunk payloads; a payload is sent compressed only when that makes it smaller.
    pub zstd_level: Option<i32>,
    /// Average bytes per second on the wire, headers included.
    pub bytes_per_second: Option<u64>,
}

/// A run of data records of one transfer, numbered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub seq: u64,
    pub offset: u64,
    pub span: u64,
    pub extents: u32,
    /// `w` and `z` records, v1 encoding.
    pub records: Bytes,
}

impl Chunk {
    pub fn records(&self) -> DataRecords {
        DataRecords::new(self.records.clone())
    }

    /// The image offset where the chunk's last extent ends.
    pub fn end(&self) -> u64 {
        self.offset + self.span
    }

    /// Whether the records parse, are as many as announced, and start and end where announced.
    fn well_formed(&self) -> bool {
        let mut count = 0u32;
        let mut first = None;
        let mut end = 0u64;
        for record in self.records() {
            let (offset, length) = match record {
                Ok(Record::Write { offset, data }) => (offset, data.len() as u64),
                Ok(Record::Zero { offset, length }) => (offset, length),
                _ => return false,
            };
            first.get_or_insert(offset);
            end = offset + length;
            count += 1;
        }
        count == self.extents && first == Some(self.offset) && end.checked_sub(self.offset) == Some(self.span)
    }
}

/// Messages that set up, end, resume or refuse a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum Control {
    /// Sender → receiver: the transfer about to start.
    Hello(Transfer),
    /// Receiver → sender: where to start (`next_seq`), from the receiver's checkpoint.
    Resume(Checkpoint),
    /// Sender → receiver: all `chunks` were sent.
    End { chunks: u64 },
    /// Receiver → sender: the target holds the to-snap.
    Done(Checkpoint),
    /// Receiver → sender: the transfer failed at chunk `seq`; `permanent` when another attempt
    /// would be refused too.
    Reject {
        seq: u64,
        reason: String,
        #[serde(default)]
        permanent: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Chunk(Chunk),
    Control(Control),
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame stream i/o failed")]
    Io(#[from] io::Error),
    #[error("frame stream ends inside a frame")]
    Truncated,
    #[error("not a sync frame: magic {found:02x?}")]
    Magic { found: [u8; 2] },
    #[error("frame {seq}: unknown kind {kind} or flags {flags:#04x}")]
    Unknown { seq: u64, kind: u8, flags: u8 },
    #[error("frame {seq}: payload of {len} bytes exceeds {max}")]
    TooLarge { seq: u64, len: usize, max: usize },
    #[error("chunk {seq} failed its checksum")]
    Checksum { seq: u64 },
    #[error("chunk {seq}: payload does not decompress to its {raw_len} bytes")]
    Decompress { seq: u64, raw_len: usize },
    #[error("chunk {seq}: records do not match its header")]
    Malformed { seq: u64 },
    #[error("control frame is not a known message")]
    Control(#[source] serde_json::Error),
}

impl FrameError {
    /// The sequence number of the chunk the error is about, when there is one.
    pub fn seq(&self) -> Option<u64> {
        match self {
            FrameError::Unknown { seq, .. }
            | FrameError::TooLarge { seq, .. }
            | FrameError::Checksum { seq }
            | FrameError::Decompress { seq, .. }
            | FrameError::Malformed { seq } => Some(*seq),
            _ => None,
        }
    }
}

/// Cuts data records into chunks of at most `chunk_size` payload bytes (a larger single write gets
/// a chunk of its own), numbered from 0. The same records always give the same chunks.
pub struct ChunkBuilder {
    chunk_size: usize,
    seq: u64,
    buf: Vec<u8>,
    offset: u64,
    end: u64,
    extents: u32,
}

impl ChunkBuilder {
    pub fn new(chunk_size: u32) -> Self {
        ChunkBuilder {
            chunk_size: chunk_size.max(1) as usize,
            seq: 0,
            buf: Vec::new(),
            offset: 0,
            end: 0,
            extents: 0,
        }
    }

    /// Adds a `Write` or `Zero` (other records are not data and are ignored); returns the chunk that
    /// was completed to make room for it, if any.
    pub fn push(&mut self, record: &Record) -> Option<Chunk> {
        let (offset, length, encoded) = match record {
            Record::Write { offset, data } => (*offset, data.len() as u64, 17 + data.len()),
            Record::Zero { offset, length } => (*offset, *length, 17),
            _ => return None,
        };
        let done = (self.extents > 0 && self.buf.len() + encoded > self.chunk_size)
            .then(|| self.take())
            .flatten();
        if self.extents == 0 {
            self.offset = offset;
        }
        // Writing to a Vec cannot fail and data records carry no name to refuse.
        let _ = encode_record(Version::V1, record, &mut self.buf);
        self.end = offset + length;
        self.extents += 1;
        done
    }

    /// The chunk being filled, if it holds anything.
    pub fn take(&mut self) -> Option<Chunk> {
        if self.extents == 0 {
            return None;
        }
        let chunk = Chunk {
            seq: self.seq,
            offset: self.offset,
            span: self.end - self.offset,
            extents: self.extents,
            records: Bytes::from(std::mem::take(&mut self.buf)),
        };
        self.buf.reserve(self.chunk_size.min(MAX_PAYLOAD) + 17);
        self.seq += 1;
        self.extents = 0;
        Some(chunk)
    }
}

/// Bytes sent: payload before compression, and on the wire (headers and checksums included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireStats {
    pub frames: u64,
    pub raw_bytes: u64,
    pub wire_bytes: u64,
}

pub struct FrameWriter<W> {
    inner: W,
    checksum: ChecksumKind,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    limiter: Option<RateLimiter>,
    compressed: Vec<u8>,
    stats: WireStats,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(inner: W, options: &FrameOptions) -> io::Result<Self> {
        let compressor = options.zstd_level.map(zstd::bulk::Compressor::new).transpose()?;
        Ok(FrameWriter {
            inner,
            checksum: options.checksum,
            compressor,
            limiter: options.bytes_per_second.map(RateLimiter::new),
            compressed: Vec::new(),
            stats: WireStats::default(),
        })
    }

    pub async fn chunk(&mut self, chunk: &Chunk) -> io::Result<()> {
        let raw = &chunk.records[..];
        let mut flags = 0;
        if let Some(compressor) = &mut self.compressor {
            self.compressed.clear();
            self.compressed
                .reserve(zstd::zstd_safe::compress_bound(raw.len()));
            if compressor.compress_to_buffer(raw, &mut self.compressed).is_ok()
                && self.compressed.len() < raw.len()
            {
                flags |= FLAG_ZSTD;
            }
        }
        let payload = if flags & FLAG_ZSTD != 0 {
            std::mem::take(&mut self.compressed)
        } else {
            Vec::new()
        };
        let wire: &[u8] = if flags & FLAG_ZSTD != 0 { &payload } else { raw };
        let header = Header {
            kind: KIND_CHUNK,
            flags,
            extents: chunk.extents,
            seq: chunk.seq,
            offset: chunk.offset,
            span: chunk.span,
            raw_len: raw.len(),
        };
        let result = self.write_frame(header, wire).await;
        if flags & FLAG_ZSTD != 0 {
            self.compressed = payload;
        }
        result
    }

    pub async fn control(&mut self, control: &Control) -> io::Result<()> {
        let json = serde_json::to_vec(control)?;
        let header = Header {
            kind: KIND_CONTROL,
            flags: 0,
            extents: 0,
            seq: 0,
            offset: 0,
            span: 0,
            raw_len: json.len(),
        };
        self.write_frame(header, &json).await?;
        self.inner.flush().await
    }

    async fn write_frame(&mut self, header: Header, wire: &[u8]) -> io::Result<()> {
        let flags = match self.checksum {
            ChecksumKind::Crc32c => header.flags,
            ChecksumKind::Blake3 => header.flags | FLAG_BLAKE3,
        };
        let mut head = [0u8; HEADER_LEN + 32];
        head[..HEADER_LEN].copy_from_slice(&Header { flags, ..header }.encode(wire.len()));
        let mut sum = [0u8; 32];
        self.checksum.compute(&head[..HEADER_LEN], wire, &mut sum);
        let head_len = HEADER_LEN + self.checksum.len();
        head[HEADER_LEN..head_len].copy_from_slice(&sum[..self.checksum.len()]);
        let total = (head_len + wire.len()) as u64;
        if let Some(limiter) = &mut self.limiter {
            limiter.acquire(total).await;
        }
        self.inner.write_all(&head[..head_len]).await?;
        self.inner.write_all(wire).await?;
        self.stats.frames += 1;
        self.stats.raw_bytes += header.raw_len as u64;
        self.stats.wire_bytes += total;
        Ok(())
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().await
    }

    pub fn stats(&self) -> WireStats {
        self.stats
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

#[derive(Debug, Clone, Copy)]
struct Header {
    kind: u8,
    flags: u8,
    extents: u32,
    seq: u64,
    offset: u64,
    span: u64,
    raw_len: usize,
}

impl Header {
    fn encode(&self, wire_len: usize) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..2].copy_from_slice(&MAGIC);
        h[2] = self.kind;
        h[3] = self.flags;
        h[4..8].copy_from_slice(&self.extents.to_le_bytes());
        h[8..16].copy_from_slice(&self.seq.to_le_bytes());
        h[16..24].copy_from_slice(&self.offset.to_le_bytes());
        h[24..32].copy_from_slice(&self.span.to_le_bytes());
        h[32..36].copy_from_slice(&(self.raw_len as u32).to_le_bytes());
        h[36..40].copy_from_slice(&(wire_len as u32).to_le_bytes());
        h
    }
}

fn le32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

pub struct FrameReader<R> {
    inner: R,
    decompressor: zstd::bulk::Decompressor<'static>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> io::Result<Self> {
        Ok(FrameReader {
            inner,
            decompressor: zstd::bulk::Decompressor::new()?,
        })
    }

    /// The next frame, verified; `None` when the stream ends between frames.
    pub async fn next(&mut self) -> Result<Option<Frame>, FrameError> {
        let mut h = [0u8; HEADER_LEN + 32];
        let first = self.inner.read(&mut h[..HEADER_LEN]).await?;
        if first == 0 {
            return Ok(None);
        }
        self.exact(&mut h[first..HEADER_LEN]).await?;
        if h[0..2] != MAGIC {
            return Err(FrameError::Magic { found: [h[0], h[1]] });
        }
        let (kind, flags, extents, seq) = (h[2], h[3], le32(&h[4..]), le64(&h[8..]));
        let (offset, span) = (le64(&h[16..]), le64(&h[24..]));
        let (raw_len, wire_len) = (le32(&h[32..]) as usize, le32(&h[36..]) as usize);
        if !(kind == KIND_CHUNK || kind == KIND_CONTROL) || flags & !(FLAG_ZSTD | FLAG_BLAKE3) != 0 {
            return Err(FrameError::Unknown { seq, kind, flags });
        }
        for len in [raw_len, wire_len] {
            if len > MAX_PAYLOAD {
                return Err(FrameError::TooLarge {
                    seq,
                    len,
                    max: MAX_PAYLOAD,
                });
            }
        }
        let checksum = if flags & FLAG_BLAKE3 != 0 {
            ChecksumKind::Blake3
        } else {
            ChecksumKind::Crc32c
        };
        let sum_len = checksum.len();
        self.exact(&mut h[HEADER_LEN..HEADER_LEN + sum_len]).await?;
        let mut payload = BytesMut::with_capacity(wire_len);
        while payload.len() < wire_len {
            let want = wire_len - payload.len();
            if (&mut self.inner).take(want as u64).read_buf(&mut payload).await? == 0 {
                return Err(FrameError::Truncated);
            }
        }
        let mut sum = [0u8; 32];
        checksum.compute(&h[..HEADER_LEN], &payload, &mut sum);
        if sum[..sum_len] != h[HEADER_LEN..HEADER_LEN + sum_len] {
            return Err(FrameError::Checksum { seq });
        }
        let payload = if flags & FLAG_ZSTD != 0 {
            let raw = self
                .decompressor
                .decompress(&payload, raw_len)
                .map_err(|_| FrameError::Decompress { seq, raw_len })?;
            if raw.len() != raw_len {
                return Err(FrameError::Decompress { seq, raw_len });
            }
            Bytes::from(raw)
        } else {
            payload.freeze()
        };
        if kind == KIND_CONTROL {
            return serde_json::from_slice(&payload)
                .map(|c| Some(Frame::Control(c)))
                .map_err(FrameError::Control);
        }
        let chunk = Chunk {
            seq,
            offset,
            span,
            extents,
            records: payload,
        };
        if !chunk.well_formed() {
            return Err(FrameError::Malformed { seq });
        }
        Ok(Some(Frame::Chunk(chunk)))
    }

    async fn exact(&mut self, buf: &mut [u8]) -> Result<(), FrameError> {
        match self.inner.read_exact(buf).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(FrameError::Truncated),
            Err(e) => Err(e.into()),
        }
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

/// A token bucket of bytes: on average at most `bytes_per_second`, in bursts of up to a tenth of a
/// second's worth (at least 64 KiB). A frame larger than the bucket waits for what it overdraws.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: tokio::time::Instant,
}

impl RateLimiter {
    pub fn new(bytes_per_second: u64) -> Self {
        let rate = bytes_per_second.max(1) as f64;
        let burst = (rate / 10.0).max(65536.0);
        RateLimiter {
            rate,
            burst,
            tokens: burst,
            last: tokio::time::Instant::now(),
        }
    }

    pub async fn acquire(&mut self, bytes: u64) {
        let now = tokio::time::Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.last = now;
        self.tokens = (self.tokens + refill).min(self.burst) - bytes as f64;
        if self.tokens < 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(-self.tokens / self.rate)).await;
        }
    }
}

#[cfg(test)]
mod tests;
