//! The operator process: operations endpoints, leader election on a Lease, and the controllers.
//!
//! Only the Lease holder runs controllers (and so only it demotes or promotes anything). A replica that loses
//! the Lease stops its controllers and returns an error, so the process exits and restarts as a standby:
//! the plain, well-understood behaviour of controller-runtime operators.

use std::{future::IntoFuture, net::SocketAddr, sync::Arc};

use axum::{extract::State, http::StatusCode, routing::get, Router};
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tracing::{error, info};

use crate::{controller, controller::AgentConnector, metrics::Metrics};

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("cannot serve operations endpoints on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("leader election failed: {0}")]
    LeaderElection(#[from] kube_lease_manager::LeaseManagerError),
    #[error("lost the leader lease {0}; exiting so a fresh process can stand by")]
    LostLease(String),
}

pub struct OperatorConfig {
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    pub listen: SocketAddr,
    /// Lease used for leader election; `None` runs without election (one replica only).
    pub lease: Option<LeaseConfig>,
    pub controllers: controller::Settings,
}

pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration_seconds: u64,
}

/// Runs until `shutdown` resolves (clean exit) or the Lease is lost (error).
pub async fn run(
    client: Client,
    agents: Arc<dyn AgentConnector>,
    config: OperatorConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), OperatorError> {
    let metrics = Arc::new(Metrics::default());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| OperatorError::Bind {
            addr: config.listen,
            source,
        })?;
    info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving /metrics, /healthz, /readyz");
    let server = tokio::spawn(axum::serve(listener, operations_router(metrics.clone())).into_future());

    let result = match config.lease {
        None => {
            controller::run(client, config.controllers, agents, metrics, shutdown).await;
            Ok(())
        }
        Some(lease) => run_as_leader(client, config.controllers, agents, metrics, lease, shutdown).await,
    };
    server.abort();
    result
}

async fn run_as_leader(
    client: Client,
    settings: controller::Settings,
    agents: Arc<dyn AgentConnector>,
    metrics: Arc<Metrics>,
    lease: LeaseConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), OperatorError> {
    let manager = LeaseManagerBuilder::new(client.clone(), &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(lease.duration_seconds)
        .with_grace(lease.duration_seconds / 3)
        .build()
        .await?;
    let (mut is_leader, lease_task) = manager.watch().await;
    info!(lease = %lease.name, identity = %lease.identity, "waiting for the leader lease");
    let mut shutdown = Box::pin(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => { drop(is_leader); let _ = lease_task.await; return Ok(()) }
            changed = is_leader.changed() => if changed.is_err() { return Err(OperatorError::LostLease(lease.name)) },
        }
        if *is_leader.borrow_and_update() {
            break;
        }
    }
    info!(lease = %lease.name, "acquired the leader lease; starting controllers");
    let mut watch_loss = is_leader.clone();
    let lost = async move {
        while watch_loss.changed().await.is_ok() {
            if !*watch_loss.borrow_and_update() {
                return;
            }
        }
    };
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<bool>();
    let stop = async move {
        tokio::select! {
            _ = shutdown => { let _ = lost_tx.send(false); }
            _ = lost => { error!("leader lease lost; stopping controllers"); let _ = lost_tx.send(true); }
        }
    };
    controller::run(client, settings, agents, metrics, stop).await;
    let lost = lost_rx.await.unwrap_or(true);
    drop(is_leader);
    let _ = lease_task.await;
    if lost {
        Err(OperatorError::LostLease(lease.name))
    } else {
        Ok(())
    }
}

fn operations_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .with_state(metrics)
}

async fn render_metrics(
    State(metrics): State<Arc<Metrics>>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (
        StatusCode::OK,
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
}
