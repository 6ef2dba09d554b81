//! Property tests: convergence is idempotent, the planner never plans what belongs to a failover or a token
//! it lacks, and a converged pool plans nothing whatever the spec.

use proptest::{prelude::*, sample::subsequence};

use super::{
    converged, find, image_of,
    model::{at, peer, snapshot, World, EPOCH},
    spec, SpecBuilder,
};
use crate::{
    agent::{
        DaemonHealth, ImageMirrorMode, ImageMirroring, PeerDirection, PoolMirrorMode, RbdImage, RbdPoolState,
        ReplayStatus, ScheduleEntry, Step,
    },
    api::{
        conditions::{READY, RECONCILING, RPO_MET, SYNCED},
        rbd_mirror_pool::{RbdMirrorPoolSpec, SiteRole},
    },
    controller::rbd_mirror_pool::plan::plan,
};

const IMAGES: [&str; 3] = ["db", "logs", "cache"];

/// Valid specs, as the CRD's validation admits them.
fn specs() -> impl Strategy<Value = RbdMirrorPoolSpec> {
    (
        0..3u8,
        any::<bool>(),
        any::<bool>(),
        prop::option::of(subsequence(IMAGES.to_vec(), 0..=3)),
        subsequence(vec!["15m", "1h"], 0..=2),
        prop::option::of(60u32..7200),
        any::<bool>(),
    )
        .prop_map(|(modes, two_way, primary_b, names, schedules, rpo, retain)| {
            let mut built: SpecBuilder = spec();
            built = match modes {
                0 => built,
                1 => built.journal(),
                _ => built.pool_mode(),
            };
            let snapshot_mode = modes == 0;
            if two_way {
                built = built.two_way();
            }
            if primary_b {
                built = built.primary_b();
            }
            built = match names {
                Some(names) => built.images(&names),
                None => built.all_images(),
            };
            for interval in schedules.into_iter().filter(|_| snapshot_mode) {
                built = built.schedule(interval);
            }
            if let Some(rpo) = rpo {
                built = built.rpo(rpo);
            }
            if retain {
                built = built.retain();
            }
            built.build()
        })
}

fn primary_site(spec: &RbdMirrorPoolSpec) -> &str {
    spec.site_with_role(SiteRole::Primary).unwrap_or("site-a")
}

/// Where a fresh setup may start: some images on the primary, and any part of the setup already done by
/// hand or by an earlier operator (pools, mirroring, tokens, a stray peer, a stray schedule).
#[derive(Clone, Debug)]
struct Head {
    images: Vec<&'static str>,
    pools: [bool; 2],
    mirroring: [bool; 2],
    tokens: [bool; 2],
    foreign_peer: bool,
    stray_schedule: bool,
}

fn heads() -> impl Strategy<Value = Head> {
    (
        subsequence(IMAGES.to_vec(), 0..=3),
        any::<[bool; 2]>(),
        any::<[bool; 2]>(),
        any::<[bool; 2]>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(images, pools, mirroring, tokens, foreign_peer, stray_schedule)| Head {
                images,
                pools,
                mirroring,
                tokens,
                foreign_peer,
                stray_schedule,
            },
        )
}

fn start(spec: &RbdMirrorPoolSpec, head: &Head) -> World {
    let mut world = World::empty().with_daemon("site-a", Some("OK"));
    for image in &head.images {
        world = world.with_image(primary_site(spec), image);
    }
    for index in 0..2 {
        let site = &mut world.sites[index];
        site.pool.exists |= head.pools[index] || head.mirroring[index];
        if head.mirroring[index] {
            site.pool.mode = PoolMirrorMode::Image;
            site.pool.site_name = Some(site.ceph_name.clone());
        }
        if head.tokens[index] {
            site.token = Some(super::model::token_of(&site.ceph_name));
        }
        if head.mirroring[index] && head.foreign_peer {
            site.pool.peers.push(peer(
                format!("foreign-{index}"),
                "old-site",
                PeerDirection::RxOnly,
            ));
        }
    }
    if head.stray_schedule {
        let pool = &mut world.site(primary_site(spec)).pool;
        if pool.exists {
            pool.schedules.push(ScheduleEntry {
                image: None,
                interval: "5m".into(),
                start_time: None,
            });
        }
    }
    world
}

