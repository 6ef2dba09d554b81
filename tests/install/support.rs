//! What tests/install.rs stands on: commands and the manifests they render, the chart installed with Helm
//! and its ServiceAccount as a client, simulated Ceph sites behind HTTPS agents, and the operator run
//! in-process exactly as `cephdr operator` runs it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Debug,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, ensure, Context as _, Result};
use cephdr::{
    agent::{
        remote::RemoteConnector,
        server::{serve, AgentServer, TlsFiles, Tokens},
        sim::{SimulatedCluster, SimulatedWorld},
        ClusterAgent,
    },
    api::{conditions, CephSite, FailoverPhase, FailoverRequest, RbdMirrorPool},
    controller::{rbd_mirror_pool::token_secret_name, WatchScope, FIELD_MANAGER},
    metrics::Metrics,
    operator::{self, LeaseConfig, OperatorConfig, OperatorError},
};
use cephdr_e2e::{
    pki::Ca,
    process::{free_port, random_hex},
    unique_name, ControlPlane, TestNamespace,
};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Secret, events::v1::Event};
use kube::{
    api::{Api, DeleteParams, ListParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    core::NamespaceResourceScope,
    Client, Resource,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::oneshot,
    task::JoinHandle,
};

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn chart() -> PathBuf {
    repo().join("charts/cephdr")
}

/// Whether the command succeeded, with its stdout and stderr.
pub fn output(command: &mut Command) -> Result<(bool, String, String)> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {command:?}"))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// stdout of a command that must succeed.
pub fn run(command: &mut Command) -> Result<String> {
    cephdr_e2e::process::run(command)
}

/// The documents of a YAML stream, as JSON values.
pub fn documents(yaml: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value = Value::deserialize(document)?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Result<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .with_context(|| format!("no {kind} {name} among {:?}", names(docs)))
}

fn names(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap_or("?"),
                d["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

pub fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .filter_map(|d| d["kind"].as_str().map(String::from))
        .collect()
}

/// A Role's or ClusterRole's rules, each with its lists sorted, comparable whatever order they were written in.
pub fn rules(object: &Value) -> BTreeSet<String> {
    let sorted = |list: &Value| {
        let mut items: Vec<String> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        items.sort();
        items
    };
    object["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|rule| {
            json!({
                "apiGroups": sorted(&rule["apiGroups"]),
                "resources": sorted(&rule["resources"]),
                "resourceNames": sorted(&rule["resourceNames"]),
                "verbs": sorted(&rule["verbs"]),
            })
            .to_string()
        })
        .collect()
}

pub fn json_of(object: impl Serialize) -> Result<Value> {
    Ok(serde_json::to_value(object)?)
}

pub fn api_in<K>(client: &Client, namespace: &str) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    Api::namespaced(client.clone(), namespace)
}

/// `helm template t charts/cephdr` into `namespace` with `--set` values.
pub fn helm_template(plane: &ControlPlane, namespace: &str, values: &[&str]) -> Result<Vec<Value>> {
    let mut helm = plane.helm();
    helm.args(["template", "t"])
        .arg(chart())
        .args(["--namespace", namespace]);
    for value in values {
        helm.arg(format!("--set={value}"));
    }
    documents(&run(&mut helm)?)
}

pub fn kubectl_kustomize(plane: &ControlPlane, dir: &Path) -> Result<Vec<Value>> {
    documents(&run(plane.kubectl().arg("kustomize").arg(dir))?)
}

/// A kustomization of `dir` into namespace `ns` with names suffixed `-<ns>`, as a user puts a base where
/// they want it; kustomize wants the base as a path relative to the wrapper.
pub fn wrapper_kustomization(plane: &ControlPlane, ns: &str, dir: &Path) -> Result<PathBuf> {
    let wrapper = plane.dir.join(format!("kustomize-{ns}"));
    std::fs::create_dir_all(&wrapper)?;
    let up = "../".repeat(wrapper.components().count() - 1);
    let base = format!("{up}{}", dir.strip_prefix("/")?.display());
    let kustomization = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": ns,
        "nameSuffix": format!("-{ns}"),
        "resources": [base],
    });
    std::fs::write(
        wrapper.join("kustomization.yaml"),
        serde_yaml::to_string(&kustomization)?,
    )?;
    Ok(wrapper)
}

