//! The operator's client of `cephdr agent`: [`RemoteAgent`] speaks the HTTPS API of
//! [`server`](super::server), and [`RemoteConnector`] builds one per `CephSite` from its Secrets.
//!
//! Every call is retried (at most three attempts, exponential backoff with jitter) when the agent could not
//! be reached, timed out or answered 5xx with a transient error: reads are side-effect free and steps are
//! idempotent by contract, so a retry after a lost answer is safe. 4xx answers are final.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    body::Bytes,
    header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE},
    Method, Request, StatusCode, Uri,
};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::Rng;
use rustls::{
    pki_types::{pem::PemObject, CertificateDer},
    RootCertStore,
};
use serde::{de::DeserializeOwned, Serialize};
use tracing::{debug, info_span, Instrument};

use super::{
    server::{BootstrapTokenRequest, BootstrapTokenResponse, ImagesRequest},
    AgentError, AgentResult, ClusterAgent, ClusterInfo, ImageChecksum, RbdPoolState, RgwRealmState,
    Sensitive, Step, SyncGroup, SyncPool, ZoneSync,
};
use crate::{
    api::{common::SecretKeyRef, site::AgentEndpoint, CephSite},
    controller::{AgentConnector, Error, Result},
    error_chain,
    metrics::Metrics,
};

