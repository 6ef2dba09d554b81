//! Secrets cephdr reads (agent tokens, sync-user keys) and generates (sync-user keys).

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::Secret, ByteString};
use kube::{
    api::{Api, ObjectMeta, Patch, PatchParams},
    Client, Resource,
};
use rand::{distr::Alphanumeric, Rng};

use super::{
    error::{Error, Result},
    FIELD_MANAGER,
};
use crate::agent::{Sensitive, SystemKeys};

pub const ACCESS_KEY: &str = "access-key";
pub const SECRET_KEY: &str = "secret-key";

/// One key of a Secret as a string; `SecretMissing` when the Secret or key is absent.
pub async fn read_key(client: &Client, namespace: &str, name: &str, key: &str) -> Result<Sensitive<String>> {
    let missing = || Error::SecretMissing {
        name: name.into(),
        key: key.into(),
    };
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?
        .ok_or_else(missing)?;
    let bytes = secret.data.and_then(|mut d| d.remove(key)).ok_or_else(missing)?;
    String::from_utf8(bytes.0)
        .map(|s| Sensitive(s.trim_end().to_string()))
        .map_err(|_| missing())
}

/// The sync user's keys from `name`.
pub async fn read_system_keys(client: &Client, namespace: &str, name: &str) -> Result<SystemKeys> {
    let access_key = read_key(client, namespace, name, ACCESS_KEY).await?;
    let secret_key = read_key(client, namespace, name, SECRET_KEY).await?;
    Ok(SystemKeys {
        access_key: access_key.0,
        secret_key,
    })
}

/// Creates the Secret `name` with fresh S3 keys, owned by `owner`, unless it exists (keys are never
/// rotated behind a running multisite's back).
pub async fn ensure_system_keys<K: Resource<DynamicType = ()>>(
    client: &Client,
    owner: &K,
    namespace: &str,
    name: &str,
) -> Result<()> {
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    if api.get_opt(name).await?.is_some() {
        return Ok(());
    }
    // RGW access keys are 20 upper-case alphanumerics, secret keys 40 characters.
    let access: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(20)
        .map(|c| (c as char).to_ascii_uppercase())
        .collect();
    let secret: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    let data = BTreeMap::from([
        (ACCESS_KEY.into(), ByteString(access.into_bytes())),
        (SECRET_KEY.into(), ByteString(secret.into_bytes())),
    ]);
    apply_owned(client, owner, namespace, name, data).await?;
    Ok(())
}

/// Server-side applies the Secret `name` with `data` (whole: a key this manager wrote before and `data` lacks
/// is deleted), owned by `owner` so it goes with it, and labelled as cephdr's: the label is what puts it in
/// the controllers' cache of owned Secrets. Returns the Secret as written.
pub async fn apply_owned<K: Resource<DynamicType = ()>>(
    client: &Client,
    owner: &K,
    namespace: &str,
    name: &str,
    data: BTreeMap<String, ByteString>,
) -> Result<Secret> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            owner_references: owner.controller_owner_ref(&()).map(|o| vec![o]),
            labels: Some(BTreeMap::from([(super::MANAGED_BY.into(), FIELD_MANAGER.into())])),
            ..Default::default()
        },
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    Ok(Api::<Secret>::namespaced(client.clone(), namespace)
        .patch(name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&secret))
        .await?)
}
