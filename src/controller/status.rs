//! Writing status: server-side apply of the fields cephdr owns, skipped when nothing changed.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Condition, jiff::Timestamp};
use kube::{
    api::{Api, Patch, PatchParams},
    Resource, ResourceExt,
};
use serde::{de::DeserializeOwned, Serialize};

use super::{error::Result, FIELD_MANAGER};
use crate::api::{self, conditions};

/// A resource with a typed status.
pub trait WithStatus:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug
{
    type Status: Serialize + PartialEq + Clone + Default;
    fn status(&self) -> Option<&Self::Status>;
    fn conditions(&self) -> &[Condition];
    /// The status without the figures that move on their own between reconciles (lag seconds, probe and
    /// check times, the numbers in condition messages); `None` for kinds whose every change is written at
    /// once.
    fn without_figures(status: &Self::Status) -> Option<Self::Status>;
}

macro_rules! with_status {
    ($($kind:ty => $status:ty, $without_figures:expr);* $(;)?) => {$(
        impl WithStatus for $kind {
            type Status = $status;
            fn status(&self) -> Option<&$status> {
                self.status.as_ref()
            }
            fn conditions(&self) -> &[Condition] {
                self.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()
            }
            fn without_figures(status: &$status) -> Option<$status> {
                let strip: fn(&$status) -> Option<$status> = $without_figures;
                strip(status)
            }
        }
    )*};
}

with_status! {
    api::CephSite => api::CephSiteStatus, |status| Some(api::CephSiteStatus {
        last_probe_time: None,
        conditions: conditions_without_numbers(&status.conditions),
        ..status.clone()
    });
    api::CephRealm => api::CephRealmStatus, |_| None;
    api::CephZone => api::CephZoneStatus, |status| Some(api::CephZoneStatus {
        lag_seconds: None,
        last_sync_check: None,
        sync: status.sync.clone().map(|mut sync| {
            if let Some(metadata) = sync.metadata.as_mut() {
                metadata.oldest_change_seconds = None;
            }
            for source in &mut sync.data {
                source.oldest_change_seconds = None;
            }
            sync
        }),
        conditions: conditions_without_numbers(&status.conditions),
        ..status.clone()
    });
    api::RbdMirrorPool => api::RbdMirrorPoolStatus, |status| Some(api::RbdMirrorPoolStatus {
        images: status
            .images
            .iter()
            .map(|image| api::rbd_mirror_pool::ImageStatus {
                lag_seconds: None,
                // Each mirror snapshot that arrives moves these: rbd-mirror's description carries the
                // snapshots' timestamps.
                last_sync_time: None,
                description: image.description.as_deref().map(without_digits),
                ..image.clone()
            })
            .collect(),
        summary: status.summary.clone().map(|summary| api::rbd_mirror_pool::PoolSummary {
            max_lag_seconds: None,
            ..summary
        }),
        conditions: conditions_without_numbers(&status.conditions),
        ..status.clone()
    });
    api::FailoverRequest => api::FailoverRequestStatus, |_| None;
}

/// How long a status whose only changes are moving figures (see [`WithStatus::without_figures`]) is left
/// as it is. Writing them on every reconcile would make each write trigger the next reconcile through the
/// watch at once: a loop per object, and with it an API server and agents busy with thousands of objects
/// that have nothing new to say. Every other change (a condition flipping, a new reason, a new image) is
/// written at once; the figures are at most this old, and metrics carry them live.
pub const FIGURES_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

fn without_digits(text: &str) -> String {
    text.chars().filter(|c| !c.is_ascii_digit()).collect()
}

fn conditions_without_numbers(conditions: &[Condition]) -> Vec<Condition> {
    conditions
        .iter()
        .map(|condition| Condition {
            message: without_digits(&condition.message),
            ..condition.clone()
        })
        .collect()
}

/// When cephdr last wrote the object's status, from its managed fields.
fn last_status_write<K: Resource>(object: &K) -> Option<Timestamp> {
    object
        .meta()
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            entry.manager.as_deref() == Some(FIELD_MANAGER) && entry.subresource.as_deref() == Some("status")
        })
        .filter_map(|entry| entry.time.as_ref().map(|time| time.0))
        .max()
}

/// Whether `new` differs from the object's status only in moving figures written less than
/// [`FIGURES_REFRESH`] ago.
fn only_fresh_figures_changed<K: WithStatus>(object: &K, new: &K::Status, now: Timestamp) -> bool {
    let (Some(current), Some(written)) = (object.status(), last_status_write(object)) else {
        return false;
    };
    let fresh = now
        .duration_since(written)
        .try_into()
        .is_ok_and(|age: std::time::Duration| age < FIGURES_REFRESH);
    fresh && K::without_figures(new).is_some_and(|new| Some(new) == K::without_figures(current))
}

/// Completes planned conditions: `observedGeneration` from the object, `lastTransitionTime` kept unless the
/// status flipped.
pub fn complete_conditions<K: WithStatus>(
    object: &K,
    planned: Vec<Condition>,
    now: Timestamp,
) -> Vec<Condition> {
    let generation = object.meta().generation;
    let planned = planned
        .into_iter()
        .map(|c| Condition {
            observed_generation: generation,
            ..c
        })
        .collect();
    conditions::merge(object.conditions(), planned, now)
}

