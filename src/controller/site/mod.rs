//! `CephSite` controller: probes the site's agent and reports identity, version and health.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{api::Api, runtime::controller::Action, ResourceExt};
use tracing::instrument;

use super::{context::Context, error::Result, status};
use crate::{
    agent::ClusterInfo,
    api::{
        conditions::{self, reason},
        CephSite, CephSiteStatus,
    },
};

pub const CONTROLLER: &str = "cephsite";
/// How often a healthy site is probed.
const PROBE_INTERVAL: Duration = Duration::from_secs(30);

/// Ceph releases cephdr drives: Pacific (16) through Squid (19). Older ones lack snapshot-based mirroring
/// schedules and the sync policy commands; newer ones are untested.
pub const SUPPORTED_MAJOR_VERSIONS: std::ops::RangeInclusive<u32> = 16..=19;

#[instrument(skip_all, fields(site = %site.name_any(), namespace = site.namespace().unwrap_or_default()))]
pub async fn reconcile(site: Arc<CephSite>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    let probe = async {
        let agent = ctx.agents.connect(&site).await?;
        let started = std::time::Instant::now();
        let info = agent.cluster_info().await;
        let outcome = if info.is_ok() { "ok" } else { "error" };
        ctx.metrics.agent_request(
            &site.name_any(),
            "cluster-info",
            outcome,
            started.elapsed().as_secs_f64(),
        );
        info.map_err(super::error::Error::agent(&site.name_any()))
    }
    .await;
    let now = Timestamp::now();
    let mut new_status = site_status(probe.as_ref().map_err(|e| (e.reason(), e.to_string())), now);
    new_status.observed_generation = site.metadata.generation;
    new_status.conditions = status::complete_conditions(site.as_ref(), new_status.conditions, now);
    let api: Api<CephSite> = Api::namespaced(ctx.client.clone(), &site.namespace().unwrap_or_default());
    status::apply(&api, site.as_ref(), &new_status).await?;
    match probe {
        Ok(_) => {
            ctx.reset_backoff(site.as_ref());
            Ok(Action::requeue(PROBE_INTERVAL))
        }
        // Unreachable is reported in status; keep probing on the backoff schedule.
        Err(_) => Ok(Action::requeue(ctx.next_backoff(site.as_ref()))),
    }
}

/// The status a probe result implies (pure). `Err` carries the error's reason and message.
pub fn site_status(probe: Result<&ClusterInfo, (&'static str, String)>, now: Timestamp) -> CephSiteStatus {
    let probed_at = Some(Time(now));
    match probe {
        Err((why, message)) => CephSiteStatus {
            reachable: Some(false),
            last_probe_time: probed_at,
            conditions: vec![conditions::condition(
                conditions::READY,
                false,
                why,
                message,
                None,
            )],
            ..Default::default()
        },
        Ok(info) => {
            let ready = match major_version(&info.version) {
                _ if info.backup_store => conditions::condition(
                    conditions::READY,
                    true,
                    reason::RECONCILED,
                    format!("backup store reachable (cephdr {})", info.version),
                    None,
                ),
                Some(major) if SUPPORTED_MAJOR_VERSIONS.contains(&major) => conditions::condition(
                    conditions::READY,
                    true,
                    reason::RECONCILED,
                    format!("Ceph {} reachable, {}", info.version, info.health),
                    None,
                ),
                _ => conditions::condition(
                    conditions::READY,
                    false,
                    reason::UNSUPPORTED_VERSION,
                    format!(
                        "Ceph {} is not supported: cephdr drives releases {}..={} (Pacific to Squid)",
                        info.version,
                        SUPPORTED_MAJOR_VERSIONS.start(),
                        SUPPORTED_MAJOR_VERSIONS.end()
                    ),
                    None,
                ),
            };
            CephSiteStatus {
                reachable: Some(true),
                fsid: Some(info.fsid.clone()),
                ceph_version: Some(info.version.clone()),
                health: Some(info.health.clone()),
                health_checks: info.checks.clone(),
                last_probe_time: probed_at,
                conditions: vec![ready],
                observed_generation: None,
            }
        }
    }
}

/// The major release of a Ceph version string such as `16.2.15`.
pub fn major_version(version: &str) -> Option<u32> {
    version.split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(version: &str) -> ClusterInfo {
        ClusterInfo {
            fsid: "f".into(),
            version: version.into(),
            health: "HEALTH_OK".into(),
            checks: vec![],
            backup_store: false,
        }
    }

    #[test]
    fn a_reachable_supported_site_is_ready() {
        let status = site_status(Ok(&info("16.2.15")), Timestamp::UNIX_EPOCH);
        assert_eq!(status.reachable, Some(true));
        assert!(conditions::is_true(&status.conditions, conditions::READY));
        assert_eq!(status.ceph_version.as_deref(), Some("16.2.15"));
    }

    #[test]
    fn a_backup_store_is_ready_whatever_its_version() {
        let store = ClusterInfo {
            version: "0.1.0".into(),
            backup_store: true,
            ..info("0.1.0")
        };
        let status = site_status(Ok(&store), Timestamp::UNIX_EPOCH);
        let ready = conditions::find(&status.conditions, conditions::READY).unwrap();
        assert_eq!(ready.status, "True");
        assert!(ready.message.contains("backup store"), "{}", ready.message);
    }

    #[test]
    fn an_old_release_is_refused_with_the_reason() {
        let status = site_status(Ok(&info("15.2.17")), Timestamp::UNIX_EPOCH);
        let ready = &status.conditions[0];
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, reason::UNSUPPORTED_VERSION);
        assert!(ready.message.contains("15.2.17"));
    }

    #[test]
    fn an_unreachable_site_says_why() {
        let status = site_status(
            Err(("AgentUnreachable", "connection refused".into())),
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(status.reachable, Some(false));
        assert_eq!(status.conditions[0].reason, "AgentUnreachable");
        assert_eq!(status.conditions[0].message, "connection refused");
    }
}
