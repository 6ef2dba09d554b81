//! Finalizer cleanup with `deletionPolicy: Delete`: undo the mirroring cephdr configured, in the order Ceph
//! accepts it, and keep the pools (they hold the user's data).
//!
//! 1. Disable mirroring on primary images. Peers stay, so rbd-mirror on the other site sees it and removes
//!    the copies it made, as it does whenever mirroring ends on a primary.
//! 2. Once no image is primary-mirrored on either site: disable mirroring on the copies rbd-mirror left
//!    (its daemon may be down), and remove the peers.
//! 3. Disable pool mirroring, which Ceph refuses while a peer is registered or, in image mode, while an
//!    image still mirrors.
//!
//! In pool mode Ceph refuses per-image changes; disabling pool mirroring disables its images. Images in split
//! brain are disabled like any other: both diverged copies stay, as plain images, for a person to compare.

use super::{super::status::SitePair, conditions, PoolPlan};
use crate::{
    agent::{PoolMirrorMode, RbdPoolState, Step},
    api::{
        common::DeletionPolicy,
        rbd_mirror_pool::{RbdMirrorPoolSpec, RbdMirrorPoolStatus},
    },
    plan::SiteStep,
};

pub(super) fn plan(spec: &RbdMirrorPoolSpec, pair: &SitePair, status: RbdMirrorPoolStatus) -> PoolPlan {
    let undo = match spec.deletion_policy {
        DeletionPolicy::Delete => undo(spec, pair),
        DeletionPolicy::Retain => Undo {
            steps: Vec::new(),
            unreachable: Vec::new(),
            complete: true,
        },
    };
    let conditions = conditions::deleting(
        spec.deletion_policy,
        &undo.unreachable,
        &undo.steps,
        undo.complete,
    );
    PoolPlan::cleanup(undo.steps, conditions, status, undo.complete)
}

struct Undo {
    steps: Vec<SiteStep>,
    /// `site: error` for each site whose pool could not be observed.
    unreachable: Vec<String>,
    /// Both sites observed and neither has mirroring enabled on the pool.
    complete: bool,
}

fn undo(spec: &RbdMirrorPoolSpec, pair: &SitePair) -> Undo {
    let mut unreachable = Vec::new();
    let mut mirroring = Vec::new();
    for site in pair.sites {
        match &site.pool {
            Ok(pool) if pool.exists && pool.mode != PoolMirrorMode::Disabled => {
                mirroring.push((&site.site, pool))
            }
            Ok(_) => {}
            Err(error) => unreachable.push(format!("{}: {error}", site.site)),
        }
    }
    // Copies and peers wait for both sites: a primary on a site not observed still needs its peer.
    let primaries_gone = unreachable.is_empty()
        && !mirroring
            .iter()
            .any(|(_, pool)| mirrored_images(pool, true).next().is_some());
    let (mut disable_images, mut remove_peers, mut disable_pools) = (Vec::new(), Vec::new(), Vec::new());
    for &(site, pool) in &mirroring {
        let on_site = |step: Step| SiteStep::new(site, step);
        let disable_image = |image: &str| {
            on_site(Step::DisableImageMirroring {
                pool: spec.pool.clone(),
                image: image.to_string(),
            })
        };
        disable_images.extend(mirrored_images(pool, true).map(disable_image));
        if primaries_gone {
            disable_images.extend(mirrored_images(pool, false).map(disable_image));
            remove_peers.extend(pool.peers.iter().map(|peer| {
                on_site(Step::RemovePeer {
                    pool: spec.pool.clone(),
                    uuid: peer.uuid.clone(),
                })
            }));
        }
        let images_mirror = mirrored_images(pool, true)
            .chain(mirrored_images(pool, false))
            .next()
            .is_some();
        if pool.peers.is_empty() && !images_mirror {
            disable_pools.push(on_site(Step::DisablePoolMirroring {
                pool: spec.pool.clone(),
            }));
        }
    }
    Undo {
        steps: [disable_images, remove_peers, disable_pools].concat(),
        complete: unreachable.is_empty() && mirroring.is_empty(),
        unreachable,
    }
}

/// Images of an image-mode pool that mirror as primaries (`primary`) or as copies. In pool mode Ceph refuses
/// per-image changes, so there are none to disable one by one.
fn mirrored_images(pool: &RbdPoolState, primary: bool) -> impl Iterator<Item = &str> {
    pool.images
        .iter()
        .filter(move |image| {
            pool.mode == PoolMirrorMode::Image
                && image.mirroring.as_ref().is_some_and(|m| m.primary == primary)
        })
        .map(|image| image.name.as_str())
}
