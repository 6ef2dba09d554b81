//! The install paths against a real kube-apiserver. The Helm chart lints, renders and installs; the operator,
//! authenticated with a token of the chart's ServiceAccount and reaching simulated Ceph sites through HTTPS
//! agents as deployed, converges CephSites and an RbdMirrorPool and runs a planned failover: the chart's RBAC
//! is enough. The same token is refused what the controllers never do: the RBAC is no more than needed. The
//! kustomize bases apply and grant the chart's rules; the GitOps examples point at them.

#[path = "install/support.rs"]
mod support;

use std::collections::BTreeSet;

use anyhow::{ensure, Context as _, Result};
use cephdr::api::{CephSite, RbdMirrorPool};
use cephdr_e2e::{shared_control_plane, unique_name, TestNamespace};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        coordination::v1::Lease,
        core::v1::{ConfigMap, Namespace, Pod, Secret, Service},
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{json, Value};
use support::{
    api_in, assert_forbidden, chart, documents, find, helm_install, helm_template, json_of, kinds,
    kubectl_kustomize, output, repo, rules, run, wrapper_kustomization, OperatorRun, SimulatedSites,
};

/// Exactly what the controllers do with the API (src/controller/, kube-runtime's finalizer and Event
/// recorder): the chart and the kustomize bases must grant these rules and no others.
fn controller_rules() -> Value {
    json!([
        {"apiGroups": ["cephdr.io"],
         "resources": ["cephsites", "cephrealms", "cephzones", "rbdmirrorpools", "failoverrequests"],
         "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": ["cephdr.io"],
         "resources": ["cephsites/status", "cephrealms/status", "cephzones/status", "rbdmirrorpools/status",
                       "failoverrequests/status"],
         "verbs": ["patch"]},
        {"apiGroups": ["cephdr.io"], "resources": ["cephrealms/finalizers", "rbdmirrorpools/finalizers"],
         "verbs": ["update"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch", "create", "patch"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    ])
}

fn leader_election_rules(lease: &str) -> Value {
    json!([
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [lease],
         "verbs": ["get", "patch"]},
    ])
}

#[test]
fn chart_crds_are_the_generated_crds_byte_for_byte() -> Result<()> {
    let generated: BTreeSet<String> = std::fs::read_dir(repo().join("crds"))?
        .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<BTreeSet<_>>>()?
        .into_iter()
        .filter(|name| name.ends_with(".cephdr.io.yaml"))
        .collect();
    let in_chart: BTreeSet<String> = std::fs::read_dir(chart().join("crds"))?
        .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    assert_eq!(generated.len(), cephdr::api::crds().len());
    assert_eq!(in_chart, generated, "run `make generate`");
    for name in &generated {
        let want = std::fs::read(repo().join("crds").join(name))?;
        let have = std::fs::read(chart().join("crds").join(name))?;
        assert!(
            want == have,
            "charts/cephdr/crds/{name} differs from crds/{name}: run `make generate`"
        );
    }
    // deploy/base takes the CRDs from crds/kustomization.yaml, which must list every one of them.
    let kustomization: Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo().join("crds/kustomization.yaml"))?)?;
    let listed: BTreeSet<String> = serde_json::from_value(kustomization["resources"].clone())?;
    assert_eq!(listed, generated);
    Ok(())
}

#[tokio::test]
async fn chart_lints_strictly_and_its_schema_refuses_mistaken_values() -> Result<()> {
    let plane = shared_control_plane().await?;
    run(plane.helm().args(["lint", "--strict"]).arg(chart()))?;
    run(plane.helm().args(["lint", "--strict"]).arg(chart()).args([
        "--set=metrics.serviceMonitor.enabled=true",
        "--set=metrics.prometheusRule.enabled=true",
        "--set=dashboard.enabled=true",
        "--set=watchNamespace=apps",
        "--set=replicaCount=3",
    ]))?;
    for (value, refusal) in [
        (
            "replicaCuont=2",
            "additional properties 'replicaCuont' not allowed",
        ),
        ("logFormat=xml", "/logFormat"),
        ("replicaCount=0", "/replicaCount"),
        ("watchNamespace=Apps_1", "/watchNamespace"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("service.port=70000", "/service/port"),
        (
            "metrics.serviceMonitor.interval=often",
            "/metrics/serviceMonitor/interval",
        ),
        (
            "replicaCount=2,leaderElection.enabled=false",
            "replicaCount > 1 needs leaderElection.enabled",
        ),
    ] {
        let (ok, _, stderr) = output(
            plane
                .helm()
                .args(["template", "t"])
                .arg(chart())
                .arg(format!("--set={value}")),
        )?;
        assert!(!ok, "helm template accepted {value}");
        assert!(
            stderr.contains(refusal),
            "{value}: expected {refusal:?} in {stderr}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn chart_renders_cluster_wide_or_namespaced_least_privilege_rbac() -> Result<()> {
    let plane = shared_control_plane().await?;
    let all = helm_template(plane, "ops", &[])?;
    assert_eq!(
        kinds(&all),
        BTreeSet::from(
            [
                "ClusterRole",
                "ClusterRoleBinding",
                "Deployment",
                "Role",
                "RoleBinding",
                "Service",
                "ServiceAccount"
            ]
            .map(String::from)
        )
    );
    assert_eq!(
        rules(find(&all, "ClusterRole", "t-cephdr")?),
        rules_of(&controller_rules())
    );
    let binding = find(&all, "ClusterRoleBinding", "t-cephdr")?;
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "t-cephdr", "namespace": "ops"}])
    );
    let lease_role = find(&all, "Role", "t-cephdr-leader-election")?;
    assert_eq!(lease_role["metadata"]["namespace"], "ops");
    assert_eq!(rules(lease_role), rules_of(&leader_election_rules("t-cephdr")));
    let args = container(find(&all, "Deployment", "t-cephdr")?)["args"].clone();
    assert_eq!(
        args,
        json!([
            "operator",
            "--listen=0.0.0.0:8080",
            "--concurrency=32",
            "--leader-election",
            "--lease-name=t-cephdr"
        ])
    );

    let one = helm_template(plane, "ops", &["watchNamespace=apps"])?;
    assert!(!kinds(&one).contains("ClusterRole") && !kinds(&one).contains("ClusterRoleBinding"));
    let role = find(&one, "Role", "t-cephdr")?;
    assert_eq!(role["metadata"]["namespace"], "apps");
    assert_eq!(rules(role), rules_of(&controller_rules()));
    let binding = find(&one, "RoleBinding", "t-cephdr")?;
    assert_eq!(binding["metadata"]["namespace"], "apps");
    assert_eq!(binding["subjects"][0]["namespace"], "ops");
    assert!(container(find(&one, "Deployment", "t-cephdr")?)["args"]
        .as_array()
        .context("args")?
        .contains(&json!("--namespace=apps")));

    // Without leader election no Lease is needed, and a rollout must not overlap two operators.
    let single = helm_template(plane, "ops", &["leaderElection.enabled=false"])?;
    assert!(single
        .iter()
        .all(|d| d["metadata"]["name"] != "t-cephdr-leader-election"));
    let deployment = find(&single, "Deployment", "t-cephdr")?;
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    assert_eq!(
        container(deployment)["args"],
        json!(["operator", "--listen=0.0.0.0:8080", "--concurrency=32"])
    );
    Ok(())
}

