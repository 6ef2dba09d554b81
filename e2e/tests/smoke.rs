//! Proves each layer of the test bed is real: a kube-apiserver that validates and watches, an RGW that
//! answers signed S3 requests with the bytes it stored, and RBD images that hold what was written.

use std::{pin::pin, time::Duration};

use anyhow::{Context, Result};
use cephdr_e2e::{shared_ceph_sites, shared_control_plane, unique_name};
use futures::TryStreamExt;
use k8s_openapi::{
    api::core::v1::Namespace, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    api::{Api, ObjectMeta, PostParams},
    runtime::{conditions, wait::await_condition, watcher, WatchStreamExt},
    CustomResource, CustomResourceExt, ResourceExt,
};
use rand::RngCore;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A throwaway kind with a CEL rule, so the test sees the API server's own validation.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[kube(group = "smoke.cephdr.io", version = "v1", kind = "Probe", namespaced)]
#[kube(validation = "self.spec.replicas <= 3 || self.spec.allowMany")]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    replicas: u32,
    #[serde(default)]
    allow_many: bool,
}

#[tokio::test]
async fn apiserver_validates_a_crd_and_a_watcher_sees_its_objects() -> Result<()> {
    let plane = shared_control_plane().await?;
    let client = plane.client().await?;
    let version = client.apiserver_version().await?;
    assert_eq!(
        version.git_version, "v1.36.3",
        "the bed runs the pinned release, with its version stamped"
    );

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &Probe::crd()).await?;
    let established = await_condition(crds, "probes.smoke.cephdr.io", conditions::is_crd_established());
    tokio::time::timeout(Duration::from_secs(30), established).await??;

    let ns = unique_name("smoke");
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.clone()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;
    let probes: Api<Probe> = Api::namespaced(client, &ns);

    let mut seen = pin!(watcher(probes.clone(), watcher::Config::default()).applied_objects());
    let too_many = Probe::new(
        "too-many",
        ProbeSpec {
            replicas: 5,
            allow_many: false,
        },
    );
    let refused = probes
        .create(&PostParams::default(), &too_many)
        .await
        .expect_err("CEL rule must refuse it");
    let kube::Error::Api(status) = refused else {
        panic!("expected an API error, got {refused:?}")
    };
    assert_eq!(status.code, 422);
    assert!(
        status.message.contains("self.spec.replicas <= 3"),
        "message names the rule: {}",
        status.message
    );

    probes
        .create(
            &PostParams::default(),
            &Probe::new(
                "fine",
                ProbeSpec {
                    replicas: 2,
                    allow_many: false,
                },
            ),
        )
        .await?;
    let observed = tokio::time::timeout(Duration::from_secs(30), seen.try_next())
        .await?
        .context("watch stream ended")?
        .context("watch stream ended")?;
    assert_eq!(observed.name_any(), "fine");
    assert_eq!(observed.spec.replicas, 2);
    Ok(())
}

#[tokio::test]
async fn rgw_on_site_a_returns_the_bytes_put_by_signed_s3_request() -> Result<()> {
    let sites = shared_ceph_sites().await?;
    let site = &sites.a;
    let endpoint = tokio::task::spawn_blocking(move || site.start_rgw(None)).await??;
    let (access, secret) = site.create_s3_user(&unique_name("smoke"), &[])?;
    let credentials = s3::creds::Credentials::new(Some(&access), Some(&secret), None, None, None)?;
    let region = s3::Region::Custom {
        region: "default".into(),
        endpoint,
    };

    let bucket_name = unique_name("smoke");
    let bucket = s3::Bucket::create_with_path_style(
        &bucket_name,
        region,
        credentials,
        s3::BucketConfiguration::default(),
    )
    .await?
    .bucket;
    let mut body = vec![0u8; 1 << 20];
    rand::rng().fill_bytes(&mut body);
    bucket.put_object("/dir/object.bin", &body).await?;
    let got = bucket.get_object("/dir/object.bin").await?;
    assert_eq!(got.status_code(), 200);
    assert_eq!(
        blake3::hash(got.as_slice()),
        blake3::hash(&body),
        "RGW returned other bytes than were PUT"
    );

    // Unsigned requests are refused: the endpoint really checks signatures.
    let anonymous = s3::Bucket::new(
        &bucket_name,
        bucket.region.clone(),
        s3::creds::Credentials::anonymous()?,
    )?
    .with_path_style();
    assert!(
        anonymous.get_object("/dir/object.bin").await.is_err(),
        "anonymous read must be refused"
    );
    Ok(())
}

#[tokio::test]
async fn rbd_image_on_site_b_holds_the_bytes_written() -> Result<()> {
    let sites = shared_ceph_sites().await?;
    let site = &sites.b;
    let pool = unique_name("smoke");
    site.ceph(&["osd", "pool", "create", &pool, "8"])?;
    site.rbd(&["pool", "init", &pool])?;
    let image = format!("{pool}/disk");

    // Random bytes at scattered offsets, so equal checksums cannot come from an all-zero image.
    let dir = tempfile::tempdir()?;
    let mut written = vec![0u8; 64 << 20];
    let mut rng = rand::rng();
    for offset in [0usize, 5 << 20, 31 << 20, 63 << 20] {
        rng.fill_bytes(&mut written[offset..offset + (1 << 20)]);
    }
    let source = dir.path().join("source.img");
    std::fs::write(&source, &written)?;
    site.rbd(&["import", "--no-progress", source.to_str().unwrap(), &image])?;

    let exported = dir.path().join("exported.img");
    site.rbd(&["export", "--no-progress", &image, exported.to_str().unwrap()])?;
    let read_back = std::fs::read(&exported)?;
    assert_eq!(read_back.len(), written.len());
    assert_eq!(
        blake3::hash(&read_back),
        blake3::hash(&written),
        "image content differs from what was written"
    );
    let info: serde_json::Value = serde_json::from_str(&site.rbd(&["info", "--format", "json", &image])?)?;
    assert_eq!(info["size"].as_u64(), Some(64 << 20));
    Ok(())
}
