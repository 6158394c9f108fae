//! The warm pool's decisions, without I/O: which class a request takes, whether a pod is the pool's
//! own and fit to be handed an execution (or its own but outdated, or foreign), what a refill creates
//! and deletes, the claim's patch, and what a claimed pod means for its execution.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use crate::config::OperatorConfig;
use crate::pods::executor::{
    ATTEMPT_LABEL, EXECUTION_LABEL, EXECUTOR_CONTAINER, HANDOFF_ANNOTATION, POD_KIND_LABEL,
    WARM_CLAIMED, WARM_CLASS_LABEL, WARM_IDLE, WARM_STATE_LABEL, warm_executor_pod,
};
use crate::pods::{ExecutorOutcome, read_executor_outcome};

/// The smallest configured class (MiB, with a target above zero) that covers `memory_mb`; `None`
/// when the request is larger than every class: it runs in a cold pod.
pub fn class_for(memory_mb: u32, classes: &[(u32, u32)]) -> Option<u32> {
    classes
        .iter()
        .filter(|(class, count)| *count > 0 && *class >= memory_mb)
        .map(|(class, _)| *class)
        .min()
}

/// Where an idle pod of the pool stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdleState {
    /// Created, not yet listening (scheduling, image, sandbox, readiness).
    Starting,
    /// Listening: may be claimed.
    Ready,
    /// Waited longer than the maximum age: deleted, never handed anything.
    Expired,
    /// Ended without an assignment (its wait ran out, it crashed, was evicted): deleted.
    Ended,
}

/// One idle pod of the pool as a refill sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdlePod {
    pub name: String,
    pub class: u32,
    pub state: IdleState,
}

/// What a pod labelled as one of the pool's idle pods is to the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Membership {
    /// Controlled by the pool's owner object and specified exactly as this operator builds a pod of
    /// its class: may be handed an execution.
    Own,
    /// Controlled by the pool's owner object (deleting it is ours to do) and idle, but specified
    /// otherwise: built by an operator of another version or configuration (image, arguments,
    /// runtime class, mounts), or altered since. Deleted and replaced; never handed anything.
    Outdated,
    /// Not controlled by the pool's owner object: never handed anything, never deleted.
    Foreign,
}

/// What `pod` is to the pool: its own only when controlled by the pool's owner object (`owner` by
/// uid), labelled idle, and specified exactly as [`warm_executor_pod`] builds a pod of its class
/// (image, command, hardening, mounts). Anything else with our labels is never handed an execution.
pub fn membership(pod: &Pod, owner: &OwnerReference, config: &OperatorConfig) -> Membership {
    let meta = &pod.metadata;
    let controlled = meta.owner_references.as_deref().is_some_and(|refs| {
        refs.len() == 1
            && refs[0].uid == owner.uid
            && refs[0].kind == owner.kind
            && refs[0].controller == Some(true)
    });
    let labels = meta.labels.clone().unwrap_or_default();
    if !controlled || labels.get(WARM_STATE_LABEL).map(String::as_str) != Some(WARM_IDLE) {
        return Membership::Foreign;
    }
    if is_built_as_its_class(pod, owner, config) {
        Membership::Own
    } else {
        Membership::Outdated
    }
}

/// Whether `pod`'s spec is the one [`warm_executor_pod`] builds for the class on its label.
fn is_built_as_its_class(pod: &Pod, owner: &OwnerReference, config: &OperatorConfig) -> bool {
    let meta = &pod.metadata;
    let Some(class) = meta
        .labels
        .as_ref()
        .and_then(|labels| labels.get(WARM_CLASS_LABEL))
        .and_then(|class| class.parse::<u32>().ok())
    else {
        return false;
    };
    let (Some(name), Some(namespace), Some(spec)) =
        (&meta.name, &meta.namespace, pod.spec.as_ref())
    else {
        return false;
    };
    let expected = warm_executor_pod(name, namespace, class, owner.clone(), config);
    let Some(expected_spec) = expected.spec else {
        return false;
    };
    let (Some(container), Some(wanted)) =
        (spec.containers.first(), expected_spec.containers.first())
    else {
        return false;
    };
    spec.containers.len() == 1
        && spec.init_containers.as_ref().is_none_or(Vec::is_empty)
        && container.name == wanted.name
        && container.image == wanted.image
        && container.command == wanted.command
        && container.args == wanted.args
        && container.security_context == wanted.security_context
        && container.volume_mounts == wanted.volume_mounts
        && container.env.as_ref().is_none_or(Vec::is_empty)
        && spec.automount_service_account_token == Some(false)
        && spec
            .security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root)
            == Some(true)
        && spec.runtime_class_name == expected_spec.runtime_class_name
        && spec.host_network != Some(true)
        && spec.host_pid != Some(true)
}