#[tokio::test]
async fn alerts_and_dashboard_use_only_metrics_the_operator_exports() -> Result<()> {
    let plane = shared_control_plane().await?;
    let docs = helm_template(
        plane,
        "ops",
        &[
            "metrics.prometheusRule.enabled=true",
            "metrics.serviceMonitor.enabled=true",
            "dashboard.enabled=true",
        ],
    )?;
    let exported = support::exported_metrics();
    let rule = find(&docs, "PrometheusRule", "t-cephdr")?;
    let mut alerts = BTreeSet::new();
    for group in rule["spec"]["groups"].as_array().context("groups")? {
        for rule in group["rules"].as_array().context("rules")? {
            let alert = rule["alert"].as_str().context("alert name")?;
            let expr = rule["expr"].as_str().context("expr")?;
            let used = support::metric_names(expr);
            ensure!(!used.is_empty(), "{alert} uses no cephdr metric");
            let mut labels = BTreeSet::from(["namespace".to_string()]);
            for name in &used {
                let series = exported
                    .get(name)
                    .with_context(|| format!("{alert}: {name} is not exported"))?;
                labels.extend(series.iter().cloned());
            }
            for annotation in rule["annotations"].as_object().context("annotations")?.values() {
                for label in support::template_labels(annotation.as_str().unwrap_or_default()) {
                    ensure!(
                        labels.contains(&label),
                        "{alert} shows $labels.{label}, which {used:?} lack"
                    );
                }
            }
            ensure!(
                ["warning", "critical"].contains(&rule["labels"]["severity"].as_str().unwrap_or_default())
            );
            alerts.insert(alert.to_string());
        }
    }
    assert_eq!(
        alerts,
        BTreeSet::from(
            [
                "CephdrRgwSyncLagAboveRpo",
                "CephdrRgwMetadataSyncStalled",
                "CephdrRbdMirrorDaemonDown",
                "CephdrRbdImageUnhealthy",
                "CephdrRbdImageLagTwiceRpo",
                "CephdrRbdImageLagThriceRpo",
                "CephdrFailoverFailed",
                "CephdrReconcileErrors",
            ]
            .map(String::from)
        )
    );

    let dashboard: Value = serde_json::from_str(
        find(&docs, "ConfigMap", "t-cephdr-dashboard")?["data"]["cephdr.json"]
            .as_str()
            .context("dashboard")?,
    )?;
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().context("panels")? {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queried.extend(support::metric_names(target["expr"].as_str().context("expr")?));
        }
    }
    let unknown: Vec<_> = queried
        .iter()
        .filter(|name| !exported.contains_key(*name))
        .collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics nobody exports: {unknown:?}"
    );
    assert!(queried.len() >= 10, "{queried:?}");

    let monitor = find(&docs, "ServiceMonitor", "t-cephdr")?;
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "http-metrics");
    assert_eq!(
        find(&docs, "Service", "t-cephdr-metrics")?["spec"]["ports"][0]["name"],
        "http-metrics"
    );
    Ok(())
}

