//! The value every planner returns: what to change, where, and what to report. Pure data, so the same value
//! drives reconciles, dry runs and tests.

use std::{fmt, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::{
    agent::Step,
    api::conditions::{condition, reason, READY, RECONCILING, STALLED},
};

/// A step bound to the `CephSite` (resource name) whose agent runs it.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteStep {
    pub site: String,
    pub step: Step,
}

impl SiteStep {
    pub fn new(site: impl Into<String>, step: Step) -> SiteStep {
        SiteStep {
            site: site.into(),
            step,
        }
    }
}

impl fmt::Display for SiteStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.step, self.site)
    }
}

/// What one reconcile does: run `steps` in order, then report `conditions`, then look again after `requeue`.
/// A converged resource plans no steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub steps: Vec<SiteStep>,
    /// Conditions without `observedGeneration` and `lastTransitionTime`; the status writer fills both.
    pub conditions: Vec<Condition>,
    pub requeue: Duration,
}

impl Plan {
    /// What is left to do, for a cleanup that cannot finish yet: the steps, or when none can run, why not
    /// (the `Ready` condition's message).
    pub fn pending(&self) -> String {
        if self.steps.is_empty() {
            return self
                .conditions
                .iter()
                .find(|c| c.type_ == READY)
                .map(|c| c.message.clone())
                .unwrap_or_default();
        }
        describe(&self.steps)
    }
}

/// Steps as a message lists them: `verb target@site, ...`.
pub fn describe(steps: &[SiteStep]) -> String {
    steps
        .iter()
        .map(SiteStep::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where a resource stands, as the kstatus conditions `Ready`, `Reconciling` and `Stalled` say it.
#[derive(Clone, Debug, PartialEq)]
pub enum Health {
    Ready(String),
    Progressing { reason: &'static str, message: String },
    Stalled { reason: &'static str, message: String },
}

impl Health {
    pub fn progressing(reason: &'static str, message: impl Into<String>) -> Health {
        Health::Progressing {
            reason,
            message: message.into(),
        }
    }

    pub fn stalled(reason: &'static str, message: impl Into<String>) -> Health {
        Health::Stalled {
            reason,
            message: message.into(),
        }
    }

    pub fn conditions(&self) -> Vec<Condition> {
        match self {
            Health::Ready(message) => vec![
                condition(READY, true, reason::RECONCILED, message.as_str(), None),
                condition(RECONCILING, false, reason::RECONCILED, "", None),
            ],
            Health::Progressing { reason, message } => vec![
                condition(READY, false, reason, message.as_str(), None),
                condition(RECONCILING, true, reason, message.as_str(), None),
            ],
            Health::Stalled { reason, message } => vec![
                condition(READY, false, reason, message.as_str(), None),
                condition(RECONCILING, false, reason, "", None),
                condition(STALLED, true, reason, message.as_str(), None),
            ],
        }
    }

    /// Nothing to run and nothing awaited: only an edit of the resource, which the watch sees, changes
    /// anything, so the next look can wait.
    pub fn settled(&self, steps: &[SiteStep]) -> bool {
        steps.is_empty() && !matches!(self, Health::Progressing { .. })
    }
}

#[cfg(test)]
pub mod testing;

#[cfg(test)]
mod tests {
    use super::{testing::kstatus_violation, *};

    #[test]
    fn every_health_reports_kstatus_consistent_conditions() {
        for health in [
            Health::Ready("realm at period epoch 2".into()),
            Health::progressing(reason::PROGRESSING, "applying commit-period r@a"),
            Health::stalled(reason::CONFLICT, "zones a and b all claim master"),
        ] {
            assert_eq!(kstatus_violation(&health.conditions()), None, "{health:?}");
        }
    }

    #[test]
    fn only_nothing_to_run_and_nothing_awaited_is_settled() {
        let commit = SiteStep::new("a", Step::CommitPeriod { realm: "r".into() });
        assert!(Health::Ready(String::new()).settled(&[]));
        assert!(Health::stalled(reason::CONFLICT, "").settled(&[]));
        assert!(!Health::progressing(reason::PROGRESSING, "").settled(&[]));
        assert!(!Health::Ready(String::new()).settled(&[commit]));
    }
}
