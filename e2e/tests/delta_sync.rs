//! The delta-sync engine between the two real sites: `rbd export-diff` on A → frames → `rbd import-diff`
//! on B. A full sync then incrementals give equal `rbd export` checksums; a transfer cut halfway resumes
//! from its checkpoint; a byte flipped in transit is rejected by chunk number and sent again. Backups of a
//! real image in a directory store restore every point, to a file and through `rbd import-diff`. The
//! sidecars replicate and back up over one TLS port with a token, and refuse wrong tokens and pools, and a
//! delta onto a copy that was written since its base. Under
//! the operator, an `RbdMirrorPool` with `engine: delta-sync` copies a pool to B's receiver on its
//! schedule: the whole image first, then only what changed, and prunes the snapshots it no longer needs;
//! with a backup store as the copy site, the store keeps the newest points and each restores to A's data,
//! from the directory and from its offsite copy in an S3 bucket on RGW;
//! a transfer whose link is cut, then corrupted, resumes from the receiver's checkpoint. A planned
//! FailoverRequest hands such a pool over to B after a final snapshot, and B then ships deltas back.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use cephdr::{
    agent::{
        backup::BackupStoreAgent,
        server::{TlsFiles, Tokens},
        Sensitive,
    },
    api::{
        self, conditions,
        rbd_mirror_pool::{RbdMirrorPool, TransferStatus},
    },
    sync::{
        checkpoint::Checkpoint,
        diff::{DiffWriter, Record, Version},
        frame::{ChecksumKind, FrameOptions},
        rbd::{RbdCli, RbdImage},
        session::{receive, send, SendReport, SyncError},
        sidecar::{backup_store, Destination, Receiver, SendError, Sender},
        store::{
            offsite::{self, Offsite, S3Location},
            DirectoryStore,
        },
        transport::{SyncListener, TransportError},
    },
};
use cephdr_e2e::{
    faults::{FaultyLink, LinkFault, Tamper},
    operator::{register_site, wait_until, OperatorStack, SiteAgent, SITE_NAMES},
    pki::Ca,
    process::random_hex,
    shared_ceph_sites, shared_control_plane, unique_name, CephSite, CephSites,
};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    api::{Patch, PatchParams},
    ResourceExt,
};
use rand::{seq::index::sample, RngCore};
use serde_json::json;
use tokio::io::{AsyncWriteExt, DuplexStream};

const BLOCK: usize = 4096;

fn rbd(site: &CephSite) -> RbdCli {
    RbdCli {
        conf: Some(site.conf.clone()),
        ..RbdCli::default()
    }
}

fn pool_on_both(a: &CephSite, b: &CephSite, prefix: &str) -> Result<String> {
    let pool = unique_name(prefix);
    for site in [a, b] {
        site.ceph(&["osd", "pool", "create", &pool, "8"])?;
        site.rbd(&["pool", "init", &pool])?;
    }
    Ok(pool)
}

/// Writes `blocks` random 4 KiB blocks at random places of the image's head (through `rbd import-diff`
/// of a diff without snapshots), then takes snapshot `snap`.
async fn write_blocks_and_snap(
    site: &CephSite,
    image: &str,
    mib: usize,
    blocks: usize,
    snap: &str,
) -> Result<()> {
    let mut rng = rand::rng();
    let mut cmd = tokio::process::Command::from(site.command("rbd"));
    cmd.args(["import-diff", "--no-progress", "-", image])
        .stdin(std::process::Stdio::piped());
    let mut child = cmd.spawn()?;
    let stdin = child.stdin.take().context("stdin")?;
    let mut writer = DiffWriter::new(tokio::io::BufWriter::new(stdin), Version::V1).await?;
    let mut picked = sample(&mut rng, (mib << 20) / BLOCK, blocks).into_vec();
    picked.sort();
    for block in picked {
        let mut data = vec![0u8; BLOCK];
        rng.fill_bytes(&mut data);
        writer
            .record(&Record::Write {
                offset: (block * BLOCK) as u64,
                data: data.into(),
            })
            .await?;
    }
    writer.finish().await?.into_inner().shutdown().await?;
    anyhow::ensure!(
        child.wait().await?.success(),
        "rbd import-diff of the writes failed"
    );
    site.rbd(&["snap", "create", &format!("{image}@{snap}")])?;
    Ok(())
}

struct Sync<'a> {
    a: &'a CephSite,
    b: &'a CephSite,
    image: String,
    checkpoint: &'a Path,
    chunk_size: u32,
    commit_every: u64,
    options: FrameOptions,
}

