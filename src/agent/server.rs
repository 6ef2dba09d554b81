//! The agent's HTTPS API: serves any [`ClusterAgent`] as JSON to the operator's
//! [`RemoteAgent`](super::remote::RemoteAgent).
//!
//! | route                                                          | trait method               |
//! |----------------------------------------------------------------|----------------------------|
//! | `GET  /healthz` (no token)                                     | liveness                   |
//! | `GET  /v1/cluster-info`                                        | `cluster_info`             |
//! | `GET  /v1/rgw/realms/{realm}`                                  | `rgw_realm`                |
//! | `GET  /v1/rgw/realms/{realm}/zones/{zone}/sync-status`         | `rgw_sync_status`          |
//! | `GET  /v1/rgw/realms/{realm}/zonegroups/{zg}/sync-policy`      | `rgw_sync_policy`          |
//! | `GET  /v1/rbd/pools/{pool}`                                    | `rbd_pool`                 |
//! | `POST /v1/rbd/pools/{pool}/images` `{"images": [...]}`          | `rbd_images`               |
//! | `POST /v1/rbd/pools/{pool}/bootstrap-token` `{"siteName"}`     | `create_bootstrap_token`   |
//! | `GET  /v1/rbd/pools/{pool}/images/{image}/snapshots/{id}/checksum` | `image_checksum`       |
//! | `GET  /v1/rbd/pools/{pool}/delta-sync`                         | `sync_pool`                |
//! | `POST /v1/steps` with a [`Step`]; 204 on success               | `execute`                  |
//!
//! Every `/v1` route needs `Authorization: Bearer <token>`; without a valid one the answer is 401 and the
//! agent is never called. Failures travel as the JSON of [`AgentError`] with a status matching its kind.
//! Bodies are never logged: steps carry peer bootstrap tokens and S3 secret keys.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, Instant, SystemTime},
};

use axum::{
    extract::{DefaultBodyLimit, MatchedPath, Path as UrlPath, Request, State},
    http::{header, HeaderMap, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, field, info, info_span, warn, Instrument, Span};

use super::{
    AgentError, ClusterAgent, ClusterInfo, ImageChecksum, RbdPoolState, RgwRealmState, Sensitive, Step,
    SyncGroup, SyncPool, ZoneSync,
};

/// Steps are small; a megabyte leaves room for large sync policies while bounding what one request buffers.
const MAX_REQUEST_BODY: usize = 1024 * 1024;
/// A client that has not finished its TLS handshake or its request headers by then is dropped, so idle
/// sockets cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for requests in flight (a step may be running a Ceph command).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Accept fails when the process runs out of file descriptors; pausing avoids a hot loop until some close.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Body of `POST /v1/rbd/pools/{pool}/bootstrap-token`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BootstrapTokenRequest {
    pub site_name: String,
}

/// Body of `POST /v1/rbd/pools/{pool}/images`: a read, sent as a body because a request names up to every
/// image of a pool.
#[derive(Serialize, Deserialize)]
pub(super) struct ImagesRequest {
    pub images: Vec<String>,
}

/// Answer of `POST /v1/rbd/pools/{pool}/bootstrap-token`.
#[derive(Serialize, Deserialize)]
pub(super) struct BootstrapTokenResponse {
    pub token: Sensitive<String>,
}

/// The PEM files of the serving certificate (with its chain) and its private key.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot read TLS material from {path}: {message}")]
    Tls { path: PathBuf, message: String },
    #[error("cannot read the token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the token file {0} holds no token")]
    NoTokens(PathBuf),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// The bearer tokens the agent accepts: the non-blank lines of a file. Several lines let a token be rotated
/// without downtime (add the new one, move clients, remove the old one). The file is re-read when it
/// changes, as a mounted Secret does when its content is replaced.
pub struct Tokens {
    path: PathBuf,
    loaded: RwLock<LoadedTokens>,
}

struct LoadedTokens {
    stamp: Option<FileStamp>,
    tokens: Vec<Sensitive<String>>,
}

/// Identifies one version of the token file without reading it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
}

impl FileStamp {
    fn of(metadata: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            modified: metadata.modified().ok(),
            len: metadata.len(),
        }
    }
}

impl Tokens {
    /// Reads the token file; fails when it is unreadable or holds no token.
    pub fn load(path: impl Into<PathBuf>) -> Result<Tokens, ServeError> {
        let path = path.into();
        let read_error = |source| ServeError::TokenFile {
            path: path.clone(),
            source,
        };
        let stamp = FileStamp::of(&std::fs::metadata(&path).map_err(read_error)?);
        let tokens = parse_tokens(&std::fs::read_to_string(&path).map_err(read_error)?);
        if tokens.is_empty() {
            return Err(ServeError::NoTokens(path));
        }
        Ok(Tokens {
            path,
            loaded: RwLock::new(LoadedTokens {
                stamp: Some(stamp),
                tokens,
            }),
        })
    }

