//! A zone's sync status: the figures for `status.sync`, the `Synced`, `RpoMet` and `Wedged` conditions, and
//! the bounded recovery of a wedged metadata sync.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

use super::{Observed, Prerequisites};
use crate::{
    agent::{AgentError, Step, SyncShards, ZoneSync},
    api::{
        conditions::{condition, reason, RPO_MET, SYNCED},
        zone::{CephZoneSpec, CephZoneStatus, SourceSyncProgress, SyncProgress, ZoneSyncStatus},
    },
    plan::{Health, SiteStep},
};

/// Condition type: a secondary's metadata sync made no progress for too long.
pub const WEDGED: &str = "Wedged";

/// Reasons of the `Wedged` condition.
pub mod wedge_reason {
    /// Metadata sync shows no progress; the recovery (period pull, metadata sync init) runs once.
    pub const METADATA_SYNC_STUCK: &str = "MetadataSyncStuck";
    /// The recovery did not get metadata sync moving; a human has to look.
    pub const RECOVERY_FAILED: &str = "RecoveryFailed";
}

/// How long metadata sync may show no progress before it counts as wedged, and how long the recovery gets
/// before it counts as failed. RGW retries a sync shard every few seconds, so two minutes without any
/// movement is not a slow sync but a stuck one.
const WEDGE_AFTER_SECONDS: u64 = 120;

/// Whether RGW answered the sync status probe.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Answer {
    /// Not probed: the zone is a master or does not exist yet.
    NotAsked,
    /// Probed, but RGW did not answer (it reloads after every period commit).
    Failed(AgentError),
    Answered,
}

/// Status figures of the latest answered probe.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Figures {
    pub sync: Option<ZoneSyncStatus>,
    pub lag_seconds: Option<u64>,
    pub last_sync_check: Option<Time>,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct Report {
    pub figures: Figures,
    /// `Synced`, `RpoMet` (when the spec sets a target) and `Wedged` (while wedged).
    pub conditions: Vec<Condition>,
    pub wedge: Option<Wedge>,
    pub answer: Answer,
}

/// A wedge episode: it starts with one recovery and ends when metadata sync catches up.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Wedge {
    /// Newly seen: recover now.
    Detected { evidence: String },
    /// The recovery ran; metadata sync gets time to resume.
    Recovering { message: String },
    /// The recovery did not help. It is not repeated: a sync init restarts metadata sync from scratch, and
    /// doing that in a loop would keep the zone from ever catching up.
    RecoveryFailed { message: String },
}

impl Wedge {
    pub(super) fn recovery_steps(&self, observed: &Observed, ready: &Prerequisites) -> Vec<SiteStep> {
        let (Wedge::Detected { .. }, Some(url)) = (self, ready.master_endpoint) else {
            return Vec::new();
        };
        let realm = &observed.realm;
        vec![
            SiteStep::new(
                &observed.site,
                Step::PullPeriod {
                    realm: realm.clone(),
                    url: url.to_string(),
                    keys: ready.keys.clone(),
                },
            ),
            SiteStep::new(
                &observed.site,
                Step::InitMetadataSync {
                    realm: realm.clone(),
                    zone: observed.zone.clone(),
                },
            ),
        ]
    }

    pub(super) fn health(&self) -> Health {
        match self {
            Wedge::Detected { evidence } => Health::progressing(
                wedge_reason::METADATA_SYNC_STUCK,
                format!(
                    "metadata sync is wedged ({evidence}); pulling the period and restarting metadata sync"
                ),
            ),
            Wedge::Recovering { message } => {
                Health::progressing(wedge_reason::METADATA_SYNC_STUCK, message.as_str())
            }
            Wedge::RecoveryFailed { message } => {
                Health::stalled(wedge_reason::RECOVERY_FAILED, message.as_str())
            }
        }
    }

    fn condition(&self) -> Condition {
        let (reason, message) = match self {
            Wedge::Detected { evidence } => (wedge_reason::METADATA_SYNC_STUCK, evidence),
            Wedge::Recovering { message } => (wedge_reason::METADATA_SYNC_STUCK, message),
            Wedge::RecoveryFailed { message } => (wedge_reason::RECOVERY_FAILED, message),
        };
        condition(WEDGED, true, reason, message.as_str(), None)
    }
}

