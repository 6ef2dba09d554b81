//! Table tests: one behaviour each, from an empty pair of sites to a converged pool and back.

use std::time::Duration;

use super::{converged, find, has, image_of, model::World, rendered, spec};
use crate::{
    agent::{ImageMirroring, PeerDirection, PoolMirrorMode, ReplayStatus, ScheduleEntry, Sensitive, Step},
    api::conditions::{reason, READY, RECONCILING, RPO_MET, STALLED, SYNCED},
    controller::rbd_mirror_pool::{
        plan::{plan, tests::model::peer, SNAPSHOTS_STALE},
        status,
    },
    plan::SiteStep,
};

#[test]
fn empty_sites_get_pools_and_pool_mirroring_in_one_round() {
    let spec = spec().images(&["db"]).build();
    let plan = World::empty().plan(&spec);
    assert_eq!(
        rendered(&plan.plan.steps),
        [
            "create-pool rbd@site-a",
            "enable-pool-mirroring rbd@site-a",
            "create-pool rbd@site-b",
            "enable-pool-mirroring rbd@site-b"
        ]
    );
    assert_eq!(
        plan.plan.steps[1].step,
        Step::EnablePoolMirroring {
            pool: "rbd".into(),
            mode: PoolMirrorMode::Image,
            site_name: "a".into()
        }
    );
    assert!(
        plan.tokens_needed.is_empty(),
        "tokens wait until mirroring is enabled"
    );
    assert_eq!(find(&plan.plan.conditions, READY).reason, reason::PROGRESSING);
    assert_eq!(find(&plan.plan.conditions, RECONCILING).status, "True");
    assert_eq!(plan.plan.requeue, Duration::from_secs(5));
}

#[test]
fn a_wrong_ceph_site_name_enables_pool_mirroring_again() {
    let spec = spec().build();
    let mut world = converged(&spec, &[]);
    world.site("site-b").pool.site_name = Some("old-name".into());
    let plan = world.plan(&spec);
    assert_eq!(rendered(&plan.plan.steps), ["enable-pool-mirroring rbd@site-b"]);
}

#[test]
fn one_way_peering_asks_for_the_primary_token_then_the_secondary_imports_it_rx_tx() {
    let spec = spec().build();
    let mut world = World::empty();
    world.apply(&world.plan(&spec)).unwrap();
    let ask = world.plan(&spec);
    assert!(ask.plan.steps.is_empty());
    assert_eq!(ask.tokens_needed, ["site-a"]);
    assert!(find(&ask.plan.conditions, READY)
        .message
        .contains("bootstrap token from site site-a"));

    let world = world.with_token("site-a");
    let import = world.plan(&spec);
    assert_eq!(
        import.plan.steps,
        [SiteStep::new(
            "site-b",
            Step::ImportPeer {
                pool: "rbd".into(),
                token: Sensitive("token-of-a".into()),
                direction: PeerDirection::RxTx,
                site_name: "b".into(),
            }
        )]
    );
}

#[test]
fn the_primary_role_decides_who_imports_whatever_the_list_order() {
    let spec = spec().primary_b().build();
    let mut world = World::empty()
        .with_daemon("site-a", Some("OK"))
        .with_daemon("site-b", None);
    world.apply(&world.plan(&spec)).unwrap();
    let plan = world.with_token("site-b").plan(&spec);
    assert_eq!(rendered(&plan.plan.steps), ["import-peer rbd@site-a"]);
}

#[test]
fn two_way_primary_imports_the_secondary_token_only_when_its_peer_is_still_missing() {
    let spec = spec().two_way().build();
    let mut world = converged(&spec, &[]);
    world.site("site-a").pool.peers.clear();
    world.site("site-b").token = None;
    let ask = world.plan(&spec);
    assert_eq!(ask.tokens_needed, ["site-b"]);
    let import = world.with_token("site-b").plan(&spec);
    assert_eq!(rendered(&import.plan.steps), ["import-peer rbd@site-a"]);
    let Step::ImportPeer { token, site_name, .. } = &import.plan.steps[0].step else {
        panic!("not an import")
    };
    assert_eq!((token.expose().as_str(), site_name.as_str()), ("token-of-b", "a"));
}

