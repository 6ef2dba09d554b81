//! RGW multisite behaviour of the simulator: realm pull, period commits and epochs, sync status.

use std::time::Duration;

use super::{
    testing::{commit, keys, multisite_realm, TwoSites, LAG, REALM, URL_A, URL_B},
    SimulatedCluster,
};
use crate::agent::{AgentError, ClusterAgent, Period, Sensitive, Step, SyncGroup, SystemKeys};
use crate::api::realm::SyncGroupStatus;

/// Realm `production` on A and B as `ceph-lab.sh multisite` sets it up.
async fn multisite() -> TwoSites {
    let sites = TwoSites::new();
    multisite_realm(&sites.a, &sites.b).await;
    sites
}

async fn period(cluster: &SimulatedCluster) -> Period {
    cluster
        .rgw_realm(REALM)
        .await
        .unwrap()
        .period
        .expect("a committed period")
}

#[tokio::test]
async fn realm_pull_zone_create_and_commit_give_both_sites_the_same_period() {
    let sites = multisite().await;
    let (on_a, on_b) = (
        sites.a.rgw_realm(REALM).await.unwrap(),
        sites.b.rgw_realm(REALM).await.unwrap(),
    );
    assert!(on_a.realm_id.is_some());
    assert_eq!(on_a.realm_id, on_b.realm_id, "realm pull keeps the realm id");
    assert_eq!(
        on_a.period, on_b.period,
        "the secondary's commit went through the master and came back"
    );

    let period = on_a.period.unwrap();
    assert_eq!(
        period.epoch, 2,
        "the first commit made epoch 1, adding us-west made epoch 2"
    );
    assert_eq!(
        (period.master_zone_group.as_str(), period.master_zone.as_str()),
        ("us", "us-east")
    );
    let zones: Vec<&str> = period.zone_groups[0]
        .zones
        .iter()
        .map(|zone| zone.name.as_str())
        .collect();
    assert_eq!(zones, ["us-east", "us-west"]);
    assert_eq!(on_b.local_zones.len(), 1);
    assert_eq!(on_b.local_zones[0].name, "us-west");
    assert_eq!(
        on_b.local_zones[0].system_access_key.as_deref(),
        Some("SYNCACCESSKEY")
    );
}

#[tokio::test]
async fn the_first_commit_creates_a_period_and_an_unchanged_commit_keeps_its_epoch() {
    let sites = multisite().await;
    let before = period(&sites.a).await;
    sites.a.execute(&commit()).await.unwrap();
    sites.b.execute(&commit()).await.unwrap();
    assert_eq!(period(&sites.a).await, before);
    assert_eq!(period(&sites.b).await, before);

    let fresh = sites.world.add_site("site-c");
    fresh
        .execute(&Step::CreateRealm { realm: REALM.into() })
        .await
        .unwrap();
    assert_eq!(
        fresh.rgw_realm(REALM).await.unwrap().period,
        None,
        "no period before the first commit"
    );

    let policy = vec![SyncGroup {
        id: "critical".into(),
        status: SyncGroupStatus::Enabled,
        bucket: None,
        flows: Vec::new(),
        pipes: Vec::new(),
    }];
    let set_policy = Step::SetSyncPolicy {
        realm: REALM.into(),
        zone_group: "us".into(),
        groups: policy.clone(),
    };
    sites.a.execute(&set_policy).await.unwrap();
    assert_eq!(sites.a.rgw_sync_policy(REALM, "us").await.unwrap(), policy);
    sites.a.execute(&commit()).await.unwrap();
    let after = period(&sites.a).await;
    assert_eq!(
        (after.id.as_str(), after.epoch),
        (before.id.as_str(), before.epoch + 1),
        "a policy change is a change"
    );
    assert_eq!(
        period(&sites.b).await,
        after,
        "the master pushes its commit to the zones in reach"
    );
}

#[tokio::test]
async fn promoting_the_secondary_zone_starts_a_new_period_the_old_master_pulls_when_back() {
    let sites = multisite().await;
    sites.clock.advance(LAG); // metadata sync brings the sync user to site B
    let old = period(&sites.a).await;
    sites.world.set_down("site-a", true);
    let read_only = Step::ModifyZone {
        realm: REALM.into(),
        zone_group: "us".into(),
        zone: "us-west".into(),
        master: None,
        read_only: Some(true),
    };
    sites.b.execute(&read_only).await.unwrap();
    let forwarded = sites.b.execute(&commit()).await.unwrap_err();
    assert!(
        forwarded.is_transient(),
        "a secondary's commit needs the master zone: {forwarded}"
    );

    let promote = Step::ModifyZone {
        realm: REALM.into(),
        zone_group: "us".into(),
        zone: "us-west".into(),
        master: Some(true),
        read_only: Some(false),
    };
    sites.b.execute(&promote).await.unwrap();
    sites.b.execute(&commit()).await.unwrap();
    let new = period(&sites.b).await;
    assert_ne!(new.id, old.id, "a new master zone starts a new period");
    assert_eq!((new.epoch, new.master_zone.as_str()), (1, "us-west"));

    sites.world.set_down("site-a", false);
    assert_eq!(period(&sites.a).await, old, "the old master missed the commit");
    let pull = Step::PullPeriod {
        realm: REALM.into(),
        url: URL_B.into(),
        keys: keys(),
    };
    sites.a.execute(&pull).await.unwrap();
    assert_eq!(period(&sites.a).await, new);
}

