use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use cephdr::{
    agent::{
        ceph::CephCli,
        remote::RemoteConnector,
        server::{self, TlsFiles, Tokens},
    },
    controller::WatchScope,
    operator::{self, LeaseConfig, OperatorConfig},
};
use clap::{Parser, Subcommand, ValueEnum};
use tracing::info;

/// cephdr: Ceph multisite disaster recovery as Kubernetes resources.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "CEPHDR_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: the controllers for every cephdr kind, behind a leader lease.
    Operator {
        /// Address of /metrics, /healthz and /readyz.
        #[arg(long, default_value = "0.0.0.0:8080", env = "CEPHDR_LISTEN")]
        listen: SocketAddr,
        /// Watch only this namespace (needs only namespaced RBAC); default: all namespaces.
        #[arg(long, env = "CEPHDR_WATCH_NAMESPACE")]
        namespace: Option<String>,
        /// Hold a Lease before running controllers, so several replicas are safe.
        #[arg(long, env = "CEPHDR_LEADER_ELECTION")]
        leader_election: bool,
        /// Namespace of the leader Lease (default: the pod's namespace).
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        lease_namespace: String,
        #[arg(long, default_value = "cephdr-operator")]
        lease_name: String,
        /// This replica's identity in the Lease (default: the pod name).
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
    },
    /// Run the agent of one Ceph cluster: serves the cluster-agent API over HTTPS with bearer tokens.
    Agent {
        /// This site's name (as its CephSite is named), used in errors and metrics.
        #[arg(long, env = "CEPHDR_SITE")]
        site: String,
        #[arg(long, default_value = "0.0.0.0:7443", env = "CEPHDR_AGENT_LISTEN")]
        listen: SocketAddr,
        /// PEM certificate chain the agent serves.
        #[arg(long, env = "CEPHDR_TLS_CERT")]
        tls_cert: PathBuf,
        #[arg(long, env = "CEPHDR_TLS_KEY")]
        tls_key: PathBuf,
        /// File with the accepted bearer tokens, one per line (re-read when it changes).
        #[arg(long, env = "CEPHDR_TOKEN_FILE")]
        token_file: PathBuf,
        /// Ceph configuration of the local cluster.
        #[arg(long, env = "CEPH_CONF")]
        ceph_conf: Option<PathBuf>,
        /// Ceph client id to run the CLIs as (client.<id>).
        #[arg(long, env = "CEPHDR_CEPH_ID")]
        ceph_id: Option<String>,
        #[arg(long, env = "CEPHDR_CEPH_KEYRING")]
        keyring: Option<PathBuf>,
        /// Timeout of one Ceph command, in seconds.
        #[arg(long, default_value_t = 120)]
        command_timeout: u64,
    },
    /// Write the CustomResourceDefinitions as YAML, one file per kind.
    Crds {
        /// Directory to write `<plural>.cephdr.io.yaml` files into; `-` prints one multi-document stream.
        #[arg(long, default_value = "crds")]
        out: String,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Operator {
            listen,
            namespace,
            leader_election,
            lease_namespace,
            lease_name,
            identity,
        } => {
            let client = kube::Client::try_default()
                .await
                .context("connect to the Kubernetes API")?;
            let identity = identity
                .unwrap_or_else(|| hostname().unwrap_or_else(|| format!("cephdr-{}", std::process::id())));
            let config = OperatorConfig {
                listen,
                scope: namespace.map_or(WatchScope::AllNamespaces, WatchScope::Namespace),
                lease: leader_election.then_some(LeaseConfig {
                    namespace: lease_namespace,
                    name: lease_name,
                    identity,
                    duration_seconds: 15,
                }),
            };
            let connector = Arc::new(RemoteConnector::new(client.clone()));
            operator::run(client, connector, config, shutdown_signal()).await?;
        }
        Command::Agent {
            site,
            listen,
            tls_cert,
            tls_key,
            token_file,
            ceph_conf,
            ceph_id,
            keyring,
            command_timeout,
        } => {
            let mut cli = CephCli::new(&site).with_timeout(Duration::from_secs(command_timeout));
            if let Some(conf) = ceph_conf {
                cli = cli.with_conf(conf);
            }
            if let Some(id) = ceph_id {
                cli = cli.with_client_id(id);
            }
            if let Some(keyring) = keyring {
                cli = cli.with_keyring(keyring);
            }
            let tokens = Tokens::load(&token_file)?;
            let running = server::serve(
                Arc::new(cli),
                listen,
                TlsFiles {
                    cert: tls_cert,
                    key: tls_key,
                },
                tokens,
            )
            .await?;
            info!(site, addr = %running.local_addr(), "agent serving");
            shutdown_signal().await;
            running.shutdown().await;
        }
        Command::Crds { out } => write_crds(&out)?,
    }
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => info!("interrupted: shutting down"),
    }
}

fn write_crds(out: &str) -> Result<()> {
    let crds = cephdr::api::crds();
    if out == "-" {
        for crd in &crds {
            print!("---\n{}", serde_yaml::to_string(crd)?);
        }
        return Ok(());
    }
    let dir = PathBuf::from(out);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    for crd in &crds {
        let name = crd
            .metadata
            .name
            .as_deref()
            .context("generated CRD has no name")?;
        let path = dir.join(format!("{name}.yaml"));
        let header = "# Generated by `cephdr crds` from src/api; do not edit.\n";
        std::fs::write(&path, format!("{header}{}", serde_yaml::to_string(crd)?))
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
