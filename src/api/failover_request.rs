//! `FailoverRequest`: one failover, failback, resync or drill. Its spec is immutable; its status is the
//! persisted state machine that a restarted operator resumes from.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A one-shot DR operation. Create a new request for each operation; the spec cannot change.
#[derive(CustomResource, KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "cephdr.io",
    version = "v1alpha1",
    kind = "FailoverRequest",
    namespaced,
    status = "FailoverRequestStatus",
    shortname = "fr",
    category = "cephdr",
    printcolumn(name = "Action", type_ = "string", json_path = ".spec.action"),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.targetSite"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "RTO", type_ = "number", json_path = ".status.rtoSeconds"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.spec == oldSelf.spec").message("a FailoverRequest's spec is immutable: create a new request")
)]
#[x_kube(validation = Rule::new("size(self.targets.rbdMirrorPools) + size(self.targets.realms) > 0").message("targets must name at least one rbdMirrorPool or realm"))]
#[serde(rename_all = "camelCase")]
pub struct FailoverRequestSpec {
    pub action: FailoverAction,
    /// The `CephSite` that is primary (and RGW master) when the request completes; for `drill`, the site
    /// where the copy is checked.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"))]
    pub target_site: String,
    pub targets: FailoverTargets,
    /// Planned failover refuses to start while any image lags more than this.
    #[schemars(range(min = 0, max = 86400))]
    pub max_lag_seconds: Option<u32>,
    /// Seconds a site the request needs may stay unreachable before the request fails (default 600). Once
    /// the target may have taken over (a promote or period commit was handed out), the request waits for
    /// as long as it takes instead: failing then could leave two primaries.
    #[schemars(range(min = 10, max = 86400))]
    pub unreachable_timeout_seconds: Option<u32>,
    /// How many images are demoted or promoted at once (default 16).
    #[schemars(range(min = 1, max = 256))]
    pub concurrency: Option<u32>,
    /// Compute and show the plan in status without touching Ceph.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(JsonSchema, Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum FailoverAction {
    /// Demote on the source, wait for the final snapshot to sync, promote on the target.
    Planned,
    /// Force-promote on the target while the source is unreachable.
    Emergency,
    /// After an emergency failover: resync the old primary, then move back with a planned failover.
    Failback,
    /// Demote the stale side of a split brain and resync it from the target.
    Resync,
    /// Prove the target's copy is usable without promoting anything.
    Drill,
}

impl FailoverAction {
    /// The action as the spec spells it: metric labels and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            FailoverAction::Planned => "planned",
            FailoverAction::Emergency => "emergency",
            FailoverAction::Failback => "failback",
            FailoverAction::Resync => "resync",
            FailoverAction::Drill => "drill",
        }
    }
}

#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailoverTargets {
    /// `RbdMirrorPool` names in this namespace.
    #[serde(default)]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub rbd_mirror_pools: Vec<String>,
    /// `CephRealm` names in this namespace: the realm's zone on the target site becomes master.
    #[serde(default)]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub realms: Vec<String>,
}

impl FailoverRequest {
    /// Whether this request is moving the primary of `pool` (in its namespace) right now: started, not
    /// finished, not a dry run, and an action that demotes or promotes (a drill only reads).
    pub fn moves_pool(&self, namespace: Option<&str>, pool: &str) -> bool {
        let phase = self.status.as_ref().map(|s| s.phase).unwrap_or_default();
        self.namespace().as_deref() == namespace
            && self.spec.targets.rbd_mirror_pools.iter().any(|p| p == pool)
            && !self.spec.dry_run
            && self.spec.action != FailoverAction::Drill
            && phase != FailoverPhase::Pending
            && !phase.is_terminal()
    }
}

impl FailoverTargets {
    /// Whether both name a common pool or realm.
    pub fn overlap(&self, other: &FailoverTargets) -> bool {
        self.rbd_mirror_pools
            .iter()
            .any(|p| other.rbd_mirror_pools.contains(p))
            || self.realms.iter().any(|r| other.realms.contains(r))
    }
}