#[test]
fn two_way_waits_for_the_secondary_import_before_importing_on_the_primary() {
    let spec = spec().two_way().build();
    let mut world = converged(&spec, &[]);
    for site in ["site-a", "site-b"] {
        world.site(site).pool.peers.clear();
    }
    let plan = world.plan(&spec);
    assert_eq!(rendered(&plan.plan.steps), ["import-peer rbd@site-b"]);
}

#[test]
fn one_way_never_imports_on_the_primary() {
    let spec = spec().build();
    let mut world = converged(&spec, &[]);
    world.site("site-a").pool.peers.clear();
    let plan = world.plan(&spec);
    assert!(plan.plan.steps.is_empty(), "{:?}", rendered(&plan.plan.steps));
    let ready = find(&plan.plan.conditions, READY);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", reason::WAITING_FOR_DEPENDENCY)
    );
    assert!(ready.message.contains("site site-a has no peer for site site-b"));
}

#[test]
fn a_peer_with_a_narrower_direction_becomes_rx_tx() {
    let spec = spec().build();
    let mut world = converged(&spec, &["db"]);
    world.site("site-a").pool.peers[0].direction = PeerDirection::TxOnly;
    let plan = world.plan(&spec);
    assert_eq!(
        plan.plan.steps,
        [SiteStep::new(
            "site-a",
            Step::SetPeerDirection {
                pool: "rbd".into(),
                uuid: "peer-0".into(),
                direction: PeerDirection::RxTx
            }
        )]
    );
}

#[test]
fn peers_to_sites_outside_the_spec_are_removed() {
    let spec = spec().build();
    let mut world = converged(&spec, &[]);
    world
        .site("site-b")
        .pool
        .peers
        .push(peer("stale".into(), "c", PeerDirection::RxOnly));
    let plan = world.plan(&spec);
    assert_eq!(
        plan.plan.steps,
        [SiteStep::new(
            "site-b",
            Step::RemovePeer {
                pool: "rbd".into(),
                uuid: "stale".into()
            }
        )]
    );
}

#[test]
fn images_wait_until_both_sites_are_peered() {
    let spec = spec().images(&["db"]).schedule("15m").build();
    let mut world = converged(&spec, &[]).with_image("site-a", "db");
    world.site("site-b").pool.peers.clear();
    world.site("site-a").pool.schedules.clear();
    let plan = world.plan(&spec);
    assert_eq!(rendered(&plan.plan.steps), ["import-peer rbd@site-b"]);
}

#[test]
fn named_images_are_enabled_where_they_live_with_the_spec_mode() {
    let spec = spec().images(&["db", "logs"]).journal().build();
    let world = converged(&spec, &[])
        .with_image("site-a", "db")
        .with_image("site-b", "logs");
    let plan = world.plan(&spec);
    let enable = |site: &str, image: &str| {
        SiteStep::new(
            site,
            Step::EnableImageMirroring {
                pool: "rbd".into(),
                image: image.into(),
                mode: crate::agent::ImageMirrorMode::Journal,
            },
        )
    };
    assert_eq!(
        plan.plan.steps,
        [enable("site-a", "db"), enable("site-b", "logs")]
    );
}

#[test]
fn all_selects_the_plain_images_of_the_pool_images_mirror_from() {
    let spec = spec().all_images().build();
    let world = converged(&spec, &["db"])
        .with_image("site-a", "new")
        .with_image("site-b", "local-scratch");
    let plan = world.plan(&spec);
    assert_eq!(
        rendered(&plan.plan.steps),
        ["enable-image-mirroring rbd/new@site-a"]
    );
    let names: Vec<&str> = plan.status.images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["db", "new"]);
}

#[test]
fn pool_mode_plans_nothing_per_image() {
    let spec = spec().pool_mode().all_images().build();
    let mut world = converged(&spec, &["db"]).with_image("site-a", "plain");
    assert!(world.plan(&spec).plan.steps.is_empty());
    world.site("site-a").pool.mode = PoolMirrorMode::Image;
    let plan = world.plan(&spec);
    let Step::EnablePoolMirroring { mode, .. } = &plan.plan.steps[0].step else {
        panic!("{:?}", plan.plan.steps)
    };
    assert_eq!(*mode, PoolMirrorMode::Pool);
}

