//! A [`Step`] as a backend runs it: split by the Ceph subsystem it changes, its fields borrowed and grouped
//! the way the backends take them. Each backend matches the steps of each subsystem and says only what is
//! its own, and one that models a single subsystem turns the other away in one arm.

use super::{
    ImageMirrorMode, PeerDirection, PoolMirrorMode, ScheduleEntry, Sensitive, Step, SyncGroup, SyncPeer,
    SystemKeys, TransferOptions,
};

/// A step by the subsystem that runs it.
#[derive(Clone, Copy, Debug)]
pub enum Split<'a> {
    Rgw(RgwStep<'a>),
    Rbd(RbdStep<'a>),
    DeltaSync(DeltaSyncStep<'a>),
}

/// An image of a pool, as delta-sync steps name it.
#[derive(Clone, Copy, Debug)]
pub struct ImageRef<'a> {
    pub pool: &'a str,
    pub image: &'a str,
}

impl ImageRef<'_> {
    /// `pool/image`, as `rbd` and the sync receiver name it.
    pub fn spec(&self) -> String {
        format!("{}/{}", self.pool, self.image)
    }
}

/// The delta-sync steps.
#[derive(Clone, Copy, Debug)]
pub enum DeltaSyncStep<'a> {
    CreateSnapshot(ImageRef<'a>, &'a str),
    RemoveSnapshot(ImageRef<'a>, &'a str),
    PromoteCopy {
        image: ImageRef<'a>,
        from_snap: &'a str,
        snap: &'a str,
    },
    Send {
        image: ImageRef<'a>,
        from_snap: Option<&'a str>,
        to_snap: &'a str,
        peer: &'a SyncPeer,
        options: TransferOptions,
    },
}

/// A zonegroup of a realm, as steps name it.
#[derive(Clone, Copy, Debug)]
pub struct ZoneGroupRef<'a> {
    pub realm: &'a str,
    pub zone_group: &'a str,
}

/// A zone of a zonegroup, as steps name it.
#[derive(Clone, Copy, Debug)]
pub struct ZoneRef<'a> {
    pub realm: &'a str,
    pub zone_group: &'a str,
    pub zone: &'a str,
}

/// What `CreateZoneGroup` brings a zonegroup to.
#[derive(Clone, Copy, Debug)]
pub struct WantedZoneGroup<'a> {
    pub endpoints: &'a [String],
    /// Whether it is the realm's master zonegroup.
    pub master: bool,
}

/// What `CreateZone` brings a zone to.
#[derive(Clone, Copy, Debug)]
pub struct WantedZone<'a> {
    pub endpoints: &'a [String],
    pub master: bool,
    pub read_only: bool,
    pub keys: &'a SystemKeys,
}

/// The zone flags `ModifyZone` changes; `None` leaves a flag as it is.
#[derive(Clone, Copy, Debug)]
pub struct ZoneChange {
    pub master: Option<bool>,
    pub read_only: Option<bool>,
}

/// A `realm pull` (`create_realm`, for `PullRealm`) or `period pull` (for `PullPeriod`) from the zone serving
/// `url`, signed with the sync user's keys.
#[derive(Clone, Copy, Debug)]
pub struct Pull<'a> {
    pub realm: &'a str,
    pub url: &'a str,
    pub keys: &'a SystemKeys,
    pub create_realm: bool,
}

/// A mirror-snapshot schedule of a pool (no `image`) or of one of its images.
#[derive(Clone, Copy, Debug)]
pub struct Schedule<'a> {
    pub image: Option<&'a str>,
    pub interval: &'a str,
    pub start_time: Option<&'a str>,
}

