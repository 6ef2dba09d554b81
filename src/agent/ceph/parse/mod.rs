//! Pure parsers from what the Ceph CLIs print (Pacific 16.2) to the agent's domain types. No I/O: each takes
//! a [`CommandOutput`] and fails with [`AgentError::Parse`], naming the command, on anything unexpected.
//! Error messages never quote the output itself: some of it (zone and user records) holds secret keys.

/// Captured output of a real command, from `tests/fixtures/ceph/`.
#[cfg(test)]
macro_rules! fixture {
    ($name:literal) => {
        crate::agent::ceph::command::CommandOutput::fixture(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ceph/",
            $name
        )))
    };
}

#[cfg(test)]
mod fuzz_tests;
pub(super) mod rbd;
#[cfg(test)]
mod rbd_tests;
pub(super) mod rgw;
#[cfg(test)]
mod rgw_tests;

use std::collections::BTreeMap;

use k8s_openapi::jiff::{civil::DateTime, fmt::strtime, tz::TimeZone, Timestamp};
use serde::{de::DeserializeOwned, Deserialize, Deserializer};

use super::command::CommandOutput;
use crate::agent::{AgentResult, ClusterInfo};

/// Deserializes the command's JSON output into `T`.
pub(super) fn json<T: DeserializeOwned>(out: &CommandOutput) -> AgentResult<T> {
    serde_json::from_str(&out.stdout)
        .map_err(|error| out.parse_error(without_quoted_values(&error.to_string())))
}

/// serde_json quotes offending string values in its messages (`invalid type: string "..."`); those may be keys.
fn without_quoted_values(message: &str) -> String {
    let mut kept = String::with_capacity(message.len());
    let mut quoted = false;
    for c in message.chars() {
        if c == '"' {
            quoted = !quoted;
            kept.push_str(if quoted { "\"…" } else { "\"" });
        } else if !quoted {
            kept.push(c);
        }
    }
    kept
}

/// A list of names: `ceph osd pool ls`, `rbd ls`, `radosgw-admin bucket list`.
pub(super) fn names(out: &CommandOutput) -> AgentResult<Vec<String>> {
    json(out)
}

/// Flags that Pacific prints as `"true"`/`"false"` strings and later releases as booleans.
pub(super) fn flag<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Text(String),
    }
    match Flag::deserialize(deserializer)? {
        Flag::Bool(value) => Ok(value),
        Flag::Text(text) => match text.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(serde::de::Error::custom("expected \"true\" or \"false\"")),
        },
    }
}

/// Unix seconds, as rbd-mirror embeds them in replay descriptions.
fn from_unix_seconds(out: &CommandOutput, seconds: i64) -> AgentResult<Timestamp> {
    Timestamp::from_second(seconds).map_err(|_| out.parse_error(format!("timestamp {seconds} out of range")))
}

/// `Sun Nov 22 20:00:45 2026`: `rbd`'s ctime format, in UTC because the runner sets `TZ=UTC`.
fn from_ctime(out: &CommandOutput, text: &str) -> AgentResult<Timestamp> {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    strtime::parse("%a %b %d %H:%M:%S %Y", &collapsed)
        .and_then(|tm| tm.to_datetime())
        .and_then(|civil: DateTime| civil.to_zoned(TimeZone::UTC))
        .map(|zoned| zoned.timestamp())
        .map_err(|_| out.parse_error(format!("time `{text}` is not in ctime format")))
}

/// `ceph status --format json` and `ceph versions --format json`.
pub(super) fn cluster_info(status: &CommandOutput, versions: &CommandOutput) -> AgentResult<ClusterInfo> {
    #[derive(Deserialize)]
    struct Status {
        fsid: String,
        health: Health,
    }
    #[derive(Deserialize)]
    struct Health {
        status: String,
        #[serde(default)]
        checks: BTreeMap<String, serde_json::Value>,
    }
    #[derive(Deserialize)]
    struct Versions {
        overall: BTreeMap<String, u32>,
    }
    let Status { fsid, health } = json(status)?;
    let Versions { overall } = json(versions)?;
    // Mid-upgrade daemons differ: the oldest one bounds what the cluster can do.
    let version = overall
        .keys()
        .map(|banner| release_of(versions, banner))
        .collect::<AgentResult<Vec<_>>>()?
        .into_iter()
        .min_by_key(|release| {
            release
                .split('.')
                .map(|part| part.parse::<u32>().unwrap_or(0))
                .collect::<Vec<_>>()
        })
        .ok_or_else(|| versions.parse_error("no daemon reported a version"))?;
    Ok(ClusterInfo {
        fsid,
        version,
        health: health.status,
        checks: health.checks.into_keys().collect(),
        backup_store: false,
    })
}

/// `16.2.15` out of `ceph version 16.2.15 (618f4408...) pacific (stable)`.
fn release_of(out: &CommandOutput, banner: &str) -> AgentResult<String> {
    banner
        .strip_prefix("ceph version ")
        .and_then(|rest| rest.split_whitespace().next())
        .filter(|release| {
            release
                .split('.')
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_string)
        .ok_or_else(|| out.parse_error("a version banner is not `ceph version X.Y.Z ...`"))
}

/// The `mon_host` inside a peer bootstrap token (base64 of a JSON object); None when it is not one.
pub(super) fn token_mon_host(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Token {
        mon_host: String,
    }
    let decoded = decode_base64(token.trim())?;
    serde_json::from_slice::<Token>(&decoded)
        .ok()
        .map(|token| token.mon_host)
}

/// Standard base64 with optional padding; None on anything else.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let sextet = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let body = text.trim_end_matches('=').as_bytes();
    if text.len() - body.len() > 2 || body.len() % 4 == 1 {
        return None;
    }
    let mut bytes = Vec::with_capacity(body.len() * 3 / 4);
    for chunk in body.chunks(4) {
        let mut bits = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            bits |= sextet(c)? << (18 - 6 * i);
        }
        let produced = chunk.len() - 1;
        bytes.extend_from_slice(&bits.to_be_bytes()[1..=produced]);
    }
    Some(bytes)
}
