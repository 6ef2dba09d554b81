//! The whole of cephdr on the bed: a `cephdr agent` API beside each real Ceph site (HTTPS, bearer token, its
//! own CA), a `CephSite` per agent with its token and CA in Secrets, and the operator's controllers
//! reaching the agents the way a deployed operator does (`RemoteConnector`).

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use cephdr::{
    agent::{
        ceph::CephCli,
        remote::RemoteConnector,
        server::{serve, AgentServer, TlsFiles, Tokens},
        ClusterAgent,
    },
    api::{self, conditions, failover_request::FailoverRequest, CephSite},
    controller::{self, WatchScope},
    metrics::Metrics,
};
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Condition, ByteString};
use kube::api::{ObjectMeta, PostParams};
use serde_json::json;
use tokio::{sync::oneshot, task::JoinHandle};

use crate::{install_crds, pki::Ca, process, CephSite as BedSite, CephSites, ControlPlane, TestNamespace};

/// The `CephSite` names of the bed's sites A and B.
pub const SITE_NAMES: [&str; 2] = ["site-a", "site-b"];

/// An agent API serving one site, stopped when dropped.
pub struct SiteAgent {
    pub site: String,
    pub url: String,
    addr: std::net::SocketAddr,
    tls: TlsFiles,
    tokens: std::path::PathBuf,
    backend: Arc<dyn ClusterAgent>,
    server: Option<AgentServer>,
}

impl SiteAgent {
    /// Serves `backend` as `site` over HTTPS on `ip` with a serving certificate from `ca` and one token.
    pub async fn start(
        site: &str,
        ip: &str,
        backend: Arc<dyn ClusterAgent>,
        ca: &Ca,
        token: &str,
    ) -> Result<SiteAgent> {
        let dir = process::scratch_dir(&std::env::temp_dir(), &format!("agent-{site}"))?;
        let serving = ca.server(site, &[ip], &[])?;
        let tls = TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        write_private(&tls.cert, &serving.cert_pem)?;
        write_private(&tls.key, &serving.key_pem)?;
        let tokens = dir.join("tokens");
        write_private(&tokens, token)?;
        let mut agent = SiteAgent {
            site: site.to_string(),
            url: String::new(),
            addr: format!("{ip}:0").parse()?,
            tls,
            tokens,
            backend,
            server: None,
        };
        agent.serve().await?;
        agent.url = format!("https://{}", agent.addr);
        Ok(agent)
    }

    async fn serve(&mut self) -> Result<()> {
        let server = serve(
            self.backend.clone(),
            self.addr,
            self.tls.clone(),
            Tokens::load(&self.tokens)?,
        )
        .await?;
        self.addr = server.local_addr();
        self.server = Some(server);
        Ok(())
    }

    /// Stops the API, as when the agent's host goes away; the Ceph cluster keeps running.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    /// Serves again on the same address, as when the site comes back.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await;
        self.serve().await
    }
}

fn write_private(path: &Path, content: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    std::io::Write::write_all(&mut file, content.as_bytes())?;
    Ok(())
}

/// The operator watching one namespace of the bed, with both sites registered and Ready.
pub struct OperatorStack {
    pub ns: TestNamespace,
    pub agents: Vec<SiteAgent>,
    pub metrics: Arc<Metrics>,
    client: kube::Client,
    stop: Option<oneshot::Sender<()>>,
    controllers: Option<JoinHandle<()>>,
}

impl OperatorStack {
    pub async fn start(plane: &ControlPlane, sites: [&BedSite; 2], prefix: &str) -> Result<OperatorStack> {
        Self::start_with_timeout(plane, sites, prefix, None).await
    }

    /// [`start`](Self::start) with the `CephSite`s' `timeoutSeconds` for each agent call (`None`: the
    /// default).
    pub async fn start_with_timeout(
        plane: &ControlPlane,
        sites: [&BedSite; 2],
        prefix: &str,
        timeout_seconds: Option<u32>,
    ) -> Result<OperatorStack> {
        crate::init_logging();
        let client = plane.client().await?;
        install_crds(&client, &api::crds()).await?;
        let ns = TestNamespace::new(client.clone(), prefix).await?;
        let ca = Ca::new("cephdr agents")?;
        let mut agents = Vec::new();
        for (name, bed) in SITE_NAMES.into_iter().zip(sites) {
            let token = process::random_hex(32)?;
            let backend = CephCli::new(name).with_conf(&bed.conf).with_keyring(&bed.keyring);
            let agent = SiteAgent::start(name, &bed.ip, Arc::new(backend), &ca, &token).await?;
            let endpoint = json!({"url": agent.url, "timeoutSeconds": timeout_seconds});
            register_site(&ns, name, endpoint, &token, &ca.cert_pem()).await?;
            agents.push(agent);
        }
        let mut stack = OperatorStack {
            ns,
            agents,
            metrics: Arc::new(Metrics::default()),
            client,
            stop: None,
            controllers: None,
        };
        stack.start_controllers();
        for name in SITE_NAMES {
            stack
                .ns
                .wait::<CephSite>(name, "Ready", Duration::from_secs(60), |site| {
                    site.status
                        .as_ref()
                        .is_some_and(|status| conditions::is_true(&status.conditions, conditions::READY))
                })
                .await?;
        }
        Ok(stack)
    }