/// The state of one of the pool's idle pods at `now`.
pub fn idle_state(pod: &Pod, now: Timestamp, max_age: Duration) -> IdleState {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    if matches!(phase, "Succeeded" | "Failed") || pod.metadata.deletion_timestamp.is_some() {
        return IdleState::Ended;
    }
    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let age = created
        .and_then(|created| Duration::try_from(now.duration_since(created)).ok())
        .unwrap_or_default();
    if age >= max_age {
        return IdleState::Expired;
    }
    let ready = status
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let has_ip = status.and_then(|s| s.pod_ip.as_deref()).is_some();
    if phase == "Running" && ready && has_ip {
        IdleState::Ready
    } else {
        IdleState::Starting
    }
}

/// What a refill does: pods to create (one class per entry) and idle pods to delete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refill {
    pub create: Vec<u32>,
    pub delete: Vec<String>,
}

/// Tops every class up to its target: starting and ready pods count, expired and ended ones are
/// deleted (and replaced); pods beyond a class's target (or of a class no longer configured) are
/// deleted.
pub fn refill(pods: &[IdlePod], classes: &[(u32, u32)]) -> Refill {
    let targets: BTreeMap<u32, u32> = classes.iter().copied().collect();
    let mut plan = Refill::default();
    let mut alive: BTreeMap<u32, u32> = BTreeMap::new();
    for pod in pods {
        let target = targets.get(&pod.class).copied().unwrap_or(0);
        let have = alive.entry(pod.class).or_default();
        match pod.state {
            IdleState::Expired | IdleState::Ended => plan.delete.push(pod.name.clone()),
            // More than the class wants (its target went down, or it is no longer configured).
            _ if *have >= target => plan.delete.push(pod.name.clone()),
            IdleState::Starting | IdleState::Ready => *have += 1,
        }
    }
    for (class, target) in targets {
        let have = alive.get(&class).copied().unwrap_or(0);
        plan.create.extend(std::iter::repeat_n(
            class,
            target.saturating_sub(have) as usize,
        ));
    }
    plan
}

/// The claim: one merge patch, conditional on the resourceVersion the pod was read at (a second
/// claimer gets a 409), that takes the pod out of the pool for good — the execution's labels, its
/// ExecutionRequest as the only (controller) owner so it goes with the request, the handoff marked
/// pending, and the pod's deadline lowered to the run's own.
pub fn claim_patch(
    resource_version: &str,
    execution_label: &str,
    attempt: u32,
    execution_owner: &OwnerReference,
    active_deadline_seconds: i64,
) -> serde_json::Value {
    json!({
        "metadata": {
            "resourceVersion": resource_version,
            "labels": {
                WARM_STATE_LABEL: WARM_CLAIMED,
                EXECUTION_LABEL: execution_label,
                ATTEMPT_LABEL: attempt.to_string(),
                POD_KIND_LABEL: "warm",
            },
            "annotations": {HANDOFF_ANNOTATION: "pending"},
            "ownerReferences": [execution_owner],
        },
        "spec": {"activeDeadlineSeconds": active_deadline_seconds},
    })
}