/// Server-side applies `status` to the object's status subresource, unless it equals the current status or
/// only its moving figures changed since a recent write.
pub async fn apply<K: WithStatus>(api: &Api<K>, object: &K, status: &K::Status) -> Result<bool> {
    if object.status() == Some(status) || only_fresh_figures_changed(object, status, Timestamp::now()) {
        return Ok(false);
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    if tracing::enabled!(tracing::Level::DEBUG) {
        let fields = changed_fields(object.status(), &patch["status"]);
        tracing::debug!(?fields, "writing status");
    }
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(true)
}

/// The top-level status fields that differ between `old` and `new`, for the debug log of a status write.
fn changed_fields<S: serde::Serialize>(old: Option<&S>, new: &serde_json::Value) -> Vec<String> {
    let old = old
        .and_then(|old| serde_json::to_value(old).ok())
        .unwrap_or_default();
    let keys = |value: &serde_json::Value| -> Vec<String> {
        value
            .as_object()
            .map(|map| map.keys().cloned().collect())
            .unwrap_or_default()
    };
    let mut fields: Vec<String> = keys(&old).into_iter().chain(keys(new)).collect();
    fields.sort();
    fields.dedup();
    fields.retain(|field| old.get(field) != new.get(field));
    fields
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};

    use super::*;
    use crate::api::{
        rbd_mirror_pool::{ImageStatus, RbdMirrorPoolSpec},
        RbdMirrorPool, RbdMirrorPoolStatus,
    };

    const NOW: i64 = 1_800_000_000;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("valid timestamp")
    }

    fn status(lag: u64, ready: bool) -> RbdMirrorPoolStatus {
        RbdMirrorPoolStatus {
            images: vec![ImageStatus {
                name: "db".into(),
                state: "replaying".into(),
                lag_seconds: Some(lag),
                ..Default::default()
            }],
            conditions: vec![conditions::condition(
                conditions::READY,
                ready,
                "Converged",
                format!("largest lag {lag}s within the 300s target"),
                None,
            )],
            ..Default::default()
        }
    }

    /// A pool whose status cephdr wrote at `written` (as its managed fields record).
    fn pool(current: RbdMirrorPoolStatus, written: i64) -> RbdMirrorPool {
        let spec: RbdMirrorPoolSpec = serde_json::from_value(serde_json::json!({
            "pool": "rbd", "sites": [{"site": "a", "role": "primary"}, {"site": "b", "role": "secondary"}]
        }))
        .expect("a valid spec");
        let mut pool = RbdMirrorPool::new("rbd", spec);
        pool.status = Some(current);
        pool.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some(FIELD_MANAGER.into()),
            operation: Some("Apply".into()),
            subresource: Some("status".into()),
            time: Some(Time(at(written))),
            ..Default::default()
        }]);
        pool
    }

    #[test]
    fn lag_that_moved_since_a_recent_write_is_not_written_again() {
        let recent = pool(status(40, true), NOW - 5);
        assert!(only_fresh_figures_changed(&recent, &status(45, true), at(NOW)));
    }

    #[test]
    fn moving_figures_are_written_once_the_last_write_is_older_than_the_refresh() {
        let old = pool(status(40, true), NOW - FIGURES_REFRESH.as_secs() as i64);
        assert!(!only_fresh_figures_changed(&old, &status(70, true), at(NOW)));
    }

    #[test]
    fn a_newer_mirror_snapshot_alone_is_a_moving_figure_but_a_new_replay_state_is_not() {
        let synced = |at_second: i64, replay_state: &str| {
            let mut status = status(40, true);
            status.images[0].last_sync_time = Some(Time(at(at_second)));
            status.images[0].description = Some(format!(
                r#"replaying, {{"local_snapshot_timestamp":{at_second},"replay_state":"{replay_state}"}}"#
            ));
            status
        };
        let recent = pool(synced(NOW - 900, "idle"), NOW - 5);
        assert!(only_fresh_figures_changed(
            &recent,
            &synced(NOW - 10, "idle"),
            at(NOW)
        ));
        assert!(!only_fresh_figures_changed(
            &recent,
            &synced(NOW - 900, "syncing"),
            at(NOW)
        ));
    }

    #[test]
    fn any_other_change_is_written_at_once() {
        let recent = pool(status(40, true), NOW - 1);
        assert!(!only_fresh_figures_changed(&recent, &status(40, false), at(NOW)));
        let mut new_image = status(40, true);
        new_image.images.push(ImageStatus {
            name: "logs".into(),
            ..Default::default()
        });
        assert!(!only_fresh_figures_changed(&recent, &new_image, at(NOW)));
    }

    #[test]
    fn without_a_record_of_the_last_write_the_status_is_written() {
        let mut unknown = pool(status(40, true), NOW);
        unknown.metadata.managed_fields = None;
        assert!(!only_fresh_figures_changed(&unknown, &status(45, true), at(NOW)));
    }

    #[test]
    fn a_status_write_names_the_fields_it_changes() {
        let old = status(10, true);
        let mut new = status(10, false);
        new.daemons.push(Default::default());
        let new = serde_json::to_value(&new).expect("status serializes");
        assert_eq!(changed_fields(Some(&old), &new), ["conditions", "daemons"]);
        assert_eq!(
            changed_fields(Some(&old), &serde_json::to_value(&old).expect("serializes")),
            Vec::<String>::new()
        );
        let every_field: Vec<String> = new.as_object().expect("an object").keys().cloned().collect();
        assert_eq!(changed_fields::<RbdMirrorPoolStatus>(None, &new), every_field);
    }
}
