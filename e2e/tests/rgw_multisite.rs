//! RGW multisite configured by cephdr alone on two real Ceph sites: a `CephRealm` and two `CephZone`s make
//! the realm, zonegroup, zones and sync user, commit the periods and pull the realm on B with keys the
//! operator generated; the realm's sync policy replicates one bucket and not another: objects PUT on A in
//! the enabled bucket read back identical from B, the other bucket's stay on A, and the secondary reports
//! caught up. Planned failovers move the master to B and back, with objects written on either master read
//! back from the other site. Deleting the secondary `CephZone` then takes it out of the period and off its
//! site.
//!
//! The policy is the shape Pacific honours for "only these buckets": the zonegroup's group `allowed` and an
//! `enabled` bucket-level group per replicated bucket. A bucket-level `forbidden` group under an `enabled`
//! zonegroup group does not stop sync on 16.2.15 (measured; ceph/ceph#49803 added that later).

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use cephdr::api::{
    conditions,
    failover_request::{FailoverPhase, FailoverRequest},
    zone::ZoneRole,
    CephRealm, CephZone,
};
use cephdr_e2e::{
    operator::OperatorStack, process::free_port, shared_ceph_sites, shared_control_plane, unique_name,
    CephSite,
};
use kube::api::{Patch, PatchParams};
use rand::RngCore;
use serde_json::json;

const REALM: &str = "geo";
const ZONE_GROUP: &str = "zg";
/// Real RGW needs a few seconds per period commit and sync round on a loaded CI machine.
const CONVERGE: Duration = Duration::from_secs(180);

/// The zonegroup's policy: sync between the zones is allowed for every bucket, and enabled for `enabled`.
fn zone_groups(enabled: Option<&str>) -> serde_json::Value {
    let every_bucket = json!([{"id": "all", "sourceZones": ["*"], "destZones": ["*"]}]);
    let mut groups = vec![json!({"id": "allowed", "status": "allowed",
        "flows": [{"id": "mirror", "type": "symmetrical", "zones": ["east", "west"]}],
        "pipes": every_bucket})];
    groups.extend(enabled.map(
        |bucket| json!({"id": "enabled", "status": "enabled", "bucket": bucket, "pipes": every_bucket}),
    ));
    json!([{"name": ZONE_GROUP, "master": true, "syncPolicy": {"groups": groups}}])
}

fn zone_manifest(name: &str, site: &str, master: bool, endpoint: &str) -> serde_json::Value {
    json!({"metadata": {"name": name}, "spec": {
        "realm": REALM, "zoneGroup": ZONE_GROUP, "site": site, "master": master,
        "endpoints": [endpoint], "rpoSeconds": 300, "deletionPolicy": "Delete"}})
}

/// Waits until the zone is Ready: created in Ceph and in the committed period. On failure the error carries
/// what `radosgw-admin` says on the zone's site.
async fn zone_ready(stack: &OperatorStack, name: &str, site: &CephSite) -> Result<CephZone> {
    stack
        .ns
        .wait::<CephZone>(name, "Ready", CONVERGE, |zone| {
            zone.status
                .as_ref()
                .is_some_and(|status| conditions::is_true(&status.conditions, conditions::READY))
        })
        .await
        .with_context(|| rgw_state(site))
}