    /// Starts the controllers with fresh caches and connections, as a new operator process would.
    pub fn start_controllers(&mut self) {
        let (stop, stopped) = oneshot::channel::<()>();
        let connector = RemoteConnector::new(self.client.clone()).with_metrics(self.metrics.clone());
        self.controllers = Some(tokio::spawn(controller::run(
            self.client.clone(),
            controller::Settings::new(WatchScope::Namespace(self.ns.name.clone())),
            Arc::new(connector),
            self.metrics.clone(),
            async move {
                let _ = stopped.await;
            },
        )));
        self.stop = Some(stop);
    }

    /// Ends the controllers the way a killed operator ends: at once, reconciles and agent calls cut off
    /// wherever they are.
    pub async fn kill_controllers(&mut self) {
        self.stop = None;
        if let Some(task) = self.controllers.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl OperatorStack {
    /// The operator on this test binary's shared control plane and Ceph sites, with rbd-mirror running on
    /// both sites, as the RBD tests start.
    pub async fn on_rbd_mirror_sites(prefix: &str) -> Result<(OperatorStack, &'static CephSites)> {
        let plane = crate::shared_control_plane().await?;
        let sites = crate::shared_ceph_sites().await?;
        for site in [&sites.a, &sites.b] {
            site.start_rbd_mirror()?;
        }
        let stack = OperatorStack::start(plane, [&sites.a, &sites.b], prefix).await?;
        Ok((stack, sites))
    }

    /// The operator's sample of metric `name` whose labels include `labels`, as Prometheus would scrape it.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.metrics.render().lines().find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let label_set = series.strip_prefix(name)?.strip_prefix('{')?;
            labels
                .iter()
                .all(|(key, want)| label_set.contains(&format!("{key}=\"{want}\"")))
                .then(|| value.parse().ok())?
        })
    }
}

/// FailoverRequests on the bed's pools.
impl OperatorStack {
    /// Creates FailoverRequest `name` of `action` towards `target` for RbdMirrorPool `pool`.
    pub async fn request_failover(&self, name: &str, action: &str, target: &str, pool: &str) -> Result<()> {
        self.ns
            .create::<FailoverRequest>(json!({"metadata": {"name": name}, "spec": {
                "action": action, "targetSite": target, "targets": {"rbdMirrorPools": [pool]},
                "maxLagSeconds": 600}}))
            .await
            .map(drop)
    }

    /// The request once it is Completed or Failed.
    pub async fn finished(&self, name: &str) -> Result<FailoverRequest> {
        self.finished_within(name, CONVERGE).await
    }

    /// [`finished`](Self::finished), waiting up to `timeout`.
    pub async fn finished_within(&self, name: &str, timeout: Duration) -> Result<FailoverRequest> {
        self.ns
            .wait::<FailoverRequest>(name, "finished", timeout, |request| {
                request.status.as_ref().is_some_and(|s| s.phase.is_terminal())
            })
            .await
    }

    /// Requests a failover and waits until it is Completed or Failed.
    pub async fn failover(
        &self,
        name: &str,
        action: &str,
        target: &str,
        pool: &str,
    ) -> Result<FailoverRequest> {
        self.request_failover(name, action, target, pool).await?;
        self.finished(name).await
    }
}

/// Creates the `CephSite` `name` whose agent `endpoint` holds the `url` and optionally `timeoutSeconds`, with
/// the agent's token and CA in a Secret `<name>-agent`.
pub async fn register_site(
    ns: &TestNamespace,
    name: &str,
    mut endpoint: serde_json::Value,
    token: &str,
    ca_pem: &str,
) -> Result<()> {
    let secret_name = format!("{name}-agent");
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.clone()),
            ..Default::default()
        },
        data: Some(
            [
                ("token".to_string(), ByteString(token.as_bytes().to_vec())),
                ("ca.crt".to_string(), ByteString(ca_pem.as_bytes().to_vec())),
            ]
            .into(),
        ),
        ..Default::default()
    };
    ns.api::<Secret>().create(&PostParams::default(), &secret).await?;
    endpoint["tokenSecretRef"] = json!({"name": secret_name, "key": "token"});
    endpoint["caSecretRef"] = json!({"name": secret_name, "key": "ca.crt"});
    ns.create::<CephSite>(json!({"metadata": {"name": name}, "spec": {"agent": endpoint}}))
        .await?;
    Ok(())
}

