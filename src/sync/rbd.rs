//! Both ends on RBD through the `rbd` CLI: the source reads `rbd export-diff` as it streams, the
//! [`RbdImage`] target feeds chunks to `rbd import-diff`.
//!
//! `rbd import-diff -` keeps one write in flight when it reads stdin (its throttle is 1 for fd 0),
//! which makes a pipe of small random writes slow. Given any other path it keeps
//! `rbd_concurrent_management_ops` writes in flight, and `/dev/stdin` is another path to the same
//! pipe: the target runs `rbd import-diff /dev/stdin` (measured on Pacific 16.2.15; it seeks only for
//! progress, which `--no-progress` turns off, and for unknown tags, which cephdr never sends).
//!
//! Applied writes are durable when the `rbd import-diff` process that received them exited 0, so the
//! target runs one process per commit interval: each starts with the from-snap (Ceph checks it exists)
//! and the size, carries the chunks as they come, and ends at the commit. The to-snap is created by a
//! last `rbd import-diff` of no extents, which also refuses a to-snap that already exists.

use std::{path::PathBuf, process::Stdio};

use async_trait::async_trait;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, BufWriter},
    process::{Child, ChildStdin, ChildStdout, Command},
    task::JoinHandle,
};

use super::{
    checkpoint::{Checkpoint, Transfer},
    diff::{encode_record, DiffReader, Record, Version, BANNER_V1},
    frame::Chunk,
    session::{Target, TargetError},
};
use crate::agent::delta_sync::{is_snapshot_for, series_of, snapshot_time};

/// How to run `rbd` against one cluster.
#[derive(Debug, Clone, Default)]
pub struct RbdCli {
    pub conf: Option<PathBuf>,
    pub client_id: Option<String>,
    pub keyring: Option<PathBuf>,
    /// Writes `rbd import-diff` keeps in flight (`rbd_concurrent_management_ops`); Ceph's default
    /// (10) when unset.
    pub concurrency: Option<u32>,
}

impl RbdCli {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("rbd");
        if let Some(conf) = &self.conf {
            command.arg("-c").arg(conf).env("CEPH_CONF", conf);
        }
        if let Some(id) = &self.client_id {
            command.arg(format!("--id={id}"));
        }
        if let Some(keyring) = &self.keyring {
            command.arg("--keyring").arg(keyring);
        }
        if let Some(ops) = self.concurrency {
            command.arg(format!("--rbd-concurrent-management-ops={ops}"));
        }
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs `rbd args...` to completion; `Ok(false)` when it exited with `ENOENT` (2).
    async fn succeeds(&self, args: &[&str]) -> Result<bool, TargetError> {
        let out = self.command(args).output().await?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(2) => Ok(false),
            _ => Err(failed(args, &out.status, &out.stderr)),
        }
    }

    /// The newest snapshot of the image in the sync snapshot series `series`.
    async fn newest_sync_snapshot(&self, image: &str, series: &str) -> Result<Option<String>, TargetError> {
        let listed = self.json_list(&["snap", "ls", image, "--format", "json"]).await?;
        Ok(listed
            .iter()
            .filter_map(|snap| snap["name"].as_str())
            .filter(|name| is_snapshot_for(name, series))
            .max_by_key(|name| snapshot_time(name))
            .map(str::to_string))
    }

    /// Whether the image's head differs from its snapshot `snap` (`rbd diff --from-snap` lists anything).
    pub async fn changed_since(&self, image: &str, snap: &str) -> Result<bool, TargetError> {
        let extents = self
            .json_list(&["diff", "--from-snap", snap, image, "--format", "json"])
            .await?;
        Ok(!extents.is_empty())
    }

    /// Runs `rbd args...`, which prints a JSON list.
    async fn json_list(&self, args: &[&str]) -> Result<Vec<serde_json::Value>, TargetError> {
        let mut command = self.command(args);
        command.stdout(Stdio::piped());
        let out = command.output().await?;
        if !out.status.success() {
            return Err(failed(args, &out.status, &out.stderr));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            TargetError::Io(std::io::Error::other(format!(
                "rbd {} printed no JSON list: {e}",
                args[..2].join(" ")
            )))
        })
    }

    /// Starts `rbd export-diff [--from-snap FROM] IMAGE@TO -` and reads its stream.
    pub async fn export_diff(
        &self,
        image: &str,
        from_snap: Option<&str>,
        to_snap: &str,
    ) -> Result<(DiffReader<ChildStdout>, Process), TargetError> {
        let spec = format!("{image}@{to_snap}");
        let mut args = vec!["export-diff", "--no-progress"];
        if let Some(from) = from_snap {
            args.extend(["--from-snap", from]);
        }
        args.extend([spec.as_str(), "-"]);
        let mut command = self.command(&args);
        command.stdout(Stdio::piped());
        let mut process = Process::spawn(command, &args)?;
        let stdout = process.child.stdout.take().ok_or_else(|| no_pipe("stdout"))?;
        match DiffReader::new(stdout).await {
            Ok(reader) => Ok((reader, process)),
            Err(source) => {
                // The banner did not come: the reason is in rbd's stderr.
                process.wait().await?;
                Err(TargetError::Io(std::io::Error::other(source)))
            }
        }
    }
}

