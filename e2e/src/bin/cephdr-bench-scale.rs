//! The scale benchmark of issue 3: a `cephdr operator` process started cold against the bed's real
//! kube-apiserver, with 1,000 resources already there and 10,000 simulated images behind them. Simulated Ceph
//! clusters stand in for the sites (the point is the operator's own cost, not Ceph's), each served by a real
//! agent API over HTTPS with a bearer token, as a deployed operator reaches its sites. Measures the seconds
//! until every resource is Ready, reconciles per second, the operator's peak RSS and CPU, and how long a
//! resource created afterwards waits for its first reconcile and for Ready. Prints a markdown table. Not a
//! test: `docs/benchmarks.md` has the command and the results.

use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use cephdr::{
    agent::{
        sim::{SimulatedCluster, SimulatedWorld},
        ClusterAgent, Step,
    },
    api::{conditions, CephRealm, CephSite, CephZone, RbdMirrorPool},
};
use cephdr_e2e::{
    operator::{register_site, SiteAgent},
    pki::Ca,
    process::{self, Daemon},
    ControlPlane, TestNamespace,
};
use clap::Parser;
use futures::{stream, FutureExt, StreamExt, TryFutureExt, TryStreamExt};
use kube::{
    api::Api,
    runtime::{watcher, WatchStreamExt},
    Resource,
};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::mpsc;

#[derive(Parser)]
struct Args {
    /// The cephdr binary run as the operator (build it with `--release` for figures worth quoting).
    #[arg(long, env = "CEPHDR_BIN")]
    cephdr: PathBuf,
    /// Simulated Ceph sites, paired up (site 0 with 1, 2 with 3, ...); an even number.
    #[arg(long, default_value_t = 20)]
    sites: usize,
    /// RGW realms, each with a master zone on one site of a pair and a secondary zone on the other; at most
    /// one per pair (cephdr creates a realm's sync user in the cluster's default realm, so one cluster
    /// holds the zones of one cephdr realm).
    #[arg(long, default_value_t = 10)]
    realms: usize,
    /// Mirrored RBD pools, spread over the pairs.
    #[arg(long, default_value_t = 950)]
    pools: usize,
    /// Images in all pools together, spread evenly.
    #[arg(long, default_value_t = 10_000)]
    images: usize,
    /// Where the operator logs (default: a scratch file removed at exit); `RUST_LOG` sets its level.
    #[arg(long)]
    operator_log: Option<PathBuf>,
    /// Give up when the resources are not all Ready after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

/// The simulated sites, each behind its agent API; dropping this stops the APIs.
struct Fleet {
    clusters: Vec<Arc<SimulatedCluster>>,
    _agents: Vec<SiteAgent>,
}

fn site_name(index: usize) -> String {
    format!("site-{index}")
}

/// The two sites of pair `n` (of `sites / 2`): (primary, secondary).
fn pair(n: usize, sites: usize) -> (usize, usize) {
    let pair = n % (sites / 2);
    (2 * pair, 2 * pair + 1)
}

impl Fleet {
    async fn start(ns: &TestNamespace, sites: usize) -> Result<Fleet> {
        let world = SimulatedWorld::new();
        let ca = Ca::new("cephdr bench agents")?;
        let mut clusters = Vec::new();
        let mut agents = Vec::new();
        for index in 0..sites {
            let name = site_name(index);
            let cluster = world.add_site(&name);
            cluster.set_rbd_mirror_running(true)?;
            let token = process::random_hex(32)?;
            let agent = SiteAgent::start(&name, "127.0.0.1", cluster.clone(), &ca, &token).await?;
            register_site(ns, &name, json!({"url": agent.url}), &token, &ca.cert_pem()).await?;
            clusters.push(cluster);
            agents.push(agent);
        }
        Ok(Fleet {
            clusters,
            _agents: agents,
        })
    }

