//! `rbd` output: pool mirroring info and status, image mirroring, mirror snapshots and snapshot schedules.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{from_ctime, from_unix_seconds, json};
use crate::agent::{
    ceph::command::CommandOutput, AgentResult, DaemonHealth, ImageMirrorMode, ImageMirroring, MirrorSnapshot,
    PeerDirection, PoolMirrorMode, RbdPeer, ReplayStatus, ScheduleEntry,
};

/// `rbd mirror pool info --all`.
#[derive(Debug, PartialEq)]
pub(in crate::agent::ceph) struct PoolInfo {
    pub mode: PoolMirrorMode,
    pub site_name: Option<String>,
    pub peers: Vec<RbdPeer>,
}

pub(in crate::agent::ceph) fn pool_info(out: &CommandOutput) -> AgentResult<PoolInfo> {
    #[derive(Deserialize)]
    struct Raw {
        mode: PoolMirrorMode,
        site_name: Option<String>,
        #[serde(default)]
        peers: Vec<RawPeer>,
    }
    // `--all` adds the peer's cephx `key`: not declared here, so it is never kept.
    #[derive(Deserialize)]
    struct RawPeer {
        uuid: String,
        direction: PeerDirection,
        site_name: String,
        #[serde(default)]
        client_name: String,
        mon_host: Option<String>,
    }
    let raw: Raw = json(out)?;
    Ok(PoolInfo {
        mode: raw.mode,
        site_name: raw.site_name.filter(|name| !name.is_empty()),
        peers: raw
            .peers
            .into_iter()
            .map(|peer| RbdPeer {
                uuid: peer.uuid,
                site_name: peer.site_name,
                direction: peer.direction,
                mon_host: peer.mon_host.filter(|host| !host.is_empty()),
                client_name: Some(peer.client_name).filter(|name| !name.is_empty()),
            })
            .collect(),
    })
}

/// `rbd mirror pool status --verbose`: the local rbd-mirror daemon and rbd-mirror's view of each image.
#[derive(Debug, PartialEq)]
pub(in crate::agent::ceph) struct PoolStatus {
    pub daemon: Option<DaemonHealth>,
    /// By image name; images no local daemon reports on have no entry.
    pub replay: BTreeMap<String, ReplayStatus>,
}

/// One image in `rbd mirror pool status --verbose`; `rbd mirror image status` prints the same object.
#[derive(Deserialize)]
struct RawImageStatus {
    name: String,
    state: Option<String>,
    #[serde(default)]
    description: String,
}

pub(in crate::agent::ceph) fn pool_status(out: &CommandOutput) -> AgentResult<PoolStatus> {
    #[derive(Deserialize)]
    struct Raw {
        summary: Summary,
        #[serde(default)]
        daemons: Vec<serde_json::Value>,
        #[serde(default)]
        images: Vec<RawImageStatus>,
    }
    #[derive(Deserialize)]
    struct Summary {
        daemon_health: String,
    }
    let raw: Raw = json(out)?;
    // With no daemon in the service map Ceph still prints a summary, with daemon_health UNKNOWN.
    let daemon = (!raw.daemons.is_empty()).then_some(DaemonHealth {
        health: raw.summary.daemon_health,
    });
    let mut replay = BTreeMap::new();
    for image in raw.images {
        if let Some(status) = replay_status(out, &image)? {
            replay.insert(image.name, status);
        }
    }
    Ok(PoolStatus { daemon, replay })
}

/// `up+replaying` becomes `up: true, state: "replaying"`; the time of the newest primary snapshot applied
/// comes from the JSON that snapshot-mode replay descriptions embed (`replaying, {...}`).
fn replay_status(out: &CommandOutput, image: &RawImageStatus) -> AgentResult<Option<ReplayStatus>> {
    let Some(state) = &image.state else {
        return Ok(None);
    };
    let (up, state) = match state.split_once('+') {
        Some((daemon, state)) => (daemon == "up", state),
        None => (false, state.as_str()),
    };
    #[derive(Deserialize)]
    struct Embedded {
        local_snapshot_timestamp: Option<i64>,
    }
    // Descriptions are free text ("local image is primary"); only the embedded object is structured.
    let embedded = image
        .description
        .find('{')
        .and_then(|start| serde_json::from_str::<Embedded>(&image.description[start..]).ok());
    let last_synced = match embedded.and_then(|embedded| embedded.local_snapshot_timestamp) {
        Some(seconds) => Some(from_unix_seconds(out, seconds)?),
        None => None,
    };
    Ok(Some(ReplayStatus {
        state: state.to_string(),
        up,
        description: image.description.clone(),
        last_synced,
    }))
}

