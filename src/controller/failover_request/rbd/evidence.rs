//! What an image's state on the two sites proves, as the image tasks read it.
//!
//! When T has received the demotion (snapshot mode): Ceph's demote itself takes the final mirror snapshot
//! (state `demoted` on S), and rbd-mirror copies it to T as a `demoted` non-primary snapshot. T has it once
//! its newest complete mirror snapshot is such a copy created at or after S's demotion snapshot (or the
//! primary time it applied is at or after it). `last_synced` alone would not do: Ceph reports it in whole
//! seconds, so a snapshot taken in the same second as the demotion would pass for it.
//!
//! Journal mode keeps no snapshots. T has replayed the demotion when rbd-mirror reports "remote image is
//! not primary" (measured on Pacific: T's replayer stops at the demotion entry, `up+stopped`, and restarts to
//! find both sides non-primary, `up+unknown`, within seconds), or replays with `entries_behind_primary: 0`
//! in a description at least one refresh (about 30 s) younger than the demotion: an older one may have
//! been written before the demotion arrived, and a promote handed out on it would be refused and fail the
//! request. Ceph's non-forced promote refuses an image that is not caught up, so a description that is
//! wrong all the same fails the promote instead of losing data.
//!
//! A resync takes hold only once rbd-mirror acts on the flag, which deletes the stale image before it
//! recreates it; an observation taken meanwhile still shows the old copy. So a resync handed out is not
//! handed out again before a status refresh has passed: a second one sent while the image is gone would
//! find nothing to flag.
//!
//! After a resync, the stale copy starts rebuilding only from a mirror snapshot the primary takes after the
//! resync (one taken in the same second may not count). The mirror-snapshot row is done once the copy
//! receives; until then a snapshot is taken again only when the last one the row took is older than a
//! status refresh, not on every call: a stream of snapshots would keep restarting the image copy.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::super::plan::seconds_between;
use crate::agent::{ImageMirrorMode, MirrorSnapshot, RbdImage};

/// Mirror-snapshot states as `rbd snap ls --all` names them (`demoted` covers own and received demotion
/// snapshots).
const DEMOTED: &str = "demoted";
const NON_PRIMARY: &str = "non-primary";
const PRIMARY: &str = "primary";
/// How often rbd-mirror refreshes the description `rbd mirror pool status` shows.
pub(super) const STATUS_REFRESH: Duration = Duration::from_secs(30);

/// One image as a site shows it.
#[derive(Clone, Copy)]
pub(super) enum Seen<'a> {
    Image(&'a RbdImage),
    /// The site answered and has no such image.
    Missing,
    /// The site did not answer.
    Unobserved,
}

pub(super) fn is_primary(image: &RbdImage) -> bool {
    image.mirroring.as_ref().is_some_and(|m| m.primary)
}

pub(super) fn seen_primary(seen: Seen) -> bool {
    matches!(seen, Seen::Image(image) if is_primary(image))
}

pub(super) fn last_synced(image: &RbdImage) -> Option<Timestamp> {
    image.replay.as_ref()?.last_synced
}

pub(super) fn newest_copy(image: &RbdImage) -> Option<&MirrorSnapshot> {
    image
        .last_mirror_snapshot
        .as_ref()
        .filter(|s| s.complete && s.state != PRIMARY)
}

/// Snapshot mode: `receiver` holds the demotion snapshot `source` took (see the module docs).
pub(super) fn demotion_received(receiver: &RbdImage, source: &RbdImage) -> bool {
    if is_primary(receiver) || is_primary(source) {
        return false;
    }
    let Some(demotion) = source
        .last_mirror_snapshot
        .as_ref()
        .filter(|s| s.state == DEMOTED)
    else {
        return false;
    };
    let Some(copy) = newest_copy(receiver).filter(|s| s.state == DEMOTED) else {
        return false;
    };
    copy.created >= demotion.created || last_synced(receiver).is_some_and(|t| t >= demotion.created)
}

