//! Reads an executor pod's outcome from its status: the executor's result message (DESIGN §5) or, when
//! there is none, why the platform failed. Guest faults (trap, limits, bad output) are results the user
//! pays for; platform failures are ours and are retried or reported as such.

use k8s_openapi::api::core::v1::Pod;
pub use outlayer_executor::ResultMessage;

use super::executor::EXECUTOR_CONTAINER;

/// The longest piece of an unexpected termination message quoted in a failure reason.
const MAX_QUOTED: usize = 256;

#[derive(Clone, Debug)]
pub enum ExecutorOutcome {
    /// The executor ran the guest and wrote its result (which may say the guest failed).
    Finished(ResultMessage),
    /// No usable result: the executor failed as a program, was killed, or the pod never ran it.
    PlatformFailure(String),
}

/// `None` while the executor has not terminated yet.
pub fn read_executor_outcome(pod: &Pod) -> Option<ExecutorOutcome> {
    let status = pod.status.as_ref()?;
    let terminated = status
        .container_statuses
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| c.name == EXECUTOR_CONTAINER)
        .and_then(|c| c.state.as_ref())
        .and_then(|state| state.terminated.as_ref());
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let Some(terminated) = terminated else {
        return match phase {
            "Failed" | "Succeeded" => Some(ExecutorOutcome::PlatformFailure(format!(
                "executor pod ended ({}) without running the executor{}",
                phase,
                status
                    .reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ))),
            _ => None,
        };
    };
    if status.reason.as_deref() == Some("DeadlineExceeded") {
        return Some(ExecutorOutcome::PlatformFailure(
            "executor pod exceeded its activeDeadlineSeconds and was killed".to_string(),
        ));
    }
    let message = terminated.message.as_deref().unwrap_or("").trim();
    if terminated.exit_code != 0 {
        let reason = terminated.reason.as_deref().unwrap_or("Error");
        return Some(ExecutorOutcome::PlatformFailure(format!(
            "executor exited with code {} ({reason}): {}",
            terminated.exit_code,
            quote(message)
        )));
    }
    if message.is_empty() {
        return Some(ExecutorOutcome::PlatformFailure(
            "executor exited without writing a result message".to_string(),
        ));
    }
    Some(match serde_json::from_str::<ResultMessage>(message) {
        Ok(result) if result.v == 1 => ExecutorOutcome::Finished(result),
        Ok(result) => ExecutorOutcome::PlatformFailure(format!(
            "executor wrote result version {}, this operator reads version 1",
            result.v
        )),
        Err(e) => ExecutorOutcome::PlatformFailure(format!(
            "executor wrote an invalid result message ({e}): {}",
            quote(message)
        )),
    })
}

fn quote(message: &str) -> String {
    if message.len() <= MAX_QUOTED {
        return message.to_string();
    }
    let mut end = MAX_QUOTED;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, PodStatus,
    };

    fn pod(phase: &str, reason: Option<&str>, state: Option<ContainerState>) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some(phase.to_string()),
                reason: reason.map(str::to_string),
                container_statuses: state.map(|state| {
                    vec![ContainerStatus {
                        name: EXECUTOR_CONTAINER.to_string(),
                        state: Some(state),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn terminated(exit_code: i32, message: &str) -> Option<ContainerState> {
        Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code,
                message: Some(message.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn a_running_executor_has_no_outcome_yet() {
        assert!(read_executor_outcome(&pod("Pending", None, None)).is_none());
        let running = Some(ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..Default::default()
        });
        assert!(read_executor_outcome(&pod("Running", None, running)).is_none());
    }

    #[test]
    fn a_result_message_is_read_whole() {
        let message = r#"{"v":1,"ok":true,"output":{"n":12345678901234567890},"outputEncoding":"json","instructions":41,"timeMs":2,"exitCode":0}"#;
        let Some(ExecutorOutcome::Finished(result)) =
            read_executor_outcome(&pod("Succeeded", None, terminated(0, message)))
        else {
            panic!("expected a result");
        };
        assert!(result.ok);
        assert_eq!(result.instructions, 41);
        assert_eq!(
            result.output.unwrap().get(),
            r#"{"n":12345678901234567890}"#
        );
    }

    #[test]
    fn guest_failures_are_results_not_platform_failures() {
        let message = r#"{"v":1,"ok":false,"outputEncoding":"text","instructions":10,"timeMs":1,"error":"time limit exceeded after 10 instructions (1 s limit)","errorKind":"timeLimit"}"#;
        let outcome = read_executor_outcome(&pod("Succeeded", None, terminated(0, message)));
        let Some(ExecutorOutcome::Finished(result)) = outcome else {
            panic!("expected a result, got {outcome:?}");
        };
        assert!(!result.ok);
        assert_eq!(result.error_kind.as_deref(), Some("timeLimit"));
    }

    #[test]
    fn platform_failures_say_what_happened() {
        let cases = [
            (
                pod(
                    "Failed",
                    None,
                    terminated(3, "platform error: checksum mismatch"),
                ),
                "exited with code 3 (Error): platform error: checksum mismatch",
            ),
            (
                pod("Succeeded", None, terminated(0, "")),
                "without writing a result message",
            ),
            (
                pod("Succeeded", None, terminated(0, "not json")),
                "invalid result message",
            ),
            (
                pod(
                    "Succeeded",
                    None,
                    terminated(
                        0,
                        r#"{"v":2,"ok":true,"outputEncoding":"text","instructions":1,"timeMs":1}"#,
                    ),
                ),
                "result version 2",
            ),
            (
                pod("Failed", Some("DeadlineExceeded"), terminated(137, "")),
                "exceeded its activeDeadlineSeconds",
            ),
            (
                pod("Failed", Some("Evicted"), None),
                "without running the executor: Evicted",
            ),
        ];
        for (pod, expected) in cases {
            match read_executor_outcome(&pod) {
                Some(ExecutorOutcome::PlatformFailure(reason)) => {
                    assert!(reason.contains(expected), "{reason:?} lacks {expected:?}")
                }
                other => panic!("expected a platform failure with {expected:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn long_garbage_is_quoted_briefly() {
        let garbage = "é".repeat(1_000);
        let Some(ExecutorOutcome::PlatformFailure(reason)) =
            read_executor_outcome(&pod("Succeeded", None, terminated(0, &garbage)))
        else {
            panic!("expected a platform failure");
        };
        assert!(reason.len() < 400, "{}", reason.len());
    }
}
