//! `make demo`: cephdr end to end on this machine, the way a user runs it. A real kube-apiserver, two real
//! Ceph sites on 127.0.0.1 and 127.0.0.2, a `cephdr agent` process beside each, the `cephdr operator`
//! process, the manifests of `deploy/examples` applied with kubectl, data written on site A and read on
//! site B, then a planned failover to site B. `--keep` leaves everything running until Ctrl-C.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use cephdr::api::{
    conditions,
    failover_request::{FailoverPhase, FailoverRequest},
    CephZone, RbdMirrorPool,
};
use cephdr_e2e::{
    pki::Ca,
    process::{free_port, random_hex, run, scratch_dir, Daemon},
    CephSite, CephSites, ControlPlane, TestNamespace,
};
use clap::Parser;

/// Agents listen on this port of each site's loopback address, as `deploy/examples/00-sites.yaml` says.
const AGENT_PORT: u16 = 7443;
/// RGW ports of the zones in `deploy/examples/10-rgw-realm.yaml`.
const RGW_PORTS: [u16; 2] = [8001, 8002];
const SITES: [&str; 2] = ["site-a", "site-b"];
const ZONES: [&str; 2] = ["eu-a", "eu-b"];
const CONVERGE: Duration = Duration::from_secs(300);

#[derive(Parser)]
struct Args {
    /// The cephdr binary to run as agents and operator.
    #[arg(long, env = "CEPHDR_BIN")]
    cephdr: PathBuf,
    /// Keep everything running after the failover, until Ctrl-C.
    #[arg(long)]
    keep: bool,
}

/// Field order is drop order: the operator and agents stop before the sites and the API server they use.
struct Demo {
    processes: Vec<Daemon>,
    plane: ControlPlane,
    sites: CephSites,
    ns: TestNamespace,
    dir: PathBuf,
    started: Instant,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let started = Instant::now();
    say(
        started,
        "starting kube-apiserver + etcd and two Ceph sites (mon, mgr, OSD each)",
    );
    let plane = tokio::task::spawn_blocking(ControlPlane::start);
    let sites = tokio::task::spawn_blocking(CephSites::start).await??;
    let plane = plane.await??;
    let dir = scratch_dir(&std::env::temp_dir(), "demo")?;
    let client = plane.client().await?;
    let ns = TestNamespace::new(client, "cephdr-demo").await?;
    let mut demo = Demo {
        processes: Vec::new(),
        plane,
        sites,
        ns,
        dir,
        started,
    };
    demo.say(&format!(
        "namespace {}; KUBECONFIG={}",
        demo.ns.name,
        demo.plane.kubeconfig.display()
    ));

    demo.kubectl(&["apply", "-f", path(&repo.join("crds"))?])?;
    demo.start_agents(&args.cephdr)?;
    demo.start_operator(&args.cephdr)?;
    for site in demo.sites() {
        site.start_rbd_mirror()?;
    }
    demo.kubectl(&[
        "apply",
        "-n",
        &demo.ns.name,
        "-k",
        path(&repo.join("deploy/examples"))?,
    ])?;

    demo.mirror_an_image().await?;
    demo.replicate_objects().await?;
    demo.kubectl_show(&[
        "get",
        "cephsites,cephrealms,cephzones,rbdmirrorpools",
        "-o",
        "wide",
    ])?;

    let failover = repo.join("deploy/examples/30-failover-planned.yaml");
    demo.planned_failover(&failover).await?;
    demo.say(&format!("done in {} s", demo.started.elapsed().as_secs()));
    if args.keep {
        demo.say("everything keeps running; press Ctrl-C to stop and clean up");
        tokio::signal::ctrl_c().await?;
    }
    Ok(())
}

impl Demo {
    fn sites(&self) -> [&CephSite; 2] {
        [&self.sites.a, &self.sites.b]
    }

    fn say(&self, what: &str) {
        say(self.started, what);
    }

    fn kubectl(&self, args: &[&str]) -> Result<String> {
        run(self.plane.kubectl().args(args))
    }

