//! Core throughput of the delta-sync engine on an in-memory stream, next to the checksum and compression
//! crates alone. Not a timed test: `cargo bench --bench sync_core` prints a table (docs/benchmarks.md).
//!
//! The engine run is everything but the network and Ceph: parse an `rbd export-diff` v1 stream, cut it
//! into chunks, frame them (checksum, optional zstd), send them through an in-memory pipe, verify and
//! decode them, and hand the records to a target that writes them on as the stream for
//! `rbd import-diff`. Sender and receiver share one thread, so the figure is per core for both ends.

use std::{path::Path, time::Instant};

use async_trait::async_trait;
use cephdr::sync::{
    checkpoint::Checkpoint,
    diff::{DiffReader, DiffWriter, Record, Version},
    frame::{ChecksumKind, Chunk, FrameOptions, DEFAULT_CHUNK_SIZE},
    session::{receive, send, Target, TargetError},
};
use rand::{seq::index::sample, RngCore, SeedableRng};
use tokio::io::AsyncWriteExt;

const GIB: u64 = 1 << 30;
const BLOCK: usize = 4096;
const RUNS: usize = 5;

/// Writes what it receives to a sink, as the `rbd import-diff` target writes to rbd's stdin.
struct Sink(tokio::io::Sink);

#[async_trait]
impl Target for Sink {
    async fn begin(&mut self, _: &Checkpoint) -> Result<(), TargetError> {
        Ok(())
    }
    async fn apply(&mut self, chunk: &Chunk) -> Result<(), TargetError> {
        Ok(self.0.write_all(&chunk.records).await?)
    }
    async fn commit(&mut self) -> Result<u64, TargetError> {
        Ok(0)
    }
    async fn finish(&mut self) -> Result<(), TargetError> {
        Ok(())
    }
}

/// A v1 diff of `extents` writes of `len` random bytes at distinct random aligned offsets of a 1 GiB
/// image, and the bytes of data it holds.
fn diff(extents: usize, len: usize, rng: &mut rand::rngs::StdRng) -> (Vec<u8>, u64) {
    let mut offsets = sample(rng, (GIB as usize) / len, extents).into_vec();
    offsets.sort();
    futures::executor::block_on(async {
        let mut w = DiffWriter::new(Vec::new(), Version::V1).await.unwrap();
        for r in [
            Record::FromSnap("s1".into()),
            Record::ToSnap("s2".into()),
            Record::Size(GIB),
        ] {
            w.record(&r).await.unwrap();
        }
        let mut data = vec![0u8; len];
        for block in offsets {
            rng.fill_bytes(&mut data);
            let record = Record::Write {
                offset: (block * len) as u64,
                data: data.clone().into(),
            };
            w.record(&record).await.unwrap();
        }
        (w.finish().await.unwrap(), (extents * len) as u64)
    })
}

/// Best of `RUNS` wall times of `f`, in seconds.
fn best(mut f: impl FnMut()) -> f64 {
    (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn engine(stream: &[u8], options: &FrameOptions, checkpoint: &Path) -> u64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let _ = tokio::fs::remove_file(checkpoint).await;
        let (near, far) = tokio::io::duplex(1 << 20);
        let mut sink = Sink(tokio::io::sink());
        let sender = async {
            send(
                "rbd/img",
                DiffReader::new(stream).await?,
                DEFAULT_CHUNK_SIZE,
                near,
                options,
            )
            .await
        };
        let (sent, received) = tokio::join!(sender, receive(far, &mut sink, checkpoint, 64 << 20));
        received.unwrap();
        sent.unwrap().wire.wire_bytes
    })
}

fn main() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("checkpoint.json");
    println!("| what | data | time (best of {RUNS}) | throughput |");
    println!("|---|---|---|---|");
    let row = |what: &str, data: &str, bytes: u64, secs: f64| {
        println!(
            "| {what} | {data} | {:.1} ms | {:.2} GB/s |",
            secs * 1e3,
            bytes as f64 / secs / 1e9
        );
    };

    let mut buf = vec![0u8; 64 << 20];
    rng.fill_bytes(&mut buf);
    let n = buf.len() as u64;
    row(
        "crc32c crate alone",
        "64 MiB",
        n,
        best(|| {
            std::hint::black_box(crc32c::crc32c(&buf));
        }),
    );
    row(
        "blake3 crate alone (one thread)",
        "64 MiB",
        n,
        best(|| {
            std::hint::black_box(blake3::hash(&buf));
        }),
    );
    let mut level1 = zstd::bulk::Compressor::new(1).unwrap();
    row(
        "zstd -1 crate alone, random bytes",
        "64 MiB",
        n,
        best(|| {
            std::hint::black_box(level1.compress(&buf).unwrap());
        }),
    );

    let small = diff(13_107, BLOCK, &mut rng);
    let large = diff(64, 4 << 20, &mut rng);
    for (name, (stream, changed)) in [
        ("13,107 random 4 KiB writes (5% of 1 GiB)", &small),
        ("64 random 4 MiB writes", &large),
    ] {
        for (what, checksum, zstd_level) in [
            ("engine, crc32c framing", ChecksumKind::Crc32c, None),
            ("engine, BLAKE3 framing", ChecksumKind::Blake3, None),
            ("engine, crc32c framing + zstd -1", ChecksumKind::Crc32c, Some(1)),
        ] {
            let options = FrameOptions {
                checksum,
                zstd_level,
                bytes_per_second: None,
            };
            let mut wire = 0;
            let secs = best(|| wire = engine(stream, &options, &checkpoint));
            row(what, name, *changed, secs);
            println!(
                "|  on the wire | {name} | {wire} bytes | {:.4}× the changed bytes |",
                wire as f64 / *changed as f64
            );
        }
    }
}