/// A running `rbd` whose stderr is collected while it runs.
pub struct Process {
    child: Child,
    args: Vec<String>,
    stderr: JoinHandle<Vec<u8>>,
}

impl Process {
    fn spawn(mut command: Command, args: &[&str]) -> Result<Self, TargetError> {
        let mut child = command.spawn()?;
        let mut pipe = child.stderr.take().ok_or_else(|| no_pipe("stderr"))?;
        let stderr = tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf).await;
            buf
        });
        Ok(Process {
            child,
            args: args.iter().map(|a| a.to_string()).collect(),
            stderr,
        })
    }

    /// Waits for the exit; an error carries rbd's stderr.
    pub async fn wait(mut self) -> Result<(), TargetError> {
        let status = self.child.wait().await?;
        let stderr = self.stderr.await.unwrap_or_default();
        if status.success() {
            Ok(())
        } else {
            let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
            Err(failed(&args, &status, &stderr))
        }
    }
}

fn failed(args: &[&str], status: &std::process::ExitStatus, stderr: &[u8]) -> TargetError {
    TargetError::Command {
        command: format!("rbd {}", args.join(" ")),
        status: status.to_string(),
        stderr: String::from_utf8_lossy(stderr).trim().to_string(),
    }
}

fn no_pipe(which: &str) -> TargetError {
    TargetError::Io(std::io::Error::other(format!(
        "rbd started without its {which} pipe"
    )))
}

/// The target position an [`RbdImage`] records: the image exists because this transfer began.
const CREATED: u64 = 1;

/// An RBD image that receives transfers through `rbd import-diff`.
pub struct RbdImage {
    rbd: RbdCli,
    image: String,
    transfer: Option<Transfer>,
    import: Option<(Process, BufWriter<ChildStdin>)>,
}

impl RbdImage {
    /// The image `pool/name` on the cluster `rbd` reaches.
    pub fn new(rbd: RbdCli, image: impl Into<String>) -> Self {
        RbdImage {
            rbd,
            image: image.into(),
            transfer: None,
            import: None,
        }
    }

    fn transfer(&self) -> Result<&Transfer, TargetError> {
        self.transfer
            .as_ref()
            .ok_or_else(|| TargetError::Io(std::io::Error::other("apply before begin")))
    }

    /// Starts an `rbd import-diff` of this transfer and writes its header; `to_snap` only for the
    /// import that creates the snapshot.
    async fn start_import(
        &self,
        to_snap: Option<&str>,
    ) -> Result<(Process, BufWriter<ChildStdin>), TargetError> {
        let transfer = self.transfer()?;
        let args = ["import-diff", "--no-progress", "/dev/stdin", self.image.as_str()];
        let mut command = self.rbd.command(&args);
        command.stdin(Stdio::piped());
        let mut process = Process::spawn(command, &args)?;
        let stdin = process.child.stdin.take().ok_or_else(|| no_pipe("stdin"))?;
        let mut header = BANNER_V1.to_vec();
        let records = [
            transfer.from_snap.clone().map(Record::FromSnap),
            to_snap.map(|s| Record::ToSnap(s.to_string())),
            Some(Record::Size(transfer.size)),
        ];
        for record in records.iter().flatten() {
            encode_record(Version::V1, record, &mut header)?;
        }
        let mut stdin = BufWriter::with_capacity(1 << 20, stdin);
        if stdin.write_all(&header).await.is_err() {
            process.wait().await?;
            return Err(TargetError::Io(std::io::ErrorKind::BrokenPipe.into()));
        }
        Ok((process, stdin))
    }

