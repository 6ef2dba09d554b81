//! Objects as the API server returns them once the operator has written their statuses, in namespace `dr`.

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::{
    api::{
        failover_request::StepState, CephRealm, CephSite, CephZone, FailoverPhase, FailoverRequest,
        RbdMirrorPool,
    },
    cli::status::Objects,
};

fn object<K: DeserializeOwned>(kind: &str, name: &str, spec: Value, status: Value) -> K {
    serde_json::from_value(json!({
        "apiVersion": "cephdr.io/v1alpha1", "kind": kind,
        "metadata": {"name": name, "namespace": "dr", "generation": 1},
        "spec": spec, "status": status,
    }))
    .expect("a well-formed fixture")
}

fn ready(value: bool, message: &str) -> Value {
    let status = if value { "True" } else { "False" };
    json!({"type": "Ready", "status": status, "reason": "Reconciled", "message": message,
           "lastTransitionTime": "2026-12-01T10:00:00Z"})
}

pub fn site(name: &str, reachable: bool, health: &str) -> CephSite {
    let spec = json!({"agent": {"url": format!("https://{name}:7443"),
                                "tokenSecretRef": {"name": "agent", "key": "token"}}});
    let status = json!({"reachable": reachable, "health": health, "cephVersion": "18.2.4",
                        "conditions": [ready(reachable, "")]});
    object("CephSite", name, spec, status)
}

pub fn realm(name: &str, master_zone: &str, epoch: u32) -> CephRealm {
    let spec = json!({"zoneGroups": [{"name": "us", "master": true}]});
    let status = json!({"realmId": "r-1", "period": {"id": "p-1", "epoch": epoch},
                        "masterZoneGroup": "us", "masterZone": master_zone, "conditions": [ready(true, "")]});
    object("CephRealm", name, spec, status)
}

/// A zone of realm `prod`; a secondary reports its metadata caught up and its data two shards behind.
pub fn zone(name: &str, site: &str, role: &str, lag: Option<u64>) -> CephZone {
    let spec = json!({"realm": "prod", "zoneGroup": "us", "site": site, "master": role == "master",
                      "endpoints": [format!("http://{site}:8080")], "rpoSeconds": 300});
    let sync = (role == "secondary").then(|| {
        json!({"metadata": {"state": "caught-up", "behindShards": 0},
               "data": [{"source": "us-east", "state": "behind", "behindShards": 2}]})
    });
    let status = json!({"role": role, "sync": sync, "lagSeconds": lag, "conditions": [ready(true, "")]});
    object("CephZone", name, spec, status)
}

/// A pool primary on `primary`, with images given as (name, state, lag).
pub fn pool(name: &str, primary: &str, rpo: u32, images: &[(&str, &str, Option<u64>)]) -> RbdMirrorPool {
    let spec = json!({"pool": name, "rpoSeconds": rpo,
                      "sites": [{"site": "site-a", "role": "primary"}, {"site": "site-b", "role": "secondary"}]});
    let images: Vec<Value> = images
        .iter()
        .map(|(image, state, lag)| json!({"name": image, "primarySite": primary, "state": state, "lagSeconds": lag}))
        .collect();
    let max_lag = images.iter().filter_map(|i| i["lagSeconds"].as_u64()).max();
    let rpo_met = max_lag.is_none_or(|lag| lag <= u64::from(rpo));
    let status = json!({"primarySite": primary, "images": images,
        "summary": {"health": "OK", "images": images.len(), "maxLagSeconds": max_lag},
        "conditions": [ready(true, ""),
            {"type": "RpoMet", "status": if rpo_met { "True" } else { "False" }, "reason": "LagAboveTarget",
             "message": "", "lastTransitionTime": "2026-12-01T10:00:00Z"}]});
    object("RbdMirrorPool", name, spec, status)
}

/// The rows of a planned failover of `rbd/db` to site-b, in order.
pub const PLANNED_STEPS: [(&str, &str); 3] = [
    ("demote", "rbd/db@site-a"),
    ("await-sync", "rbd/db@site-b"),
    ("promote", "rbd/db@site-b"),
];

/// A planned failover of pool `rbd` to site-b whose first rows are in `states`.
pub fn request(name: &str, phase: FailoverPhase, states: &[StepState]) -> FailoverRequest {
    let spec = json!({"action": "planned", "targetSite": "site-b", "targets": {"rbdMirrorPools": ["rbd"]}});
    let mut request: FailoverRequest = object("FailoverRequest", name, spec, json!({}));
    let status = request.status.get_or_insert_with(Default::default);
    status.phase = phase;
    status.steps = PLANNED_STEPS
        .iter()
        .zip(states)
        .map(
            |((step, target), state)| crate::api::failover_request::StepStatus {
                name: step.to_string(),
                target: target.to_string(),
                state: *state,
                ..Default::default()
            },
        )
        .collect();
    let message = match phase {
        FailoverPhase::Completed => "planned failover to site site-b completed in 3.2 s".to_string(),
        _ => format!("{phase:?}: waiting for rbd/db@site-b"),
    };
    status.conditions = vec![
        serde_json::from_value(ready(phase == FailoverPhase::Completed, &message))
            .expect("a well-formed condition"),
    ];
    request
}

/// Two sites, a realm with two zones, a pool with two images (one beyond the RPO), a running failover
/// and a completed one.
pub fn objects() -> Objects {
    Objects {
        sites: vec![
            site("site-a", true, "HEALTH_OK"),
            site("site-b", false, "HEALTH_WARN"),
        ],
        realms: vec![realm("prod", "us-east", 3)],
        zones: vec![
            zone("us-east", "site-a", "master", None),
            zone("us-west", "site-b", "secondary", Some(40)),
        ],
        pools: vec![pool(
            "rbd",
            "site-a",
            1800,
            &[("db", "replaying", Some(12)), ("logs", "syncing", Some(2400))],
        )],
        requests: vec![
            request(
                "move",
                FailoverPhase::Syncing,
                &[StepState::Done, StepState::Running],
            ),
            request("old", FailoverPhase::Completed, &[StepState::Done]),
        ],
    }
}
