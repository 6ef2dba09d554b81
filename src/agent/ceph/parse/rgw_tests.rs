//! RGW parsers on output captured from real Pacific 16.2.15 sites.

use k8s_openapi::jiff::Timestamp;

use super::rgw::*;
use crate::{
    agent::{SyncGroup, SyncShards, ZoneGroupInfo, ZoneInfo},
    api::realm::{SyncFlow, SyncFlowType, SyncGroupStatus, SyncPipe},
};

fn zone(name: &str, id: &str, endpoint: &str) -> ZoneInfo {
    ZoneInfo {
        name: name.into(),
        id: id.into(),
        endpoints: vec![endpoint.into()],
        read_only: false,
    }
}

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

#[test]
fn realm_get_gives_id_and_name() {
    let realm = realm(&fixture!("realm-get.json")).unwrap();
    assert_eq!(
        realm,
        Realm {
            id: "1930ee12-7b5a-45f0-aa8e-9a8411e159c6".into(),
            name: "prod".into()
        }
    );
}

#[test]
fn period_get_names_master_zonegroup_and_zone() {
    let first = period(&fixture!("period-get.json")).unwrap();
    assert_eq!(first.id, "4a8226aa-e3e9-4e18-8e84-cd297327253d");
    assert_eq!(first.epoch, 2);
    assert_eq!(first.master_zone_group, "zg");
    assert_eq!(first.master_zone, "east");
    assert_eq!(
        first.zone_groups,
        vec![ZoneGroupInfo {
            name: "zg".into(),
            id: "7672a72b-26b5-4e48-a747-2e92f858b591".into(),
            is_master: true,
            endpoints: vec!["http://127.0.0.1:8001".into()],
            master_zone: "east".into(),
            zones: vec![
                zone(
                    "east",
                    "403f40b6-1d00-49a8-accc-95007369a256",
                    "http://127.0.0.1:8001"
                ),
                zone(
                    "west",
                    "4f54570c-f1a6-4392-9c0e-53e269e26a30",
                    "http://127.0.0.2:8002"
                ),
            ],
        }]
    );
    let other = period(&fixture!("radosgw-admin-period-get.json")).unwrap();
    assert_eq!(
        (other.master_zone_group.as_str(), other.master_zone.as_str()),
        ("lab-zg", "site-a")
    );
    assert_eq!(
        other.zone_groups[0]
            .zones
            .iter()
            .map(|z| z.name.as_str())
            .collect::<Vec<_>>(),
        ["site-b", "site-a"]
    );
}

#[test]
fn period_configuration_ignores_ids_and_epochs_but_not_zones() {
    let current = fixture!("period-get.json");
    let mut staging: serde_json::Value = serde_json::from_str(&current.stdout).unwrap();
    staging["id"] = "1930ee12-7b5a-45f0-aa8e-9a8411e159c6:staging".into();
    staging["epoch"] = 7.into();
    staging["realm_epoch"] = 3.into();
    staging["period_map"]["id"] = "other".into();
    let staged = crate::agent::ceph::command::CommandOutput::fixture(&staging.to_string());
    let of = |out| period_configuration(out).unwrap();
    assert_eq!(of(&staged), of(&current));

    staging["period_map"]["zonegroups"][0]["zones"][1]["read_only"] = "true".into();
    let changed = crate::agent::ceph::command::CommandOutput::fixture(&staging.to_string());
    assert_ne!(of(&changed), of(&current));
    assert_ne!(of(&fixture!("radosgw-admin-period-get.json")), of(&current));
}

#[test]
fn zonegroup_get_keeps_the_realm_id() {
    let group = zone_group(&fixture!("zonegroup-get.json")).unwrap();
    assert_eq!(group.realm_id, "1930ee12-7b5a-45f0-aa8e-9a8411e159c6");
    assert_eq!(group.info.master_zone, "east");
    assert_eq!(group.info.zones.len(), 2);
}

#[test]
fn zone_get_gives_the_system_key() {
    let params = zone_params(&fixture!("zone-get-with-system-key.json")).unwrap();
    assert_eq!(params.name, "east");
    assert_eq!(params.id, "6abf9240-1a1a-46ae-87c3-e2aa9e751588");
    assert_eq!(params.realm_id, "e6f5d497-1182-44dd-96e5-cb57353f3391");
    assert_eq!(params.access_key, "SYNCACCESSKEY0000000");
    assert_eq!(params.secret_key.expose(), "<redacted>");
    let secondary = zone_params(&fixture!("radosgw-admin-zone-get-B.json")).unwrap();
    assert_eq!(
        (secondary.name.as_str(), secondary.id.as_str()),
        ("site-b", "01b69d6c-e741-4151-9342-a660da26ae70")
    );
}

#[test]
fn listings_give_names_and_the_default() {
    let zones = listing(&fixture!("radosgw-admin-zone-list.json"), "zones").unwrap();
    assert_eq!(
        zones,
        Listing {
            default_id: Some("6abf9240-1a1a-46ae-87c3-e2aa9e751588".into()),
            names: vec!["east".into(), "default".into()],
        }
    );
    let empty = crate::agent::ceph::command::CommandOutput::fixture(
        "{\n    \"default_info\": \"\",\n    \"realms\": []\n}\n",
    );
    assert_eq!(
        listing(&empty, "realms").unwrap(),
        Listing {
            default_id: None,
            names: vec![]
        }
    );
    assert!(listing(&empty, "zones").is_err());
}

