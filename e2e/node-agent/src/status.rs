//! Container and pod status objects as the kubelet reports them.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::POD_IP;

/// Kubernetes caps each container's termination message at 4096 bytes.
pub const MAX_TERMINATION_MESSAGE: usize = 4096;
/// `FallbackToLogsOnError` uses the last 2048 bytes or 80 lines of the log, whichever is smaller.
const FALLBACK_LOG_BYTES: usize = 2048;
const FALLBACK_LOG_LINES: usize = 80;

/// One container's state as this agent tracks it.
#[derive(Debug, Clone)]
pub struct Tracked {
    pub name: String,
    pub image: String,
    pub restart_count: i32,
    pub state: State,
    pub last_terminated: Option<Terminated>,
}

#[derive(Debug, Clone)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Timestamp,
        instance: u32,
    },
    Terminated(Terminated),
}

#[derive(Debug, Clone)]
pub struct Terminated {
    pub exit_code: i32,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
    pub instance: u32,
}

impl Tracked {
    pub fn new(name: &str, image: &str) -> Self {
        Tracked {
            name: name.to_owned(),
            image: image.to_owned(),
            restart_count: 0,
            state: State::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            last_terminated: None,
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    pub fn terminated(&self) -> Option<&Terminated> {
        match &self.state {
            State::Terminated(t) => Some(t),
            _ => None,
        }
    }

    pub fn to_status(&self, pod_uid: &str) -> ContainerStatus {
        let container_id = |instance: u32| format!("bwrap://{pod_uid}/{}/{instance}", self.name);
        let (state, id) = match &self.state {
            State::Waiting { reason, message } => (
                ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason.clone()),
                        message: message.clone(),
                    }),
                    ..ContainerState::default()
                },
                None,
            ),
            State::Running {
                started_at,
                instance,
            } => (
                ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(Time(*started_at)),
                    }),
                    ..ContainerState::default()
                },
                Some(container_id(*instance)),
            ),
            State::Terminated(t) => (
                ContainerState {
                    terminated: Some(terminated_state(t, &container_id(t.instance))),
                    ..ContainerState::default()
                },
                Some(container_id(t.instance)),
            ),
        };
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: format!("local://{}", self.image),
            container_id: id,
            ready: self.is_running(),
            started: Some(self.is_running()),
            restart_count: self.restart_count,
            state: Some(state),
            last_state: self.last_terminated.as_ref().map(|t| ContainerState {
                terminated: Some(terminated_state(t, &container_id(t.instance))),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }
    }
}

fn terminated_state(t: &Terminated, container_id: &str) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: t.started_at.map(Time),
        finished_at: Some(Time(t.finished_at)),
        container_id: Some(container_id.to_owned()),
        ..ContainerStateTerminated::default()
    }
}

/// The termination message: the file's content (≤ 4096 bytes), or with `FallbackToLogsOnError`
/// and a failed, silent container, the tail of its log.
pub fn termination_message(
    file: &[u8],
    log: &[u8],
    policy: Option<&str>,
    exit_code: i32,
) -> Option<String> {
    let file = &file[..file.len().min(MAX_TERMINATION_MESSAGE)];
    if !file.is_empty() {
        return Some(String::from_utf8_lossy(file).into_owned());
    }
    if policy == Some("FallbackToLogsOnError") && exit_code != 0 && !log.is_empty() {
        let by_bytes = &log[log.len().saturating_sub(FALLBACK_LOG_BYTES)..];
        let text = String::from_utf8_lossy(by_bytes);
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(FALLBACK_LOG_LINES)..].join("\n");
        return Some(tail);
    }
    None
}

/// Pod conditions the kubelet owns, all at `now` unless unchanged.
pub struct PodView<'a> {
    pub phase: &'a str,
    pub reason: Option<&'a str>,
    pub message: Option<&'a str>,
    pub start_time: Timestamp,
    pub sandbox_ready: bool,
    pub initialized: bool,
    pub init_containers: &'a [Tracked],
    pub containers: &'a [Tracked],
}

pub fn pod_status(view: &PodView<'_>, previous: Option<&PodStatus>, pod_uid: &str) -> PodStatus {
    let now = Timestamp::now();
    let all_running =
        !view.containers.is_empty() && view.containers.iter().all(Tracked::is_running);
    let terminal = matches!(view.phase, "Succeeded" | "Failed");
    let ready_reason = if terminal {
        Some("PodCompleted")
    } else if all_running {
        None
    } else {
        Some("ContainersNotReady")
    };
    let owned = [
        ("PodReadyToStartContainers", view.sandbox_ready, None),
        (
            "Initialized",
            view.initialized,
            if view.initialized {
                None
            } else {
                Some("ContainersNotInitialized")
            },
        ),
        ("ContainersReady", all_running && !terminal, ready_reason),
        ("Ready", all_running && !terminal, ready_reason),
    ];
    let old_conditions = previous
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    // Conditions other components own (PodScheduled, DisruptionTarget, …) are kept as they are.
    let mut conditions: Vec<PodCondition> = old_conditions
        .iter()
        .filter(|c| !owned.iter().any(|(t, _, _)| *t == c.type_))
        .cloned()
        .collect();
    for (type_, ok, reason) in owned {
        let status = if ok { "True" } else { "False" };
        let old = old_conditions.iter().find(|c| c.type_ == type_);
        let transition = match old {
            Some(c) if c.status == status => c.last_transition_time.clone(),
            _ => Some(Time(now)),
        };
        conditions.push(PodCondition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.map(str::to_owned),
            last_transition_time: transition,
            ..PodCondition::default()
        });
    }
    PodStatus {
        phase: Some(view.phase.to_owned()),
        reason: view.reason.map(str::to_owned),
        message: view.message.map(str::to_owned),
        conditions: Some(conditions),
        host_ip: Some(POD_IP.into()),
        host_ips: Some(vec![HostIP { ip: POD_IP.into() }]),
        pod_ip: Some(POD_IP.into()),
        pod_ips: Some(vec![PodIP { ip: POD_IP.into() }]),
        start_time: Some(Time(view.start_time)),
        qos_class: previous.and_then(|s| s.qos_class.clone()),
        init_container_statuses: (!view.init_containers.is_empty()).then(|| {
            view.init_containers
                .iter()
                .map(|c| c.to_status(pod_uid))
                .collect()
        }),
        container_statuses: Some(
            view.containers
                .iter()
                .map(|c| c.to_status(pod_uid))
                .collect(),
        ),
        ..PodStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn termination_message_is_capped_and_falls_back_to_logs() {
        let big = vec![b'x'; 5000];
        assert_eq!(termination_message(&big, b"", None, 0).unwrap().len(), 4096);
        assert_eq!(termination_message(b"", b"boom\n", None, 1), None);
        assert_eq!(
            termination_message(b"", b"a\nboom\n", Some("FallbackToLogsOnError"), 1).as_deref(),
            Some("a\nboom")
        );
        assert_eq!(
            termination_message(b"", b"fine\n", Some("FallbackToLogsOnError"), 0),
            None
        );
        let many: String = (0..200).map(|i| format!("{i}\n")).collect();
        let tail =
            termination_message(b"", many.as_bytes(), Some("FallbackToLogsOnError"), 2).unwrap();
        assert_eq!(tail.lines().count(), 80);
        assert!(tail.ends_with("199"));
    }
}
