//! The generated CRDs, installed into a real kube-apiserver, refuse every manifest a user can get wrong with
//! a message that says what is wrong, and accept the valid examples.

use anyhow::{bail, Context, Result};
use cephdr::api;
use cephdr_e2e::{install_crds, shared_control_plane, unique_name};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    api::{Api, ApiResource, DynamicObject, ObjectMeta, PostParams},
    Client, CustomResourceExt,
};
use serde_json::{json, Value};

fn site() -> Value {
    json!({"apiVersion": "cephdr.io/v1alpha1", "kind": "CephSite", "metadata": {"name": "site-a"},
        "spec": {"agent": {"url": "https://agent-a.example:7443", "tokenSecretRef": {"name": "site-a-agent", "key": "token"}}}})
}

fn realm() -> Value {
    json!({"apiVersion": "cephdr.io/v1alpha1", "kind": "CephRealm", "metadata": {"name": "production"},
        "spec": {"zoneGroups": [{"name": "us", "master": true, "syncPolicy": {"groups": [
            {"id": "all", "status": "enabled",
             "flows": [{"id": "mesh", "type": "symmetrical", "zones": ["us-east", "us-west"]}],
             "pipes": [{"id": "everything", "sourceZones": ["*"], "destZones": ["*"]}]}]}}]}})
}

fn zone() -> Value {
    json!({"apiVersion": "cephdr.io/v1alpha1", "kind": "CephZone", "metadata": {"name": "us-east"},
        "spec": {"realm": "production", "zoneGroup": "us", "site": "site-a", "master": true,
                 "endpoints": ["http://127.0.0.1:8001"], "rpoSeconds": 300}})
}

fn pool() -> Value {
    json!({"apiVersion": "cephdr.io/v1alpha1", "kind": "RbdMirrorPool", "metadata": {"name": "rbd"},
        "spec": {"pool": "rbd", "mode": "image", "direction": "two-way",
                 "sites": [{"site": "site-a", "role": "primary"}, {"site": "site-b", "role": "secondary"}],
                 "images": {"mirrorMode": "snapshot", "names": ["db-vol"]},
                 "snapshotSchedules": [{"interval": "15m", "startTime": "08:00:00"}], "rpoSeconds": 1800}})
}

fn failover() -> Value {
    json!({"apiVersion": "cephdr.io/v1alpha1", "kind": "FailoverRequest", "metadata": {"name": "move-to-b"},
        "spec": {"action": "planned", "targetSite": "site-b", "targets": {"rbdMirrorPools": ["rbd"]}, "maxLagSeconds": 300}})
}

/// A base manifest, a JSON merge patch that breaks it, and a fragment the API server's message must contain.
struct Case {
    name: &'static str,
    base: fn() -> Value,
    patch: Value,
    message: &'static str,
}

