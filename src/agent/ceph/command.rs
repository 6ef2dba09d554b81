//! One run of a Ceph CLI: an argv that knows which of its parts are secret, and the runner that keeps those
//! parts out of every command line, log line and error.
//!
//! Where secrets go:
//! - Bootstrap tokens go through stdin (`rbd mirror pool peer bootstrap import POOL -`).
//! - RGW secret keys: `radosgw-admin` (Pacific) reads `--secret` only as a command-line argument; it has no
//!   file or stdin option for `realm pull`, `period pull`, `zone create/modify` or `user create/modify`. Every
//!   Ceph CLI also reads arguments from the `CEPH_ARGS` environment variable (`env_to_vec`, measured on
//!   16.2.15: `CEPH_ARGS=--uid=x radosgw-admin user info` looks up `x`), so secret arguments travel there
//!   instead of argv. `/proc/PID/cmdline` is readable by every user of the host; `/proc/PID/environ` only by
//!   the process's own user and root, who can read the agent's memory anyway. The variable is set on the
//!   child only, never on the agent's own environment, and the child lives for one command.
//! - Every rendering of a command (`Display`, errors, logs) prints secret arguments as `<redacted>`, and
//!   secrets that Ceph might echo are cut out of stderr before it becomes an error message.

use std::{fmt, path::PathBuf, process::Stdio, time::Duration};

use tokio::{io::AsyncWriteExt, process::Command};

use crate::agent::{AgentError, AgentResult, Sensitive};

/// errno values the Ceph CLIs return as their exit status.
pub(super) const ENOENT: i32 = 2;
pub(super) const EACCES: i32 = 13;
pub(super) const EEXIST: i32 = 17;
const ETIMEDOUT: i32 = 110;
const EAGAIN: i32 = 11;

/// What the CLIs print when they cannot reach the monitors: `rbd` (which exits with ETIMEDOUT), `ceph` and
/// `radosgw-admin` (which exit with 1), measured on 16.2.15.
const NO_CLUSTER: [&str; 3] = [
    "couldn't connect to the cluster",
    "error connecting to the cluster",
    "failed to fetch mon config",
];

/// Where a command runs: the cluster a `CephCli` points at.
#[derive(Clone, Debug)]
pub(super) struct Target {
    pub site: String,
    pub conf: Option<PathBuf>,
    pub cluster: Option<String>,
    pub client_id: Option<String>,
    pub keyring: Option<PathBuf>,
    pub timeout: Duration,
    /// How long a CLI hunts for a monitor before it gives up (`client_mount_timeout`; Ceph's default is
    /// 300 s, past any timeout of ours, so an unreachable cluster would only show as a timeout).
    pub connect_timeout: Option<Duration>,
}

/// An argv for `ceph`, `rbd` or `radosgw-admin` whose secret parts never reach the command line.
#[derive(Clone)]
pub(super) struct CephCommand {
    program: &'static str,
    args: Vec<Arg>,
    stdin: Option<Sensitive<String>>,
}

#[derive(Clone)]
enum Arg {
    Plain(String),
    /// `--flag=value`, passed through `CEPH_ARGS` and shown as `--flag=<redacted>`.
    Secret {
        flag: &'static str,
        value: Sensitive<String>,
    },
}

impl CephCommand {
    pub fn ceph<I: IntoIterator<Item = S>, S: Into<String>>(args: I) -> Self {
        Self::new("ceph").args(args).arg("--format=json")
    }

    pub fn rbd<I: IntoIterator<Item = S>, S: Into<String>>(args: I) -> Self {
        Self::new("rbd").args(args)
    }

    pub fn radosgw_admin<I: IntoIterator<Item = S>, S: Into<String>>(args: I) -> Self {
        Self::new("radosgw-admin").args(args)
    }