#[tokio::test]
async fn realm_pull_needs_the_system_keys_and_a_known_endpoint() {
    let sites = multisite().await;
    let c = sites.world.add_site("site-c");
    let wrong_keys = SystemKeys {
        access_key: "SYNCACCESSKEY".into(),
        secret_key: Sensitive("guess".into()),
    };
    let denied = c
        .execute(&Step::PullRealm {
            realm: REALM.into(),
            url: URL_A.into(),
            keys: wrong_keys,
        })
        .await;
    assert!(matches!(denied, Err(AgentError::Refused { .. })), "{denied:?}");
    let unknown_url = Step::PullRealm {
        realm: REALM.into(),
        url: "http://nowhere:8080".into(),
        keys: keys(),
    };
    let unknown = c.execute(&unknown_url).await;
    assert!(
        matches!(unknown, Err(AgentError::CommandFailed { .. })),
        "{unknown:?}"
    );
    assert_eq!(c.rgw_realm(REALM).await.unwrap().realm_id, None);
}

#[tokio::test]
async fn secondary_sync_status_is_behind_until_changes_are_older_than_the_lag() {
    let sites = multisite().await;
    assert_eq!(
        sites.a.rgw_sync_status(REALM, "us-east").await.unwrap().metadata,
        None,
        "the master syncs no metadata"
    );
    assert_eq!(
        sites.b.rgw_realm(REALM).await.unwrap().system_user,
        None,
        "the sync user has not arrived yet"
    );
    sites.clock.advance(LAG);
    assert_eq!(
        sites.b.rgw_realm(REALM).await.unwrap().system_user.as_deref(),
        Some("sync-user")
    );

    let written_at = sites.clock.now();
    sites.a.put_objects(REALM, "us-east", 3).unwrap();
    let status = sites.b.rgw_sync_status(REALM, "us-west").await.unwrap();
    assert_eq!(status.metadata.unwrap().behind_shards, 0);
    assert_eq!(status.data.len(), 1);
    assert_eq!(status.data[0].source_zone, "us-east");
    assert_eq!(status.data[0].shards.behind_shards, 3);
    assert_eq!(status.data[0].shards.oldest_change, Some(written_at));

    sites.clock.advance(LAG);
    let caught_up = sites.b.rgw_sync_status(REALM, "us-west").await.unwrap();
    assert_eq!(
        (
            caught_up.data[0].shards.behind_shards,
            caught_up.data[0].shards.oldest_change
        ),
        (0, None)
    );

    sites.world.partition("site-a", "site-b");
    sites.a.put_objects(REALM, "us-east", 1).unwrap();
    sites.clock.advance(LAG * 4);
    assert_eq!(
        sites.b.rgw_sync_status(REALM, "us-west").await.unwrap().data[0]
            .shards
            .behind_shards,
        1
    );
    sites.world.heal("site-a", "site-b");
    assert_eq!(
        sites.b.rgw_sync_status(REALM, "us-west").await.unwrap().data[0]
            .shards
            .behind_shards,
        0
    );
}

#[tokio::test]
async fn wedged_metadata_sync_stays_behind_until_init_metadata_sync() {
    let sites = multisite().await;
    sites.b.set_metadata_sync_stalled(REALM, "us-west", true).unwrap();
    sites.clock.advance(Duration::from_secs(1));
    let other_user = SystemKeys {
        access_key: "OTHER".into(),
        secret_key: Sensitive("other".into()),
    };
    sites
        .a
        .execute(&Step::CreateSystemUser {
            uid: "other".into(),
            keys: other_user,
        })
        .await
        .unwrap();
    sites.clock.advance(LAG * 10);
    let metadata = sites
        .b
        .rgw_sync_status(REALM, "us-west")
        .await
        .unwrap()
        .metadata
        .unwrap();
    assert_eq!(metadata.behind_shards, 1);

    sites
        .b
        .execute(&Step::InitMetadataSync {
            realm: REALM.into(),
            zone: "us-west".into(),
        })
        .await
        .unwrap();
    let restarting = sites
        .b
        .rgw_sync_status(REALM, "us-west")
        .await
        .unwrap()
        .metadata
        .unwrap();
    assert_eq!(
        (restarting.state.as_str(), restarting.full_sync_shards),
        ("building-full-sync-maps", 8)
    );
    sites.clock.advance(LAG);
    let synced = sites
        .b
        .rgw_sync_status(REALM, "us-west")
        .await
        .unwrap()
        .metadata
        .unwrap();
    assert_eq!((synced.state.as_str(), synced.behind_shards), ("sync", 0));
}
