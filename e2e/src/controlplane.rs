//! etcd + kube-apiserver built from Go modules (see `e2e/controlplane/`), on loopback ports of our own.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::{
    pki::Ca,
    process::{self, free_port, random_hex, scratch_dir, tail, wait_for, Daemon},
};

/// A running control plane. Dropping it stops etcd and kube-apiserver.
pub struct ControlPlane {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub server: String,
    pub bin: PathBuf,
    pub ca_pem: String,
    // Field order is drop order: the apiserver goes before its etcd.
    apiserver: Daemon,
    etcd: Daemon,
}

/// The directory holding kube-apiserver, etcd, kubectl and helm: `$CEPHDR_TESTBED_BIN`, or what
/// `e2e/controlplane/build.sh` builds (cached, so only the first call on a machine is slow).
pub fn binaries() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("CEPHDR_TESTBED_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("controlplane/build.sh");
    let out = process::run(Command::new("bash").arg(&script)).with_context(|| {
        "the test bed needs kube-apiserver, etcd, kubectl and helm built from Go modules; \
         install Go >= 1.26 and run e2e/controlplane/build.sh (or `make testbed`)"
    })?;
    Ok(PathBuf::from(out.trim()))
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver and waits until `/readyz` answers ok. Blocking.
    pub fn start() -> Result<ControlPlane> {
        let bin = binaries()?;
        for tool in ["etcd", "kube-apiserver"] {
            if !bin.join(tool).is_file() {
                bail!(
                    "{} is missing: run e2e/controlplane/build.sh",
                    bin.join(tool).display()
                );
            }
        }
        // etcd fsyncs cost nothing on tmpfs; fall back to /tmp where /dev/shm is absent.
        let parent = if Path::new("/dev/shm").is_dir() {
            Path::new("/dev/shm")
        } else {
            Path::new("/tmp")
        };
        let dir = scratch_dir(parent, "kube")?;
        let pki = dir.join("pki");
        fs::create_dir_all(&pki)?;

        let ca = Ca::new("cephdr-testbed-ca")?;
        let serving = ca.server(
            "kube-apiserver",
            &["127.0.0.1", "10.0.0.1"],
            &[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
            ],
        )?;
        let admin = ca.client("cephdr-admin", Some("system:masters"))?;
        let sa_key = rcgen::KeyPair::generate()?;
        let token = random_hex(24)?;
        let write = |name: &str, contents: &str| fs::write(pki.join(name), contents);
        write("ca.crt", &ca.cert_pem())?;
        write("apiserver.crt", &serving.cert_pem)?;
        write("apiserver.key", &serving.key_pem)?;
        write("sa.key", &sa_key.serialize_pem())?;
        write("sa.pub", &sa_key.public_key_pem())?;
        write(
            "tokens.csv",
            &format!("{token},cephdr-admin,cephdr-admin,system:masters\n"),
        )?;

        let (etcd_port, peer_port, api_port) = (
            free_port("127.0.0.1")?,
            free_port("127.0.0.1")?,
            free_port("127.0.0.1")?,
        );
        let etcd_log = dir.join("etcd.log");
        let mut etcd_cmd = Command::new(bin.join("etcd"));
        etcd_cmd.args([
            "--name=testbed".to_string(),
            format!("--data-dir={}", dir.join("etcd").display()),
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
            format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-cluster=testbed=http://127.0.0.1:{peer_port}"),
            "--listen-metrics-urls=".into(),
        ]);
        let etcd = Daemon::start("etcd", etcd_cmd, &etcd_log)?;
        wait_for(
            "etcd /health",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                etcd.ensure_running(&etcd_log)?;
                Ok(http_get_ok("127.0.0.1", etcd_port, "/health").then_some(()))
            },
        )?;

        let api_log = dir.join("apiserver.log");
        let p = |name: &str| pki.join(name).display().to_string();
        let mut api_cmd = Command::new(bin.join("kube-apiserver"));
        api_cmd.args([
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", pki.display()),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--token-auth-file={}", p("tokens.csv")),
            "--authorization-mode=Node,RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            // Without kube-controller-manager no namespace gets a `default` ServiceAccount (envtest's choice).
            "--disable-admission-plugins=ServiceAccount".into(),
            "--profiling=false".into(),
            "--v=1".into(),
        ]);
        let apiserver = Daemon::start("kube-apiserver", api_cmd, &api_log)?;

        let server = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = dir.join("kubeconfig");
        fs::write(
            &kubeconfig,
            kubeconfig_yaml(&server, &ca.cert_pem(), &token, &admin.cert_pem, &admin.key_pem),
        )?;
        let plane = ControlPlane {
            dir,
            kubeconfig,
            server,
            bin,
            ca_pem: ca.cert_pem(),
            apiserver,
            etcd,
        };
        let kubeconfig = plane.kubeconfig.clone();
        wait_for(
            "kube-apiserver /readyz",
            Duration::from_secs(120),
            Duration::from_millis(250),
            || {
                plane.apiserver.ensure_running(&api_log)?;
                block_on_fresh_runtime(readyz(kubeconfig.clone()))
            },
        )
        .with_context(|| format!("apiserver log:\n{}", tail(&api_log, 15)))?;
        Ok(plane)
    }

    /// A kube client authenticated as cluster admin.
    pub async fn client(&self) -> Result<kube::Client> {
        client_from(&self.kubeconfig).await
    }

    /// `kubectl` pointed at this control plane.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("kubectl"));
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// `helm` pointed at this control plane, with its caches inside the bed's directory.
    pub fn helm(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("helm"));
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", self.dir.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.dir.join("helm/config"))
            .env("HELM_DATA_HOME", self.dir.join("helm/data"));
        cmd
    }

    pub fn pids(&self) -> [u32; 2] {
        [self.etcd.pid, self.apiserver.pid]
    }
}