    /// Ends the running import, if any, and waits until rbd applied all of it.
    async fn end_import(&mut self) -> Result<(), TargetError> {
        let Some((process, mut stdin)) = self.import.take() else {
            return Ok(());
        };
        let ended = async {
            stdin.write_all(b"e").await?;
            stdin.flush().await?;
            stdin.shutdown().await
        }
        .await;
        drop(stdin);
        process.wait().await?;
        Ok(ended?)
    }
}

#[async_trait]
impl Target for RbdImage {
    async fn begin(&mut self, checkpoint: &Checkpoint) -> Result<(), TargetError> {
        let transfer = &checkpoint.transfer;
        self.transfer = Some(transfer.clone());
        if let Some(from) = &transfer.from_snap {
            // A copy holding a snapshot of the series from the delta's end or later went on without this
            // sender: it was promoted (an emergency takes a snapshot), and the sender is a stale old
            // primary, say retrying a transfer it began before it went away.
            if let Some(series) = series_of(&transfer.to_snap) {
                let newest = self.rbd.newest_sync_snapshot(&self.image, &series).await?;
                let newer = newest.filter(|snap| {
                    *snap != transfer.to_snap && snapshot_time(snap) >= snapshot_time(&transfer.to_snap)
                });
                if let Some(newer) = newer {
                    return Err(TargetError::Superseded {
                        image: self.image.clone(),
                        to: transfer.to_snap.clone(),
                        newer,
                    });
                }
            }
            // `rbd import-diff` checks that the image holds the from-snap, not that its head still equals
            // it: a copy written since would end up neither the source's snapshot nor its own. A resumed
            // transfer has changed the head itself, so only a fresh one can be checked.
            if checkpoint.next_seq == 0 && self.rbd.changed_since(&self.image, from).await? {
                return Err(TargetError::Diverged {
                    image: self.image.clone(),
                    since: from.clone(),
                });
            }
            return Ok(());
        }
        // A full diff leaves out what was never written, so it is applied only to an image it created:
        // the receiver's commit after `begin` records that (position 1) before anything is written.
        let exists = self.rbd.succeeds(&["info", &self.image]).await?;
        if exists && checkpoint.target_position != CREATED {
            return Err(TargetError::Exists(self.image.clone()));
        }
        let size = format!("{}B", transfer.size);
        if !exists
            && !self
                .rbd
                .succeeds(&["create", "--size", &size, &self.image])
                .await?
        {
            let missing = format!("cannot create {}: its pool does not exist", self.image);
            return Err(TargetError::Io(std::io::Error::other(missing)));
        }
        Ok(())
    }

    async fn apply(&mut self, chunk: &Chunk) -> Result<(), TargetError> {
        if self.import.is_none() {
            self.import = Some(self.start_import(None).await?);
        }
        if let Some((_, stdin)) = &mut self.import {
            if stdin.write_all(&chunk.records).await.is_err() {
                // rbd stopped reading: its exit status and stderr say why.
                self.end_import().await?;
                return Err(TargetError::Io(std::io::ErrorKind::BrokenPipe.into()));
            }
        }
        Ok(())
    }

    async fn commit(&mut self) -> Result<u64, TargetError> {
        self.end_import().await?;
        Ok(CREATED)
    }

    async fn finish(&mut self) -> Result<(), TargetError> {
        self.end_import().await?;
        let to_snap = self.transfer()?.to_snap.clone();
        // A receiver stopped between creating the snapshot and saving its checkpoint finds it made.
        if self
            .rbd
            .succeeds(&["info", &format!("{}@{to_snap}", self.image)])
            .await?
        {
            return Ok(());
        }
        self.import = Some(self.start_import(Some(&to_snap)).await?);
        self.end_import().await
    }
}
