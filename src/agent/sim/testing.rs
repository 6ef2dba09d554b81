//! Fixtures for tests on the simulator, its own and those of the planners that drive it: two sites on a
//! frozen clock, and the RGW multisite realm `ceph-lab.sh multisite` sets up on them.

use std::{sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;

use super::{SimClock, SimulatedCluster, SimulatedWorld};
use crate::agent::{ClusterAgent, Sensitive, Step, SystemKeys};

pub const A: &str = "site-a";
pub const B: &str = "site-b";
/// How long a change takes to reach the other site.
pub const LAG: Duration = Duration::from_secs(5);
pub const REALM: &str = "production";
/// The RGW endpoints of zone `us-east` on A and zone `us-west` on B.
pub const URL_A: &str = "http://rgw-a.example:8080";
pub const URL_B: &str = "http://rgw-b.example:8080";

pub fn start_time() -> Timestamp {
    "2026-11-22T20:00:00Z".parse().expect("valid timestamp")
}

/// The keys of the realm's sync user.
pub fn keys() -> SystemKeys {
    SystemKeys {
        access_key: "SYNCACCESSKEY".into(),
        secret_key: Sensitive("sync-secret".into()),
    }
}

/// Zone `name` of zonegroup `us`, serving `url`.
pub fn create_zone(name: &str, url: &str, master: bool) -> Step {
    Step::CreateZone {
        realm: REALM.into(),
        zone_group: "us".into(),
        zone: name.into(),
        endpoints: vec![url.into()],
        master,
        read_only: false,
        keys: keys(),
    }
}

pub fn commit() -> Step {
    Step::CommitPeriod { realm: REALM.into() }
}

/// Sites A and B of one simulated world, on a clock frozen at [`start_time`], changes taking [`LAG`].
pub struct TwoSites {
    pub world: SimulatedWorld,
    pub clock: SimClock,
    pub a: Arc<SimulatedCluster>,
    pub b: Arc<SimulatedCluster>,
}

impl TwoSites {
    pub fn new() -> TwoSites {
        let clock = SimClock::frozen_at(start_time());
        let world = SimulatedWorld::with_clock(clock.clone());
        world.set_lag(LAG);
        let (a, b) = (world.add_site(A), world.add_site(B));
        TwoSites { world, clock, a, b }
    }
}

/// The runbook of `ceph-lab.sh multisite`: realm `production` and zonegroup `us` with master zone `us-east`
/// and the sync user on `a`, then `us-west` on `b` after a realm pull; each site commits the period.
pub async fn multisite_realm(a: &SimulatedCluster, b: &SimulatedCluster) {
    let on_a = [
        Step::CreateRealm { realm: REALM.into() },
        Step::CreateZoneGroup {
            realm: REALM.into(),
            zone_group: "us".into(),
            endpoints: vec![URL_A.into()],
            master: true,
        },
        create_zone("us-east", URL_A, true),
        Step::CreateSystemUser {
            uid: "sync-user".into(),
            keys: keys(),
        },
        commit(),
    ];
    let pull = Step::PullRealm {
        realm: REALM.into(),
        url: URL_A.into(),
        keys: keys(),
    };
    let on_b = [pull, create_zone("us-west", URL_B, false), commit()];
    let steps = on_a
        .iter()
        .map(|step| (a, step))
        .chain(on_b.iter().map(|step| (b, step)));
    for (cluster, step) in steps {
        let site = cluster.site();
        cluster
            .execute(step)
            .await
            .unwrap_or_else(|e| panic!("setup step {step}@{site}: {e}"));
    }
}