/// `rbd info --format json`: the image's mirroring, None when it is not enabled.
pub(in crate::agent::ceph) fn image_mirroring(out: &CommandOutput) -> AgentResult<Option<ImageMirroring>> {
    #[derive(Deserialize)]
    struct Raw {
        mirroring: Option<Mirroring>,
    }
    #[derive(Deserialize)]
    struct Mirroring {
        state: String,
        mode: Option<ImageMirrorMode>,
        global_id: Option<String>,
        primary: Option<bool>,
    }
    let raw: Raw = json(out)?;
    let Some(mirroring) = raw.mirroring.filter(|mirroring| mirroring.state == "enabled") else {
        return Ok(None);
    };
    match (mirroring.mode, mirroring.global_id, mirroring.primary) {
        (Some(mode), Some(global_id), Some(primary)) => Ok(Some(ImageMirroring {
            mode,
            primary,
            global_id,
        })),
        _ => Err(out.parse_error("enabled mirroring without mode, global_id and primary")),
    }
}

/// `rbd snap ls --all --format json`: the newest complete mirror snapshot.
pub(in crate::agent::ceph) fn last_mirror_snapshot(
    out: &CommandOutput,
) -> AgentResult<Option<MirrorSnapshot>> {
    Ok(mirror_snapshots(out)?.into_iter().rfind(|snap| snap.complete))
}

/// `rbd snap ls --all --format json`: the mirror snapshots, complete or not, oldest first.
pub(in crate::agent::ceph) fn mirror_snapshots(out: &CommandOutput) -> AgentResult<Vec<MirrorSnapshot>> {
    #[derive(Deserialize)]
    struct Raw {
        id: u64,
        name: String,
        timestamp: String,
        namespace: Namespace,
    }
    #[derive(Deserialize)]
    struct Namespace {
        #[serde(rename = "type")]
        kind: String,
        state: Option<String>,
        #[serde(default)]
        complete: bool,
        /// Only on snapshots received from the peer.
        primary_snap_id: Option<u64>,
    }
    let mut snapshots: Vec<Raw> = json(out)?;
    snapshots.retain(|snap| snap.namespace.kind == "mirror");
    snapshots.sort_by_key(|snap| snap.id);
    snapshots
        .into_iter()
        .map(|snap| {
            Ok(MirrorSnapshot {
                id: snap.id,
                created: from_ctime(out, &snap.timestamp)?,
                name: snap.name,
                state: snap
                    .namespace
                    .state
                    .ok_or_else(|| out.parse_error("a mirror snapshot has no state"))?,
                complete: snap.namespace.complete,
                primary_snap_id: snap.namespace.primary_snap_id,
            })
        })
        .collect()
}

/// `rbd mirror snapshot schedule ls --pool P --recursive --format json`.
pub(in crate::agent::ceph) fn schedules(out: &CommandOutput) -> AgentResult<Vec<ScheduleEntry>> {
    #[derive(Deserialize)]
    struct Level {
        /// `-` for the pool level.
        image: String,
        items: Vec<Item>,
    }
    #[derive(Deserialize)]
    struct Item {
        interval: String,
        start_time: Option<String>,
    }
    let levels: Vec<Level> = json(out)?;
    let mut entries: Vec<ScheduleEntry> = levels
        .into_iter()
        .flat_map(|level| {
            let image = Some(level.image).filter(|image| image != "-" && !image.is_empty());
            level.items.into_iter().map(move |item| ScheduleEntry {
                image: image.clone(),
                interval: item.interval,
                start_time: item.start_time.filter(|start| !start.is_empty()),
            })
        })
        .collect();
    entries.sort();
    Ok(entries)
}
