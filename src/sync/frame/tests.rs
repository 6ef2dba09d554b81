use futures::executor::block_on;
use proptest::prelude::*;

use super::*;

/// Data records at ascending, non-overlapping offsets.
fn records() -> impl Strategy<Value = Vec<Record>> {
    proptest::collection::vec(
        (
            0u64..5000,
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 1..300).prop_map(Some),
                proptest::collection::vec(Just(7u8), 1..3000).prop_map(Some),
                Just(None)
            ],
            1u64..1 << 20,
        ),
        1..40,
    )
    .prop_map(|items| {
        let mut at = 0;
        items
            .into_iter()
            .map(|(gap, data, zero_len)| {
                let offset = at + gap;
                let record = match data {
                    Some(data) => Record::Write {
                        offset,
                        data: data.into(),
                    },
                    None => Record::Zero {
                        offset,
                        length: zero_len,
                    },
                };
                at = offset
                    + match &record {
                        Record::Write { data, .. } => data.len() as u64,
                        _ => zero_len,
                    };
                record
            })
            .collect()
    })
}

fn options() -> impl Strategy<Value = FrameOptions> {
    (
        prop_oneof![Just(ChecksumKind::Crc32c), Just(ChecksumKind::Blake3)],
        prop_oneof![Just(None), Just(Some(1)), Just(Some(3))],
    )
        .prop_map(|(checksum, zstd_level)| FrameOptions {
            checksum,
            zstd_level,
            bytes_per_second: None,
        })
}

fn chunks(records: &[Record], chunk_size: u32) -> Vec<Chunk> {
    let mut builder = ChunkBuilder::new(chunk_size);
    let mut out: Vec<Chunk> = records.iter().filter_map(|r| builder.push(r)).collect();
    out.extend(builder.take());
    out
}

fn encode(chunks: &[Chunk], options: &FrameOptions) -> (Vec<u8>, WireStats) {
    block_on(async {
        let mut w = FrameWriter::new(Vec::new(), options).unwrap();
        for chunk in chunks {
            w.chunk(chunk).await.unwrap();
        }
        let stats = w.stats();
        (std::mem::take(w.get_mut()), stats)
    })
}

fn decode(bytes: &[u8]) -> Result<Vec<Frame>, FrameError> {
    block_on(async {
        let mut r = FrameReader::new(bytes).unwrap();
        let mut out = Vec::new();
        while let Some(frame) = r.next().await? {
            out.push(frame);
        }
        Ok(out)
    })
}