#[tokio::test]
async fn helm_install_watching_every_namespace_grants_what_the_controllers_need_and_no_more() -> Result<()> {
    cephdr_e2e::init_logging();
    let plane = shared_control_plane().await?;
    let admin = plane.client().await?;
    let install = helm_install(plane, "cephdr-all", &[]).await?;

    // The CRDs, the RBAC and the Deployment are in the API server.
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for crd in cephdr::api::crds() {
        crds.get(crd.metadata.name.as_deref().unwrap_or_default()).await?;
    }
    let cluster_role = json_of(
        Api::<ClusterRole>::all(admin.clone())
            .get(&install.release)
            .await?,
    )?;
    assert_eq!(rules(&cluster_role), rules_of(&controller_rules()));
    let deployment = install
        .namespace
        .api::<Deployment>()
        .get(&install.release)
        .await?;
    support::assert_hardened(&json_of(&deployment)?)?;

    // The operator as the chart runs it: its ServiceAccount's token, leader election on the chart's Lease.
    let client = install.service_account_client(plane).await?;
    let apps = TestNamespace::new(admin.clone(), "cephdr-apps").await?;
    let _exclusive = support::one_operator_at_a_time().await;
    let sites = SimulatedSites::start(plane, &apps).await?;
    let operator = OperatorRun::start(client.clone(), None, &install).await?;
    support::converge_pool_and_fail_over(&apps, &sites).await?;
    let lease = install.namespace.api::<Lease>().get(&install.release).await?;
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some(operator.identity.as_str())
    );
    let metrics = operator.scrape().await?;
    assert!(
        metrics.contains("cephdr_rbd_pool_rpo_seconds{site=\"site-a\",pool=\"rbd\"} 300"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("cephdr_failover_duration_seconds_count{action=\"planned\",outcome=\"completed\"} 1"),
        "{metrics}"
    );

    // No more than that: nothing outside the five kinds, their Secrets, Events and the one Lease.
    assert_forbidden(
        "list pods",
        Api::<Pod>::all(client.clone()).list(&ListParams::default()).await,
    )?;
    assert_forbidden(
        "list configmaps",
        api_in::<ConfigMap>(&client, &apps.name)
            .list(&ListParams::default())
            .await,
    )?;
    assert_forbidden(
        "delete a namespace",
        Api::<Namespace>::all(client.clone())
            .delete(&apps.name, &DeleteParams::default())
            .await,
    )?;
    assert_forbidden(
        "delete a CephSite",
        api_in::<CephSite>(&client, &apps.name)
            .delete("site-a", &DeleteParams::default())
            .await,
    )?;
    assert_forbidden(
        "delete a Secret",
        api_in::<Secret>(&client, &apps.name)
            .delete("site-a-agent", &DeleteParams::default())
            .await,
    )?;
    assert_forbidden(
        "create a Deployment",
        api_in::<Deployment>(&client, &apps.name)
            .create(&PostParams::default(), &deployment)
            .await,
    )?;
    assert_forbidden(
        "read a CRD",
        Api::<CustomResourceDefinition>::all(client.clone())
            .get("cephsites.cephdr.io")
            .await,
    )?;
    assert_forbidden(
        "read another Lease",
        api_in::<Lease>(&client, &install.namespace.name)
            .get("kube-scheduler")
            .await,
    )?;
    assert_forbidden(
        "list Leases",
        api_in::<Lease>(&client, &install.namespace.name)
            .list(&ListParams::default())
            .await,
    )?;
    support::delete_resources(&apps).await?;
    operator.stop().await?;

    // Uninstalling removes the operator but never the CRDs (Helm leaves what it installed from crds/), so
    // no user's resources go with it.
    run(plane.helm().args([
        "uninstall",
        &install.release,
        "--namespace",
        &install.namespace.name,
    ]))?;
    assert!(Api::<ClusterRole>::all(admin.clone())
        .get_opt(&install.release)
        .await?
        .is_none());
    assert!(install
        .namespace
        .api::<Deployment>()
        .get_opt(&install.release)
        .await?
        .is_none());
    for crd in cephdr::api::crds() {
        crds.get(crd.metadata.name.as_deref().unwrap_or_default()).await?;
    }
    Ok(())
}

