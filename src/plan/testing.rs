//! Assertions every planner's tests share: conditions by type, kstatus consistency, steps as text.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::SiteStep;
use crate::api::conditions::{READY, RECONCILING, STALLED};

/// The condition of `type_`; panics with the whole list when there is none.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {conditions:?}"))
}

pub fn has(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_)
}

/// `(status, reason)` of the condition of `type_`, for one-line assertions.
pub fn status_reason<'a>(conditions: &'a [Condition], type_: &str) -> (&'a str, &'a str) {
    let found = find(conditions, type_);
    (found.status.as_str(), found.reason.as_str())
}

/// Steps rendered `verb target@site`, for readable assertions.
pub fn rendered(steps: &[SiteStep]) -> Vec<String> {
    steps.iter().map(SiteStep::to_string).collect()
}

/// Why `conditions` break kstatus, if they do: each type at most once, `Ready` and `Reconciling` always
/// present, Ready True only without Reconciling True or Stalled True, Stalled True only with Ready False.
pub fn kstatus_violation(conditions: &[Condition]) -> Option<String> {
    let is = |type_: &str, status: &str| conditions.iter().any(|c| c.type_ == type_ && c.status == status);
    let mut types: Vec<&str> = conditions.iter().map(|c| c.type_.as_str()).collect();
    types.sort_unstable();
    let count = types.len();
    types.dedup();
    let problem = if types.len() != count {
        "a condition type appears twice"
    } else if !has(conditions, READY) || !has(conditions, RECONCILING) {
        "Ready or Reconciling is missing"
    } else if is(READY, "True") && is(RECONCILING, "True") {
        "Ready True while Reconciling True"
    } else if is(READY, "True") && is(STALLED, "True") {
        "Ready True while Stalled True"
    } else if is(STALLED, "True") && !is(READY, "False") {
        "Stalled True without Ready False"
    } else if is(STALLED, "True") && is(RECONCILING, "True") {
        "Stalled True while Reconciling True"
    } else {
        return None;
    };
    Some(format!("{problem}: {conditions:?}"))
}
