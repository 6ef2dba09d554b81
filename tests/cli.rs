//! The built `cephdr` binary against a real kube-apiserver, with the controllers running on two simulated
//! Ceph sites: `status` shows what the controllers reported, `failover plan` lists a dry run's steps,
//! `failover start --wait` and `failover watch` follow a failover live to its end and exit by its outcome,
//! errors name what is wrong, and real kubectl runs it as the plugin `kubectl cephdr`.

mod common;

use std::{ffi::OsStr, process::Stdio};

use anyhow::{Context as _, Result};
use cephdr::{
    api::{CephSite, FailoverPhase, FailoverRequest},
    cli::status::Report,
};
use cephdr_e2e::shared_control_plane;
use common::{mirrored, primary, ready, Bed, PATIENCE, POOL};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

/// What one run printed and how it exited.
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Output {
    /// The lines of stdout with runs of blanks squeezed, so assertions do not depend on column widths.
    fn lines(&self) -> Vec<String> {
        self.stdout.lines().map(squeeze).collect()
    }
}

fn squeeze(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The built binary with the test bed's kubeconfig.
async fn cephdr_anywhere(args: &[&str]) -> Result<Command> {
    let plane = shared_control_plane().await?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_cephdr"));
    command.args(args).arg("--kubeconfig").arg(&plane.kubeconfig);
    Ok(command)
}

/// The built binary with the test bed's kubeconfig, in the bed's namespace.
async fn cephdr(bed: &Bed, args: &[&str]) -> Result<Command> {
    let mut command = cephdr_anywhere(args).await?;
    command.args(["-n", &bed.ns]);
    Ok(command)
}

/// Runs the command to its end, and shows what it printed (with a failing test's output, or `--nocapture`).
async fn run(mut command: Command) -> Result<Output> {
    let std = command.as_std();
    let shown = std::iter::once(std.get_program())
        .chain(std.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    // Errors as a user sees them, without the backtrace a test environment may ask for.
    command.env("RUST_LIB_BACKTRACE", "0").kill_on_drop(true);
    let output = tokio::time::timeout(PATIENCE, command.output())
        .await
        .context("the command did not finish")??;
    let output = Output {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout)?,
        stderr: String::from_utf8(output.stderr)?,
    };
    println!(
        "$ {shown}\n{}{}(exit {:?})\n",
        output.stdout, output.stderr, output.code
    );
    Ok(output)
}

/// Asserts that lines starting with `expected` come in this order (other lines may come between).
fn assert_in_order(lines: &[String], expected: &[&str]) {
    let mut from = 0;
    for want in expected {
        match lines[from..].iter().position(|line| line.starts_with(want)) {
            Some(at) => from += at + 1,
            None => panic!("{want:?} not found in order in {lines:#?}"),
        }
    }
}

#[tokio::test]
async fn status_shows_the_sites_realm_zones_pools_and_images_the_controllers_reported() -> Result<()> {
    let bed = mirrored("cli").await?;
    bed.converged_realm().await?;
    for site in ["site-a", "site-b"] {
        bed.wait::<CephSite>(site, "Ready", PATIENCE, |s| {
            s.status.as_ref().is_some_and(|st| ready(&st.conditions))
        })
        .await?;
    }

    let json = run(cephdr(&bed, &["status", "-o", "json"]).await?).await?;
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    let report: Report = serde_json::from_str(&json.stdout)?;
    let sites: Vec<_> = report
        .sites
        .iter()
        .map(|s| (s.name.as_str(), s.reachable, s.ceph_version.as_deref(), s.ready))
        .collect();
    assert_eq!(
        sites,
        [
            ("site-a", Some(true), Some("16.2.15"), Some(true)),
            ("site-b", Some(true), Some("16.2.15"), Some(true))
        ]
    );
    let realm = &report.realms[0];
    assert_eq!(
        (realm.name.as_str(), realm.master_zone.as_deref(), realm.ready),
        ("production", Some("us-east"), Some(true))
    );
    let zones: Vec<_> = report
        .zones
        .iter()
        .map(|z| (z.name.as_str(), z.site.as_str(), z.role, z.ready))
        .collect();
    use cephdr::api::zone::ZoneRole::{Master, Secondary};
    assert_eq!(
        zones,
        [
            ("us-east", "site-a", Some(Master), Some(true)),
            ("us-west", "site-b", Some(Secondary), Some(true))
        ]
    );
    let pool = &report.pools[0];
    assert_eq!(
        (pool.name.as_str(), pool.primary_site.as_deref(), pool.rpo_seconds),
        (POOL, Some("site-a"), Some(1800))
    );
    let image = &pool.images[0];
    assert_eq!(
        (
            image.name.as_str(),
            image.state.as_str(),
            image.primary_site.as_deref()
        ),
        ("db", "replaying", Some("site-a"))
    );
    assert!(
        image.lag_seconds.is_some() && image.within_rpo == Some(true),
        "a 100 ms lag is within the 30 min RPO: {image:?}"
    );
    assert!(report.failovers.is_empty(), "no failover is running");

    // The same through the kubeconfig's other context (client certificate instead of token), as YAML.
    let yaml = run(cephdr(&bed, &["status", "-o", "yaml", "--context", "testbed-cert"]).await?).await?;
    let same: Report = serde_yaml::from_str(&yaml.stdout)?;
    assert_eq!(
        (same.sites.len(), same.zones.len(), same.pools[0].images.len()),
        (2, 2, 1)
    );

    let table = run(cephdr(&bed, &["status"]).await?).await?;
    let lines = table.lines();
    assert_in_order(
        &lines,
        &[
            "SITE REACHABLE HEALTH VERSION READY",
            "REALM MASTER ZONEGROUP MASTER ZONE EPOCH READY",
            "ZONE REALM ZONEGROUP SITE ROLE SYNC LAG RPO READY",
            "POOL CEPH POOL PRIMARY HEALTH MAX LAG RPO RPO MET READY",
            "POOL IMAGE PRIMARY STATE LAG WITHIN RPO",
        ],
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("rbd db site-a replaying ") && l.ends_with(" True")),
        "{lines:#?}"
    );
    let everywhere = run(cephdr_anywhere(&["status", "-A"]).await?).await?;
    assert!(
        everywhere
            .lines()
            .contains(&format!("{} site-a true HEALTH_OK 16.2.15 True", bed.ns)),
        "{}",
        everywhere.stdout
    );
    Ok(())
}