#[derive(JsonSchema, Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub enum FailoverPhase {
    #[default]
    Pending,
    Preflight,
    Demoting,
    Syncing,
    Promoting,
    Verifying,
    Completed,
    Failed,
}

impl FailoverPhase {
    pub fn is_terminal(self) -> bool {
        matches!(self, FailoverPhase::Completed | FailoverPhase::Failed)
    }
}

#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailoverRequestStatus {
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub phase: FailoverPhase,
    /// Every step of the plan, in order, with what happened.
    #[serde(default)]
    pub steps: Vec<StepStatus>,
    pub started_at: Option<Time>,
    pub completed_at: Option<Time>,
    /// Seconds from start to completion.
    pub rto_seconds: Option<f64>,
    /// Emergency failover: seconds of writes on the old primary that may be lost (since its last synced
    /// snapshot).
    pub data_loss_window_seconds: Option<u64>,
    /// Drill: the measured recovery point (age of the snapshot the copy was checked at).
    pub measured_rpo_seconds: Option<u64>,
    /// Drill: seconds the copy checks took, from the first read to the last comparison (each reads the
    /// copy on the target and the snapshot it mirrors on the other site, and compares their checksums).
    pub check_seconds: Option<f64>,
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    /// What the step does, e.g. `demote`, `promote`, `commit-period`.
    pub name: String,
    /// What it acts on, e.g. `rbd/db-vol@site-a`.
    pub target: String,
    pub state: StepState,
    pub started_at: Option<Time>,
    pub finished_at: Option<Time>,
    pub message: Option<String>,
}

#[derive(JsonSchema, Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    #[default]
    Pending,
    Running,
    Done,
    Failed,
    Skipped,
}

impl StepState {
    /// The state as status spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Done => "done",
            StepState::Failed => "failed",
            StepState::Skipped => "skipped",
        }
    }

    /// Whether the row will not change any more.
    pub fn is_settled(self) -> bool {
        matches!(self, StepState::Done | StepState::Failed | StepState::Skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(action: FailoverAction, phase: Option<FailoverPhase>, dry_run: bool) -> FailoverRequest {
        let spec = FailoverRequestSpec {
            action,
            target_site: "site-b".into(),
            targets: FailoverTargets {
                rbd_mirror_pools: vec!["rbd".into()],
                realms: vec![],
            },
            max_lag_seconds: None,
            unreachable_timeout_seconds: None,
            concurrency: None,
            dry_run,
        };
        let mut request = FailoverRequest::new("move", spec);
        request.metadata.namespace = Some("dr".into());
        request.status = phase.map(|phase| FailoverRequestStatus {
            phase,
            ..FailoverRequestStatus::default()
        });
        request
    }

    #[test]
    fn a_request_moves_its_pools_from_its_start_to_its_end_unless_it_only_reads() {
        use FailoverPhase::*;
        let running = request(FailoverAction::Planned, Some(Demoting), false);
        assert!(running.moves_pool(Some("dr"), "rbd"));
        assert!(!running.moves_pool(Some("dr"), "other"), "another pool");
        assert!(!running.moves_pool(Some("prod"), "rbd"), "another namespace");
        for phase in [Preflight, Syncing, Promoting, Verifying] {
            assert!(request(FailoverAction::Emergency, Some(phase), false).moves_pool(Some("dr"), "rbd"));
        }
        for phase in [None, Some(Pending), Some(Completed), Some(Failed)] {
            assert!(
                !request(FailoverAction::Planned, phase, false).moves_pool(Some("dr"), "rbd"),
                "{phase:?}"
            );
        }
        assert!(
            !request(FailoverAction::Planned, Some(Demoting), true).moves_pool(Some("dr"), "rbd"),
            "dry run"
        );
        assert!(
            !request(FailoverAction::Drill, Some(Verifying), false).moves_pool(Some("dr"), "rbd"),
            "drill"
        );
    }
}
