//! The reports: one JSON object of at most [`MAX_REPORT_BYTES`] per command, written where the
//! operator reads it (the container's termination message by default) and kept in the workspace.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Kubernetes truncates termination messages to 4096 bytes (`TerminationMessageMaxBytes`); a cut
/// message would not parse.
pub const MAX_REPORT_BYTES: usize = 4096;
pub const REPORT_VERSION: u32 = 1;
/// The error message alone never takes more than this; the rest is for the log tail.
const MAX_ERROR_BYTES: usize = 1024;

/// Why a command failed: `error` (what failed, with which input), `errorKind` (stable class, see
/// [`Error::kind`]) and the end of the log (the compiler's or git's own words).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
}

impl Failure {
    pub fn new(error: &Error, log_tail: String) -> Self {
        Self {
            error: Some(error.to_string()),
            error_kind: Some(error.kind().to_string()),
            log_tail: (!log_tail.is_empty()).then_some(log_tail),
        }
    }
}

/// `{"v":1,"ok":true,"resolvedCommit":"<40 hex>","lockfileGenerated":false,"vendoredCrates":0,"timeMs":812}`
/// or `{"v":1,"ok":false,"error":…,"errorKind":…,"logTail":…,"timeMs":…}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FetchReport {
    pub v: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_commit: Option<String>,
    /// The repository had no Cargo.lock and `cargo vendor` created one (the build is then locked to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockfile_generated: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendored_crates: Option<u64>,
    /// Whether a branch or tag of the repository holds the commit: `false` for a SHA found only
    /// under another ref (`refs/pull/…`) or not advertised at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable: Option<bool>,
    /// The branch or tag (full ref) that holds the commit: the ref a name resolved to, or for a SHA
    /// the first branch (else tag) whose history contains it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable_from: Option<String>,
    pub time_ms: u64,
    #[serde(flatten)]
    pub failure: Failure,
}

/// `{"v":1,"ok":true,"sha256":"<64 hex>","sizeBytes":N,"compileTimeMs":N,"resolvedCommit":…,"bin":"echo","timeMs":N}`
/// or `{"v":1,"ok":false,"error":…,"errorKind":…,"logTail":…,"compileTimeMs":N?,"timeMs":N}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BuildReport {
    pub v: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Wall time of `cargo build` alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_time_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bin: Option<String>,
    /// The toolchain that built the module: `rustc -vV`'s first line (`rustc 1.95.0 (59807616e
    /// 2026-04-14)`). With `compiler`, the build identity a rebuild must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toolchain: Option<String>,
    /// The build driver's name and version (`outlayer-compiler 0.1.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compiler: Option<String>,
    /// Wall time of the whole command.
    pub time_ms: u64,
    #[serde(flatten)]
    pub failure: Failure,
}

impl FetchReport {
    /// The report of a fetch that could not start (bad configuration, unwritable workspace).
    pub fn failed(error: &Error) -> Self {
        Self {
            v: REPORT_VERSION,
            failure: Failure::new(error, String::new()),
            ..Default::default()
        }
    }
}

impl BuildReport {
    /// The report of a build that could not start (bad configuration, unwritable workspace).
    pub fn failed(error: &Error) -> Self {
        Self {
            v: REPORT_VERSION,
            failure: Failure::new(error, String::new()),
            ..Default::default()
        }
    }
}

pub trait Report: Serialize {
    fn failure_mut(&mut self) -> &mut Failure;
}
impl Report for FetchReport {
    fn failure_mut(&mut self) -> &mut Failure {
        &mut self.failure
    }
}
impl Report for BuildReport {
    fn failure_mut(&mut self) -> &mut Failure {
        &mut self.failure
    }
}

/// Serializes `report`, shortening the error (from its end) and the log tail (from its front, so
/// the last lines — where compilers put the error — survive) until it fits in 4096 bytes.
pub fn encode(report: &mut impl Report) -> String {
    {
        let failure = report.failure_mut();
        if let Some(error) = failure.error.as_mut() {
            keep_start(error, MAX_ERROR_BYTES);
        }
    }
    loop {
        // Serializing plain structs of strings and integers cannot fail.
        let json = serde_json::to_string(report).unwrap_or_default();
        let excess = json.len().saturating_sub(MAX_REPORT_BYTES);
        if excess == 0 {
            return json;
        }
        let failure = report.failure_mut();
        match failure.log_tail.as_mut() {
            Some(tail) if !tail.is_empty() => {
                let escaped: usize = tail.chars().map(escaped_len).sum();
                keep_end_escaped(tail, escaped.saturating_sub(excess + ELLIPSIS_LEN));
            }
            _ => match failure.error.as_mut() {
                Some(error) if error.len() > 16 => {
                    let target = error.len().saturating_sub(excess.max(16) + 4);
                    keep_start(error, target);
                }
                _ => return json,
            },
        }
    }
}

/// Keeps at most `max` bytes of `text` from its start, marking the cut with "…".
fn keep_start(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut cut = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push('…');
}

const ELLIPSIS_LEN: usize = '…'.len_utf8();

/// What `c` costs inside a JSON string as serde_json writes it.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Keeps the end of `text` that costs at most `budget` bytes once JSON-escaped, marked with "…".
fn keep_end_escaped(text: &mut String, budget: usize) {
    let mut cost = 0;
    let mut start = text.len();
    for (index, c) in text.char_indices().rev() {
        cost += escaped_len(c);
        if cost > budget {
            break;
        }
        start = index;
    }
    *text = format!("…{}", &text[start..]);
}

/// Writes the report to `path` (the termination-log file or a regular file).
pub fn write_report(path: &Path, json: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|e| Error::io("opening the result path", path, e))?;
    file.write_all(json.as_bytes())
        .and_then(|()| file.flush())
        .map_err(|e| Error::io("writing the result", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_failure_is_trimmed_to_fit_and_keeps_the_end_of_the_log() {
        let tail: String = (0..2000)
            .map(|i| format!("line {i} \"quoted\" \u{1}ctl é\n"))
            .collect();
        let mut report = BuildReport {
            v: REPORT_VERSION,
            ok: false,
            time_ms: 5,
            failure: Failure {
                error: Some("x".repeat(10_000)),
                error_kind: Some("compile".into()),
                log_tail: Some(tail),
            },
            ..Default::default()
        };
        let json = encode(&mut report);
        assert!(json.len() <= MAX_REPORT_BYTES, "{}", json.len());
        assert!(
            json.len() > MAX_REPORT_BYTES - 200,
            "trimmed too much: {}",
            json.len()
        );
        let back: BuildReport = serde_json::from_str(&json).unwrap();
        assert!(back.failure.error.unwrap().len() <= MAX_ERROR_BYTES);
        let tail = back.failure.log_tail.unwrap();
        assert!(tail.starts_with('…'));
        assert!(tail.ends_with("line 1999 \"quoted\" \u{1}ctl é\n"));
    }

    #[test]
    fn a_success_serializes_with_camel_case_fields() {
        let mut report = FetchReport {
            v: REPORT_VERSION,
            ok: true,
            resolved_commit: Some("a".repeat(40)),
            lockfile_generated: Some(true),
            vendored_crates: Some(0),
            time_ms: 7,
            failure: Failure::default(),
            ..Default::default()
        };
        let json = encode(&mut report);
        assert_eq!(
            json,
            format!(
                r#"{{"v":1,"ok":true,"resolvedCommit":"{}","lockfileGenerated":true,"vendoredCrates":0,"timeMs":7}}"#,
                "a".repeat(40)
            )
        );
    }
}