#[tokio::test]
async fn helm_install_watching_one_namespace_confines_the_operator_to_it() -> Result<()> {
    cephdr_e2e::init_logging();
    let plane = shared_control_plane().await?;
    let admin = plane.client().await?;
    let apps = TestNamespace::new(admin.clone(), "cephdr-watched").await?;
    let install = helm_install(plane, "cephdr-one", &[&format!("watchNamespace={}", apps.name)]).await?;
    assert!(
        Api::<ClusterRole>::all(admin.clone())
            .get_opt(&install.release)
            .await?
            .is_none(),
        "a namespaced install must not create a ClusterRole"
    );
    let role = json_of(api_in::<Role>(&admin, &apps.name).get(&install.release).await?)?;
    assert_eq!(rules(&role), rules_of(&controller_rules()));
    let binding = api_in::<RoleBinding>(&admin, &apps.name)
        .get(&install.release)
        .await?;
    assert_eq!(
        binding.subjects.unwrap_or_default()[0].namespace.as_deref(),
        Some(install.namespace.name.as_str())
    );

    let client = install.service_account_client(plane).await?;
    let _exclusive = support::one_operator_at_a_time().await;
    let sites = SimulatedSites::start(plane, &apps).await?;
    let operator = OperatorRun::start(client.clone(), Some(apps.name.clone()), &install).await?;
    support::converge_pool_and_fail_over(&apps, &sites).await?;

    // Only the watched namespace: not its neighbours' Secrets, not the same kinds elsewhere, not pods here.
    let elsewhere = TestNamespace::new(admin.clone(), "cephdr-elsewhere").await?;
    elsewhere
        .api::<Secret>()
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "private"}, "stringData": {"k": "v"}}))?,
        )
        .await?;
    assert_forbidden(
        "read a Secret elsewhere",
        api_in::<Secret>(&client, &elsewhere.name).get("private").await,
    )?;
    assert_forbidden(
        "read a Secret in the release namespace",
        api_in::<Secret>(&client, &install.namespace.name)
            .list(&ListParams::default())
            .await,
    )?;
    assert_forbidden(
        "list Secrets everywhere",
        Api::<Secret>::all(client.clone())
            .list(&ListParams::default())
            .await,
    )?;
    assert_forbidden(
        "list CephSites everywhere",
        Api::<CephSite>::all(client.clone())
            .list(&ListParams::default())
            .await,
    )?;
    assert_forbidden(
        "list RbdMirrorPools elsewhere",
        api_in::<RbdMirrorPool>(&client, &elsewhere.name)
            .list(&ListParams::default())
            .await,
    )?;
    assert_forbidden(
        "list pods in the watched namespace",
        api_in::<Pod>(&client, &apps.name)
            .list(&ListParams::default())
            .await,
    )?;
    support::delete_resources(&apps).await?;
    operator.stop().await?;
    Ok(())
}

