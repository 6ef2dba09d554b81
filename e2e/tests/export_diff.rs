//! cephdr's reader and writer of the `rbd export-diff` stream against real Ceph output: the extents of a
//! real `rbd export-diff` are exactly the blocks written between two snapshots, what cephdr writes back
//! is accepted by `rbd import-diff` and rebuilds the same image, and the v2 diffs inside
//! `rbd export --export-format 2` rebuild the image too.

use std::{collections::BTreeMap, process::Stdio};

use anyhow::{bail, ensure, Context, Result};
use cephdr::sync::diff::{DiffReader, DiffWriter, ImageExport, Record, Version};
use cephdr_e2e::{shared_ceph_sites, unique_name, CephSite};
use rand::{seq::index::sample, RngCore};
use tokio::io::AsyncWriteExt;

const MIB: usize = 1 << 20;
const BLOCK: usize = 4096;

/// `rbd args...` on `site` with its stdout as an async reader.
fn rbd_stdout(site: &CephSite, args: &[&str]) -> Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::from(site.command("rbd"));
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    Ok(cmd.spawn()?)
}

async fn wait_ok(child: tokio::process::Child, what: &str) -> Result<()> {
    let out = child.wait_with_output().await?;
    ensure!(
        out.status.success(),
        "{what}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Pipes a diff written by cephdr into `rbd import-diff - <spec>`.
async fn import_diff(site: &CephSite, spec: &str, records: &[Record]) -> Result<()> {
    let mut cmd = tokio::process::Command::from(site.command("rbd"));
    cmd.args(["import-diff", "--no-progress", "-", spec])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let stdin = child.stdin.take().context("stdin")?;
    let mut writer = DiffWriter::new(tokio::io::BufWriter::new(stdin), Version::V1).await?;
    for record in records {
        writer.record(record).await?;
    }
    writer.finish().await?.into_inner().shutdown().await?;
    wait_ok(child, "rbd import-diff").await
}

/// Applies records to an in-memory image.
fn apply(image: &mut Vec<u8>, record: &Record) {
    match record {
        Record::Size(size) => image.resize(*size as usize, 0),
        Record::Write { offset, data } => {
            image[*offset as usize..*offset as usize + data.len()].copy_from_slice(data)
        }
        Record::Zero { offset, length } => image[*offset as usize..(offset + length) as usize].fill(0),
        _ => {}
    }
}

/// Merges `[offset, offset + len)` ranges into disjoint, sorted ones.
fn merged(ranges: impl IntoIterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    let mut sorted: Vec<_> = ranges.into_iter().collect();
    sorted.sort();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (start, len) in sorted {
        match out.last_mut() {
            Some((s, l)) if *s + *l >= start => *l = (*l).max(start + len - *s),
            _ => out.push((start, len)),
        }
    }
    out
}

#[tokio::test]
async fn real_export_diff_parses_to_the_written_blocks_and_cephdrs_rewrite_rebuilds_the_image() -> Result<()>
{
    let sites = shared_ceph_sites().await?;
    let (a, b) = (&sites.a, &sites.b);
    let pool = unique_name("diff");
    for site in [a, b] {
        site.ceph(&["osd", "pool", "create", &pool, "8"])?;
        site.rbd(&["pool", "init", &pool])?;
    }
    let image = format!("{pool}/img");
    a.import_random_image(&pool, "img", 8)?;
    a.rbd(&["snap", "create", &format!("{image}@s1")])?;

    // 48 random 4 KiB blocks of random bytes, written to the head through `rbd import-diff` (a diff
    // without snapshots writes the head and creates no snapshot).
    let mut rng = rand::rng();
    let mut blocks: Vec<usize> = sample(&mut rng, 8 * MIB / BLOCK, 48).into_vec();
    blocks.sort();
    let mut written = BTreeMap::new();
    let writes: Vec<Record> = blocks
        .iter()
        .map(|&block| {
            let mut data = vec![0u8; BLOCK];
            rng.fill_bytes(&mut data);
            written.insert((block * BLOCK) as u64, data.clone());
            Record::Write {
                offset: (block * BLOCK) as u64,
                data: data.into(),
            }
        })
        .collect();
    import_diff(a, &image, &writes).await?;
    a.rbd(&["snap", "create", &format!("{image}@s2")])?;

    let mut child = rbd_stdout(
        a,
        &[
            "export-diff",
            "--no-progress",
            "--from-snap",
            "s1",
            &format!("{image}@s2"),
            "-",
        ],
    )?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut reader = DiffReader::new(stdout).await?.with_max_chunk(3000);
    assert_eq!(reader.version(), Version::V1, "rbd export-diff writes v1");
    let mut records = Vec::new();
    while let Some(record) = reader.next().await? {
        records.push(record);
    }
    wait_ok(child, "rbd export-diff").await?;

    assert_eq!(
        records[..3],
        [
            Record::FromSnap("s1".into()),
            Record::ToSnap("s2".into()),
            Record::Size(8 * MIB as u64)
        ]
    );
    let mut extents = Vec::new();
    for record in &records[3..] {
        let Record::Write { offset, data } = record else {
            bail!("only writes expected after the metadata, got {record:?}");
        };
        assert!(data.len() <= 3000, "pieces are capped by max_chunk");
        for (i, byte) in data.iter().enumerate() {
            let at = offset + i as u64;
            let block = written
                .get(&(at - at % BLOCK as u64))
                .with_context(|| format!("byte {at} was not written"))?;
            assert_eq!(*byte, block[(at % BLOCK as u64) as usize], "byte {at}");
        }
        extents.push((*offset, data.len() as u64));
    }
    assert_eq!(
        merged(extents),
        merged(written.keys().map(|&o| (o, BLOCK as u64))),
        "the diff covers exactly the written blocks"
    );

    // A copy of s1 on site B, then cephdr's rewrite of the parsed records through `rbd import-diff`:
    // B gets s2 with the same bytes.
    let dir = tempfile::tempdir()?;
    let base = dir.path().join("s1.img");
    let base_path = base.to_str().context("utf-8 path")?;
    a.rbd(&["export", "--no-progress", &format!("{image}@s1"), base_path])?;
    b.rbd(&["import", "--no-progress", base_path, &image])?;
    b.rbd(&["snap", "create", &format!("{image}@s1")])?;
    import_diff(b, &image, &records).await?;
    assert_eq!(
        b.image_checksum(&format!("{image}@s2"))?,
        a.image_checksum(&format!("{image}@s2"))?
    );
    Ok(())
}

#[tokio::test]
async fn export_format_2_holds_one_v2_diff_per_snapshot_and_the_head() -> Result<()> {
    let sites = shared_ceph_sites().await?;
    let a = &sites.a;
    let pool = unique_name("diffv2");
    a.ceph(&["osd", "pool", "create", &pool, "8"])?;
    a.rbd(&["pool", "init", &pool])?;
    let image = format!("{pool}/img");
    a.import_random_image(&pool, "img", 4)?;
    a.rbd(&["snap", "create", &format!("{image}@s1")])?;
    let mut data = vec![0u8; 2 * BLOCK];
    rand::rng().fill_bytes(&mut data);
    import_diff(
        a,
        &image,
        &[Record::Write {
            offset: 3 * MIB as u64,
            data: data.into(),
        }],
    )
    .await?;
    a.rbd(&["snap", "create", &format!("{image}@s2")])?;
    a.rbd(&["image-meta", "set", &image, "owner", "cephdr"])?;

    let mut child = rbd_stdout(
        a,
        &["export", "--no-progress", "--export-format", "2", &image, "-"],
    )?;
    let mut export = ImageExport::open(child.stdout.take().context("stdout")?).await?;
    assert_eq!(export.header().order, Some(22));
    assert_eq!(
        export.header().metadata.get("owner").map(String::as_str),
        Some("cephdr")
    );
    assert_eq!(export.diff_count(), 3, "s1, s2 and the head");
    let mut rebuilt = Vec::new();
    let mut snaps: Vec<(u64, Record)> = Vec::new();
    while let Some((index, record)) = export.next().await? {
        apply(&mut rebuilt, &record);
        if matches!(
            record,
            Record::FromSnap(_) | Record::ToSnap(_) | Record::Protected(_)
        ) {
            snaps.push((index, record));
        }
    }
    wait_ok(child, "rbd export --export-format 2").await?;
    assert_eq!(
        snaps,
        [
            (0, Record::ToSnap("s1".into())),
            (0, Record::Protected(false)),
            (1, Record::FromSnap("s1".into())),
            (1, Record::ToSnap("s2".into())),
            (1, Record::Protected(false)),
            (2, Record::FromSnap("s2".into())),
        ]
    );
    assert_eq!(
        blake3::hash(&rebuilt).to_hex().to_string(),
        a.image_checksum(&image)?
    );
    Ok(())
}