#[test]
fn empty_sites_converge_one_way_in_four_rounds_and_report_ready() {
    let spec = spec().images(&["db", "logs"]).schedule("15m").rpo(1800).build();
    let mut world = World::empty()
        .with_image("site-a", "db")
        .with_image("site-a", "logs");
    let rounds = world.converge(&spec, 6).unwrap();
    assert_eq!(rounds, 4, "pools, token, peer, images+schedules");
    let plan = world.plan(&spec);
    for type_ in [READY, SYNCED, RPO_MET] {
        assert_eq!(
            find(&plan.plan.conditions, type_).status,
            "True",
            "{type_}: {:?}",
            plan.plan.conditions
        );
    }
    assert_eq!(find(&plan.plan.conditions, RECONCILING).status, "False");
    assert!(!has(&plan.plan.conditions, STALLED));
    assert_eq!(plan.plan.requeue, Duration::from_secs(60));
    assert_eq!(plan.status.primary_site.as_deref(), Some("site-a"));
    assert_eq!(
        world.pool("site-a").schedules,
        [ScheduleEntry {
            image: None,
            interval: "15m".into(),
            start_time: None
        }]
    );
    let summary = plan.status.summary.unwrap();
    assert_eq!((summary.health.as_str(), summary.images), ("OK", 2));
    assert_eq!(summary.states.get("replaying"), Some(&2));
}

#[test]
fn empty_sites_converge_two_way_with_daemons_reported_on_both() {
    let spec = spec().two_way().all_images().build();
    let mut world = World::empty()
        .with_daemon("site-a", Some("OK"))
        .with_image("site-a", "db");
    world.converge(&spec, 6).unwrap();
    let plan = world.plan(&spec);
    assert_eq!(
        find(&plan.plan.conditions, READY).status,
        "True",
        "{:?}",
        plan.plan.conditions
    );
    let daemons: Vec<(&str, &str)> = plan
        .status
        .daemons
        .iter()
        .map(|d| (d.site.as_str(), d.health.as_str()))
        .collect();
    assert_eq!(daemons, [("site-b", "OK"), ("site-a", "OK")]);
    let peers: Vec<(&str, &str, &str)> = plan
        .status
        .peers
        .iter()
        .map(|p| (p.site.as_str(), p.peer_site.as_str(), p.direction.as_str()))
        .collect();
    assert_eq!(peers, [("site-a", "b", "rx-tx"), ("site-b", "a", "rx-tx")]);
}

#[test]
fn a_missing_daemon_on_the_receiving_site_is_an_error_not_a_step() {
    let spec = spec().images(&["db"]).build();
    let world = converged(&spec, &["db"]).with_daemon("site-b", None);
    let plan = world.plan(&spec);
    assert!(plan.plan.steps.is_empty());
    assert_eq!(plan.status.daemons[0].health, status::DAEMON_NOT_RUNNING);
    assert_eq!(plan.status.summary.unwrap().health, "ERROR");
    assert_eq!(
        find(&plan.plan.conditions, READY).reason,
        reason::WAITING_FOR_DEPENDENCY
    );
    assert_eq!(plan.plan.requeue, Duration::from_secs(15));
}

#[test]
fn after_a_failover_images_stay_where_they_are_primary_and_schedules_follow() {
    let spec = spec().images(&["db"]).schedule("1h").build();
    let mut world = converged(&spec, &["db"]);
    let now = world.now;
    for (site, primary) in [("site-a", false), ("site-b", true)] {
        let image = world.image_mut(site, "db").unwrap();
        image.mirroring.as_mut().unwrap().primary = primary;
        image.replay = (!primary).then(|| ReplayStatus {
            state: "replaying".into(),
            up: true,
            last_synced: Some(now),
            ..ReplayStatus::default()
        });
    }
    let plan = world.plan(&spec);
    assert_eq!(
        rendered(&plan.plan.steps),
        ["add-snapshot-schedule rbd every 1h@site-b"]
    );
    assert_eq!(plan.status.primary_site.as_deref(), Some("site-b"));
    assert_eq!(plan.status.images[0].primary_site.as_deref(), Some("site-b"));
}

