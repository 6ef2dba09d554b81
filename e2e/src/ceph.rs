//! Real single-OSD Ceph clusters from Debian's packages, each on its own loopback address.
//! Facts behind the settings: `shared/notes/ceph-on-loopback.md` (measured on this machine kind).

use std::{
    collections::BTreeMap,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::process::{free_port, run, scratch_dir, tail, wait_for, Daemon};

/// Debian packages the sites need, named in the error when a binary is missing.
pub const CEPH_PACKAGES: &str = "ceph-mon ceph-mgr ceph-osd radosgw rbd-mirror ceph-common";

/// One Ceph cluster: mon, mgr and one bluestore OSD on a sparse file, plus RGW and rbd-mirror on request.
pub struct CephSite {
    pub name: String,
    pub ip: String,
    pub dir: PathBuf,
    pub conf: PathBuf,
    pub keyring: PathBuf,
    pub fsid: String,
    /// `[v2:ip:port,v1:ip:port]`, as `mon_host` and bootstrap tokens name it.
    pub mon_host: String,
    daemons: Mutex<BTreeMap<String, Running>>,
    /// Daemons `stop_daemon` ended, to start again with `restart_stopped`.
    stopped: Mutex<BTreeMap<String, Launch>>,
}

struct Running {
    daemon: Daemon,
    log: PathBuf,
    launch: Launch,
}

/// How a daemon was started: its command line and environment.
struct Launch {
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, Option<OsString>)>,
}

impl Launch {
    fn of(command: &Command) -> Launch {
        Launch {
            program: command.get_program().to_owned(),
            args: command.get_args().map(ToOwned::to_owned).collect(),
            envs: command
                .get_envs()
                .map(|(k, v)| (k.to_owned(), v.map(ToOwned::to_owned)))
                .collect(),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        for (key, value) in &self.envs {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command
    }
}

/// The bed's two sites: A on 127.0.0.1, B on 127.0.0.2.
pub struct CephSites {
    pub a: CephSite,
    pub b: CephSite,
}

impl CephSites {
    /// Starts both sites in parallel.
    pub fn start() -> Result<CephSites> {
        let b = std::thread::spawn(|| CephSite::start("b", "127.0.0.2"));
        let a = CephSite::start("a", "127.0.0.1")?;
        let b = b
            .join()
            .map_err(|_| anyhow::anyhow!("site b start-up panicked"))??;
        Ok(CephSites { a, b })
    }

    /// A guard for a test that stops daemons: when it drops, even as a failed test unwinds, every daemon
    /// still stopped starts again, so the tests after it find both sites whole.
    pub fn outage(&self) -> Outage<'_> {
        Outage(self)
    }

    /// After a failover of image `spec` to B: exactly one primary, on B, holding what A's head held
    /// (`acknowledged`, its checksum before the failover); B accepts writes and A refuses them.
    pub fn assert_moved_to_b(&self, spec: &str, acknowledged: &str) -> Result<()> {
        anyhow::ensure!(self.b.is_primary(spec)?, "{spec} is not primary on B");
        anyhow::ensure!(!self.a.is_primary(spec)?, "{spec} is still primary on A");
        let on_b = self.b.image_checksum(spec)?;
        anyhow::ensure!(
            on_b == acknowledged,
            "acknowledged writes lost: B holds {on_b}, A had {acknowledged}"
        );
        self.b.write_some(spec).context("B refuses writes")?;
        anyhow::ensure!(
            self.a.write_some(spec).is_err(),
            "A accepts writes after demotion"
        );
        Ok(())
    }
}

pub struct Outage<'a>(&'a CephSites);

impl Drop for Outage<'_> {
    fn drop(&mut self) {
        for site in [&self.0.a, &self.0.b] {
            if let Err(error) = site.restart_stopped() {
                eprintln!(
                    "site {}: restarting its stopped daemons failed: {error:#}",
                    site.name
                );
            }
        }
    }
}

pub fn require_ceph_binaries() -> Result<()> {
    for tool in [
        "ceph-mon",
        "ceph-mgr",
        "ceph-osd",
        "radosgw",
        "rbd-mirror",
        "ceph",
        "rbd",
        "radosgw-admin",
        "ceph-authtool",
        "monmaptool",
    ] {
        let found = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            bail!("{tool} is not installed: the test bed needs Debian's Ceph packages (apt-get install {CEPH_PACKAGES})");
        }
    }
    Ok(())
}