/// Any state two clusters can report, coherent or not: split brain, stray peers, unreachable agents.
fn chaotic_pool() -> impl Strategy<Value = Result<RbdPoolState, String>> {
    let image = (
        prop::option::of((any::<bool>(), any::<bool>())),
        prop::option::of(prop_oneof![
            Just("replaying"),
            Just("syncing"),
            Just("error"),
            Just("stopped")
        ]),
        prop::option::of(0i64..10_000),
    );
    let pool = (
        any::<bool>(),
        0..3u8,
        prop::option::of(prop_oneof![Just("a"), Just("b"), Just("x")]),
        prop::collection::vec((prop_oneof![Just("a"), Just("b"), Just("x")], 0..3u8), 0..3),
        prop::collection::vec(prop::option::of(image), 3),
        any::<bool>(),
        subsequence(vec!["5m", "15m", "1h"], 0..=3),
    )
        .prop_map(
            |(exists, mode, site_name, peers, images, daemon, schedules)| RbdPoolState {
                exists,
                mode: [
                    PoolMirrorMode::Disabled,
                    PoolMirrorMode::Image,
                    PoolMirrorMode::Pool,
                ][usize::from(mode)],
                site_name: site_name.map(str::to_string),
                peers: peers
                    .into_iter()
                    .enumerate()
                    .map(|(i, (name, direction))| {
                        let directions = [PeerDirection::RxOnly, PeerDirection::TxOnly, PeerDirection::RxTx];
                        peer(format!("peer-{i}"), name, directions[usize::from(direction)])
                    })
                    .collect(),
                images: IMAGES
                    .iter()
                    .zip(images)
                    .filter_map(|(name, image)| {
                        let (mirroring, replay, age) = image?;
                        Some(RbdImage {
                            name: name.to_string(),
                            mirroring: mirroring.map(|(snapshot_mode, primary)| ImageMirroring {
                                mode: if snapshot_mode {
                                    ImageMirrorMode::Snapshot
                                } else {
                                    ImageMirrorMode::Journal
                                },
                                primary,
                                global_id: format!("gid-{name}"),
                            }),
                            replay: replay.map(|state| ReplayStatus {
                                state: state.into(),
                                up: true,
                                ..ReplayStatus::default()
                            }),
                            last_mirror_snapshot: age.map(|age| snapshot(at(EPOCH - age), "primary")),
                        })
                    })
                    .collect(),
                daemon: daemon.then(|| DaemonHealth { health: "OK".into() }),
                schedules: schedules
                    .into_iter()
                    .map(|interval| ScheduleEntry {
                        image: None,
                        interval: interval.into(),
                        start_time: None,
                    })
                    .collect(),
            },
        );
    prop_oneof![4 => pool.prop_map(Ok), 1 => Just(Err("connection refused".to_string()))]
}

