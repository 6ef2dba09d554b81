//! Fixtures the realm and zone planner tests share: spec builders, a small pure model of RGW multisite on
//! several Ceph clusters (`rgw.rs`), and a fleet of `CephRealm` and `CephZone` objects driven through both
//! planners against that model (`fleet.rs`).

pub mod fleet;
pub mod rgw;

use std::time::Duration;

use crate::{
    agent::{AgentError, SystemKeys},
    api::{
        common::DeletionPolicy,
        conditions::{READY, RECONCILING, STALLED},
        realm::{
            CephRealmSpec, SyncFlow, SyncFlowType, SyncGroup, SyncGroupStatus, SyncPipe, SyncPolicy,
            ZoneGroupSpec,
        },
        zone::CephZoneSpec,
    },
    plan::{
        testing::{find, has, rendered, status_reason},
        Plan,
    },
};

/// The realm every fixture uses.
pub const REALM: &str = "prod";
/// The master zonegroup of [`realm`].
pub const MASTER_GROUP: &str = "us";

/// The sync user's keys as the realm's Secret holds them.
pub fn keys() -> SystemKeys {
    SystemKeys {
        access_key: "SYNCACCESSKEY".into(),
        secret_key: crate::agent::Sensitive("sync-secret".into()),
    }
}

/// Builds a `CephRealm` spec: zonegroup `us` (master), no sync policy, `deletionPolicy: Delete`.
pub struct RealmBuilder(CephRealmSpec);

pub fn realm() -> RealmBuilder {
    RealmBuilder(CephRealmSpec {
        zone_groups: vec![ZoneGroupSpec {
            name: MASTER_GROUP.into(),
            master: true,
            sync_policy: None,
        }],
        sync_user_secret_ref: None,
        deletion_policy: DeletionPolicy::Delete,
    })
}

impl RealmBuilder {
    /// Another, non-master zonegroup.
    pub fn zone_group(mut self, name: &str) -> Self {
        self.0.zone_groups.push(ZoneGroupSpec {
            name: name.into(),
            master: false,
            sync_policy: None,
        });
        self
    }

    /// Sets the sync policy groups of zonegroup `name` (which must be declared).
    pub fn policy(mut self, name: &str, groups: Vec<SyncGroup>) -> Self {
        let group = self.0.zone_groups.iter_mut().find(|g| g.name == name);
        group.expect("zonegroup declared before its policy").sync_policy = Some(SyncPolicy { groups });
        self
    }

    pub fn retain(mut self) -> Self {
        self.0.deletion_policy = DeletionPolicy::Retain;
        self
    }

    pub fn build(self) -> CephRealmSpec {
        self.0
    }
}

/// A zonegroup-level sync group: enabled, a symmetrical flow between `zones`, one pipe for all buckets.
pub fn mirror_group(id: &str, zones: &[&str]) -> SyncGroup {
    let zones: Vec<String> = zones.iter().map(|z| z.to_string()).collect();
    SyncGroup {
        id: id.into(),
        status: SyncGroupStatus::Enabled,
        bucket: None,
        flows: vec![SyncFlow {
            id: format!("{id}-flow"),
            flow_type: SyncFlowType::Symmetrical,
            zones: zones.clone(),
            source_zone: None,
            dest_zone: None,
        }],
        pipes: vec![pipe(&format!("{id}-pipe"), zones.clone(), zones)],
    }
}

/// A bucket-level sync group that only allows sync of `bucket` from `source` to `dest`.
pub fn bucket_group(id: &str, bucket: &str, source: &str, dest: &str) -> SyncGroup {
    SyncGroup {
        id: id.into(),
        status: SyncGroupStatus::Allowed,
        bucket: Some(bucket.into()),
        flows: Vec::new(),
        pipes: vec![pipe(
            &format!("{id}-pipe"),
            vec![source.into()],
            vec![dest.into()],
        )],
    }
}

pub fn pipe(id: &str, source_zones: Vec<String>, dest_zones: Vec<String>) -> SyncPipe {
    SyncPipe {
        id: id.into(),
        source_zones,
        dest_zones,
        source_bucket: None,
        dest_bucket: None,
        prefix: None,
    }
}

/// Builds a `CephZone`: its object name (the zone name in Ceph) and spec, in zonegroup `us` of realm `prod`,
/// secondary, endpoint `http://<name>.rgw.example:8080`.
#[derive(Clone, Debug)]
pub struct ZoneBuilder {
    pub name: String,
    pub spec: CephZoneSpec,
}

