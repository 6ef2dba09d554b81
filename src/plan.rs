//! The value every planner returns: what to change, where, and what to report. Pure data, so the same value
//! drives reconciles, dry runs and tests.

use std::{fmt, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::agent::Step;

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
                .find(|c| c.type_ == crate::api::conditions::READY)
                .map(|c| c.message.clone())
                .unwrap_or_default();
        }
        self.steps
            .iter()
            .map(SiteStep::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
pub mod testing;
