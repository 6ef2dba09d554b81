//! Every parser on arbitrary text and on damaged real output: it never panics, and whatever it cannot read
//! is an `AgentError::Parse`, never another error or a made-up value.

use proptest::prelude::*;

use super::{cluster_info, names, rbd, rgw};
use crate::agent::{ceph::command::CommandOutput, AgentError, AgentResult};

type Parser = fn(&CommandOutput) -> AgentResult<()>;

/// Each parser with a real output it reads; JSON parsers first.
fn parsers() -> Vec<(&'static str, Parser, CommandOutput)> {
    vec![
        ("realm", |o| rgw::realm(o).map(drop), fixture!("realm-get.json")),
        (
            "period",
            |o| rgw::period(o).map(drop),
            fixture!("period-get.json"),
        ),
        (
            "period configuration",
            |o| rgw::period_configuration(o).map(drop),
            fixture!("period-get.json"),
        ),
        (
            "zonegroup",
            |o| rgw::zone_group(o).map(drop),
            fixture!("zonegroup-get.json"),
        ),
        (
            "zone",
            |o| rgw::zone_params(o).map(drop),
            fixture!("zone-get-with-system-key.json"),
        ),
        (
            "zone list",
            |o| rgw::listing(o, "zones").map(drop),
            fixture!("radosgw-admin-zone-list.json"),
        ),
        (
            "user",
            |o| rgw::user_info(o).map(drop),
            fixture!("user-info.json"),
        ),
        (
            "metadata sync",
            |o| rgw::metadata_sync(o).map(drop),
            fixture!("metadata-sync-status.json"),
        ),
        (
            "data sync",
            |o| rgw::data_sync(o).map(drop),
            fixture!("data-sync-status.json"),
        ),
        (
            "sync groups",
            |o| rgw::sync_groups(o).map(drop),
            fixture!("sync-group-get-zonegroup.json"),
        ),
        (
            "pool info",
            |o| rbd::pool_info(o).map(drop),
            fixture!("rbd-mirror-pool-info-all-b.json"),
        ),
        (
            "pool status",
            |o| rbd::pool_status(o).map(drop),
            fixture!("rbd-mirror-pool-status-verbose-b.json"),
        ),
        (
            "rbd info",
            |o| rbd::image_mirroring(o).map(drop),
            fixture!("rbd-info-snapimg-b.json"),
        ),
        (
            "snap ls",
            |o| rbd::last_mirror_snapshot(o).map(drop),
            fixture!("rbd-snap-ls-all-ts1-b-after-failback.json"),
        ),
        (
            "schedules",
            |o| rbd::schedules(o).map(drop),
            fixture!("rbd-mirror-snapshot-schedule-ls-recursive.json"),
        ),
        ("names", |o| names(o).map(drop), fixture!("ceph-osd-pool-ls.json")),
        (
            "ceph status",
            |o| cluster_info(o, &fixture!("ceph-versions.json")).map(drop),
            fixture!("ceph-status.json"),
        ),
        (
            "ceph versions",
            |o| cluster_info(&fixture!("ceph-status.json"), o).map(drop),
            fixture!("ceph-versions.json"),
        ),
        (
            "sync status text",
            |o| rgw::sync_lags(o).map(drop),
            fixture!("radosgw-admin-sync-status-A.txt"),
        ),
    ]
}

fn ok_or_parse_error(name: &str, result: AgentResult<()>) -> Result<(), TestCaseError> {
    match result {
        Ok(()) | Err(AgentError::Parse { .. }) => Ok(()),
        Err(other) => Err(TestCaseError::fail(format!("{name}: {other:?}"))),
    }
}

#[test]
fn every_parser_reads_its_fixture() {
    for (name, parse, fixture) in parsers() {
        assert!(parse(&fixture).is_ok(), "{name}: {:?}", parse(&fixture));
    }
}

#[derive(Clone, Debug)]
enum Damage {
    Truncate(usize),
    Replace { at: usize, len: usize, with: String },
    Delete { at: usize, len: usize },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<usize>().prop_map(Damage::Truncate),
        (any::<usize>(), 0..16usize, ".{0,12}").prop_map(|(at, len, with)| Damage::Replace { at, len, with }),
        (any::<usize>(), 1..64usize).prop_map(|(at, len)| Damage::Delete { at, len }),
    ]
}

/// Applies the damage at char boundaries, positions taken modulo the length.
fn apply(text: &str, damage: &Damage) -> String {
    let boundary = |at: usize| {
        let mut at = if text.is_empty() { 0 } else { at % (text.len() + 1) };
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        at
    };
    match damage {
        Damage::Truncate(at) => text[..boundary(*at)].to_string(),
        Damage::Replace { at, len, with } => {
            let start = boundary(*at);
            let end = boundary(start.saturating_add(*len).min(text.len()));
            format!("{}{with}{}", &text[..start], &text[end.max(start)..])
        }
        Damage::Delete { at, len } => {
            let start = boundary(*at);
            let end = boundary(start.saturating_add(*len).min(text.len()));
            format!("{}{}", &text[..start], &text[end.max(start)..])
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        for (name, parse, _) in parsers() {
            ok_or_parse_error(name, parse(&CommandOutput::fixture(&text)))?;
        }
    }

    #[test]
    fn text_that_is_not_json_is_a_parse_error(text in "[a-yA-Z<(][^\\n]{0,80}") {
        let out = CommandOutput::fixture(&text);
        for (name, parse, _) in parsers() {
            let result = parse(&out);
            prop_assert!(matches!(result, Err(AgentError::Parse { .. })), "{}: {:?}", name, result);
        }
    }

    #[test]
    fn damaged_output_never_panics(which in any::<prop::sample::Index>(), damage in damage()) {
        let parsers = parsers();
        let (name, parse, fixture) = &parsers[which.index(parsers.len())];
        let damaged = CommandOutput::fixture(&apply(&fixture.stdout, &damage));
        ok_or_parse_error(name, parse(&damaged))?;
    }

    #[test]
    fn truncated_json_is_a_parse_error(which in any::<prop::sample::Index>(), keep in 0.0..0.95f64) {
        let parsers = parsers();
        // The text report has no closing bracket to lose: it is covered by the damage test above.
        let json_parsers = &parsers[..parsers.len() - 1];
        let (name, parse, fixture) = &json_parsers[which.index(json_parsers.len())];
        let text = fixture.stdout.trim_end();
        let cut = apply(text, &Damage::Truncate((text.len() as f64 * keep) as usize));
        let result = parse(&CommandOutput::fixture(&cut));
        prop_assert!(matches!(result, Err(AgentError::Parse { .. })), "{}: {:?}", name, result);
    }
}
