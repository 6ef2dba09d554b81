//! RBD mirroring through `rbd` (and `ceph` for pools): pool state and the pool, peer and image steps.
//!
//! Facts behind the steps (Pacific 16.2.15, `shared/notes/ceph-on-loopback.md`): snapshot mirroring needs a
//! tx peer on the primary, so peers are usually imported `rx-tx`; a bootstrap import onto an existing
//! tx-only peer keeps it tx-only with no client, which `SetPeerDirection` (and `ImportPeer` after importing)
//! repairs with `peer set ... direction` and `peer set ... client`; `osd pool create`, `rbd pool init`,
//! `mirror pool enable`, `mirror image enable` in the same mode and `snapshot schedule add/remove` all
//! succeed when there is nothing to do, while promote/demote fail when the image is already so.

use futures::{stream, StreamExt, TryStreamExt};

use super::{
    command::{absent_on_enoent, ok_if, CephCommand, ENOENT},
    parse::{self, rbd::PoolInfo},
    CephCli,
};
use crate::agent::{
    split::Schedule, AgentError, AgentResult, ImageMirrorMode, ImageMirroring, PeerDirection, PoolMirrorMode,
    RbdImage, RbdPeer, RbdPoolState, Sensitive,
};

/// Images read at once while observing a pool: two `rbd` processes each. Each process waits far more than
/// it computes (measured on the test bed: `rbd info` 0.3 to 0.7 s of wall time for 0.05 s of CPU, `rbd snap
/// ls` 0.2 to 0.7 s), so more in flight shortens a read even on 2 cores.
const IMAGE_READS_IN_FLIGHT: usize = 16;

/// The cephx user bootstrap tokens create on the peer cluster; a repaired peer must name it.
const PEER_CLIENT: &str = "client.rbd-mirror-peer";

fn mode_name(mode: PoolMirrorMode) -> &'static str {
    match mode {
        PoolMirrorMode::Disabled => "disabled",
        PoolMirrorMode::Image => "image",
        PoolMirrorMode::Pool => "pool",
    }
}

fn image_mode_name(mode: ImageMirrorMode) -> &'static str {
    match mode {
        ImageMirrorMode::Snapshot => "snapshot",
        ImageMirrorMode::Journal => "journal",
    }
}

fn direction_name(direction: PeerDirection) -> &'static str {
    match direction {
        PeerDirection::RxOnly => "rx-only",
        PeerDirection::TxOnly => "tx-only",
        PeerDirection::RxTx => "rx-tx",
    }
}

/// A peer that receives needs a client to connect to the other cluster as.
fn peer_is(peer: &RbdPeer, direction: PeerDirection) -> bool {
    peer.direction == direction && (direction == PeerDirection::TxOnly || peer.client_name.is_some())
}

impl CephCli {
    fn not_found(&self, what: String) -> AgentError {
        AgentError::NotFound {
            site: self.site().to_string(),
            what,
        }
    }

    fn refused(&self, action: &str, message: String) -> AgentError {
        AgentError::Refused {
            site: self.site().to_string(),
            action: action.to_string(),
            message,
        }
    }

    async fn pool_info(&self, pool: &str) -> AgentResult<Option<PoolInfo>> {
        let command = CephCommand::rbd(["mirror", "pool", "info", pool, "--all", "--format=json"]);
        absent_on_enoent(self.run(command).await)?
            .map(|out| parse::rbd::pool_info(&out))
            .transpose()
    }

    async fn existing_pool_info(&self, pool: &str) -> AgentResult<PoolInfo> {
        self.pool_info(pool)
            .await?
            .ok_or_else(|| self.not_found(format!("pool {pool}")))
    }

