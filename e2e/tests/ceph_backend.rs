//! The Ceph CLI backend against a real cluster: every step it runs is observed back through the same
//! trait, and running a step twice changes nothing (the planners rely on both).

use anyhow::Result;
use cephdr::agent::{ceph::CephCli, ClusterAgent, Sensitive, Step, SystemKeys};
use cephdr_e2e::{process::random_hex, shared_ceph_sites};

fn backend(site: &cephdr_e2e::CephSite) -> CephCli {
    CephCli::new("site-a")
        .with_conf(&site.conf)
        .with_keyring(&site.keyring)
}

#[tokio::test]
async fn master_zone_steps_are_observed_back_and_idempotent() -> Result<()> {
    let sites = shared_ceph_sites().await?;
    let agent = backend(&sites.a);
    let realm = format!("r{}", random_hex(3)?);
    let keys = SystemKeys {
        access_key: format!("AK{}", random_hex(8)?.to_uppercase()),
        secret_key: Sensitive(random_hex(20)?),
    };
    let endpoint = "http://127.0.0.1:1".to_string();
    let steps = [
        Step::CreateRealm { realm: realm.clone() },
        Step::CreateZoneGroup {
            realm: realm.clone(),
            zone_group: "zg".into(),
            endpoints: vec![endpoint.clone()],
            master: true,
        },
        Step::CreateZone {
            realm: realm.clone(),
            zone_group: "zg".into(),
            zone: "east".into(),
            endpoints: vec![endpoint.clone()],
            master: true,
            read_only: false,
            keys: keys.clone(),
        },
        Step::CreateSystemUser {
            uid: format!("sync-{realm}"),
            keys: keys.clone(),
        },
        Step::CommitPeriod { realm: realm.clone() },
    ];
    for step in &steps {
        agent.execute(step).await?;
    }
    let state = agent.rgw_realm(&realm).await?;
    assert!(state.realm_id.is_some(), "{state:#?}");
    let local = state.local_zones.iter().find(|zone| zone.name == "east");
    let local = local.unwrap_or_else(|| panic!("east is a local zone: {state:#?}"));
    assert_eq!(local.zone_group, "zg", "{state:#?}");
    assert_eq!(local.system_access_key.as_deref(), Some(keys.access_key.as_str()));
    assert_eq!(
        state.system_user.as_deref(),
        Some(format!("sync-{realm}").as_str()),
        "{state:#?}"
    );
    let period = state.period.clone().expect("a committed period");
    assert_eq!(period.master_zone, "east", "{period:#?}");
    assert_eq!(period.master_zone_group, "zg", "{period:#?}");
    let group = period
        .zone_groups
        .iter()
        .find(|group| group.name == "zg")
        .expect("zg in the period");
    assert!(group
        .zones
        .iter()
        .any(|zone| zone.name == "east" && zone.endpoints == [endpoint.clone()]));

    // Again: nothing changes, the period stays at its epoch.
    for step in &steps[..4] {
        agent.execute(step).await?;
    }
    let again = agent.rgw_realm(&realm).await?;
    assert_eq!(
        again.period.map(|p| (p.id, p.epoch)),
        Some((period.id, period.epoch))
    );
    agent.execute(&Step::DeleteRealm { realm: realm.clone() }).await?;
    Ok(())
}