impl CephSite {
    /// Creates and starts a cluster named `name` on `ip`; returns once its OSD is up. Blocking.
    pub fn start(name: &str, ip: &str) -> Result<CephSite> {
        require_ceph_binaries()?;
        let dir = scratch_dir(Path::new("/tmp"), &format!("ceph-{name}"))?;
        for sub in ["run", "log", "mon/a", "mgr/x", "osd"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let fsid = run(&mut Command::new("uuidgen"))?.trim().to_string();
        let mon_host = format!("[v2:{ip}:{},v1:{ip}:{}]", free_port(ip)?, free_port(ip)?);
        let conf = dir.join("ceph.conf");
        let keyring = dir.join("keyring");
        fs::write(&conf, ceph_conf(&dir, &fsid, &mon_host, ip))?;

        let site = CephSite {
            name: name.to_string(),
            ip: ip.to_string(),
            dir: dir.clone(),
            conf,
            keyring: keyring.clone(),
            fsid: fsid.clone(),
            mon_host: mon_host.clone(),
            daemons: Mutex::new(BTreeMap::new()),
            stopped: Mutex::new(BTreeMap::new()),
        };
        // Every key goes into the keyring before `ceph-mon --mkfs`, which imports them all.
        let k = keyring.display().to_string();
        run(Command::new("ceph-authtool").args([
            "--create-keyring",
            &k,
            "--gen-key",
            "-n",
            "mon.",
            "--cap",
            "mon",
            "allow *",
        ]))?;
        for (entity, caps) in [
            (
                "client.admin",
                &[
                    "mon", "allow *", "osd", "allow *", "mgr", "allow *", "mds", "allow *",
                ][..],
            ),
            (
                "mgr.x",
                &["mon", "allow profile mgr", "osd", "allow *", "mds", "allow *"],
            ),
            (
                &format!("client.rgw.{name}"),
                &["mon", "allow rw", "osd", "allow rwx", "mgr", "allow rw"],
            ),
            (
                &format!("client.rbd-mirror.{name}"),
                &["mon", "profile rbd-mirror", "osd", "profile rbd"],
            ),
        ] {
            let mut cmd = Command::new("ceph-authtool");
            cmd.args([&k, "--gen-key", "-n", entity]);
            for pair in caps.chunks(2) {
                cmd.args(["--cap", pair[0], pair[1]]);
            }
            run(&mut cmd)?;
        }
        let monmap = dir.join("monmap").display().to_string();
        run(
            Command::new("monmaptool").args(["--create", "--fsid", &fsid, "--addv", "a", &mon_host, &monmap])
        )?;
        run(&mut site.command_with(
            "ceph-mon",
            &["--mkfs", "-i", "a", "--monmap", &monmap, "--keyring", &k],
        ))?;
        site.start_daemon("mon.a", site.command_with("ceph-mon", &["-f", "-i", "a"]))?;
        site.start_daemon("mgr.x", site.command_with("ceph-mgr", &["-f", "-i", "x"]))?;

        let uuid = run(&mut Command::new("uuidgen"))?.trim().to_string();
        let id = site.ceph(&["osd", "new", &uuid])?.trim().to_string();
        fs::create_dir_all(dir.join("osd").join(&id))?;
        run(&mut site.command_with(
            "ceph-osd",
            &[
                "-i",
                &id,
                "--mkfs",
                "--osd-uuid",
                &uuid,
                "--mkkey",
                "--no-mon-config",
            ],
        ))?;
        let osd_keyring = dir.join(format!("osd/{id}/keyring")).display().to_string();
        site.ceph(&[
            "auth",
            "add",
            &format!("osd.{id}"),
            "osd",
            "allow *",
            "mon",
            "allow profile osd",
            "mgr",
            "allow profile osd",
            "-i",
            &osd_keyring,
        ])?;
        site.start_daemon(
            &format!("osd.{id}"),
            site.command_with("ceph-osd", &["-f", "-i", &id]),
        )?;
        site.wait_osd_up()?;
        Ok(site)
    }

    fn wait_osd_up(&self) -> Result<()> {
        wait_for(
            &format!("site {}: its OSD up", self.name),
            Duration::from_secs(60),
            Duration::from_millis(500),
            || {
                self.ensure_daemons_running()?;
                let stat: serde_json::Value =
                    serde_json::from_str(&self.ceph(&["osd", "stat", "-f", "json"])?)?;
                Ok((stat["num_up_osds"].as_u64() == Some(1)).then_some(()))
            },
        )
    }

    /// `program -c <this site's conf>`, for the Ceph CLIs.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg("-c").arg(&self.conf).env("CEPH_CONF", &self.conf);
        cmd
    }