/// Polls `bucket` until `key` reads back as `body`; on failure the error carries `site`'s RGW log.
async fn read_back(bucket: &s3::Bucket, key: &str, body: &[u8], site: &CephSite) -> Result<()> {
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        match bucket.get_object(key).await {
            Ok(got) if got.as_slice() == body => return Ok(()),
            Ok(got) => bail!("{key} read back as {} other bytes", got.as_slice().len()),
            Err(error) if tokio::time::Instant::now() > deadline => {
                bail!("{key} never read back: {error}; {}", site.daemon_log("rgw", 20))
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// The id of `zone` as `site` knows it (periods name their master zone by id).
fn zone_id(site: &CephSite, zone: &str) -> Result<String> {
    let shown: serde_json::Value = serde_json::from_str(&site.radosgw_admin(&[
        "zone",
        "get",
        &format!("--rgw-realm={REALM}"),
        &format!("--rgw-zone={zone}"),
    ])?)?;
    shown["id"]
        .as_str()
        .map(str::to_string)
        .context("zone get shows an id")
}

/// The realm as `radosgw-admin` shows it on `site`, for failure messages.
fn rgw_state(site: &CephSite) -> String {
    let realm = format!("--rgw-realm={REALM}");
    [
        vec!["realm", "list"],
        vec!["zone", "list", &realm],
        vec!["zonegroup", "list", &realm],
        vec!["period", "get", &realm],
        vec!["user", "list", &realm],
    ]
    .iter()
    .map(|args| match site.radosgw_admin(args) {
        Ok(out) => format!("radosgw-admin {}:\n{out}", args.join(" ")),
        Err(error) => format!("radosgw-admin {}: {error:#}", args.join(" ")),
    })
    .collect::<Vec<_>>()
    .join("\n")
}

async fn realm_ready(stack: &OperatorStack, generation: i64) -> Result<CephRealm> {
    stack
        .ns
        .wait::<CephRealm>(REALM, "Ready", CONVERGE, |realm| {
            realm.status.as_ref().is_some_and(|s| {
                s.observed_generation == Some(generation)
                    && conditions::is_true(&s.conditions, conditions::READY)
            })
        })
        .await
}

/// The zones `radosgw-admin sync info` on `site` names as sources of `bucket`: its view of the policy.
fn sync_sources(site: &CephSite, zone: &str, bucket: &str) -> Result<Vec<String>> {
    let info: serde_json::Value = serde_json::from_str(&site.radosgw_admin(&[
        "sync",
        "info",
        &format!("--bucket={bucket}"),
        &format!("--rgw-realm={REALM}"),
        &format!("--rgw-zone={zone}"),
    ])?)?;
    let sources = info["sources"].as_array().context("sync info sources")?;
    let mut zones: Vec<String> = sources
        .iter()
        .filter_map(|pipe| pipe["source"]["zone"].as_str().map(str::to_string))
        .collect();
    zones.sort_unstable();
    zones.dedup();
    Ok(zones)
}

async fn wait_until_ok(what: &str, probe: impl Fn() -> Result<bool>) -> Result<()> {
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while !probe().unwrap_or(false) {
        if tokio::time::Instant::now() > deadline {
            bail!("not {what} after {CONVERGE:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

fn credentials(keys: &(String, String)) -> Result<s3::creds::Credentials> {
    Ok(s3::creds::Credentials::new(
        Some(&keys.0),
        Some(&keys.1),
        None,
        None,
        None,
    )?)
}

fn region(endpoint: &str) -> s3::Region {
    s3::Region::Custom {
        region: ZONE_GROUP.into(),
        endpoint: endpoint.into(),
    }
}

/// An S3 user made on the master zone (metadata sync carries it to B).
fn s3_user(site: &CephSite) -> Result<(String, String)> {
    site.create_s3_user(
        &unique_name("app"),
        &[&format!("--rgw-realm={REALM}"), "--rgw-zone=east"],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn realm_and_zones_replicate_the_bucket_their_policy_enables_and_not_another() -> Result<()> {
    let plane = shared_control_plane().await?;
    let sites = shared_ceph_sites().await?;
    let stack = OperatorStack::start(plane, [&sites.a, &sites.b], "rgw-e2e").await?;
    let (port_a, port_b) = (free_port(&sites.a.ip)?, free_port(&sites.b.ip)?);
    let (url_a, url_b) = (
        format!("http://{}:{port_a}", sites.a.ip),
        format!("http://{}:{port_b}", sites.b.ip),
    );
    stack
        .ns
        .create::<CephRealm>(json!({"metadata": {"name": REALM}, "spec": {
            "zoneGroups": zone_groups(None), "deletionPolicy": "Delete"}}))
        .await?;
    stack
        .ns
        .create::<CephZone>(zone_manifest("east", "site-a", true, &url_a))
        .await?;
    stack
        .ns
        .create::<CephZone>(zone_manifest("west", "site-b", false, &url_b))
        .await?;

    // RGW serves a zone once the zone exists; B pulls the realm through A's RGW.
    let east = zone_ready(&stack, "east", &sites.a).await?;
    assert_eq!(east.status.and_then(|s| s.role), Some(ZoneRole::Master));
    let site_a = &sites.a;
    tokio::task::spawn_blocking(move || site_a.start_zone_rgw(REALM, "east", port_a)).await??;
    // B's RGW serves west once west is in B's committed period; metadata sync then brings the sync user.
    let in_period = "\"name\": \"west\"";
    wait_until_ok("west in the period on site B", || {
        Ok(sites
            .b
            .radosgw_admin(&["period", "get", &format!("--rgw-realm={REALM}")])?
            .contains(in_period))
    })
    .await
    .with_context(|| rgw_state(&sites.b))?;
    let site_b = &sites.b;
    tokio::task::spawn_blocking(move || site_b.start_zone_rgw(REALM, "west", port_b)).await??;
    zone_ready(&stack, "west", &sites.b).await?;
    let realm = realm_ready(&stack, 1).await?;
    let period = realm.status.context("realm status")?;
    assert!(period.realm_id.is_some(), "the realm id is reported: {period:?}");

    // Two buckets; the policy, a resource change, enables sync of one (a bucket-level group needs its bucket).
    let keys = s3_user(&sites.a)?;
    let (name, excluded) = (unique_name("photos"), unique_name("scratch"));
    let mut on_a = Vec::new();
    for bucket in [&name, &excluded] {
        let created = s3::Bucket::create_with_path_style(
            bucket,
            region(&url_a),
            credentials(&keys)?,
            s3::BucketConfiguration::default(),
        )
        .await?;
        on_a.push(created.bucket);
    }
    let patch = json!({"spec": {"zoneGroups": zone_groups(Some(&name))}});
    let patched = stack
        .ns
        .api::<CephRealm>()
        .patch(REALM, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    realm_ready(&stack, patched.metadata.generation.context("generation")?).await?;
    // RGW on B syncs what its copy of the bucket's policy enables when a change arrives, and that copy comes
    // by metadata sync: an object PUT before it is there stays behind.
    wait_until_ok("the enabled bucket's policy on site B", || {
        Ok(sync_sources(&sites.b, "west", &name)? == ["east"])
    })
    .await
    .with_context(|| rgw_state(&sites.b))?;
    assert_eq!(sync_sources(&sites.b, "west", &excluded)?, Vec::<String>::new());

    // The excluded bucket's object is PUT first, so once the other one and data sync have caught up on B
    // it has had every chance to arrive.
    let kept_out = b"not for site b".to_vec();
    on_a[1].put_object("/draft.txt", &kept_out).await?;
    let mut body = vec![0u8; 1 << 20];
    rand::rng().fill_bytes(&mut body);
    on_a[0].put_object("/2026/cat.jpg", &body).await?;
    let on_b = s3::Bucket::new(&name, region(&url_b), credentials(&keys)?)?.with_path_style();
    read_back(&on_b, "/2026/cat.jpg", &body, &sites.b).await?;

    // The secondary reports its sync as caught up.
    let west = stack
        .ns
        .wait::<CephZone>("west", "Synced", CONVERGE, |zone| {
            zone.status
                .as_ref()
                .is_some_and(|status| conditions::is_true(&status.conditions, conditions::SYNCED))
        })
        .await?;
    let status = west.status.context("west status")?;
    assert_eq!(status.role, Some(ZoneRole::Secondary));
    let sync = status.sync.context("sync figures")?;
    assert_eq!(
        sync.metadata.map(|m| m.behind_shards),
        Some(0),
        "metadata caught up"
    );
    assert!(
        sync.data
            .iter()
            .any(|d| d.source == "east" && d.behind_shards == 0),
        "data caught up from east: {:?}",
        sync.data
    );

    // The condition may come from a probe older than the PUTs: ask RGW on B itself, now that both are in A's
    // data log, whether it has processed everything up to A's current markers.
    wait_until_ok("data sync on B caught up with A's log", || {
        let status = sites.b.radosgw_admin(&[
            "sync",
            "status",
            &format!("--rgw-realm={REALM}"),
            "--rgw-zone=west",
        ])?;
        Ok(status.contains("data is caught up with source"))
    })
    .await
    .with_context(|| rgw_state(&sites.b))?;

    // B, caught up, has the excluded bucket (metadata syncs regardless of policy) but not its object.
    let excluded_on_b = s3::Bucket::new(&excluded, region(&url_b), credentials(&keys)?)?.with_path_style();
    let (listing, _) = excluded_on_b
        .list_page(String::new(), None, None, None, None)
        .await?;
    assert_eq!(listing.name, excluded, "the excluded bucket exists on B");
    assert!(
        listing.contents.is_empty(),
        "the excluded bucket's objects reached B: {:?}",
        listing.contents.iter().map(|o| &o.key).collect::<Vec<_>>()
    );
    assert!(
        excluded_on_b.get_object("/draft.txt").await.is_err(),
        "the excluded object reads back from B"
    );
    assert_eq!(
        on_a[1].get_object("/draft.txt").await?.as_slice(),
        kept_out.as_slice(),
        "the excluded object is on A"
    );

    // The master moves to B by a planned failover of the realm, then back. The zones' own controllers leave
    // it where the failover put it (their spec.master only places it when they join), and each time an
    // object PUT on the new master reads back from the other site.
    let zones = [
        ("east", "site-a", &sites.a, &on_a[0]),
        ("west", "site-b", &sites.b, &on_b),
    ];
    for (request, [(new_master, target, target_bed, writer), (old_master, _, reader_bed, reader)]) in [
        ("geo-to-b", [zones[1], zones[0]]),
        ("geo-to-a", [zones[0], zones[1]]),
    ] {
        stack
            .ns
            .create::<FailoverRequest>(json!({"metadata": {"name": request}, "spec": {
                "action": "planned", "targetSite": target, "targets": {"realms": [REALM]}}}))
            .await?;
        let status = stack.finished(request).await?.status.context("status")?;
        assert_eq!(status.phase, FailoverPhase::Completed, "{status:#?}");
        for (zone, role) in [(new_master, ZoneRole::Master), (old_master, ZoneRole::Secondary)] {
            stack
                .ns
                .wait::<CephZone>(zone, "its new role", CONVERGE, |z| {
                    z.status.as_ref().is_some_and(|s| s.role == Some(role))
                })
                .await?;
        }
        let mut written = vec![0u8; 64 << 10];
        rand::rng().fill_bytes(&mut written);
        let key = format!("/after-{request}.bin");
        writer.put_object(&key, &written).await?;
        read_back(reader, &key, &written, reader_bed).await?;
        let period = target_bed.radosgw_admin(&["period", "get", &format!("--rgw-realm={REALM}")])?;
        assert!(
            period.contains(&format!(
                "\"master_zone\": \"{}\"",
                zone_id(target_bed, new_master)?
            )),
            "{new_master} is still the master after the round trip: {period}"
        );
    }

    // Deleting the secondary (deletionPolicy Delete) takes it out of the period on A and off B; the master
    // and its data stay.
    stack
        .ns
        .api::<CephZone>()
        .delete("west", &Default::default())
        .await?;
    stack.ns.wait_gone::<CephZone>("west", CONVERGE).await?;
    let realm = format!("--rgw-realm={REALM}");
    let period_on_a = sites.a.radosgw_admin(&["period", "get", &realm])?;
    assert!(
        !period_on_a.contains("\"name\": \"west\""),
        "west is still in the period on A: {period_on_a}"
    );
    let zones_on_b = sites.b.radosgw_admin(&["zone", "list", &realm])?;
    assert!(
        !zones_on_b.contains("\"west\""),
        "west is still on B: {zones_on_b}"
    );
    assert_eq!(
        on_a[0].get_object("/2026/cat.jpg").await?.as_slice(),
        body.as_slice(),
        "the master keeps its data"
    );
    Ok(())
}
