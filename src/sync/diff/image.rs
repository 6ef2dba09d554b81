//! The stream of `rbd export --export-format 2`: image header, then v2 diffs.

use std::collections::BTreeMap;

use tokio::io::AsyncRead;

use super::{
    check_length, DiffError, DiffReader, Input, Record, DEFAULT_MAX_CHUNK, IMAGE_BANNER_V2,
    IMAGE_DIFFS_BANNER_V2, MAX_META_FIELD,
};

/// The image-wide records of `rbd export --export-format 2`, before its diffs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageHeader {
    pub order: Option<u64>,
    pub format: Option<u64>,
    pub features: Option<u64>,
    pub stripe_unit: Option<u64>,
    pub stripe_count: Option<u64>,
    /// Image metadata (`rbd image-meta`), key to value.
    pub metadata: BTreeMap<String, String>,
}

/// Reads the stream of `rbd export --export-format 2`: the image header, then every diff in order
/// (one per snapshot, oldest first, then the head), each record tagged with its diff's index.
pub struct ImageExport<R> {
    header: ImageHeader,
    diffs: u64,
    index: u64,
    current: Option<DiffReader<R>>,
    idle: Option<Input<R>>,
    max_chunk: usize,
}

impl<R: AsyncRead + Unpin> ImageExport<R> {
    pub async fn open(inner: R) -> Result<Self, DiffError> {
        let mut input = Input { inner, pos: 0 };
        input.banner(&[IMAGE_BANNER_V2]).await?;
        let mut header = ImageHeader::default();
        loop {
            let at = input.pos;
            let tag = input.u8().await?;
            if tag == b'E' {
                break;
            }
            let declared = input.u64().await?;
            let field = match tag {
                b'O' => &mut header.order,
                b'F' => &mut header.format,
                b'T' => &mut header.features,
                b'U' => &mut header.stripe_unit,
                b'C' => &mut header.stripe_count,
                b'M' => {
                    let (key, k) = input.string(MAX_META_FIELD).await?;
                    let (value, v) = input.string(MAX_META_FIELD).await?;
                    check_length(tag, at, Some(declared), k + v)?;
                    header.metadata.insert(key, value);
                    continue;
                }
                _ => {
                    input.skip(declared).await?;
                    continue;
                }
            };
            check_length(tag, at, Some(declared), 8)?;
            *field = Some(input.u64().await?);
        }
        input.banner(&[IMAGE_DIFFS_BANNER_V2]).await?;
        let diffs = input.u64().await?;
        Ok(ImageExport {
            header,
            diffs,
            index: 0,
            current: None,
            idle: Some(input),
            max_chunk: DEFAULT_MAX_CHUNK,
        })
    }

    pub fn with_max_chunk(mut self, max_chunk: usize) -> Self {
        self.max_chunk = max_chunk.max(1);
        self
    }

    pub fn header(&self) -> &ImageHeader {
        &self.header
    }

    /// How many diffs the stream announced: the image's snapshots plus one for the head.
    pub fn diff_count(&self) -> u64 {
        self.diffs
    }

    /// The next record and the index of the diff it belongs to; `None` after the last diff.
    pub async fn next(&mut self) -> Result<Option<(u64, Record)>, DiffError> {
        loop {
            if let Some(reader) = &mut self.current {
                if let Some(record) = reader.next().await? {
                    return Ok(Some((self.index, record)));
                }
                let done = self.current.take().map(|r| r.input);
                self.idle = done;
                self.index += 1;
                continue;
            }
            if self.index >= self.diffs {
                return Ok(None);
            }
            let Some(input) = self.idle.take() else {
                return Ok(None);
            };
            self.current = Some(
                DiffReader::from_input(input)
                    .await?
                    .with_max_chunk(self.max_chunk),
            );
        }
    }
}
