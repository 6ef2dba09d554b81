use futures::executor::block_on;
use proptest::prelude::*;

use super::*;

fn write_all(version: Version, records: &[Record]) -> Vec<u8> {
    block_on(async {
        let mut w = DiffWriter::new(Vec::new(), version).await.unwrap();
        for r in records {
            w.record(r).await.unwrap();
        }
        w.finish().await.unwrap()
    })
}

fn read_all(bytes: &[u8], max_chunk: usize) -> Result<(Version, Vec<Record>), DiffError> {
    block_on(async {
        let mut r = DiffReader::new(bytes).await?.with_max_chunk(max_chunk);
        let mut out = Vec::new();
        while let Some(record) = r.next().await? {
            out.push(record);
        }
        Ok((r.version(), out))
    })
}

/// What a diff does, independent of how its writes are cut into pieces.
#[derive(Debug, PartialEq)]
enum Event {
    Meta(Record),
    EmptyWrite(u64),
    Byte(u64, u8),
    Zero(u64, u64),
}

fn events(records: &[Record]) -> Vec<Event> {
    let mut out = Vec::new();
    for r in records {
        match r {
            Record::Write { offset, data } if data.is_empty() => out.push(Event::EmptyWrite(*offset)),
            Record::Write { offset, data } => out.extend(
                data.iter()
                    .enumerate()
                    .map(|(i, b)| Event::Byte(offset + i as u64, *b)),
            ),
            Record::Zero { offset, length } => out.push(Event::Zero(*offset, *length)),
            meta => out.push(Event::Meta(meta.clone())),
        }
    }
    out
}

fn snap_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{0,40}"
}

fn record() -> impl Strategy<Value = Record> {
    prop_oneof![
        snap_name().prop_map(Record::FromSnap),
        snap_name().prop_map(Record::ToSnap),
        any::<u64>().prop_map(Record::Size),
        any::<bool>().prop_map(Record::Protected),
        (0u64..1 << 40, proptest::collection::vec(any::<u8>(), 0..200)).prop_map(|(offset, data)| {
            Record::Write {
                offset,
                data: data.into(),
            }
        }),
        (0u64..1 << 40, 0u64..1 << 30).prop_map(|(offset, length)| Record::Zero { offset, length }),
    ]
}

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::V1), Just(Version::V2)]
}

proptest! {
    #[test]
    fn written_diffs_read_back_the_same_records(
        version in version(),
        records in proptest::collection::vec(record(), 0..20),
    ) {
        let bytes = write_all(version, &records);
        let (read_version, read) = read_all(&bytes, DEFAULT_MAX_CHUNK).unwrap();
        prop_assert_eq!(read_version, version);
        prop_assert_eq!(read, records);
    }

    #[test]
    fn writes_arrive_in_pieces_no_larger_than_max_chunk(
        version in version(),
        records in proptest::collection::vec(record(), 0..20),
        max_chunk in 1usize..64,
    ) {
        let bytes = write_all(version, &records);
        let (_, read) = read_all(&bytes, max_chunk).unwrap();
        for r in &read {
            if let Record::Write { data, .. } = r {
                prop_assert!(data.len() <= max_chunk);
            }
        }
        prop_assert_eq!(events(&read), events(&records));
    }

    #[test]
    fn a_diff_cut_short_is_an_error_never_a_shorter_diff(
        version in version(),
        records in proptest::collection::vec(record(), 0..10),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = write_all(version, &records);
        let cut = cut.index(bytes.len());
        prop_assert!(read_all(&bytes[..cut], 7).is_err());
    }

    #[test]
    fn arbitrary_bytes_after_a_banner_never_panic(
        banner in prop_oneof![Just(BANNER_V1), Just(BANNER_V2)],
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = banner.to_vec();
        bytes.extend_from_slice(&body);
        let _ = read_all(&bytes, 64);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = read_all(&bytes, 64);
        let _ = read_image_export(&bytes);
    }

    #[test]
    fn arbitrary_bytes_after_an_image_banner_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = IMAGE_BANNER_V2.to_vec();
        bytes.extend_from_slice(&body);
        let _ = read_image_export(&bytes);
    }
}

