//! The `rbd export-diff` stream (Ceph's `doc/dev/rbd-diff.rst`), read and written as it flows.
//!
//! A diff is a banner, metadata records (from-snap `f`, to-snap `t`, image size `s`, and in v2 the
//! to-snap's protection `p`), data records (`w` offset, length, bytes; `z` offset, length) and an end
//! record `e`. Version 2 puts a le64 length after every tag but `e`, so readers skip tags they do not
//! know. `rbd export-diff` and `rbd import-diff` speak only v1; v2 diffs appear inside the stream of
//! `rbd export --export-format 2` (banner `rbd image v2\n`, image metadata, `rbd image diffs v2\n`, a
//! le64 count, then one v2 diff per snapshot, oldest first, and one for the head), which
//! [`ImageExport`] reads. Measured on Pacific 16.2.15: the v2 diffs of a snapshot carry a `p` record
//! that declares 8 bytes and holds 1, which this reader accepts as Ceph's own reader does.
//!
//! Memory stays bounded: a `w` record is handed out in pieces of at most `max_chunk` bytes as they
//! arrive, never buffered whole.

use std::io;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const BANNER_V1: &[u8] = b"rbd diff v1\n";
pub const BANNER_V2: &[u8] = b"rbd diff v2\n";
pub const IMAGE_BANNER_V2: &[u8] = b"rbd image v2\n";
pub const IMAGE_DIFFS_BANNER_V2: &[u8] = b"rbd image diffs v2\n";

/// The largest piece of a `w` record handed out at once.
pub const DEFAULT_MAX_CHUNK: usize = 4 << 20;
/// `rbd import-diff` refuses longer snapshot names (it reads them with a 4 KiB limit).
pub const MAX_SNAP_NAME: usize = 4096;
/// Image metadata keys and values of `rbd export --export-format 2` are refused past this length.
const MAX_META_FIELD: usize = 64 << 10;

const TAG_FROM_SNAP: u8 = b'f';
const TAG_TO_SNAP: u8 = b't';
const TAG_SIZE: u8 = b's';
const TAG_PROTECTED: u8 = b'p';
const TAG_WRITE: u8 = b'w';
const TAG_ZERO: u8 = b'z';
const TAG_END: u8 = b'e';

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn banner(self) -> &'static [u8] {
        match self {
            Version::V1 => BANNER_V1,
            Version::V2 => BANNER_V2,
        }
    }
}

/// One record of a diff. A `w` record longer than the reader's `max_chunk` arrives as several
/// `Write`s with consecutive offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    FromSnap(String),
    ToSnap(String),
    /// The image size at the to-snap.
    Size(u64),
    /// Whether the to-snap is protected (v2 only in practice; Ceph's reader accepts it in v1 too).
    Protected(bool),
    Write {
        offset: u64,
        data: Bytes,
    },
    Zero {
        offset: u64,
        length: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("reading the diff stream failed")]
    Io(#[from] io::Error),
    #[error("not an rbd diff stream: banner {found:?}")]
    Banner { found: String },
    #[error("diff stream ends inside a record at byte {at}")]
    Truncated { at: u64 },
    #[error("unknown record tag {tag:#04x} at byte {at} of a v1 diff")]
    UnknownTag { tag: u8, at: u64 },
    #[error("record '{tag}' at byte {at} declares {declared} bytes, its fields take {expected}")]
    RecordLength {
        tag: char,
        at: u64,
        declared: u64,
        expected: u64,
    },
    #[error("string of {len} bytes at byte {at} exceeds {max}")]
    StringTooLong { len: u64, max: usize, at: u64 },
    #[error("string at byte {at} is not UTF-8")]
    NotUtf8 { at: u64 },
    #[error("extent at byte {at} runs past the largest offset: offset {offset}, length {length}")]
    ExtentOverflow { offset: u64, length: u64, at: u64 },
}

/// A reader that counts what it consumed, so errors name the byte they are about.
struct Input<R> {
    inner: R,
    pos: u64,
}

