//! An offsite copy of the backup stores under a directory, in an S3 bucket: each store's diff files and
//! manifest under `<prefix>/<pool>/<image>/`, the directory's own layout, so the bucket alone restores any
//! point (`cephdr sync restore --s3-bucket …`).
//!
//! The directory stays the receiver's staging area: a transfer resumes there at its checkpoint, and
//! retention folds there. [`Offsite::publish`] then brings the bucket to the store's state: new files
//! first, the manifest next, files the manifest no longer names last, so a reader of the bucket never meets
//! a manifest naming a missing file. What the bucket holds is recorded in `published.json` beside the
//! manifest; each pass over the directory leaves its outcome in `<dir>/offsite.json`, which the backup
//! store's agent reports as the site's health.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use s3::{creds::Credentials, Bucket, Region};
use serde::{Deserialize, Serialize};
use tokio::fs::File;
use tracing::{info, warn};

use super::{chain_of, read_json, DirectoryStore, Manifest, Point, MANIFEST};
use crate::{
    agent::Sensitive,
    error_chain,
    sync::{checkpoint::write_atomically, session::TargetError},
};

const PUBLISHED: &str = "published.json";
/// Outcome of the last pass over a backup directory, in that directory.
pub const REPORT: &str = "offsite.json";

/// Where the offsite copy goes. Credentials come from the environment (a Secret in a pod), never flags.
#[derive(Debug, Clone)]
pub struct S3Location {
    /// `http(s)://host:port` of the S3 endpoint (path-style requests, as RGW and most stores accept).
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Key prefix inside the bucket; empty for the bucket's root.
    pub prefix: String,
}

/// The outcome of the last pass over a backup directory.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OffsiteReport {
    /// `s3://bucket/prefix`.
    pub target: String,
    /// Images (`pool/name`) whose newest points are not in the bucket yet.
    pub behind: Vec<String>,
    /// Why the last pass failed, if it did.
    pub error: Option<String>,
}

#[derive(Clone)]
pub struct Offsite {
    bucket: Box<Bucket>,
    location: S3Location,
    /// One publish at a time: two racing could leave an older manifest over the newer one's deletions.
    publishing: Arc<tokio::sync::Mutex<()>>,
}

/// Shows where the copy goes, never the bucket's credentials.
impl std::fmt::Debug for Offsite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offsite").field("target", &self.target()).finish()
    }
}

impl Offsite {
    pub fn new(
        location: S3Location,
        access_key: &Sensitive<String>,
        secret_key: &Sensitive<String>,
    ) -> Result<Offsite, TargetError> {
        let failed = |source| TargetError::Offsite {
            action: "configure bucket",
            key: location.bucket.clone(),
            source,
        };
        let credentials = Credentials::new(Some(&access_key.0), Some(&secret_key.0), None, None, None)
            .map_err(|e| failed(e.into()))?;
        let region = Region::Custom {
            region: location.region.clone(),
            endpoint: location.endpoint.clone(),
        };
        let bucket = Bucket::new(&location.bucket, region, credentials)
            .map_err(failed)?
            .with_path_style();
        Ok(Offsite {
            bucket,
            location,
            publishing: Arc::default(),
        })
    }

    /// `s3://bucket/prefix`, for logs and reports.
    pub fn target(&self) -> String {
        format!("s3://{}/{}", self.location.bucket, self.location.prefix)
    }

    fn key(&self, image: &str, file: &str) -> String {
        let prefix = self.location.prefix.trim_matches('/');
        match prefix.is_empty() {
            true => format!("/{image}/{file}"),
            false => format!("/{prefix}/{image}/{file}"),
        }
    }

    fn failed(&self, action: &'static str, key: &str) -> impl FnOnce(s3::error::S3Error) -> TargetError {
        let key = key.to_string();
        move |source| TargetError::Offsite { action, key, source }
    }