    fn new(program: &'static str) -> Self {
        Self {
            program,
            args: Vec::new(),
            stdin: None,
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(Arg::Plain(arg.into()));
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args
            .extend(args.into_iter().map(|arg| Arg::Plain(arg.into())));
        self
    }

    /// `--flag=value` when `value` is set.
    pub fn opt(self, flag: &str, value: Option<&str>) -> Self {
        match value {
            Some(value) => self.arg(format!("{flag}={value}")),
            None => self,
        }
    }

    /// `--flag=value` kept off the command line (see the module docs).
    pub fn secret(mut self, flag: &'static str, value: &Sensitive<String>) -> Self {
        self.args.push(Arg::Secret {
            flag,
            value: value.clone(),
        });
        self
    }

    /// Data the command reads from stdin; it never appears anywhere else.
    pub fn stdin(mut self, input: &Sensitive<String>) -> Self {
        self.stdin = Some(input.clone());
        self
    }

    fn secrets(&self) -> impl Iterator<Item = &str> {
        let args = self.args.iter().filter_map(|arg| match arg {
            Arg::Secret { value, .. } => Some(value.expose().as_str()),
            Arg::Plain(_) => None,
        });
        args.chain(self.stdin.iter().map(|input| input.expose().as_str()))
            .filter(|secret| !secret.is_empty())
    }

    /// The `CEPH_ARGS` value carrying the secret arguments, after any the agent itself was given.
    fn ceph_args_env(&self, site: &str) -> AgentResult<Option<String>> {
        let mut parts: Vec<String> = std::env::var("CEPH_ARGS").ok().into_iter().collect();
        for arg in &self.args {
            if let Arg::Secret { flag, value } = arg {
                // CEPH_ARGS splits on whitespace: such a value would arrive cut in pieces.
                if value.expose().is_empty() || value.expose().chars().any(char::is_whitespace) {
                    return Err(AgentError::Refused {
                        site: site.to_string(),
                        action: format!("`{self}`"),
                        message: format!("the value of {flag} is empty or contains whitespace"),
                    });
                }
                parts.push(format!("{flag}={}", value.expose()));
            }
        }
        let has_secrets = self.args.iter().any(|arg| matches!(arg, Arg::Secret { .. }));
        Ok(has_secrets.then(|| parts.join(" ")))
    }

    /// Runs the command on `target`; fails with `ClusterUnreachable` when the CLI found no monitor, a daemon
    /// asked to be asked again, or no answer came within the timeout, and with `CommandFailed` on any other
    /// non-zero exit.
    pub async fn run(&self, target: &Target) -> AgentResult<CommandOutput> {
        let shown = self.to_string();
        let failed = |exit_code, stderr: String| AgentError::CommandFailed {
            site: target.site.clone(),
            command: shown.clone(),
            exit_code,
            stderr: self.scrub(&stderr),
        };
        let mut command = Command::new(self.program);
        if let Some(conf) = &target.conf {
            // Some Ceph tools reopen the cluster from the default path; CEPH_CONF points them at ours too.
            command.arg("-c").arg(conf).env("CEPH_CONF", conf);
        }
        for (flag, value) in [("--cluster", &target.cluster), ("--id", &target.client_id)] {
            if let Some(value) = value {
                command.arg(format!("{flag}={value}"));
            }
        }
        if let Some(keyring) = &target.keyring {
            command.arg("--keyring").arg(keyring);
        }
        if let Some(connect) = target.connect_timeout {
            command.arg(format!("--client_mount_timeout={}", connect.as_secs().max(1)));
        }
        command.args(self.args.iter().filter_map(|arg| match arg {
            Arg::Plain(arg) => Some(arg.as_str()),
            Arg::Secret { .. } => None,
        }));
        if let Some(ceph_args) = self.ceph_args_env(&target.site)? {
            command.env("CEPH_ARGS", ceph_args);
        }
        // `rbd` prints snapshot times in local time without a zone: pin it to UTC.
        command.env("TZ", "UTC").env("LC_ALL", "C");
        command
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);

        let started = std::time::Instant::now();
        let mut child = command
            .spawn()
            .map_err(|error| failed(None, format!("cannot start {}: {error}", self.program)))?;
        if let (Some(input), Some(mut pipe)) = (&self.stdin, child.stdin.take()) {
            pipe.write_all(input.expose().as_bytes())
                .await
                .map_err(|error| failed(None, format!("cannot write to stdin: {error}")))?;
            drop(pipe);
        }
        let unreachable = |message: String| AgentError::ClusterUnreachable {
            site: target.site.clone(),
            message: format!("`{shown}`: {message}"),
        };
        // On timeout the child is dropped, and `kill_on_drop` ends it.
        let output = tokio::time::timeout(target.timeout, child.wait_with_output())
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", target.timeout)))?
            .map_err(|error| failed(None, format!("cannot read the output: {error}")))?;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            tracing::debug!(site = %target.site, command = %shown, exit_code = ?output.status.code(), elapsed_ms, "ceph command failed");
            let code = output.status.code();
            let last = stderr.trim().lines().last().unwrap_or_default();
            if code == Some(ETIMEDOUT) || NO_CLUSTER.iter().any(|words| stderr.contains(words)) {
                return Err(unreachable(format!("no monitor answered: {}", self.scrub(last))));
            }
            // A daemon that is starting (the mgr's rbd_support module after a restart) asks to be asked
            // again: the site cannot answer yet, which is not an answer, so it is waited out like silence.
            let asks_again = ["try again", "Resource temporarily unavailable"];
            if code == Some(EAGAIN) && asks_again.iter().any(|words| stderr.contains(words)) {
                return Err(unreachable(format!("not ready yet: {}", self.scrub(last))));
            }
            return Err(failed(code, stderr.trim().to_string()));
        }
        tracing::debug!(site = %target.site, command = %shown, elapsed_ms, "ceph command");
        Ok(CommandOutput {
            site: target.site.clone(),
            command: shown,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        })
    }

    /// Cuts any secret of this command out of `text` and keeps its last 2000 characters (the error itself).
    fn scrub(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in self.secrets() {
            text = text.replace(secret, "<redacted>");
        }
        const KEEP: usize = 2000;
        match text.char_indices().rev().nth(KEEP) {
            Some((cut, _)) => format!("…{}", &text[cut..]),
            None => text,
        }
    }
}