#[tokio::test]
async fn failover_plan_prints_the_steps_of_a_dry_run_and_changes_nothing() -> Result<()> {
    let bed = mirrored("cli").await?;
    let plan = run(cephdr(
        &bed,
        &["failover", "plan", "--target-site", "site-b", "--pool", POOL],
    )
    .await?)
    .await?;
    assert_eq!(plan.code, Some(0), "{}", plan.stderr);
    let lines = plan.lines();
    assert!(
        lines[0].starts_with("failoverrequest.cephdr.io/planned-site-b-plan-")
            && lines[0].ends_with(" created (dry run)"),
        "{lines:#?}"
    );
    assert_eq!(
        lines[1..],
        [
            "plan of a planned failover to site site-b: 3 step(s); nothing was changed",
            "# STEP TARGET",
            "1 demote rbd/db@site-a",
            "2 await-sync rbd/db@site-b",
            "3 promote rbd/db@site-b",
        ]
    );
    assert_eq!(
        (primary(&bed.a).await?, primary(&bed.b).await?),
        (Some(true), Some(false))
    );
    for site in ["site-a", "site-b"] {
        assert!(bed
            .steps_on(site)
            .iter()
            .all(|s| !matches!(s.verb(), "demote" | "promote")));
    }
    Ok(())
}