/// Journal mode: `receiver` has replayed up to `source`'s demotion (see the module docs); `refreshed` says
/// whether its description is younger than the demotion.
pub(super) fn journal_caught_up(receiver: &RbdImage, source: &RbdImage, refreshed: bool) -> bool {
    if is_primary(receiver) || is_primary(source) {
        return false;
    }
    receiver.replay.as_ref().is_some_and(|r| {
        r.up && (r.description.contains("remote image is not primary")
            || (refreshed && r.state == "replaying" && entries_behind_primary(&r.description) == Some(0)))
    })
}

/// The primary `image` took a mirror snapshot of its own `since` or later (Ceph reports whole seconds),
/// less than a status refresh before `now`.
pub(super) fn fresh_snapshot_since(image: Seen, since: Option<Timestamp>, now: Timestamp) -> bool {
    let (Seen::Image(image), Some(since)) = (image, since) else {
        return false;
    };
    image.last_mirror_snapshot.as_ref().is_some_and(|s| {
        s.state == PRIMARY
            && s.created.as_second() >= since.as_second()
            && seconds_between(now, s.created) < STATUS_REFRESH.as_secs()
    })
}

fn entries_behind_primary(description: &str) -> Option<u64> {
    let rest = description.split("\"entries_behind_primary\":").nth(1)?;
    rest.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

/// After `rbd mirror image resync`, rbd-mirror deletes the stale image and recreates it from the primary:
/// its own snapshots (the split brain's demotion snapshot among them) are gone, so the image has no
/// snapshot or only received ones (snapshot mode), or replays from scratch (journal mode).
pub(super) fn resync_took_hold(stale: Seen, mode: ImageMirrorMode) -> bool {
    let Seen::Image(image) = stale else {
        return matches!(stale, Seen::Missing);
    };
    if image.mirroring.is_none() {
        return true;
    }
    match mode {
        ImageMirrorMode::Snapshot => image
            .last_mirror_snapshot
            .as_ref()
            .is_none_or(|s| s.state == NON_PRIMARY),
        ImageMirrorMode::Journal => image.replay.as_ref().is_some_and(|r| {
            matches!(r.state.as_str(), "syncing" | "starting_replay" | "replaying")
                && !r.description.contains("split-brain")
        }),
    }
}

/// The recreated image receives again. A snapshot-mode image stays stuck after a resync until the primary
/// takes a new mirror snapshot (measured on Pacific), which is what the mirror-snapshot task is for.
pub(super) fn receiving(stale: Seen) -> bool {
    let Seen::Image(image) = stale else {
        return false;
    };
    image
        .last_mirror_snapshot
        .as_ref()
        .is_some_and(|s| s.state == NON_PRIMARY)
        || image
            .replay
            .as_ref()
            .is_some_and(|r| r.up && matches!(r.state.as_str(), "syncing" | "replaying"))
}

/// `stale` replays from `primary` and (snapshot mode) has applied its newest snapshot.
pub(super) fn in_sync(stale: Seen, primary: Seen, mode: ImageMirrorMode) -> bool {
    let (Seen::Image(stale), Seen::Image(primary)) = (stale, primary) else {
        return false;
    };
    if is_primary(stale) || !is_primary(primary) || !replaying(stale) {
        return false;
    }
    match mode {
        ImageMirrorMode::Journal => true,
        ImageMirrorMode::Snapshot => {
            let copied = newest_copy(stale).is_some_and(|s| s.state == NON_PRIMARY);
            let newest_primary = primary.last_mirror_snapshot.as_ref().map(|s| s.created);
            copied && matches!((last_synced(stale), newest_primary), (Some(t), Some(p)) if t >= p)
        }
    }
}

pub(super) fn replaying(image: &RbdImage) -> bool {
    image
        .replay
        .as_ref()
        .is_some_and(|r| r.up && r.state == "replaying")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_behind_primary_is_read_from_the_replay_description() {
        let description = "replaying, {\"bytes_per_second\":908321.83,\"entries_behind_primary\":6143,\"entries_per_second\":219.47}";
        assert_eq!(entries_behind_primary(description), Some(6143));
        assert_eq!(
            entries_behind_primary("replaying, {\"entries_behind_primary\":0}"),
            Some(0)
        );
        assert_eq!(entries_behind_primary("stopped"), None);
    }
}
