//! The result message: one JSON object of at most [`MAX_RESULT_BYTES`], written where the
//! operator reads it (the container's termination message by default).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::config::ResponseFormat;
use crate::error::{Fault, PlatformError};
use crate::executor::Execution;
use crate::output;

/// Kubernetes truncates termination messages to 4096 bytes
/// (`TerminationMessageMaxBytes`); a cut message would not parse.
pub const MAX_RESULT_BYTES: usize = 4096;
/// Version of the message layout.
pub const RESULT_VERSION: u32 = 1;

/// `{"v":1,"ok":..,"output":..,"outputEncoding":..,"instructions":..,"timeMs":..,"error":..}`,
/// plus `outputSha256`/`outputSize` when the output went to a file, `errorKind` (a stable class,
/// see [`Fault::kind`]) and `exitCode`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultMessage {
    pub v: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Box<RawValue>>,
    pub output_encoding: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_size: Option<u64>,
    pub instructions: u64,
    pub time_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

impl ResultMessage {
    fn new(execution: &Execution, format: ResponseFormat) -> Self {
        Self {
            v: RESULT_VERSION,
            ok: false,
            output: None,
            output_encoding: format.encoding().to_string(),
            output_sha256: None,
            output_size: None,
            instructions: execution.instructions,
            time_ms: u64::try_from(execution.elapsed.as_millis()).unwrap_or(u64::MAX),
            error: None,
            error_kind: None,
            exit_code: execution.exit_code,
        }
    }

    /// Builds the message for `execution`. Output that does not fit inline is written to
    /// `output_dir` as `<sha256>` (write to a temp file, then rename) and referenced by hash.
    /// Returns the message and its serialized form, which is at most [`MAX_RESULT_BYTES`].
    pub fn build(
        execution: &Execution,
        format: ResponseFormat,
        output_dir: Option<&Path>,
    ) -> Result<(Self, String), PlatformError> {
        let stdout = match &execution.outcome {
            Ok(stdout) => stdout,
            Err(fault) => return Self::failure(execution, format, fault),
        };
        let encoded = match output::encode(stdout, format) {
            Ok(encoded) => encoded,
            Err(fault) => return Self::failure(execution, format, &fault),
        };
        let mut message = Self::new(execution, format);
        message.ok = true;
        message.output = Some(encoded);
        let text = serde_json::to_string(&message)?;
        if text.len() <= MAX_RESULT_BYTES {
            return Ok((message, text));
        }
        let Some(dir) = output_dir else {
            let fault = Fault::OutputTooLarge {
                size: stdout.len() as u64,
            };
            return Self::failure(execution, format, &fault);
        };
        let sha256 = write_output_file(dir, stdout)?;
        message.output = None;
        message.output_sha256 = Some(sha256);
        message.output_size = Some(stdout.len() as u64);
        let text = serde_json::to_string(&message)?;
        Ok((message, text))
    }

    fn failure(
        execution: &Execution,
        format: ResponseFormat,
        fault: &Fault,
    ) -> Result<(Self, String), PlatformError> {
        let mut message = Self::new(execution, format);
        message.error_kind = Some(fault.kind().to_string());
        let head = fault.to_string();
        let stderr = String::from_utf8_lossy(&execution.stderr).into_owned();
        let stderr = stderr.trim_end();
        let with_tail = |message: &mut Self, tail: &str, cut: bool| {
            message.error = Some(match (tail.is_empty(), cut) {
                (true, _) => head.clone(),
                (false, false) => format!("{head}; stderr: {tail}"),
                (false, true) => format!("{head}; stderr: …{tail}"),
            });
            serde_json::to_string(message)
        };
        let text = with_tail(&mut message, stderr, false)?;
        if text.len() <= MAX_RESULT_BYTES {
            return Ok((message, text));
        }
        // Keep the longest end of stderr that fits: that is where a failing program says why.
        // Escaping makes the serialized size non-linear in the kept length, hence the search.
        let suffix = |keep: usize| &stderr[ceil_char_boundary(stderr, stderr.len() - keep)..];
        let (mut fits, mut too_long) = (0, stderr.len());
        while too_long - fits > 1 {
            let mid = fits + (too_long - fits) / 2;
            if with_tail(&mut message, suffix(mid), true)?.len() <= MAX_RESULT_BYTES {
                fits = mid;
            } else {
                too_long = mid;
            }
        }
        let text = with_tail(&mut message, suffix(fits), true)?;
        if text.len() <= MAX_RESULT_BYTES {
            return Ok((message, text));
        }
        // Fault messages are short; only a pathological one gets here.
        let excess = text.len() - MAX_RESULT_BYTES;
        let cut = floor_char_boundary(&head, head.len().saturating_sub(excess + 3));
        message.error = Some(format!("{}…", &head[..cut]));
        let text = serde_json::to_string(&message)?;
        Ok((message, text))
    }
}