/// The claimed pod's activeDeadlineSeconds: the run's time limit plus `grace` after the claim,
/// counted as the kubelet does from the pod's start — never above what it has (the API only lowers it).
pub fn run_deadline(pod: &Pod, now: Timestamp, time_limit_seconds: u64, grace: i64) -> i64 {
    let started = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0)
        .unwrap_or(now);
    let elapsed = Duration::try_from(now.duration_since(started))
        .unwrap_or_default()
        .as_secs();
    let wanted = i64::try_from(elapsed.saturating_add(time_limit_seconds).saturating_add(1))
        .unwrap_or(i64::MAX)
        .saturating_add(grace);
    let current = pod
        .spec
        .as_ref()
        .and_then(|s| s.active_deadline_seconds)
        .unwrap_or(i64::MAX);
    wanted.min(current).max(1)
}

/// What a warm pod claimed by an execution means for it.
#[derive(Clone, Debug)]
pub enum ClaimedPod {
    /// It ran (or failed to): read as a cold pod's outcome.
    Ended(ExecutorOutcome),
    /// It has its assignment and runs it.
    Running,
    /// Claimed, but the handoff never completed (the operator stopped between the claim and the
    /// handoff's end): it is deleted, never re-pooled, and the execution re-runs in a fresh pod.
    Abandoned,
}

pub fn claimed_pod(pod: &Pod) -> ClaimedPod {
    if let Some(outcome) = read_executor_outcome(pod) {
        return ClaimedPod::Ended(outcome);
    }
    let handed_off = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(HANDOFF_ANNOTATION))
        .is_some_and(|value| value == "done");
    if handed_off {
        ClaimedPod::Running
    } else {
        ClaimedPod::Abandoned
    }
}

