//! Rendered manifests as JSON values, and the questions tests ask of them.

use serde_json::Value;

use crate::{Error, Result};

/// Every object of a multi-document YAML stream (empty documents, e.g. comment-only ones, dropped).
pub fn parse(yaml: &str) -> Result<Vec<Value>> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(yaml).map_err(|e| Error::Yaml {
        what: "rendered manifests".into(),
        message: e.to_string(),
    })?;
    Ok(documents.into_iter().filter(|d| !d.is_null()).collect())
}

pub fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

pub fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

pub fn namespace(object: &Value) -> Option<&str> {
    object["metadata"]["namespace"].as_str()
}

/// `Kind/name`, for messages.
pub fn id(object: &Value) -> String {
    format!("{}/{}", kind(object), name(object))
}

/// All objects of `kind`.
pub fn of_kind<'a>(objects: &'a [Value], kind_name: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| kind(o) == kind_name).collect()
}

/// The one object of `kind`; panics (a test failure) with the kinds present otherwise.
pub fn single<'a>(objects: &'a [Value], kind_name: &str) -> &'a Value {
    let found = of_kind(objects, kind_name);
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind_name}, rendered: {:?}",
        objects.iter().map(id).collect::<Vec<_>>()
    );
    found[0]
}

/// The pod specs of every workload object (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet,
/// Job, CronJob), with the object's id.
pub fn pod_specs(objects: &[Value]) -> Vec<(String, &Value)> {
    objects
        .iter()
        .filter_map(|object| {
            let spec = match kind(object) {
                "Pod" => &object["spec"],
                "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
                    &object["spec"]["template"]["spec"]
                }
                "CronJob" => &object["spec"]["jobTemplate"]["spec"]["template"]["spec"],
                _ => return None,
            };
            Some((id(object), spec))
        })
        .collect()
}

/// A container's environment as (name, value) for plain values; references read as `None`.
pub fn env(container: &Value) -> Vec<(String, Option<String>)> {
    container["env"]
        .as_array()
        .map(|vars| {
            vars.iter()
                .map(|var| {
                    (
                        var["name"].as_str().unwrap_or_default().to_string(),
                        var["value"].as_str().map(str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The plain value of env var `name` in `container`.
pub fn env_value(container: &Value, name: &str) -> Option<String> {
    env(container)
        .into_iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v)
}

/// Strings of a JSON array (empty when absent).
pub fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stream_with_comment_only_documents() {
        let yaml = "---\n# Source: x\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n# only a comment\n---\nkind: Pod\nmetadata: {name: b}\nspec: {containers: []}\n";
        let objects = parse(yaml).unwrap();
        assert_eq!(
            objects.iter().map(id).collect::<Vec<_>>(),
            ["ConfigMap/a", "Pod/b"]
        );
        assert_eq!(pod_specs(&objects).len(), 1);
    }

    #[test]
    fn env_distinguishes_values_from_references() {
        let container = serde_json::json!({"env": [
            {"name": "A", "value": "1"},
            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        ]});
        assert_eq!(env_value(&container, "A").as_deref(), Some("1"));
        assert_eq!(env_value(&container, "B"), None);
        assert_eq!(env(&container).len(), 2);
    }
}