impl Sync<'_> {
    /// One attempt of `from..to`, the sender's side of the connection passed through `tamper`.
    async fn attempt(
        &self,
        from: Option<&str>,
        to: &str,
        tamper: impl FnOnce(Tamper<DuplexStream>) -> Tamper<DuplexStream>,
    ) -> Result<(Result<SendReport, SyncError>, Result<Checkpoint, SyncError>)> {
        let (diff, export) = rbd(self.a).export_diff(&self.image, from, to).await?;
        let (near, far) = tokio::io::duplex(1 << 20);
        let mut target = RbdImage::new(rbd(self.b), self.image.clone());
        let (sent, received) = tokio::join!(
            send(
                &self.image,
                diff,
                self.chunk_size,
                tamper(Tamper::new(near)),
                &self.options
            ),
            receive(far, &mut target, self.checkpoint, self.commit_every),
        );
        if sent.is_ok() {
            export.wait().await?;
        }
        Ok((sent, received))
    }

    async fn assert_same(&self, snap: &str) -> Result<()> {
        let spec = format!("{}@{snap}", self.image);
        assert_eq!(
            self.b.image_checksum(&spec)?,
            self.a.image_checksum(&spec)?,
            "{spec}"
        );
        Ok(())
    }
}

#[tokio::test]
async fn delta_sync_replicates_resumes_after_a_cut_and_resends_a_corrupted_chunk() -> Result<()> {
    let sites = shared_ceph_sites().await?;
    let (a, b) = (&sites.a, &sites.b);
    let pool = pool_on_both(a, b, "dsync")?;
    let image = format!("{pool}/db");
    a.import_random_image(&pool, "db", 16)?;
    a.rbd(&["snap", "create", &format!("{image}@s1")])?;
    let dir = tempfile::tempdir()?;
    let sync = Sync {
        a,
        b,
        image: image.clone(),
        checkpoint: &dir.path().join("db.checkpoint"),
        chunk_size: 64 << 10,
        commit_every: 128 << 10,
        options: FrameOptions {
            checksum: ChecksumKind::Blake3,
            zstd_level: Some(1),
            bytes_per_second: None,
        },
    };

    // Full sync: B has no image yet; the receiver creates it.
    let (sent, received) = sync.attempt(None, "s1", |t| t).await?;
    let sent = sent?;
    assert!(received?.complete);
    assert_eq!(sent.changed_bytes, 16 << 20);
    sync.assert_same("s1").await?;

    // Cut halfway: the first attempt dies, the second resumes after the last commit.
    write_blocks_and_snap(a, &image, 16, 256, "s2").await?;
    let (sent, received) = sync.attempt(Some("s1"), "s2", |t| t.cut_at(600 << 10)).await?;
    assert!(
        sent.is_err() && received.is_err(),
        "the cut transfer fails on both ends"
    );
    let saved = Checkpoint::load(sync.checkpoint)
        .await?
        .context("a checkpoint was saved")?;
    assert!(saved.next_seq > 0 && !saved.complete, "{saved:?}");
    let (sent, received) = sync.attempt(Some("s1"), "s2", |t| t).await?;
    let sent = sent?;
    assert_eq!(sent.resumed_at, saved.next_seq);
    assert_eq!(sent.chunks_sent, sent.chunks - saved.next_seq);
    assert_eq!(sent.changed_bytes, (256 * BLOCK) as u64);
    assert!(received?.complete);
    sync.assert_same("s2").await?;

    // A flipped byte: the receiver names the chunk, the retry sends it again.
    write_blocks_and_snap(a, &image, 16, 64, "s3").await?;
    let (sent, received) = sync.attempt(Some("s2"), "s3", |t| t.flip_at(100 << 10)).await?;
    let rejected = sent.expect_err("the sender is told");
    let seq = rejected.seq().context("the rejection names a chunk")?;
    assert!(matches!(rejected, SyncError::Rejected { .. }), "{rejected:?}");
    assert_eq!(received.expect_err("the receiver refuses").seq(), Some(seq));
    let (sent, received) = sync.attempt(Some("s2"), "s3", |t| t).await?;
    let sent = sent?;
    assert!(sent.resumed_at <= seq, "chunk {seq} is sent again");
    assert!(received?.complete);
    sync.assert_same("s3").await?;

    // A transfer already complete sends nothing again.
    let (sent, received) = sync.attempt(Some("s2"), "s3", |t| t).await?;
    assert_eq!(sent?.chunks_sent, 0);
    assert!(received?.complete);
    Ok(())
}

