//! Drill: the target's copy of an image, checked against the snapshot on the other site that it mirrors,
//! by checksum, without promoting or writing anything.
//!
//! The copy is the target's newest complete received mirror snapshot; the snapshot it mirrors is the one
//! its `primary_snap_id` names on the other site. The planner asks for both to be read (a [`CopyCheck`]);
//! the reconciler reads them through the agents and plans again with the result. A result counts only for
//! the snapshots the sites show now: when rbd-mirror synced a newer snapshot meanwhile, the newer copy is
//! checked instead. The primary keeps the snapshot a copy mirrors until the copy moves on, so a snapshot
//! gone from the other site while the copy still mirrors it means the copy fell further behind than the
//! primary keeps snapshots: it can no longer be checked, and the drill fails saying so.

use k8s_openapi::jiff::Timestamp;

use super::{
    super::{
        check::{CheckedCopy, CopyCheck, SiteSnapshot},
        plan::{seconds_between, Ctx, Eval},
    },
    evidence::{is_primary, newest_copy, Seen},
};
use crate::agent::{AgentError, RbdImage};

/// The image on the drill's target site and on the other site.
pub(super) struct Sides<'a> {
    pub pool: &'a str,
    pub image: &'a str,
    pub site: &'a str,
    pub copy: &'a RbdImage,
    pub other: &'a str,
    pub source: Seen<'a>,
}

/// The copy on `sides.site` as the last check of it found it; `since` is when the row was first handed
/// out, which bounds how long reads that keep failing are retried.
pub(super) fn verify_copy(ctx: &Ctx, sides: Sides, since: Option<Timestamp>) -> Eval {
    let Sides {
        pool,
        image,
        site,
        copy,
        other,
        source,
    } = sides;
    let label = format!("{pool}/{image}");
    if is_primary(copy) {
        return Eval::Fail(format!(
            "image {label} is primary on site {site}: a drill checks a non-primary copy"
        ));
    }
    let Some((snapshot, mirrored)) = newest_copy(copy).and_then(|s| Some((s, s.primary_snap_id?))) else {
        return Eval::Fail(format!(
            "site {site} has no complete mirror snapshot of {label} received from site {other}: nothing to check"
        ));
    };
    match source {
        Seen::Unobserved => return Eval::Wait(format!("waiting for site {other} to answer")),
        Seen::Missing => {
            return Eval::Fail(format!(
                "image {label} not found on site {other}: nothing to check the copy against"
            ))
        }
        Seen::Image(_) => {}
    }
    let check = CopyCheck {
        pool: pool.to_string(),
        image: image.to_string(),
        copy: SiteSnapshot {
            site: site.to_string(),
            snap_id: snapshot.id,
        },
        source: SiteSnapshot {
            site: other.to_string(),
            snap_id: mirrored,
        },
    };
    match ctx.observed.checked_copies.iter().find(|c| c.check == check) {
        None => Eval::Check(check),
        Some(result) => {
            let retrying_for = since.map_or(0, |t| seconds_between(ctx.now, t));
            judge(&label, result, retrying_for < ctx.unreachable_timeout())
        }
    }
}

/// What a check's result says; failed reads are retried while `retry` holds.
fn judge(label: &str, result: &CheckedCopy, retry: bool) -> Eval {
    let CopyCheck { copy, source, .. } = &result.check;
    let at = |s: &SiteSnapshot| format!("snapshot {} on site {}", s.snap_id, s.site);
    match (&result.copy, &result.source) {
        (Ok(held), Ok(wanted)) if held == wanted => Eval::Confirmed(format!(
            "checksums match: {} and {} hold the same {} bytes (BLAKE3 {}); read in {:.1} s",
            at(copy),
            at(source),
            held.size,
            held.blake3,
            result.seconds
        )),
        (Ok(held), Ok(wanted)) => Eval::Mismatch(format!(
            "checksum mismatch for {label}: {} holds {} bytes with BLAKE3 {}, {} holds {} bytes with BLAKE3 {}",
            at(copy),
            held.size,
            held.blake3,
            at(source),
            wanted.size,
            wanted.blake3
        )),
        (Err(AgentError::NotFound { .. }), _) => Eval::Wait(format!(
            "{} was superseded while it was read (rbd-mirror started a newer sync); checking the newer copy",
            at(copy)
        )),
        (_, Err(error @ AgentError::NotFound { .. })) => Eval::Fail(format!(
            "{} that the copy of {label} on site {} mirrors is gone ({error}): the copy is older than \
             the snapshots the primary keeps",
            at(source),
            copy.site
        )),
        (Err(error), _) | (_, Err(error)) if retry && error.is_transient() => {
            Eval::Wait(format!("reading {label} failed, trying again: {error}"))
        }
        (Err(error), _) | (_, Err(error)) => Eval::Fail(format!("reading {label}: {error}")),
    }
}
