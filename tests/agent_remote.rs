//! The agent's wire protocol, both ends: `server::serve` in front of a recording agent over real TLS on
//! loopback, `RemoteAgent` calling it, and `RemoteConnector` building agents from Secrets in a real
//! kube-apiserver.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Result;
use async_trait::async_trait;
use cephdr::{
    agent::{
        remote::{RemoteAgent, RemoteAgentConfig, RemoteConnector},
        server::{serve, AgentServer, TlsFiles, Tokens},
        AgentError, AgentResult, ClusterAgent, ClusterInfo, ImageChecksum, ImageMirrorMode, ImageMirroring,
        LocalZone, PeerDirection, Period, PoolMirrorMode, RbdImage, RbdPoolState, RgwRealmState, Sensitive,
        SourceSync, Step, SyncGroup, SyncImage, SyncPool, SyncShards, SystemKeys, Transfer, TransferReport,
        ZoneGroupInfo, ZoneInfo, ZoneSync,
    },
    api::{
        realm::{SyncFlow, SyncFlowType, SyncGroupStatus},
        site::AgentEndpoint,
        CephSite, CephSiteSpec, SecretKeyRef,
    },
    controller::{AgentConnector, Error},
};
use cephdr_e2e::{install_crds, pki::Ca, shared_control_plane, unique_name};
use http_body_util::{BodyExt, Full};
use hyper::{body::Bytes, Method, Request, StatusCode};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use rustls::pki_types::{pem::PemObject, CertificateDer};

const SITE: &str = "site-a";
const TOKEN: &str = "first-token-0123456789";
const ROTATED_TOKEN: &str = "second-token-9876543210";

/// Answers with values derived from its arguments (so the test sees they arrived intact), records every
/// call and fails every call with `failure` when one is set.
#[derive(Default)]
struct RecordingAgent {
    calls: Mutex<Vec<String>>,
    steps: Mutex<Vec<Step>>,
    failure: Mutex<Option<AgentError>>,
}

impl RecordingAgent {
    fn record(&self, call: String) -> AgentResult<()> {
        self.calls.lock().unwrap().push(call);
        match self.failure.lock().unwrap().clone() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn fail_with(&self, failure: Option<AgentError>) {
        *self.failure.lock().unwrap() = failure;
        self.calls.lock().unwrap().clear();
    }
}

#[async_trait]
impl ClusterAgent for RecordingAgent {
    async fn cluster_info(&self) -> AgentResult<ClusterInfo> {
        self.record("cluster_info".into())?;
        Ok(cluster_info())
    }

    async fn rgw_realm(&self, realm: &str) -> AgentResult<RgwRealmState> {
        self.record(format!("rgw_realm {realm}"))?;
        Ok(realm_state(realm))
    }

    async fn rgw_sync_status(&self, realm: &str, zone: &str) -> AgentResult<ZoneSync> {
        self.record(format!("rgw_sync_status {realm} {zone}"))?;
        Ok(zone_sync(zone))
    }

    async fn rgw_sync_policy(&self, realm: &str, zone_group: &str) -> AgentResult<Vec<SyncGroup>> {
        self.record(format!("rgw_sync_policy {realm} {zone_group}"))?;
        Ok(sync_policy(zone_group))
    }

    async fn rbd_pool(&self, pool: &str) -> AgentResult<RbdPoolState> {
        self.record(format!("rbd_pool {pool}"))?;
        Ok(pool_state(pool))
    }

    async fn rbd_images(&self, pool: &str, images: &[String]) -> AgentResult<RbdPoolState> {
        self.record(format!("rbd_images {pool} {}", images.join(",")))?;
        let mut state = pool_state(pool);
        state.images.retain(|image| images.contains(&image.name));
        Ok(state)
    }

    async fn create_bootstrap_token(&self, pool: &str, site_name: &str) -> AgentResult<Sensitive<String>> {
        self.record(format!("create_bootstrap_token {pool} {site_name}"))?;
        Ok(Sensitive(format!("token-for-{site_name}-on-{pool}")))
    }

    async fn image_checksum(&self, pool: &str, image: &str, snap_id: u64) -> AgentResult<ImageChecksum> {
        self.record(format!("image_checksum {pool}/{image}@{snap_id}"))?;
        Ok(ImageChecksum {
            size: snap_id << 20,
            blake3: format!("{pool}-{image}"),
        })
    }