    fn kubectl_show(&self, args: &[&str]) -> Result<()> {
        let mut all = args.to_vec();
        all.extend(["-n", &self.ns.name]);
        println!("\n$ kubectl {}\n{}", args.join(" "), self.kubectl(&all)?);
        Ok(())
    }

    /// A `cephdr agent` process per site on its loopback address, with a token and a serving certificate
    /// from a demo CA; the token and CA go to the Secrets the CephSites name.
    fn start_agents(&mut self, cephdr: &Path) -> Result<()> {
        let ca = Ca::new("cephdr demo agents")?;
        let ca_file = self.dir.join("ca.crt");
        std::fs::write(&ca_file, ca.cert_pem())?;
        for (name, site) in SITES.into_iter().zip([&self.sites.a, &self.sites.b]) {
            let serving = ca.server(name, &[site.ip.as_str()], &[])?;
            let files = self.dir.join(name);
            std::fs::create_dir_all(&files)?;
            std::fs::write(files.join("tls.crt"), serving.cert_pem)?;
            std::fs::write(files.join("tls.key"), serving.key_pem)?;
            std::fs::write(files.join("token"), random_hex(32)?)?;
            let mut agent = Command::new(cephdr);
            agent.args([
                "agent",
                "--site",
                name,
                "--listen",
                &format!("{}:{AGENT_PORT}", site.ip),
            ]);
            agent.arg("--tls-cert").arg(files.join("tls.crt"));
            agent.arg("--tls-key").arg(files.join("tls.key"));
            agent.arg("--token-file").arg(files.join("token"));
            agent
                .arg("--ceph-conf")
                .arg(&site.conf)
                .arg("--keyring")
                .arg(&site.keyring);
            let log = files.join("agent.log");
            self.processes
                .push(Daemon::start(&format!("{name} agent"), agent, &log)?);
            self.kubectl(&[
                "create",
                "secret",
                "generic",
                &format!("{name}-agent"),
                "-n",
                &self.ns.name,
                &format!("--from-file=token={}", path(&files.join("token"))?),
                &format!("--from-file=ca.crt={}", path(&ca_file)?),
            ])?;
            self.say(&format!(
                "cephdr agent for {name} on https://{}:{AGENT_PORT} (log {})",
                site.ip,
                log.display()
            ));
        }
        Ok(())
    }

    fn start_operator(&mut self, cephdr: &Path) -> Result<()> {
        let listen = format!("127.0.0.1:{}", free_port("127.0.0.1")?);
        let mut operator = Command::new(cephdr);
        operator.args(["operator", "--namespace", &self.ns.name, "--listen", &listen]);
        operator.env("KUBECONFIG", &self.plane.kubeconfig);
        let log = self.dir.join("operator.log");
        self.processes
            .push(Daemon::start("cephdr operator", operator, &log)?);
        self.say(&format!(
            "cephdr operator watching {} (metrics http://{listen}/metrics, log {})",
            self.ns.name,
            log.display()
        ));
        Ok(())
    }

    /// The application writes image `db` into the pool the operator created; rbd-mirror copies it to B.
    async fn mirror_an_image(&self) -> Result<()> {
        let a = &self.sites.a;
        wait_until("the operator creates pool rbd on site A", || a.pool_exists("rbd")).await?;
        a.import_random_image("rbd", "db", 32)?;
        let source = a.image_checksum("rbd/db")?;
        self.say(&format!(
            "wrote 32 MiB into rbd/db on site A (blake3 {})",
            &source[..16]
        ));
        self.ns
            .wait::<RbdMirrorPool>("rbd", "Ready with db replaying", CONVERGE, |pool| {
                pool.status.as_ref().is_some_and(|s| {
                    conditions::is_true(&s.conditions, conditions::READY)
                        && s.images.iter().any(|i| i.name == "db" && i.state == "replaying")
                })
            })
            .await?;
        let b = &self.sites.b;
        wait_until("rbd/db identical on site B", || {
            Ok(b.image_checksum("rbd/db")? == source)
        })
        .await?;
        self.say("rbd/db on site B has the same bytes");
        Ok(())
    }