/// The operator's Deployment is hardened: non-root, read-only root, no capabilities, RuntimeDefault seccomp,
/// resources, probes on the operations endpoints, and the pod's identity for leader election.
pub fn assert_hardened(deployment: &Value) -> Result<()> {
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let checks = [
        (&pod["securityContext"]["runAsNonRoot"], json!(true)),
        (
            &pod["securityContext"]["seccompProfile"]["type"],
            json!("RuntimeDefault"),
        ),
        (
            &container["securityContext"]["readOnlyRootFilesystem"],
            json!(true),
        ),
        (
            &container["securityContext"]["allowPrivilegeEscalation"],
            json!(false),
        ),
        (&container["securityContext"]["privileged"], json!(false)),
        (
            &container["securityContext"]["capabilities"]["drop"],
            json!(["ALL"]),
        ),
        (&container["livenessProbe"]["httpGet"]["path"], json!("/healthz")),
        (&container["readinessProbe"]["httpGet"]["path"], json!("/readyz")),
        (&container["args"][0], json!("operator")),
    ];
    for (have, want) in checks {
        ensure!(*have == want, "expected {want} in {container:#}\n{pod:#}");
    }
    ensure!(
        pod["securityContext"]["runAsUser"].as_i64().unwrap_or(0) > 0,
        "runs as root: {pod:#}"
    );
    for key in ["cpu", "memory"] {
        ensure!(
            container["resources"]["requests"][key].is_string(),
            "no {key} request"
        );
    }
    ensure!(
        container["resources"]["limits"]["memory"].is_string(),
        "no memory limit"
    );
    let env = container["env"].as_array().context("env")?;
    for (name, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        ensure!(
            env.iter()
                .any(|e| e["name"] == name && e["valueFrom"]["fieldRef"]["fieldPath"] == field),
            "{name} is not the pod's {field}"
        );
    }
    ensure!(pod["serviceAccountName"].is_string());
    Ok(())
}

/// The API server answered 403 Forbidden.
pub fn assert_forbidden<T: Debug>(what: &str, result: Result<T, kube::Error>) -> Result<()> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(()),
        other => bail!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

/// Every sample name the operator exports, with its label names: each family with one sample.
pub fn exported_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let metrics = Metrics::default();
    drop(metrics.reconcile_started("cephzone"));
    metrics.reconcile_failed("cephzone", "AgentUnreachable");
    metrics.agent_request("site-a", "cluster-info", "ok", 0.01);
    metrics.set_image_lag("site-b", "rbd", "db", 30.0);
    metrics.set_image_replaying("site-b", "rbd", "db", true);
    metrics.set_rbd_pool_rpo("site-b", "rbd", 300);
    metrics.set_rbd_mirror_daemon_up("site-b", "rbd", true);
    metrics.set_rgw_sync("eu-b", 2, 40.0);
    metrics.set_rgw_zone("eu-b", Some(300), false);
    metrics.failover_finished("planned", "completed", 12.0);
    let mut exported: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in metrics.render().lines().filter(|l| !l.starts_with('#')) {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = line[end..]
            .strip_prefix('{')
            .and_then(|rest| rest.split_once('}'))
            .map(|(labels, _)| labels)
            .unwrap_or_default();
        exported.entry(line[..end].to_string()).or_default().extend(
            labels
                .split(',')
                .filter_map(|pair| pair.split_once('=').map(|(name, _)| name.to_string())),
        );
    }
    exported
}

/// The `cephdr_*` metric names a PromQL expression reads.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    identifiers_after(expr, "cephdr_")
        .into_iter()
        .map(|rest| format!("cephdr_{rest}"))
        .collect()
}

