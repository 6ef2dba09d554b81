//! Which findings become Events: announced when they appear, not on every reconcile while they last.

use super::{converged, spec};
use crate::controller::rbd_mirror_pool::plan::{announcements, SNAPSHOTS_STALE};

#[test]
fn a_stalled_snapshot_schedule_is_announced_once_when_the_watchdog_finds_it() {
    let spec = spec().images(&["db"]).schedule("1m").build();
    let mut world = converged(&spec, &["db"]);
    let healthy = world.plan(&spec).plan.conditions;
    world.advance(121);
    let stale = world.plan(&spec);
    let events = announcements(&healthy, &stale.plan.conditions);
    assert_eq!(events.len(), 1, "{events:?}");
    let (reason, note) = &events[0];
    assert_eq!(*reason, SNAPSHOTS_STALE);
    assert!(note.contains("db newest 121s old (limit 120s)"), "{note}");
    assert!(
        announcements(&stale.plan.conditions, &stale.plan.conditions).is_empty(),
        "still stale: already announced"
    );

    world.apply(&stale).unwrap();
    let repaired = world.plan(&spec).plan.conditions;
    assert!(announcements(&stale.plan.conditions, &repaired).is_empty());
    world.advance(121);
    let again = world.plan(&spec).plan.conditions;
    assert_eq!(
        announcements(&repaired, &again)
            .iter()
            .map(|(reason, _)| *reason)
            .collect::<Vec<_>>(),
        [SNAPSHOTS_STALE],
        "stalled again after the repair: announced again"
    );
}
