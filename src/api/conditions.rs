//! kstatus-compatible conditions: `Ready`, `Reconciling`, `Stalled`, plus domain types such as `Synced`.
//! Argo CD and Flux read these (kstatus): Ready=True with observedGeneration current is healthy,
//! Reconciling=True is in progress, Stalled=True is failed.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Condition, jiff::Timestamp};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const SYNCED: &str = "Synced";
pub const RPO_MET: &str = "RpoMet";

/// Condition reasons: fixed CamelCase strings, also used as Event reasons and metric labels.
pub mod reason {
    pub const RECONCILED: &str = "Reconciled";
    pub const PROGRESSING: &str = "Progressing";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const CONFLICT: &str = "Conflict";
    pub const SITE_NOT_FOUND: &str = "SiteNotFound";
    pub const SITE_NOT_READY: &str = "SiteNotReady";
    pub const AGENT_UNREACHABLE: &str = "AgentUnreachable";
    pub const CEPH_COMMAND_FAILED: &str = "CephCommandFailed";
    pub const SECRET_MISSING: &str = "SecretMissing";
    pub const KUBE_API_ERROR: &str = "KubernetesApiError";
    pub const WAITING_FOR_DEPENDENCY: &str = "WaitingForDependency";
    pub const CAUGHT_UP: &str = "CaughtUp";
    pub const BEHIND: &str = "Behind";
    pub const SPLIT_BRAIN: &str = "SplitBrain";
    pub const UNSUPPORTED_VERSION: &str = "UnsupportedVersion";
    pub const LAG_ABOVE_TARGET: &str = "LagAboveTarget";
    pub const LAG_WITHIN_TARGET: &str = "LagWithinTarget";
}

/// A condition as cephdr sets it; `last_transition_time` is filled by [`merge`].
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
    }
}

/// Merges `desired` into `current`: a condition keeps its `lastTransitionTime` unless its status flips;
/// conditions not in `desired` are dropped (cephdr owns every condition type it writes).
pub fn merge(current: &[Condition], desired: Vec<Condition>, now: Timestamp) -> Vec<Condition> {
    desired
        .into_iter()
        .map(|mut c| {
            c.last_transition_time = match current.iter().find(|old| old.type_ == c.type_) {
                Some(old) if old.status == c.status => old.last_transition_time.clone(),
                _ => k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
            };
            c
        })
        .collect()
}

/// The condition of `type_`, when set.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when `conditions` has `type_` with status True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let first = merge(
            &[],
            vec![condition(READY, false, reason::PROGRESSING, "", Some(1))],
            at(10),
        );
        assert_eq!(first[0].last_transition_time.0, at(10));
        let same = merge(
            &first,
            vec![condition(READY, false, reason::BEHIND, "other message", Some(2))],
            at(20),
        );
        assert_eq!(
            same[0].last_transition_time.0,
            at(10),
            "same status keeps the time although reason changed"
        );
        assert_eq!(same[0].reason, reason::BEHIND);
        let flipped = merge(
            &same,
            vec![condition(READY, true, reason::RECONCILED, "", Some(2))],
            at(30),
        );
        assert_eq!(flipped[0].last_transition_time.0, at(30));
    }

    #[test]
    fn conditions_no_longer_desired_are_dropped() {
        let both = merge(
            &[],
            vec![
                condition(READY, false, reason::PROGRESSING, "", None),
                condition(STALLED, true, reason::INVALID_SPEC, "", None),
            ],
            at(1),
        );
        let ready_only = merge(
            &both,
            vec![condition(READY, true, reason::RECONCILED, "", None)],
            at(2),
        );
        assert_eq!(ready_only.len(), 1);
        assert!(is_true(&ready_only, READY));
        assert!(!is_true(&ready_only, STALLED));
    }
}
