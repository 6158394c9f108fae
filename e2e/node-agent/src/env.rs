//! Container environment exactly as the kubelet builds it: `envFrom` first, then `env` (later
//! entries win), `$(VAR)` references expanded against what is defined so far, and the same
//! expansion applied to `command` and `args`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ObjectFieldSelector, Pod, ResourceFieldSelector, Secret,
};

use crate::{Error, Result, quantity};

/// Secrets and ConfigMaps of the pod's namespace that the pod references, fetched beforehand.
/// A name maps to `None` when the object does not exist.
#[derive(Debug, Default, Clone)]
pub struct Objects {
    pub secrets: BTreeMap<String, Option<Secret>>,
    pub config_maps: BTreeMap<String, Option<ConfigMap>>,
}

impl Objects {
    /// The string data of a Secret (`data` is base64 on the wire; k8s-openapi decodes it).
    pub fn secret_data(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let secret = self.secrets.get(name)?.as_ref()?;
        let mut out: BTreeMap<String, Vec<u8>> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        for (k, v) in secret.string_data.iter().flatten() {
            out.insert(k.clone(), v.clone().into_bytes());
        }
        Some(out)
    }

    pub fn config_map_data(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let cm = self.config_maps.get(name)?.as_ref()?;
        let mut out: BTreeMap<String, Vec<u8>> = cm
            .binary_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        for (k, v) in cm.data.iter().flatten() {
            out.insert(k.clone(), v.clone().into_bytes());
        }
        Some(out)
    }
}

/// The names of Secrets and ConfigMaps that env, envFrom and volumes of `pod` reference.
pub fn referenced_objects(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let mut secrets = Vec::new();
    let mut config_maps = Vec::new();
    let Some(spec) = pod.spec.as_ref() else {
        return (secrets, config_maps);
    };
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers);
    for c in containers {
        for from in c.env_from.iter().flatten() {
            if let Some(s) = &from.secret_ref {
                secrets.push(s.name.clone());
            }
            if let Some(cm) = &from.config_map_ref {
                config_maps.push(cm.name.clone());
            }
        }
        for var in c.env.iter().flatten() {
            if let Some(from) = &var.value_from {
                if let Some(s) = &from.secret_key_ref {
                    secrets.push(s.name.clone());
                }
                if let Some(cm) = &from.config_map_key_ref {
                    config_maps.push(cm.name.clone());
                }
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.push(s);
        }
        if let Some(cm) = &v.config_map {
            config_maps.push(cm.name.clone());
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(s) = &source.secret {
                secrets.push(s.name.clone());
            }
            if let Some(cm) = &source.config_map {
                config_maps.push(cm.name.clone());
            }
        }
    }
    secrets.sort();
    secrets.dedup();
    config_maps.sort();
    config_maps.dedup();
    (secrets, config_maps)
}

/// Env var names the kubelet accepts from envFrom (C_IDENTIFIER-ish: no `=` and not empty).
fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('=') && !name.contains('\0')
}