pub(super) fn assess(spec: &CephZoneSpec, observed: &Observed, now: Timestamp) -> Report {
    let previous = observed.previous.as_ref();
    match &observed.sync {
        None => Report {
            figures: Figures::default(),
            conditions: Vec::new(),
            wedge: None,
            answer: Answer::NotAsked,
        },
        // Keep the last answer's figures and conditions: `lastSyncCheck` says how old they are, and RGW
        // failing to answer while it reloads says nothing about sync itself.
        Some(Err(error)) => Report {
            figures: previous
                .map(|p| Figures {
                    sync: p.sync.clone(),
                    lag_seconds: p.lag_seconds,
                    last_sync_check: p.last_sync_check.clone(),
                })
                .unwrap_or_default(),
            conditions: previous.map(carried_conditions).unwrap_or_default(),
            wedge: None,
            answer: Answer::Failed(error.clone()),
        },
        Some(Ok(sync)) => answered(spec, sync, previous, now),
    }
}

fn carried_conditions(previous: &CephZoneStatus) -> Vec<Condition> {
    previous
        .conditions
        .iter()
        .filter(|c| [SYNCED, RPO_MET, WEDGED].contains(&c.type_.as_str()))
        .map(|c| condition(&c.type_, c.status == "True", &c.reason, c.message.as_str(), None))
        .collect()
}

fn answered(
    spec: &CephZoneSpec,
    sync: &ZoneSync,
    previous: Option<&CephZoneStatus>,
    now: Timestamp,
) -> Report {
    let sources: Vec<(String, &SyncShards)> = sync
        .metadata
        .iter()
        .map(|shards| ("metadata".to_string(), shards))
        .chain(
            sync.data
                .iter()
                .map(|s| (format!("data from {}", s.source_zone), &s.shards)),
        )
        .collect();
    let lag_seconds = sources
        .iter()
        .filter_map(|(_, shards)| shards.oldest_change.map(|t| age_seconds(t, now)))
        .max()
        .unwrap_or(0);
    let lagging: Vec<String> = sources
        .iter()
        .filter_map(|(what, shards)| lagging(what, shards))
        .collect();
    let mut conditions = vec![if lagging.is_empty() {
        condition(
            SYNCED,
            true,
            reason::CAUGHT_UP,
            "metadata and data caught up",
            None,
        )
    } else {
        condition(SYNCED, false, reason::BEHIND, lagging.join("; "), None)
    }];
    if let Some(target) = spec.rpo_seconds {
        let lag_known = sources
            .iter()
            .all(|(_, s)| s.state == "sync" && (s.behind_shards == 0 || s.oldest_change.is_some()));
        conditions.push(match (lag_known, lag_seconds <= u64::from(target)) {
            (true, true) => condition(
                RPO_MET,
                true,
                reason::LAG_WITHIN_TARGET,
                format!("lag {lag_seconds} s within target {target} s"),
                None,
            ),
            (true, false) => condition(
                RPO_MET,
                false,
                reason::LAG_ABOVE_TARGET,
                format!("lag {lag_seconds} s above target {target} s"),
                None,
            ),
            (false, _) => condition(
                RPO_MET,
                false,
                reason::LAG_ABOVE_TARGET,
                format!(
                    "lag unknown while not in incremental sync: {}",
                    lagging.join("; ")
                ),
                None,
            ),
        });
    }
    let wedge = sync
        .metadata
        .as_ref()
        .zip(previous)
        .and_then(|(metadata, previous)| wedge(metadata, previous, now));
    conditions.extend(wedge.iter().map(Wedge::condition));
    let figures = Figures {
        sync: Some(ZoneSyncStatus {
            metadata: sync.metadata.as_ref().map(|shards| progress(shards, now)),
            data: sync
                .data
                .iter()
                .map(|source| {
                    let progress = progress(&source.shards, now);
                    SourceSyncProgress {
                        source: source.source_zone.clone(),
                        state: progress.state,
                        behind_shards: progress.behind_shards,
                        oldest_change_seconds: progress.oldest_change_seconds,
                    }
                })
                .collect(),
        }),
        lag_seconds: Some(lag_seconds),
        last_sync_check: Some(Time(now)),
    };
    Report {
        figures,
        conditions,
        wedge,
        answer: Answer::Answered,
    }
}

