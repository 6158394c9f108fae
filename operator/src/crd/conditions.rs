//! Status conditions: a list-map keyed by `type`, as Kubernetes API conventions ask, so server-side
//! apply merges one condition without touching the others.

use schemars::Schema;
use schemars::generate::SchemaGenerator;
use schemars::json_schema;

/// Schema for `status.conditions`: metav1.Condition items, `x-kubernetes-list-type: map` keyed by `type`.
pub fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let item = generator
        .subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>()
        .to_value();
    json_schema!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": item,
    })
}