    /// The pool, with every image or only those of `only` (then without schedules: no listing, no schedule
    /// command, and per image only its own processes).
    pub(super) async fn read_rbd_pool(
        &self,
        pool: &str,
        only: Option<&[String]>,
    ) -> AgentResult<RbdPoolState> {
        // `mirror pool info` fails with ENOENT when the pool does not exist (measured), which spares the read
        // a `ceph osd pool ls`: the Python CLI took 1.9 s of wall time on the test bed (load average 5).
        let Some(info) = self.pool_info(pool).await? else {
            return Ok(RbdPoolState::default());
        };
        let mirrored = info.mode != PoolMirrorMode::Disabled;
        let status = async {
            if !mirrored {
                return Ok(None);
            }
            let command = CephCommand::rbd(["mirror", "pool", "status", pool, "--verbose", "--format=json"]);
            parse::rbd::pool_status(&self.run(command).await?).map(Some)
        };
        let schedules = async {
            if !mirrored || only.is_some() {
                return Ok(Vec::new());
            }
            let command = CephCommand::rbd([
                "mirror",
                "snapshot",
                "schedule",
                "ls",
                "--recursive",
                "--format=json",
            ])
            .arg(format!("--pool={pool}"));
            parse::rbd::schedules(&self.run(command).await?)
        };
        let names = async {
            match only {
                Some(names) => Ok(names.to_vec()),
                None => parse::names(&self.run(CephCommand::rbd(["ls", pool, "--format=json"])).await?),
            }
        };
        let (status, schedules, names) = tokio::try_join!(status, schedules, names)?;
        let mut images: Vec<RbdImage> = stream::iter(names)
            .map(|name| self.read_image(pool, name))
            .buffered(IMAGE_READS_IN_FLIGHT)
            .try_filter_map(|image| async move { Ok(image) })
            .try_collect()
            .await?;
        let (daemon, mut replay) = status.map_or((None, Default::default()), |status| {
            (status.daemon, status.replay)
        });
        for image in &mut images {
            image.replay = replay.remove(&image.name);
        }
        Ok(RbdPoolState {
            exists: true,
            mode: info.mode,
            site_name: info.site_name,
            peers: info.peers,
            images,
            schedules,
            daemon,
        })
    }

    /// None when the image went away since the pool was listed.
    async fn read_image(&self, pool: &str, name: String) -> AgentResult<Option<RbdImage>> {
        let spec = format!("{pool}/{name}");
        let info = CephCommand::rbd(["info", &spec, "--format=json"]);
        let Some(info) = absent_on_enoent(self.run(info).await)? else {
            return Ok(None);
        };
        let mirroring = parse::rbd::image_mirroring(&info)?;
        let last_mirror_snapshot = match &mirroring {
            Some(ImageMirroring {
                mode: ImageMirrorMode::Snapshot,
                ..
            }) => {
                let snaps = CephCommand::rbd(["snap", "ls", "--all", &spec, "--format=json"]);
                match absent_on_enoent(self.run(snaps).await)? {
                    Some(out) => parse::rbd::last_mirror_snapshot(&out)?,
                    None => return Ok(None),
                }
            }
            _ => None,
        };
        Ok(Some(RbdImage {
            name,
            mirroring,
            replay: None,
            last_mirror_snapshot,
        }))
    }

    pub(super) async fn create_pool(&self, pool: &str) -> AgentResult<()> {
        // Succeeds when the pool exists (whatever its pg_num); 8 PGs suit the small pools DR tests create, and
        // the autoscaler (when on) resizes real ones.
        self.run(CephCommand::ceph(["osd", "pool", "create", pool, "8"]))
            .await?;
        // Also enables the `rbd` application on the pool (measured), which keeps HEALTH_WARN away.
        self.run(CephCommand::rbd(["pool", "init", pool])).await.map(drop)
    }

    pub(super) async fn enable_pool_mirroring(
        &self,
        pool: &str,
        mode: PoolMirrorMode,
        site_name: &str,
    ) -> AgentResult<()> {
        if mode == PoolMirrorMode::Disabled {
            return self.disable_pool_mirroring(pool).await;
        }
        let info = self.existing_pool_info(pool).await?;
        if info.mode == mode && info.site_name.as_deref() == Some(site_name) {
            return Ok(());
        }
        let command = CephCommand::rbd(["mirror", "pool", "enable", pool, mode_name(mode)])
            .arg(format!("--site-name={site_name}"));
        self.run(command).await.map(drop)
    }

    pub(super) async fn disable_pool_mirroring(&self, pool: &str) -> AgentResult<()> {
        match self.pool_info(pool).await? {
            None => Ok(()),
            Some(info) if info.mode == PoolMirrorMode::Disabled => Ok(()),
            Some(_) => self
                .run(CephCommand::rbd(["mirror", "pool", "disable", pool]))
                .await
                .map(drop),
        }
    }