#[test]
fn an_unreachable_site_gets_no_steps_and_blocks_the_pair() {
    let spec = spec().images(&["db"]).build();
    let world = World::empty().with_image("site-a", "db").unreachable("site-b");
    let plan = world.plan(&spec);
    assert!(
        plan.plan.steps.iter().all(|s| s.site == "site-a"),
        "{:?}",
        rendered(&plan.plan.steps)
    );
    assert_eq!(rendered(&plan.plan.steps), ["enable-pool-mirroring rbd@site-a"]);
    let ready = find(&plan.plan.conditions, READY);
    assert_eq!(ready.reason, reason::AGENT_UNREACHABLE);
    assert!(
        ready.message.contains("site-b: connection refused"),
        "{}",
        ready.message
    );
    assert!(plan.tokens_needed.is_empty());

    let converged_world = converged(&spec, &["db"]).unreachable("site-b");
    let plan = converged_world.plan(&spec);
    assert!(plan.plan.steps.is_empty());
    assert_eq!(plan.status.images[0].state, "unknown");
    assert_eq!(plan.plan.requeue, Duration::from_secs(15));
}

#[test]
fn split_brain_is_reported_and_its_images_are_left_alone() {
    let spec = spec().images(&["db", "new"]).schedule("15m").build();
    let mut world = converged(&spec, &["db"]).with_image("site-a", "new");
    world.image_mut("site-b", "db").unwrap().mirroring = Some(ImageMirroring {
        mode: crate::agent::ImageMirrorMode::Snapshot,
        primary: true,
        global_id: "gid-db".into(),
    });
    world.advance(7200);
    let plan = world.plan(&spec);
    assert!(
        plan.plan.steps.iter().all(|s| image_of(&s.step) != Some("db")),
        "{:?}",
        rendered(&plan.plan.steps)
    );
    assert_eq!(
        rendered(&plan.plan.steps),
        ["enable-image-mirroring rbd/new@site-a"]
    );
    for type_ in [READY, SYNCED] {
        let condition = find(&plan.plan.conditions, type_);
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("False", reason::SPLIT_BRAIN)
        );
        assert!(condition.message.contains("db"));
    }
    assert_eq!(find(&plan.plan.conditions, STALLED).status, "True");
    assert_eq!(plan.status.primary_site, None);
    assert_eq!(plan.status.images[0].state, status::STATE_SPLIT_BRAIN);
    assert_eq!(plan.status.summary.unwrap().health, "ERROR");
}

#[test]
fn plain_images_of_one_name_on_both_sites_stall_as_a_conflict() {
    let spec = spec().images(&["db"]).build();
    let world = converged(&spec, &[])
        .with_image("site-a", "db")
        .with_image("site-b", "db");
    let plan = world.plan(&spec);
    assert!(plan.plan.steps.is_empty());
    assert_eq!(find(&plan.plan.conditions, STALLED).reason, reason::CONFLICT);
    assert_eq!(find(&plan.plan.conditions, READY).reason, reason::CONFLICT);
}

#[test]
fn a_named_image_on_neither_site_is_waited_for() {
    let spec = spec().images(&["ghost"]).build();
    let plan = converged(&spec, &[]).plan(&spec);
    assert!(plan.plan.steps.is_empty());
    let ready = find(&plan.plan.conditions, READY);
    assert_eq!(ready.reason, reason::WAITING_FOR_DEPENDENCY);
    assert!(ready.message.contains("ghost"));
    assert_eq!(plan.status.images[0].state, status::STATE_MISSING);
}

#[test]
fn missing_schedules_are_added_and_others_removed_at_pool_level_only() {
    let spec = spec().images(&["db"]).schedule("15m").schedule("1d").build();
    let mut world = converged(&spec, &["db"]);
    let schedules = &mut world.site("site-a").pool.schedules;
    schedules.retain(|s| s.interval == "15m");
    schedules.push(ScheduleEntry {
        image: None,
        interval: "5m".into(),
        start_time: None,
    });
    schedules.push(ScheduleEntry {
        image: Some("db".into()),
        interval: "1m".into(),
        start_time: None,
    });
    let plan = world.plan(&spec);
    assert_eq!(
        rendered(&plan.plan.steps),
        [
            "add-snapshot-schedule rbd every 1d@site-a",
            "remove-snapshot-schedule rbd every 5m@site-a"
        ]
    );
    world.apply(&plan).unwrap();
    assert!(world.plan(&spec).plan.steps.is_empty());
}