/// `timeoutSeconds` when the `CephSite` leaves it out.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_ATTEMPTS: u32 = 3;
/// A checksum reads a whole image at the agent, which takes far longer than any other call: it gets this
/// much (or `timeoutSeconds` when longer) and one attempt, since a retry would read everything again and
/// the failover controller asks again on its next reconcile anyway.
pub const CHECKSUM_TIMEOUT: Duration = Duration::from_secs(3600);
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Pool states of thousands of images are a few megabytes; anything far larger is not an agent talking.
const MAX_RESPONSE_BODY: usize = 64 * 1024 * 1024;
/// How much of an unexpected (non-JSON) error body goes into the error message.
const ERROR_BODY_EXCERPT: usize = 300;
/// Path segments keep the characters Ceph names use readable and escape everything else.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Where and how to reach one site's agent.
pub struct RemoteAgentConfig {
    /// The `CephSite` name, for error messages, spans and metrics.
    pub site: String,
    /// `https://host:port` of the agent.
    pub url: String,
    pub token: Sensitive<String>,
    /// PEM CA bundle to trust instead of the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Bound of each attempt of a call, from connecting to the last byte of the answer.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("agent URL {url:?} is not usable: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("the agent token is not a valid HTTP header value")]
    InvalidToken,
    #[error("the CA bundle is not usable: {0}")]
    InvalidCa(String),
    #[error("no system root certificates to trust: {0}")]
    NoSystemRoots(String),
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// A [`ClusterAgent`] reached over the agent's HTTPS API.
pub struct RemoteAgent {
    site: String,
    base_url: String,
    authorization: HeaderValue,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    metrics: Option<Arc<Metrics>>,
    /// Set once the agent answered 401: the token this client holds is no longer accepted.
    refused_token: AtomicBool,
}

/// One failed attempt and whether another attempt may succeed.
struct Failed {
    error: AgentError,
    retryable: bool,
}

impl RemoteAgent {
    pub fn new(config: RemoteAgentConfig) -> Result<RemoteAgent, ConfigError> {
        let base_url = base_url(&config.url)?;
        let mut authorization = HeaderValue::try_from(format!("Bearer {}", config.token.expose().trim()))
            .map_err(|_| ConfigError::InvalidToken)?;
        // Keeps the header out of hyper's debug output and HPACK tables.
        authorization.set_sensitive(true);
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.timeout));
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(client_tls_config(config.ca_pem.as_deref())?)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        Ok(RemoteAgent {
            site: config.site,
            base_url,
            authorization,
            timeout: config.timeout,
            client: Client::builder(TokioExecutor::new()).build(https),
            metrics: None,
            refused_token: AtomicBool::new(false),
        })
    }

    /// Records each call in `cephdr_agent_request_duration_seconds{site,op,outcome}`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> RemoteAgent {
        self.metrics = Some(metrics);
        self
    }

    async fn get<T: DeserializeOwned>(&self, op: &'static str, path: String) -> AgentResult<T> {
        let body = self.call(op, Method::GET, &path, Bytes::new()).await?;
        self.decode(&Method::GET, &path, &body)
    }

    async fn post<T: DeserializeOwned>(
        &self,
        op: &'static str,
        path: String,
        request: &impl Serialize,
    ) -> AgentResult<T> {
        let body = self
            .call(op, Method::POST, &path, self.encode(&path, request)?)
            .await?;
        self.decode(&Method::POST, &path, &body)
    }

    /// One call with its span, retries and metric; the answer's body on success.
    async fn call(&self, op: &'static str, method: Method, path: &str, body: Bytes) -> AgentResult<Bytes> {
        self.call_bounded(op, method, path, body, self.timeout, MAX_ATTEMPTS)
            .await
    }

    /// [`call`](Self::call) with each attempt bounded by `timeout`, at most `attempts` of them.
    async fn call_bounded(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        body: Bytes,
        timeout: Duration,
        attempts: u32,
    ) -> AgentResult<Bytes> {
        let started = Instant::now();
        let span = info_span!("agent_call", site = %self.site, op);
        let result = self
            .call_with_retries(&method, path, body, timeout, attempts)
            .instrument(span)
            .await;
        if let Some(metrics) = &self.metrics {
            let outcome = result.as_ref().map_or_else(AgentError::reason, |_| "ok");
            metrics.agent_request(&self.site, op, outcome, started.elapsed().as_secs_f64());
        }
        result
    }

    async fn call_with_retries(
        &self,
        method: &Method,
        path: &str,
        body: Bytes,
        timeout: Duration,
        attempts: u32,
    ) -> AgentResult<Bytes> {
        let mut attempt = 1;
        loop {
            match self.attempt(method, path, body.clone(), timeout).await {
                Ok(answer) => return Ok(answer),
                Err(failed) if failed.retryable && attempt < attempts => {
                    let delay = backoff(attempt);
                    debug!(attempt, ?delay, error = %failed.error, "agent call failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(failed) => return Err(failed.error),
            }
        }
    }

    async fn attempt(
        &self,
        method: &Method,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, Failed> {
        let url = format!("{}{path}", self.base_url);
        let request = Request::builder()
            .method(method.clone())
            .uri(&url)
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .body(Full::new(body))
            .map_err(|e| Failed {
                error: self.unreachable(&url, e.to_string()),
                retryable: false,
            })?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| error_chain(&e))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BODY)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {}", error_chain(e.as_ref())))?;
            Ok::<_, String>((status, body.to_bytes()))
        };
        let (status, body) = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(cause)) => {
                return Err(Failed {
                    error: self.unreachable(&url, cause),
                    retryable: true,
                })
            }
            Err(_) => {
                let cause = format!("no answer within {timeout:?}");
                return Err(Failed {
                    error: self.unreachable(&url, cause),
                    retryable: true,
                });
            }
        };
        if status.is_success() {
            return Ok(body);
        }
        Err(self.rejection(method, path, &url, status, &body))
    }

    /// Turns an error answer into the agent's own error where it sent one.
    fn rejection(&self, method: &Method, path: &str, url: &str, status: StatusCode, body: &[u8]) -> Failed {
        if status == StatusCode::UNAUTHORIZED {
            self.refused_token.store(true, Ordering::Relaxed);
            return Failed {
                error: AgentError::Unauthorized {
                    site: self.site.clone(),
                },
                retryable: false,
            };
        }
        if let Ok(error) = serde_json::from_slice::<AgentError>(body) {
            return Failed {
                // The agent already waited its connect timeout for a cluster that did not answer.
                retryable: status.is_server_error()
                    && error.is_transient()
                    && !matches!(error, AgentError::ClusterUnreachable { .. }),
                error,
            };
        }
        // Not from the agent's handlers: a proxy in between, or a request the agent could not read.
        let cause = format!("HTTP {status}: {}", excerpt(body));
        if status.is_server_error() {
            Failed {
                error: self.unreachable(url, cause),
                retryable: true,
            }
        } else {
            let error = AgentError::Refused {
                site: self.site.clone(),
                action: format!("{method} {path}"),
                message: cause,
            };
            Failed {
                error,
                retryable: false,
            }
        }
    }

    fn unreachable(&self, url: &str, cause: String) -> AgentError {
        AgentError::Unreachable {
            site: self.site.clone(),
            message: format!("{url}: {cause}"),
        }
    }

    fn encode(&self, path: &str, request: &impl Serialize) -> AgentResult<Bytes> {
        serde_json::to_vec(request)
            .map(Bytes::from)
            .map_err(|e| AgentError::Parse {
                site: self.site.clone(),
                command: format!("POST {path}"),
                message: format!("cannot encode the request: {e}"),
            })
    }

    fn decode<T: DeserializeOwned>(&self, method: &Method, path: &str, body: &[u8]) -> AgentResult<T> {
        serde_json::from_slice(body).map_err(|e| AgentError::Parse {
            site: self.site.clone(),
            command: format!("{method} {path}"),
            message: e.to_string(),
        })
    }
}

#[async_trait]
impl ClusterAgent for RemoteAgent {
    async fn cluster_info(&self) -> AgentResult<ClusterInfo> {
        self.get("cluster-info", "/v1/cluster-info".into()).await
    }