    /// What the user does before cephdr sees the pool: the pool exists on its primary, with its images.
    async fn user_pool(&self, pool: &str, primary: usize, images: usize) -> Result<()> {
        let cluster = &self.clusters[primary];
        cluster
            .execute(&Step::CreatePool {
                pool: pool.to_string(),
            })
            .await?;
        for image in 0..images {
            cluster.create_image(pool, &format!("vol-{image}"))?;
        }
        Ok(())
    }
}

fn pool_manifest(name: &str, primary: usize, secondary: usize) -> serde_json::Value {
    json!({"metadata": {"name": name}, "spec": {
        "pool": name, "mode": "image", "direction": "one-way",
        "sites": [{"site": site_name(primary), "role": "primary"}, {"site": site_name(secondary), "role": "secondary"}],
        "images": {"mirrorMode": "snapshot", "all": true},
        "snapshotSchedules": [{"interval": "15m"}], "rpoSeconds": 1800, "deletionPolicy": "Retain"}})
}

fn realm_manifest(name: &str) -> serde_json::Value {
    json!({"metadata": {"name": name}, "spec": {
        "zoneGroups": [{"name": "zg", "master": true}], "deletionPolicy": "Retain"}})
}

fn zone_manifest(realm: &str, zone: &str, site: usize, master: bool) -> serde_json::Value {
    json!({"metadata": {"name": zone}, "spec": {
        "realm": realm, "zoneGroup": "zg", "site": site_name(site), "master": master,
        "endpoints": [format!("http://{zone}.example:8080")], "rpoSeconds": 300, "deletionPolicy": "Retain"}})
}

/// Every manifest of the fleet (sites aside: `Fleet::start` registers them), created with some concurrency
/// as `kubectl apply` of a directory would.
async fn create_resources(ns: &TestNamespace, fleet: &Fleet, args: &Args) -> Result<usize> {
    let per_pool = args.images.div_ceil(args.pools.max(1));
    let mut images = 0;
    for n in 0..args.pools {
        let count = per_pool.min(args.images - images);
        fleet
            .user_pool(&format!("pool-{n}"), pair(n, args.sites).0, count)
            .await?;
        images += count;
    }
    let pools = (0..args.pools).map(|n| {
        let (primary, secondary) = pair(n, args.sites);
        ns.create::<RbdMirrorPool>(pool_manifest(&format!("pool-{n}"), primary, secondary))
            .map_ok(drop)
            .boxed()
    });
    let realms = (0..args.realms).flat_map(|n| {
        let (master, secondary) = pair(n, args.sites);
        let realm = format!("realm-{n}");
        [
            ns.create::<CephRealm>(realm_manifest(&realm))
                .map_ok(drop)
                .boxed(),
            ns.create::<CephZone>(zone_manifest(&realm, &format!("{realm}-a"), master, true))
                .map_ok(drop)
                .boxed(),
            ns.create::<CephZone>(zone_manifest(&realm, &format!("{realm}-b"), secondary, false))
                .map_ok(drop)
                .boxed(),
        ]
    });
    stream::iter(pools.chain(realms))
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(images)
}

/// Whether a resource's status says Ready for its current generation.
trait Readiness: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> {
    fn ready(&self) -> bool;
    fn reconciled(&self) -> bool;
}

macro_rules! readiness {
    ($($kind:ty),*) => {$(
        impl Readiness for $kind {
            fn ready(&self) -> bool {
                self.status.as_ref().is_some_and(|status| {
                    status.observed_generation == self.metadata.generation
                        && conditions::is_true(&status.conditions, conditions::READY)
                })
            }
            fn reconciled(&self) -> bool {
                self.status.as_ref().is_some_and(|status| status.observed_generation.is_some())
            }
        }
    )*};
}
readiness!(CephSite, CephRealm, CephZone, RbdMirrorPool);

/// Reports `(kind, name)` each time a resource of kind `K` is seen Ready.
fn watch_ready<K>(api: Api<K>, ready: mpsc::UnboundedSender<(&'static str, String)>)
where
    K: Readiness + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    tokio::spawn(async move {
        let mut objects = std::pin::pin!(watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects());
        while let Ok(Some(object)) = objects.try_next().await {
            if object.ready() {
                let kind = std::any::type_name::<K>().rsplit("::").next().unwrap_or("?");
                let _ = ready.send((kind, object.meta().name.clone().unwrap_or_default()));
            }
        }
    });
}

/// The operator's counters from `/metrics`: reconciles and agent requests, summed over their labels.
async fn scrape(listen: &str) -> Result<(f64, f64)> {
    let text = http_get(listen, "/metrics").await?;
    let sum = |metric: &str| -> f64 {
        text.lines()
            .filter(|line| line.starts_with(metric) && !line.starts_with('#'))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    Ok((
        sum("cephdr_reconciles_total{"),
        sum("cephdr_agent_request_duration_seconds_count{"),
    ))
}

/// The API server's `apiserver_request_total`, summed per (verb, resource) over codes and scopes.
async fn api_requests(client: &kube::Client) -> Result<BTreeMap<(String, String), f64>> {
    let text = client
        .request_text(http::Request::get("/metrics").body(Vec::new())?)
        .await?;
    let mut counts = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let label = |name: &str| {
            line.split_once(&format!("{name}=\""))
                .and_then(|(_, rest)| rest.split_once('"'))
                .map_or(String::new(), |(value, _)| value.to_string())
        };
        let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let subresource = label("subresource");
        let resource = match subresource.as_str() {
            "" => label("resource"),
            sub => format!("{}/{sub}", label("resource")),
        };
        *counts.entry((label("verb"), resource)).or_default() += value;
    }
    Ok(counts)
}

/// A plain HTTP/1.0 GET on loopback (the operations endpoint speaks plain HTTP).
async fn http_get(addr: &str, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (_, body) = response
        .split_once("\r\n\r\n")
        .context("no HTTP body from the operator")?;
    Ok(body.to_string())
}

/// (peak RSS in MiB, CPU seconds) of a live process.
fn usage(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm_kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmHWM")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((hwm_kib / 1024.0, ticks / hz))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.sites < 2 || args.sites % 2 != 0 {
        bail!("--sites must be an even number of at least 2");
    }
    if args.realms > args.sites / 2 {
        bail!(
            "--realms must be at most one per pair of sites ({})",
            args.sites / 2
        );
    }
    let plane = tokio::task::spawn_blocking(ControlPlane::start).await??;
    let client = plane.client().await?;
    cephdr_e2e::install_crds(&client, &cephdr::api::crds()).await?;
    let ns = TestNamespace::new(client.clone(), "scale").await?;
    let fleet = Fleet::start(&ns, args.sites).await?;
    let images = create_resources(&ns, &fleet, &args).await?;
    let total = args.sites + args.pools + 3 * args.realms;
    println!(
        "{total} resources ({} sites, {} realms, {} zones, {} pools) over {images} simulated images",
        args.sites,
        args.realms,
        2 * args.realms,
        args.pools
    );

    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    watch_ready(ns.api::<CephSite>(), ready_tx.clone());
    watch_ready(ns.api::<CephRealm>(), ready_tx.clone());
    watch_ready(ns.api::<CephZone>(), ready_tx.clone());
    watch_ready(ns.api::<RbdMirrorPool>(), ready_tx);

    let listen = format!("127.0.0.1:{}", process::free_port("127.0.0.1")?);
    let dir = process::scratch_dir(&std::env::temp_dir(), "bench-scale")?;
    let log = args
        .operator_log
        .clone()
        .unwrap_or_else(|| dir.join("operator.log"));
    let mut command = Command::new(&args.cephdr);
    command
        .args(["operator", "--namespace", &ns.name, "--listen", &listen])
        .env("KUBECONFIG", &plane.kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        );
    let api_before = api_requests(&client).await?;
    let started = Instant::now();
    let operator = Daemon::start("cephdr operator", command, &log)?;

    let mut seen = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    while seen.len() < total {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some(key)) => {
                if seen.insert(key) && seen.len() % 100 == 0 {
                    eprintln!("{:>6.1} s: {} Ready", started.elapsed().as_secs_f64(), seen.len());
                }
            }
            _ => {
                operator.ensure_running(&log)?;
                bail!(
                    "{} of {total} resources Ready after {}s; the operator's last log lines:\n{}",
                    seen.len(),
                    args.timeout,
                    process::tail(&log, 40)
                );
            }
        }
    }
    let all_ready = started.elapsed().as_secs_f64();
    let (reconciles, agent_requests) = scrape(&listen).await?;
    let (rss_ready, cpu_ready) = usage(operator.pid)?;
    let mut api_during: Vec<_> = api_requests(&client)
        .await?
        .into_iter()
        .map(|(key, after)| (after - api_before.get(&key).copied().unwrap_or(0.0), key))
        .filter(|(count, _)| *count >= 1.0)
        .collect();
    api_during.sort_by(|a, b| b.0.total_cmp(&a.0));

    // A resource created into the running fleet: its first reconcile and Ready.
    let (primary, secondary) = pair(0, args.sites);
    fleet.user_pool("pool-new", primary, 12).await?;
    let created = Instant::now();
    ns.create::<RbdMirrorPool>(pool_manifest("pool-new", primary, secondary))
        .await?;
    let mut first_reconcile = None;
    let mut new_ready = None;
    let api = ns.api::<RbdMirrorPool>();
    let mut events = std::pin::pin!(watcher(
        api,
        watcher::Config::default().fields("metadata.name=pool-new")
    )
    .default_backoff()
    .applied_objects());
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    while new_ready.is_none() {
        // Not Ready within a minute is a result too: the table says so.
        let Ok(next) = tokio::time::timeout_at(give_up, events.try_next()).await else {
            break;
        };
        let object = next?.context("watch ended")?;
        if object.reconciled() && first_reconcile.is_none() {
            first_reconcile = Some(created.elapsed().as_secs_f64());
        }
        if object.ready() {
            new_ready = Some(created.elapsed().as_secs_f64());
        }
    }
    let (rss_peak, _) = usage(operator.pid)?;
    operator.ensure_running(&log)?;
    operator.stop(Duration::from_secs(5));

    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| operator start → all {total} resources Ready | {all_ready:.1} s |");
    println!(
        "| reconciles until then (per second) | {reconciles:.0} ({:.0}/s) |",
        reconciles / all_ready
    );
    println!(
        "| agent API requests until then (per second) | {agent_requests:.0} ({:.0}/s) |",
        agent_requests / all_ready
    );
    println!("| operator CPU until all Ready | {cpu_ready:.1} s |");
    println!("| operator peak RSS at all Ready / at the end | {rss_ready:.1} MiB / {rss_peak:.1} MiB |");
    let seconds = |t: Option<f64>| t.map_or("not within 60 s".to_string(), |t| format!("{t:.2} s"));
    println!(
        "| new pool: first reconcile / Ready | {} / {} |",
        seconds(first_reconcile),
        seconds(new_ready)
    );
    let total_api: f64 = api_during.iter().map(|(count, _)| count).sum();
    println!();
    println!(
        "API server requests from the operator start to all Ready: {total_api:.0} ({:.0}/s)",
        total_api / all_ready
    );
    println!();
    println!("| verb | resource | requests | per resource |");
    println!("|---|---|---|---|");
    for (count, (verb, resource)) in api_during.iter().take(12) {
        println!(
            "| {verb} | {resource} | {count:.0} | {:.1} |",
            count / total as f64
        );
    }
    Ok(())
}