pub fn zone(name: &str, site: &str) -> ZoneBuilder {
    ZoneBuilder {
        name: name.into(),
        spec: CephZoneSpec {
            realm: REALM.into(),
            zone_group: MASTER_GROUP.into(),
            site: site.into(),
            zone_name: None,
            master: false,
            endpoints: vec![endpoint(name)],
            read_only: false,
            rpo_seconds: None,
            deletion_policy: DeletionPolicy::Delete,
        },
    }
}

/// The endpoint [`zone`] gives a zone.
pub fn endpoint(zone: &str) -> String {
    format!("http://{zone}.rgw.example:8080")
}

impl ZoneBuilder {
    pub fn master(mut self) -> Self {
        self.spec.master = true;
        self
    }

    pub fn in_group(mut self, zone_group: &str) -> Self {
        self.spec.zone_group = zone_group.into();
        self
    }

    pub fn endpoints(mut self, endpoints: &[&str]) -> Self {
        self.spec.endpoints = endpoints.iter().map(|e| e.to_string()).collect();
        self
    }

    pub fn read_only(mut self) -> Self {
        self.spec.read_only = true;
        self
    }

    pub fn rpo(mut self, seconds: u32) -> Self {
        self.spec.rpo_seconds = Some(seconds);
        self
    }

    pub fn retain(mut self) -> Self {
        self.spec.deletion_policy = DeletionPolicy::Retain;
        self
    }
}

/// The agent of `site` does not answer.
pub fn unreachable_agent(site: &str) -> AgentError {
    AgentError::Unreachable {
        site: site.into(),
        message: "connection refused".into(),
    }
}

/// One failure of each kind an agent call can end in on `site`, with the condition reason it must give.
pub fn agent_failures(site: &str) -> Vec<(AgentError, &'static str)> {
    vec![
        (unreachable_agent(site), "AgentUnreachable"),
        (
            AgentError::Unauthorized { site: site.into() },
            "AgentUnauthorized",
        ),
        (
            AgentError::CommandFailed {
                site: site.into(),
                command: "radosgw-admin realm get".into(),
                exit_code: Some(5),
                stderr: "failed to init realm: (5) Input/output error".into(),
            },
            "CephCommandFailed",
        ),
        (
            AgentError::NotFound {
                site: site.into(),
                what: "realm prod".into(),
            },
            "NotFound",
        ),
        (
            AgentError::Refused {
                site: site.into(),
                action: "realm get".into(),
                message: "busy".into(),
            },
            "Refused",
        ),
        (
            AgentError::Parse {
                site: site.into(),
                command: "radosgw-admin period get".into(),
                message: "missing field `epoch`".into(),
            },
            "UnexpectedCephOutput",
        ),
    ]
}

/// `plan` waits (Ready False, Reconciling True, both for `why`, not Stalled) with no steps, its message says
/// `says`, and it looks again soon.
pub fn assert_waits(plan: &Plan, why: &str, says: &str) {
    let conditions = &plan.conditions;
    assert!(plan.steps.is_empty(), "{:?}", rendered(&plan.steps));
    assert_eq!(status_reason(conditions, READY), ("False", why));
    assert_eq!(status_reason(conditions, RECONCILING), ("True", why));
    assert!(!has(conditions, STALLED));
    let message = &find(conditions, READY).message;
    assert!(message.contains(says), "{message:?} does not say {says:?}");
    assert_eq!(plan.requeue, Duration::from_secs(5));
}

/// `plan` is stalled for `why` (Stalled True, Ready False, Reconciling False) with no steps, its message says
/// `says`, and it waits for an edit.
pub fn assert_stalls(plan: &Plan, why: &str, says: &str) {
    let conditions = &plan.conditions;
    assert!(plan.steps.is_empty(), "{:?}", rendered(&plan.steps));
    assert_eq!(status_reason(conditions, STALLED), ("True", why));
    assert_eq!(status_reason(conditions, READY), ("False", why));
    assert_eq!(status_reason(conditions, RECONCILING).0, "False");
    let message = &find(conditions, STALLED).message;
    assert!(message.contains(says), "{message:?} does not say {says:?}");
    assert_eq!(plan.requeue, Duration::from_secs(60));
}
