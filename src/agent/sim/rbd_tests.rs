//! RBD behaviour of the simulator: bootstrap, replication, failover and the refusals that keep data safe.

use std::{sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;

use super::{SimClock, SimulatedCluster, SimulatedWorld};
use crate::agent::{
    AgentError, ClusterAgent, ImageMirrorMode, PeerDirection, PoolMirrorMode, RbdImage, Sensitive, Step,
};

const LAG: Duration = Duration::from_secs(10);
const POOL: &str = "rbd";
const IMAGE: &str = "db-vol";

struct Sites {
    world: SimulatedWorld,
    clock: SimClock,
    a: Arc<SimulatedCluster>,
    b: Arc<SimulatedCluster>,
}

/// Two sites with pool `rbd` in image mode and B bootstrapped from A's token, on a frozen clock.
async fn bootstrapped(direction: PeerDirection) -> Sites {
    let clock = SimClock::frozen_at("2026-11-22T20:00:00Z".parse::<Timestamp>().unwrap());
    let world = SimulatedWorld::with_clock(clock.clone());
    world.set_lag(LAG);
    let (a, b) = (world.add_site("site-a"), world.add_site("site-b"));
    for (cluster, site_name) in [(&a, "site-a"), (&b, "site-b")] {
        cluster
            .execute(&Step::CreatePool { pool: POOL.into() })
            .await
            .unwrap();
        let enable = Step::EnablePoolMirroring {
            pool: POOL.into(),
            mode: PoolMirrorMode::Image,
            site_name: site_name.into(),
        };
        cluster.execute(&enable).await.unwrap();
    }
    let token = a.create_bootstrap_token(POOL, "site-a").await.unwrap();
    b.execute(&import(token, direction)).await.unwrap();
    Sites { world, clock, a, b }
}

/// Two-way mirroring with rbd-mirror on both sites and `db-vol` primary on A, replicated to B.
async fn replicated(mode: ImageMirrorMode) -> Sites {
    let sites = bootstrapped(PeerDirection::RxTx).await;
    sites.a.set_rbd_mirror_running(true).unwrap();
    sites.b.set_rbd_mirror_running(true).unwrap();
    sites.a.create_image(POOL, IMAGE).unwrap();
    sites
        .a
        .execute(&Step::EnableImageMirroring {
            pool: POOL.into(),
            image: IMAGE.into(),
            mode,
        })
        .await
        .unwrap();
    sites.a.write_image(POOL, IMAGE).unwrap();
    if mode == ImageMirrorMode::Snapshot {
        sites.a.execute(&snapshot()).await.unwrap();
    }
    sites.clock.advance(LAG);
    assert_eq!(sites.b.image_content_version(POOL, IMAGE).unwrap(), 1);
    sites
}

fn import(token: Sensitive<String>, direction: PeerDirection) -> Step {
    Step::ImportPeer {
        pool: POOL.into(),
        token,
        direction,
        site_name: "site-b".into(),
    }
}

fn snapshot() -> Step {
    Step::CreateMirrorSnapshot {
        pool: POOL.into(),
        image: IMAGE.into(),
    }
}

fn promote(force: bool) -> Step {
    Step::PromoteImage {
        pool: POOL.into(),
        image: IMAGE.into(),
        force,
    }
}

fn demote() -> Step {
    Step::DemoteImage {
        pool: POOL.into(),
        image: IMAGE.into(),
    }
}

fn resync() -> Step {
    Step::ResyncImage {
        pool: POOL.into(),
        image: IMAGE.into(),
    }
}

async fn image(cluster: &SimulatedCluster) -> Option<RbdImage> {
    cluster
        .rbd_pool(POOL)
        .await
        .unwrap()
        .images
        .into_iter()
        .find(|image| image.name == IMAGE)
}

async fn is_primary(cluster: &SimulatedCluster) -> bool {
    image(cluster)
        .await
        .and_then(|image| image.mirroring)
        .is_some_and(|mirroring| mirroring.primary)
}

async fn replay(cluster: &SimulatedCluster) -> (String, String) {
    let replay = image(cluster)
        .await
        .and_then(|image| image.replay)
        .expect("rbd-mirror reports the image");
    (replay.state, replay.description)
}

fn is_refused<T>(result: Result<T, AgentError>) -> bool {
    matches!(result, Err(AgentError::Refused { .. }))
}

#[tokio::test]
async fn rx_tx_bootstrap_registers_each_site_on_the_other_once() {
    let sites = bootstrapped(PeerDirection::RxTx).await;
    let token = sites.a.create_bootstrap_token(POOL, "site-a").await.unwrap();
    sites
        .b
        .execute(&import(token, PeerDirection::RxTx))
        .await
        .unwrap();

    let (a, b) = (
        sites.a.rbd_pool(POOL).await.unwrap(),
        sites.b.rbd_pool(POOL).await.unwrap(),
    );
    assert_eq!(a.site_name.as_deref(), Some("site-a"));
    assert_eq!(b.site_name.as_deref(), Some("site-b"));
    assert_eq!(a.peers.len(), 1, "importing twice adds no second peer");
    assert_eq!(
        (a.peers[0].site_name.as_str(), a.peers[0].direction),
        ("site-b", PeerDirection::RxTx)
    );
    assert_eq!(b.peers.len(), 1);
    assert_eq!(
        (b.peers[0].site_name.as_str(), b.peers[0].direction),
        ("site-a", PeerDirection::RxTx)
    );
    assert_eq!(b.peers[0].client_name.as_deref(), Some("client.rbd-mirror-peer"));
    assert!(b.peers[0]
        .mon_host
        .as_deref()
        .is_some_and(|mon_host| mon_host.contains("site-a")));
}

#[tokio::test]
async fn rx_only_bootstrap_gives_the_primary_a_tx_peer_only_once_rbd_mirror_pings_it() {
    let sites = bootstrapped(PeerDirection::RxOnly).await;
    sites.a.create_image(POOL, IMAGE).unwrap();
    let enable = Step::EnableImageMirroring {
        pool: POOL.into(),
        image: IMAGE.into(),
        mode: ImageMirrorMode::Snapshot,
    };
    sites.a.execute(&enable).await.unwrap();

    assert!(sites.a.rbd_pool(POOL).await.unwrap().peers.is_empty());
    let refusal = sites.a.execute(&snapshot()).await.unwrap_err();
    assert!(refusal.to_string().contains("no mirror tx peers"), "{refusal}");

    sites.b.set_rbd_mirror_running(true).unwrap();
    let peers = sites.a.rbd_pool(POOL).await.unwrap().peers;
    assert_eq!(peers.len(), 1);
    assert_eq!(
        (peers[0].site_name.as_str(), peers[0].direction),
        ("site-b", PeerDirection::TxOnly)
    );
    assert_eq!(peers[0].client_name, None);
    sites.a.execute(&snapshot()).await.unwrap();
    assert_eq!(
        sites.b.rbd_pool(POOL).await.unwrap().peers[0].direction,
        PeerDirection::RxOnly
    );
}

#[tokio::test]
async fn bootstrap_import_rejects_bad_tokens_and_needs_the_peer_in_reach() {
    let sites = bootstrapped(PeerDirection::RxTx).await;
    let own = sites.b.create_bootstrap_token(POOL, "site-b").await.unwrap();
    assert!(is_refused(
        sites.b.execute(&import(own, PeerDirection::RxTx)).await
    ));
    let garbage = sites
        .b
        .execute(&import(Sensitive("not-a-token".into()), PeerDirection::RxTx))
        .await;
    assert!(matches!(
        garbage,
        Err(AgentError::CommandFailed {
            exit_code: Some(22),
            ..
        })
    ));

    let c = sites.world.add_site("site-c");
    c.execute(&Step::CreatePool { pool: POOL.into() }).await.unwrap();
    let token = sites.a.create_bootstrap_token(POOL, "site-a").await.unwrap();
    sites.world.partition("site-a", "site-c");
    let cut_off = c
        .execute(&import(token.clone(), PeerDirection::RxOnly))
        .await
        .unwrap_err();
    assert!(cut_off.is_transient(), "{cut_off}");
    sites.world.heal("site-a", "site-c");
    c.execute(&import(token, PeerDirection::RxOnly)).await.unwrap();
    let c_pool = c.rbd_pool(POOL).await.unwrap();
    assert_eq!(
        c_pool.mode,
        PoolMirrorMode::Image,
        "the importer takes the remote pool's mirroring mode"
    );
    assert_eq!(
        c_pool.site_name.as_deref(),
        Some("site-b"),
        "the step names the importer's own site"
    );
}

#[tokio::test]
async fn an_image_enabled_on_the_primary_appears_non_primary_on_the_secondary_after_the_lag() {
    let sites = bootstrapped(PeerDirection::RxTx).await;
    sites.b.set_rbd_mirror_running(true).unwrap();
    sites.a.create_image(POOL, IMAGE).unwrap();
    let enable = Step::EnableImageMirroring {
        pool: POOL.into(),
        image: IMAGE.into(),
        mode: ImageMirrorMode::Snapshot,
    };
    sites.a.execute(&enable).await.unwrap();
    sites.a.execute(&enable).await.unwrap();

    assert_eq!(image(&sites.b).await, None);
    sites.clock.advance(LAG);
    let (primary, secondary) = (image(&sites.a).await.unwrap(), image(&sites.b).await.unwrap());
    let (primary_mirroring, secondary_mirroring) = (primary.mirroring.unwrap(), secondary.mirroring.unwrap());
    assert!(primary_mirroring.primary && !secondary_mirroring.primary);
    assert_eq!(primary_mirroring.global_id, secondary_mirroring.global_id);
    assert_eq!(primary.replay, None, "no rbd-mirror runs on site A");
    assert_eq!(sites.a.rbd_pool(POOL).await.unwrap().daemon, None);
    assert_eq!(primary.last_mirror_snapshot.unwrap().state, "primary");
    assert_eq!(secondary.last_mirror_snapshot.unwrap().state, "non-primary");
    let replay = secondary.replay.unwrap();
    assert_eq!((replay.state.as_str(), replay.up), ("replaying", true));
    assert!(replay.last_synced.is_some());
}

#[tokio::test]
async fn snapshot_mode_writes_arrive_with_the_next_mirror_snapshot_and_journal_writes_on_their_own() {
    let sites = replicated(ImageMirrorMode::Snapshot).await;
    assert_eq!(sites.a.write_image(POOL, IMAGE).unwrap(), 2);
    sites.clock.advance(LAG);
    assert_eq!(
        sites.b.image_content_version(POOL, IMAGE).unwrap(),
        1,
        "no snapshot, nothing to copy"
    );
    sites.a.execute(&snapshot()).await.unwrap();
    sites.clock.advance(LAG - Duration::from_secs(1));
    assert_eq!(sites.b.image_content_version(POOL, IMAGE).unwrap(), 1);
    sites.clock.advance(Duration::from_secs(1));
    assert_eq!(sites.b.image_content_version(POOL, IMAGE).unwrap(), 2);

    let journal = replicated(ImageMirrorMode::Journal).await;
    journal.a.write_image(POOL, IMAGE).unwrap();
    assert!(
        is_refused(journal.a.execute(&snapshot()).await),
        "journal images take no mirror snapshots"
    );
    journal.clock.advance(LAG);
    assert_eq!(journal.b.image_content_version(POOL, IMAGE).unwrap(), 2);
    assert_eq!(image(&journal.b).await.unwrap().last_mirror_snapshot, None);
}

#[tokio::test]
async fn planned_failover_promotes_only_after_the_demotion_snapshot_replicated() {
    let sites = replicated(ImageMirrorMode::Snapshot).await;
    sites.a.write_image(POOL, IMAGE).unwrap();
    sites.a.execute(&demote()).await.unwrap();
    sites.a.execute(&demote()).await.unwrap();

    let early = sites.b.execute(&promote(false)).await;
    assert!(
        is_refused(early),
        "promoting before the demotion snapshot arrived must be refused"
    );
    assert!(!is_primary(&sites.a).await && !is_primary(&sites.b).await);

    sites.clock.advance(LAG);
    assert_eq!(
        replay(&sites.b).await,
        ("unknown".into(), "remote image demoted".into())
    );
    sites.b.execute(&promote(false)).await.unwrap();
    assert!(
        is_primary(&sites.b).await && !is_primary(&sites.a).await,
        "never two primaries"
    );
    assert_eq!(
        sites.b.image_content_version(POOL, IMAGE).unwrap(),
        2,
        "the demotion snapshot carried the last write"
    );

    // The old primary follows the new one without a resync.
    sites.b.write_image(POOL, IMAGE).unwrap();
    sites.b.execute(&snapshot()).await.unwrap();
    sites.clock.advance(LAG);
    assert_eq!(sites.a.image_content_version(POOL, IMAGE).unwrap(), 3);
    assert_eq!(replay(&sites.a).await.0, "replaying");
    assert!(is_refused(sites.a.write_image(POOL, IMAGE)));
}

/// A forced promotion on B while A was down, then A back: both primary.
async fn split_brain() -> Sites {
    let sites = replicated(ImageMirrorMode::Snapshot).await;
    sites.world.set_down("site-a", true);
    assert!(matches!(
        sites.a.rbd_pool(POOL).await,
        Err(AgentError::Unreachable { .. })
    ));
    assert!(is_refused(sites.b.execute(&promote(false)).await));
    sites.b.execute(&promote(true)).await.unwrap();
    sites.b.write_image(POOL, IMAGE).unwrap();
    sites.world.set_down("site-a", false);
    sites
}

#[tokio::test]
async fn a_forced_promotion_while_the_primary_is_down_shows_split_brain_when_it_returns() {
    let sites = split_brain().await;
    assert!(is_primary(&sites.a).await && is_primary(&sites.b).await);
    for cluster in [&sites.a, &sites.b] {
        let (state, description) = replay(cluster).await;
        assert_eq!(state, "stopped");
        assert!(description.contains("split-brain"), "{description}");
    }
}

#[tokio::test]
async fn demote_and_resync_bring_the_stale_primary_back_in_line() {
    let sites = split_brain().await;
    sites.a.write_image(POOL, IMAGE).unwrap();
    sites.a.execute(&demote()).await.unwrap();
    sites.clock.advance(LAG);
    assert_eq!(
        replay(&sites.a).await,
        ("error".into(), "split-brain detected".into())
    );
    assert!(
        is_refused(sites.b.execute(&resync()).await),
        "a primary cannot resync"
    );

    sites.a.execute(&resync()).await.unwrap();
    sites.clock.advance(LAG);
    assert_eq!(
        sites.a.image_content_version(POOL, IMAGE).unwrap(),
        0,
        "snapshot resync waits for a new snapshot"
    );
    assert_eq!(replay(&sites.a).await.0, "unknown");

    sites.b.execute(&snapshot()).await.unwrap();
    sites.clock.advance(LAG);
    let b_version = sites.b.image_content_version(POOL, IMAGE).unwrap();
    assert_eq!(sites.a.image_content_version(POOL, IMAGE).unwrap(), b_version);
    assert_eq!(replay(&sites.a).await.0, "replaying");
    assert!(is_primary(&sites.b).await && !is_primary(&sites.a).await);
}

#[tokio::test]
async fn a_partition_stops_replication_until_it_heals() {
    let sites = replicated(ImageMirrorMode::Snapshot).await;
    sites.world.partition("site-a", "site-b");
    sites.a.write_image(POOL, IMAGE).unwrap();
    sites.a.execute(&snapshot()).await.unwrap();
    sites.clock.advance(LAG * 3);
    assert_eq!(sites.b.image_content_version(POOL, IMAGE).unwrap(), 1);
    assert_eq!(
        replay(&sites.b).await.0,
        "replaying",
        "rbd-mirror keeps showing a stale status"
    );

    sites.world.heal("site-b", "site-a");
    assert_eq!(sites.b.image_content_version(POOL, IMAGE).unwrap(), 2);
}

#[tokio::test]
async fn ceph_refuses_unsafe_or_impossible_image_steps() {
    let sites = replicated(ImageMirrorMode::Snapshot).await;
    assert!(
        is_refused(sites.b.execute(&snapshot()).await),
        "a non-primary image takes no mirror snapshot"
    );
    assert!(
        is_refused(sites.a.execute(&resync()).await),
        "a primary image cannot resync"
    );
    sites.b.execute(&demote()).await.unwrap();
    assert!(
        !is_primary(&sites.b).await,
        "demoting a non-primary image changes nothing"
    );
    let disable = Step::DisablePoolMirroring { pool: POOL.into() };
    assert!(
        is_refused(sites.a.execute(&disable).await),
        "peers and mirrored images remain"
    );

    let missing = Step::CreateMirrorSnapshot {
        pool: "nope".into(),
        image: IMAGE.into(),
    };
    assert!(matches!(
        sites.a.execute(&missing).await,
        Err(AgentError::NotFound { .. })
    ));
    assert!(!sites.a.rbd_pool("nope").await.unwrap().exists);
}

#[tokio::test]
async fn a_snapshot_schedule_takes_mirror_snapshots_when_due() {
    let sites = replicated(ImageMirrorMode::Snapshot).await;
    let schedule = Step::AddSnapshotSchedule {
        pool: POOL.into(),
        image: Some(IMAGE.into()),
        interval: "1m".into(),
        start_time: None,
    };
    sites.a.execute(&schedule).await.unwrap();
    sites.a.write_image(POOL, IMAGE).unwrap();
    sites.clock.advance(Duration::from_secs(60));
    let before = image(&sites.a).await.unwrap().last_mirror_snapshot.unwrap();
    assert_eq!(before.created, sites.clock.now(), "the due snapshot was taken");
    sites.clock.advance(LAG);
    assert_eq!(sites.b.image_content_version(POOL, IMAGE).unwrap(), 2);
    assert_eq!(sites.a.rbd_pool(POOL).await.unwrap().schedules.len(), 1);

    let invalid = Step::AddSnapshotSchedule {
        pool: POOL.into(),
        image: None,
        interval: "often".into(),
        start_time: None,
    };
    assert!(is_refused(sites.a.execute(&invalid).await));
}

#[tokio::test]
async fn ten_thousand_images_replicate_in_one_observation() {
    let sites = bootstrapped(PeerDirection::RxTx).await;
    sites.b.set_rbd_mirror_running(true).unwrap();
    for index in 0..10_000 {
        let name = format!("vol-{index:05}");
        sites.a.create_image(POOL, &name).unwrap();
        let enable = Step::EnableImageMirroring {
            pool: POOL.into(),
            image: name,
            mode: ImageMirrorMode::Snapshot,
        };
        sites.a.execute(&enable).await.unwrap();
    }
    sites.clock.advance(LAG);
    let replicas = sites.b.rbd_pool(POOL).await.unwrap().images;
    assert_eq!(replicas.len(), 10_000);
    assert!(replicas.iter().all(|image| image
        .replay
        .as_ref()
        .is_some_and(|replay| replay.state == "replaying")));
}

#[tokio::test]
async fn a_received_snapshot_checksums_like_the_primary_snapshot_it_mirrors_until_damaged() {
    let sites = replicated(ImageMirrorMode::Snapshot).await;
    let copy = image(&sites.b).await.unwrap().last_mirror_snapshot.unwrap();
    let mirrored = copy
        .primary_snap_id
        .expect("a received snapshot names the one it mirrors");
    let source = sites.a.image_checksum(POOL, IMAGE, mirrored).await.unwrap();
    assert_eq!(
        sites.b.image_checksum(POOL, IMAGE, copy.id).await.unwrap(),
        source
    );

    sites.a.write_image(POOL, IMAGE).unwrap();
    sites.a.execute(&snapshot()).await.unwrap();
    let newer = image(&sites.a).await.unwrap().last_mirror_snapshot.unwrap();
    assert_ne!(
        sites.a.image_checksum(POOL, IMAGE, newer.id).await.unwrap(),
        source,
        "a write changes what the next snapshot holds"
    );

    assert_eq!(sites.b.damage_newest_snapshot(POOL, IMAGE).unwrap(), copy.id);
    assert_ne!(
        sites.b.image_checksum(POOL, IMAGE, copy.id).await.unwrap(),
        source
    );
    assert!(matches!(
        sites.b.image_checksum(POOL, IMAGE, 999).await,
        Err(AgentError::NotFound { .. })
    ));
}

#[tokio::test]
async fn reading_some_images_shows_those_that_exist_as_the_pool_read_does() {
    let sites = replicated(ImageMirrorMode::Snapshot).await;
    sites.a.create_image(POOL, "other").unwrap();
    let schedule = Step::AddSnapshotSchedule {
        pool: POOL.into(),
        image: None,
        interval: "1m".into(),
        start_time: None,
    };
    sites.a.execute(&schedule).await.unwrap();
    let wanted = [IMAGE.to_string(), "gone".to_string()];
    for site in [&sites.a, &sites.b] {
        let whole = site.rbd_pool(POOL).await.unwrap();
        let some = site.rbd_images(POOL, &wanted).await.unwrap();
        let expected: Vec<_> = whole.images.iter().filter(|i| i.name == IMAGE).cloned().collect();
        assert_eq!(some.images, expected);
        assert_eq!(
            (some.exists, some.mode, &some.peers, &some.daemon),
            (whole.exists, whole.mode, &whole.peers, &whole.daemon)
        );
        assert!(some.schedules.is_empty());
    }
    assert!(!sites.a.rbd_images("nope", &wanted).await.unwrap().exists);
}

#[tokio::test]
async fn a_copy_that_rbd_mirror_left_behind_can_have_mirroring_disabled() {
    let sites = replicated(ImageMirrorMode::Snapshot).await;
    // rbd-mirror on B is not there to remove the copy when mirroring ends on the primary.
    sites.b.set_rbd_mirror_running(false).unwrap();
    let disable = Step::DisableImageMirroring {
        pool: POOL.into(),
        image: IMAGE.into(),
    };
    sites.a.execute(&disable).await.unwrap();
    sites.clock.advance(LAG);
    sites.b.execute(&disable).await.unwrap();
    let copy = image(&sites.b).await.expect("the copy stays");
    assert_eq!(copy.mirroring, None);
}