    /// Whether `presented` equals one of the tokens. Every token is compared in constant time, so the time
    /// taken reveals neither which token nearly matched nor how much of it.
    pub(crate) async fn accepts(&self, presented: &str) -> bool {
        self.reload_if_changed().await;
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        let matched = loaded
            .tokens
            .iter()
            .fold(subtle::Choice::from(0), |matched, token| {
                matched | token.expose().as_bytes().ct_eq(presented.as_bytes())
            });
        matched.into()
    }

    /// Keeps the last good tokens when the file is missing, unreadable or empty: a half-written file must
    /// not lock every client out.
    async fn reload_if_changed(&self) {
        let stamp = match tokio::fs::metadata(&self.path).await {
            Ok(metadata) => Some(FileStamp::of(&metadata)),
            Err(_) => None,
        };
        if self.loaded.read().unwrap_or_else(|e| e.into_inner()).stamp == stamp {
            return;
        }
        let tokens = match tokio::fs::read_to_string(&self.path).await {
            Ok(text) => parse_tokens(&text),
            Err(error) => {
                warn!(path = %self.path.display(), %error, "cannot re-read the token file; keeping the previous tokens");
                Vec::new()
            }
        };
        let mut loaded = self.loaded.write().unwrap_or_else(|e| e.into_inner());
        loaded.stamp = stamp;
        if tokens.is_empty() {
            warn!(path = %self.path.display(), "the token file holds no token; keeping the previous tokens");
        } else {
            info!(path = %self.path.display(), count = tokens.len(), "reloaded the token file");
            loaded.tokens = tokens;
        }
    }
}

fn parse_tokens(text: &str) -> Vec<Sensitive<String>> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| Sensitive(line.to_owned()))
        .collect()
}

