//! Child processes that never outlive the test binary that started them.
//!
//! Every daemon is spawned from one long-lived thread with `PR_SET_PDEATHSIG`, because the kernel sends
//! that signal when the *spawning thread* exits: spawned from a test's own thread, a shared daemon would die
//! with the first test. On a normal exit (also after panicking tests) an `atexit` hook stops every daemon
//! still registered and removes the scratch directories; on SIGKILL of the test binary the kernel kills the
//! daemons, and the next harness start sweeps the directories left behind.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Mutex, OnceLock},
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

struct Registry {
    children: BTreeMap<u32, (String, Child)>,
    scratch_dirs: Vec<PathBuf>,
}

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        // SAFETY: registering a plain extern "C" fn with atexit has no preconditions.
        unsafe { libc::atexit(stop_everything_at_exit) };
        Mutex::new(Registry {
            children: BTreeMap::new(),
            scratch_dirs: Vec::new(),
        })
    })
}

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("testbed-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
                // The channel lives in a static, so this thread never returns while the process lives.
            })
            .expect("spawn the test bed's spawner thread");
        Mutex::new(tx)
    })
}

/// A daemon started by the harness; stopped when dropped.
#[derive(Debug)]
pub struct Daemon {
    pub name: String,
    pub pid: u32,
}

impl Daemon {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn start(name: &str, mut command: Command, log: &Path) -> Result<Daemon> {
        let out = fs::OpenOptions::new().create(true).append(true).open(log)?;
        command.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe libc calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    // The parent died before prctl took effect.
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let program = command.get_program().to_string_lossy().into_owned();
        let (reply_tx, reply_rx) = mpsc::channel();
        spawner()
            .lock()
            .unwrap()
            .send((command, reply_tx))
            .map_err(|_| anyhow!("spawner thread is gone"))?;
        let child = reply_rx
            .recv()?
            .with_context(|| format!("start {name}: cannot run {program} (is it installed and on PATH?)"))?;
        let pid = child.id();
        registry()
            .lock()
            .unwrap()
            .children
            .insert(pid, (name.to_string(), child));
        Ok(Daemon {
            name: name.to_string(),
            pid,
        })
    }

    /// Fails with the daemon's log tail when it has exited.
    pub fn ensure_running(&self, log: &Path) -> Result<()> {
        let mut reg = registry().lock().unwrap();
        if let Some((_, child)) = reg.children.get_mut(&self.pid) {
            if let Some(status) = child.try_wait()? {
                reg.children.remove(&self.pid);
                bail!(
                    "{} exited ({status}); last log lines:\n{}",
                    self.name,
                    tail(log, 20)
                );
            }
        }
        Ok(())
    }

    /// Sends `signal` without waiting (SIGKILL to simulate a crashed site, SIGSTOP to freeze one).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on a pid we spawned and still own (it is reaped only by `stop`).
        unsafe { libc::kill(self.pid as libc::pid_t, signal) };
    }

    /// Stops the daemon: SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&self, grace: Duration) {
        let child = registry().lock().unwrap().children.remove(&self.pid);
        if let Some((_, child)) = child {
            terminate(child, grace);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

fn terminate(mut child: Child, grace: Duration) {
    // SAFETY: the child is not yet reaped, so its pid cannot have been reused.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

extern "C" fn stop_everything_at_exit() {
    let Ok(mut reg) = registry().lock() else {
        return;
    };
    let children = std::mem::take(&mut reg.children);
    let handles: Vec<_> = children
        .into_values()
        .map(|(_, child)| thread::spawn(move || terminate(child, Duration::from_secs(3))))
        .collect();
    for handle in handles {
        let _ = handle.join();
    }
    for dir in reg.scratch_dirs.drain(..) {
        let _ = fs::remove_dir_all(dir);
    }
}

/// Makes a scratch directory `<parent>/cephdr-<what>-<pid>-<n>`, removed at exit, after sweeping the ones
/// whose test binary died without cleaning up.
pub fn scratch_dir(parent: &Path, what: &str) -> Result<PathBuf> {
    sweep_orphans(parent);
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = parent.join(format!("cephdr-{what}-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    registry().lock().unwrap().scratch_dirs.push(dir.clone());
    Ok(dir)
}

fn sweep_orphans(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("cephdr-") else {
            continue;
        };
        let Some(pid) = rest.split('-').nth(1).and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the pid exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// The last `lines` lines of a log file, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs a command to completion and returns stdout, or an error carrying the command line and stderr.
pub fn run(command: &mut Command) -> Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Polls `check` every `every` until it returns `Ok(Some(_))`, failing with the last error after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => String::from("not yet"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        thread::sleep(every);
    }
}

/// A TCP port on `ip` that nothing listens on right now. The kernel hands out ephemeral ports in sequence,
/// so parallel test binaries asking at the same time get different ones.
pub fn free_port(ip: &str) -> Result<u16> {
    let listener = std::net::TcpListener::bind((ip, 0)).with_context(|| format!("bind {ip}:0"))?;
    Ok(listener.local_addr()?.port())
}

/// `n` random bytes as lowercase hex, from the kernel's CSPRNG.
pub fn random_hex(n: usize) -> Result<String> {
    let mut buf = vec![0u8; n];
    use std::io::Read;
    fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
