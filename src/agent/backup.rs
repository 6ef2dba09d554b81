//! A backup store as a site: [`ClusterAgent`] over the directory that a `cephdr sync serve --backup-dir`
//! receiver fills (`<dir>/<pool>/<image>`, see [`crate::sync::store`]). An `RbdMirrorPool` with
//! `engine: delta-sync` whose copy site is such a store backs its images up there: the store's points are the
//! copy's snapshots, and removing the oldest snapshot folds it into the next point. Everything about RGW
//! and rbd-mirror is refused: a store has neither.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{
    delta_sync::snapshot_time,
    split::{DeltaSyncStep, ImageRef, Split},
    AgentError, AgentResult, ClusterAgent, ClusterInfo, ImageChecksum, RbdPoolState, RgwRealmState,
    Sensitive, Step, SyncGroup, SyncImage, SyncPool, ZoneSync,
};
use crate::sync::{session::TargetError, sidecar::backup_store, store::offsite};

pub struct BackupStoreAgent {
    site: String,
    dir: PathBuf,
}

impl BackupStoreAgent {
    pub fn new(site: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        BackupStoreAgent {
            site: site.into(),
            dir: dir.into(),
        }
    }

    fn refused(&self, action: &str) -> AgentError {
        AgentError::Refused {
            site: self.site.clone(),
            action: action.to_string(),
            message: "this site is a backup store: it keeps delta-sync copies only".into(),
        }
    }

    fn failed(&self, what: &str, error: impl std::fmt::Display) -> AgentError {
        AgentError::CommandFailed {
            site: self.site.clone(),
            command: what.to_string(),
            exit_code: None,
            stderr: error.to_string(),
        }
    }

    /// The images kept of `pool`, from its directory `pool_dir`.
    async fn images(&self, pool: &str, pool_dir: &Path) -> AgentResult<Vec<SyncImage>> {
        let mut entries = tokio::fs::read_dir(pool_dir)
            .await
            .map_err(|e| self.failed("list the pool's images", e))?;
        let mut images = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| self.failed("list the pool's images", e))?
        {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !entry.file_type().await.is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let store = self.store(&format!("{pool}/{name}")).await?;
            let points = store
                .points()
                .await
                .map_err(|e| self.failed("read the manifest", e))?;
            images.push(SyncImage {
                name,
                snapshots: points
                    .into_iter()
                    .map(|point| point.snap)
                    .filter(|snap| snapshot_time(snap).is_some())
                    .collect(),
                transfers: Vec::new(),
            });
        }
        images.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(images)
    }

    async fn store(&self, image: &str) -> AgentResult<crate::sync::store::DirectoryStore> {
        backup_store(&self.dir, image)
            .await
            .map_err(|e| self.failed(&format!("open the store of {image}"), crate::error_chain(&e)))
    }

    /// Removes the store's oldest point, folding it into the next; a point already gone is success. Only
    /// the oldest may go: a store replays a chain from its full.
    async fn remove_point(&self, image: ImageRef<'_>, snap: &str) -> AgentResult<()> {
        let store = self.store(&image.spec()).await?;
        let points = store
            .points()
            .await
            .map_err(|e| self.failed("read the manifest", e))?;
        match points.iter().position(|point| point.snap == snap) {
            None => Ok(()),
            Some(0) => store
                .retain(points.len() - 1)
                .await
                .map_err(|e: TargetError| self.failed(&format!("fold {}@{snap}", image.spec()), e)),
            Some(_) => Err(AgentError::Refused {
                site: self.site.clone(),
                action: format!("remove {}@{snap}", image.spec()),
                message: "a backup store removes its oldest point first".into(),
            }),
        }
    }
}

