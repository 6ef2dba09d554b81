//! The delta-sync benchmark of issue 6 on the two real sites: an image with a share of random 4 KiB blocks
//! rewritten between two snapshots, shipped from site A to site B by cephdr's engine, by
//! `rbd export-diff | rbd import-diff`, and by `rsync --inplace` of the raw images. Prints a markdown
//! table: wall time, bytes on the wire, CPU seconds (this process and the `rbd`/`rsync` it ran; the Ceph
//! daemons' CPU is not counted for any of them). Not a test: `docs/benchmarks.md` has the command.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{ensure, Context, Result};
use cephdr::sync::{
    diff::{DiffWriter, Record, Version},
    frame::{ChecksumKind, FrameOptions, DEFAULT_CHUNK_SIZE},
    rbd::{RbdCli, RbdImage},
    session::{receive, send},
};
use cephdr_e2e::{process::run, CephSite, CephSites};
use clap::Parser;
use rand::{seq::index::sample, RngCore};
use tokio::io::AsyncWriteExt;

const BLOCK: usize = 4096;

#[derive(Parser)]
struct Args {
    /// Image size in MiB.
    #[arg(long, default_value_t = 1024)]
    mib: usize,
    /// Share of the image's 4 KiB blocks rewritten between the snapshots, in percent.
    #[arg(long, default_value_t = 5.0)]
    percent: f64,
    /// I/Os the `rbd` processes of cephdr keep in flight (`rbd_concurrent_management_ops`; Ceph's
    /// default is 10); one run per value.
    #[arg(long, value_delimiter = ',', default_value = "10,32")]
    concurrency: Vec<u32>,
}

/// CPU seconds of this process and of its waited-for children.
fn cpu() -> (f64, f64) {
    let secs = |who| {
        // SAFETY: getrusage only writes the struct it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut usage) };
        let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        t(usage.ru_utime) + t(usage.ru_stime)
    };
    (secs(libc::RUSAGE_SELF), secs(libc::RUSAGE_CHILDREN))
}

struct Row {
    what: String,
    secs: f64,
    wire: u64,
    cpu: f64,
}

/// Runs `f`, measuring wall time and CPU (self and children).
async fn measured<F: std::future::Future<Output = Result<u64>>>(what: &str, f: F) -> Result<Row> {
    let (self0, children0) = cpu();
    let start = Instant::now();
    let wire = f.await?;
    let secs = start.elapsed().as_secs_f64();
    let (self1, children1) = cpu();
    Ok(Row {
        what: what.to_string(),
        secs,
        wire,
        cpu: (self1 - self0) + (children1 - children0),
    })
}

/// `rbd export-diff [--from-snap FROM] A@TO - | rbd import-diff - B`, two processes and a pipe.
fn pipe(a: &CephSite, b: &CephSite, image: &str, target: &str, from: Option<&str>, to: &str) -> Result<()> {
    let mut export = a.command("rbd");
    export.args(["export-diff", "--no-progress"]);
    if let Some(from) = from {
        export.args(["--from-snap", from]);
    }
    let mut export = export
        .args([&format!("{image}@{to}"), "-"])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = export.stdout.take().context("stdout")?;
    let status = b
        .command("rbd")
        .args(["import-diff", "--no-progress", "-", target])
        .stdin(stdout)
        .status()?;
    ensure!(
        export.wait()?.success() && status.success(),
        "the rbd pipe failed"
    );
    Ok(())
}

async fn cephdr_sync(
    (a, image): (&CephSite, &str),
    (b, copy): (&CephSite, &str),
    from: Option<&str>,
    to: &str,
    concurrency: u32,
) -> Result<u64> {
    let source = RbdCli {
        conf: Some(a.conf.clone()),
        concurrency: Some(concurrency),
        ..RbdCli::default()
    };
    let sink = RbdCli {
        conf: Some(b.conf.clone()),
        concurrency: Some(concurrency),
        ..RbdCli::default()
    };
    let (diff, export) = source.export_diff(image, from, to).await?;
    let (near, far) = tokio::io::duplex(4 << 20);
    let dir = tempfile::tempdir()?;
    let checkpoint = dir.path().join("checkpoint.json");
    let mut target = RbdImage::new(sink, copy);
    let options = FrameOptions {
        checksum: ChecksumKind::Crc32c,
        zstd_level: None,
        bytes_per_second: None,
    };
    let (sent, received) = tokio::join!(
        send(image, diff, DEFAULT_CHUNK_SIZE, near, &options),
        receive(far, &mut target, &checkpoint, u64::MAX),
    );
    let sent = sent?;
    received?;
    export.wait().await?;
    Ok(sent.wire.wire_bytes)
}

/// Rewrites `blocks` random 4 KiB blocks of the image's head through `rbd import-diff`.
async fn rewrite_blocks(site: &CephSite, image: &str, mib: usize, blocks: usize) -> Result<u64> {
    let mut rng = rand::rng();
    let mut child = tokio::process::Command::from(site.command("rbd"))
        .args(["import-diff", "--no-progress", "-", image])
        .stdin(Stdio::piped())
        .spawn()?;
    let stdin = child.stdin.take().context("stdin")?;
    let mut writer = DiffWriter::new(tokio::io::BufWriter::new(stdin), Version::V1).await?;
    let mut picked = sample(&mut rng, (mib << 20) / BLOCK, blocks).into_vec();
    picked.sort();
    let mut data = vec![0u8; BLOCK];
    for block in &picked {
        rng.fill_bytes(&mut data);
        let record = Record::Write {
            offset: (block * BLOCK) as u64,
            data: data.clone().into(),
        };
        writer.record(&record).await?;
    }
    writer.finish().await?.into_inner().shutdown().await?;
    ensure!(
        child.wait().await?.success(),
        "rbd import-diff of the writes failed"
    );
    Ok((picked.len() * BLOCK) as u64)
}