impl<'a> Schedule<'a> {
    fn of(image: &'a Option<String>, interval: &'a str, start_time: &'a Option<String>) -> Schedule<'a> {
        Schedule {
            image: image.as_deref(),
            interval,
            start_time: start_time.as_deref(),
        }
    }

    /// The schedule as a pool lists it.
    pub fn entry(&self) -> ScheduleEntry {
        ScheduleEntry {
            image: self.image.map(str::to_string),
            interval: self.interval.to_string(),
            start_time: self.start_time.map(str::to_string),
        }
    }
}

/// The RGW multisite steps.
#[derive(Clone, Copy, Debug)]
pub enum RgwStep<'a> {
    CreateRealm {
        realm: &'a str,
    },
    CreateZoneGroup(ZoneGroupRef<'a>, WantedZoneGroup<'a>),
    CreateZone(ZoneRef<'a>, WantedZone<'a>),
    ModifyZone(ZoneRef<'a>, ZoneChange),
    CreateSystemUser {
        uid: &'a str,
        keys: &'a SystemKeys,
    },
    CommitPeriod {
        realm: &'a str,
    },
    /// `PullRealm` and `PullPeriod`.
    Pull(Pull<'a>),
    InitMetadataSync {
        realm: &'a str,
        zone: &'a str,
    },
    SetSyncPolicy(ZoneGroupRef<'a>, &'a [SyncGroup]),
    DeleteZone(ZoneRef<'a>),
    DeleteZoneGroup(ZoneGroupRef<'a>),
    DeleteRealm {
        realm: &'a str,
    },
}

/// The RBD mirroring steps.
#[derive(Clone, Copy, Debug)]
pub enum RbdStep<'a> {
    CreatePool {
        pool: &'a str,
    },
    EnablePoolMirroring {
        pool: &'a str,
        mode: PoolMirrorMode,
        site_name: &'a str,
    },
    DisablePoolMirroring {
        pool: &'a str,
    },
    ImportPeer {
        pool: &'a str,
        token: &'a Sensitive<String>,
        direction: PeerDirection,
        site_name: &'a str,
    },
    SetPeerDirection {
        pool: &'a str,
        uuid: &'a str,
        direction: PeerDirection,
    },
    RemovePeer {
        pool: &'a str,
        uuid: &'a str,
    },
    EnableImageMirroring {
        pool: &'a str,
        image: &'a str,
        mode: ImageMirrorMode,
    },
    DisableImageMirroring {
        pool: &'a str,
        image: &'a str,
    },
    CreateMirrorSnapshot {
        pool: &'a str,
        image: &'a str,
    },
    PromoteImage {
        pool: &'a str,
        image: &'a str,
        force: bool,
    },
    DemoteImage {
        pool: &'a str,
        image: &'a str,
    },
    ResyncImage {
        pool: &'a str,
        image: &'a str,
    },
    AddSnapshotSchedule {
        pool: &'a str,
        schedule: Schedule<'a>,
    },
    RemoveSnapshotSchedule {
        pool: &'a str,
        schedule: Schedule<'a>,
    },
}

impl Step {
    /// The step by subsystem, as a backend matches it.
    pub fn split(&self) -> Split<'_> {
        use RbdStep as Rbd;
        use RgwStep as Rgw;
        match self {
            Step::CreateRealm { realm } => Split::Rgw(Rgw::CreateRealm { realm }),
            Step::CreateZoneGroup {
                realm,
                zone_group,
                endpoints,
                master,
            } => Split::Rgw(Rgw::CreateZoneGroup(
                ZoneGroupRef { realm, zone_group },
                WantedZoneGroup {
                    endpoints,
                    master: *master,
                },
            )),
            Step::CreateZone {
                realm,
                zone_group,
                zone,
                endpoints,
                master,
                read_only,
                keys,
            } => Split::Rgw(Rgw::CreateZone(
                ZoneRef {
                    realm,
                    zone_group,
                    zone,
                },
                WantedZone {
                    endpoints,
                    master: *master,
                    read_only: *read_only,
                    keys,
                },
            )),
            Step::ModifyZone {
                realm,
                zone_group,
                zone,
                master,
                read_only,
            } => Split::Rgw(Rgw::ModifyZone(
                ZoneRef {
                    realm,
                    zone_group,
                    zone,
                },
                ZoneChange {
                    master: *master,
                    read_only: *read_only,
                },
            )),
            Step::CreateSystemUser { uid, keys } => Split::Rgw(Rgw::CreateSystemUser { uid, keys }),
            Step::CommitPeriod { realm } => Split::Rgw(Rgw::CommitPeriod { realm }),
            Step::PullRealm { realm, url, keys } | Step::PullPeriod { realm, url, keys } => {
                Split::Rgw(Rgw::Pull(Pull {
                    realm,
                    url,
                    keys,
                    create_realm: matches!(self, Step::PullRealm { .. }),
                }))
            }
            Step::InitMetadataSync { realm, zone } => Split::Rgw(Rgw::InitMetadataSync { realm, zone }),
            Step::SetSyncPolicy {
                realm,
                zone_group,
                groups,
            } => Split::Rgw(Rgw::SetSyncPolicy(ZoneGroupRef { realm, zone_group }, groups)),
            Step::DeleteZone {
                realm,
                zone_group,
                zone,
            } => Split::Rgw(Rgw::DeleteZone(ZoneRef {
                realm,
                zone_group,
                zone,
            })),
            Step::DeleteZoneGroup { realm, zone_group } => {
                Split::Rgw(Rgw::DeleteZoneGroup(ZoneGroupRef { realm, zone_group }))
            }
            Step::DeleteRealm { realm } => Split::Rgw(Rgw::DeleteRealm { realm }),
            Step::CreatePool { pool } => Split::Rbd(Rbd::CreatePool { pool }),
            Step::EnablePoolMirroring {
                pool,
                mode,
                site_name,
            } => Split::Rbd(Rbd::EnablePoolMirroring {
                pool,
                mode: *mode,
                site_name,
            }),
            Step::DisablePoolMirroring { pool } => Split::Rbd(Rbd::DisablePoolMirroring { pool }),
            Step::ImportPeer {
                pool,
                token,
                direction,
                site_name,
            } => Split::Rbd(Rbd::ImportPeer {
                pool,
                token,
                direction: *direction,
                site_name,
            }),
            Step::SetPeerDirection {
                pool,
                uuid,
                direction,
            } => Split::Rbd(Rbd::SetPeerDirection {
                pool,
                uuid,
                direction: *direction,
            }),
            Step::RemovePeer { pool, uuid } => Split::Rbd(Rbd::RemovePeer { pool, uuid }),
            Step::EnableImageMirroring { pool, image, mode } => Split::Rbd(Rbd::EnableImageMirroring {
                pool,
                image,
                mode: *mode,
            }),
            Step::DisableImageMirroring { pool, image } => {
                Split::Rbd(Rbd::DisableImageMirroring { pool, image })
            }
            Step::CreateMirrorSnapshot { pool, image } => {
                Split::Rbd(Rbd::CreateMirrorSnapshot { pool, image })
            }
            Step::PromoteImage { pool, image, force } => Split::Rbd(Rbd::PromoteImage {
                pool,
                image,
                force: *force,
            }),
            Step::DemoteImage { pool, image } => Split::Rbd(Rbd::DemoteImage { pool, image }),
            Step::ResyncImage { pool, image } => Split::Rbd(Rbd::ResyncImage { pool, image }),
            Step::AddSnapshotSchedule {
                pool,
                image,
                interval,
                start_time,
            } => Split::Rbd(Rbd::AddSnapshotSchedule {
                pool,
                schedule: Schedule::of(image, interval, start_time),
            }),
            Step::RemoveSnapshotSchedule {
                pool,
                image,
                interval,
                start_time,
            } => Split::Rbd(Rbd::RemoveSnapshotSchedule {
                pool,
                schedule: Schedule::of(image, interval, start_time),
            }),
            Step::CreateSyncSnapshot { pool, image, snap } => {
                Split::DeltaSync(DeltaSyncStep::CreateSnapshot(ImageRef { pool, image }, snap))
            }
            Step::RemoveSyncSnapshot { pool, image, snap } => {
                Split::DeltaSync(DeltaSyncStep::RemoveSnapshot(ImageRef { pool, image }, snap))
            }
            Step::PromoteSyncCopy {
                pool,
                image,
                from_snap,
                snap,
            } => Split::DeltaSync(DeltaSyncStep::PromoteCopy {
                image: ImageRef { pool, image },
                from_snap,
                snap,
            }),
            Step::SendDelta {
                pool,
                image,
                from_snap,
                to_snap,
                peer,
                options,
            } => Split::DeltaSync(DeltaSyncStep::Send {
                image: ImageRef { pool, image },
                from_snap: from_snap.as_deref(),
                to_snap,
                peer,
                options: *options,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realm_and_period_pulls_differ_only_in_creating_the_realm() {
        let keys = SystemKeys {
            access_key: "AK".into(),
            secret_key: Sensitive("secret".into()),
        };
        let (realm, url) = ("prod".to_string(), "http://rgw-a:8080".to_string());
        let pulls = [
            Step::PullRealm {
                realm: realm.clone(),
                url: url.clone(),
                keys: keys.clone(),
            },
            Step::PullPeriod { realm, url, keys },
        ];
        let created: Vec<bool> = pulls
            .iter()
            .map(|step| match step.split() {
                Split::Rgw(RgwStep::Pull(pull)) => {
                    assert_eq!((pull.realm, pull.url), ("prod", "http://rgw-a:8080"));
                    pull.create_realm
                }
                other => panic!("{step} split into {other:?}"),
            })
            .collect();
        assert_eq!(created, [true, false]);
    }

    #[test]
    fn a_schedule_step_names_the_entry_its_pool_lists() {
        let step = Step::RemoveSnapshotSchedule {
            pool: "rbd".into(),
            image: Some("db".into()),
            interval: "1h".into(),
            start_time: None,
        };
        let Split::Rbd(RbdStep::RemoveSnapshotSchedule { pool, schedule }) = step.split() else {
            panic!("{step} is not an RBD schedule removal");
        };
        assert_eq!(pool, "rbd");
        assert_eq!(
            schedule.entry(),
            ScheduleEntry {
                image: Some("db".into()),
                interval: "1h".into(),
                start_time: None,
            }
        );
    }
}