/// Ceph reports `sync` for every shard set past initialisation; status tells apart the states a user acts
/// on.
fn progress(shards: &SyncShards, now: Timestamp) -> SyncProgress {
    let state = match shards.state.as_str() {
        "sync" if shards.full_sync_shards > 0 => "full-sync",
        "sync" if shards.behind_shards > 0 => "behind",
        "sync" => "caught-up",
        other => other,
    };
    SyncProgress {
        state: state.to_string(),
        behind_shards: shards.behind_shards,
        oldest_change_seconds: shards.oldest_change.map(|t| age_seconds(t, now)),
    }
}

/// Why `what` is not caught up, or `None` when it is.
fn lagging(what: &str, shards: &SyncShards) -> Option<String> {
    let total = shards.total_shards;
    match shards.state.as_str() {
        "sync" if shards.full_sync_shards > 0 => Some(format!(
            "{what} in full sync on {}/{total} shards",
            shards.full_sync_shards
        )),
        "sync" if shards.behind_shards > 0 => Some(format!(
            "{what} behind on {}/{total} shards",
            shards.behind_shards
        )),
        "sync" => None,
        state => Some(format!("{what} sync in state {state}")),
    }
}

/// Whether this probe continues a wedge episode, starts one, or neither.
fn wedge(metadata: &SyncShards, previous: &CephZoneStatus, now: Timestamp) -> Option<Wedge> {
    let caught_up = lagging("metadata", metadata).is_none();
    let episode = previous
        .conditions
        .iter()
        .find(|c| c.type_ == WEDGED && c.status == "True");
    match episode {
        None => stuck_evidence(metadata, previous, now).map(|evidence| Wedge::Detected { evidence }),
        Some(_) if caught_up => None,
        Some(recovered) => {
            let since = recovered.last_transition_time.0;
            let waited = age_seconds(since, now);
            let still_stuck = stuck_evidence(metadata, previous, now)
                .or_else(|| (metadata.state == "init").then(|| "metadata sync in state init".to_string()));
            match still_stuck {
                Some(evidence) if waited > WEDGE_AFTER_SECONDS => Some(Wedge::RecoveryFailed {
                    message: format!(
                        "metadata sync still stuck {waited} s after the recovery at {since} ({evidence}); \
                         check the master zone's RGW, then pull the period and restart metadata sync by hand"
                    ),
                }),
                _ => Some(Wedge::Recovering {
                    message: format!(
                        "recovered at {since}; waiting for metadata sync to resume ({})",
                        lagging("metadata", metadata).unwrap_or_default()
                    ),
                }),
            }
        }
    }
}

/// Evidence that metadata sync has not moved across the previous probe for longer than the wedge limit:
/// still in `init`, or still behind on the very same oldest change.
fn stuck_evidence(metadata: &SyncShards, previous: &CephZoneStatus, now: Timestamp) -> Option<String> {
    let checked = previous.last_sync_check.as_ref()?.0;
    let before = previous.sync.as_ref()?.metadata.as_ref()?;
    if metadata.state == "init" && before.state == "init" {
        // `Synced` turned False when sync stopped being caught up: the earliest the stall can have begun.
        let since = previous
            .conditions
            .iter()
            .find(|c| c.type_ == SYNCED && c.status == "False")
            .map_or(checked, |c| c.last_transition_time.0.min(checked));
        let stuck = age_seconds(since, now);
        return (stuck > WEDGE_AFTER_SECONDS).then(|| {
            format!("metadata sync in state init since {since}, {stuck} s; still init at the probes of {checked} and {now}")
        });
    }
    if metadata.behind_shards == 0 || before.behind_shards == 0 {
        return None;
    }
    let oldest = metadata.oldest_change?;
    let oldest_before = checked.as_second() - i64::try_from(before.oldest_change_seconds?).ok()?;
    // Status keeps whole seconds, so the same change can look up to a second apart.
    let unchanged = (oldest.as_second() - oldest_before).abs() <= 1;
    let age = age_seconds(oldest, now);
    (unchanged && age > WEDGE_AFTER_SECONDS).then(|| {
        format!(
            "metadata sync behind on {}/{} shards; its oldest change {oldest} is {age} s old and has not moved \
             since the probe of {checked}",
            metadata.behind_shards, metadata.total_shards
        )
    })
}

/// Whole seconds from `then` to `now`; zero when clocks disagree and `then` lies ahead.
fn age_seconds(then: Timestamp, now: Timestamp) -> u64 {
    u64::try_from(now.as_second() - then.as_second()).unwrap_or(0)
}
