//! RBD and cluster parsers on output captured from real Pacific 16.2.15 sites.

use k8s_openapi::jiff::Timestamp;

use super::{cluster_info, from_ctime, names, rbd::*, token_mon_host};
use crate::agent::{
    ceph::command::CommandOutput, DaemonHealth, ImageMirrorMode, ImageMirroring, MirrorSnapshot,
    PeerDirection, PoolMirrorMode, RbdPeer, ReplayStatus, ScheduleEntry,
};

fn unix(seconds: i64) -> Timestamp {
    Timestamp::from_second(seconds).unwrap()
}

#[test]
fn pool_info_gives_mode_site_and_peers() {
    let primary = pool_info(&fixture!("rbd-mirror-pool-info-a.json")).unwrap();
    assert_eq!(
        primary,
        PoolInfo {
            mode: PoolMirrorMode::Image,
            site_name: Some("site-a".into()),
            peers: vec![RbdPeer {
                uuid: "5a3afcb0-0aa5-4634-a9f1-b80f732c8243".into(),
                site_name: "site-b".into(),
                direction: PeerDirection::TxOnly,
                mon_host: None,
                client_name: None,
            }],
        }
    );
    let secondary = pool_info(&fixture!("rbd-mirror-pool-info-all-b.json")).unwrap();
    assert_eq!(secondary.peers[0].direction, PeerDirection::RxOnly);
    assert_eq!(
        secondary.peers[0].client_name.as_deref(),
        Some("client.rbd-mirror-peer")
    );
    assert_eq!(
        secondary.peers[0].mon_host.as_deref(),
        Some("[v2:127.0.0.3:3300/0,v1:127.0.0.3:6789/0]")
    );
    assert!(
        pool_info(&fixture!("rbd-mirror-pool-info-a-before-rbd-mirror.json"))
            .unwrap()
            .peers
            .is_empty()
    );
    assert_eq!(
        pool_info(&CommandOutput::fixture(r#"{"mode":"disabled"}"#)).unwrap(),
        PoolInfo {
            mode: PoolMirrorMode::Disabled,
            site_name: None,
            peers: vec![]
        }
    );
}

#[test]
fn pool_status_gives_daemon_and_replay_with_last_synced_time() {
    let secondary = pool_status(&fixture!("rbd-mirror-pool-status-verbose-b.json")).unwrap();
    assert_eq!(secondary.daemon, Some(DaemonHealth { health: "OK".into() }));
    let snapimg = &secondary.replay["snapimg"];
    assert_eq!((snapimg.state.as_str(), snapimg.up), ("replaying", true));
    assert_eq!(snapimg.last_synced, Some(unix(1795377645)));
    assert!(snapimg
        .description
        .starts_with("replaying, {\"bytes_per_second\""));
    assert_eq!(secondary.replay["imported"].last_synced, Some(unix(1795377650)));
    // Journal-mode replay has no snapshot times.
    assert_eq!(secondary.replay["jimg"].last_synced, None);
    assert_eq!(secondary.replay.len(), 4);

    let split = pool_status(&fixture!(
        "rbd-mirror-pool-status-verbose-b-A-down-after-force-promote.json"
    ))
    .unwrap();
    let ts1 = &split.replay["ts1"];
    assert_eq!(
        (ts1.state.as_str(), ts1.description.as_str()),
        ("stopping_replay", "orphan (force promoting)")
    );
    assert_eq!(split.replay["snapimg"].state, "stopped");
}

#[test]
fn pool_status_without_a_daemon_has_none() {
    let primary = pool_status(&fixture!("rbd-mirror-pool-status-verbose-a.json")).unwrap();
    assert_eq!(
        primary,
        PoolStatus {
            daemon: None,
            replay: Default::default()
        }
    );
    let down = pool_status(&fixture!("rbd-mirror-pool-status-a.json")).unwrap();
    assert_eq!(down.daemon, None);
    assert_eq!(
        down.replay["img1"],
        ReplayStatus {
            state: "unknown".into(),
            up: false,
            description: "status not found".into(),
            last_synced: None
        }
    );
}

/// `rbd mirror image status` prints the same object as one entry of the verbose pool status.
fn as_pool_status(image_status: &CommandOutput) -> CommandOutput {
    let wrapped = format!(
        r#"{{"summary":{{"health":"OK","daemon_health":"OK","image_health":"OK","states":{{}}}},"daemons":[],"images":[{}]}}"#,
        image_status.stdout
    );
    CommandOutput::fixture(&wrapped)
}

#[test]
fn image_status_entries_parse_like_pool_status_entries() {
    let replaying = pool_status(&as_pool_status(&fixture!(
        "rbd-mirror-image-status-snapimg-b.json"
    )))
    .unwrap();
    assert_eq!(replaying.replay["snapimg"].last_synced, Some(unix(1795377645)));
    let journal = pool_status(&as_pool_status(&fixture!("rbd-mirror-image-status-jimg-b.json"))).unwrap();
    assert_eq!(journal.replay["jimg"].state, "replaying");
    let demoted = pool_status(&as_pool_status(&fixture!(
        "rbd-mirror-image-status-snapimg-a-after-demote.json"
    )));
    assert!(demoted.unwrap().replay.is_empty());
}

#[test]
fn rbd_info_gives_image_mirroring() {
    assert_eq!(
        image_mirroring(&fixture!("rbd-info-snapimg-b.json")).unwrap(),
        Some(ImageMirroring {
            mode: ImageMirrorMode::Snapshot,
            primary: false,
            global_id: "c73ec931-3946-466a-886f-27f8b7dc9503".into(),
        })
    );
    let journal = image_mirroring(&fixture!("rbd-info-jimg-a.json"))
        .unwrap()
        .unwrap();
    assert_eq!((journal.mode, journal.primary), (ImageMirrorMode::Journal, true));
    assert_eq!(
        image_mirroring(&fixture!("rbd-info-not-mirrored.json")).unwrap(),
        None
    );
}

#[test]
fn snap_ls_lists_every_mirror_snapshot_with_the_one_under_sync() {
    // Site B while rbd-mirror copies primary snapshot 12: the copy of 9 is complete, the one of 12 not yet.
    let out = CommandOutput::fixture(
        r#"[
        {"id": 4, "name": "golden", "size": 8, "protected": "false", "timestamp": "Tue Dec  1 17:15:03 2026",
         "namespace": {"type": "user"}},
        {"id": 7, "name": ".mirror.non_primary.g.1", "size": 8, "protected": "false",
         "timestamp": "Tue Dec  1 17:15:03 2026",
         "namespace": {"type": "mirror", "state": "non-primary", "mirror_peer_uuids": [], "complete": true,
                       "primary_mirror_uuid": "p", "primary_snap_id": 9, "last_copied_object_number": 2}},
        {"id": 8, "name": ".mirror.non_primary.g.2", "size": 8, "protected": "false",
         "timestamp": "Tue Dec  1 17:16:03 2026",
         "namespace": {"type": "mirror", "state": "non-primary", "mirror_peer_uuids": [], "complete": false,
                       "primary_mirror_uuid": "p", "primary_snap_id": 12, "last_copied_object_number": 1}}
    ]"#,
    );
    let listed: Vec<(u64, bool, Option<u64>)> = mirror_snapshots(&out)
        .unwrap()
        .iter()
        .map(|s| (s.id, s.complete, s.primary_snap_id))
        .collect();
    assert_eq!(listed, [(7, true, Some(9)), (8, false, Some(12))]);
    assert_eq!(last_mirror_snapshot(&out).unwrap().map(|s| s.id), Some(7));
}

#[test]
fn snap_ls_gives_the_newest_complete_mirror_snapshot() {
    assert_eq!(
        last_mirror_snapshot(&fixture!("rbd-snap-ls-all-snapimg-a.json")).unwrap(),
        Some(MirrorSnapshot {
            id: 9,
            name: ".mirror.primary.c73ec931-3946-466a-886f-27f8b7dc9503.93f1f74e-aaea-422b-8d8a-b4eb1da21845"
                .into(),
            created: "2026-11-22T20:02:00Z".parse().unwrap(),
            state: "primary".into(),
            complete: true,
            primary_snap_id: None,
        })
    );
    let copy = last_mirror_snapshot(&fixture!("rbd-snap-ls-all-snapimg-b.json"))
        .unwrap()
        .unwrap();
    assert_eq!(
        (copy.id, copy.state.as_str(), copy.primary_snap_id),
        (9, "non-primary", Some(9))
    );
    let failback = last_mirror_snapshot(&fixture!("rbd-snap-ls-all-ts1-b-after-failback.json"))
        .unwrap()
        .unwrap();
    assert_eq!(
        (failback.id, failback.created, failback.primary_snap_id),
        (33, "2026-11-22T19:55:20Z".parse().unwrap(), Some(30)),
        "a received snapshot names the peer's snapshot it mirrors, whose id is the peer's own"
    );
    assert_eq!(last_mirror_snapshot(&CommandOutput::fixture("[]")).unwrap(), None);
}

#[test]
fn ctime_with_a_one_digit_day_parses() {
    let out = CommandOutput::fixture("");
    assert_eq!(
        from_ctime(&out, "Mon Nov  2 08:00:45 2026").unwrap(),
        "2026-11-02T08:00:45Z".parse().unwrap()
    );
    assert!(from_ctime(&out, "yesterday").is_err());
}

#[test]
fn schedule_ls_gives_pool_and_image_schedules() {
    let entry = |image: Option<&str>, interval: &str, start: Option<&str>| ScheduleEntry {
        image: image.map(str::to_string),
        interval: interval.into(),
        start_time: start.map(str::to_string),
    };
    assert_eq!(
        schedules(&fixture!("rbd-mirror-snapshot-schedule-ls-recursive.json")).unwrap(),
        vec![
            entry(None, "1m", None),
            entry(Some("i1"), "1h", None),
            entry(Some("i1"), "5m", Some("14:00:00"))
        ]
    );
}

#[test]
fn cluster_info_gives_fsid_version_and_health_checks() {
    let info = cluster_info(&fixture!("ceph-status.json"), &fixture!("ceph-versions.json")).unwrap();
    assert_eq!(info.fsid, "8fd84f05-d41c-4f0b-be98-2baed310f9e7");
    assert_eq!(info.version, "16.2.15");
    assert_eq!(info.health, "HEALTH_WARN");
    assert_eq!(
        info.checks,
        ["AUTH_INSECURE_GLOBAL_ID_RECLAIM_ALLOWED", "MON_DISK_LOW"]
    );
}

#[test]
fn mid_upgrade_the_oldest_version_counts() {
    let versions = CommandOutput::fixture(
        r#"{"overall":{"ceph version 17.2.7 (b12291d1) quincy (stable)":2,"ceph version 16.2.15 (618f4408) pacific (stable)":1}}"#,
    );
    let info = cluster_info(&fixture!("ceph-status.json"), &versions).unwrap();
    assert_eq!(info.version, "16.2.15");
    let garbled = CommandOutput::fixture(r#"{"overall":{"ceph version x.y (z)":1}}"#);
    assert!(cluster_info(&fixture!("ceph-status.json"), &garbled).is_err());
}

#[test]
fn name_lists_parse() {
    let pools = names(&fixture!("ceph-osd-pool-ls.json")).unwrap();
    assert_eq!(&pools[..3], ["device_health_metrics", "p1", "p2"]);
    assert_eq!(names(&fixture!("rbd-ls.json")).unwrap(), ["i1"]);
}

#[test]
fn bootstrap_token_names_its_cluster() {
    let token = fixture!("bootstrap-token.txt").stdout;
    assert_eq!(
        token_mon_host(&token).as_deref(),
        Some("[v2:127.0.0.5:3300/0,v1:127.0.0.5:6789/0]")
    );
    assert_eq!(token_mon_host("not base64!"), None);
    assert_eq!(
        token_mon_host("aGVsbG8="),
        None,
        "base64 of something that is not a token"
    );
}
