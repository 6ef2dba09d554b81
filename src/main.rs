use std::{ffi::OsStr, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{bail, Context, Result};
use cephdr::{
    agent::{
        backup::BackupStoreAgent,
        ceph::CephCli,
        remote::RemoteConnector,
        server::{self, TlsFiles, Tokens},
        ClusterAgent, Sensitive,
    },
    cli::{self, failover::FailoverArgs, status::StatusArgs},
    controller::{self, WatchScope},
    operator::{self, LeaseConfig, OperatorConfig},
    sync::{
        frame::{ChecksumKind, FrameOptions},
        rbd::RbdCli,
        sidecar::{backup_store, Destination, Receiver, Sender},
        store::offsite::{Offsite, S3Location},
        transport::SyncListener,
    },
};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
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
        /// Reconciles in flight per kind of resource (at least 1). More is not faster when the API server
        /// is what is busy; a resource whose site's agent times out holds one for that timeout.
        #[arg(long, env = "CEPHDR_CONCURRENCY", default_value_t = controller::Settings::DEFAULT_CONCURRENCY,
              value_parser = clap::value_parser!(u16).range(1..))]
        concurrency: u16,
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
        /// Serve a backup store instead of a Ceph cluster: the directory a `cephdr sync serve
        /// --backup-dir` receiver fills. Its CephSite can then be the copy site of delta-sync pools.
        #[arg(long, conflicts_with_all = ["ceph_conf", "ceph_id", "keyring"])]
        backup_dir: Option<PathBuf>,
    },
    /// The delta-sync sidecar: ships RBD snapshot deltas over one TLS port, or keeps them as backups.
    Sync {
        #[command(subcommand)]
        command: SyncCommand,
    },
    /// Write the CustomResourceDefinitions as YAML, one file per kind.
    Crds {
        /// Directory to write `<plural>.cephdr.io.yaml` files into; `-` prints one multi-document stream.
        #[arg(long, default_value = "crds")]
        out: String,
        /// Also write the Markdown resource reference, rendered from the CRDs' schemas, to this file.
        #[arg(long)]
        reference: Option<PathBuf>,
    },
    /// Sites, realms, zones, pools, images and running failovers, as their statuses report them.
    Status(StatusArgs),
    /// Plan, start and follow FailoverRequests.
    Failover(FailoverArgs),
}