    /// Brings the bucket's copy of `image` (`pool/name`) to the state of its `store`.
    pub async fn publish(&self, store: &DirectoryStore, image: &str) -> Result<(), TargetError> {
        let _one_at_a_time = self.publishing.lock().await;
        let manifest = store.manifest().await?;
        let published = published(store).await?;
        if published == manifest {
            return Ok(());
        }
        let held = |points: &[Point], point: &Point| points.contains(point);
        for point in manifest.points.iter().filter(|p| !held(&published.points, p)) {
            let key = self.key(image, &point.file);
            let mut file = File::open(store.root.join(&point.file)).await?;
            self.bucket
                .put_object_stream(&mut file, &key)
                .await
                .map_err(self.failed("upload", &key))?;
        }
        let key = self.key(image, MANIFEST);
        let json = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
        self.bucket
            .put_object(&key, &json)
            .await
            .map_err(self.failed("upload", &key))?;
        // Deleted before the record moves on: a crash in between repeats the pass rather than leaking objects.
        for point in published.points.iter().filter(|p| !held(&manifest.points, p)) {
            let key = self.key(image, &point.file);
            self.bucket
                .delete_object(&key)
                .await
                .map_err(self.failed("delete", &key))?;
        }
        write_atomically(&store.root.join(PUBLISHED), &json).await?;
        info!(
            image,
            target = self.target(),
            points = manifest.points.len(),
            "offsite copy published"
        );
        Ok(())
    }

    /// Publishes every store under `dir` (`<dir>/<pool>/<image>`) and records the outcome in `<dir>/offsite.json`.
    pub async fn publish_all(&self, dir: &Path) -> OffsiteReport {
        let mut report = OffsiteReport {
            target: self.target(),
            ..OffsiteReport::default()
        };
        match stores(dir).await {
            Ok(images) => {
                for (image, root) in images {
                    let outcome = match DirectoryStore::open(root).await {
                        Ok(store) => self.publish(&store, &image).await,
                        Err(error) => Err(error),
                    };
                    if let Err(error) = outcome {
                        let error = error_chain(&error);
                        warn!(image, error, "offsite copy is behind");
                        report.error.get_or_insert(format!("{image}: {error}"));
                        report.behind.push(image);
                    }
                }
            }
            Err(error) => report.error = Some(format!("list {}: {error}", dir.display())),
        }
        let json = serde_json::to_vec_pretty(&report).expect("a report serialises");
        if let Err(error) = write_atomically(&dir.join(REPORT), &json).await {
            warn!(%error, "cannot record the offsite pass");
        }
        report
    }

    /// Publishes every store under `dir` now and then every `interval`: retention's folds, and whatever a
    /// publish right after its transfer could not copy.
    pub async fn run(self, dir: PathBuf, interval: Duration) {
        loop {
            self.publish_all(&dir).await;
            tokio::time::sleep(interval).await;
        }
    }

    /// Fetches from the bucket what rebuilds `snap` of `image` into a store at `into`: its manifest and the
    /// chain's files. [`DirectoryStore::restore`] then checks each against its BLAKE3.
    pub async fn fetch(&self, image: &str, snap: &str, into: &Path) -> Result<DirectoryStore, TargetError> {
        let key = self.key(image, MANIFEST);
        let json = self
            .bucket
            .get_object(&key)
            .await
            .map_err(self.failed("download", &key))?;
        let manifest: Manifest = serde_json::from_slice(json.as_slice()).map_err(std::io::Error::other)?;
        let store = DirectoryStore::open(into).await?;
        for point in chain_of(&manifest.points, snap)? {
            let key = self.key(image, &point.file);
            let mut file = File::create(into.join(&point.file)).await?;
            self.bucket
                .get_object_to_writer(&key, &mut file)
                .await
                .map_err(self.failed("download", &key))?;
            file.sync_all().await?;
        }
        store.save_manifest(&manifest).await?;
        Ok(store)
    }
}

/// What the bucket holds of a store, as the last publish left it.
async fn published(store: &DirectoryStore) -> Result<Manifest, TargetError> {
    Ok(read_json(&store.root.join(PUBLISHED)).await?.unwrap_or_default())
}

/// The stores under a backup directory: `(pool/name, its directory)`.
async fn stores(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    for pool in subdirectories(dir).await? {
        for image in subdirectories(&dir.join(&pool)).await? {
            found.push((format!("{pool}/{image}"), dir.join(&pool).join(&image)));
        }
    }
    found.sort();
    Ok(found)
}

async fn subdirectories(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(e),
    };
    while let Some(entry) = entries.next_entry().await? {
        if entry.file_type().await?.is_dir() {
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
    }
    Ok(names)
}

/// The last pass's outcome under `dir`, when an offsite copy is configured for it.
pub async fn last_report(dir: &Path) -> std::io::Result<Option<OffsiteReport>> {
    read_json(&dir.join(REPORT)).await
}