    /// RGW serves each zone once the operator created it; an object PUT on A is read back from B.
    async fn replicate_objects(&self) -> Result<()> {
        for ((zone, site), port) in ZONES.into_iter().zip(self.sites()).zip(RGW_PORTS) {
            wait_until(&format!("zone {zone} in site {}'s period", site.name), || {
                Ok(site
                    .radosgw_admin(&["period", "get", "--rgw-realm=geo"])?
                    .contains(&format!("\"name\": \"{zone}\"")))
            })
            .await?;
            let endpoint = tokio::task::block_in_place(|| site.start_zone_rgw("geo", zone, port))?;
            self.say(&format!("RGW for zone {zone} at {endpoint}"));
        }
        for zone in ZONES {
            self.ns
                .wait::<CephZone>(zone, "Ready", CONVERGE, |z| {
                    z.status
                        .as_ref()
                        .is_some_and(|s| conditions::is_true(&s.conditions, conditions::READY))
                })
                .await?;
        }
        let user: serde_json::Value = serde_json::from_str(&self.sites.a.radosgw_admin(&[
            "user",
            "create",
            "--uid=demo",
            "--display-name=demo",
            "--rgw-realm=geo",
            "--rgw-zone=eu-a",
        ])?)?;
        let key = &user["keys"][0];
        let credentials = s3::creds::Credentials::new(
            key["access_key"].as_str(),
            key["secret_key"].as_str(),
            None,
            None,
            None,
        )?;
        let region = |port: u16, ip: &str| s3::Region::Custom {
            region: "eu".into(),
            endpoint: format!("http://{ip}:{port}"),
        };
        let on_a = s3::Bucket::create_with_path_style(
            "photos",
            region(RGW_PORTS[0], &self.sites.a.ip),
            credentials.clone(),
            Default::default(),
        )
        .await?
        .bucket;
        let body = random_hex(4096)?.into_bytes();
        on_a.put_object("/cat.jpg", &body).await?;
        self.say("PUT photos/cat.jpg on zone eu-a (site A)");
        let on_b =
            s3::Bucket::new("photos", region(RGW_PORTS[1], &self.sites.b.ip), credentials)?.with_path_style();
        let deadline = Instant::now() + CONVERGE;
        loop {
            match on_b.get_object("/cat.jpg").await {
                Ok(got) if got.as_slice() == body.as_slice() => break,
                _ if Instant::now() > deadline => bail!("photos/cat.jpg never reached zone eu-b"),
                _ => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
        self.say("GET photos/cat.jpg from zone eu-b (site B): same bytes");
        Ok(())
    }

    async fn planned_failover(&self, manifest: &Path) -> Result<()> {
        self.say("planned failover to site B: kubectl apply -f deploy/examples/30-failover-planned.yaml");
        self.kubectl(&["apply", "-n", &self.ns.name, "-f", path(manifest)?])?;
        let last = std::cell::Cell::new(None);
        let done = self
            .ns
            .wait::<FailoverRequest>("move-to-b", "finished", CONVERGE, |request| {
                let phase = request.status.as_ref().map(|s| s.phase);
                if last.replace(phase) != phase {
                    self.say(&format!("failover phase: {phase:?}"));
                }
                phase.is_some_and(FailoverPhase::is_terminal)
            })
            .await?;
        self.kubectl_show(&[
            "get",
            "failoverrequests,cephrealms,cephzones,rbdmirrorpools",
            "-o",
            "wide",
        ])?;
        let status = done.status.context("failover status")?;
        if status.phase != FailoverPhase::Completed {
            bail!("the failover ended {:?}: {:#?}", status.phase, status.conditions);
        }
        self.say(&format!(
            "rbd/db on site B: mirroring primary = {}",
            self.sites.b.is_primary("rbd/db")?
        ));
        Ok(())
    }
}

fn say(started: Instant, what: &str) {
    println!("[{:>4} s] {what}", started.elapsed().as_secs());
}

fn path(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

async fn wait_until(what: &str, probe: impl Fn() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let outcome = tokio::task::block_in_place(&probe);
        match outcome {
            Ok(true) => return Ok(()),
            Err(error) if Instant::now() > deadline => bail!("{what}: {error:#}"),
            _ if Instant::now() > deadline => bail!("not done after {CONVERGE:?}: {what}"),
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}