#[tokio::test]
async fn backups_in_a_directory_restore_every_point_of_a_real_image() -> Result<()> {
    let sites = shared_ceph_sites().await?;
    let (a, b) = (&sites.a, &sites.b);
    let pool = pool_on_both(a, b, "backup")?;
    let image = format!("{pool}/vm");
    a.import_random_image(&pool, "vm", 8)?;
    a.rbd(&["snap", "create", &format!("{image}@s1")])?;
    write_blocks_and_snap(a, &image, 8, 128, "s2").await?;
    write_blocks_and_snap(a, &image, 8, 128, "s3").await?;

    let dir = tempfile::tempdir()?;
    let store = DirectoryStore::open(dir.path().join("store")).await?;
    for (from, to) in [(None, "s1"), (Some("s1"), "s2"), (Some("s2"), "s3")] {
        let (diff, export) = rbd(a).export_diff(&image, from, to).await?;
        let (near, far) = tokio::io::duplex(1 << 20);
        let mut target = store.target();
        let checkpoint = store.checkpoint_path();
        let options = FrameOptions::default();
        let (sent, received) = tokio::join!(
            send(&image, diff, 1 << 20, near, &options),
            receive(far, &mut target, &checkpoint, 4 << 20),
        );
        sent?;
        assert!(received?.complete);
        export.wait().await?;
    }

    for snap in ["s1", "s2", "s3"] {
        let out = dir.path().join(format!("{snap}.img"));
        store.restore(snap, &out).await?;
        assert_eq!(
            blake3::hash(&std::fs::read(&out)?).to_hex().to_string(),
            a.image_checksum(&format!("{image}@{snap}"))?,
            "restore of {snap} to a file"
        );
    }

    // The store's files are ordinary rbd diffs: `rbd import-diff` rebuilds the image on site B.
    let restored = format!("{pool}/restored");
    b.rbd(&["create", "--size", "8M", &restored])?;
    for file in store.chain("s3").await? {
        b.rbd(&[
            "import-diff",
            "--no-progress",
            file.to_str().context("utf-8")?,
            &restored,
        ])?;
    }
    assert_eq!(
        b.image_checksum(&format!("{restored}@s3"))?,
        a.image_checksum(&format!("{image}@s3"))?
    );

    store.retain(2).await?;
    assert_eq!(store.points().await?.len(), 2);
    let out = dir.path().join("s3-after-retention.img");
    store.restore("s3", &out).await?;
    assert_eq!(
        blake3::hash(&std::fs::read(&out)?).to_hex().to_string(),
        a.image_checksum(&format!("{image}@s3"))?
    );
    Ok(())
}

/// A receiver on site B's address serving TLS with a certificate of the test CA and one token.
struct TlsBed {
    dir: tempfile::TempDir,
    ca_pem: Vec<u8>,
    tls: TlsFiles,
    tokens: std::path::PathBuf,
}

impl TlsBed {
    fn new() -> Result<TlsBed> {
        let dir = tempfile::tempdir()?;
        let ca = Ca::new("cephdr sync test CA")?;
        let cert = ca.server("site-b", &["127.0.0.2"], &["site-b"])?;
        let tls = TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        };
        std::fs::write(&tls.cert, &cert.cert_pem)?;
        std::fs::write(&tls.key, &cert.key_pem)?;
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, "sync-token-1\n")?;
        Ok(TlsBed {
            ca_pem: ca.cert_pem().into_bytes(),
            dir,
            tls,
            tokens,
        })
    }

    /// Starts a receiver for `destination`; returns its address and the sender of its shutdown.
    async fn serve(&self, destination: Destination) -> Result<(String, tokio::sync::oneshot::Sender<()>)> {
        let listener =
            SyncListener::bind("127.0.0.2:0".parse()?, &self.tls, Tokens::load(&self.tokens)?).await?;
        let addr = listener.local_addr()?.to_string();
        let receiver = Receiver::new(destination, self.dir.path().join("state"), 1 << 20);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(receiver.serve(listener, async {
            let _ = stopped.await;
        }));
        Ok((addr, stop))
    }

    /// [`serve`](Self::serve) a receiver that writes into `pool` on `site`.
    async fn serve_rbd(
        &self,
        site: &CephSite,
        pool: &str,
    ) -> Result<(String, tokio::sync::oneshot::Sender<()>)> {
        self.serve(Destination::Rbd {
            rbd: rbd(site),
            pools: vec![pool.to_string()],
        })
        .await
    }

    fn sender(&self, site: &CephSite, peer: &str, token: &str) -> Sender {
        Sender {
            rbd: rbd(site),
            peer: peer.to_string(),
            server_name: "site-b".into(),
            ca_pem: Some(self.ca_pem.clone()),
            token: Sensitive(token.into()),
            options: FrameOptions {
                checksum: ChecksumKind::Crc32c,
                zstd_level: Some(1),
                bytes_per_second: None,
            },
            chunk_size: 1 << 20,
            attempts: 2,
        }
    }
}

