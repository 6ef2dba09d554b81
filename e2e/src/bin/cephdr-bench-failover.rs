//! The failover benchmark of issue 5 on the two real sites: a planned failover of 1, 10 and 100 mirrored
//! images (snapshot mode), through cephdr (a FailoverRequest, from create to Completed) against the
//! runbooks' sequential shell loop (`rbd mirror image demote` per image on the source, then per image
//! `rbd mirror image promote` on the target, retried until the demotion has arrived). Each image count gets
//! a fresh pool: cephdr moves it A → B, the loop moves the same images back B → A, each after a write to
//! every image that the move must carry (checked by checksum). Prints a markdown table. Not a test:
//! `docs/benchmarks.md` has the command.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};
use cephdr::api::{failover_request::FailoverPhase, RbdMirrorPool};
use cephdr_e2e::{operator::OperatorStack, process::run, CephSite, CephSites, ControlPlane};
use clap::Parser;

/// The `CephSite`s' `timeoutSeconds`: reading a pool costs two `rbd` processes per image, which for 100
/// images on this shared machine can take longer than the default 30 s.
const AGENT_TIMEOUT_SECONDS: u32 = 120;
const CHECK_THREADS: usize = 8;

#[derive(Parser)]
struct Args {
    /// Image counts, one pool and one measurement of each method per count.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    images: Vec<usize>,
    /// Size of each image in MiB (random bytes, mirrored before the measurements).
    #[arg(long, default_value_t = 4)]
    mib: usize,
    /// How long cephdr's request, the way back's wait for copies on A and the pool's deletion may each take.
    #[arg(long, default_value_t = 900)]
    timeout_seconds: u64,
}

struct Row {
    images: usize,
    cephdr: f64,
    rto: Option<f64>,
    shell: f64,
}