fn chaotic_worlds() -> impl Strategy<Value = World> {
    (chaotic_pool(), chaotic_pool(), any::<[bool; 2]>()).prop_map(|(first, second, tokens)| {
        let mut world = World::empty();
        for (index, pool) in [first, second].into_iter().enumerate() {
            let site = &mut world.sites[index];
            match pool {
                Ok(pool) => site.pool = pool,
                Err(error) => site.unreachable = Some(error),
            }
            if tokens[index] {
                site.token = Some(super::model::token_of(&site.ceph_name));
            }
        }
        world
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn convergence_is_idempotent(spec in specs(), head in heads()) {
        let mut world = start(&spec, &head);
        let rounds = world.converge(&spec, 6);
        prop_assert!(rounds.is_ok(), "{}", rounds.unwrap_err());
        let again = world.plan(&spec);
        prop_assert!(again.plan.steps.is_empty() && again.tokens_needed.is_empty());
        prop_assert_eq!(&again, &world.plan(&spec), "planning is deterministic");
        let all_named_exist = spec.images.names.iter().all(|n| head.images.contains(&n.as_str()));
        if all_named_exist {
            prop_assert_eq!(&find(&again.plan.conditions, READY).status, "True", "{:?}", again.plan.conditions);
            prop_assert_eq!(&find(&again.plan.conditions, SYNCED).status, "True", "{:?}", again.plan.conditions);
        }
    }

    #[test]
    fn never_plans_a_failover_step_or_a_token_it_does_not_have(
        spec in specs(),
        world in chaotic_worlds(),
        deleting in any::<bool>(),
        later in 0u64..100_000,
    ) {
        let observed = world.observed(deleting);
        let result = plan(&spec, &observed, at(EPOCH + i64::try_from(later).unwrap_or(0)));
        let split_brain: Vec<&str> = IMAGES
            .into_iter()
            .filter(|name| {
                observed.sites.iter().all(|site| {
                    site.pool.as_ref().is_ok_and(|pool| {
                        pool.images.iter().any(|i| &i.name == name && i.mirroring.as_ref().is_some_and(|m| m.primary))
                    })
                })
            })
            .collect();
        for site_step in &result.plan.steps {
            let step = &site_step.step;
            prop_assert!(
                !matches!(step, Step::PromoteImage { .. } | Step::DemoteImage { .. } | Step::ResyncImage { .. }),
                "planned {}", site_step
            );
            let site = observed.sites.iter().find(|s| s.site == site_step.site);
            prop_assert!(site.is_some_and(|s| s.pool.is_ok()), "step on an unobserved site: {}", site_step);
            if let Step::ImportPeer { token, .. } = step {
                let other = observed.sites.iter().find(|s| s.site != site_step.site);
                prop_assert_eq!(other.and_then(|s| s.bootstrap_token.as_ref()), Some(token));
            }
            // Deletion may disable mirroring on split-brain images: both diverged copies stay as plain images.
            if let Some(image) = image_of(step).filter(|_| !deleting) {
                prop_assert!(!split_brain.contains(&image), "{} touches a split-brain image", site_step);
            }
            let disables = matches!(step, Step::DisableImageMirroring { .. } | Step::DisablePoolMirroring { .. });
            if deleting {
                prop_assert!(disables || matches!(step, Step::RemovePeer { .. }), "deletion planned {}", site_step);
            } else {
                prop_assert!(!disables, "planned {} while not deleting", site_step);
            }
        }
    }

    #[test]
    fn deletion_undoes_a_converged_pool_and_keeps_its_pools(spec in specs(), images in subsequence(IMAGES.to_vec(), 0..=3)) {
        let mut world = converged(&spec, &images);
        for _ in 0..4 {
            let deletion = plan(&spec, &world.observed(true), world.now);
            if deletion.cleanup_complete {
                break;
            }
            let applied = world.apply(&deletion);
            prop_assert!(applied.is_ok(), "{}", applied.unwrap_err());
        }
        let last = plan(&spec, &world.observed(true), world.now);
        prop_assert!(last.cleanup_complete && last.plan.steps.is_empty(), "{:?}", last.plan.steps);
        for site in &world.sites {
            prop_assert!(site.pool.exists);
            let undone = site.pool.mode == PoolMirrorMode::Disabled && site.pool.peers.is_empty();
            prop_assert_eq!(undone, spec.deletion_policy == crate::api::common::DeletionPolicy::Delete);
        }
    }

    #[test]
    fn a_converged_pool_plans_nothing_for_any_spec(spec in specs(), images in subsequence(IMAGES.to_vec(), 0..=3)) {
        let images = if spec.images.all {
            images
        } else {
            spec.images.names.iter().map(String::as_str).collect()
        };
        let world = converged(&spec, &images);
        let result = world.plan(&spec);
        prop_assert!(result.plan.steps.is_empty(), "{:?}", result.plan.steps);
        prop_assert!(result.tokens_needed.is_empty());
        prop_assert_eq!(&find(&result.plan.conditions, READY).status, "True", "{:?}", result.plan.conditions);
        prop_assert_eq!(&find(&result.plan.conditions, SYNCED).status, "True");
        prop_assert_eq!(&find(&result.plan.conditions, RECONCILING).status, "False");
        if spec.rpo_seconds.is_some() {
            prop_assert_eq!(&find(&result.plan.conditions, RPO_MET).status, "True");
        }
        prop_assert_eq!(result.status.primary_site.as_deref(), Some(primary_site(&spec)));
        prop_assert_eq!(result.plan.requeue, std::time::Duration::from_secs(60));
    }
}