#[tokio::test]
async fn failover_watch_follows_a_failover_live_and_start_wait_runs_one_to_completion() -> Result<()> {
    let bed = mirrored("cli").await?;
    // The sites cannot reach each other: the failover holds in Syncing until they can.
    bed.world.partition("site-a", "site-b");
    let start = &[
        "failover",
        "start",
        "--name",
        "to-b",
        "--target-site",
        "site-b",
        "--pool",
        POOL,
    ];
    let started = run(cephdr(&bed, start).await?).await?;
    assert_eq!(started.code, Some(0), "{}", started.stderr);
    assert_eq!(
        started.lines(),
        [
            "failoverrequest.cephdr.io/to-b created".to_string(),
            format!("follow it with: cephdr failover watch to-b -n {}", bed.ns)
        ]
    );

    let mut watch = cephdr(&bed, &["failover", "watch", "to-b"]).await?;
    let mut watch = watch.stdout(Stdio::piped()).kill_on_drop(true).spawn()?;
    let mut printed = BufReader::new(watch.stdout.take().context("stdout")?).lines();
    let mut lines = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while let Some(line) = printed.next_line().await? {
            lines.push(squeeze(&line));
            if lines
                .last()
                .is_some_and(|l| l.starts_with("await-sync rbd/db@site-b running"))
            {
                return Ok(());
            }
        }
        anyhow::bail!("watch ended early: {lines:#?}")
    })
    .await
    .with_context(|| format!("no await-sync running after {PATIENCE:?}: {lines:#?}"))??;
    let held = bed.api::<FailoverRequest>().get("to-b").await?;
    assert_eq!(
        held.status.map(|s| s.phase),
        Some(FailoverPhase::Syncing),
        "held while the sites are apart"
    );
    assert!(watch.try_wait()?.is_none(), "watch waits while the request runs");

    bed.world.heal("site-a", "site-b");
    let exit = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = printed.next_line().await? {
            lines.push(squeeze(&line));
        }
        Ok::<_, anyhow::Error>(watch.wait().await?)
    })
    .await
    .context("watch did not end after the failover")??;
    println!(
        "$ cephdr failover watch to-b\n{}\n(exit {exit})\n",
        lines.join("\n")
    );
    assert!(exit.success());
    let completed = lines
        .iter()
        .find(|l| l.starts_with("Completed: "))
        .context("Completed line")?;
    assert!(
        completed.starts_with("Completed: planned failover to site site-b completed in "),
        "{completed}"
    );
    assert_in_order(
        &lines,
        &[
            &format!(
                "FailoverRequest {}/to-b: planned to site site-b, pools rbd",
                bed.ns
            ),
            "phase Syncing",
            "await-sync rbd/db@site-b running",
            "await-sync rbd/db@site-b done",
            "phase Promoting",
            "promote rbd/db@site-b running",
            "phase Completed",
            completed,
        ],
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("demote rbd/db@site-a done at ")));
    assert_eq!(
        (primary(&bed.a).await?, primary(&bed.b).await?),
        (Some(false), Some(true))
    );

    // Back to site-a in one command.
    let back = &[
        "failover",
        "start",
        "--wait",
        "--name",
        "back",
        "--target-site",
        "site-a",
        "--pool",
        POOL,
    ];
    let back = run(cephdr(&bed, back).await?).await?;
    assert_eq!(back.code, Some(0), "{}", back.stderr);
    let lines = back.lines();
    assert_in_order(
        &lines,
        &["failoverrequest.cephdr.io/back created", "phase Completed"],
    );
    for step in ["demote rbd/db@site-b done", "promote rbd/db@site-a done"] {
        assert!(lines.iter().any(|l| l.starts_with(step)), "{step} in {lines:#?}");
    }
    assert_eq!(
        (primary(&bed.a).await?, primary(&bed.b).await?),
        (Some(true), Some(false))
    );

    // Watching a finished request shows how it went and exits at once.
    let again = run(cephdr(&bed, &["failover", "watch", "back"]).await?).await?;
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(again.lines().iter().any(|l| l.starts_with("Completed: ")));
    Ok(())
}

#[tokio::test]
async fn a_failed_request_exits_non_zero_with_its_reason_and_errors_say_what_is_wrong() -> Result<()> {
    let bed = Bed::start("cli").await?;
    let start = &[
        "failover",
        "start",
        "--wait",
        "--name",
        "nowhere",
        "--target-site",
        "site-b",
        "--pool",
        "missing",
    ];
    let failed = run(cephdr(&bed, start).await?).await?;
    assert_eq!(failed.code, Some(1));
    let expected = format!(
        "FailoverRequest {}/nowhere failed (PreflightFailed): RbdMirrorPool missing was not found",
        bed.ns
    );
    assert!(failed.stderr.contains(&expected), "{}", failed.stderr);
    let watched = run(cephdr(&bed, &["failover", "watch", "nowhere"]).await?).await?;
    assert_eq!(
        (watched.code, watched.stderr.contains(&expected)),
        (Some(1), true),
        "{}",
        watched.stderr
    );
    let plan = &["failover", "plan", "--target-site", "site-b", "--pool", "missing"];
    let plan = run(cephdr(&bed, plan).await?).await?;
    assert_eq!(plan.code, Some(1));
    assert!(
        plan.stderr
            .contains("failed (PreflightFailed): dry run: RbdMirrorPool missing was not found"),
        "{}",
        plan.stderr
    );

    let unknown = run(cephdr(&bed, &["failover", "watch", "nope"]).await?).await?;
    assert_eq!(unknown.code, Some(1));
    assert!(
        unknown
            .stderr
            .contains(&format!("get FailoverRequest {}/nope: not found", bed.ns)),
        "{}",
        unknown.stderr
    );
    let bad_flag = run(cephdr(&bed, &["status", "-o", "xml"]).await?).await?;
    assert_eq!(bad_flag.code, Some(2), "clap's usage error");
    assert!(
        bad_flag.stderr.contains("invalid value 'xml'"),
        "{}",
        bad_flag.stderr
    );
    let no_context = run(cephdr(&bed, &["status", "--context", "elsewhere"]).await?).await?;
    assert_eq!(no_context.code, Some(1));
    assert!(
        no_context.stderr.contains("cannot use the kubeconfig"),
        "{}",
        no_context.stderr
    );

    // A user without RBAC, through a context of its own whose namespace is the bed's.
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let plane = shared_control_plane().await?;
    let mut config: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&plane.kubeconfig)?)?;
    let token = config["users"][0]["user"]["token"].clone();
    let append = |config: &mut serde_yaml::Value, list: &str, entry: serde_json::Value| -> Result<()> {
        config[list]
            .as_sequence_mut()
            .context("a list")?
            .push(serde_yaml::to_value(entry)?);
        Ok(())
    };
    append(
        &mut config,
        "users",
        serde_json::json!({"name": "nobody", "user": {"token": token, "as": "nobody"}}),
    )?;
    append(
        &mut config,
        "contexts",
        serde_json::json!({"name": "nobody", "context": {"cluster": "testbed", "user": "nobody", "namespace": bed.ns}}),
    )?;
    std::fs::write(&kubeconfig, serde_yaml::to_string(&config)?)?;
    let mut denied = Command::new(env!("CARGO_BIN_EXE_cephdr"));
    denied
        .args(["status", "--context", "nobody", "--kubeconfig"])
        .arg(&kubeconfig);
    let denied = run(denied).await?;
    assert_eq!(denied.code, Some(1));
    assert!(
        denied
            .stderr
            .contains(&format!("in namespace {}: forbidden: ", bed.ns))
            && denied.stderr.contains("User \"nobody\" cannot list resource"),
        "{}",
        denied.stderr
    );
    Ok(())
}