    async fn rgw_realm(&self, realm: &str) -> AgentResult<RgwRealmState> {
        self.get("rgw-realm", format!("/v1/rgw/realms/{}", segment(realm)))
            .await
    }

    async fn rgw_sync_status(&self, realm: &str, zone: &str) -> AgentResult<ZoneSync> {
        let path = format!(
            "/v1/rgw/realms/{}/zones/{}/sync-status",
            segment(realm),
            segment(zone)
        );
        self.get("rgw-sync-status", path).await
    }

    async fn rgw_sync_policy(&self, realm: &str, zone_group: &str) -> AgentResult<Vec<SyncGroup>> {
        let path = format!(
            "/v1/rgw/realms/{}/zonegroups/{}/sync-policy",
            segment(realm),
            segment(zone_group)
        );
        self.get("rgw-sync-policy", path).await
    }

    async fn rbd_pool(&self, pool: &str) -> AgentResult<RbdPoolState> {
        self.get("rbd-pool", format!("/v1/rbd/pools/{}", segment(pool)))
            .await
    }

    async fn rbd_images(&self, pool: &str, images: &[String]) -> AgentResult<RbdPoolState> {
        let path = format!("/v1/rbd/pools/{}/images", segment(pool));
        let request = ImagesRequest {
            images: images.to_vec(),
        };
        self.post("rbd-images", path, &request).await
    }

    /// Retried like the rest: creating a bootstrap token again reuses the peer's Ceph user.
    async fn create_bootstrap_token(&self, pool: &str, site_name: &str) -> AgentResult<Sensitive<String>> {
        let path = format!("/v1/rbd/pools/{}/bootstrap-token", segment(pool));
        let request = BootstrapTokenRequest {
            site_name: site_name.to_owned(),
        };
        let response: BootstrapTokenResponse = self.post("create-bootstrap-token", path, &request).await?;
        Ok(response.token)
    }

    async fn image_checksum(&self, pool: &str, image: &str, snap_id: u64) -> AgentResult<ImageChecksum> {
        let path = format!(
            "/v1/rbd/pools/{}/images/{}/snapshots/{snap_id}/checksum",
            segment(pool),
            segment(image)
        );
        let timeout = self.timeout.max(CHECKSUM_TIMEOUT);
        let body = self
            .call_bounded("image-checksum", Method::GET, &path, Bytes::new(), timeout, 1)
            .await?;
        self.decode(&Method::GET, &path, &body)
    }

    async fn sync_pool(&self, pool: &str) -> AgentResult<SyncPool> {
        self.get("sync-pool", format!("/v1/rbd/pools/{}/delta-sync", segment(pool)))
            .await
    }

    async fn execute(&self, step: &Step) -> AgentResult<()> {
        let path = "/v1/steps";
        self.call(step.verb(), Method::POST, path, self.encode(path, step)?)
            .await
            .map(drop)
    }
}

/// `https://authority` of an agent URL, which may end in `/` but has no other path.
fn base_url(url: &str) -> Result<String, ConfigError> {
    let invalid = |reason: &str| ConfigError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| invalid(&e.to_string()))?;
    if uri.scheme_str() != Some("https") {
        return Err(invalid("the scheme must be https"));
    }
    let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(invalid("the URL must not have a path or query"));
    }
    Ok(format!("https://{authority}"))
}

/// Trusts the certificates of `ca_pem`, or the system's roots without it.
pub(crate) fn client_tls_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, ConfigError> {
    let mut roots = RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| ConfigError::InvalidCa(e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| ConfigError::InvalidCa(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(ConfigError::InvalidCa("no certificate in the PEM data".into()));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _unparsable) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                let errors: Vec<String> = native.errors.iter().map(ToString::to_string).collect();
                return Err(ConfigError::NoSystemRoots(errors.join("; ")));
            }
        }
    }
    // The provider is explicit, so no process-wide default has to be installed first.
    Ok(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn segment(value: &str) -> String {
    utf8_percent_encode(value, PATH_SEGMENT).to_string()
}

/// Exponential from 200 ms, jittered to 50–100% so operators retrying together spread out.
fn backoff(attempt: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1 << (attempt - 1).min(8))
        .mul_f64(rand::rng().random_range(0.5..=1.0))
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(ERROR_BODY_EXCERPT) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None if text.is_empty() => "(empty body)".into(),
        None => text.to_owned(),
    }
}

/// Connects the operator to each `CephSite`'s agent with the token and CA from the site's Secrets. Agents
/// are cached per site and rebuilt when the endpoint or either Secret changes, so connections are reused.
/// The Secrets are read again at most every [`SECRET_RECHECK`], or at once after the agent refused the
/// cached token: a rotated token is picked up within seconds without an API read per agent call.
pub struct RemoteConnector {
    client: kube::Client,
    metrics: Option<Arc<Metrics>>,
    agents: Mutex<HashMap<(String, String), CachedAgent>>,
}