impl fmt::Display for CephCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.program)?;
        for arg in &self.args {
            match arg {
                Arg::Plain(arg) if arg.is_empty() || arg.contains(char::is_whitespace) => {
                    write!(f, " '{arg}'")?
                }
                Arg::Plain(arg) => write!(f, " {arg}")?,
                Arg::Secret { flag, .. } => write!(f, " {flag}=<redacted>")?,
            }
        }
        if self.stdin.is_some() {
            f.write_str(" <stdin: redacted>")?;
        }
        Ok(())
    }
}

/// What a successful command printed, with what parsers need to name it in errors.
#[derive(Clone, Debug)]
pub(super) struct CommandOutput {
    pub site: String,
    pub command: String,
    pub stdout: String,
}

impl CommandOutput {
    pub fn parse_error(&self, message: impl Into<String>) -> AgentError {
        AgentError::Parse {
            site: self.site.clone(),
            command: self.command.clone(),
            message: message.into(),
        }
    }

    /// Captured output, as the parser tests feed it.
    #[cfg(test)]
    pub fn fixture(stdout: &str) -> Self {
        Self {
            site: "test".into(),
            command: "fixture".into(),
            stdout: stdout.to_string(),
        }
    }
}

/// The errno a failed Ceph command exited with.
pub(super) fn errno(error: &AgentError) -> Option<i32> {
    match error {
        AgentError::CommandFailed { exit_code, .. } => *exit_code,
        _ => None,
    }
}

/// Whether the command failed with `code`, or printed `words` (for errors that exit with another code).
pub(super) fn failed_with(error: &AgentError, code: i32, words: &str) -> bool {
    match error {
        AgentError::CommandFailed {
            exit_code, stderr, ..
        } => *exit_code == Some(code) || (!words.is_empty() && stderr.contains(words)),
        _ => false,
    }
}

