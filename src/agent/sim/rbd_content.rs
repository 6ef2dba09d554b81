//! What a simulated image's snapshots hold, as checksums see them.

use k8s_openapi::jiff::Timestamp;

use super::{not_found, rbd::Image, WorldState};
use crate::agent::{AgentResult, ImageChecksum};

/// The size every simulated image reports.
const IMAGE_SIZE: u64 = 1 << 30;

impl WorldState {
    /// A snapshot's bytes are its content version (and whether a test damaged it): a copy checksums like
    /// the snapshot it copied.
    pub(super) fn image_checksum(
        &mut self,
        site: &str,
        pool: &str,
        image: &str,
        snap_id: u64,
        now: Timestamp,
    ) -> AgentResult<ImageChecksum> {
        self.sync_image(site, pool, image, now);
        let point = self
            .image(site, pool, image)?
            .points
            .iter()
            .find(|point| point.id == snap_id)
            .ok_or_else(|| not_found(site, format!("snapshot {snap_id} of image {pool}/{image}")))?;
        let mut hasher = blake3::Hasher::new();
        hasher.update(&point.content_version.to_le_bytes());
        hasher.update(&[u8::from(point.damaged)]);
        Ok(ImageChecksum {
            size: IMAGE_SIZE,
            blake3: hasher.finalize().to_hex().to_string(),
        })
    }

    /// Damages the newest snapshot the image on `site` holds (as last observed); returns its id.
    pub(super) fn damage_newest_snapshot(&mut self, site: &str, pool: &str, image: &str) -> AgentResult<u64> {
        let newest = self
            .clusters
            .get_mut(site)
            .and_then(|cluster| {
                cluster
                    .rbd
                    .pools
                    .get_mut(pool)?
                    .images
                    .get_mut(image)?
                    .points
                    .last_mut()
            })
            .ok_or_else(|| not_found(site, format!("a snapshot of image {pool}/{image}")))?;
        newest.damaged = true;
        Ok(newest.id)
    }

    pub(super) fn image(&self, site: &str, pool: &str, image: &str) -> AgentResult<&Image> {
        let pool_state = self.cluster(site)?.rbd.pools.get(pool);
        pool_state
            .and_then(|pool_state| pool_state.images.get(image))
            .ok_or_else(|| not_found(site, format!("image {pool}/{image}")))
    }
}
