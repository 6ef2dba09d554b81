//! Zone planner tests: table tests per branch (`table.rs`), sync assessment and wedge recovery (`sync.rs`),
//! and properties against the RGW model of `controller::testing` (`props.rs`).

mod props;
mod sync;
mod table;

use k8s_openapi::jiff::Timestamp;

use super::{plan, Observed, ZonePlan};
use crate::{
    agent::{AgentResult, SourceSync, SyncShards, ZoneSync},
    controller::testing::{
        fleet::{self, at, Fleet},
        realm,
    },
    plan::testing::kstatus_violation,
};

/// `us-east` (master, `site-a`) and `us-west` (secondary, `site-b`) in zonegroup `us`, nothing in Ceph.
pub fn pair() -> Fleet {
    fleet::pair(realm().build())
}

/// [`pair`] once the realm and zone controllers converged.
pub fn converged_pair() -> Fleet {
    pair().converged()
}

/// Plans `name` after `edit` changed what its reconciler observed.
pub fn plan_observed(fleet: &Fleet, name: &str, edit: impl FnOnce(&mut Observed)) -> ZonePlan {
    let mut observed = fleet.zone_observed(name);
    edit(&mut observed);
    plan(&fleet.zone_object(name).spec, &observed, fleet.now)
}

/// `us-west` probed with `sync`; the plan is recorded as the status writer would, then `later` seconds pass.
pub fn probe(fleet: &mut Fleet, sync: AgentResult<ZoneSync>, later: i64) -> ZonePlan {
    let plan = plan_observed(fleet, "us-west", |observed| observed.sync = Some(sync));
    assert_eq!(kstatus_violation(&plan.plan.conditions), None);
    fleet.record_zone("us-west", &plan);
    fleet.now = at(fleet.now.as_second() + later);
    plan
}

/// Shards in incremental sync, `behind` of 64 behind, the oldest pending change at `oldest`.
pub fn shards(behind: u32, oldest: Option<Timestamp>) -> SyncShards {
    SyncShards {
        state: "sync".into(),
        total_shards: 64,
        behind_shards: behind,
        full_sync_shards: 0,
        oldest_change: oldest,
    }
}

/// Shards that have not started syncing.
pub fn init_shards() -> SyncShards {
    SyncShards {
        state: "init".into(),
        total_shards: 64,
        behind_shards: 64,
        full_sync_shards: 64,
        oldest_change: None,
    }
}

/// The sync status of `us-west`: metadata as given, data from `us-east` as given.
pub fn west_sync(metadata: SyncShards, data: SyncShards) -> ZoneSync {
    ZoneSync {
        metadata: Some(metadata),
        data: vec![SourceSync {
            source_zone: "us-east".into(),
            shards: data,
        }],
    }
}
