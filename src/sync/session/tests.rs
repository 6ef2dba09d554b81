use cephdr_e2e::faults::Tamper;
use proptest::prelude::*;

use super::*;
use crate::sync::diff::{DiffWriter, Version};

/// An image in memory: chunks land on its head at once, as `rbd import-diff` writes them; `finish`
/// takes the snapshot.
#[derive(Default)]
struct MemoryImage {
    head: Vec<u8>,
    snapshots: Vec<(String, Vec<u8>)>,
    to_snap: String,
    commits: u32,
}

#[async_trait]
impl Target for MemoryImage {
    async fn begin(&mut self, checkpoint: &Checkpoint) -> Result<(), TargetError> {
        self.head.resize(checkpoint.transfer.size as usize, 0);
        self.to_snap = checkpoint.transfer.to_snap.clone();
        Ok(())
    }

    async fn apply(&mut self, chunk: &Chunk) -> Result<(), TargetError> {
        for record in chunk.records() {
            apply(
                &mut self.head,
                &record.map_err(|e| TargetError::Io(io::Error::other(e)))?,
            );
        }
        Ok(())
    }

    async fn commit(&mut self) -> Result<u64, TargetError> {
        self.commits += 1;
        Ok(u64::from(self.commits))
    }

    async fn finish(&mut self) -> Result<(), TargetError> {
        self.snapshots.push((self.to_snap.clone(), self.head.clone()));
        Ok(())
    }
}

fn apply(image: &mut [u8], record: &Record) {
    match record {
        Record::Write { offset, data } => {
            image[*offset as usize..*offset as usize + data.len()].copy_from_slice(data)
        }
        Record::Zero { offset, length } => image[*offset as usize..(offset + length) as usize].fill(0),
        _ => {}
    }
}

const SIZE: usize = 1 << 16;

fn diff_bytes(records: &[Record]) -> Vec<u8> {
    futures::executor::block_on(async {
        let mut w = DiffWriter::new(Vec::new(), Version::V1).await.unwrap();
        for r in [
            Record::FromSnap("s1".into()),
            Record::ToSnap("s2".into()),
            Record::Size(SIZE as u64),
        ]
        .iter()
        .chain(records)
        {
            w.record(r).await.unwrap();
        }
        w.finish().await.unwrap()
    })
}

/// Writes and zeroes at ascending offsets inside the image.
fn records() -> impl Strategy<Value = Vec<Record>> {
    proptest::collection::vec((0usize..2000, 1usize..1500, any::<bool>(), any::<u8>()), 1..30).prop_map(
        |items| {
            let mut at = 0;
            let mut out = Vec::new();
            for (gap, len, zero, fill) in items {
                let offset = at + gap;
                if offset + len > SIZE {
                    break;
                }
                out.push(if zero {
                    Record::Zero {
                        offset: offset as u64,
                        length: len as u64,
                    }
                } else {
                    Record::Write {
                        offset: offset as u64,
                        data: (0..len)
                            .map(|i| fill.wrapping_add(i as u8))
                            .collect::<Vec<_>>()
                            .into(),
                    }
                });
                at = offset + len;
            }
            out
        },
    )
}

/// One attempt: sender and receiver over an in-memory connection whose sender side is tampered.
async fn attempt(
    diff: &[u8],
    target: &mut MemoryImage,
    checkpoint: &Path,
    chunk_size: u32,
    commit_every: u64,
    tamper: impl FnOnce(Tamper<tokio::io::DuplexStream>) -> Tamper<tokio::io::DuplexStream>,
) -> (Result<SendReport, SyncError>, Result<Checkpoint, SyncError>) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let options = FrameOptions::default();
    let sender = async {
        let reader = DiffReader::new(diff).await?;
        send("rbd/img", reader, chunk_size, tamper(Tamper::new(a)), &options).await
    };
    let receiver = receive(b, target, checkpoint, commit_every);
    tokio::join!(sender, receiver)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

proptest! {
    #[test]
    fn resuming_from_any_checkpoint_applies_the_same_image(
        base in proptest::collection::vec(any::<u8>(), SIZE..=SIZE),
        records in records(),
        chunk_size in 64u32..3000,
        commit_every in 1u64..5000,
        cut in 0u64..40_000,
    ) {
        let diff = diff_bytes(&records);
        let mut expected = base.clone();
        for r in &records {
            apply(&mut expected, r);
        }
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = dir.path().join("checkpoint.json");
        let mut target = MemoryImage { head: base, ..MemoryImage::default() };
        runtime().block_on(async {
            let (first, _) = attempt(&diff, &mut target, &checkpoint, chunk_size, commit_every, |t| t.cut_at(cut)).await;
            let saved = Checkpoint::load(&checkpoint).await.unwrap();
            let (second, received) = attempt(&diff, &mut target, &checkpoint, chunk_size, commit_every, |t| t).await;
            let second = second.unwrap();
            let received = received.unwrap();
            prop_assert!(received.complete);
            prop_assert_eq!(&second.checkpoint, &received);
            let resumed_at = saved.as_ref().map_or(0, |c| c.next_seq);
            prop_assert_eq!(second.resumed_at, resumed_at);
            if first.is_ok() {
                prop_assert_eq!(second.chunks_sent, 0, "a finished transfer sends nothing again");
            } else {
                prop_assert_eq!(second.chunks_sent, second.chunks - resumed_at);
            }
            Ok(())
        })?;
        prop_assert_eq!(target.snapshots.len(), 1, "the to-snap is taken once");
        prop_assert_eq!(&target.snapshots[0].0, "s2");
        prop_assert_eq!(&target.snapshots[0].1, &expected);
    }
}

#[tokio::test(start_paused = true)]
async fn a_flipped_byte_is_rejected_by_sequence_number_and_the_retry_resends_it() {
    let records: Vec<Record> = (0..16)
        .map(|i| Record::Write {
            offset: i * 4096,
            data: vec![i as u8 + 1; 4096].into(),
        })
        .collect();
    let diff = diff_bytes(&records);
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("checkpoint.json");
    let mut target = MemoryImage::default();
    // Chunks of two writes; commit after each; flip a byte inside the fifth chunk's payload.
    let chunk_size = 2 * 4113;
    // Past the Hello frame (about 140 bytes), well inside the fifth chunk's 8 KiB payload.
    let hello = 300;
    let (sent, received) = attempt(&diff, &mut target, &checkpoint, chunk_size, 1, |t| {
        t.flip_at(hello + 4 * (44 + 2 * 4113) + 44 + 1000)
    })
    .await;
    let received = received.unwrap_err();
    assert!(
        matches!(received, SyncError::Frame(FrameError::Checksum { seq: 4 })),
        "{received:?}"
    );
    match sent.unwrap_err() {
        SyncError::Rejected {
            seq: 4,
            reason,
            permanent: false,
        } => assert!(reason.contains("chunk 4 failed its checksum")),
        other => panic!("sender saw {other:?}"),
    }
    assert_eq!(Checkpoint::load(&checkpoint).await.unwrap().unwrap().next_seq, 4);

    let (sent, received) = attempt(&diff, &mut target, &checkpoint, chunk_size, 1, |t| t).await;
    let sent = sent.unwrap();
    assert_eq!((sent.resumed_at, sent.chunks_sent, sent.chunks), (4, 4, 8));
    assert!(received.unwrap().complete);
    let mut expected = vec![0u8; SIZE];
    for r in &records {
        apply(&mut expected, r);
    }
    assert_eq!(target.snapshots, vec![("s2".to_string(), expected)]);
}
