use cephdr_e2e::faults::Tamper;

use super::*;
use crate::sync::{
    frame::FrameOptions,
    session::{receive, send, SyncError},
};

const SIZE: usize = 256 << 10;

fn diff(from: Option<&str>, to: &str, records: &[Record]) -> Vec<u8> {
    futures::executor::block_on(async {
        let mut w = DiffWriter::new(Vec::new(), Version::V1).await.unwrap();
        let head = [
            from.map(|s| Record::FromSnap(s.into())),
            Some(Record::ToSnap(to.into())),
            Some(Record::Size(SIZE as u64)),
        ];
        for r in head.iter().flatten().chain(records) {
            w.record(r).await.unwrap();
        }
        w.finish().await.unwrap()
    })
}

/// Writes of a byte pattern every `stride` bytes, and one zeroed range.
fn changes(seed: u8, stride: usize) -> Vec<Record> {
    let mut out: Vec<Record> = (0..SIZE / stride)
        .map(|i| Record::Write {
            offset: (i * stride) as u64,
            data: vec![seed.wrapping_add(i as u8) | 1; 1000].into(),
        })
        .collect();
    out.push(Record::Zero {
        offset: (SIZE - 8192) as u64,
        length: 8192,
    });
    out
}

fn apply(image: &mut [u8], records: &[Record]) {
    for record in records {
        match record {
            Record::Write { offset, data } => {
                image[*offset as usize..*offset as usize + data.len()].copy_from_slice(data)
            }
            Record::Zero { offset, length } => image[*offset as usize..(offset + length) as usize].fill(0),
            _ => {}
        }
    }
}

async fn backup(store: &DirectoryStore, diff: &[u8], cut: Option<u64>) -> Result<Checkpoint, SyncError> {
    let (a, b) = tokio::io::duplex(1 << 16);
    let mut tamper = Tamper::new(a);
    tamper.cut_at = cut;
    let sender = async {
        send(
            "rbd/img",
            DiffReader::new(diff).await?,
            4096,
            tamper,
            &FrameOptions::default(),
        )
        .await
    };
    let mut target = store.target();
    let path = store.checkpoint_path();
    let (_, received) = tokio::join!(sender, receive(b, &mut target, &path, 8192));
    received
}

async fn restored(store: &DirectoryStore, snap: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("restored.img");
    store.restore(snap, &out).await.unwrap();
    tokio::fs::read(&out).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn every_point_restores_to_its_snapshot_and_retention_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirectoryStore::open(dir.path()).await.unwrap();
    let mut image = vec![0u8; SIZE];
    let mut expected = Vec::new();
    for (i, (from, to)) in [(None, "s1"), (Some("s1"), "s2"), (Some("s2"), "s3")]
        .into_iter()
        .enumerate()
    {
        let records = changes(i as u8 * 50, 4096 * (i + 1));
        apply(&mut image, &records);
        expected.push((to, image.clone()));
        assert!(
            backup(&store, &diff(from, to, &records), None)
                .await
                .unwrap()
                .complete
        );
    }
    let points = store.points().await.unwrap();
    assert_eq!(
        points
            .iter()
            .map(|p| (p.snap.as_str(), p.from_snap.as_deref()))
            .collect::<Vec<_>>(),
        [("s1", None), ("s2", Some("s1")), ("s3", Some("s2"))]
    );
    for (snap, image) in &expected {
        assert_eq!(&restored(&store, snap).await, image, "{snap}");
    }

    store.retain(2).await.unwrap();
    let points = store.points().await.unwrap();
    assert_eq!(points.len(), 2);
    assert_eq!(
        (points[0].snap.as_str(), points[0].from_snap.as_deref()),
        ("s2", None)
    );
    for (snap, image) in &expected[1..] {
        assert_eq!(&restored(&store, snap).await, image, "{snap} after retention");
    }
    assert!(matches!(
        store.restore("s1", &dir.path().join("x")).await,
        Err(TargetError::NoSuchPoint(_))
    ));
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".diff"))
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["000002-s2.full.diff", "000003-s3.diff"],
        "dropped points leave no files"
    );

    store.retain(1).await.unwrap();
    assert_eq!(restored(&store, "s3").await, expected[2].1);
}

#[tokio::test(start_paused = true)]
async fn a_backup_cut_anywhere_resumes_its_partial_file() {
    let first = changes(7, 4096);
    let second = changes(9, 3000);
    let mut expected = vec![0u8; SIZE];
    apply(&mut expected, &first);
    apply(&mut expected, &second);
    for cut in [100, 5_000, 20_000, 40_000, 60_000] {
        let dir = tempfile::tempdir().unwrap();
        let store = DirectoryStore::open(dir.path()).await.unwrap();
        backup(&store, &diff(None, "s1", &first), None).await.unwrap();
        let incremental = diff(Some("s1"), "s2", &second);
        assert!(backup(&store, &incremental, Some(cut)).await.is_err());
        assert!(backup(&store, &incremental, None).await.unwrap().complete);
        assert_eq!(restored(&store, "s2").await, expected, "cut at {cut}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_incremental_that_does_not_continue_the_chain_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirectoryStore::open(dir.path()).await.unwrap();
    backup(&store, &diff(None, "s1", &changes(1, 8192)), None)
        .await
        .unwrap();
    let err = backup(&store, &diff(Some("s0"), "s2", &changes(2, 8192)), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SyncError::Target(TargetError::ChainBroken { .. })),
        "{err:?}"
    );
    assert_eq!(store.points().await.unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_damaged_backup_file_is_refused_before_it_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirectoryStore::open(dir.path()).await.unwrap();
    backup(&store, &diff(None, "s1", &changes(3, 8192)), None)
        .await
        .unwrap();
    let file = dir.path().join(&store.points().await.unwrap()[0].file);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[500] ^= 0x10;
    std::fs::write(&file, bytes).unwrap();
    let err = store
        .restore("s1", &dir.path().join("out.img"))
        .await
        .unwrap_err();
    assert!(matches!(err, TargetError::HashMismatch { .. }), "{err:?}");
}

#[tokio::test]
async fn an_offsite_copy_that_cannot_reach_its_bucket_reports_each_image_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirectoryStore::open(dir.path().join("rbd/img")).await.unwrap();
    let records = changes(7, 4096);
    assert!(
        backup(&store, &diff(None, "s1", &records), None)
            .await
            .unwrap()
            .complete
    );
    // A port nothing listens on: every request is refused at connect.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let location = offsite::S3Location {
        endpoint: format!("http://{closed}"),
        region: "default".into(),
        bucket: "vault".into(),
        prefix: "copies".into(),
    };
    let key = crate::agent::Sensitive("key".to_string());
    let offsite = offsite::Offsite::new(location, &key, &key).unwrap();
    let report = offsite.publish_all(dir.path()).await;
    assert_eq!(report.target, "s3://vault/copies");
    assert_eq!(report.behind, ["rbd/img"]);
    let error = report.error.clone().unwrap();
    assert!(
        error.starts_with("rbd/img: offsite copy: upload /copies/rbd/img/000001-s1.diff"),
        "{error}"
    );
    assert_eq!(offsite::last_report(dir.path()).await.unwrap(), Some(report));
    assert!(
        !dir.path().join("rbd/img/published.json").exists(),
        "nothing is recorded as published"
    );
}