#[test]
fn reads_the_v1_layout_of_the_ceph_documentation() {
    let mut bytes = b"rbd diff v1\n".to_vec();
    bytes.push(b'f');
    bytes.extend_from_slice(&2u32.to_le_bytes());
    bytes.extend_from_slice(b"s1");
    bytes.push(b't');
    bytes.extend_from_slice(&2u32.to_le_bytes());
    bytes.extend_from_slice(b"s2");
    bytes.push(b's');
    bytes.extend_from_slice(&(1u64 << 30).to_le_bytes());
    bytes.push(b'w');
    bytes.extend_from_slice(&4096u64.to_le_bytes());
    bytes.extend_from_slice(&3u64.to_le_bytes());
    bytes.extend_from_slice(b"abc");
    bytes.push(b'z');
    bytes.extend_from_slice(&8192u64.to_le_bytes());
    bytes.extend_from_slice(&4096u64.to_le_bytes());
    bytes.push(b'e');

    let (version, records) = read_all(&bytes, DEFAULT_MAX_CHUNK).unwrap();
    assert_eq!(version, Version::V1);
    assert_eq!(
        records,
        vec![
            Record::FromSnap("s1".into()),
            Record::ToSnap("s2".into()),
            Record::Size(1 << 30),
            Record::Write {
                offset: 4096,
                data: Bytes::from_static(b"abc")
            },
            Record::Zero {
                offset: 8192,
                length: 4096
            },
        ]
    );
    assert_eq!(
        write_all(Version::V1, &records),
        bytes,
        "the writer emits the same bytes"
    );
}

#[test]
fn v2_puts_the_field_length_after_every_tag_but_the_end() {
    let bytes = write_all(
        Version::V2,
        &[
            Record::Size(7),
            Record::Write {
                offset: 1,
                data: Bytes::from_static(b"xy"),
            },
        ],
    );
    let mut expected = b"rbd diff v2\n".to_vec();
    expected.push(b's');
    expected.extend_from_slice(&8u64.to_le_bytes());
    expected.extend_from_slice(&7u64.to_le_bytes());
    expected.push(b'w');
    expected.extend_from_slice(&18u64.to_le_bytes());
    expected.extend_from_slice(&1u64.to_le_bytes());
    expected.extend_from_slice(&2u64.to_le_bytes());
    expected.extend_from_slice(b"xy");
    expected.push(b'e');
    assert_eq!(bytes, expected);
}

#[test]
fn v2_skips_tags_it_does_not_know_and_v1_refuses_them() {
    let mut v2 = b"rbd diff v2\n".to_vec();
    v2.push(b'X');
    v2.extend_from_slice(&3u64.to_le_bytes());
    v2.extend_from_slice(b"???");
    v2.push(b's');
    v2.extend_from_slice(&8u64.to_le_bytes());
    v2.extend_from_slice(&9u64.to_le_bytes());
    v2.push(b'e');
    assert_eq!(read_all(&v2, 16).unwrap().1, vec![Record::Size(9)]);

    let v1 = b"rbd diff v1\nX".to_vec();
    assert!(matches!(
        read_all(&v1, 16),
        Err(DiffError::UnknownTag { tag: b'X', at: 12 })
    ));
}

#[test]
fn reads_the_protection_record_as_pacific_writes_it() {
    // Bytes of `rbd export --export-format 2` on Pacific 16.2.15: 'p', le64 8, then a single byte.
    let mut v2 = b"rbd diff v2\n".to_vec();
    v2.extend_from_slice(&[b'p', 8, 0, 0, 0, 0, 0, 0, 0, 1]);
    v2.extend_from_slice(&[b's', 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, b'e']);
    assert_eq!(
        read_all(&v2, 16).unwrap().1,
        vec![Record::Protected(true), Record::Size(4 << 20)]
    );
}