#[tokio::test]
async fn kubectl_runs_it_as_the_plugin_kubectl_cephdr() -> Result<()> {
    let bed = mirrored("cli").await?;
    let plane = shared_control_plane().await?;
    let dir = tempfile::tempdir()?;
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_cephdr"), dir.path().join("kubectl-cephdr"))?;
    let path = std::env::join_paths(
        std::iter::once(dir.path().to_path_buf()).chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )),
    )?;
    let kubectl = |args: &[&str]| {
        let mut command = Command::from(plane.kubectl());
        command.args(args).env("PATH", &path);
        command
    };

    let status = run(kubectl(&["cephdr", "status", "-n", &bed.ns, "-o", "json"])).await?;
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    let report: Report = serde_json::from_str(&status.stdout)?;
    assert_eq!(report.sites.len(), 2);
    assert_eq!(report.pools[0].images[0].name, "db");
    let table = run(kubectl(&["cephdr", "status", "-n", &bed.ns])).await?;
    assert!(
        table
            .lines()
            .iter()
            .any(|l| l.starts_with("rbd db site-a replaying ")),
        "{}",
        table.stdout
    );

    let help = run(kubectl(&["cephdr", "failover", "--help"])).await?;
    assert!(
        help.stdout.contains("Usage: kubectl cephdr failover"),
        "{}",
        help.stdout
    );
    let plugins = run(kubectl(&["plugin", "list"])).await?;
    assert!(plugins.stdout.contains("kubectl-cephdr"), "{}", plugins.stdout);
    Ok(())
}

#[tokio::test]
async fn sync_restore_needs_a_source_and_names_a_missing_s3_key_or_an_unreachable_bucket() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("db.img");
    let restore = |extra: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cephdr"));
        command
            .args(["sync", "restore", "--image", "rbd/db", "--snap", "s1", "--out"])
            .arg(&out)
            .args(extra)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY");
        command
    };
    let no_source = run(restore(&[])).await?;
    assert_eq!(no_source.code, Some(2), "{}", no_source.stderr);
    assert!(no_source.stderr.contains("--backup-dir"), "{}", no_source.stderr);

    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let endpoint = format!("http://{closed}");
    let s3 = ["--s3-endpoint", &endpoint, "--s3-bucket", "vault"];
    let no_key = run(restore(&s3)).await?;
    assert_eq!(no_key.code, Some(1), "{}", no_key.stderr);
    assert!(no_key.stderr.contains("AWS_ACCESS_KEY_ID"), "{}", no_key.stderr);

    let mut unreachable = restore(&s3);
    unreachable
        .env("AWS_ACCESS_KEY_ID", "key")
        .env("AWS_SECRET_ACCESS_KEY", "secret");
    let unreachable = run(unreachable).await?;
    assert_eq!(unreachable.code, Some(1), "{}", unreachable.stderr);
    assert!(
        unreachable.stderr.contains("download /rbd/db/manifest.json"),
        "{}",
        unreachable.stderr
    );
    assert!(!unreachable.stderr.contains("secret"), "{}", unreachable.stderr);
    assert!(!out.exists(), "nothing is written when nothing could be fetched");
    Ok(())
}