#[tokio::test]
async fn sync_sidecars_replicate_over_one_tls_port_and_refuse_what_they_must() -> Result<()> {
    let sites = shared_ceph_sites().await?;
    let (a, b) = (&sites.a, &sites.b);
    let pool = pool_on_both(a, b, "tls")?;
    let image = format!("{pool}/app");
    a.import_random_image(&pool, "app", 8)?;
    a.rbd(&["snap", "create", &format!("{image}@s1")])?;
    let bed = TlsBed::new()?;
    let (addr, _stop) = bed.serve_rbd(b, &pool).await?;
    let sender = bed.sender(a, &addr, "sync-token-1");

    let full = sender.send(&image, None, "s1").await?;
    assert_eq!(full.changed_bytes, 8 << 20);
    write_blocks_and_snap(a, &image, 8, 100, "s2").await?;
    let delta = sender.send(&image, Some("s1"), "s2").await?;
    assert_eq!(delta.changed_bytes, (100 * BLOCK) as u64);
    for snap in ["s1", "s2"] {
        let spec = format!("{image}@{snap}");
        assert_eq!(b.image_checksum(&spec)?, a.image_checksum(&spec)?, "{spec}");
    }

    // A full transfer never lands on an image it did not create: it would leave stale bytes where the
    // source was never written.
    let again = sender.send(&image, None, "s1").await;
    let Err(SendError::Sync(SyncError::Rejected {
        permanent, reason, ..
    })) = again
    else {
        panic!("expected a refusal, got {again:?}");
    };
    assert!(permanent && reason.contains("exists"), "{reason}");

    // A copy written on B since s2 is not patched over: it would end up neither A's s3 nor its own data.
    write_blocks_and_snap(a, &image, 8, 10, "s3").await?;
    b.write_some(&image)?;
    let diverged = sender.send(&image, Some("s2"), "s3").await;
    let Err(SendError::Sync(SyncError::Rejected {
        permanent, reason, ..
    })) = diverged
    else {
        panic!("expected a refusal, got {diverged:?}");
    };
    assert!(permanent && reason.contains("written since s2"), "{reason}");

    let denied = bed
        .sender(a, &addr, "wrong-token")
        .send(&image, Some("s1"), "s2")
        .await;
    assert!(
        matches!(denied, Err(SendError::Transport(TransportError::Denied))),
        "{denied:?}"
    );
    let (elsewhere, _stop) = bed.serve_rbd(b, "another-pool").await?;
    let refused = bed
        .sender(a, &elsewhere, "sync-token-1")
        .send(&image, Some("s1"), "s2")
        .await;
    let Err(SendError::Sync(SyncError::Rejected {
        permanent, reason, ..
    })) = refused
    else {
        panic!("expected a refusal, got {refused:?}");
    };
    assert!(permanent && reason.contains("pool"), "{reason}");

    // The same port into a backup directory instead: the restore equals the snapshot.
    let backups = bed.dir.path().join("backups");
    let destination = Destination::Backup {
        dir: backups.clone(),
        offsite: None,
    };
    let (vault, _stop) = bed.serve(destination).await?;
    let to_vault = bed.sender(a, &vault, "sync-token-1");
    to_vault.send(&image, None, "s1").await?;
    to_vault.send(&image, Some("s1"), "s2").await?;
    let out = bed.dir.path().join("s2.img");
    backup_store(&backups, &image).await?.restore("s2", &out).await?;
    assert_eq!(
        blake3::hash(&std::fs::read(&out)?).to_hex().to_string(),
        a.image_checksum(&format!("{image}@s2"))?
    );
    Ok(())
}

/// The operator on the bed's sites, and a new pool on A holding image `app` of `mib` MiB of random data.
async fn operator_and_pool_on_a(
    prefix: &str,
    mib: usize,
) -> Result<(OperatorStack, &'static CephSites, String)> {
    let plane = shared_control_plane().await?;
    let sites = shared_ceph_sites().await?;
    let stack = OperatorStack::start(plane, [&sites.a, &sites.b], prefix).await?;
    let pool = unique_name(prefix);
    sites.a.ceph(&["osd", "pool", "create", &pool, "8"])?;
    sites.a.rbd(&["pool", "init", &pool])?;
    sites.a.import_random_image(&pool, "app", mib)?;
    Ok((stack, sites, pool))
}

/// An `RbdMirrorPool` `name` copying `pool` from site A to `copy_site` by delta-sync; `spec` adds fields.
async fn delta_sync_pool(
    stack: &OperatorStack,
    name: &str,
    pool: &str,
    copy_site: &str,
    spec: serde_json::Value,
) -> Result<()> {
    let mut manifest = json!({
        "metadata": {"name": name},
        "spec": {
            "pool": pool,
            "sites": [{"site": SITE_NAMES[0], "role": "primary"}, {"site": copy_site, "role": "secondary"}],
            "engine": "delta-sync",
        }
    });
    if let (Some(base), serde_json::Value::Object(extra)) = (manifest["spec"].as_object_mut(), spec) {
        base.extend(extra);
    }
    stack.ns.create::<RbdMirrorPool>(manifest).await.map(drop)
}

/// Tells `site`'s CephSite where its receiver listens, with the receiver's token and CA in a Secret.
async fn name_receiver(stack: &OperatorStack, site: &str, addr: &str, bed: &TlsBed) -> Result<()> {
    let secret_name = format!("{site}-sync");
    let secret = json!({
        "metadata": {"name": secret_name},
        "stringData": {"token": "sync-token-1", "ca.crt": String::from_utf8(bed.ca_pem.clone())?},
    });
    stack.ns.create::<Secret>(secret).await?;
    let sync = json!({"spec": {"sync": {
        "address": addr,
        "serverName": "site-b",
        "tokenSecretRef": {"name": secret_name, "key": "token"},
        "caSecretRef": {"name": secret_name, "key": "ca.crt"},
    }}});
    stack
        .ns
        .api::<api::CephSite>()
        .patch(site, &PatchParams::default(), &Patch::Merge(&sync))
        .await?;
    Ok(())
}