#[derive(Subcommand)]
enum SyncCommand {
    /// Receive transfers on one TLS port; apply them to this cluster's images or keep them as backups.
    Serve {
        #[arg(long, default_value = "0.0.0.0:7444", env = "CEPHDR_SYNC_LISTEN")]
        listen: SocketAddr,
        /// PEM certificate chain the receiver serves.
        #[arg(long, env = "CEPHDR_TLS_CERT")]
        tls_cert: PathBuf,
        #[arg(long, env = "CEPHDR_TLS_KEY")]
        tls_key: PathBuf,
        /// File with the accepted sender tokens, one per line (re-read when it changes).
        #[arg(long, env = "CEPHDR_TOKEN_FILE")]
        token_file: PathBuf,
        /// Apply transfers to the images of the same name in this pool (repeat for several pools).
        #[arg(long = "pool", required_unless_present = "backup_dir")]
        pools: Vec<String>,
        /// Keep transfers as backups under this directory (`<dir>/<pool>/<image>`) instead.
        #[arg(long, conflicts_with = "pools")]
        backup_dir: Option<PathBuf>,
        /// With --backup-dir: copy the backups to this S3 bucket too.
        #[command(flatten)]
        s3: S3Args,
        /// How often every backup is checked against the bucket (each is also copied right after its
        /// transfer).
        #[arg(long, default_value_t = 30)]
        offsite_interval_seconds: u64,
        /// Checkpoints of transfers into images.
        #[arg(long, default_value = "/var/lib/cephdr/sync", env = "CEPHDR_SYNC_STATE")]
        state_dir: PathBuf,
        /// Make applied data durable and checkpoint it every this many MiB.
        #[arg(long, default_value_t = 64)]
        commit_every_mib: u64,
        #[command(flatten)]
        ceph: CephArgs,
    },
    /// Ship the delta of one image between two snapshots to a receiver; resumes until it is applied.
    Send {
        /// `host:port` of the receiver.
        #[arg(long)]
        peer: String,
        /// Name the receiver's certificate must carry (default: the host of --peer).
        #[arg(long)]
        server_name: Option<String>,
        /// PEM CA bundle to check the receiver with (default: the system's roots).
        #[arg(long, env = "CEPHDR_SYNC_CA")]
        ca: Option<PathBuf>,
        /// File holding the token to present.
        #[arg(long, env = "CEPHDR_SYNC_TOKEN_FILE")]
        token_file: PathBuf,
        /// `pool/image`.
        #[arg(long)]
        image: String,
        /// Snapshot the receiver holds already (none: send the whole image).
        #[arg(long)]
        from_snap: Option<String>,
        #[arg(long)]
        to_snap: String,
        #[arg(long, value_enum, default_value_t = Checksum::Crc32c)]
        checksum: Checksum,
        /// zstd level for chunks (none: no compression).
        #[arg(long)]
        zstd: Option<i32>,
        /// Average bytes per second on the wire (none: no limit).
        #[arg(long)]
        bytes_per_second: Option<u64>,
        #[arg(long, default_value_t = 4)]
        chunk_mib: u32,
        #[arg(long, default_value_t = 5)]
        attempts: u32,
        #[command(flatten)]
        ceph: CephArgs,
    },
    /// Write the raw image of one backed-up snapshot to a file, from a backup directory or its S3 copy.
    Restore {
        #[arg(long, required_unless_present = "s3_bucket", conflicts_with = "s3_bucket")]
        backup_dir: Option<PathBuf>,
        #[command(flatten)]
        s3: S3Args,
        /// `pool/image`.
        #[arg(long)]
        image: String,
        #[arg(long)]
        snap: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Keep only the newest backups of an image.
    Retain {
        #[arg(long)]
        backup_dir: PathBuf,
        /// `pool/image`.
        #[arg(long)]
        image: String,
        #[arg(long)]
        keep: usize,
    },
}

/// An S3 bucket holding an offsite copy of backup stores. The keys come from `AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY` (in a pod, from a Secret), never from flags.
#[derive(clap::Args)]
struct S3Args {
    /// S3 endpoint URL, e.g. `https://s3.example.com`; requests are path-style.
    #[arg(long, env = "CEPHDR_S3_ENDPOINT", requires = "s3_bucket")]
    s3_endpoint: Option<String>,
    #[arg(long, env = "CEPHDR_S3_BUCKET", requires = "s3_endpoint")]
    s3_bucket: Option<String>,
    /// Key prefix inside the bucket.
    #[arg(long, env = "CEPHDR_S3_PREFIX", default_value = "")]
    s3_prefix: String,
    #[arg(long, env = "CEPHDR_S3_REGION", default_value = "us-east-1")]
    s3_region: String,
}

impl S3Args {
    fn offsite(self) -> Result<Option<Offsite>> {
        let (Some(endpoint), Some(bucket)) = (self.s3_endpoint, self.s3_bucket) else {
            return Ok(None);
        };
        let key = |name: &str| {
            std::env::var(name)
                .map(Sensitive)
                .with_context(|| format!("an S3 bucket needs its key in the environment variable {name}"))
        };
        let location = S3Location {
            endpoint,
            region: self.s3_region,
            bucket,
            prefix: self.s3_prefix,
        };
        let offsite = Offsite::new(
            location,
            &key("AWS_ACCESS_KEY_ID")?,
            &key("AWS_SECRET_ACCESS_KEY")?,
        )?;
        Ok(Some(offsite))
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Checksum {
    Crc32c,
    Blake3,
}

/// How the sync sidecar runs `rbd`.
#[derive(clap::Args)]
struct CephArgs {
    #[arg(long, env = "CEPH_CONF")]
    ceph_conf: Option<PathBuf>,
    #[arg(long, env = "CEPHDR_CEPH_ID")]
    ceph_id: Option<String>,
    #[arg(long, env = "CEPHDR_CEPH_KEYRING")]
    keyring: Option<PathBuf>,
    /// I/Os each `rbd` keeps in flight (Ceph's default: 10).
    #[arg(long)]
    concurrency: Option<u32>,
}

impl CephArgs {
    fn rbd(self) -> RbdCli {
        RbdCli {
            conf: self.ceph_conf,
            client_id: self.ceph_id,
            keyring: self.keyring,
            concurrency: self.concurrency,
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = command(std::env::args_os().next().as_deref()).get_matches();
    let args = Cli::from_arg_matches(&args).unwrap_or_else(|error| error.exit());
    init_logging(args.log_format);
    match args.command {
        Command::Operator {
            listen,
            namespace,
            leader_election,
            lease_namespace,
            lease_name,
            identity,
            concurrency,
        } => {
            let client = kube::Client::try_default()
                .await
                .context("connect to the Kubernetes API")?;
            let identity = identity
                .unwrap_or_else(|| hostname().unwrap_or_else(|| format!("cephdr-{}", std::process::id())));
            let config = OperatorConfig {
                listen,
                controllers: controller::Settings {
                    scope: namespace.map_or(WatchScope::AllNamespaces, WatchScope::Namespace),
                    concurrency,
                },
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
            backup_dir,
        } => {
            let backend: Arc<dyn ClusterAgent> = match backup_dir {
                Some(dir) => Arc::new(BackupStoreAgent::new(&site, dir)),
                None => {
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
                    Arc::new(cli)
                }
            };
            let tokens = Tokens::load(&token_file)?;
            let running = server::serve(
                backend,
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
        Command::Sync { command } => run_sync(command).await?,
        Command::Crds { out, reference } => {
            write_crds(&out)?;
            if let Some(path) = reference {
                let text = cephdr::api::reference::render(&cephdr::api::crds());
                std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
            }
        }
        Command::Status(status) => cli::status::run(&status, &mut std::io::stdout()).await?,
        Command::Failover(failover) => cli::failover::run(&failover, &mut std::io::stdout()).await?,
    }
    Ok(())
}

/// The command line; run as the kubectl plugin, usage and help call it `kubectl cephdr`.
fn command(argv0: Option<&OsStr>) -> clap::Command {
    let command = Cli::command();
    match argv0.is_some_and(cli::is_kubectl_plugin) {
        true => command.bin_name("kubectl cephdr"),
        false => command,
    }
}

async fn run_sync(command: SyncCommand) -> Result<()> {
    match command {
        SyncCommand::Serve {
            listen,
            tls_cert,
            tls_key,
            token_file,
            pools,
            backup_dir,
            s3,
            offsite_interval_seconds,
            state_dir,
            commit_every_mib,
            ceph,
        } => {
            let offsite = s3.offsite()?;
            let destination = match backup_dir {
                Some(dir) => {
                    if let Some(offsite) = &offsite {
                        let interval = Duration::from_secs(offsite_interval_seconds.max(1));
                        tokio::spawn(offsite.clone().run(dir.clone(), interval));
                    }
                    Destination::Backup { dir, offsite }
                }
                None if offsite.is_some() => bail!("an S3 bucket keeps backups: give --backup-dir too"),
                None => Destination::Rbd {
                    rbd: ceph.rbd(),
                    pools,
                },
            };
            let tls = TlsFiles {
                cert: tls_cert,
                key: tls_key,
            };
            let listener = SyncListener::bind(listen, &tls, Tokens::load(&token_file)?).await?;
            info!(addr = %listener.local_addr()?, "sync receiver listening");
            let receiver = Receiver::new(destination, state_dir, commit_every_mib << 20);
            receiver.serve(listener, shutdown_signal()).await;
        }
        SyncCommand::Send {
            peer,
            server_name,
            ca,
            token_file,
            image,
            from_snap,
            to_snap,
            checksum,
            zstd,
            bytes_per_second,
            chunk_mib,
            attempts,
            ceph,
        } => {
            let server_name = match server_name {
                Some(name) => name,
                None => peer
                    .rsplit_once(':')
                    .map(|(host, _)| host.trim_matches(['[', ']']).to_string())
                    .context("--peer must be host:port")?,
            };
            let ca_pem = match ca {
                Some(path) => Some(std::fs::read(&path).with_context(|| format!("read {}", path.display()))?),
                None => None,
            };
            let token = std::fs::read_to_string(&token_file)
                .with_context(|| format!("read {}", token_file.display()))?;
            let sender = Sender {
                rbd: ceph.rbd(),
                peer,
                server_name,
                ca_pem,
                token: Sensitive(token.trim().to_string()),
                options: FrameOptions {
                    checksum: match checksum {
                        Checksum::Crc32c => ChecksumKind::Crc32c,
                        Checksum::Blake3 => ChecksumKind::Blake3,
                    },
                    zstd_level: zstd,
                    bytes_per_second,
                },
                chunk_size: chunk_mib.saturating_mul(1 << 20),
                attempts: attempts.max(1),
            };
            let report = sender.send(&image, from_snap.as_deref(), &to_snap).await?;
            println!(
                "{image}@{to_snap}: {} of {} chunks sent (resumed at {}), {} bytes changed, {} bytes on the wire",
                report.chunks_sent, report.chunks, report.resumed_at, report.changed_bytes, report.wire.wire_bytes
            );
        }
        SyncCommand::Restore {
            backup_dir,
            s3,
            image,
            snap,
            out,
        } => {
            match (backup_dir, s3.offsite()?) {
                (Some(dir), _) => backup_store(&dir, &image).await?.restore(&snap, &out).await?,
                (None, Some(offsite)) => {
                    // The chain is fetched beside the output (images are large), checked and replayed.
                    let fetched = PathBuf::from(format!("{}.fetch", out.display()));
                    let restored = async {
                        offsite
                            .fetch(&image, &snap, &fetched)
                            .await?
                            .restore(&snap, &out)
                            .await
                    }
                    .await;
                    tokio::fs::remove_dir_all(&fetched).await.ok();
                    restored?;
                }
                (None, None) => bail!("give --backup-dir or an S3 bucket"),
            }
            println!("{image}@{snap} restored to {}", out.display());
        }
        SyncCommand::Retain {
            backup_dir,
            image,
            keep,
        } => {
            let store = backup_store(&backup_dir, &image).await?;
            store.retain(keep).await?;
            for point in store.points().await? {
                println!("{} {}", point.snap, point.file);
            }
        }
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

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use clap::{error::ErrorKind, CommandFactory};

    #[test]
    fn every_subcommand_is_a_well_formed_clap_command() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn run_as_the_kubectl_plugin_the_help_names_kubectl_cephdr() {
        let help = |argv0: &str| {
            let error = super::command(Some(OsStr::new(argv0)))
                .try_get_matches_from([argv0, "failover", "watch", "--help"])
                .expect_err("--help ends parsing");
            assert_eq!(error.kind(), ErrorKind::DisplayHelp);
            error.to_string()
        };
        let plugin = help("/usr/local/bin/kubectl-cephdr");
        assert!(
            plugin.contains("Usage: kubectl cephdr failover watch [OPTIONS] <NAME>"),
            "{plugin}"
        );
        assert!(help("cephdr").contains("Usage: cephdr failover watch"));
    }
}
