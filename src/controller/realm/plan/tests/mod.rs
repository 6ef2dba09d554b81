//! Realm planner tests: table tests per branch (`table.rs`) and properties of the realm and zone planners
//! together against the RGW model of `controller::testing` (`props.rs`).

mod props;
mod table;

use crate::{
    agent::SyncGroup,
    api::realm::CephRealmSpec,
    controller::testing::{
        fleet::{self, Fleet},
        MASTER_GROUP,
    },
};

/// The `us-east`/`us-west` pair under `realm`, converged by both controllers.
pub fn converged(realm: CephRealmSpec) -> Fleet {
    fleet::pair(realm).converged()
}

/// Replaces the sync policy Ceph holds for zonegroup `us` on the master site, as an edit by hand would.
pub fn policy_in_ceph(fleet: &mut Fleet, groups: Vec<SyncGroup>) {
    let realm = fleet
        .world
        .realm_mut("site-a")
        .expect("the realm on the master site");
    let (buckets, own) = groups.into_iter().partition(|g| g.bucket.is_some());
    let group = realm.zone_groups.get_mut(MASTER_GROUP).expect("zonegroup us");
    group.policy = own;
    realm.bucket_policy.insert(MASTER_GROUP.into(), buckets);
}
