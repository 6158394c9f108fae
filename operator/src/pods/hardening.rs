//! The security settings every sandboxed pod gets (DESIGN §5): Pod Security "restricted" plus no service
//! account token, no service links, a read-only root filesystem and the `outlayer.dev/sandbox` label that
//! the chart's default-deny NetworkPolicy selects.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, PodSecurityContext, SeccompProfile, SecurityContext,
};

/// Selected by the default-deny NetworkPolicy; the e2e node agent gives such pods no network.
pub const SANDBOX_LABEL: &str = "outlayer.dev/sandbox";
/// The distroless "nonroot" user our images run as.
pub const SANDBOX_UID: i64 = 65532;

pub fn sandbox_labels(component: &str, owner_label: (&str, &str)) -> BTreeMap<String, String> {
    BTreeMap::from([
        (SANDBOX_LABEL.to_string(), "true".to_string()),
        ("app.kubernetes.io/name".to_string(), component.to_string()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "outlayer-operator".to_string(),
        ),
        (owner_label.0.to_string(), owner_label.1.to_string()),
    ])
}

pub fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(SANDBOX_UID),
        run_as_group: Some(SANDBOX_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            ..Default::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            ..Default::default()
        }),
        ..Default::default()
    }
}