struct CachedAgent {
    fingerprint: Fingerprint,
    agent: Arc<RemoteAgent>,
    checked: Instant,
}

/// How long a cached agent is used without reading its site's Secrets again.
pub const SECRET_RECHECK: Duration = Duration::from_secs(10);

/// What a cached agent was built from.
#[derive(PartialEq)]
struct Fingerprint {
    endpoint: AgentEndpoint,
    token_version: Option<String>,
    ca_version: Option<String>,
}

impl RemoteConnector {
    pub fn new(client: kube::Client) -> RemoteConnector {
        RemoteConnector {
            client,
            metrics: None,
            agents: Mutex::new(HashMap::new()),
        }
    }

    /// Agents built from now on record their calls in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> RemoteConnector {
        self.metrics = Some(metrics);
        self
    }

    /// The Secret `name`, or SecretMissing naming `key` when it does not exist.
    async fn secret(&self, namespace: &str, reference: &SecretKeyRef) -> Result<Secret> {
        Api::<Secret>::namespaced(self.client.clone(), namespace)
            .get_opt(&reference.name)
            .await?
            .ok_or_else(|| secret_missing(reference))
    }
}

#[async_trait]
impl AgentConnector for RemoteConnector {
    async fn connect(&self, site: &CephSite) -> Result<Arc<dyn ClusterAgent>> {
        let name = site.name_any();
        let namespace = site
            .namespace()
            .ok_or_else(|| Error::InvalidSpec(format!("CephSite {name} has no namespace")))?;
        let endpoint = &site.spec.agent;
        let key = (namespace.clone(), name.clone());
        if let Some(cached) = self.agents.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            if cached.fingerprint.endpoint == *endpoint
                && cached.checked.elapsed() < SECRET_RECHECK
                && !cached.agent.refused_token.load(Ordering::Relaxed)
            {
                return Ok(cached.agent.clone());
            }
        }
        let token_secret = self.secret(&namespace, &endpoint.token_secret_ref).await?;
        let ca_secret = match &endpoint.ca_secret_ref {
            // One Secret often holds both the token and the CA.
            Some(reference) if reference.name == endpoint.token_secret_ref.name => Some(token_secret.clone()),
            Some(reference) => Some(self.secret(&namespace, reference).await?),
            None => None,
        };
        let fingerprint = Fingerprint {
            endpoint: endpoint.clone(),
            token_version: token_secret.resource_version(),
            ca_version: ca_secret.as_ref().and_then(ResourceExt::resource_version),
        };
        if let Some(cached) = self
            .agents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&key)
        {
            if cached.fingerprint == fingerprint && !cached.agent.refused_token.load(Ordering::Relaxed) {
                cached.checked = Instant::now();
                return Ok(cached.agent.clone());
            }
        }

        let token =
            String::from_utf8(secret_value(&token_secret, &endpoint.token_secret_ref)?).map_err(|_| {
                Error::InvalidSpec(format!(
                    "the token in Secret {} is not UTF-8 text",
                    endpoint.token_secret_ref.name
                ))
            })?;
        let ca_pem = match (&ca_secret, &endpoint.ca_secret_ref) {
            (Some(secret), Some(reference)) => Some(secret_value(secret, reference)?),
            _ => None,
        };
        let config = RemoteAgentConfig {
            site: name.clone(),
            url: endpoint.url.clone(),
            token: Sensitive(token),
            ca_pem,
            timeout: endpoint
                .timeout_seconds
                .map_or(DEFAULT_TIMEOUT, |s| Duration::from_secs(s.into())),
        };
        let mut agent =
            RemoteAgent::new(config).map_err(|e| Error::InvalidSpec(format!("CephSite {name}: {e}")))?;
        if let Some(metrics) = &self.metrics {
            agent = agent.with_metrics(metrics.clone());
        }
        let agent = Arc::new(agent);
        let cached = CachedAgent {
            fingerprint,
            agent: agent.clone(),
            checked: Instant::now(),
        };
        self.agents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, cached);
        Ok(agent)
    }
}

/// The value under the reference's key; an absent or empty value counts as missing.
fn secret_value(secret: &Secret, reference: &SecretKeyRef) -> Result<Vec<u8>> {
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(&reference.key))
        .map(|value| value.0.clone())
        .filter(|value| !value.is_empty())
        .ok_or_else(|| secret_missing(reference))
}

fn secret_missing(reference: &SecretKeyRef) -> Error {
    Error::SecretMissing {
        name: reference.name.clone(),
        key: reference.key.clone(),
    }
}