    async fn sync_pool(&self, pool: &str) -> AgentResult<SyncPool> {
        self.record(format!("sync_pool {pool}"))?;
        Ok(sync_pool())
    }

    async fn execute(&self, step: &Step) -> AgentResult<()> {
        self.record(format!("execute {step}"))?;
        self.steps.lock().unwrap().push(step.clone());
        Ok(())
    }
}

fn sync_pool() -> SyncPool {
    SyncPool {
        exists: true,
        images: vec![SyncImage {
            name: "db-vol".into(),
            snapshots: vec!["cephdr-sync-site-b-1764635400".into()],
            transfers: vec![Transfer {
                peer: "sync-b.example:7444".into(),
                from_snap: None,
                to_snap: "cephdr-sync-site-b-1764635400".into(),
                started: "2026-12-02T00:30:00Z".parse().unwrap(),
                finished: Some("2026-12-02T00:30:09Z".parse().unwrap()),
                report: Some(TransferReport {
                    changed_bytes: 53_687_091,
                    wire_bytes: 53_900_000,
                    chunks: 13,
                    chunks_sent: 13,
                }),
                error: None,
                permanent: false,
            }],
        }],
    }
}

fn cluster_info() -> ClusterInfo {
    ClusterInfo {
        fsid: "9c7e3e2a-0000-4000-8000-000000000001".into(),
        version: "16.2.15".into(),
        health: "HEALTH_WARN".into(),
        checks: vec!["POOL_APP_NOT_ENABLED".into()],
        backup_store: false,
    }
}

fn realm_state(realm: &str) -> RgwRealmState {
    let zone = ZoneInfo {
        name: "us-east".into(),
        id: "z1".into(),
        endpoints: vec!["http://rgw-a:8080".into()],
        read_only: false,
    };
    RgwRealmState {
        realm_id: Some(format!("{realm}-id")),
        period: Some(Period {
            id: "p1".into(),
            epoch: 7,
            master_zone_group: "us".into(),
            master_zone: "us-east".into(),
            zone_groups: vec![ZoneGroupInfo {
                name: "us".into(),
                id: "zg1".into(),
                is_master: true,
                endpoints: vec!["http://rgw-a:8080".into()],
                master_zone: "us-east".into(),
                zones: vec![zone],
            }],
        }),
        local_zones: vec![LocalZone {
            name: "us-east".into(),
            id: "z1".into(),
            zone_group: "us".into(),
            system_access_key: Some("AK".into()),
        }],
        system_user: Some("sync-user".into()),
    }
}

fn zone_sync(zone: &str) -> ZoneSync {
    let shards = SyncShards {
        state: "sync".into(),
        total_shards: 128,
        behind_shards: 3,
        full_sync_shards: 0,
        oldest_change: Some("2025-01-02T03:04:05Z".parse().unwrap()),
    };
    ZoneSync {
        metadata: Some(shards.clone()),
        data: vec![SourceSync {
            source_zone: format!("peer-of-{zone}"),
            shards,
        }],
    }
}

fn sync_policy(zone_group: &str) -> Vec<SyncGroup> {
    vec![SyncGroup {
        id: format!("{zone_group}-group"),
        status: SyncGroupStatus::Enabled,
        bucket: None,
        flows: vec![SyncFlow {
            id: "all".into(),
            flow_type: SyncFlowType::Symmetrical,
            zones: vec!["us-east".into(), "us-west".into()],
            source_zone: None,
            dest_zone: None,
        }],
        pipes: Vec::new(),
    }]
}

fn pool_state(pool: &str) -> RbdPoolState {
    RbdPoolState {
        exists: true,
        mode: PoolMirrorMode::Image,
        site_name: Some(pool.to_owned()),
        images: vec![RbdImage {
            name: "db-vol".into(),
            mirroring: Some(ImageMirroring {
                mode: ImageMirrorMode::Snapshot,
                primary: true,
                global_id: "g1".into(),
            }),
            ..RbdImage::default()
        }],
        ..RbdPoolState::default()
    }
}

/// A recording agent served over TLS by a throwaway CA, with its files in a scratch directory.
struct Harness {
    server: AgentServer,
    agent: Arc<RecordingAgent>,
    ca: Ca,
    url: String,
    dir: ScratchDir,
}

/// Removed with everything in it when the test ends.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Harness {
    async fn start(tokens: &[&str]) -> Result<Harness> {
        let dir = ScratchDir(std::env::temp_dir().join(unique_name("cephdr-agent-remote")));
        std::fs::create_dir_all(&dir.0)?;
        let ca = Ca::new("cephdr test agent CA")?;
        let serving = ca.server("agent", &["127.0.0.1"], &["localhost"])?;
        let tls = TlsFiles {
            cert: dir.0.join("tls.crt"),
            key: dir.0.join("tls.key"),
        };
        std::fs::write(&tls.cert, serving.cert_pem)?;
        std::fs::write(&tls.key, serving.key_pem)?;
        std::fs::write(dir.0.join("tokens"), tokens.join("\n"))?;
        let agent = Arc::new(RecordingAgent::default());
        let server = serve(
            agent.clone(),
            "127.0.0.1:0".parse()?,
            tls,
            Tokens::load(dir.0.join("tokens"))?,
        )
        .await?;
        let url = format!("https://127.0.0.1:{}", server.local_addr().port());
        Ok(Harness {
            server,
            agent,
            ca,
            url,
            dir,
        })
    }