impl<R: AsyncRead + Unpin> Input<R> {
    async fn exact(&mut self, buf: &mut [u8]) -> Result<(), DiffError> {
        match self.inner.read_exact(buf).await {
            Ok(_) => {
                self.pos += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(DiffError::Truncated { at: self.pos }),
            Err(e) => Err(e.into()),
        }
    }

    async fn u8(&mut self) -> Result<u8, DiffError> {
        let mut b = [0u8; 1];
        self.exact(&mut b).await?;
        Ok(b[0])
    }

    async fn u32(&mut self) -> Result<u32, DiffError> {
        let mut b = [0u8; 4];
        self.exact(&mut b).await?;
        Ok(u32::from_le_bytes(b))
    }

    async fn u64(&mut self) -> Result<u64, DiffError> {
        let mut b = [0u8; 8];
        self.exact(&mut b).await?;
        Ok(u64::from_le_bytes(b))
    }

    /// `len` bytes, read straight into a new buffer (not zeroed first: data is most of the stream).
    async fn bytes(&mut self, len: usize) -> Result<Bytes, DiffError> {
        let mut buf = BytesMut::with_capacity(len);
        while buf.len() < len {
            let want = (len - buf.len()) as u64;
            if (&mut self.inner).take(want).read_buf(&mut buf).await? == 0 {
                return Err(DiffError::Truncated {
                    at: self.pos + buf.len() as u64,
                });
            }
        }
        self.pos += len as u64;
        Ok(buf.freeze())
    }

    /// A le32-prefixed string of at most `max` bytes; returns it and the bytes it took.
    async fn string(&mut self, max: usize) -> Result<(String, u64), DiffError> {
        let at = self.pos;
        let len = self.u32().await?;
        if len as usize > max {
            return Err(DiffError::StringTooLong {
                len: len.into(),
                max,
                at,
            });
        }
        let raw = self.bytes(len as usize).await?;
        let s = String::from_utf8(raw.to_vec()).map_err(|_| DiffError::NotUtf8 { at })?;
        Ok((s, 4 + u64::from(len)))
    }

    /// Reads and drops `len` bytes, a bounded buffer at a time.
    async fn skip(&mut self, mut len: u64) -> Result<(), DiffError> {
        let mut buf = [0u8; 8192];
        while len > 0 {
            let n = len.min(buf.len() as u64) as usize;
            self.exact(&mut buf[..n]).await?;
            len -= n as u64;
        }
        Ok(())
    }

    async fn banner(&mut self, expected: &[&'static [u8]]) -> Result<&'static [u8], DiffError> {
        let mut buf = vec![0u8; expected[0].len()];
        self.exact(&mut buf).await.map_err(|e| match e {
            DiffError::Truncated { .. } => DiffError::Banner {
                found: String::from_utf8_lossy(&buf).into_owned(),
            },
            other => other,
        })?;
        expected
            .iter()
            .find(|b| **b == buf.as_slice())
            .copied()
            .ok_or_else(|| DiffError::Banner {
                found: String::from_utf8_lossy(&buf).into_owned(),
            })
    }
}

fn check_length(tag: u8, at: u64, declared: Option<u64>, expected: u64) -> Result<(), DiffError> {
    match declared {
        Some(declared) if declared != expected => Err(DiffError::RecordLength {
            tag: tag as char,
            at,
            declared,
            expected,
        }),
        _ => Ok(()),
    }
}

/// The rest of a `w` record still to be handed out.
struct PendingWrite {
    offset: u64,
    remaining: u64,
}

/// Reads one diff, v1 or v2 by its banner, record by record.
pub struct DiffReader<R> {
    input: Input<R>,
    version: Version,
    max_chunk: usize,
    pending: Option<PendingWrite>,
    ended: bool,
}

impl<R: AsyncRead + Unpin> DiffReader<R> {
    /// Reads the banner; fails unless it is `rbd diff v1\n` or `rbd diff v2\n`.
    pub async fn new(inner: R) -> Result<Self, DiffError> {
        Self::from_input(Input { inner, pos: 0 }).await
    }

    async fn from_input(mut input: Input<R>) -> Result<Self, DiffError> {
        let banner = input.banner(&[BANNER_V1, BANNER_V2]).await?;
        let version = if banner == BANNER_V1 {
            Version::V1
        } else {
            Version::V2
        };
        Ok(DiffReader {
            input,
            version,
            max_chunk: DEFAULT_MAX_CHUNK,
            pending: None,
            ended: false,
        })
    }

    /// Hands out `w` data in pieces of at most `max_chunk` bytes (at least 1).
    pub fn with_max_chunk(mut self, max_chunk: usize) -> Self {
        self.max_chunk = max_chunk.max(1);
        self
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// Bytes consumed so far, banner included.
    pub fn position(&self) -> u64 {
        self.input.pos
    }

    /// The next record, or `None` after the end record. A stream that stops before `e` is
    /// [`DiffError::Truncated`]: a diff cut short must never look complete.
    pub async fn next(&mut self) -> Result<Option<Record>, DiffError> {
        if let Some(pending) = self.pending.take() {
            return self.piece(pending).await.map(Some);
        }
        if self.ended {
            return Ok(None);
        }
        loop {
            let at = self.input.pos;
            let tag = self.input.u8().await?;
            if tag == TAG_END {
                self.ended = true;
                return Ok(None);
            }
            let declared = match self.version {
                Version::V1 => None,
                Version::V2 => Some(self.input.u64().await?),
            };
            let record = match tag {
                TAG_FROM_SNAP | TAG_TO_SNAP => {
                    let (name, took) = self.input.string(MAX_SNAP_NAME).await?;
                    check_length(tag, at, declared, took)?;
                    if tag == TAG_FROM_SNAP {
                        Record::FromSnap(name)
                    } else {
                        Record::ToSnap(name)
                    }
                }
                TAG_SIZE => {
                    check_length(tag, at, declared, 8)?;
                    Record::Size(self.input.u64().await?)
                }
                TAG_PROTECTED => {
                    // Pacific (16.2) declares 8 bytes but writes the one byte of a bool; Ceph's reader
                    // ignores the declared length of the tags it knows.
                    if declared != Some(8) {
                        check_length(tag, at, declared, 1)?;
                    }
                    Record::Protected(self.input.u8().await? != 0)
                }
                TAG_WRITE | TAG_ZERO => {
                    let offset = self.input.u64().await?;
                    let length = self.input.u64().await?;
                    if offset.checked_add(length).is_none() {
                        return Err(DiffError::ExtentOverflow { offset, length, at });
                    }
                    if tag == TAG_ZERO {
                        check_length(tag, at, declared, 16)?;
                        Record::Zero { offset, length }
                    } else {
                        let expected =
                            length
                                .checked_add(16)
                                .ok_or(DiffError::ExtentOverflow { offset, length, at })?;
                        check_length(tag, at, declared, expected)?;
                        if length == 0 {
                            Record::Write {
                                offset,
                                data: Bytes::new(),
                            }
                        } else {
                            let pending = PendingWrite {
                                offset,
                                remaining: length,
                            };
                            return self.piece(pending).await.map(Some);
                        }
                    }
                }
                _ => match declared {
                    Some(len) => {
                        self.input.skip(len).await?;
                        continue;
                    }
                    None => return Err(DiffError::UnknownTag { tag, at }),
                },
            };
            return Ok(Some(record));
        }
    }

    /// The next piece of the `w` record being read; keeps the rest pending.
    async fn piece(&mut self, mut pending: PendingWrite) -> Result<Record, DiffError> {
        let n = pending.remaining.min(self.max_chunk as u64);
        let offset = pending.offset;
        pending.offset += n;
        pending.remaining -= n;
        if pending.remaining > 0 {
            self.pending = Some(pending);
        }
        let data = self.input.bytes(n as usize).await?;
        Ok(Record::Write { offset, data })
    }

    /// The underlying reader, positioned after the end record once `next` returned `None`.
    pub fn into_inner(self) -> R {
        self.input.inner
    }
}

/// Writes one diff. Wrap `inner` in a `BufWriter` when records are small.
pub struct DiffWriter<W> {
    inner: W,
    version: Version,
}

impl<W: AsyncWrite + Unpin> DiffWriter<W> {
    /// Writes the banner of `version`.
    pub async fn new(mut inner: W, version: Version) -> io::Result<Self> {
        inner.write_all(version.banner()).await?;
        Ok(DiffWriter { inner, version })
    }

    pub async fn record(&mut self, record: &Record) -> io::Result<()> {
        let mut head = Vec::with_capacity(32);
        encode_head(self.version, record, &mut head)?;
        self.inner.write_all(&head).await?;
        match record {
            Record::Write { data, .. } => self.inner.write_all(data).await,
            _ => Ok(()),
        }
    }

    /// Writes the end record, flushes, and returns the writer.
    pub async fn finish(mut self) -> io::Result<W> {
        self.inner.write_all(&[TAG_END]).await?;
        self.inner.flush().await?;
        Ok(self.inner)
    }
}

/// Appends `record` as `version` encodes it, data included.
pub fn encode_record(version: Version, record: &Record, out: &mut Vec<u8>) -> io::Result<()> {
    encode_head(version, record, out)?;
    if let Record::Write { data, .. } = record {
        out.extend_from_slice(data);
    }
    Ok(())
}

/// Appends `record` without the data of a write.
fn encode_head(version: Version, record: &Record, out: &mut Vec<u8>) -> io::Result<()> {
    let mut tag = |tag: u8, body_len: u64| {
        out.push(tag);
        if version == Version::V2 {
            out.extend_from_slice(&body_len.to_le_bytes());
        }
    };
    match record {
        Record::FromSnap(name) | Record::ToSnap(name) => {
            let len = u32::try_from(name.len())
                .ok()
                .filter(|len| *len as usize <= MAX_SNAP_NAME)
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "snapshot name longer than 4096 bytes",
                    )
                })?;
            let t = if matches!(record, Record::FromSnap(_)) {
                TAG_FROM_SNAP
            } else {
                TAG_TO_SNAP
            };
            tag(t, 4 + u64::from(len));
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
        }
        Record::Size(size) => {
            tag(TAG_SIZE, 8);
            out.extend_from_slice(&size.to_le_bytes());
        }
        Record::Protected(protected) => {
            tag(TAG_PROTECTED, 1);
            out.push(u8::from(*protected));
        }
        Record::Write { offset, data } => {
            tag(TAG_WRITE, 16 + data.len() as u64);
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&(data.len() as u64).to_le_bytes());
        }
        Record::Zero { offset, length } => {
            tag(TAG_ZERO, 16);
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&length.to_le_bytes());
        }
    }
    Ok(())
}