/// The labels an alert's annotation shows with `$labels.<name>`.
pub fn template_labels(text: &str) -> BTreeSet<String> {
    identifiers_after(text, "$labels.")
}

fn identifiers_after(text: &str, prefix: &str) -> BTreeSet<String> {
    text.match_indices(prefix)
        .filter(|(at, _)| {
            !text[..*at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(|(at, _)| {
            text[at + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// A release of the chart, installed with `helm install` into a namespace of its own.
pub struct Install {
    pub release: String,
    pub namespace: TestNamespace,
    pub service_account: String,
    /// The leader Lease, as the Deployment passes it (`--lease-name`).
    pub lease: String,
}

pub async fn helm_install(plane: &ControlPlane, prefix: &str, values: &[&str]) -> Result<Install> {
    let namespace = TestNamespace::new(plane.client().await?, prefix).await?;
    // The namespace name is unique and contains the chart's name, so it is the release's full name too.
    let release = namespace.name.clone();
    let mut helm = plane.helm();
    helm.args(["install", &release])
        .arg(chart())
        .args(["--namespace", &namespace.name]);
    for value in values {
        helm.arg(format!("--set={value}"));
    }
    run(&mut helm)?;
    let deployment = namespace.api::<Deployment>().get(&release).await?;
    let pod = deployment
        .spec
        .and_then(|s| s.template.spec)
        .context("Deployment without a pod spec")?;
    let service_account = pod.service_account_name.context("no serviceAccountName")?;
    let lease = pod.containers[0]
        .args
        .iter()
        .flatten()
        .find_map(|a| a.strip_prefix("--lease-name=").map(String::from))
        .context("no --lease-name")?;
    Ok(Install {
        release,
        namespace,
        service_account,
        lease,
    })
}

impl Install {
    /// A client authenticated as the chart's ServiceAccount: a token from the TokenRequest API
    /// (`kubectl create token`) in a kubeconfig of the control plane's server and CA.
    pub async fn service_account_client(&self, plane: &ControlPlane) -> Result<Client> {
        let token = run(plane.kubectl().args([
            "create",
            "token",
            &self.service_account,
            "--namespace",
            &self.namespace.name,
            "--duration=1h",
        ]))?;
        let ca = plane.dir.join(format!("ca-{}.crt", self.release));
        std::fs::write(&ca, &plane.ca_pem)?;
        let kubeconfig = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "bed", "cluster": {"server": plane.server, "certificate-authority": ca}}],
            "users": [{"name": self.service_account, "user": {"token": token.trim()}}],
            "contexts": [{"name": "operator", "context": {"cluster": "bed", "user": self.service_account}}],
            "current-context": "operator",
        });
        let kubeconfig = Kubeconfig::from_yaml(&serde_yaml::to_string(&kubeconfig)?)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }
}

/// Two simulated Ceph clusters, each behind a `cephdr agent` API on loopback (HTTPS, bearer token, CA of
/// its own), registered as `CephSite`s site-a and site-b with their tokens and CA in Secrets.
pub struct SimulatedSites {
    pub a: Arc<SimulatedCluster>,
    pub b: Arc<SimulatedCluster>,
    _world: SimulatedWorld,
    _servers: Vec<AgentServer>,
}

impl SimulatedSites {
    pub async fn start(plane: &ControlPlane, ns: &TestNamespace) -> Result<SimulatedSites> {
        let world = SimulatedWorld::new();
        world.set_lag(Duration::from_millis(100));
        let ca = Ca::new("cephdr agents")?;
        let dir = plane.dir.join(unique_name("agents"));
        std::fs::create_dir_all(&dir)?;
        let mut clusters = Vec::new();
        let mut servers = Vec::new();
        for site in ["site-a", "site-b"] {
            let cluster = world.add_site(site);
            let token = random_hex(32)?;
            let serving = ca.server(site, &["127.0.0.1"], &[])?;
            let tls = TlsFiles {
                cert: dir.join(format!("{site}.crt")),
                key: dir.join(format!("{site}.key")),
            };
            let tokens = dir.join(format!("{site}.tokens"));
            for (path, content) in [
                (&tls.cert, &serving.cert_pem),
                (&tls.key, &serving.key_pem),
                (&tokens, &token),
            ] {
                write_private(path, content)?;
            }
            let server = serve(
                cluster.clone() as Arc<dyn ClusterAgent>,
                "127.0.0.1:0".parse()?,
                tls,
                Tokens::load(&tokens)?,
            )
            .await?;
            let secret: Secret = serde_json::from_value(json!({
                "metadata": {"name": format!("{site}-agent")},
                "stringData": {"token": token, "ca.crt": ca.cert_pem()},
            }))?;
            ns.api::<Secret>().create(&PostParams::default(), &secret).await?;
            ns.create::<CephSite>(json!({"metadata": {"name": site}, "spec": {"agent": {
                "url": format!("https://127.0.0.1:{}", server.local_addr().port()),
                "tokenSecretRef": {"name": format!("{site}-agent"), "key": "token"},
                "caSecretRef": {"name": format!("{site}-agent"), "key": "ca.crt"}}}}))
                .await?;
            clusters.push(cluster);
            servers.push(server);
        }
        let b = clusters.pop().context("site-b")?;
        let a = clusters.pop().context("site-a")?;
        Ok(SimulatedSites {
            a,
            b,
            _world: world,
            _servers: servers,
        })
    }
}

fn write_private(path: &Path, content: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    std::io::Write::write_all(&mut file, content.as_bytes())?;
    Ok(())
}

/// `cephdr operator` in-process: operations endpoints, leader election on the chart's Lease, the controllers
/// reaching agents through `RemoteConnector`, all with `client`'s credentials.
pub struct OperatorRun {
    pub identity: String,
    port: u16,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), OperatorError>>,
}

impl OperatorRun {
    pub async fn start(client: Client, watch: Option<String>, install: &Install) -> Result<OperatorRun> {
        let identity = unique_name("operator");
        let port = free_port("127.0.0.1")?;
        let config = OperatorConfig {
            listen: format!("127.0.0.1:{port}").parse()?,
            controllers: cephdr::controller::Settings::new(
                watch.map_or(WatchScope::AllNamespaces, WatchScope::Namespace),
            ),
            lease: Some(LeaseConfig {
                namespace: install.namespace.name.clone(),
                name: install.lease.clone(),
                identity: identity.clone(),
                duration_seconds: 15,
            }),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let connector = Arc::new(RemoteConnector::new(client.clone()));
        let task = tokio::spawn(operator::run(client, connector, config, async move {
            let _ = stopped.await;
        }));
        Ok(OperatorRun {
            identity,
            port,
            stop,
            task,
        })
    }

    /// `GET /metrics`.
    pub async fn scrape(&self) -> Result<String> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: operator\r\n\r\n")
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        ensure!(
            response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
            "{response}"
        );
        Ok(response)
    }

    /// Stops the operator as SIGTERM does; fails if it had stopped by itself (lost its Lease, say).
    pub async fn stop(self) -> Result<()> {
        ensure!(
            !self.task.is_finished(),
            "the operator stopped early: {:?}",
            self.task.await
        );
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task).await???;
        Ok(())
    }
}

/// Held by each test that runs an operator: one watching every namespace would also reconcile the resources
/// of a test running beside it.
pub async fn one_operator_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static OPERATORS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    OPERATORS.lock().await
}