    fn remote(&self, token: &str) -> RemoteAgent {
        RemoteAgent::new(RemoteAgentConfig {
            site: SITE.into(),
            url: self.url.clone(),
            token: Sensitive(token.into()),
            ca_pem: Some(self.ca.cert_pem().into_bytes()),
            timeout: Duration::from_secs(5),
        })
        .unwrap()
    }

    fn write_tokens(&self, tokens: &[&str]) {
        std::fs::write(self.dir.0.join("tokens"), tokens.join("\n")).unwrap();
    }

    /// A request without `RemoteAgent`, to send what it never would (no Authorization header at all).
    async fn raw(
        &self,
        method: Method,
        path: &str,
        authorization: Option<&str>,
        body: &str,
    ) -> (StatusCode, String) {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca.cert_pem().as_bytes()).unwrap())
            .unwrap();
        let tls =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url))
            .header("content-type", "application/json");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = client
            .request(request.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

fn unreachable_message(error: AgentError) -> String {
    match error {
        AgentError::Unreachable { site, message } => {
            assert_eq!(site, SITE);
            message
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn every_method_round_trips_through_the_remote_agent() -> Result<()> {
    let harness = Harness::start(&[TOKEN]).await?;
    let remote = harness.remote(TOKEN);
    // Names with characters that need escaping in a URL path arrive as they were sent.
    let realm = "prod realm/ü";

    assert_eq!(remote.cluster_info().await?, cluster_info());
    assert_eq!(remote.rgw_realm(realm).await?, realm_state(realm));
    assert_eq!(
        remote.rgw_sync_status(realm, "us-west").await?,
        zone_sync("us-west")
    );
    assert_eq!(remote.rgw_sync_policy(realm, "us").await?, sync_policy("us"));
    assert_eq!(remote.rbd_pool("rbd.fast").await?, pool_state("rbd.fast"));
    let images = ["db-vol".to_owned(), "gone".to_owned()];
    assert_eq!(
        remote.rbd_images("rbd", &images).await?.images,
        pool_state("rbd").images
    );
    let token = remote.create_bootstrap_token("rbd", "site-b").await?;
    assert_eq!(token.expose(), "token-for-site-b-on-rbd");
    assert_eq!(
        remote.image_checksum("rbd.fast", "db vol", 9).await?,
        ImageChecksum {
            size: 9 << 20,
            blake3: "rbd.fast-db vol".into()
        }
    );
    assert_eq!(remote.sync_pool("rbd.fast").await?, sync_pool());
    assert_eq!(
        harness.agent.calls(),
        [
            "cluster_info".to_owned(),
            format!("rgw_realm {realm}"),
            format!("rgw_sync_status {realm} us-west"),
            format!("rgw_sync_policy {realm} us"),
            "rbd_pool rbd.fast".to_owned(),
            "rbd_images rbd db-vol,gone".to_owned(),
            "create_bootstrap_token rbd site-b".to_owned(),
            "image_checksum rbd.fast/db vol@9".to_owned(),
            "sync_pool rbd.fast".to_owned(),
        ]
    );

    let (status, body) = harness.raw(Method::GET, "/healthz", None, "").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    harness.server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_step_runs_exactly_once_per_call_with_its_secrets_intact() -> Result<()> {
    let harness = Harness::start(&[TOKEN]).await?;
    let remote = harness.remote(TOKEN);
    let steps = [
        Step::ImportPeer {
            pool: "rbd".into(),
            token: Sensitive("eyJmc2lkIjoi-peer-secret".into()),
            direction: PeerDirection::RxTx,
            site_name: "site-b".into(),
        },
        Step::CreateSystemUser {
            uid: "sync-user".into(),
            keys: SystemKeys {
                access_key: "AK".into(),
                secret_key: Sensitive("s3-secret".into()),
            },
        },
        Step::PromoteImage {
            pool: "rbd".into(),
            image: "db-vol".into(),
            force: false,
        },
        Step::PromoteImage {
            pool: "rbd".into(),
            image: "db-vol".into(),
            force: false,
        },
    ];
    for step in &steps {
        remote.execute(step).await?;
    }
    assert_eq!(*harness.agent.steps.lock().unwrap(), steps);
    assert_eq!(harness.agent.calls().len(), steps.len());
    Ok(())
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_unauthorized_and_nothing_runs() -> Result<()> {
    let harness = Harness::start(&[TOKEN]).await?;
    let step = Step::DemoteImage {
        pool: "rbd".into(),
        image: "db-vol".into(),
    };
    let step_json = serde_json::to_string(&step)?;

    for token in ["wrong-token", "", &TOKEN[..TOKEN.len() - 1], &format!("{TOKEN}x")] {
        let remote = harness.remote(token);
        assert_eq!(
            remote.execute(&step).await,
            Err(AgentError::Unauthorized { site: SITE.into() })
        );
        assert_eq!(
            remote.cluster_info().await,
            Err(AgentError::Unauthorized { site: SITE.into() })
        );
    }
    for authorization in [None, Some("Basic Zm9vOmJhcg=="), Some(TOKEN)] {
        let (status, body) = harness
            .raw(Method::POST, "/v1/steps", authorization, &step_json)
            .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "authorization {authorization:?}"
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body)?["error"],
            "missing or invalid bearer token"
        );
    }
    assert!(
        harness.agent.calls().is_empty(),
        "the agent ran {:?}",
        harness.agent.calls()
    );

    let (status, _) = harness
        .raw(
            Method::POST,
            "/v1/steps",
            Some(&format!("bearer {TOKEN}")),
            &step_json,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "the scheme is case-insensitive");
    Ok(())
}

#[tokio::test]
async fn agent_errors_arrive_as_the_same_variant_and_only_transient_ones_are_retried() -> Result<()> {
    let harness = Harness::start(&[TOKEN]).await?;
    let remote = harness.remote(TOKEN);
    let cases = [
        (
            AgentError::NotFound {
                site: "ceph-a".into(),
                what: "pool rbd".into(),
            },
            1,
        ),
        (
            AgentError::Refused {
                site: "ceph-a".into(),
                action: "promote".into(),
                message: "image is primary on site-b".into(),
            },
            1,
        ),
        (
            AgentError::Parse {
                site: "ceph-a".into(),
                command: "rbd mirror pool info".into(),
                message: "eof".into(),
            },
            1,
        ),
        (
            AgentError::Unauthorized {
                site: "upstream".into(),
            },
            1,
        ),
        (
            AgentError::CommandFailed {
                site: "ceph-a".into(),
                command: "rbd mirror image promote".into(),
                exit_code: Some(16),
                stderr: "Device or resource busy".into(),
            },
            3,
        ),
        (
            AgentError::Unreachable {
                site: "ceph-a".into(),
                message: "mon timeout".into(),
            },
            3,
        ),
        // The agent already waited its connect timeout for the cluster.
        (
            AgentError::ClusterUnreachable {
                site: "ceph-a".into(),
                message: "no monitor answered".into(),
            },
            1,
        ),
    ];
    for (error, attempts) in cases {
        harness.agent.fail_with(Some(error.clone()));
        assert_eq!(remote.rbd_pool("rbd").await, Err(error.clone()));
        assert_eq!(harness.agent.calls().len(), attempts, "attempts after {error:?}");
    }

    // A request body the agent cannot read is refused without retrying.
    harness.agent.fail_with(None);
    let (status, _) = harness
        .raw(
            Method::POST,
            "/v1/steps",
            Some(&format!("Bearer {TOKEN}")),
            "{\"step\":\"Nope\"}",
        )
        .await;
    assert!(status.is_client_error(), "{status}");
    let huge = format!(
        "{{\"step\":\"CreateRealm\",\"realm\":\"{}\"}}",
        "r".repeat(2 * 1024 * 1024)
    );
    let (status, _) = harness
        .raw(Method::POST, "/v1/steps", Some(&format!("Bearer {TOKEN}")), &huge)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(harness.agent.calls().is_empty());
    Ok(())
}

#[tokio::test]
async fn a_refused_connection_names_the_site_and_url_at_once() -> Result<()> {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("https://127.0.0.1:{}", closed.local_addr()?.port());
    drop(closed);
    let ca = Ca::new("unused")?;
    let remote = RemoteAgent::new(RemoteAgentConfig {
        site: SITE.into(),
        url: url.clone(),
        token: Sensitive(TOKEN.into()),
        ca_pem: Some(ca.cert_pem().into_bytes()),
        timeout: Duration::from_secs(5),
    })?;
    let started = Instant::now();
    let message = unreachable_message(remote.cluster_info().await.unwrap_err());
    assert!(message.starts_with(&url), "{message}");
    assert!(message.to_lowercase().contains("refused"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn a_silent_agent_times_out_on_every_attempt() -> Result<()> {
    // The kernel completes the TCP handshake, but nothing ever answers the TLS hello.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("https://127.0.0.1:{}", silent.local_addr()?.port());
    let ca = Ca::new("unused")?;
    let timeout = Duration::from_secs(1);
    let remote = RemoteAgent::new(RemoteAgentConfig {
        site: SITE.into(),
        url: url.clone(),
        token: Sensitive(TOKEN.into()),
        ca_pem: Some(ca.cert_pem().into_bytes()),
        timeout,
    })?;
    let started = Instant::now();
    let message = unreachable_message(remote.rgw_realm("production").await.unwrap_err());
    let elapsed = started.elapsed();
    assert!(
        message.starts_with(&format!("{url}/v1/rgw/realms/production")),
        "{message}"
    );
    assert!(message.contains("no answer within 1s"), "{message}");
    // Three attempts of one timeout each plus at most 0.2 s + 0.4 s of backoff.
    assert!(
        elapsed >= timeout * 3 && elapsed < timeout * 3 + Duration::from_secs(1),
        "took {elapsed:?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_agent_with_a_certificate_from_another_ca_is_not_trusted() -> Result<()> {
    let harness = Harness::start(&[TOKEN]).await?;
    let stranger = Ca::new("some other CA")?;
    let remote = RemoteAgent::new(RemoteAgentConfig {
        site: SITE.into(),
        url: harness.url.clone(),
        token: Sensitive(TOKEN.into()),
        ca_pem: Some(stranger.cert_pem().into_bytes()),
        timeout: Duration::from_secs(5),
    })?;
    let step = Step::CreateRealm {
        realm: "production".into(),
    };
    let message = unreachable_message(remote.execute(&step).await.unwrap_err());
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert!(harness.agent.calls().is_empty());
    Ok(())
}

#[tokio::test]
async fn either_token_of_a_rotation_is_accepted_and_a_removed_one_no_longer() -> Result<()> {
    let harness = Harness::start(&[TOKEN, ROTATED_TOKEN]).await?;
    let (old, new) = (harness.remote(TOKEN), harness.remote(ROTATED_TOKEN));
    assert_eq!(old.cluster_info().await?, cluster_info());
    assert_eq!(new.cluster_info().await?, cluster_info());

    harness.write_tokens(&[ROTATED_TOKEN]);
    assert_eq!(
        old.cluster_info().await,
        Err(AgentError::Unauthorized { site: SITE.into() })
    );
    assert_eq!(new.cluster_info().await?, cluster_info());

    // A file caught empty mid-write keeps the tokens it had.
    harness.write_tokens(&[]);
    assert_eq!(new.cluster_info().await?, cluster_info());
    Ok(())
}

/// Creates the namespace, the Secret with token and CA, and the CephSite pointing at `harness`.
async fn site_in_apiserver(client: &kube::Client, harness: &Harness, namespace: &str) -> Result<CephSite> {
    let namespace_object = Namespace {
        metadata: ObjectMeta {
            name: Some(namespace.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace_object)
        .await?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("site-a-agent".into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([
            ("token".into(), TOKEN.into()),
            ("ca.crt".into(), harness.ca.cert_pem()),
        ])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await?;
    let site = CephSite::new(
        SITE,
        CephSiteSpec {
            agent: AgentEndpoint {
                url: harness.url.clone(),
                token_secret_ref: SecretKeyRef {
                    name: "site-a-agent".into(),
                    key: "token".into(),
                },
                ca_secret_ref: Some(SecretKeyRef {
                    name: "site-a-agent".into(),
                    key: "ca.crt".into(),
                }),
                timeout_seconds: Some(5),
            },
            ceph_site_name: None,
            sync: None,
        },
    );
    Ok(Api::<CephSite>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &site)
        .await?)
}

#[tokio::test]
async fn remote_connector_reaches_a_site_with_its_secrets_and_follows_a_rotated_token() -> Result<()> {
    let plane = shared_control_plane().await?;
    let client = plane.client().await?;
    install_crds(&client, &cephdr::api::crds()).await?;
    let harness = Harness::start(&[TOKEN, ROTATED_TOKEN]).await?;
    let namespace = unique_name("agent-remote");
    let site = site_in_apiserver(&client, &harness, &namespace).await?;
    let connector = RemoteConnector::new(client.clone());

    let agent = connector.connect(&site).await?;
    assert_eq!(agent.cluster_info().await?, cluster_info());
    assert!(
        Arc::ptr_eq(&agent, &connector.connect(&site).await?),
        "an unchanged site reuses its agent"
    );

    let rotated = serde_json::json!({ "stringData": { "token": ROTATED_TOKEN } });
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .patch("site-a-agent", &PatchParams::default(), &Patch::Merge(&rotated))
        .await?;
    harness.write_tokens(&[ROTATED_TOKEN]);
    // The cached agent is used until the agent refuses its token (or SECRET_RECHECK passes): no Secret
    // read per call. The refusal makes the next connect read the Secret and build an agent with the new token.
    assert_eq!(
        agent.cluster_info().await,
        Err(AgentError::Unauthorized { site: SITE.into() })
    );
    let rebuilt = connector.connect(&site).await?;
    assert!(
        !Arc::ptr_eq(&agent, &rebuilt),
        "a rotated Secret builds a new agent"
    );
    assert_eq!(rebuilt.cluster_info().await?, cluster_info());
    assert!(
        Arc::ptr_eq(&rebuilt, &connector.connect(&site).await?),
        "the new agent is cached in turn"
    );
    Ok(())
}

#[tokio::test]
async fn remote_connector_reports_a_missing_secret_or_key() -> Result<()> {
    let plane = shared_control_plane().await?;
    let client = plane.client().await?;
    install_crds(&client, &cephdr::api::crds()).await?;
    let harness = Harness::start(&[TOKEN]).await?;
    let namespace = unique_name("agent-remote");
    let site = site_in_apiserver(&client, &harness, &namespace).await?;
    let connector = RemoteConnector::new(client.clone());

    for (name, key) in [("absent", "token"), ("site-a-agent", "no-such-key")] {
        let mut broken = site.clone();
        broken.spec.agent.token_secret_ref = SecretKeyRef {
            name: name.into(),
            key: key.into(),
        };
        match connector.connect(&broken).await {
            Err(Error::SecretMissing {
                name: missing,
                key: missing_key,
            }) => {
                assert_eq!((missing.as_str(), missing_key.as_str()), (name, key));
            }
            Err(other) => panic!("expected SecretMissing for {name}/{key}, got {other:?}"),
            Ok(_) => panic!("connected without the Secret {name}/{key}"),
        }
    }
    let mut no_ca = site.clone();
    no_ca.spec.agent.ca_secret_ref = Some(SecretKeyRef {
        name: "absent-ca".into(),
        key: "ca.crt".into(),
    });
    assert!(
        matches!(connector.connect(&no_ca).await, Err(Error::SecretMissing { name, .. }) if name == "absent-ca")
    );
    Ok(())
}
