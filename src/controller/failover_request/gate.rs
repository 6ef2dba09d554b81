//! Whether the sites a request needs answer: unreachable ones are waited out, any other error fails the
//! request.

use super::{
    ledger::{Ledger, Task},
    plan::{reason, seconds_between, Ctx, Failure, Outcome, Run, SITE_UNREACHABLE},
};
use crate::{
    agent::AgentError,
    api::failover_request::{FailoverAction, StepState},
};

/// Sites the request needs must answer. Unreachable ones are waited out up to `unreachableTimeoutSeconds`
/// (nothing runs meanwhile: a planned promote must not go ahead while the source cannot confirm it is
/// demoted), or for as long as it takes once the target may have taken over (see [`took_over`]); any
/// other error (including a step the reconciler saw fail there) fails the request.
pub(super) fn gate(ctx: &Ctx, run: &mut Run) -> Option<Outcome> {
    let faults = faults(ctx);
    if let Some((site, error)) = faults.iter().find(|(_, e)| !e.is_unreachable()) {
        let failed_row = (0..run.ledger.entries().len()).find(|&i| {
            run.ledger.state(i) == StepState::Running && run.ledger.entry(i).target.site() == *site
        });
        let message = match failed_row {
            Some(i) => format!(
                "{} {} failed: {error}",
                run.ledger.rows()[i].name,
                run.ledger.rows()[i].target
            ),
            None => format!("site {site}: {error}"),
        };
        run.ledger.fail_running(ctx.now, &error.to_string(), Some(site));
        return Some(Outcome::Failed(Failure::new(reason::STEP_FAILED, message)));
    }
    let (site, error) = faults.first()?;
    let since = run
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == SITE_UNREACHABLE && c.status == "True")
        .map_or(ctx.now, |c| c.last_transition_time.0);
    let for_seconds = seconds_between(ctx.now, since);
    let gives_up = !took_over(&run.ledger);
    if for_seconds < ctx.unreachable_timeout() || !gives_up {
        return Some(Outcome::Unreachable {
            site: site.to_string(),
            reason: error.reason(),
            error: error.to_string(),
            for_seconds,
            gives_up,
        });
    }
    let message = format!(
        "site {site} unreachable for {for_seconds} s during {:?}{}",
        run.status.phase,
        emergency_hint(ctx, site)
    );
    run.ledger
        .fail_running(ctx.now, &format!("not confirmed: {message}"), None);
    Some(Outcome::Failed(Failure::new(
        reason::UNREACHABLE_TOO_LONG,
        message,
    )))
}

/// What to add when `site` does not answer: a planned move away from it can only go on as an emergency.
pub(super) fn emergency_hint(ctx: &Ctx, site: &str) -> &'static str {
    let moves_away =
        site != ctx.target() && matches!(ctx.action(), FailoverAction::Planned | FailoverAction::Failback);
    match moves_away {
        true => "; create an emergency FailoverRequest to force-promote",
        false => "",
    }
}

/// Whether the target may already have taken over a subject: a promote or a period commit was handed out.
/// Failing the request from then on would leave both sites claiming the subject (the old master zone's
/// site still holds the period that names it master until it pulls the new one), so an unreachable site
/// is waited for instead.
fn took_over(ledger: &Ledger) -> bool {
    ledger.entries().iter().enumerate().any(|(i, entry)| {
        matches!(entry.task, Task::Promote | Task::CommitPeriod)
            && matches!(ledger.state(i), StepState::Running | StepState::Done)
    })
}

/// Errors of the sites the request needs, one per site.
fn faults<'a>(ctx: &'a Ctx) -> Vec<(&'a str, &'a AgentError)> {
    let pools = ctx
        .observed
        .pools
        .iter()
        .filter(|p| ctx.spec.targets.rbd_mirror_pools.contains(&p.name));
    let pool_errors = pools
        .flat_map(|p| &p.sites)
        .filter_map(|s| Some((s.site.as_str(), s.pool.as_ref().err()?)));
    let realms = ctx
        .observed
        .realms
        .iter()
        .filter(|r| ctx.spec.targets.realms.contains(&r.name));
    let zone_errors = realms
        .flat_map(|r| &r.zones)
        .filter_map(|z| Some((z.site.as_str(), z.local.as_ref().err()?)));
    let mut faults: Vec<(&str, &AgentError)> = Vec::new();
    for (site, error) in pool_errors.chain(zone_errors) {
        if ctx.is_relevant(site) && !faults.iter().any(|(s, _)| *s == site) {
            faults.push((site, error));
        }
    }
    faults
}