/// `f` of every image (with its index), on a few threads: the checks run hundreds of `rbd` processes,
/// outside the timings.
fn for_each_image<T: Send>(images: &[String], f: impl Fn(usize, &str) -> Result<T> + Sync) -> Result<Vec<T>> {
    let chunk = images.len().div_ceil(CHECK_THREADS).max(1);
    std::thread::scope(|scope| {
        let f = &f;
        let threads: Vec<_> = images
            .chunks(chunk)
            .enumerate()
            .map(|(n, part)| {
                scope.spawn(move || {
                    let first = n * chunk;
                    part.iter()
                        .enumerate()
                        .map(|(i, image)| f(first + i, image))
                        .collect::<Result<Vec<T>>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(images.len());
        for thread in threads {
            all.extend(thread.join().map_err(|_| anyhow::anyhow!("a check panicked"))??);
        }
        Ok(all)
    })
}

/// Writes 1 MiB into every image on `site` (the primary) and returns the images' checksums.
fn write_all(site: &CephSite, pool: &str, images: &[String]) -> Result<Vec<String>> {
    for_each_image(images, |_, image| {
        let spec = format!("{pool}/{image}");
        site.write_some(&spec)?;
        site.image_checksum(&spec)
    })
}

/// Every image is primary on `site` only and holds the bytes it had when acknowledged on the other site.
fn check_moved(
    to: &CephSite,
    from: &CephSite,
    pool: &str,
    images: &[String],
    acked: &[String],
) -> Result<()> {
    for_each_image(images, |i, image| {
        let spec = format!("{pool}/{image}");
        ensure!(
            to.is_primary(&spec)? && !from.is_primary(&spec)?,
            "{spec} is not primary on site {} only",
            to.name
        );
        ensure!(
            to.image_checksum(&spec)? == acked[i],
            "{spec} on site {} lost acknowledged writes",
            to.name
        );
        Ok(())
    })
    .map(drop)
}

/// The runbook: a sequential shell loop, demoting every image on `from`, then promoting each on `to` once
/// its demotion has arrived (a promote before that is refused, so the loop retries it every 0.5 s).
fn shell_loop(from: &CephSite, to: &CephSite, pool: &str, images: &[String]) -> Result<()> {
    let script = r#"
        for i in $IMAGES; do rbd -c "$FROM" mirror image demote "$POOL/$i" >/dev/null; done
        for i in $IMAGES; do
            until rbd -c "$TO" mirror image promote "$POOL/$i" >/dev/null 2>&1; do sleep 0.5; done
        done"#;
    run(Command::new("bash")
        .args(["-euc", script])
        .env("IMAGES", images.join(" "))
        .env("FROM", &from.conf)
        .env("TO", &to.conf)
        .env("POOL", pool))
    .map(drop)
}

/// Waits until site A has received a mirror snapshot of every image from site B, the state a planned move
/// back starts from.
async fn receiving_from_b(
    stack: &OperatorStack,
    name: &str,
    images: &[String],
    timeout: Duration,
) -> Result<()> {
    stack
        .ns
        .wait::<RbdMirrorPool>(
            name,
            "site-a receiving every image from site-b",
            timeout,
            |pool| {
                pool.status.as_ref().is_some_and(|st| {
                    images.iter().all(|image| {
                        st.images.iter().any(|i| {
                            &i.name == image
                                && i.primary_site.as_deref() == Some("site-b")
                                && i.state == "replaying"
                                && i.last_sync_time.is_some()
                        })
                    })
                })
            },
        )
        .await
        .map(drop)
}

async fn measure(
    stack: &OperatorStack,
    sites: &CephSites,
    count: usize,
    mib: usize,
    timeout: Duration,
) -> Result<Row> {
    let (a, b) = (&sites.a, &sites.b);
    let name = format!("bench-{count}");
    let pool = format!("bench{count}");
    let images: Vec<String> = (0..count).map(|i| format!("img{i:03}")).collect();
    eprintln!("{count} image(s): mirroring {mib} MiB each from site A to site B");
    stack
        .mirrored_images([a, b], &name, &pool, &images, mib, serde_json::json!({}))
        .await?;

    let acked = tokio::task::block_in_place(|| write_all(a, &pool, &images))?;
    eprintln!("{count} image(s): cephdr A → B");
    let start = Instant::now();
    let request = format!("{name}-to-b");
    stack
        .request_failover(&request, "planned", "site-b", &name)
        .await?;
    let done = stack.finished_within(&request, timeout).await?;
    let cephdr = start.elapsed().as_secs_f64();
    let status = done.status.context("status")?;
    ensure!(
        status.phase == FailoverPhase::Completed,
        "cephdr's failover did not complete: {status:#?}"
    );
    tokio::task::block_in_place(|| check_moved(b, a, &pool, &images, &acked))?;

    receiving_from_b(stack, &name, &images, timeout).await?;
    let acked = tokio::task::block_in_place(|| write_all(b, &pool, &images))?;
    eprintln!("{count} image(s): shell loop B → A");
    let start = Instant::now();
    tokio::task::block_in_place(|| shell_loop(b, a, &pool, &images))?;
    let shell = start.elapsed().as_secs_f64();
    tokio::task::block_in_place(|| check_moved(a, b, &pool, &images, &acked))?;
    let row = Row {
        images: count,
        cephdr,
        rto: status.rto_seconds,
        shell,
    };
    eprintln!(
        "{count} image(s): cephdr {:.1} s (RTO {:?}), shell loop {:.1} s",
        row.cephdr, row.rto, row.shell
    );

    // The pool's scheduled snapshots would load the next measurement. Deleting 100 mirrored images takes
    // minutes: the figures above are printed first.
    stack
        .ns
        .api::<RbdMirrorPool>()
        .delete(&name, &Default::default())
        .await?;
    stack.ns.wait_gone::<RbdMirrorPool>(&name, timeout).await?;
    Ok(row)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let plane = tokio::task::spawn_blocking(ControlPlane::start);
    let sites = tokio::task::spawn_blocking(CephSites::start).await??;
    let plane = plane.await??;
    for site in [&sites.a, &sites.b] {
        site.start_rbd_mirror()?;
    }
    let stack = OperatorStack::start_with_timeout(
        &plane,
        [&sites.a, &sites.b],
        "bench-failover",
        Some(AGENT_TIMEOUT_SECONDS),
    )
    .await?;
    let mut rows = Vec::new();
    for &count in &args.images {
        let row = measure(
            &stack,
            &sites,
            count,
            args.mib,
            Duration::from_secs(args.timeout_seconds),
        )
        .await?;
        rows.push(row);
    }

    println!(
        "Planned failover of snapshot-mirrored {} MiB images, each carrying a 1 MiB write made just before; \
         every image checked primary on the target only, with the write (checksum)",
        args.mib
    );
    println!();
    println!("| images | cephdr (create → Completed) | RTO in status | shell loop | loop ÷ cephdr |");
    println!("|---|---|---|---|---|");
    for row in &rows {
        let rto = row.rto.map_or("–".to_string(), |rto| format!("{rto:.1} s"));
        println!(
            "| {} | {:.1} s | {rto} | {:.1} s | {:.1}× |",
            row.images,
            row.cephdr,
            row.shell,
            row.shell / row.cephdr
        );
    }
    Ok(())
}