proptest! {
    #[test]
    fn chunks_round_trip_with_either_checksum_and_with_or_without_zstd(
        records in records(),
        chunk_size in 17u32..8192,
        options in options(),
    ) {
        let chunks = chunks(&records, chunk_size);
        for (i, chunk) in chunks.iter().enumerate() {
            prop_assert_eq!(chunk.seq, i as u64);
            prop_assert!(chunk.records.len() <= chunk_size as usize || chunk.extents == 1);
        }
        let (bytes, stats) = encode(&chunks, &options);
        prop_assert_eq!(stats.wire_bytes, bytes.len() as u64);
        let frames = decode(&bytes).unwrap();
        let expected: Vec<Frame> = chunks.iter().cloned().map(Frame::Chunk).collect();
        prop_assert_eq!(&frames, &expected);
        let decoded: Vec<Record> = chunks.iter().flat_map(|c| c.records()).map(Result::unwrap).collect();
        prop_assert_eq!(decoded, records);
    }

    #[test]
    fn any_flipped_bit_is_caught_and_in_the_payload_names_the_chunk(
        records in records(),
        options in options(),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let chunk = chunks(&records, 1 << 20).remove(0);
        let (mut bytes, _) = encode(std::slice::from_ref(&chunk), &options);
        let at = at.index(bytes.len());
        bytes[at] ^= 1 << bit;
        let result = decode(&bytes);
        prop_assert!(result.is_err(), "flip at {} went through", at);
        let payload_start = HEADER_LEN + options.checksum.len();
        if at >= payload_start {
            let named = matches!(result, Err(FrameError::Checksum { seq }) if seq == chunk.seq);
            prop_assert!(named, "flip at {} gave {:?}", at, result);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_frame_reader(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode(&bytes);
        let mut framed = MAGIC.to_vec();
        framed.extend_from_slice(&bytes);
        let _ = decode(&framed);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_chunk_record_parser(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = DataRecords::new(bytes.into()).count();
    }
}

#[test]
fn a_corrupted_chunk_is_a_typed_error_naming_its_sequence_number() {
    let records: Vec<Record> = (0..8)
        .map(|i| Record::Write {
            offset: i * 4096,
            data: vec![i as u8; 4096].into(),
        })
        .collect();
    let chunks = chunks(&records, 3 * 4113);
    assert_eq!(chunks.len(), 3, "three writes of 4096 + 17 bytes fit a chunk");
    let (mut bytes, _) = encode(&chunks, &FrameOptions::default());
    let second_payload = 2 * (HEADER_LEN + 4) + 3 * 4113 + 100;
    bytes[second_payload] ^= 0x40;
    let err = decode(&bytes).unwrap_err();
    assert!(matches!(err, FrameError::Checksum { seq: 1 }), "{err:?}");
    assert_eq!(err.seq(), Some(1));
    assert_eq!(err.to_string(), "chunk 1 failed its checksum");
}

#[test]
fn zstd_shrinks_what_compresses_and_sends_the_rest_raw() {
    let zeros_and_text = vec![Record::Write {
        offset: 0,
        data: b"cephdr ".repeat(4096).into(),
    }];
    let mut noise = vec![0u8; 64 << 10];
    rand::fill(&mut noise[..]);
    let random = vec![Record::Write {
        offset: 0,
        data: noise.into(),
    }];
    let zstd = FrameOptions {
        zstd_level: Some(3),
        ..FrameOptions::default()
    };
    let (_, text) = encode(&chunks(&zeros_and_text, 1 << 20), &zstd);
    assert!(text.wire_bytes * 20 < text.raw_bytes, "{text:?}");
    let (bytes, noise) = encode(&chunks(&random, 1 << 20), &zstd);
    assert_eq!(noise.wire_bytes, noise.raw_bytes + (HEADER_LEN + 4) as u64);
    assert_eq!(bytes[3] & FLAG_ZSTD, 0, "incompressible payloads go raw");
}

#[test]
fn control_messages_round_trip() {
    let transfer = Transfer {
        image: "rbd/db".into(),
        from_snap: Some("s1".into()),
        to_snap: "s2".into(),
        size: 1 << 30,
        chunk_size: DEFAULT_CHUNK_SIZE,
    };
    let messages = [
        Control::Hello(transfer.clone()),
        Control::Resume(Checkpoint::start(transfer.clone())),
        Control::End { chunks: 12 },
        Control::Reject {
            seq: 3,
            reason: "chunk 3 failed its checksum".into(),
            permanent: false,
        },
    ];
    for checksum in [ChecksumKind::Crc32c, ChecksumKind::Blake3] {
        let bytes = block_on(async {
            let options = FrameOptions {
                checksum,
                ..FrameOptions::default()
            };
            let mut w = FrameWriter::new(Vec::new(), &options).unwrap();
            for m in &messages {
                w.control(m).await.unwrap();
            }
            std::mem::take(w.get_mut())
        });
        let frames = decode(&bytes).unwrap();
        let expected: Vec<Frame> = messages.iter().cloned().map(Frame::Control).collect();
        assert_eq!(frames, expected);
    }
}

#[tokio::test(start_paused = true)]
async fn the_rate_limit_holds_the_average_byte_rate() {
    let chunk = chunks(
        &[Record::Write {
            offset: 0,
            data: vec![1u8; 100_000].into(),
        }],
        1 << 20,
    )
    .remove(0);
    let options = FrameOptions {
        bytes_per_second: Some(200_000),
        ..FrameOptions::default()
    };
    let mut w = FrameWriter::new(tokio::io::sink(), &options).unwrap();
    let start = tokio::time::Instant::now();
    for _ in 0..10 {
        w.chunk(&chunk).await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let sent = w.stats().wire_bytes as f64;
    // The bucket starts full (a tenth of a second's worth), then the average is the rate.
    let expected = (sent - 65536.0_f64.max(20_000.0)) / 200_000.0;
    assert!(
        (elapsed - expected).abs() < 0.05,
        "{elapsed} s for {sent} bytes, expected {expected}"
    );
}