#[tokio::test]
async fn kustomize_base_and_namespaced_overlay_apply_and_grant_the_charts_rules() -> Result<()> {
    let plane = shared_control_plane().await?;
    let admin = plane.client().await?;
    let chart_all = helm_template(plane, "ops", &[])?;
    let chart_one = helm_template(plane, "ops", &["watchNamespace=ops"])?;

    // As committed: what `kubectl apply -k` sends, checked by the API server without being stored.
    let _ = Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "cephdr-system"}}))?,
        )
        .await;
    for dir in ["deploy/base", "deploy/overlays/namespaced"] {
        run(plane
            .kubectl()
            .args(["apply", "--dry-run=server", "-k"])
            .arg(repo().join(dir)))?;
    }

    let base = kubectl_kustomize(plane, &repo().join("deploy/base"))?;
    assert_eq!(
        rules(find(&base, "ClusterRole", "cephdr-operator")?),
        rules(find(&chart_all, "ClusterRole", "t-cephdr")?)
    );
    assert_eq!(
        rules(find(&base, "Role", "cephdr-operator-leader-election")?),
        rules_of(&leader_election_rules("cephdr-operator"))
    );
    let overlay = kubectl_kustomize(plane, &repo().join("deploy/overlays/namespaced"))?;
    assert!(!kinds(&overlay).contains("ClusterRole") && !kinds(&overlay).contains("ClusterRoleBinding"));
    assert_eq!(
        rules(find(&overlay, "Role", "cephdr-operator")?),
        rules(find(&chart_one, "Role", "t-cephdr")?)
    );
    for docs in [&base, &overlay] {
        let deployment = find(docs, "Deployment", "cephdr-operator")?;
        let chart_deployment = find(&chart_all, "Deployment", "t-cephdr")?;
        for path in [
            "/securityContext",
            "/containers/0/securityContext",
            "/containers/0/livenessProbe",
            "/containers/0/readinessProbe",
            "/containers/0/ports",
        ] {
            assert_eq!(
                deployment["spec"]["template"]["spec"].pointer(path),
                chart_deployment["spec"]["template"]["spec"].pointer(path),
                "deploy/ and the chart differ at {path}"
            );
        }
    }

    // Applied for real, each into a fresh namespace of its own.
    for (dir, namespaced) in [("deploy/base", false), ("deploy/overlays/namespaced", true)] {
        let ns = unique_name("kustomize");
        let wrapper = wrapper_kustomization(plane, &ns, &repo().join(dir))?;
        run(plane.kubectl().args(["apply", "-k"]).arg(&wrapper))?;
        let fresh = TestNamespace {
            client: admin.clone(),
            name: ns.clone(),
        };
        let deployment = fresh
            .api::<Deployment>()
            .get(&format!("cephdr-operator-{ns}"))
            .await?;
        let deployment = json_of(deployment)?;
        support::assert_hardened(&deployment)?;
        let env = &container(&deployment)["env"];
        let watches_own = env.as_array().context("env")?.iter().any(|e| {
            e["name"] == "CEPHDR_WATCH_NAMESPACE"
                && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
        });
        assert_eq!(watches_own, namespaced, "{dir}: {env}");
        let name = format!("cephdr-operator-{ns}");
        let subjects = if namespaced {
            assert!(Api::<ClusterRoleBinding>::all(admin.clone())
                .get_opt(&name)
                .await?
                .is_none());
            json_of(fresh.api::<RoleBinding>().get(&name).await?)?["subjects"].clone()
        } else {
            json_of(Api::<ClusterRoleBinding>::all(admin.clone()).get(&name).await?)?["subjects"].clone()
        };
        assert_eq!(
            subjects,
            json!([{"kind": "ServiceAccount", "name": name, "namespace": ns}])
        );
        fresh
            .api::<Service>()
            .get(&format!("cephdr-operator-metrics-{ns}"))
            .await?;
    }
    Ok(())
}

#[test]
fn gitops_examples_deploy_the_kustomize_base() -> Result<()> {
    let argo: Value = serde_yaml::from_str(&std::fs::read_to_string(
        repo().join("deploy/gitops/argocd-application.yaml"),
    )?)?;
    assert_eq!(argo["kind"], "Application");
    let path = argo["spec"]["source"]["path"].as_str().context("source.path")?;
    assert!(repo().join(path).join("kustomization.yaml").is_file(), "{path}");
    assert_eq!(argo["spec"]["destination"]["namespace"], "cephdr-system");

    let flux = documents(&std::fs::read_to_string(
        repo().join("deploy/gitops/flux-kustomization.yaml"),
    )?)?;
    let source = find(&flux, "GitRepository", "cephdr")?;
    let kustomization = find(&flux, "Kustomization", "cephdr")?;
    assert_eq!(
        kustomization["spec"]["sourceRef"],
        json!({"kind": "GitRepository", "name": source["metadata"]["name"]})
    );
    let path = kustomization["spec"]["path"].as_str().context("spec.path")?;
    assert!(repo().join(path).join("kustomization.yaml").is_file(), "{path}");
    assert_eq!(source["spec"]["url"], argo["spec"]["source"]["repoURL"]);
    Ok(())
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

fn rules_of(value: &Value) -> BTreeSet<String> {
    rules(&json!({ "rules": value }))
}