    /// Imports the token (through stdin) unless a peer for that cluster already has the direction; then
    /// repairs the direction, which an import onto an existing tx-only peer leaves unchanged.
    pub(super) async fn import_peer(
        &self,
        pool: &str,
        token: &Sensitive<String>,
        direction: PeerDirection,
        site_name: &str,
    ) -> AgentResult<()> {
        let mon_host = parse::token_mon_host(token.expose()).ok_or_else(|| {
            self.refused(
                "import-peer",
                "the bootstrap token is not base64 JSON naming a mon_host".into(),
            )
        })?;
        let same_cluster = |peer: &&RbdPeer| peer.mon_host.as_deref() == Some(mon_host.as_str());
        let before = self.existing_pool_info(pool).await?;
        if before
            .peers
            .iter()
            .find(same_cluster)
            .is_some_and(|peer| peer_is(peer, direction))
        {
            return Ok(());
        }
        let import = CephCommand::rbd(["mirror", "pool", "peer", "bootstrap", "import"])
            .arg(format!("--site-name={site_name}"))
            .arg(format!("--direction={}", direction_name(direction)))
            .args([pool, "-"])
            .stdin(token);
        self.run(import).await?;
        let after = self.existing_pool_info(pool).await?;
        let imported = after.peers.iter().find(same_cluster).cloned().ok_or_else(|| {
            self.not_found(format!(
                "the peer of pool {pool} that the bootstrap token names ({mon_host})"
            ))
        })?;
        self.repair_peer(pool, &imported, direction).await
    }

    pub(super) async fn set_peer_direction(
        &self,
        pool: &str,
        uuid: &str,
        direction: PeerDirection,
    ) -> AgentResult<()> {
        let info = self.existing_pool_info(pool).await?;
        let peer = info
            .peers
            .iter()
            .find(|peer| peer.uuid == uuid)
            .ok_or_else(|| self.not_found(format!("peer {uuid} of pool {pool}")))?;
        self.repair_peer(pool, peer, direction).await
    }

    async fn repair_peer(&self, pool: &str, peer: &RbdPeer, direction: PeerDirection) -> AgentResult<()> {
        let set = |args: [&str; 2]| {
            CephCommand::rbd(["mirror", "pool", "peer", "set", pool, peer.uuid.as_str()]).args(args)
        };
        if peer.direction != direction {
            self.run(set(["direction", direction_name(direction)])).await?;
        }
        if direction != PeerDirection::TxOnly && peer.client_name.is_none() {
            self.run(set(["client", PEER_CLIENT])).await?;
        }
        Ok(())
    }

    pub(super) async fn remove_peer(&self, pool: &str, uuid: &str) -> AgentResult<()> {
        let Some(info) = self.pool_info(pool).await? else {
            return Ok(());
        };
        if !info.peers.iter().any(|peer| peer.uuid == uuid) {
            return Ok(());
        }
        let command = CephCommand::rbd(["mirror", "pool", "peer", "remove", pool, uuid]);
        ok_if(self.run(command).await, ENOENT, "")
    }

    /// The image's mirroring; NotFound when the image does not exist.
    async fn image_mirroring(&self, pool: &str, image: &str) -> AgentResult<Option<ImageMirroring>> {
        let spec = format!("{pool}/{image}");
        let info = absent_on_enoent(self.run(CephCommand::rbd(["info", &spec, "--format=json"])).await)?
            .ok_or_else(|| self.not_found(format!("image {spec}")))?;
        parse::rbd::image_mirroring(&info)
    }

    /// The image's mirroring, refusing `action` when mirroring is not enabled.
    async fn mirrored_image(&self, pool: &str, image: &str, action: &str) -> AgentResult<ImageMirroring> {
        self.image_mirroring(pool, image).await?.ok_or_else(|| {
            self.refused(
                action,
                format!("mirroring is not enabled on image {pool}/{image}"),
            )
        })
    }

    fn image_command(verb: &str, pool: &str, image: &str) -> CephCommand {
        CephCommand::rbd(["mirror", "image", verb]).arg(format!("{pool}/{image}"))
    }

    pub(super) async fn enable_image_mirroring(
        &self,
        pool: &str,
        image: &str,
        mode: ImageMirrorMode,
    ) -> AgentResult<()> {
        match self.image_mirroring(pool, image).await? {
            Some(current) if current.mode == mode => Ok(()),
            Some(current) => Err(self.refused(
                "enable-image-mirroring",
                format!(
                    "image {pool}/{image} mirrors in {} mode; disable mirroring before changing the mode",
                    image_mode_name(current.mode)
                ),
            )),
            None => self
                .run(Self::image_command("enable", pool, image).arg(image_mode_name(mode)))
                .await
                .map(drop),
        }
    }