fn floor_char_boundary(text: &str, index: usize) -> usize {
    let mut index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

fn ceil_char_boundary(text: &str, index: usize) -> usize {
    let mut index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index += 1;
    }
    index
}

/// Writes `bytes` to `<dir>/<sha256>` atomically; returns the hex sha256.
fn write_output_file(dir: &Path, bytes: &[u8]) -> Result<String, PlatformError> {
    let sha256 = hex::encode(Sha256::digest(bytes));
    let target = dir.join(&sha256);
    let temp: PathBuf = dir.join(format!(".{sha256}.{}.tmp", std::process::id()));
    let write_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PlatformError::Write {
            what: "output file",
            path,
            source,
        }
    };
    let mut file = std::fs::File::create(&temp).map_err(write_error(&temp))?;
    file.write_all(bytes).map_err(write_error(&temp))?;
    file.sync_all().map_err(write_error(&temp))?;
    drop(file);
    std::fs::rename(&temp, &target).map_err(write_error(&target))?;
    Ok(sha256)
}

/// Writes the serialized message to `path` (e.g. `/dev/termination-log`).
pub fn write_result(path: &Path, text: &str) -> Result<(), PlatformError> {
    std::fs::write(path, text).map_err(|source| PlatformError::Write {
        what: "result",
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn execution(outcome: Result<Vec<u8>, Fault>, stderr: &[u8]) -> Execution {
        Execution {
            outcome,
            instructions: 42,
            elapsed: Duration::from_millis(7),
            exit_code: Some(0),
            stderr: stderr.to_vec(),
        }
    }

    #[test]
    fn success_inlines_small_output() {
        let (message, text) = ResultMessage::build(
            &execution(Ok(b"hello".to_vec()), b""),
            ResponseFormat::Text,
            None,
        )
        .unwrap();
        assert!(message.ok);
        assert_eq!(
            text,
            r#"{"v":1,"ok":true,"output":"hello","outputEncoding":"text","instructions":42,"timeMs":7,"exitCode":0}"#
        );
        let parsed: ResultMessage = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed.output.unwrap().get(), "\"hello\"");
    }

    #[test]
    fn large_output_goes_to_a_file_named_by_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let stdout = vec![b'x'; 10_000];
        let (message, text) = ResultMessage::build(
            &execution(Ok(stdout.clone()), b""),
            ResponseFormat::Text,
            Some(dir.path()),
        )
        .unwrap();
        assert!(text.len() <= MAX_RESULT_BYTES);
        assert!(message.output.is_none());
        let sha = message.output_sha256.unwrap();
        assert_eq!(sha, hex::encode(Sha256::digest(&stdout)));
        assert_eq!(message.output_size, Some(10_000));
        assert_eq!(std::fs::read(dir.path().join(&sha)).unwrap(), stdout);
        // Only the final file remains; the temp file was renamed.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn large_output_without_a_directory_is_a_fault() {
        let (message, text) = ResultMessage::build(
            &execution(Ok(vec![b'x'; 10_000]), b""),
            ResponseFormat::Text,
            None,
        )
        .unwrap();
        assert!(!message.ok);
        assert_eq!(message.error_kind.as_deref(), Some("outputTooLarge"));
        assert!(text.len() <= MAX_RESULT_BYTES);
    }

    #[test]
    fn failure_keeps_the_fault_and_the_end_of_stderr_within_the_limit() {
        let mut stderr = "é\u{1}".repeat(3000).into_bytes();
        stderr.extend_from_slice(b"the real reason");
        let (message, text) = ResultMessage::build(
            &execution(Err(Fault::Exit { code: 3 }), &stderr),
            ResponseFormat::Json,
            None,
        )
        .unwrap();
        assert!(text.len() <= MAX_RESULT_BYTES, "{}", text.len());
        assert!(text.len() > MAX_RESULT_BYTES - 64, "{}", text.len());
        let error = message.error.unwrap();
        assert!(error.starts_with("guest exited with code 3; stderr: …"));
        assert!(error.ends_with("the real reason"));
        assert_eq!(message.error_kind.as_deref(), Some("exit"));
        assert_eq!(message.output_encoding, "json");
    }

    #[test]
    fn invalid_output_is_reported_not_mangled() {
        let (message, _) = ResultMessage::build(
            &execution(Ok(b"\xff\xfe".to_vec()), b""),
            ResponseFormat::Text,
            None,
        )
        .unwrap();
        assert!(!message.ok);
        assert!(message.output.is_none());
        assert_eq!(message.error_kind.as_deref(), Some("invalidUtf8"));
    }
}