/// A running agent API. Dropping it stops the server as [`AgentServer::shutdown`] does, without waiting.
#[must_use = "dropping the server stops it"]
pub struct AgentServer {
    local_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl AgentServer {
    /// The address actually bound (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections, lets requests in flight finish (up to 30 s) and closes the rest.
    pub async fn shutdown(self) {
        // The accept loop ends when the receiver fires or sees the sender dropped; either is fine.
        let _ = self.stop.send(());
        if let Err(error) = self.task.await {
            warn!(%error, "agent API server task ended abnormally");
        }
    }
}

/// Serves `agent` over HTTPS on `addr` until the returned server is shut down.
pub async fn serve(
    agent: Arc<dyn ClusterAgent>,
    addr: SocketAddr,
    tls: TlsFiles,
    tokens: Tokens,
) -> Result<AgentServer, ServeError> {
    let acceptor = TlsAcceptor::from(Arc::new(server_tls_config(&tls, b"http/1.1")?));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(accept_loop(
        listener,
        acceptor,
        router(agent, Arc::new(tokens)),
        stopped,
    ));
    info!(%local_addr, "agent API listening");
    Ok(AgentServer {
        local_addr,
        stop,
        task,
    })
}

/// The serving certificate of `tls`, offering the one ALPN protocol `alpn`.
pub(crate) fn server_tls_config(tls: &TlsFiles, alpn: &[u8]) -> Result<rustls::ServerConfig, ServeError> {
    let tls_error = |path: &Path, message: String| ServeError::Tls {
        path: path.to_owned(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_error(&tls.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(tls_error(&tls.cert, "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| tls_error(&tls.key, e.to_string()))?;
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
            .map_err(|e| tls_error(&tls.key, e.to_string()))?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    mut stop: oneshot::Receiver<()>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        // Handshakes run in their own task: a slow client must not hold up the others.
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service);
            if let Err(error) = watcher.watch(connection).await {
                debug!(%peer, %error, "connection closed with an error");
            }
        });
    }
    drop(listener);
    info!("agent API stopping; draining requests in flight");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("requests still running after {DRAIN_TIMEOUT:?}; closing their connections");
    }
}

fn router(agent: Arc<dyn ClusterAgent>, tokens: Arc<Tokens>) -> Router {
    let v1 = Router::new()
        .route("/cluster-info", get(cluster_info))
        .route("/rgw/realms/{realm}", get(rgw_realm))
        .route(
            "/rgw/realms/{realm}/zones/{zone}/sync-status",
            get(rgw_sync_status),
        )
        .route(
            "/rgw/realms/{realm}/zonegroups/{zone_group}/sync-policy",
            get(rgw_sync_policy),
        )
        .route("/rbd/pools/{pool}", get(rbd_pool))
        .route("/rbd/pools/{pool}/images", post(rbd_images))
        .route("/rbd/pools/{pool}/bootstrap-token", post(create_bootstrap_token))
        .route(
            "/rbd/pools/{pool}/images/{image}/snapshots/{snap_id}/checksum",
            get(image_checksum),
        )
        .route("/rbd/pools/{pool}/delta-sync", get(sync_pool))
        .route("/steps", post(execute))
        .route_layer(middleware::from_fn_with_state(tokens, authenticate))
        .with_state(agent);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .nest("/v1", v1)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .layer(middleware::from_fn(trace_request))
}

/// What a request came to, for the request span: `ok`, an [`AgentError::reason`] or `Unauthorized`.
#[derive(Clone, Copy)]
struct Outcome(&'static str);

/// One span per request with method, route template (never the concrete path's secrets, never a body),
/// status and outcome.
async fn trace_request(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let span = info_span!(
        "agent_request",
        method = %request.method(),
        route = %route,
        step = field::Empty,
        status = field::Empty,
        outcome = field::Empty
    );
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    let outcome = response
        .extensions()
        .get::<Outcome>()
        .map_or_else(|| default_outcome(status), |o| o.0);
    span.record("status", status.as_u16());
    span.record("outcome", outcome);
    let elapsed_ms = started.elapsed().as_millis();
    span.in_scope(|| {
        if status.is_server_error() {
            warn!(elapsed_ms, "request failed");
        } else {
            info!(elapsed_ms, "request served");
        }
    });
    response
}

fn default_outcome(status: StatusCode) -> &'static str {
    if status.is_success() {
        "ok"
    } else if status.is_client_error() {
        "BadRequest"
    } else {
        "ServerError"
    }
}

async fn authenticate(State(tokens): State<Arc<Tokens>>, request: Request, next: Next) -> Response {
    match bearer_token(request.headers()) {
        Some(presented) if tokens.accepts(presented).await => next.run(request).await,
        _ => {
            let body = Json(serde_json::json!({ "error": "missing or invalid bearer token" }));
            let mut response = (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                body,
            )
                .into_response();
            response.extensions_mut().insert(Outcome("Unauthorized"));
            response
        }
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// An [`AgentError`] as a response: its JSON with a status matching its kind.
struct ApiError(AgentError);

impl From<AgentError> for ApiError {
    fn from(error: AgentError) -> ApiError {
        ApiError(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (status_of(&self.0), Json(&self.0)).into_response();
        response.extensions_mut().insert(Outcome(self.0.reason()));
        response
    }
}

/// 5xx for failures behind the agent (Ceph, or a site the agent itself relays to), 4xx for answers about
/// the request; the client retries only 5xx whose error is transient.
fn status_of(error: &AgentError) -> StatusCode {
    match error {
        AgentError::NotFound { .. } => StatusCode::NOT_FOUND,
        AgentError::Refused { .. } => StatusCode::CONFLICT,
        AgentError::Unreachable { .. } | AgentError::ClusterUnreachable { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        AgentError::CommandFailed { .. } | AgentError::Unauthorized { .. } => StatusCode::BAD_GATEWAY,
        AgentError::Parse { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

type ApiResult<T> = Result<T, ApiError>;
type Agent = State<Arc<dyn ClusterAgent>>;

async fn cluster_info(State(agent): Agent) -> ApiResult<Json<ClusterInfo>> {
    Ok(Json(agent.cluster_info().await?))
}

async fn rgw_realm(State(agent): Agent, UrlPath(realm): UrlPath<String>) -> ApiResult<Json<RgwRealmState>> {
    Ok(Json(agent.rgw_realm(&realm).await?))
}

async fn rgw_sync_status(
    State(agent): Agent,
    UrlPath((realm, zone)): UrlPath<(String, String)>,
) -> ApiResult<Json<ZoneSync>> {
    Ok(Json(agent.rgw_sync_status(&realm, &zone).await?))
}

async fn rgw_sync_policy(
    State(agent): Agent,
    UrlPath((realm, zone_group)): UrlPath<(String, String)>,
) -> ApiResult<Json<Vec<SyncGroup>>> {
    Ok(Json(agent.rgw_sync_policy(&realm, &zone_group).await?))
}

async fn rbd_pool(State(agent): Agent, UrlPath(pool): UrlPath<String>) -> ApiResult<Json<RbdPoolState>> {
    Ok(Json(agent.rbd_pool(&pool).await?))
}

async fn rbd_images(
    State(agent): Agent,
    UrlPath(pool): UrlPath<String>,
    Json(request): Json<ImagesRequest>,
) -> ApiResult<Json<RbdPoolState>> {
    Ok(Json(agent.rbd_images(&pool, &request.images).await?))
}

async fn create_bootstrap_token(
    State(agent): Agent,
    UrlPath(pool): UrlPath<String>,
    Json(request): Json<BootstrapTokenRequest>,
) -> ApiResult<Json<BootstrapTokenResponse>> {
    let token = agent.create_bootstrap_token(&pool, &request.site_name).await?;
    Ok(Json(BootstrapTokenResponse { token }))
}

async fn image_checksum(
    State(agent): Agent,
    UrlPath((pool, image, snap_id)): UrlPath<(String, String, u64)>,
) -> ApiResult<Json<ImageChecksum>> {
    Ok(Json(agent.image_checksum(&pool, &image, snap_id).await?))
}

async fn sync_pool(State(agent): Agent, UrlPath(pool): UrlPath<String>) -> ApiResult<Json<SyncPool>> {
    Ok(Json(agent.sync_pool(&pool).await?))
}

async fn execute(State(agent): Agent, Json(step): Json<Step>) -> ApiResult<StatusCode> {
    // Display names the verb and target only; the step's secrets stay out of the span.
    Span::current().record("step", field::display(&step));
    agent.execute(&step).await?;
    Ok(StatusCode::NO_CONTENT)
}