#[test]
fn user_info_gives_uid_system_flag_and_keys() {
    let user = user_info(&fixture!("user-info.json")).unwrap();
    assert_eq!(user.uid, "cephdr-sync-prod");
    assert!(user.system);
    assert_eq!(user.keys.len(), 1);
    assert_eq!(user.keys[0].0, "SYNCACCESSKEY0000000");
}

#[test]
fn metadata_and_data_sync_status_count_shards() {
    let incremental = |total| SyncShards {
        state: "sync".into(),
        total_shards: total,
        behind_shards: 0,
        full_sync_shards: 0,
        oldest_change: None,
    };
    assert_eq!(
        metadata_sync(&fixture!("metadata-sync-status.json")).unwrap(),
        incremental(8)
    );
    assert_eq!(
        data_sync(&fixture!("data-sync-status.json")).unwrap(),
        incremental(8)
    );
    assert_eq!(
        data_sync(&fixture!("radosgw-admin-data-sync-status-B.json")).unwrap(),
        incremental(8)
    );
    let master = metadata_sync(&fixture!("metadata-sync-status-master.json")).unwrap();
    assert_eq!((master.state.as_str(), master.total_shards), ("init", 0));

    let mut full: serde_json::Value =
        serde_json::from_str(&fixture!("data-sync-status.json").stdout).unwrap();
    full["sync_status"]["markers"][3]["val"]["status"] = "full-sync".into();
    let full = crate::agent::ceph::command::CommandOutput::fixture(&full.to_string());
    assert_eq!(data_sync(&full).unwrap().full_sync_shards, 1);
}

#[test]
fn sync_status_text_gives_behind_shards_and_oldest_change() {
    let master = sync_lags(&fixture!("radosgw-admin-sync-status-A.txt")).unwrap();
    assert_eq!(master.metadata, None);
    assert_eq!(
        master.data.get("site-b"),
        Some(&Lag {
            behind_shards: Some(1),
            oldest_change: Some(at("2026-11-22T20:00:08.966561Z"))
        })
    );

    let behind = sync_lags(&fixture!("radosgw-admin-sync-status-B-behind.txt")).unwrap();
    assert_eq!(
        behind.metadata,
        Some(Lag {
            behind_shards: Some(0),
            oldest_change: None
        })
    );
    assert_eq!(
        behind.data.get("site-a"),
        Some(&Lag {
            behind_shards: Some(2),
            oldest_change: Some(at("2026-11-22T19:27:14.451242Z"))
        })
    );

    let caught_up = sync_lags(&fixture!("radosgw-admin-sync-status-B.txt")).unwrap();
    assert_eq!(caught_up.data.len(), 1);
    assert_eq!(
        caught_up.data["site-a"],
        Lag {
            behind_shards: Some(0),
            oldest_change: None
        }
    );
}

#[test]
fn sync_status_text_that_cannot_compare_leaves_the_lag_unknown() {
    let text = fixture!("radosgw-admin-sync-status-B.txt").stdout.replace(
        "data is caught up with source",
        "failed to retrieve sync info: (5) Input/output error",
    );
    let lags = sync_lags(&crate::agent::ceph::command::CommandOutput::fixture(&text)).unwrap();
    assert_eq!(lags.data["site-a"].behind_shards, None);
}

#[test]
fn sync_groups_give_flows_and_pipes() {
    let groups = sync_groups(&fixture!("sync-group-get-zonegroup.json")).unwrap();
    let pipe = |id: &str, source: &str, dest: &str| SyncPipe {
        id: id.into(),
        source_zones: vec![source.into()],
        dest_zones: vec![dest.into()],
        source_bucket: None,
        dest_bucket: None,
        prefix: None,
    };
    assert_eq!(
        groups,
        vec![
            SyncGroup {
                id: "critical".into(),
                status: SyncGroupStatus::Enabled,
                bucket: None,
                flows: vec![
                    SyncFlow {
                        id: "mesh".into(),
                        flow_type: SyncFlowType::Symmetrical,
                        zones: vec!["east".into(), "west".into()],
                        source_zone: None,
                        dest_zone: None,
                    },
                    SyncFlow {
                        id: String::new(),
                        flow_type: SyncFlowType::Directional,
                        zones: vec![],
                        source_zone: Some("east".into()),
                        dest_zone: Some("west".into()),
                    },
                ],
                pipes: vec![
                    pipe("all", "*", "*"),
                    SyncPipe {
                        source_bucket: Some("critical-*".into()),
                        prefix: Some("logs/".into()),
                        ..pipe("logs", "east", "west")
                    },
                ],
            },
            SyncGroup {
                id: "fallback".into(),
                status: SyncGroupStatus::Allowed,
                bucket: None,
                flows: vec![],
                pipes: vec![],
            },
        ]
    );
    let bucket = sync_groups(&fixture!("sync-group-get-bucket.json")).unwrap();
    assert_eq!(bucket.len(), 1);
    assert_eq!(
        (bucket[0].id.as_str(), bucket[0].pipes[0].id.as_str()),
        ("bg", "bp")
    );
    let wrapped = crate::agent::ceph::command::CommandOutput::fixture(
        r#"{"groups":[{"id":"g","data_flow":{},"pipes":[],"status":"forbidden"}]}"#,
    );
    assert_eq!(
        sync_groups(&wrapped).unwrap()[0].status,
        SyncGroupStatus::Forbidden
    );
}