fn invalid_on_create() -> Vec<Case> {
    let c = |name, base, patch, message| Case {
        name,
        base,
        patch,
        message,
    };
    vec![
        c(
            "site url is not https",
            site,
            json!({"spec": {"agent": {"url": "http://agent-a:7443"}}}),
            "spec.agent.url in body should match",
        ),
        c(
            "site url has a path",
            site,
            json!({"spec": {"agent": {"url": "https://agent-a:7443/api"}}}),
            "spec.agent.url in body should match",
        ),
        c(
            "site without token",
            site,
            json!({"spec": {"agent": {"tokenSecretRef": null}}}),
            "spec.agent.tokenSecretRef: Required value",
        ),
        c(
            "site token secret name empty",
            site,
            json!({"spec": {"agent": {"tokenSecretRef": {"name": ""}}}}),
            "spec.agent.tokenSecretRef.name in body should be at least 1 chars long",
        ),
        c(
            "site timeout zero",
            site,
            json!({"spec": {"agent": {"timeoutSeconds": 0}}}),
            "spec.agent.timeoutSeconds in body should be greater than or equal to 1",
        ),
        c(
            "site ceph name with space",
            site,
            json!({"spec": {"cephSiteName": "site a"}}),
            "spec.cephSiteName in body should match",
        ),
        c(
            "realm with two master zonegroups",
            realm,
            json!({"spec": {"zoneGroups": [{"name": "us", "master": true}, {"name": "eu", "master": true}]}}),
            "exactly one zoneGroup must have master: true",
        ),
        c(
            "realm without master zonegroup",
            realm,
            json!({"spec": {"zoneGroups": [{"name": "us"}]}}),
            "exactly one zoneGroup must have master: true",
        ),
        c(
            "realm without zonegroups",
            realm,
            json!({"spec": {"zoneGroups": []}}),
            "spec.zoneGroups in body should have at least 1 items",
        ),
        c(
            "realm zonegroup name with space",
            realm,
            json!({"spec": {"zoneGroups": [{"name": "us east", "master": true}]}}),
            "spec.zoneGroups[0].name in body should match",
        ),
        c(
            "realm duplicate zonegroup",
            realm,
            json!({"spec": {"zoneGroups": [{"name": "us", "master": true}, {"name": "us"}]}}),
            "Duplicate value",
        ),
        c(
            "sync group status unknown",
            realm,
            json!({"spec": {"zoneGroups": [{"name": "us", "master": true, "syncPolicy": {"groups": [{"id": "g", "status": "on"}]}}]}}),
            "Unsupported value: \"on\"",
        ),
        c(
            "symmetrical flow of one zone",
            realm,
            json!({"spec": {"zoneGroups": [{"name": "us", "master": true, "syncPolicy": {"groups": [{"id": "g", "status": "enabled", "flows": [{"id": "f", "type": "symmetrical", "zones": ["us-east"]}]}]}}]}}),
            "a symmetrical flow lists two or more zones",
        ),
        c(
            "directional flow without destination",
            realm,
            json!({"spec": {"zoneGroups": [{"name": "us", "master": true, "syncPolicy": {"groups": [{"id": "g", "status": "enabled", "flows": [{"id": "f", "type": "directional", "sourceZone": "us-east"}]}]}}]}}),
            "a directional flow names sourceZone and destZone",
        ),
        c(
            "bucket group with flows",
            realm,
            json!({"spec": {"zoneGroups": [{"name": "us", "master": true, "syncPolicy": {"groups": [{"id": "g", "status": "enabled", "bucket": "photos", "flows": [{"id": "f", "type": "symmetrical", "zones": ["a", "b"]}]}]}}]}}),
            "a bucket-level group takes pipes only",
        ),
        c(
            "pipe without source zones",
            realm,
            json!({"spec": {"zoneGroups": [{"name": "us", "master": true, "syncPolicy": {"groups": [{"id": "g", "status": "enabled", "pipes": [{"id": "p", "sourceZones": [], "destZones": ["*"]}]}]}}]}}),
            "sourceZones in body should have at least 1 items",
        ),
        c(
            "realm deletion policy unknown",
            realm,
            json!({"spec": {"deletionPolicy": "Keep"}}),
            "Unsupported value: \"Keep\"",
        ),
        c(
            "zone endpoint without scheme",
            zone,
            json!({"spec": {"endpoints": ["rgw-a:8080"]}}),
            "spec.endpoints[0] in body should match",
        ),
        c(
            "zone without endpoints",
            zone,
            json!({"spec": {"endpoints": []}}),
            "spec.endpoints in body should have at least 1 items",
        ),
        c(
            "zone rpo zero",
            zone,
            json!({"spec": {"rpoSeconds": 0}}),
            "spec.rpoSeconds in body should be greater than or equal to 1",
        ),
        c(
            "zone site not a resource name",
            zone,
            json!({"spec": {"site": "Site_A"}}),
            "spec.site in body should match",
        ),
        c(
            "zone without realm",
            zone,
            json!({"spec": {"realm": null}}),
            "spec.realm: Required value",
        ),
        c(
            "pool mode with snapshot images",
            pool,
            json!({"spec": {"mode": "pool", "snapshotSchedules": []}}),
            "mode: pool mirrors journaled images only",
        ),
        c(
            "pool with two primaries",
            pool,
            json!({"spec": {"sites": [{"site": "site-a", "role": "primary"}, {"site": "site-b", "role": "primary"}]}}),
            "exactly one site must have role: primary",
        ),
        c(
            "pool on one site twice",
            pool,
            json!({"spec": {"sites": [{"site": "site-a", "role": "primary"}, {"site": "site-a", "role": "secondary"}]}}),
            "the two sites must differ",
        ),
        c(
            "pool with three sites",
            pool,
            json!({"spec": {"sites": [{"site": "a", "role": "primary"}, {"site": "b", "role": "secondary"}, {"site": "c", "role": "secondary"}]}}),
            "spec.sites: Too many: 3: must have at most 2 items",
        ),
        c(
            "pool with one site",
            pool,
            json!({"spec": {"sites": [{"site": "a", "role": "primary"}]}}),
            "spec.sites in body should have at least 2 items",
        ),
        c(
            "schedule in seconds",
            pool,
            json!({"spec": {"snapshotSchedules": [{"interval": "15s"}]}}),
            "spec.snapshotSchedules[0].interval in body should match",
        ),
        c(
            "schedule start hour 25",
            pool,
            json!({"spec": {"snapshotSchedules": [{"interval": "1h", "startTime": "25:00:00"}]}}),
            "spec.snapshotSchedules[0].startTime in body should match",
        ),
        c(
            "schedules with journal mirroring",
            pool,
            json!({"spec": {"images": {"mirrorMode": "journal"}}}),
            "snapshotSchedules apply to snapshot mirroring only",
        ),
        c(
            "all images and a list",
            pool,
            json!({"spec": {"images": {"all": true}}}),
            "set either all: true or names, not both",
        ),
        c(
            "delta-sync with journal",
            pool,
            json!({"spec": {"engine": "delta-sync", "snapshotSchedules": [], "images": {"mirrorMode": "journal"}}}),
            "the delta-sync engine ships snapshot deltas",
        ),
        c(
            "delta-sync without a schedule",
            pool,
            json!({"spec": {"engine": "delta-sync", "snapshotSchedules": []}}),
            "the delta-sync engine syncs on snapshotSchedules: set at least one",
        ),
        c(
            "deltaSync options with rbd-mirror",
            pool,
            json!({"spec": {"deltaSync": {"zstdLevel": 3}}}),
            "deltaSync applies to engine: delta-sync only",
        ),
        c(
            "zstd level beyond 19",
            pool,
            json!({"spec": {"engine": "delta-sync", "deltaSync": {"zstdLevel": 40}}}),
            "spec.deltaSync.zstdLevel: Invalid value",
        ),
        c(
            "unknown chunk checksum",
            pool,
            json!({"spec": {"engine": "delta-sync", "deltaSync": {"checksum": "md5"}}}),
            "spec.deltaSync.checksum: Unsupported value",
        ),
        c(
            "no transfers at once",
            pool,
            json!({"spec": {"engine": "delta-sync", "deltaSync": {"maxConcurrentTransfers": 0}}}),
            "spec.deltaSync.maxConcurrentTransfers: Invalid value",
        ),
        c(
            "sync receiver without a port",
            site,
            json!({"spec": {"sync": {"address": "sync-b.example", "tokenSecretRef": {"name": "site-b-sync", "key": "token"}}}}),
            "spec.sync.address in body should match",
        ),
        c(
            "sync receiver without a token",
            site,
            json!({"spec": {"sync": {"address": "sync-b.example:7444"}}}),
            "spec.sync.tokenSecretRef: Required value",
        ),
        c(
            "image name with space",
            pool,
            json!({"spec": {"images": {"names": ["db vol"]}}}),
            "spec.images.names[0] in body should match",
        ),
        c(
            "direction unknown",
            pool,
            json!({"spec": {"direction": "both"}}),
            "Unsupported value: \"both\"",
        ),
        c(
            "role unknown",
            pool,
            json!({"spec": {"sites": [{"site": "site-a", "role": "leader"}, {"site": "site-b", "role": "secondary"}]}}),
            "Unsupported value: \"leader\"",
        ),
        c(
            "failover action unknown",
            failover,
            json!({"spec": {"action": "switch"}}),
            "Unsupported value: \"switch\"",
        ),
        c(
            "failover without targets",
            failover,
            json!({"spec": {"targets": {"rbdMirrorPools": []}}}),
            "targets must name at least one rbdMirrorPool or realm",
        ),
        c(
            "failover concurrency zero",
            failover,
            json!({"spec": {"concurrency": 0}}),
            "spec.concurrency in body should be greater than or equal to 1",
        ),
        c(
            "failover giving up on an unreachable site at once",
            failover,
            json!({"spec": {"unreachableTimeoutSeconds": 0}}),
            "spec.unreachableTimeoutSeconds in body should be greater than or equal to 10",
        ),
        c(
            "failover without target site",
            failover,
            json!({"spec": {"targetSite": null}}),
            "spec.targetSite: Required value",
        ),
    ]
}