impl Drop for OperatorStack {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.controllers.take() {
            task.abort();
        }
    }
}

/// The pool's condition of `type_`, when its status has one.
pub fn pool_condition<'a>(pool: &'a api::RbdMirrorPool, type_: &str) -> Option<&'a Condition> {
    conditions::find(&pool.status.as_ref()?.conditions, type_)
}

/// How long real Ceph may take to peer, copy a first snapshot or run a failover on a loaded CI machine.
pub const CONVERGE: Duration = Duration::from_secs(300);

/// Polls a blocking probe once a second until it yields a value; fails naming `what` (and the last error).
pub async fn wait_until<T>(what: &str, mut probe: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = tokio::time::Instant::now() + CONVERGE;
    let mut last_error = None;
    loop {
        match tokio::task::block_in_place(&mut probe) {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last_error = Some(error),
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("not {what} after {CONVERGE:?}; last error: {last_error:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl OperatorStack {
    /// An `RbdMirrorPool` named `name` over both sites (two-way, images primary on site A, snapshot
    /// mirroring every minute; the spec's top-level fields in `overrides` replace these), and image
    /// `pool/image` with `mib` random MiB written on A once the operator has created the pool. Returns the
    /// pool once it is Ready with the image replaying and site B holds the same bytes, and the image's
    /// checksum.
    pub async fn mirrored_image(
        &self,
        sites: [&BedSite; 2],
        name: &str,
        pool: &str,
        image: &str,
        mib: usize,
        overrides: serde_json::Value,
    ) -> Result<(api::RbdMirrorPool, String)> {
        let (mirrored, mut checksums) = self
            .mirrored_images(sites, name, pool, &[image.to_string()], mib, overrides)
            .await?;
        Ok((mirrored, checksums.remove(0)))
    }

    /// [`mirrored_image`](Self::mirrored_image) for several images of one pool; their checksums in the
    /// order of `images`.
    pub async fn mirrored_images(
        &self,
        sites: [&BedSite; 2],
        name: &str,
        pool: &str,
        images: &[String],
        mib: usize,
        overrides: serde_json::Value,
    ) -> Result<(api::RbdMirrorPool, Vec<String>)> {
        let [a, b] = sites;
        let mut spec = json!({
            "pool": pool, "mode": "image", "direction": "two-way", "deletionPolicy": "Delete",
            "sites": [{"site": SITE_NAMES[0], "role": "primary"}, {"site": SITE_NAMES[1], "role": "secondary"}],
            "images": {"mirrorMode": "snapshot", "names": images},
            "snapshotSchedules": [{"interval": "1m"}], "rpoSeconds": 600});
        if let (Some(spec), Some(overrides)) = (spec.as_object_mut(), overrides.as_object()) {
            spec.extend(overrides.clone());
        }
        self.ns
            .create::<api::RbdMirrorPool>(json!({"metadata": {"name": name}, "spec": spec}))
            .await?;
        wait_until("pool created on site A", || {
            Ok(a.pool_exists(pool)?.then_some(()))
        })
        .await?;
        let mut checksums = Vec::new();
        for image in images {
            a.import_random_image(pool, image, mib)?;
            checksums.push(a.image_checksum(&format!("{pool}/{image}"))?);
        }
        let mirrored = self
            .ns
            .wait::<api::RbdMirrorPool>(name, "Ready with every image replaying", CONVERGE, |p| {
                p.status.as_ref().is_some_and(|st| {
                    conditions::is_true(&st.conditions, conditions::READY)
                        && images.iter().all(|image| {
                            st.images
                                .iter()
                                .any(|i| &i.name == image && i.state == "replaying")
                        })
                })
            })
            .await?;
        for (image, source) in images.iter().zip(&checksums) {
            let spec = format!("{pool}/{image}");
            // The bytes first, then the replay state: idle after the bytes matched means the newest
            // complete snapshot on B holds them, which is what a forced promotion keeps.
            wait_until(&format!("{spec} identical and in sync on site B"), || {
                Ok((b.image_checksum(&spec)? == *source && b.replica_in_sync(&spec)?).then_some(()))
            })
            .await?;
        }
        Ok((mirrored, checksums))
    }
}
