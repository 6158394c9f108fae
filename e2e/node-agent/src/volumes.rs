//! Volumes of a pod materialised as host directories, ready to be bound into its containers.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    DownwardAPIVolumeFile, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, ServiceAccount,
    Volume,
};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::env::{Objects, field_value, resource_value};
use crate::{Error, Result};

/// A volume's host directory (or file) and whether every mount of it is read-only.
#[derive(Debug, Clone)]
pub struct HostVolume {
    pub path: PathBuf,
    /// Secret, configMap, downwardAPI and projected volumes are read-only on a real node.
    pub read_only: bool,
}

/// Prepares every volume of `pod` under `pod_dir/volumes/<name>`; PVCs resolve to the host
/// directory of their bound PersistentVolume (`hostPath` or `local`).
pub async fn prepare(
    client: &Client,
    pod: &Pod,
    objects: &Objects,
    pod_dir: &Path,
    node_allocatable: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, HostVolume>> {
    let mut out = BTreeMap::new();
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(out);
    };
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    for volume in spec.volumes.iter().flatten() {
        let dir = pod_dir.join("volumes").join(&volume.name);
        let prepared = prepare_one(
            client,
            pod,
            &namespace,
            volume,
            objects,
            &dir,
            node_allocatable,
        )
        .await
        .map_err(|e| match e {
            Error::Mount(msg) => Error::Mount(format!("volume {:?}: {msg}", volume.name)),
            other => other,
        })?;
        out.insert(volume.name.clone(), prepared);
    }
    Ok(out)
}

async fn prepare_one(
    client: &Client,
    pod: &Pod,
    namespace: &str,
    volume: &Volume,
    objects: &Objects,
    dir: &Path,
    node_allocatable: &BTreeMap<String, String>,
) -> Result<HostVolume> {
    let writable = |path: PathBuf| HostVolume {
        path,
        read_only: false,
    };
    let read_only = |path: PathBuf| HostVolume {
        path,
        read_only: true,
    };

    if volume.empty_dir.is_some() {
        create_dir(dir)?;
        // Containers may run as any uid; an emptyDir is world-writable on a real node too.
        set_mode(dir, 0o777)?;
        return Ok(writable(dir.to_owned()));
    }
    if let Some(source) = &volume.secret {
        let name = source.secret_name.clone().unwrap_or_default();
        fresh_dir(dir)?;
        match objects.secret_data(&name) {
            Some(data) => write_items(
                dir,
                &data,
                source.items.as_deref(),
                source.default_mode,
                source.optional,
            )?,
            None if source.optional == Some(true) => {}
            None => return Err(Error::Mount(format!("secret \"{name}\" not found"))),
        }
        return Ok(read_only(dir.to_owned()));
    }
    if let Some(source) = &volume.config_map {
        fresh_dir(dir)?;
        match objects.config_map_data(&source.name) {
            Some(data) => write_items(
                dir,
                &data,
                source.items.as_deref(),
                source.default_mode,
                source.optional,
            )?,
            None if source.optional == Some(true) => {}
            None => {
                return Err(Error::Mount(format!(
                    "configmap \"{}\" not found",
                    source.name
                )));
            }
        }
        return Ok(read_only(dir.to_owned()));
    }
    if let Some(source) = &volume.downward_api {
        fresh_dir(dir)?;
        write_downward(
            dir,
            pod,
            source.items.as_deref().unwrap_or_default(),
            source.default_mode,
            node_allocatable,
        )?;
        return Ok(read_only(dir.to_owned()));
    }
    if let Some(projected) = &volume.projected {
        fresh_dir(dir)?;
        for source in projected.sources.iter().flatten() {
            if let Some(s) = &source.secret {
                match objects.secret_data(&s.name) {
                    Some(data) => write_items(
                        dir,
                        &data,
                        s.items.as_deref(),
                        projected.default_mode,
                        s.optional,
                    )?,
                    None if s.optional == Some(true) => {}
                    None => return Err(Error::Mount(format!("secret \"{}\" not found", s.name))),
                }
            }
            if let Some(cm) = &source.config_map {
                match objects.config_map_data(&cm.name) {
                    Some(data) => write_items(
                        dir,
                        &data,
                        cm.items.as_deref(),
                        projected.default_mode,
                        cm.optional,
                    )?,
                    None if cm.optional == Some(true) => {}
                    None => {
                        return Err(Error::Mount(format!("configmap \"{}\" not found", cm.name)));
                    }
                }
            }
            if let Some(d) = &source.downward_api {
                write_downward(
                    dir,
                    pod,
                    d.items.as_deref().unwrap_or_default(),
                    projected.default_mode,
                    node_allocatable,
                )?;
            }
            if let Some(t) = &source.service_account_token {
                let token = request_token(
                    client,
                    pod,
                    namespace,
                    t.audience.clone(),
                    t.expiration_seconds,
                )
                .await?;
                write_file(
                    dir,
                    &t.path,
                    token.as_bytes(),
                    projected.default_mode.unwrap_or(0o644),
                )?;
            }
            if source.cluster_trust_bundle.is_some() || source.pod_certificate.is_some() {
                return Err(Error::Mount("clusterTrustBundle/podCertificate projections are not supported by the node agent".into()));
            }
        }
        return Ok(read_only(dir.to_owned()));
    }
    if let Some(claim) = &volume.persistent_volume_claim {
        let path = claim_host_path(client, namespace, &claim.claim_name).await?;
        return Ok(HostVolume {
            path,
            read_only: claim.read_only == Some(true),
        });
    }
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        if matches!(host.type_.as_deref(), Some("DirectoryOrCreate")) {
            create_dir(&path)?;
        }
        if !path.exists() {
            return Err(Error::Mount(format!(
                "hostPath {} does not exist",
                host.path
            )));
        }
        return Ok(writable(path));
    }
    Err(Error::Mount(
        "volume type not supported by the node agent".into(),
    ))
}