fn invalid_on_update() -> Vec<Case> {
    let c = |name, base, patch, message| Case {
        name,
        base,
        patch,
        message,
    };
    vec![
        c(
            "zone moved to another realm",
            zone,
            json!({"spec": {"realm": "staging"}}),
            "realm is immutable",
        ),
        c(
            "zone moved to another site",
            zone,
            json!({"spec": {"site": "site-b"}}),
            "site is immutable",
        ),
        c(
            "pool renamed",
            pool,
            json!({"spec": {"pool": "other"}}),
            "pool is immutable",
        ),
        c(
            "pool switched to the other engine",
            pool,
            json!({"spec": {"engine": "delta-sync"}}),
            "engine is immutable",
        ),
        c(
            "failover spec changed",
            failover,
            json!({"spec": {"dryRun": true}}),
            "a FailoverRequest's spec is immutable",
        ),
    ]
}

fn resource(value: &Value) -> ApiResource {
    let kind = value["kind"].as_str().unwrap_or_default();
    let crd = api::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .expect("a cephdr kind");
    let version = &crd.spec.versions[0].name;
    ApiResource {
        group: crd.spec.group.clone(),
        version: version.clone(),
        api_version: format!("{}/{version}", crd.spec.group),
        kind: kind.to_string(),
        plural: crd.spec.names.plural.clone(),
    }
}