    pub(super) async fn disable_image_mirroring(&self, pool: &str, image: &str) -> AgentResult<()> {
        match self.image_mirroring(pool, image).await? {
            None => Ok(()),
            Some(mirroring) => self
                .run(Self::disable_command(pool, image, &mirroring))
                .await
                .map(drop),
        }
    }

    /// `--force` on a copy: Ceph refuses to disable mirroring on a non-primary image without it (measured:
    /// "mirrored image is not primary, add force option"). The cleanup disables the copies rbd-mirror did not
    /// remove, as when mirroring ended on the primary before rbd-mirror replayed from it after a failover.
    fn disable_command(pool: &str, image: &str, mirroring: &ImageMirroring) -> CephCommand {
        let command = Self::image_command("disable", pool, image);
        match mirroring.primary {
            true => command,
            false => command.arg("--force"),
        }
    }

    /// Always takes a new snapshot: that is what the step asks for, and an extra one is harmless.
    pub(super) async fn create_mirror_snapshot(&self, pool: &str, image: &str) -> AgentResult<()> {
        self.run(Self::image_command("snapshot", pool, image))
            .await
            .map(drop)
    }

    pub(super) async fn promote_image(&self, pool: &str, image: &str, force: bool) -> AgentResult<()> {
        if self.mirrored_image(pool, image, "promote").await?.primary {
            return Ok(());
        }
        let mut command = Self::image_command("promote", pool, image);
        if force {
            command = command.arg("--force");
        }
        self.run(command).await.map(drop)
    }

    pub(super) async fn demote_image(&self, pool: &str, image: &str) -> AgentResult<()> {
        if !self.mirrored_image(pool, image, "demote").await?.primary {
            return Ok(());
        }
        self.run(Self::image_command("demote", pool, image))
            .await
            .map(drop)
    }

    /// Flags a non-primary copy for a full resync. A snapshot-mode copy resyncs only after the primary takes
    /// a new mirror snapshot (measured): the planner follows with `CreateMirrorSnapshot` on the primary.
    /// rbd-mirror acts on the flag by deleting the copy and recreating it from the primary, so a copy that
    /// is gone is a resync under way (a repeated request lands in that window), not an error.
    pub(super) async fn resync_image(&self, pool: &str, image: &str) -> AgentResult<()> {
        let mirroring = match self.mirrored_image(pool, image, "resync").await {
            Err(AgentError::NotFound { .. }) => return Ok(()),
            found => found?,
        };
        if mirroring.primary {
            return Err(self.refused(
                "resync",
                format!("image {pool}/{image} is primary on this site; only a non-primary copy resyncs"),
            ));
        }
        self.run(Self::image_command("resync", pool, image))
            .await
            .map(drop)
    }

    fn schedule_command(verb: &str, pool: &str, schedule: Schedule<'_>) -> CephCommand {
        CephCommand::rbd(["mirror", "snapshot", "schedule", verb])
            .arg(format!("--pool={pool}"))
            .opt("--image", schedule.image)
            .arg(schedule.interval)
            .args(schedule.start_time)
    }

    pub(super) async fn add_snapshot_schedule(&self, pool: &str, schedule: Schedule<'_>) -> AgentResult<()> {
        self.run(Self::schedule_command("add", pool, schedule))
            .await
            .map(drop)
    }

    pub(super) async fn remove_snapshot_schedule(
        &self,
        pool: &str,
        schedule: Schedule<'_>,
    ) -> AgentResult<()> {
        let command = Self::schedule_command("remove", pool, schedule);
        ok_if(self.run(command).await, ENOENT, "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabling_mirroring_forces_only_on_a_copy() {
        let mirroring = |primary| ImageMirroring {
            mode: ImageMirrorMode::Snapshot,
            primary,
            global_id: "g1".into(),
        };
        let shown = |primary| CephCli::disable_command("rbd", "db", &mirroring(primary)).to_string();
        assert_eq!(shown(true), "rbd mirror image disable rbd/db");
        assert_eq!(shown(false), "rbd mirror image disable rbd/db --force");
    }
}