/// The host directory behind a bound claim: its PersistentVolume's `hostPath` or `local` path.
async fn claim_host_path(client: &Client, namespace: &str, claim: &str) -> Result<PathBuf> {
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
        .get(claim)
        .await
        .map_err(|e| {
            Error::Mount(format!(
                "get persistentvolumeclaim {namespace}/{claim}: {e}"
            ))
        })?;
    let volume_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|_| pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
        .ok_or_else(|| {
            Error::Mount(format!(
                "persistentvolumeclaim {namespace}/{claim} is not bound yet"
            ))
        })?;
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&volume_name)
        .await
        .map_err(|e| Error::Mount(format!("get persistentvolume {volume_name}: {e}")))?;
    let spec = pv.spec.unwrap_or_default();
    let path = spec
        .host_path
        .map(|h| h.path)
        .or(spec.local.map(|l| l.path))
        .ok_or_else(|| {
            Error::Mount(format!(
                "persistentvolume {volume_name} is neither hostPath nor local"
            ))
        })?;
    let path = PathBuf::from(path);
    create_dir(&path)?;
    Ok(path)
}

/// A bound service-account token, as the kubelet requests for projected volumes.
async fn request_token(
    client: &Client,
    pod: &Pod,
    namespace: &str,
    audience: Option<String>,
    expiration_seconds: Option<i64>,
) -> Result<String> {
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            // No audience: the token is for the API server's own audiences, as the kubelet does.
            audiences: audience.filter(|a| !a.is_empty()).map(|a| vec![a]),
            expiration_seconds: Some(expiration_seconds.unwrap_or(3607)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        }),
        ..TokenRequest::default()
    };
    let api = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
    let response: TokenRequest = api
        .create_subresource("token", &account, &PostParams::default(), &request)
        .await
        .map_err(|e| {
            Error::Mount(format!(
                "request token for serviceaccount {namespace}/{account}: {e}"
            ))
        })?;
    response.status.and_then(|s| s.token).ok_or_else(|| {
        Error::Mount(format!(
            "token request for serviceaccount {namespace}/{account} returned no token"
        ))
    })
}

fn write_items(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: Option<bool>,
) -> Result<()> {
    let mode = default_mode.unwrap_or(0o644);
    match items {
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(value) => write_file(dir, &item.path, value, item.mode.unwrap_or(mode))?,
                    None if optional == Some(true) => {}
                    None => return Err(Error::Mount(format!("key {:?} not found", item.key))),
                }
            }
        }
        None => {
            for (key, value) in data {
                write_file(dir, key, value, mode)?;
            }
        }
    }
    Ok(())
}

fn write_downward(
    dir: &Path,
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
    node_allocatable: &BTreeMap<String, String>,
) -> Result<()> {
    for item in items {
        let value = if let Some(field) = &item.field_ref {
            field_value(pod, field)
        } else if let Some(resource) = &item.resource_field_ref {
            resource_value(pod, None, resource, node_allocatable)
        } else {
            Ok(String::new())
        }
        .map_err(|e| Error::Mount(e.to_string()))?;
        write_file(
            dir,
            &item.path,
            value.as_bytes(),
            item.mode.or(default_mode).unwrap_or(0o644),
        )?;
    }
    Ok(())
}

/// Writes `relative` under `dir`; the API server already rejects absolute paths and `..`, but the
/// agent checks again because it writes as root.
fn write_file(dir: &Path, relative: &str, contents: &[u8], mode: i32) -> Result<()> {
    let rel = Path::new(relative);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(Error::Mount(format!("invalid item path {relative:?}")));
    }
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    std::fs::write(&path, contents).map_err(|source| Error::Io {
        what: format!("write {}", path.display()),
        source,
    })?;
    set_mode(&path, (mode & 0o777) as u32)
}

fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|source| Error::Io {
            what: format!("clear {}", dir.display()),
            source,
        })?;
    }
    create_dir(dir)
}

pub fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        what: format!("create {}", dir.display()),
        source,
    })
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        Error::Io {
            what: format!("chmod {}", path.display()),
            source,
        }
    })
}