async fn expect_refused(result: kube::Result<DynamicObject>, case: &Case) -> Result<()> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 422 && status.message.contains(case.message) => {
            Ok(())
        }
        Err(kube::Error::Api(status)) => bail!(
            "{}: refused with another message: {} {}",
            case.name,
            status.code,
            status.message
        ),
        Err(other) => bail!("{}: failed unexpectedly: {other}", case.name),
        Ok(_) => bail!(
            "{}: was accepted, but must be refused with {:?}",
            case.name,
            case.message
        ),
    }
}

async fn setup() -> Result<(Client, String)> {
    let plane = shared_control_plane().await?;
    let client = plane.client().await?;
    install_crds(&client, &api::crds()).await?;
    let ns = unique_name("crd-validation");
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
    Ok((client, ns))
}

#[tokio::test]
async fn valid_examples_are_accepted() -> Result<()> {
    let (client, ns) = setup().await?;
    for base in [site, realm, zone, pool, failover] {
        let value = base();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource(&value));
        api.create(&PostParams::default(), &serde_json::from_value(value.clone())?)
            .await
            .with_context(|| format!("valid {} refused", value["kind"]))?;
    }
    Ok(())
}

/// What users copy: every manifest of `deploy/examples` is accepted as written.
#[tokio::test]
async fn deploy_examples_are_accepted() -> Result<()> {
    let (client, ns) = setup().await?;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    let mut created = 0;
    for file in files
        .iter()
        .filter(|f| f.file_name().is_some_and(|n| n != "kustomization.yaml"))
    {
        for document in serde_yaml::Deserializer::from_str(&std::fs::read_to_string(file)?) {
            let value = <Value as serde::Deserialize>::deserialize(document)?;
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource(&value));
            api.create(&PostParams::default(), &serde_json::from_value(value.clone())?)
                .await
                .with_context(|| format!("{} in {} refused", value["kind"], file.display()))?;
            created += 1;
        }
    }
    assert!(
        created >= 6,
        "the examples hold two sites, a realm, two zones, a pool and a failover: {created}"
    );
    Ok(())
}

#[tokio::test]
async fn invalid_manifests_are_refused_with_a_clear_message() -> Result<()> {
    let (client, ns) = setup().await?;
    let cases = invalid_on_create();
    assert!(cases.len() >= 25, "the table covers at least 25 mistakes");
    let mut failures = Vec::new();
    for case in &cases {
        let mut value = (case.base)();
        json_patch::merge(&mut value, &case.patch);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource(&value));
        let result = api
            .create(&PostParams::default(), &serde_json::from_value(value)?)
            .await;
        if let Err(e) = expect_refused(result, case).await {
            failures.push(format!("{e:#}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    Ok(())
}

#[tokio::test]
async fn immutable_fields_refuse_changes() -> Result<()> {
    let (client, ns) = setup().await?;
    let mut failures = Vec::new();
    for (i, case) in invalid_on_update().iter().enumerate() {
        let mut value = (case.base)();
        value["metadata"]["name"] = json!(format!("immutable-{i}"));
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource(&value));
        let created = api
            .create(&PostParams::default(), &serde_json::from_value(value)?)
            .await?;
        let mut changed = serde_json::to_value(&created)?;
        json_patch::merge(&mut changed, &case.patch);
        let result = api
            .replace(
                &created.metadata.name.clone().unwrap(),
                &PostParams::default(),
                &serde_json::from_value(changed)?,
            )
            .await;
        if let Err(e) = expect_refused(result, case).await {
            failures.push(format!("{e:#}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[test]
fn every_kind_has_printer_columns_and_a_status_subresource() {
    for crd in api::crds() {
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{} has /status",
            crd.spec.names.kind
        );
        assert!(
            version
                .additional_printer_columns
                .as_ref()
                .is_some_and(|c| c.len() >= 3),
            "{} has printer columns",
            crd.spec.names.kind
        );
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["cephdr".to_string()][..])
        );
    }
    let _ = api::CephSite::crd();
}
