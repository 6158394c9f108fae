//! Guest faults versus platform failures.
//!
//! The operator must tell "the user's module misbehaved" (charge, report `ok: false`) from "the
//! executor could not run" (retry or alert). [`Fault`] is the former and always ends in a result
//! message; [`PlatformError`] is the latter and ends in a non-zero exit.

use std::path::PathBuf;

/// Something the guest (or the user's request) did wrong. Each variant has a stable
/// [`Fault::kind`] that goes into the result's `errorKind`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("module is {size} bytes, over the limit of {limit} bytes")]
    ModuleTooLarge { size: u64, limit: u64 },
    #[error("invalid WebAssembly module: {0}")]
    InvalidModule(String),
    #[error(
        "module imports unknown {kind} `{module}::{name}` (only wasi_snapshot_preview1 functions are provided)"
    )]
    UnknownImport {
        module: String,
        name: String,
        kind: &'static str,
    },
    #[error("module cannot be linked: {0}")]
    Link(String),
    #[error(
        "module exports no `_start` function of type () -> () (build a WASI command, e.g. a Rust binary for wasm32-wasip1)"
    )]
    MissingEntryPoint,
    #[error("invalid secrets: {0}")]
    InvalidSecrets(String),
    #[error("instruction limit exceeded ({limit} instructions)")]
    InstructionLimit { limit: u64 },
    #[error("time limit exceeded after {instructions} instructions ({seconds} s limit)")]
    TimeLimit { seconds: u64, instructions: u64 },
    #[error("memory limit exceeded ({limit_mib} MiB)")]
    MemoryLimit { limit_mib: u32 },
    #[error("output limit exceeded ({limit} bytes of stdout)")]
    OutputLimit { limit: u64 },
    #[error("stack overflow (call stack exhausted)")]
    StackOverflow,
    #[error("trap: {0}")]
    Trap(String),
    #[error("guest exited with code {code}")]
    Exit { code: i32 },
    #[error(
        "output is not valid UTF-8 (first invalid byte at offset {valid_up_to}); use the Bytes format for binary output"
    )]
    InvalidUtf8 { valid_up_to: usize },
    #[error("output is not valid JSON: {0}")]
    InvalidJson(String),
    #[error(
        "output of {size} bytes does not fit in the result message and no output directory is configured"
    )]
    OutputTooLarge { size: u64 },
}

impl Fault {
    /// Stable machine-readable class, the result's `errorKind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::ModuleTooLarge { .. } => "moduleTooLarge",
            Fault::InvalidModule(_) => "invalidModule",
            Fault::UnknownImport { .. } => "unknownImport",
            Fault::Link(_) => "link",
            Fault::MissingEntryPoint => "missingEntryPoint",
            Fault::InvalidSecrets(_) => "invalidSecrets",
            Fault::InstructionLimit { .. } => "instructionLimit",
            Fault::TimeLimit { .. } => "timeLimit",
            Fault::MemoryLimit { .. } => "memoryLimit",
            Fault::OutputLimit { .. } => "outputLimit",
            Fault::StackOverflow => "stackOverflow",
            Fault::Trap(_) => "trap",
            Fault::Exit { .. } => "exit",
            Fault::InvalidUtf8 { .. } => "invalidUtf8",
            Fault::InvalidJson(_) => "invalidJson",
            Fault::OutputTooLarge { .. } => "outputTooLarge",
        }
    }
}

/// The executor could not do its job; nothing the guest did is at fault.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("reading {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("module {path} has sha256 {actual}, expected {expected}; nothing was run")]
    ChecksumMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("expected sha256 {0:?} is not 64 hex characters")]
    InvalidChecksum(String),
    #[error("env file {path} is not a JSON object of string values: {source}")]
    EnvFile {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("writing {what} {path}: {source}")]
    Write {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("setting up the wasmi engine: {0}")]
    Setup(String),
    #[error("serializing the result message: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl PlatformError {
    /// The process exit code for this failure; documented in the README for the operator.
    pub fn exit_code(&self) -> i32 {
        match self {
            PlatformError::Read { .. } | PlatformError::EnvFile { .. } => 3,
            PlatformError::ChecksumMismatch { .. } | PlatformError::InvalidChecksum(_) => 4,
            PlatformError::Write { .. } | PlatformError::Serialize(_) => 5,
            PlatformError::Setup(_) => 1,
        }
    }
}