/// The newest synced snapshot of `image` in the pool's status, with its transfer's `fromSnapshot`, once it
/// differs from `previous`.
async fn next_synced(
    stack: &OperatorStack,
    name: &str,
    image: &str,
    previous: Option<&str>,
) -> Result<(String, TransferStatus)> {
    let pool = stack
        .ns
        .wait::<RbdMirrorPool>(name, "synced anew", Duration::from_secs(180), |pool| {
            let images = pool
                .status
                .as_ref()
                .map(|s| s.images.as_slice())
                .unwrap_or_default();
            images.iter().any(|i| {
                i.name == image
                    && i.synced_snapshot.is_some()
                    && i.synced_snapshot.as_deref() != previous
                    && i.last_transfer.as_ref().is_some_and(|t| {
                        Some(&t.to_snapshot) == i.synced_snapshot.as_ref() && t.duration_seconds.is_some()
                    })
            })
        })
        .await?;
    let status = pool.status.context("status")?;
    let row = status
        .images
        .into_iter()
        .find(|i| i.name == image)
        .context("image row")?;
    Ok((
        row.synced_snapshot.context("synced")?,
        row.last_transfer.context("transfer")?,
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_replicates_a_pool_by_delta_sync_and_ships_only_what_changed() -> Result<()> {
    let (stack, sites, pool) = operator_and_pool_on_a("dsync", 8).await?;
    let (a, b) = (&sites.a, &sites.b);

    // B's receiver, and its CephSite saying how to reach it, with its token and CA in a Secret.
    let bed = TlsBed::new()?;
    let (addr, _stop) = bed.serve_rbd(b, &pool).await?;
    name_receiver(&stack, SITE_NAMES[1], &addr, &bed).await?;

    delta_sync_pool(
        &stack,
        "dsync",
        &pool,
        SITE_NAMES[1],
        json!({"deltaSync": {"zstdLevel": 3}, "snapshotSchedules": [{"interval": "1m"}]}),
    )
    .await?;

    let (first, _) = next_synced(&stack, "dsync", "app", None).await?;
    let image = format!("{pool}/app");
    let at = |snap: &str| format!("{image}@{snap}");
    assert_eq!(
        b.image_checksum(&at(&first))?,
        a.image_checksum(&at(&first))?,
        "the full copy"
    );

    // Right after the next slot's (empty) delta, so the writes land inside one slot.
    let (base, _) = next_synced(&stack, "dsync", "app", Some(&first)).await?;
    write_blocks_and_snap(a, &image, 8, 50, "user-snap").await?;
    let (second, delta) = next_synced(&stack, "dsync", "app", Some(&base)).await?;
    assert_eq!(
        b.image_checksum(&at(&second))?,
        a.image_checksum(&at(&second))?,
        "the delta"
    );
    assert_eq!(
        delta.from_snapshot.as_deref(),
        Some(base.as_str()),
        "shipped from the common snapshot"
    );
    assert_eq!(
        delta.bytes_changed,
        Some((50 * BLOCK) as u64),
        "only the 50 blocks written"
    );
    let pool_status = stack
        .ns
        .api::<RbdMirrorPool>()
        .get("dsync")
        .await?
        .status
        .context("status")?;
    let ready = conditions::find(&pool_status.conditions, conditions::READY).context("Ready")?;
    assert_eq!(ready.status, "True", "{ready:?}");
    assert!(
        stack
            .metric(
                "cephdr_delta_sync_last_transfer_bytes",
                &[("image", "app"), ("kind", "changed")]
            )
            .is_some(),
        "the transfer's figures are metrics"
    );

    // The older snapshots are no longer needed once both hold the second; the user's own stays.
    wait_until("the older sync snapshots pruned on both sites", || {
        let listed = [a, b].map(|site| site.rbd(&["snap", "ls", &image, "--format", "json"]));
        let [on_a, on_b] = listed;
        let (on_a, on_b) = (on_a?, on_b?);
        let gone = |snap: &str| !on_a.contains(snap) && !on_b.contains(snap);
        Ok((gone(&first) && gone(&base)).then_some(()))
    })
    .await?;
    assert!(a.rbd(&["snap", "ls", &image])?.contains("user-snap"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_backs_a_pool_up_to_a_store_that_keeps_and_restores_its_newest_points() -> Result<()> {
    let (stack, sites, pool) = operator_and_pool_on_a("backup", 8).await?;
    let a = &sites.a;

    // The vault: a store directory, filled by a receiver that copies it to a bucket on B's RGW, and
    // served to the operator by an agent.
    let bed = TlsBed::new()?;
    let store = bed.dir.path().join("vault");
    let (offsite, bucket) = offsite_bucket(&sites.b).await?;
    let destination = Destination::Backup {
        dir: store.clone(),
        offsite: Some(offsite.clone()),
    };
    let (addr, _stop) = bed.serve(destination).await?;
    tokio::spawn(offsite.clone().run(store.clone(), Duration::from_secs(2)));
    let ca = Ca::new("vault agent CA")?;
    let token = random_hex(32)?;
    let backend = Arc::new(BackupStoreAgent::new("vault", &store));
    let agent = SiteAgent::start("vault", "127.0.0.2", backend, &ca, &token).await?;
    register_site(
        &stack.ns,
        "vault",
        json!({"url": agent.url}),
        &token,
        &ca.cert_pem(),
    )
    .await?;
    name_receiver(&stack, "vault", &addr, &bed).await?;

    delta_sync_pool(&stack, "backup", &pool, "vault", json!({"deltaSync": {"keepSnapshots": 2, "checksum": "blake3"}, "snapshotSchedules": [{"interval": "1m"}]})).await?;

    // Three points, each checked against A's snapshot while A still holds it (it keeps only the newest).
    let image = format!("{pool}/app");
    let mut points = Vec::new();
    for round in 0..3 {
        let previous = points.last().map(|(snap, _): &(String, String)| snap.as_str());
        let (snap, transfer) = next_synced(&stack, "backup", "app", previous).await?;
        assert_eq!(
            transfer.from_snapshot.as_deref(),
            previous,
            "round {round} continues the chain"
        );
        points.push((snap.clone(), a.image_checksum(&format!("{image}@{snap}"))?));
        write_blocks_and_snap(a, &image, 8, 20, &format!("user-{round}")).await?;
    }
    let store_of = backup_store(&store, &image).await?;
    wait_until("the store keeps the newest two points", || {
        let held = futures::executor::block_on(store_of.points())?;
        let snaps: Vec<String> = held.into_iter().map(|p| p.snap).collect();
        Ok((snaps == [points[1].0.clone(), points[2].0.clone()]).then_some(()))
    })
    .await?;
    for (snap, checksum) in &points[1..] {
        let out = bed.dir.path().join(format!("{snap}.img"));
        store_of.restore(snap, &out).await?;
        assert_eq!(
            &blake3::hash(&std::fs::read(&out)?).to_hex().to_string(),
            checksum,
            "{snap} restores"
        );
    }

    // The bucket holds the same two points and nothing else: the folded-away files were deleted there too.
    let local_files = |held: Vec<cephdr::sync::store::Point>| {
        let mut files: Vec<String> = held.into_iter().map(|p| p.file).collect();
        files.push("manifest.json".into());
        files.sort();
        files
    };
    let expected = local_files(store_of.points().await?);
    let prefix = format!("vault/{image}/");
    wait_until("the bucket holds exactly the store's files", || {
        let listed = futures::executor::block_on(bucket.list(prefix.clone(), None))?;
        let mut keys: Vec<String> = listed
            .into_iter()
            .flat_map(|page| page.contents)
            .map(|object| object.key.trim_start_matches(&prefix).to_string())
            .collect();
        keys.sort();
        Ok((keys == expected).then_some(()))
    })
    .await?;
    let report = offsite::last_report(&store)
        .await?
        .context("an offsite pass ran")?;
    assert_eq!(
        (report.error, report.behind.len()),
        (None, 0),
        "the copy is not behind"
    );
    // The bucket alone restores every point it keeps, checked against each file's BLAKE3.
    for (snap, checksum) in &points[1..] {
        let fetched = offsite
            .fetch(&image, snap, &bed.dir.path().join(format!("{snap}.fetched")))
            .await?;
        let out = bed.dir.path().join(format!("{snap}.from-s3.img"));
        fetched.restore(snap, &out).await?;
        assert_eq!(
            &blake3::hash(&std::fs::read(&out)?).to_hex().to_string(),
            checksum,
            "{snap} restores from the bucket"
        );
    }
    let site = stack.ns.api::<api::CephSite>().get("vault").await?;
    let status = site.status.context("vault status")?;
    assert!(
        conditions::is_true(&status.conditions, conditions::READY),
        "{status:?}"
    );
    Ok(())
}

/// A bucket on `site`'s RGW for offsite copies under the prefix `vault`, with a user of its own: the
/// receiver's [`Offsite`] and the test's own client of the bucket.
async fn offsite_bucket(site: &'static CephSite) -> Result<(Offsite, Box<s3::Bucket>)> {
    let endpoint = tokio::task::spawn_blocking(move || site.start_rgw(None)).await??;
    let (access, secret) = site.create_s3_user(&unique_name("vault"), &[])?;
    let (access, secret) = (Sensitive(access), Sensitive(secret));
    let location = S3Location {
        endpoint: endpoint.clone(),
        region: "default".into(),
        bucket: unique_name("offsite"),
        prefix: "vault".into(),
    };
    let credentials = s3::creds::Credentials::new(Some(&access.0), Some(&secret.0), None, None, None)?;
    let region = s3::Region::Custom {
        region: location.region.clone(),
        endpoint,
    };
    let bucket = s3::Bucket::create_with_path_style(
        &location.bucket,
        region,
        credentials,
        s3::BucketConfiguration::default(),
    )
    .await?
    .bucket;
    Ok((Offsite::new(location, &access, &secret)?, bucket))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_managed_transfer_survives_a_cut_link_and_a_corrupted_byte() -> Result<()> {
    let (stack, sites, pool) = operator_and_pool_on_a("dfault", 32).await?;
    let (a, b) = (&sites.a, &sites.b);
    let bed = TlsBed::new()?;
    let (addr, _stop) = bed.serve_rbd(b, &pool).await?;
    // The first connection breaks after 12 MiB; in the second one byte flips (TLS refuses the record and
    // the connection dies); the third passes.
    let faults = vec![
        LinkFault {
            cut_at: Some(12 << 20),
            flip_at: None,
        },
        LinkFault {
            cut_at: None,
            flip_at: Some(10 << 20),
        },
    ];
    let link = FaultyLink::start("127.0.0.2", addr.parse()?, faults).await?;
    name_receiver(&stack, SITE_NAMES[1], &link.addr.to_string(), &bed).await?;
    delta_sync_pool(
        &stack,
        "dfault",
        &pool,
        SITE_NAMES[1],
        json!({"snapshotSchedules": [{"interval": "1h"}]}),
    )
    .await?;

    let (snap, transfer) = next_synced(&stack, "dfault", "app", None).await?;
    let spec = format!("{pool}/app@{snap}");
    assert_eq!(b.image_checksum(&spec)?, a.image_checksum(&spec)?, "{spec}");
    let (changed, shipped) = (
        transfer.bytes_changed.context("changed")?,
        transfer.bytes_shipped.context("shipped")?,
    );
    assert_eq!(changed, 32 << 20);
    assert!(
        shipped < changed * 3 / 4,
        "the last attempt resumed from the receiver's checkpoint: {shipped} of {changed} bytes shipped"
    );
    Ok(())
}

/// The operator and RbdMirrorPool `name` replicating image `app` of a new pool from A to B by delta-sync
/// each minute, with a receiver on each site (each with its own state directory), so either can be the
/// copy.
struct TwoWay {
    name: String,
    stack: OperatorStack,
    sites: &'static CephSites,
    pool: String,
    bed_b: TlsBed,
    addr_b: String,
    _receivers: [tokio::sync::oneshot::Sender<()>; 2],
    _bed_a: TlsBed,
}

impl TwoWay {
    async fn start(name: &str) -> Result<TwoWay> {
        let (stack, sites, pool) = operator_and_pool_on_a(name, 8).await?;
        let (bed_a, bed_b) = (TlsBed::new()?, TlsBed::new()?);
        let (addr_a, stop_a) = bed_a.serve_rbd(&sites.a, &pool).await?;
        let (addr_b, stop_b) = bed_b.serve_rbd(&sites.b, &pool).await?;
        name_receiver(&stack, SITE_NAMES[0], &addr_a, &bed_a).await?;
        name_receiver(&stack, SITE_NAMES[1], &addr_b, &bed_b).await?;
        let schedule = json!({"snapshotSchedules": [{"interval": "1m"}]});
        delta_sync_pool(&stack, name, &pool, SITE_NAMES[1], schedule).await?;
        Ok(TwoWay {
            name: name.to_string(),
            stack,
            sites,
            pool,
            bed_b,
            addr_b,
            _receivers: [stop_a, stop_b],
            _bed_a: bed_a,
        })
    }

    /// Runs FailoverRequest `request` of `action` to B; it completes, and the pool records B as primary.
    async fn fail_over_to_b(&self, request: &str, action: &str) -> Result<api::FailoverRequestStatus> {
        let done = self
            .stack
            .failover(request, action, SITE_NAMES[1], &self.name)
            .await?;
        let status = done.status.context("request status")?;
        anyhow::ensure!(
            status.phase == api::FailoverPhase::Completed,
            "{request}: {:?}",
            status.conditions
        );
        let pool = self.stack.ns.api::<RbdMirrorPool>().get(&self.name).await?;
        let recorded = pool
            .annotations()
            .get(api::rbd_mirror_pool::PRIMARY_SITE_ANNOTATION);
        anyhow::ensure!(
            recorded.map(String::as_str) == Some(SITE_NAMES[1]),
            "recorded {recorded:?}"
        );
        Ok(status)
    }

    /// Waits until B, the primary, has a delta refused on A because A was written since its base; then A's
    /// head still holds what A's snapshot `own` holds.
    async fn refused_on_a(&self, own: &str) -> Result<()> {
        self.stack
            .ns
            .wait::<RbdMirrorPool>(
                &self.name,
                "B's delta refused on A",
                Duration::from_secs(180),
                |pool| {
                    pool.status.as_ref().is_some_and(|s| {
                        s.primary_site.as_deref() == Some(SITE_NAMES[1])
                            && s.images.iter().any(|i| {
                                i.last_transfer
                                    .as_ref()
                                    .and_then(|t| t.error.as_deref())
                                    .is_some_and(|e| e.contains("written since"))
                            })
                    })
                },
            )
            .await?;
        let image = format!("{}/app", self.pool);
        let a = &self.sites.a;
        anyhow::ensure!(
            a.image_checksum(&image)? == a.image_checksum(&format!("{image}@{own}"))?,
            "A's head lost its own write"
        );
        Ok(())
    }
}

/// A planned FailoverRequest on a delta-sync pool: A's last writes reach B in a final snapshot, the pool
/// then records B as its primary, and the operator ships B's writes back to A as a delta from that
/// snapshot (the pair shares one snapshot series). A write on A after the handover is never merged: A's
/// receiver refuses the next delta, and the pool says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_planned_failover_hands_a_delta_sync_pool_over_and_the_new_primary_ships_deltas_back() -> Result<()>
{
    let bed = TwoWay::start("handover").await?;
    let (stack, a, b) = (&bed.stack, &bed.sites.a, &bed.sites.b);
    let image = format!("{}/app", bed.pool);
    let at = |snap: &str| format!("{image}@{snap}");
    next_synced(stack, "handover", "app", None).await?;

    // Written after the last scheduled sync: only the failover's final snapshot carries it to B.
    write_blocks_and_snap(a, &image, 8, 40, "last-writes-on-a").await?;
    let status = bed.fail_over_to_b("to-b", "planned").await?;
    assert!(status.steps.iter().any(|row| row.name == "final-snapshot"));
    assert_eq!(
        b.image_checksum(&image)?,
        a.image_checksum(&at("last-writes-on-a"))?,
        "A's last writes are on B"
    );
    let handed_over = newest_sync_snapshot(b, &image)?;

    write_blocks_and_snap(b, &image, 8, 30, "written-on-b").await?;
    let (back, transfer) = next_synced(stack, "handover", "app", Some(&handed_over)).await?;
    // From a snapshot both hold (A prunes it once it holds the new one): the handed-over one, or a
    // later one of A's that reached B first.
    assert!(
        transfer.from_snapshot.is_some(),
        "B ships a delta, not the whole image"
    );
    assert_eq!(a.image_checksum(&at(&back))?, b.image_checksum(&at(&back))?);
    let status = stack
        .ns
        .api::<RbdMirrorPool>()
        .get("handover")
        .await?
        .status
        .context("status")?;
    assert_eq!(status.primary_site.as_deref(), Some(SITE_NAMES[1]));

    // A written after the handover: the next delta from B is refused, not merged into A's writes.
    write_blocks_and_snap(a, &image, 8, 5, "written-on-a").await?;
    bed.refused_on_a("written-on-a").await?;
    Ok(())
}

/// An emergency FailoverRequest on a delta-sync pool whose primary's agent is gone: B's copy becomes the
/// primary at the last point it fully received, with the loss window reported. A stale A retrying the
/// transfer of a point B never received is refused by B's receiver; and B's deltas are refused on A, which
/// holds writes of its own, until a person decides what to keep.
#[tokio::test(flavor = "multi_thread")]
async fn an_emergency_promotes_a_delta_sync_copy_and_the_receivers_keep_the_histories_apart() -> Result<()> {
    let mut bed = TwoWay::start("emergency").await?;
    let sites = bed.sites;
    let (a, b) = (&sites.a, &sites.b);
    let image = format!("{}/app", bed.pool);
    let at = |snap: &str| format!("{image}@{snap}");
    let (synced, _) = next_synced(&bed.stack, "emergency", "app", None).await?;

    // A acknowledges a write and takes a snapshot B never receives, then its agent goes away.
    bed.stack.agents[0].stop().await;
    write_blocks_and_snap(a, &image, 8, 20, "lost-on-a").await?;
    let unshipped = cephdr::agent::delta_sync::snapshot_name(
        SITE_NAMES[0],
        SITE_NAMES[1],
        k8s_openapi::jiff::Timestamp::now(),
    );
    a.rbd(&["snap", "create", &at(&unshipped)])?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = bed.fail_over_to_b("a-lost", "emergency").await?;
    assert!(status.data_loss_window_seconds.is_some(), "{status:?}");
    assert_eq!(
        b.image_checksum(&image)?,
        a.image_checksum(&at(&synced))?,
        "B holds the last point it received, without A's later write"
    );

    // A's transfer of that snapshot, as a stale A would retry it: B went on without it.
    let refused = bed
        .bed_b
        .sender(a, &bed.addr_b, "sync-token-1")
        .send(&image, Some(&synced), &unshipped)
        .await;
    let Err(SendError::Sync(SyncError::Rejected { reason, .. })) = refused else {
        panic!("expected a refusal, got {refused:?}");
    };
    assert!(reason.contains("went on without this sender"), "{reason}");

    // A's agent is back; B's next delta is refused on A, which holds writes of its own.
    bed.stack.agents[0].restart().await?;
    bed.refused_on_a("lost-on-a").await?;
    Ok(())
}

/// The newest cephdr sync snapshot of `image` on `site`.
fn newest_sync_snapshot(site: &CephSite, image: &str) -> Result<String> {
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&site.rbd(&["snap", "ls", "--format", "json", image])?)?;
    listed
        .iter()
        .filter_map(|snap| snap["name"].as_str())
        .filter_map(|name| Some((cephdr::agent::delta_sync::snapshot_time(name)?, name)))
        .max()
        .map(|(_, name)| name.to_string())
        .context("no sync snapshot")
}