async fn client_from(kubeconfig: &Path) -> Result<kube::Client> {
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig)?,
        &KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

async fn readyz(kubeconfig: PathBuf) -> Result<Option<()>> {
    let client = client_from(&kubeconfig).await?;
    let request = http::Request::get("/readyz").body(Vec::new())?;
    let body = client.request_text(request).await?;
    Ok((body.trim() == "ok").then_some(()))
}

/// Runs a future to completion on a runtime of its own in a thread of its own, so blocking start-up code
/// works whether or not the caller is inside a tokio runtime.
pub(crate) fn block_on_fresh_runtime<T: Send + 'static>(
    future: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(future)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("readiness probe panicked"))?
}

fn http_get_ok(host: &str, port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect((host, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200")
}

fn kubeconfig_yaml(server: &str, ca_pem: &str, token: &str, cert_pem: &str, key_pem: &str) -> String {
    use base64::{engine::general_purpose::STANDARD, Engine};
    let encode = |s: &str| STANDARD.encode(s);
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testbed", "cluster": {"server": server, "certificate-authority-data": encode(ca_pem)}}],
        "users": [
            {"name": "admin-token", "user": {"token": token}},
            {"name": "admin-cert", "user": {"client-certificate-data": encode(cert_pem), "client-key-data": encode(key_pem)}}
        ],
        "contexts": [
            {"name": "testbed", "context": {"cluster": "testbed", "user": "admin-token", "namespace": "default"}},
            {"name": "testbed-cert", "context": {"cluster": "testbed", "user": "admin-cert", "namespace": "default"}}
        ],
        "current-context": "testbed"
    });
    serde_yaml::to_string(&doc).expect("a JSON value always serialises to YAML")
}

/// Server-side applies CRDs and waits until the API server serves them.
pub async fn install_crds(
    client: &kube::Client,
    crds: &[k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition],
) -> Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::{
        api::{Api, Patch, PatchParams},
        runtime::{conditions, wait::await_condition},
    };
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        api.patch(
            &name,
            &PatchParams::apply("cephdr-testbed").force(),
            &Patch::Apply(crd),
        )
        .await
        .with_context(|| format!("install CRD {name}"))?;
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .with_context(|| format!("CRD {name} not established after 30 s"))??;
    }
    Ok(())
}