/// Deletes what `converge_pool_and_fail_over` created while the operator still runs, so it releases its
/// finalizer (deletionPolicy Retain: Ceph is left as it is) and no later operator finds them.
pub async fn delete_resources(ns: &TestNamespace) -> Result<()> {
    let delete = DeleteParams::default();
    ns.api::<FailoverRequest>().delete("move-to-b", &delete).await?;
    ns.api::<RbdMirrorPool>().delete("rbd", &delete).await?;
    ns.wait_gone::<RbdMirrorPool>("rbd", Duration::from_secs(60))
        .await?;
    for site in ["site-a", "site-b"] {
        ns.api::<CephSite>().delete(site, &delete).await?;
        ns.wait_gone::<CephSite>(site, Duration::from_secs(30)).await?;
    }
    Ok(())
}

fn ready(conds: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> bool {
    conditions::is_true(conds, conditions::READY)
}

/// The sites become Ready; an RbdMirrorPool mirrors image db from site-a to site-b (the operator creates the
/// pool, peers the sites with a bootstrap token it keeps in a Secret it owns, enables mirroring); then a
/// planned FailoverRequest moves the image's primary to site-b, with Events on the way.
pub async fn converge_pool_and_fail_over(ns: &TestNamespace, sites: &SimulatedSites) -> Result<()> {
    for site in ["site-a", "site-b"] {
        ns.wait::<CephSite>(site, "Ready", Duration::from_secs(60), |s| {
            s.status.as_ref().is_some_and(|st| ready(&st.conditions))
        })
        .await?;
    }
    sites.a.set_rbd_mirror_running(true)?;
    sites.b.set_rbd_mirror_running(true)?;
    ns.create::<RbdMirrorPool>(json!({"metadata": {"name": "rbd"}, "spec": {
        "pool": "rbd", "mode": "image", "direction": "two-way", "deletionPolicy": "Retain",
        "sites": [{"site": "site-a", "role": "primary"}, {"site": "site-b", "role": "secondary"}],
        "images": {"mirrorMode": "snapshot", "names": ["db"]},
        "snapshotSchedules": [{"interval": "1m"}], "rpoSeconds": 300}}))
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !sites.a.rbd_pool("rbd").await?.exists {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the operator never created pool rbd on site-a"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sites.a.create_image("rbd", "db")?;
    let pool = ns
        .wait::<RbdMirrorPool>("rbd", "Ready and replaying", Duration::from_secs(60), |p| {
            p.status.as_ref().is_some_and(|st| {
                ready(&st.conditions) && st.images.iter().any(|i| i.name == "db" && i.state == "replaying")
            })
        })
        .await?;
    let tokens = ns.api::<Secret>().get(&token_secret_name(&pool)).await?;
    ensure!(
        tokens
            .metadata
            .owner_references
            .unwrap_or_default()
            .iter()
            .any(|o| o.kind == "RbdMirrorPool"),
        "the bootstrap-token Secret is not owned by its pool"
    );

    ns.create::<FailoverRequest>(json!({"metadata": {"name": "move-to-b"}, "spec": {
        "action": "planned", "targetSite": "site-b", "targets": {"rbdMirrorPools": ["rbd"]}, "maxLagSeconds": 120}}))
        .await?;
    ns.wait::<FailoverRequest>("move-to-b", "Completed", Duration::from_secs(120), |r| {
        r.status
            .as_ref()
            .is_some_and(|st| st.phase == FailoverPhase::Completed)
    })
    .await?;
    let on_b = sites.b.rbd_pool("rbd").await?;
    ensure!(
        on_b.images
            .iter()
            .any(|i| i.name == "db" && i.mirroring.as_ref().is_some_and(|m| m.primary)),
        "db is not primary on site-b: {on_b:?}"
    );
    let events = ns.api::<Event>().list(&ListParams::default()).await?;
    let reasons: BTreeSet<_> = events
        .items
        .iter()
        .filter(|e| e.reporting_controller.as_deref() == Some(FIELD_MANAGER))
        .filter_map(|e| e.reason.clone())
        .collect();
    ensure!(
        reasons.contains("FailoverStarted") && reasons.contains("FailoverCompleted"),
        "the operator's Events: {reasons:?}"
    );
    Ok(())
}