#[test]
fn the_watchdog_snapshots_images_whose_schedule_stalled() {
    let spec = spec()
        .images(&["db", "fresh"])
        .schedule("15m")
        .schedule("1h")
        .build();
    let mut world = converged(&spec, &["db", "fresh"]);
    world.advance(1801);
    let now = world.now;
    world.image_mut("site-a", "fresh").unwrap().last_mirror_snapshot = Some(super::snapshot(now, "primary"));
    let plan = world.plan(&spec);
    assert_eq!(
        plan.plan.steps,
        [SiteStep::new(
            "site-a",
            Step::CreateMirrorSnapshot {
                pool: "rbd".into(),
                image: "db".into()
            }
        )]
    );
    let synced = find(&plan.plan.conditions, SYNCED);
    assert_eq!(
        (synced.status.as_str(), synced.reason.as_str()),
        ("False", SNAPSHOTS_STALE)
    );
    assert!(
        synced.message.contains("db newest 1801s old (limit 1800s)"),
        "{}",
        synced.message
    );
    world.apply(&plan).unwrap();
    let after = world.plan(&spec);
    assert!(after.plan.steps.is_empty(), "{:?}", rendered(&after.plan.steps));
    assert_eq!(find(&after.plan.conditions, SYNCED).status, "True");
}

#[test]
fn the_watchdog_stays_quiet_without_schedules_or_in_journal_mode() {
    for spec in [
        spec().images(&["db"]).build(),
        spec().images(&["db"]).journal().build(),
    ] {
        let mut world = converged(&spec, &["db"]);
        world.advance(86400);
        assert!(world.plan(&spec).plan.steps.is_empty());
    }
}

#[test]
fn rpo_met_names_the_worst_image_and_its_lag() {
    let spec = spec().images(&["db", "logs"]).rpo(600).build();
    let mut world = converged(&spec, &["db", "logs"]);
    world.advance(300);
    let synced_at = |world: &World, seconds_ago: i64| super::model::at(world.now.as_second() - seconds_ago);
    let logs_synced = synced_at(&world, 900);
    world
        .image_mut("site-b", "logs")
        .unwrap()
        .replay
        .as_mut()
        .unwrap()
        .last_synced = Some(logs_synced);
    let plan = world.plan(&spec);
    let rpo = find(&plan.plan.conditions, RPO_MET);
    assert_eq!(
        (rpo.status.as_str(), rpo.reason.as_str()),
        ("False", reason::LAG_ABOVE_TARGET)
    );
    assert!(rpo.message.contains("logs lags 900s"), "{}", rpo.message);
    assert_eq!(find(&plan.plan.conditions, SYNCED).reason, reason::BEHIND);
    let summary = plan.status.summary.as_ref().unwrap();
    assert_eq!(
        (summary.health.as_str(), summary.max_lag_seconds),
        ("WARNING", Some(900))
    );
    assert_eq!(plan.status.images[0].lag_seconds, Some(300));
    assert_eq!(plan.plan.requeue, Duration::from_secs(15));

    let within = converged(&spec, &["db", "logs"]).plan(&spec);
    let rpo = find(&within.plan.conditions, RPO_MET);
    assert_eq!(
        (rpo.status.as_str(), rpo.reason.as_str()),
        ("True", reason::LAG_WITHIN_TARGET)
    );
    assert!(!has(&spec_without_rpo_plan().plan.conditions, RPO_MET));
}

fn spec_without_rpo_plan() -> crate::controller::rbd_mirror_pool::plan::PoolPlan {
    let spec = spec().images(&["db"]).build();
    converged(&spec, &["db"]).plan(&spec)
}

#[test]
fn a_copy_that_is_not_replaying_keeps_synced_false() {
    let spec = spec().images(&["db"]).build();
    let mut world = converged(&spec, &["db"]);
    world
        .image_mut("site-b", "db")
        .unwrap()
        .replay
        .as_mut()
        .unwrap()
        .state = "syncing".into();
    let plan = world.plan(&spec);
    let synced = find(&plan.plan.conditions, SYNCED);
    assert_eq!(
        (synced.reason.as_str(), synced.message.as_str()),
        (reason::BEHIND, "db is syncing")
    );
    assert_eq!(
        find(&plan.plan.conditions, READY).status,
        "True",
        "syncing is progress, not a fault"
    );
}