/// The container's environment, in the order the kubelet would pass it.
pub fn container_env(
    pod: &Pod,
    container: &Container,
    objects: &Objects,
    node_allocatable: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(slot) = env.iter_mut().find(|(name, _)| *name == k) {
            slot.1 = v;
        } else {
            env.push((k, v));
        }
    };
    let config_error = |msg: String| Error::ContainerConfig(msg);

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(s) = &from.secret_ref {
            match objects.secret_data(&s.name) {
                Some(d) => d,
                None if s.optional == Some(true) => continue,
                None => return Err(config_error(format!("secret \"{}\" not found", s.name))),
            }
        } else if let Some(cm) = &from.config_map_ref {
            match objects.config_map_data(&cm.name) {
                Some(d) => d,
                None if cm.optional == Some(true) => continue,
                None => return Err(config_error(format!("configmap \"{}\" not found", cm.name))),
            }
        } else {
            continue;
        };
        for (key, value) in data {
            let name = format!("{prefix}{key}");
            if valid_env_name(&name) {
                set(&mut env, name, String::from_utf8_lossy(&value).into_owned());
            }
        }
    }

    for var in container.env.iter().flatten() {
        let value = if let Some(from) = &var.value_from {
            if let Some(r) = &from.secret_key_ref {
                match objects.secret_data(&r.name).map(|d| d.get(&r.key).cloned()) {
                    Some(Some(v)) => String::from_utf8_lossy(&v).into_owned(),
                    _ if r.optional == Some(true) => continue,
                    Some(None) => {
                        return Err(config_error(format!(
                            "couldn't find key {} in Secret {}",
                            r.key, r.name
                        )));
                    }
                    None => return Err(config_error(format!("secret \"{}\" not found", r.name))),
                }
            } else if let Some(r) = &from.config_map_key_ref {
                match objects
                    .config_map_data(&r.name)
                    .map(|d| d.get(&r.key).cloned())
                {
                    Some(Some(v)) => String::from_utf8_lossy(&v).into_owned(),
                    _ if r.optional == Some(true) => continue,
                    Some(None) => {
                        return Err(config_error(format!(
                            "couldn't find key {} in ConfigMap {}",
                            r.key, r.name
                        )));
                    }
                    None => {
                        return Err(config_error(format!("configmap \"{}\" not found", r.name)));
                    }
                }
            } else if let Some(r) = &from.field_ref {
                field_value(pod, r)?
            } else if let Some(r) = &from.resource_field_ref {
                resource_value(pod, Some(&container.name), r, node_allocatable)?
            } else {
                String::new()
            }
        } else {
            // Only plain values are expanded; valueFrom results are taken literally.
            let lookup: BTreeMap<&str, &str> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            expand(var.value.as_deref().unwrap_or(""), &lookup)
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

/// `command` and `args` with `$(VAR)` expanded against the final environment.
pub fn expand_all(words: &[String], env: &[(String, String)]) -> Vec<String> {
    let lookup: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    words.iter().map(|w| expand(w, &lookup)).collect()
}

/// Kubernetes' `$(VAR)` expansion: `$$` escapes a `$`, unknown references stay as written.
pub fn expand(input: &str, vars: &BTreeMap<&str, &str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match vars.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A `fieldRef` value (env and downward API).
pub fn field_value(pod: &Pod, selector: &ObjectFieldSelector) -> Result<String> {
    let meta = &pod.metadata;
    let path = selector.field_path.as_str();
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| -> Option<String> {
        let key = path
            .strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    let status = pod.status.as_ref();
    let spec = pod.spec.as_ref();
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => render_map(meta.labels.as_ref()),
        "metadata.annotations" => render_map(meta.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        // Every pod of this node shares the host's loopback address.
        "status.hostIP" | "status.podIP" => status
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_else(|| crate::POD_IP.to_owned()),
        "status.hostIPs" | "status.podIPs" => crate::POD_IP.to_owned(),
        _ => keyed("metadata.labels", meta.labels.as_ref())
            .or_else(|| keyed("metadata.annotations", meta.annotations.as_ref()))
            .ok_or_else(|| Error::ContainerConfig(format!("unsupported fieldPath {path:?}")))?,
    };
    Ok(value)
}

fn render_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.clone())))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `resourceFieldRef` value: the container's limit/request divided by `divisor`, rounded up;
/// an unset limit is the node's allocatable amount, as on a real node.
pub fn resource_value(
    pod: &Pod,
    default_container: Option<&str>,
    selector: &ResourceFieldSelector,
    node_allocatable: &BTreeMap<String, String>,
) -> Result<String> {
    let name = selector
        .container_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .or(default_container)
        .ok_or_else(|| Error::ContainerConfig("resourceFieldRef without containerName".into()))?;
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| Error::ContainerConfig("pod has no spec".into()))?;
    let container = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
        .ok_or_else(|| {
            Error::ContainerConfig(format!("resourceFieldRef: no container {name:?}"))
        })?;
    let (kind, resource) = selector.resource.split_once('.').ok_or_else(|| {
        Error::ContainerConfig(format!("unsupported resource {:?}", selector.resource))
    })?;
    let resources = container.resources.as_ref();
    let from = match kind {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => None,
    };
    let quantity = from
        .and_then(|m| m.get(resource))
        .map(|q| q.0.clone())
        .or_else(|| match kind {
            "limits" => node_allocatable.get(resource).cloned(),
            // An unset request of cpu/memory reads as 0 (cpu then rounds up to 1).
            _ => Some("0".to_owned()),
        })
        .ok_or_else(|| {
            Error::ContainerConfig(format!("unsupported resource {:?}", selector.resource))
        })?;
    let value = quantity::parse(&quantity)
        .ok_or_else(|| Error::ContainerConfig(format!("invalid quantity {quantity:?}")))?;
    let divisor = match &selector.divisor {
        Some(d) => quantity::parse(&d.0)
            .filter(|d| *d > 0.0)
            .ok_or_else(|| Error::ContainerConfig(format!("invalid divisor {:?}", d.0)))?,
        None => 1.0,
    };
    Ok(quantity::divide_ceil(value, divisor, resource == "cpu").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        EnvFromSource, EnvVar, EnvVarSource, PodSpec, SecretEnvSource, SecretKeySelector,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn vars(pairs: &[(&'static str, &'static str)]) -> BTreeMap<&'static str, &'static str> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let v = vars(&[("A", "x"), ("B", "y")]);
        assert_eq!(expand("$(A)-$(B)", &v), "x-y");
        assert_eq!(expand("$$(A)", &v), "$(A)");
        assert_eq!(expand("$(C)", &v), "$(C)");
        assert_eq!(expand("$A $", &v), "$A $");
        assert_eq!(expand("$(A", &v), "$(A");
    }

    #[test]
    fn env_order_and_overrides() {
        let secret = Secret {
            data: Some(
                [(
                    "TOKEN".to_owned(),
                    k8s_openapi::ByteString(b"s3cret".to_vec()),
                )]
                .into_iter()
                .collect(),
            ),
            ..Secret::default()
        };
        let objects = Objects {
            secrets: [("creds".to_owned(), Some(secret))].into_iter().collect(),
            config_maps: BTreeMap::new(),
        };
        let container = Container {
            name: "c".into(),
            env_from: Some(vec![EnvFromSource {
                prefix: Some("P_".into()),
                secret_ref: Some(SecretEnvSource {
                    name: "creds".into(),
                    optional: None,
                }),
                ..EnvFromSource::default()
            }]),
            env: Some(vec![
                EnvVar {
                    name: "A".into(),
                    value: Some("a".into()),
                    value_from: None,
                },
                EnvVar {
                    name: "B".into(),
                    value: Some("$(A)-$(P_TOKEN)".into()),
                    value_from: None,
                },
                EnvVar {
                    name: "NAME".into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.name".into(),
                            api_version: None,
                        }),
                        ..EnvVarSource::default()
                    }),
                },
                EnvVar {
                    name: "MISSING".into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "nope".into(),
                            key: "k".into(),
                            optional: Some(true),
                        }),
                        ..EnvVarSource::default()
                    }),
                },
            ]),
            ..Container::default()
        };
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("p1".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![container.clone()],
                ..PodSpec::default()
            }),
            status: None,
        };
        let env = container_env(&pod, &container, &objects, &BTreeMap::new()).unwrap();
        assert_eq!(
            env,
            vec![
                ("P_TOKEN".to_owned(), "s3cret".to_owned()),
                ("A".to_owned(), "a".to_owned()),
                ("B".to_owned(), "a-s3cret".to_owned()),
                ("NAME".to_owned(), "p1".to_owned()),
            ]
        );
        assert_eq!(expand_all(&["$(B)".to_owned()], &env), vec!["a-s3cret"]);

        let mut strict = container.clone();
        strict.env_from = None;
        strict.env = Some(vec![EnvVar {
            name: "X".into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: "nope".into(),
                    key: "k".into(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
        }]);
        assert!(matches!(
            container_env(&pod, &strict, &objects, &BTreeMap::new()),
            Err(Error::ContainerConfig(_))
        ));
    }
}