/// Whether a claimed pod belongs to the execution with uid `execution_uid`: owned by it, labelled
/// with the attempt. A pod merely labelled so is not enough.
pub fn owned_by_execution(pod: &Pod, execution_uid: &str, attempt: u32) -> bool {
    let owned = pod
        .metadata
        .owner_references
        .as_deref()
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.uid == execution_uid && r.controller == Some(true))
        });
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    owned
        && labels.get(ATTEMPT_LABEL) == Some(&attempt.to_string())
        && labels.get(WARM_STATE_LABEL).map(String::as_str) == Some(WARM_CLAIMED)
        && pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .is_some_and(|c| c.name == EXECUTOR_CONTAINER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "v1".to_string(),
            kind: "ConfigMap".to_string(),
            name: "outlayer-warm-pool".to_string(),
            uid: "pool-uid".to_string(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn config() -> OperatorConfig {
        let mut config = OperatorConfig::default();
        config.warm_pool.classes = vec![(64, 2), (128, 1), (512, 0)];
        config
    }

    fn warm(name: &str, class: u32) -> Pod {
        warm_pod(name, class, &config())
    }

    fn warm_pod(name: &str, class: u32, config: &OperatorConfig) -> Pod {
        warm_executor_pod(name, "jobs", class, owner(), config)
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn running(mut pod: Pod, created: i64, ready: bool) -> Pod {
        pod.metadata.creation_timestamp = Some(Time(at(created)));
        pod.status = Some(PodStatus {
            phase: Some("Running".to_string()),
            pod_ip: Some("10.213.0.9".to_string()),
            start_time: Some(Time(at(created))),
            conditions: Some(vec![PodCondition {
                type_: "Ready".to_string(),
                status: if ready { "True" } else { "False" }.to_string(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        pod
    }

    #[test]
    fn a_request_takes_the_smallest_class_that_covers_it() {
        let classes = [(64, 2), (128, 1), (256, 0), (512, 1)];
        assert_eq!(class_for(1, &classes), Some(64));
        assert_eq!(class_for(64, &classes), Some(64));
        assert_eq!(class_for(65, &classes), Some(128));
        // A class with no pods is skipped.
        assert_eq!(class_for(200, &classes), Some(512));
        assert_eq!(class_for(513, &classes), None);
        assert_eq!(class_for(1, &[]), None);
    }

    #[test]
    fn only_the_pools_own_pods_as_built_are_trusted_and_its_outdated_ones_are_replaced() {
        let pod = warm("p", 64);
        assert_eq!(membership(&pod, &owner(), &config()), Membership::Own);

        let mut other_owner = pod.clone();
        other_owner.metadata.owner_references.as_mut().unwrap()[0].uid = "x".to_string();
        let mut not_controller = pod.clone();
        not_controller.metadata.owner_references.as_mut().unwrap()[0].controller = None;
        let mut two_owners = pod.clone();
        two_owners
            .metadata
            .owner_references
            .as_mut()
            .unwrap()
            .push(owner());
        let mut claimed = pod.clone();
        claimed
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(WARM_STATE_LABEL.to_string(), WARM_CLAIMED.to_string());
        let mut image = pod.clone();
        image.spec.as_mut().unwrap().containers[0].image = Some("evil".to_string());
        let mut args = pod.clone();
        args.spec.as_mut().unwrap().containers[0]
            .args
            .as_mut()
            .unwrap()
            .push("--x".to_string());
        let mut env = pod.clone();
        env.spec.as_mut().unwrap().containers[0].env = Some(vec![Default::default()]);
        let mut privileged = pod.clone();
        privileged.spec.as_mut().unwrap().containers[0].security_context = None;
        let mut token = pod.clone();
        token.spec.as_mut().unwrap().automount_service_account_token = None;
        let mut class = pod.clone();
        class
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(WARM_CLASS_LABEL.to_string(), "128".to_string());
        let mut no_class = pod.clone();
        no_class
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .remove(WARM_CLASS_LABEL);
        // What an operator upgrade or a new setting leaves behind: the pool's own idle pods, built
        // from the previous image and runtime class.
        let earlier_image = warm_pod(
            "p",
            64,
            &OperatorConfig {
                executor_image: "outlayer-executor:previous".to_string(),
                ..config()
            },
        );
        let earlier_runtime = warm_pod(
            "p",
            64,
            &OperatorConfig {
                runtime_class_name: Some("gvisor".to_string()),
                ..config()
            },
        );
        for (what, pod, expected) in [
            ("another owner", other_owner, Membership::Foreign),
            (
                "our owner, not as controller",
                not_controller,
                Membership::Foreign,
            ),
            ("two owners", two_owners, Membership::Foreign),
            ("claimed", claimed, Membership::Foreign),
            ("another image", image, Membership::Outdated),
            ("other args", args, Membership::Outdated),
            ("env", env, Membership::Outdated),
            ("no hardening", privileged, Membership::Outdated),
            ("a service-account token", token, Membership::Outdated),
            (
                "a class its spec does not match",
                class,
                Membership::Outdated,
            ),
            ("no class", no_class, Membership::Outdated),
            (
                "built with an earlier image",
                earlier_image,
                Membership::Outdated,
            ),
            (
                "built with another runtime class",
                earlier_runtime,
                Membership::Outdated,
            ),
        ] {
            assert_eq!(membership(&pod, &owner(), &config()), expected, "{what}");
        }
    }

    #[test]
    fn idle_pods_are_starting_ready_expired_or_ended() {
        let max_age = Duration::from_secs(300);
        let now = at(100);
        assert_eq!(
            idle_state(&running(warm("p", 64), 0, true), now, max_age),
            IdleState::Ready
        );
        assert_eq!(
            idle_state(&running(warm("p", 64), 0, false), now, max_age),
            IdleState::Starting
        );
        assert_eq!(
            idle_state(&running(warm("p", 64), -200, true), now, max_age),
            IdleState::Expired
        );
        let mut ended = running(warm("p", 64), 0, true);
        ended.status.as_mut().unwrap().phase = Some("Failed".to_string());
        assert_eq!(idle_state(&ended, now, max_age), IdleState::Ended);
        let mut fresh = warm("p", 64);
        fresh.metadata.creation_timestamp = Some(Time(at(99)));
        assert_eq!(idle_state(&fresh, now, max_age), IdleState::Starting);
    }

    #[test]
    fn a_refill_tops_classes_up_and_replaces_what_is_old_or_gone() {
        let pod = |name: &str, class, state| IdlePod {
            name: name.to_string(),
            class,
            state,
        };
        let classes = [(64, 2), (128, 1), (512, 0)];
        assert_eq!(
            refill(&[], &classes),
            Refill {
                create: vec![64, 64, 128],
                delete: vec![]
            }
        );
        let plan = refill(
            &[
                pod("a", 64, IdleState::Ready),
                pod("b", 64, IdleState::Expired),
                pod("c", 128, IdleState::Starting),
                pod("d", 512, IdleState::Ready),
                pod("e", 256, IdleState::Ready),
                pod("f", 64, IdleState::Ended),
                pod("g", 128, IdleState::Ready),
            ],
            &classes,
        );
        assert_eq!(plan.create, vec![64]);
        assert_eq!(plan.delete, vec!["b", "d", "e", "f", "g"]);
    }

    #[test]
    fn the_claim_is_conditional_and_takes_the_pod_out_of_the_pool() {
        let exr = OwnerReference {
            kind: "ExecutionRequest".to_string(),
            uid: "exr-uid".to_string(),
            controller: Some(true),
            ..owner()
        };
        let patch = claim_patch("41", "req-1", 2, &exr, 45);
        assert_eq!(patch["metadata"]["resourceVersion"], "41");
        assert_eq!(patch["metadata"]["labels"][WARM_STATE_LABEL], WARM_CLAIMED);
        assert_eq!(patch["metadata"]["labels"][EXECUTION_LABEL], "req-1");
        assert_eq!(patch["metadata"]["labels"][ATTEMPT_LABEL], "2");
        assert_eq!(
            patch["metadata"]["annotations"][HANDOFF_ANNOTATION],
            "pending"
        );
        assert_eq!(patch["metadata"]["ownerReferences"][0]["uid"], "exr-uid");
        assert_eq!(
            patch["metadata"]["ownerReferences"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(patch["spec"]["activeDeadlineSeconds"], 45);
    }

    #[test]
    fn the_run_deadline_counts_from_the_pods_start_and_only_goes_down() {
        let pod = running(warm("p", 64), 0, true);
        // Started 100 s ago, a 7 s limit, 30 s grace.
        assert_eq!(run_deadline(&pod, at(100), 7, 30), 138);
        let mut short = pod.clone();
        short.spec.as_mut().unwrap().active_deadline_seconds = Some(120);
        assert_eq!(run_deadline(&short, at(100), 7, 30), 120);
    }

    #[test]
    fn a_claimed_pod_runs_ends_or_was_abandoned_mid_handoff() {
        let exr = OwnerReference {
            kind: "ExecutionRequest".to_string(),
            uid: "exr-uid".to_string(),
            ..owner()
        };
        let mut pod = running(warm("p", 64), 0, true);
        let patch = claim_patch("1", "req-1", 0, &exr, 40);
        let labels: BTreeMap<String, String> =
            serde_json::from_value(patch["metadata"]["labels"].clone()).unwrap();
        pod.metadata.labels.as_mut().unwrap().extend(labels);
        pod.metadata.owner_references = Some(vec![exr.clone()]);
        pod.metadata.annotations = Some(BTreeMap::from([(
            HANDOFF_ANNOTATION.to_string(),
            "pending".to_string(),
        )]));
        assert!(owned_by_execution(&pod, "exr-uid", 0));
        assert!(!owned_by_execution(&pod, "exr-uid", 1));
        assert!(!owned_by_execution(&pod, "other", 0));
        assert!(matches!(claimed_pod(&pod), ClaimedPod::Abandoned));
        pod.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(HANDOFF_ANNOTATION.to_string(), "done".to_string());
        assert!(matches!(claimed_pod(&pod), ClaimedPod::Running));
        pod.status.as_mut().unwrap().phase = Some("Failed".to_string());
        assert!(matches!(
            claimed_pod(&pod),
            ClaimedPod::Ended(ExecutorOutcome::PlatformFailure(_))
        ));
    }
}