/// `Ok(None)` when the command failed because what it reads does not exist.
pub(super) fn absent_on_enoent(result: AgentResult<CommandOutput>) -> AgentResult<Option<CommandOutput>> {
    match result {
        Ok(output) => Ok(Some(output)),
        Err(error) if errno(&error) == Some(ENOENT) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Success when the command failed only because there was nothing to do (`code`, or stderr with `words`).
pub(super) fn ok_if(result: AgentResult<CommandOutput>, code: i32, words: &str) -> AgentResult<()> {
    match result {
        Ok(_) => Ok(()),
        Err(error) if failed_with(&error, code, words) => Ok(()),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            site: "a".into(),
            conf: None,
            cluster: None,
            client_id: None,
            keyring: None,
            timeout: Duration::from_secs(5),
            connect_timeout: None,
        }
    }

    #[test]
    fn secrets_show_redacted_and_stay_off_argv() {
        let secret = Sensitive("s3cr3t-value".to_string());
        let cmd = CephCommand::radosgw_admin(["realm", "pull"])
            .arg("--url=http://a:80")
            .secret("--secret", &secret)
            .stdin(&secret);
        let shown = cmd.to_string();
        assert_eq!(
            shown,
            "radosgw-admin realm pull --url=http://a:80 --secret=<redacted> <stdin: redacted>"
        );
        assert_eq!(
            cmd.scrub("error near s3cr3t-value here"),
            "error near <redacted> here"
        );
        assert!(cmd
            .ceph_args_env("a")
            .unwrap()
            .unwrap()
            .ends_with("--secret=s3cr3t-value"));
    }

    #[test]
    fn secret_with_whitespace_is_refused_without_echoing_it() {
        let cmd = CephCommand::radosgw_admin(["user", "create"]).secret("--secret", &Sensitive("a b".into()));
        let error = cmd.ceph_args_env("a").unwrap_err();
        assert_eq!(error.reason(), "Refused");
        assert!(!error.to_string().contains("a b"));
    }

    #[tokio::test]
    async fn failures_carry_exit_code_and_trimmed_stderr() {
        let error = CephCommand::new("sh")
            .args(["-c", "echo '  no such pool ' >&2; exit 2"])
            .run(&target())
            .await;
        let error = error.unwrap_err();
        assert_eq!(errno(&error), Some(ENOENT));
        let AgentError::CommandFailed { stderr, command, .. } = error else {
            panic!("{error:?}")
        };
        assert_eq!(stderr, "no such pool");
        assert_eq!(command, "sh -c 'echo '  no such pool ' >&2; exit 2'");
    }

    #[tokio::test]
    async fn stdin_reaches_the_command_and_slow_commands_time_out() {
        let secret = Sensitive("token-123".to_string());
        let out = CephCommand::new("sh")
            .args(["-c", "cat"])
            .stdin(&secret)
            .run(&target())
            .await
            .unwrap();
        assert_eq!(out.stdout, "token-123");
        let slow = Target {
            timeout: Duration::from_millis(200),
            ..target()
        };
        let error = CephCommand::new("sleep").arg("5").run(&slow).await.unwrap_err();
        assert_eq!(error.reason(), "CephClusterUnreachable");
        assert!(error.to_string().contains("no answer within"), "{error}");
    }

    #[tokio::test]
    async fn a_cli_that_finds_no_monitor_or_a_daemon_not_ready_reports_the_cluster_unreachable() {
        // What `rbd` and `ceph` print against a site whose monitors are down (16.2.15).
        for (stderr, code) in [
            ("rbd: couldn't connect to the cluster!", 110),
            ("[errno 110] RADOS timed out (error connecting to the cluster)", 1),
            // The mgr restarted a moment ago (site A back after an outage, 16.2.15).
            (
                "rbd: rbd mirror snapshot schedule list failed: (11) Resource temporarily unavailable: rbd_support module is not ready, try again",
                11,
            ),
        ] {
            let script = format!("echo \"{stderr}\" >&2; exit {code}");
            let error = CephCommand::new("sh")
                .args(["-c", &script])
                .run(&target())
                .await
                .unwrap_err();
            assert!(error.is_unreachable(), "{error:?}");
            assert!(error.to_string().contains(stderr), "{error}");
        }
    }
}