    /// `program -c <conf> args...`.
    fn command_with(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = self.command(program);
        cmd.args(args);
        cmd
    }

    pub fn ceph(&self, args: &[&str]) -> Result<String> {
        run(self.command_with("ceph", &["--connect-timeout=30"]).args(args))
            .with_context(|| format!("site {}", self.name))
    }

    pub fn rbd(&self, args: &[&str]) -> Result<String> {
        run(&mut self.command_with("rbd", args)).with_context(|| format!("site {}", self.name))
    }

    pub fn radosgw_admin(&self, args: &[&str]) -> Result<String> {
        run(&mut self.command_with("radosgw-admin", args)).with_context(|| format!("site {}", self.name))
    }

    /// Creates an RGW user `uid` (`extra` adds e.g. `--rgw-zone`) and returns its access and secret key.
    pub fn create_s3_user(&self, uid: &str, extra: &[&str]) -> Result<(String, String)> {
        let uid_arg = format!("--uid={uid}");
        let mut args = vec!["user", "create", uid_arg.as_str(), "--display-name", uid];
        args.extend_from_slice(extra);
        let user: serde_json::Value = serde_json::from_str(&self.radosgw_admin(&args)?)?;
        let key = |name: &str| {
            user["keys"][0][name]
                .as_str()
                .map(str::to_string)
                .with_context(|| format!("{name} of the new user {uid}"))
        };
        Ok((key("access_key")?, key("secret_key")?))
    }

    fn start_daemon(&self, name: &str, command: Command) -> Result<()> {
        let log = self.dir.join("log").join(format!("{name}.out"));
        let launch = Launch::of(&command);
        let daemon = Daemon::start(&format!("site {} {name}", self.name), command, &log)?;
        let running = Running { daemon, log, launch };
        self.stopped.lock().unwrap().remove(name);
        self.daemons.lock().unwrap().insert(name.to_string(), running);
        Ok(())
    }

    /// Fails, with the log tail, if any daemon of this site has exited.
    pub fn ensure_daemons_running(&self) -> Result<()> {
        for running in self.daemons.lock().unwrap().values() {
            running.daemon.ensure_running(&running.log)?;
        }
        Ok(())
    }

    /// Starts RGW (beast on a free loopback port) and returns its endpoint URL once it answers HTTP.
    pub fn start_rgw(&self, zone: Option<&str>) -> Result<String> {
        let zone_args: Vec<String> = zone
            .map(|zone| format!("--rgw-zone={zone}"))
            .into_iter()
            .collect();
        self.launch_rgw(free_port(&self.ip)?, &zone_args)
    }

    /// Starts RGW for `zone` of `realm` on `port`, the port the zone's endpoints name (they are set in Ceph
    /// before the daemon exists); returns the endpoint URL once it answers HTTP.
    pub fn start_zone_rgw(&self, realm: &str, zone: &str, port: u16) -> Result<String> {
        self.launch_rgw(
            port,
            &[format!("--rgw-realm={realm}"), format!("--rgw-zone={zone}")],
        )
    }

    fn launch_rgw(&self, port: u16, extra_args: &[String]) -> Result<String> {
        let frontends = format!("beast endpoint={}:{port}", self.ip);
        let mut cmd = self.command_with(
            "radosgw",
            &[
                "-f",
                "-n",
                &format!("client.rgw.{}", self.name),
                "--rgw-frontends",
                &frontends,
            ],
        );
        cmd.args(extra_args);
        self.start_daemon("rgw", cmd)?;
        let endpoint = format!("http://{}:{port}", self.ip);
        wait_for(
            &format!("site {}: rgw at {endpoint}", self.name),
            Duration::from_secs(90),
            Duration::from_millis(300),
            || {
                self.ensure_daemons_running()?;
                Ok(std::net::TcpStream::connect((self.ip.as_str(), port))
                    .ok()
                    .and_then(|mut s| {
                        use std::io::{Read, Write};
                        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                        write!(s, "GET / HTTP/1.0\r\n\r\n").ok()?;
                        let mut buf = [0u8; 12];
                        s.read_exact(&mut buf).ok()?;
                        buf.starts_with(b"HTTP/1.").then_some(())
                    }))
            },
        )
        .with_context(|| format!("its log ends:\n{}", self.daemon_log("rgw", 30)))?;
        Ok(endpoint)
    }