/// The `w` and `z` records of a v1 diff held in memory (no banner, no end record), as a sync engine
/// chunk carries them; write data is sliced from `bytes`, not copied.
pub struct DataRecords {
    bytes: Bytes,
    pos: usize,
}

impl DataRecords {
    pub fn new(bytes: Bytes) -> Self {
        DataRecords { bytes, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<Bytes, DiffError> {
        let at = self.pos as u64;
        if self.bytes.len() - self.pos < n {
            return Err(DiffError::Truncated { at });
        }
        self.pos += n;
        Ok(self.bytes.slice(self.pos - n..self.pos))
    }

    fn u64(&mut self) -> Result<u64, DiffError> {
        let raw = self.take(8)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(&raw);
        Ok(u64::from_le_bytes(b))
    }
}

impl Iterator for DataRecords {
    type Item = Result<Record, DiffError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.bytes.len() {
            return None;
        }
        let at = self.pos as u64;
        let record = (|| {
            let tag = self.take(1)?[0];
            if tag != TAG_WRITE && tag != TAG_ZERO {
                return Err(DiffError::UnknownTag { tag, at });
            }
            let offset = self.u64()?;
            let length = self.u64()?;
            if offset.checked_add(length).is_none() {
                return Err(DiffError::ExtentOverflow { offset, length, at });
            }
            if tag == TAG_ZERO {
                return Ok(Record::Zero { offset, length });
            }
            let len = usize::try_from(length).map_err(|_| DiffError::Truncated { at })?;
            Ok(Record::Write {
                offset,
                data: self.take(len)?,
            })
        })();
        if record.is_err() {
            // Nothing after a malformed record can be trusted.
            self.pos = self.bytes.len();
        }
        Some(record)
    }
}

mod image;

pub use image::{ImageExport, ImageHeader};

#[cfg(test)]
mod tests;