#[async_trait]
impl ClusterAgent for BackupStoreAgent {
    async fn cluster_info(&self) -> AgentResult<ClusterInfo> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| self.failed(&format!("open {}", self.dir.display()), e))?;
        // The receiver's last pass over the store's offsite copy, if it keeps one.
        let offsite = offsite::last_report(&self.dir)
            .await
            .map_err(|e| self.failed("read the offsite copy's report", e))?;
        let checks: Vec<String> = offsite
            .into_iter()
            .filter(|report| report.error.is_some() || !report.behind.is_empty())
            .map(|report| {
                let why = report.error.unwrap_or_default();
                let images = report.behind.len();
                format!(
                    "OFFSITE_COPY_BEHIND: {images} image(s) not yet in {}: {why}",
                    report.target
                )
            })
            .collect();
        Ok(ClusterInfo {
            fsid: format!("backup-store:{}", self.dir.display()),
            version: env!("CARGO_PKG_VERSION").to_string(),
            health: if checks.is_empty() {
                "HEALTH_OK"
            } else {
                "HEALTH_WARN"
            }
            .into(),
            checks,
            backup_store: true,
        })
    }

    async fn rgw_realm(&self, _realm: &str) -> AgentResult<RgwRealmState> {
        Err(self.refused("rgw-realm"))
    }

    async fn rgw_sync_status(&self, _realm: &str, _zone: &str) -> AgentResult<ZoneSync> {
        Err(self.refused("rgw-sync-status"))
    }

    async fn rgw_sync_policy(&self, _realm: &str, _zone_group: &str) -> AgentResult<Vec<SyncGroup>> {
        Err(self.refused("rgw-sync-policy"))
    }

    async fn rbd_pool(&self, _pool: &str) -> AgentResult<RbdPoolState> {
        Err(self.refused("rbd-pool"))
    }

    async fn rbd_images(&self, _pool: &str, _images: &[String]) -> AgentResult<RbdPoolState> {
        Err(self.refused("rbd-images"))
    }

    async fn create_bootstrap_token(&self, _pool: &str, _site_name: &str) -> AgentResult<Sensitive<String>> {
        Err(self.refused("create-bootstrap-token"))
    }

    async fn image_checksum(&self, _pool: &str, _image: &str, _snap_id: u64) -> AgentResult<ImageChecksum> {
        Err(self.refused("image-checksum"))
    }

    async fn sync_pool(&self, pool: &str) -> AgentResult<SyncPool> {
        let pool_dir = self.dir.join(pool);
        if !tokio::fs::try_exists(&pool_dir).await.unwrap_or(false) {
            return Ok(SyncPool::default());
        }
        Ok(SyncPool {
            exists: true,
            images: self.images(pool, &pool_dir).await?,
        })
    }

    async fn execute(&self, step: &Step) -> AgentResult<()> {
        match step.split() {
            Split::Rbd(super::split::RbdStep::CreatePool { pool }) => {
                tokio::fs::create_dir_all(self.dir.join(pool))
                    .await
                    .map_err(|e| self.failed(&format!("create {pool}"), e))
            }
            Split::DeltaSync(DeltaSyncStep::RemoveSnapshot(image, snap)) => {
                self.remove_point(image, snap).await
            }
            _ => Err(self.refused(step.verb())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{
        diff::{DiffReader, DiffWriter, Record, Version},
        frame::FrameOptions,
        session::{receive, send},
    };

    /// Ships `from..to` into the store of `rbd/db` as a receiver would: an 8 KiB image whose first block
    /// holds `byte`.
    async fn receive_into(dir: &Path, from: Option<&str>, to: &str, byte: u8) {
        let mut writer = DiffWriter::new(Vec::new(), Version::V1).await.unwrap();
        let records = [
            from.map(|s| Record::FromSnap(s.into())),
            Some(Record::ToSnap(to.into())),
            Some(Record::Size(8192)),
            Some(Record::Write {
                offset: 0,
                data: vec![byte; 4096].into(),
            }),
        ];
        for record in records.iter().flatten() {
            writer.record(record).await.unwrap();
        }
        let diff = writer.finish().await.unwrap();
        let store = backup_store(dir, "rbd/db").await.unwrap();
        let (near, far) = tokio::io::duplex(1 << 16);
        let sender = async {
            let reader = DiffReader::new(diff.as_slice()).await.unwrap();
            send("rbd/db", reader, 4096, near, &FrameOptions::default()).await
        };
        let mut target = store.target();
        let path = store.checkpoint_path();
        let (sent, received) = tokio::join!(sender, receive(far, &mut target, &path, 4096));
        sent.unwrap();
        received.unwrap();
    }

    #[tokio::test]
    async fn the_stores_points_are_the_copys_snapshots_and_the_oldest_folds_away() {
        let dir = tempfile::tempdir().unwrap();
        let agent = BackupStoreAgent::new("vault", dir.path());
        assert!(!agent.sync_pool("rbd").await.unwrap().exists);
        agent
            .execute(&Step::CreatePool { pool: "rbd".into() })
            .await
            .unwrap();
        let (s1, s2, s3) = (
            "cephdr-sync-vault-100",
            "cephdr-sync-vault-200",
            "cephdr-sync-vault-300",
        );
        receive_into(dir.path(), None, s1, 1).await;
        receive_into(dir.path(), Some(s1), s2, 2).await;
        receive_into(dir.path(), Some(s2), s3, 3).await;
        let pool = agent.sync_pool("rbd").await.unwrap();
        assert!(pool.exists);
        assert_eq!(pool.images[0].name, "db");
        assert_eq!(pool.images[0].snapshots, [s1, s2, s3]);

        let remove = |snap: &str| Step::RemoveSyncSnapshot {
            pool: "rbd".into(),
            image: "db".into(),
            snap: snap.into(),
        };
        let refused = agent.execute(&remove(s2)).await.unwrap_err();
        assert!(matches!(refused, AgentError::Refused { .. }), "{refused}");
        agent.execute(&remove(s1)).await.unwrap();
        agent.execute(&remove(s1)).await.unwrap();
        assert_eq!(
            agent.sync_pool("rbd").await.unwrap().images[0].snapshots,
            [s2, s3]
        );
        let out = dir.path().join("s3.img");
        backup_store(dir.path(), "rbd/db")
            .await
            .unwrap()
            .restore(s3, &out)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&out).unwrap()[..4096], [3u8; 4096]);

        let info = agent.cluster_info().await.unwrap();
        assert!(info.backup_store);
        assert_eq!((info.health.as_str(), info.checks.len()), ("HEALTH_OK", 0));
        assert!(matches!(
            agent.rbd_pool("rbd").await,
            Err(AgentError::Refused { .. })
        ));
    }

    #[tokio::test]
    async fn an_offsite_copy_that_fell_behind_is_a_health_warning() {
        let dir = tempfile::tempdir().unwrap();
        let report = offsite::OffsiteReport {
            target: "s3://vault/".into(),
            behind: vec!["rbd/db".into()],
            error: Some("rbd/db: upload /rbd/db/000001-s1.diff: 403".into()),
        };
        std::fs::write(
            dir.path().join(offsite::REPORT),
            serde_json::to_vec(&report).unwrap(),
        )
        .unwrap();
        let info = BackupStoreAgent::new("vault", dir.path())
            .cluster_info()
            .await
            .unwrap();
        assert_eq!(info.health, "HEALTH_WARN");
        assert_eq!(
            info.checks,
            ["OFFSITE_COPY_BEHIND: 1 image(s) not yet in s3://vault/: rbd/db: upload /rbd/db/000001-s1.diff: 403"]
        );
    }
}
