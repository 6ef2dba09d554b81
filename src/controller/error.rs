//! Controller errors: typed until `error_policy`, where they become a condition reason, an Event and a
//! metric label.

use crate::agent::AgentError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("site {site}: {source}")]
    Agent {
        site: String,
        #[source]
        source: AgentError,
    },
    #[error("CephSite {0} not found in this namespace")]
    SiteNotFound(String),
    #[error("Secret {name} has no key {key}")]
    SecretMissing { name: String, key: String },
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error("cleanup not finished, still to undo: {0}")]
    CleanupPending(String),
    #[error("kubernetes api call failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("adding the finalizer failed: {0}")]
    AddFinalizer(#[source] kube::Error),
    #[error("removing the finalizer failed: {0}")]
    RemoveFinalizer(#[source] kube::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A fixed CamelCase reason: condition reason, Event reason and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Agent { source, .. } => source.reason(),
            Error::SiteNotFound(_) => crate::api::conditions::reason::SITE_NOT_FOUND,
            Error::SecretMissing { .. } => crate::api::conditions::reason::SECRET_MISSING,
            Error::InvalidSpec(_) => crate::api::conditions::reason::INVALID_SPEC,
            Error::CleanupPending(_) => crate::api::conditions::reason::PROGRESSING,
            Error::Kube(_) | Error::AddFinalizer(_) | Error::RemoveFinalizer(_) => {
                crate::api::conditions::reason::KUBE_API_ERROR
            }
        }
    }

    /// Errors that only a change of the resource (or of what it refers to) can fix: retrying on a timer
    /// would only repeat them, so the controller waits for a change instead.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Error::InvalidSpec(_))
    }
}

impl Error {
    /// The reconcile started from an older copy of the object than the API server holds: a finalizer write
    /// failed its JSON-patch test (422) or conflicted (409), or the object is gone. Nothing is wrong, the
    /// watch is just behind, so it is retried at once without counting towards the backoff.
    pub fn is_stale_object(&self) -> bool {
        match self {
            Error::AddFinalizer(error) | Error::RemoveFinalizer(error) => {
                matches!(error, kube::Error::Api(status) if [404, 409, 422].contains(&status.code))
            }
            _ => false,
        }
    }

    /// A failure to reach `site`'s agent as a planner carries it: the agent's own error as it is, anything
    /// else (no such `CephSite`, a missing Secret) as the agent being unreachable.
    pub fn into_agent_error(self, site: &str) -> AgentError {
        match self {
            Error::Agent { source, .. } => source,
            other => AgentError::Unreachable {
                site: site.to_string(),
                message: other.to_string(),
            },
        }
    }

    pub fn agent(site: &str) -> impl FnOnce(AgentError) -> Error + '_ {
        move |source| Error::Agent {
            site: site.to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> kube::Error {
        let status = serde_json::json!({"status": "Failure", "code": code, "message": "test failed"});
        kube::Error::Api(Box::new(serde_json::from_value(status).expect("a Status")))
    }

    #[test]
    fn a_finalizer_patch_against_a_stale_copy_is_told_apart_from_real_failures() {
        assert!(Error::AddFinalizer(api(422)).is_stale_object());
        assert!(Error::RemoveFinalizer(api(409)).is_stale_object());
        assert!(Error::RemoveFinalizer(api(404)).is_stale_object());
        assert!(!Error::AddFinalizer(api(403)).is_stale_object());
        assert!(!Error::InvalidSpec("x".into()).is_stale_object());
        assert!(!Error::Kube(api(409)).is_stale_object());
        assert!(!Error::SiteNotFound("site-a".into()).is_stale_object());
    }

    #[test]
    fn a_planner_gets_the_agents_own_error_or_else_an_unreachable_agent() {
        let refused = AgentError::Refused {
            site: "site-a".into(),
            action: "realm get".into(),
            message: "busy".into(),
        };
        assert_eq!(
            Error::agent("site-a")(refused.clone()).into_agent_error("site-a"),
            refused
        );
        let missing = Error::SiteNotFound("site-b".into()).into_agent_error("site-b");
        assert_eq!(missing.reason(), "AgentUnreachable");
        assert_eq!(
            missing.to_string(),
            "agent of site site-b unreachable: CephSite site-b not found in this namespace"
        );
    }
}