/// Bytes `rsync --inplace --no-whole-file` reports sent and received for `src` onto `dst`.
fn rsync(src: &Path, dst: &Path) -> Result<u64> {
    let out = run(Command::new("rsync")
        .args(["--inplace", "--no-whole-file", "--stats"])
        .arg(src)
        .arg(dst))?;
    let field = |name: &str| -> Result<u64> {
        let line = out
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("rsync --stats printed no {name}"))?;
        Ok(line[name.len()..]
            .split_whitespace()
            .next()
            .unwrap_or("0")
            .replace(',', "")
            .parse()?)
    };
    Ok(field("Total bytes sent:")? + field("Total bytes received:")?)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let sites = tokio::task::spawn_blocking(CephSites::start).await??;
    let (a, b) = (&sites.a, &sites.b);
    let pool = "bench";
    for site in [a, b] {
        site.ceph(&["osd", "pool", "create", pool, "32"])?;
        site.rbd(&["pool", "init", pool])?;
    }
    let image = format!("{pool}/vm");
    let piped = format!("{pool}/vm-pipe");
    eprintln!("writing {} MiB of random bytes into {image} on site A", args.mib);
    a.import_random_image(pool, "vm", args.mib)?;
    a.rbd(&["snap", "create", &format!("{image}@s1")])?;
    eprintln!("seeding site B: one copy per concurrency by cephdr, {piped} by the rbd pipe");
    let copies: Vec<(u32, String)> = args
        .concurrency
        .iter()
        .map(|n| (*n, format!("{image}-c{n}")))
        .collect();
    for (n, copy) in &copies {
        cephdr_sync((a, &image), (b, copy), None, "s1", *n).await?;
    }
    b.rbd(&["create", "--size", &format!("{}M", args.mib), &piped])?;
    pipe(a, b, &image, &piped, None, "s1")?;

    let blocks = ((args.mib << 20) / BLOCK) as f64 * args.percent / 100.0;
    let changed = rewrite_blocks(a, &image, args.mib, blocks.round() as usize).await?;
    a.rbd(&["snap", "create", &format!("{image}@s2")])?;
    eprintln!(
        "{changed} bytes changed in {} blocks; measuring",
        changed / BLOCK as u64
    );

    let dir = cephdr_e2e::process::scratch_dir(Path::new("/tmp"), "bench-sync")?;
    let mut rows = Vec::new();
    for (n, copy) in &copies {
        let what = format!("cephdr sync (crc32c, {n} I/Os in flight per rbd)");
        rows.push(measured(&what, cephdr_sync((a, &image), (b, copy), Some("s1"), "s2", *n)).await?);
    }
    let diff_file = dir.join("s1-s2.diff");
    rows.push(
        measured(
            "rbd export-diff to a local file (the read side alone; bytes written)",
            async {
                a.rbd(&[
                    "export-diff",
                    "--no-progress",
                    "--from-snap",
                    "s1",
                    &format!("{image}@s2"),
                    diff_file.to_str().context("utf-8")?,
                ])?;
                Ok(std::fs::metadata(&diff_file)?.len())
            },
        )
        .await?,
    );
    let diff_bytes = std::fs::metadata(&diff_file)?.len();
    rows.push(
        measured("rbd export-diff \\| rbd import-diff", async {
            pipe(a, b, &image, &piped, Some("s1"), "s2")?;
            Ok(diff_bytes)
        })
        .await?,
    );
    let rsync_found = Command::new("rsync").arg("--version").output().is_ok();
    if rsync_found {
        let (old, new) = (dir.join("old.raw"), dir.join("new.raw"));
        a.rbd(&[
            "export",
            "--no-progress",
            &format!("{image}@s1"),
            old.to_str().context("utf-8")?,
        ])?;
        a.rbd(&[
            "export",
            "--no-progress",
            &format!("{image}@s2"),
            new.to_str().context("utf-8")?,
        ])?;
        rows.push(
            measured(
                "rsync --inplace --no-whole-file (raw images, export not counted)",
                async { rsync(&new, &old) },
            )
            .await?,
        );
        ensure!(
            std::fs::read(&old)? == std::fs::read(&new)?,
            "rsync left other bytes"
        );
    }

    let want = a.image_checksum(&format!("{image}@s2"))?;
    for (_, copy) in &copies {
        ensure!(
            b.image_checksum(&format!("{copy}@s2"))? == want,
            "cephdr's copy {copy} differs"
        );
    }
    ensure!(
        b.image_checksum(&format!("{piped}@s2"))? == want,
        "the pipe's copy differs"
    );
    std::fs::remove_dir_all(&dir)?;

    println!(
        "{} MiB image, {:.1}% of its 4 KiB blocks rewritten: {changed} bytes in {} extents; both copies on B checked by checksum",
        args.mib,
        args.percent,
        changed / BLOCK as u64
    );
    println!();
    println!("| method | wall time | bytes on the wire | × changed bytes | CPU seconds |");
    println!("|---|---|---|---|---|");
    for row in &rows {
        println!(
            "| {} | {:.2} s | {} | {:.3} | {:.2} |",
            row.what,
            row.secs,
            row.wire,
            row.wire as f64 / changed as f64,
            row.cpu
        );
    }
    if !rsync_found {
        println!("| rsync | not installed | | | |");
    }
    Ok(())
}