    /// Starts the rbd-mirror daemon of this site (it pulls images from the site's peers), unless it runs.
    pub fn start_rbd_mirror(&self) -> Result<()> {
        if self.daemons.lock().unwrap().contains_key("rbd-mirror") {
            return Ok(());
        }
        // rbd-mirror reopens the local cluster from the default path: CEPH_CONF is set by `command`.
        self.start_daemon(
            "rbd-mirror",
            self.command_with(
                "rbd-mirror",
                &["-f", "-n", &format!("client.rbd-mirror.{}", self.name)],
            ),
        )
    }

    /// Stops one daemon (`mon.a`, `mgr.x`, `osd.0`, `rgw`, `rbd-mirror`); `kill` sends SIGKILL at once, as a
    /// crash would.
    pub fn stop_daemon(&self, name: &str, kill: bool) -> Result<()> {
        let Running { daemon, launch, .. } = self
            .daemons
            .lock()
            .unwrap()
            .remove(name)
            .with_context(|| format!("site {} has no daemon {name}", self.name))?;
        if kill {
            daemon.signal(libc::SIGKILL);
        }
        daemon.stop(Duration::from_secs(10));
        self.stopped.lock().unwrap().insert(name.to_string(), launch);
        Ok(())
    }

    /// SIGKILLs every daemon of the site at once, as a power cut would.
    pub fn kill_all(&self) -> Result<()> {
        let names: Vec<String> = self.daemons.lock().unwrap().keys().cloned().collect();
        for name in names {
            self.stop_daemon(&name, true)?;
        }
        Ok(())
    }

    /// Starts every stopped daemon again, the monitor first, with the command line it had; returns once the
    /// OSD is up.
    pub fn restart_stopped(&self) -> Result<()> {
        let mut stopped: Vec<(String, Launch)> = std::mem::take(&mut *self.stopped.lock().unwrap())
            .into_iter()
            .collect();
        stopped.sort_by_key(|(name, _)| !name.starts_with("mon."));
        for (name, launch) in &stopped {
            self.start_daemon(name, launch.command())?;
        }
        self.wait_osd_up()?;
        // The site is back for a user once it answers RBD's mgr commands: until the mgr's rbd_support
        // module has loaded, they fail with EAGAIN ("not ready, try again"), which cephdr waits out
        // mid-failover but a new request's preflight reports as the site not answering.
        wait_for(
            &format!("site {}: the mgr's rbd_support module ready", self.name),
            Duration::from_secs(90),
            Duration::from_millis(500),
            || {
                self.ensure_daemons_running()?;
                Ok(self
                    .rbd(&["mirror", "snapshot", "schedule", "ls", "--recursive"])
                    .ok()
                    .map(drop))
            },
        )
    }

    pub fn daemon_log(&self, name: &str, lines: usize) -> String {
        tail(&self.dir.join("log").join(format!("{name}.out")), lines)
    }

    /// Writes `mib` MiB of random bytes into a new image `pool/image`.
    pub fn import_random_image(&self, pool: &str, image: &str, mib: usize) -> Result<()> {
        let file = self.dir.join(crate::unique_name("import"));
        let mut bytes = vec![0u8; mib << 20];
        rand::fill(&mut bytes[..]);
        fs::write(&file, &bytes)?;
        let imported = self.rbd(&[
            "import",
            "--no-progress",
            path_str(&file)?,
            &format!("{pool}/{image}"),
        ]);
        fs::remove_file(&file)?;
        imported.map(drop)
    }

    /// The BLAKE3 of `rbd export` of an image or snapshot (`pool/image[@snap]`).
    pub fn image_checksum(&self, spec: &str) -> Result<String> {
        let file = self.dir.join(crate::unique_name("export"));
        let exported = self.rbd(&["export", "--no-progress", spec, path_str(&file)?]);
        let hash = exported.and_then(|_| Ok(blake3::hash(&fs::read(&file)?).to_hex().to_string()));
        let _ = fs::remove_file(&file);
        hash
    }