#[test]
fn v2_refuses_a_record_whose_declared_length_disagrees_with_its_fields() {
    let mut v2 = b"rbd diff v2\n".to_vec();
    v2.push(b'z');
    v2.extend_from_slice(&17u64.to_le_bytes());
    v2.extend_from_slice(&0u64.to_le_bytes());
    v2.extend_from_slice(&1u64.to_le_bytes());
    v2.push(b'e');
    let err = read_all(&v2, 16).unwrap_err();
    assert!(
        matches!(
            err,
            DiffError::RecordLength {
                tag: 'z',
                at: 12,
                declared: 17,
                expected: 16
            }
        ),
        "{err:?}"
    );
}

#[test]
fn refuses_other_banners_and_overflowing_extents() {
    assert!(matches!(
        read_all(b"rbd diff v3\ne", 16),
        Err(DiffError::Banner { .. })
    ));
    assert!(matches!(read_all(b"rbd", 16), Err(DiffError::Banner { .. })));
    let mut bytes = BANNER_V1.to_vec();
    bytes.push(b'z');
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    bytes.extend_from_slice(&1u64.to_le_bytes());
    assert!(matches!(
        read_all(&bytes, 16),
        Err(DiffError::ExtentOverflow { .. })
    ));
}

#[test]
fn a_huge_declared_write_fails_as_truncated_without_allocating_it() {
    let mut bytes = BANNER_V1.to_vec();
    bytes.push(b'w');
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.extend_from_slice(&(1u64 << 50).to_le_bytes());
    bytes.extend_from_slice(b"only a little");
    assert!(matches!(
        read_all(&bytes, 1 << 20),
        Err(DiffError::Truncated { .. })
    ));
}

type IndexedRecords = Vec<(u64, Record)>;

fn read_image_export(bytes: &[u8]) -> Result<(ImageHeader, u64, IndexedRecords), DiffError> {
    block_on(async {
        let mut export = ImageExport::open(bytes).await?;
        let mut records = Vec::new();
        while let Some(r) = export.next().await? {
            records.push(r);
        }
        Ok((export.header().clone(), export.diff_count(), records))
    })
}

#[test]
fn reads_an_image_export_v2_with_its_diffs_in_order() {
    let mut bytes = IMAGE_BANNER_V2.to_vec();
    for (tag, value) in [(b'O', 22u64), (b'T', 61), (b'U', 4 << 20), (b'C', 1)] {
        bytes.push(tag);
        bytes.extend_from_slice(&8u64.to_le_bytes());
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    bytes.push(b'M');
    bytes.extend_from_slice(&(4u64 + 3 + 4 + 5).to_le_bytes());
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(b"key");
    bytes.extend_from_slice(&5u32.to_le_bytes());
    bytes.extend_from_slice(b"value");
    bytes.push(b'E');
    bytes.extend_from_slice(IMAGE_DIFFS_BANNER_V2);
    bytes.extend_from_slice(&2u64.to_le_bytes());
    let first = [
        Record::ToSnap("s1".into()),
        Record::Protected(false),
        Record::Size(8192),
        Record::Write {
            offset: 0,
            data: Bytes::from_static(b"first"),
        },
    ];
    let head = [
        Record::FromSnap("s1".into()),
        Record::Size(8192),
        Record::Zero {
            offset: 0,
            length: 4096,
        },
    ];
    bytes.extend(write_all(Version::V2, &first));
    bytes.extend(write_all(Version::V2, &head));

    let (header, count, records) = read_image_export(&bytes).unwrap();
    assert_eq!(header.order, Some(22));
    assert_eq!(header.features, Some(61));
    assert_eq!(header.stripe_unit, Some(4 << 20));
    assert_eq!(header.stripe_count, Some(1));
    assert_eq!(header.format, None);
    assert_eq!(header.metadata.get("key").map(String::as_str), Some("value"));
    assert_eq!(count, 2);
    let expected: Vec<(u64, Record)> = first
        .iter()
        .map(|r| (0, r.clone()))
        .chain(head.iter().map(|r| (1, r.clone())))
        .collect();
    assert_eq!(records, expected);
}