#[test]
fn deletion_with_delete_undoes_mirroring_in_rounds_and_keeps_the_pools() {
    let spec = spec().images(&["db"]).schedule("15m").build();
    let mut world = converged(&spec, &["db"]);
    let first = plan(&spec, &world.observed(true), world.now);
    assert_eq!(
        rendered(&first.plan.steps),
        ["disable-image-mirroring rbd/db@site-a"]
    );
    assert!(!first.cleanup_complete);
    let mut rounds = 0;
    loop {
        let deletion = plan(&spec, &world.observed(true), world.now);
        if deletion.cleanup_complete {
            assert!(deletion.plan.steps.is_empty());
            break;
        }
        world.apply(&deletion).unwrap();
        rounds += 1;
        assert!(rounds <= 4, "cleanup did not finish");
    }
    assert_eq!(rounds, 3, "primaries, then copies and peers, then pool mirroring");
    for site in ["site-a", "site-b"] {
        let pool = world.pool(site);
        assert!(pool.exists, "pools hold user data and stay");
        assert_eq!(pool.mode, PoolMirrorMode::Disabled);
        assert!(pool.peers.is_empty());
    }
    assert!(world.image("site-a", "db").is_some(), "the primary image stays");
}

#[test]
fn deletion_disables_copies_rbd_mirror_left_behind() {
    let spec = spec().images(&["db"]).build();
    let mut world = converged(&spec, &["db"]).with_daemon("site-b", None);
    world.image_mut("site-a", "db").unwrap().mirroring = None;
    let plan = plan(&spec, &world.observed(true), world.now);
    assert_eq!(
        rendered(&plan.plan.steps),
        [
            "disable-image-mirroring rbd/db@site-b",
            "remove-peer rbd peer peer-0@site-a",
            "remove-peer rbd peer peer-1@site-b"
        ]
    );
}

#[test]
fn deletion_with_retain_plans_nothing_and_lets_the_finalizer_go() {
    let spec = spec().images(&["db"]).retain().build();
    let world = converged(&spec, &["db"]);
    let plan = plan(&spec, &world.observed(true), world.now);
    assert!(plan.plan.steps.is_empty());
    assert!(plan.cleanup_complete);
}

#[test]
fn deletion_waits_for_an_unreachable_site() {
    let spec = spec().images(&["db"]).build();
    let world = converged(&spec, &["db"]).unreachable("site-b");
    let plan = plan(&spec, &world.observed(true), world.now);
    assert_eq!(
        rendered(&plan.plan.steps),
        ["disable-image-mirroring rbd/db@site-a"]
    );
    assert!(!plan.cleanup_complete);
    let mut world = world;
    world.image_mut("site-a", "db").unwrap().mirroring = None;
    let plan = super::super::plan(&spec, &world.observed(true), world.now);
    assert!(plan.plan.steps.is_empty(), "peers wait until both sites are seen");
    assert!(!plan.cleanup_complete);
    assert_eq!(
        find(&plan.plan.conditions, READY).reason,
        reason::AGENT_UNREACHABLE
    );
}

#[test]
fn deletion_in_pool_mode_removes_peers_then_disables_the_pools() {
    let spec = spec().pool_mode().all_images().build();
    let mut world = converged(&spec, &["db"]);
    let first = plan(&spec, &world.observed(true), world.now);
    assert_eq!(
        rendered(&first.plan.steps),
        [
            "remove-peer rbd peer peer-0@site-a",
            "remove-peer rbd peer peer-1@site-b"
        ]
    );
    world.apply(&first).unwrap();
    let second = plan(&spec, &world.observed(true), world.now);
    assert_eq!(
        rendered(&second.plan.steps),
        [
            "disable-pool-mirroring rbd@site-a",
            "disable-pool-mirroring rbd@site-b"
        ]
    );
    world.apply(&second).unwrap();
    assert!(plan(&spec, &world.observed(true), world.now).cleanup_complete);
}

#[test]
fn observations_that_do_not_match_the_spec_plan_nothing() {
    let spec = spec().build();
    let mut observed = World::empty().observed(false);
    observed.sites.pop();
    let plan = plan(&spec, &observed, super::model::at(super::model::EPOCH));
    assert!(plan.plan.steps.is_empty());
    assert_eq!(find(&plan.plan.conditions, STALLED).reason, reason::INVALID_SPEC);
    let mut same_names = World::empty();
    same_names.site("site-b").ceph_name = "a".into();
    let plan = same_names.plan(&spec);
    assert!(plan.plan.steps.is_empty());
    assert_eq!(find(&plan.plan.conditions, READY).reason, reason::INVALID_SPEC);
}