    /// Whether the image (`pool/image`) is mirroring primary here.
    pub fn is_primary(&self, spec: &str) -> Result<bool> {
        let info: serde_json::Value = serde_json::from_str(&self.rbd(&["info", spec, "--format", "json"])?)?;
        info["mirroring"]["primary"]
            .as_bool()
            .context("rbd info shows mirroring.primary")
    }

    /// Ids of the image's (`pool/image`) mirror snapshots taken where it is primary, oldest first, as
    /// `rbd snap ls --all` lists them.
    pub fn primary_mirror_snapshots(&self, spec: &str) -> Result<Vec<u64>> {
        let snaps: serde_json::Value =
            serde_json::from_str(&self.rbd(&["snap", "ls", "--all", spec, "--format", "json"])?)?;
        let mut ids: Vec<u64> = snaps
            .as_array()
            .context("rbd snap ls lists snapshots")?
            .iter()
            .filter(|snap| snap["namespace"]["type"] == "mirror" && snap["namespace"]["state"] == "primary")
            .filter_map(|snap| snap["id"].as_u64())
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Whether rbd-mirror here replays the image and, for a snapshot-mode image, has fully applied the
    /// newest mirror snapshot of its primary and syncs nothing now (`replay_state` idle, local and remote
    /// snapshot times equal). A snapshot-mode copy whose bytes match may still be mid-sync, and a forced
    /// promotion rolls it back to its last complete snapshot; a journaled copy keeps what it replayed.
    pub fn replica_in_sync(&self, spec: &str) -> Result<bool> {
        let status: serde_json::Value =
            serde_json::from_str(&self.rbd(&["mirror", "image", "status", spec, "--format", "json"])?)?;
        let description = status["description"].as_str().unwrap_or_default();
        let Some(embedded) = description.find('{').map(|start| &description[start..]) else {
            return Ok(false);
        };
        let replay: serde_json::Value = serde_json::from_str(embedded)?;
        let journaled = replay.get("entries_behind_primary").is_some();
        let snapshot_applied = replay["replay_state"] == "idle"
            && replay["local_snapshot_timestamp"].is_i64()
            && replay["local_snapshot_timestamp"] == replay["remote_snapshot_timestamp"];
        Ok(status["state"] == "up+replaying" && (journaled || snapshot_applied))
    }

    /// Writes 1 MiB through librbd: succeeds only where the image is writable (primary).
    pub fn write_some(&self, spec: &str) -> Result<String> {
        self.rbd(&[
            "bench",
            "--io-type",
            "write",
            "--io-size",
            "64K",
            "--io-total",
            "1M",
            spec,
        ])
    }

    /// Whether the pool exists on this cluster.
    pub fn pool_exists(&self, pool: &str) -> Result<bool> {
        Ok(self
            .ceph(&["osd", "pool", "ls"])?
            .lines()
            .any(|line| line == pool))
    }
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

fn ceph_conf(dir: &Path, fsid: &str, mon_host: &str, ip: &str) -> String {
    let d = dir.display();
    format!(
        r#"[global]
fsid = {fsid}
mon_host = {mon_host}
public_addr = {ip}
keyring = {d}/keyring
run_dir = {d}/run
admin_socket = {d}/run/$name.asok
log_file = {d}/log/$name.log
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
# one OSD: size-1 pools, no failure domain, few PGs
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
osd_crush_chooseleaf_type = 0
osd_pool_default_pg_autoscale_mode = off
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
mon_max_pg_per_osd = 1000
mon_data = {d}/mon/$id
mgr_data = {d}/mgr/$id
osd_data = {d}/osd/$id
osd_objectstore = bluestore
bluestore_block_create = true
bluestore_block_size = 8589934592
bluestore_block_db_create = false
bluestore_block_wal_create = false
bluestore_cache_autotune = false
bluestore_cache_size = 134217728
osd_memory_target = 939524096
mgr_initial_modules = rbd_support
# must be equal in every zone; small keeps sync status short
rgw_data_log_num_shards = 8
rgw_md_log_max_shards = 8
rgw_sync_lease_period = 10
rgw_bucket_index_max_aio = 8
rbd_mirror_pool_replayers_refresh_interval = 5
rbd_mirroring_replay_delay = 0

[client]
# many CLI clients at once would collide on one admin socket path
admin_socket = {d}/run/$name.$pid.asok

[osd]
keyring = {d}/osd/$id/keyring
"#
    )
}
