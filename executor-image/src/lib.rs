//! Runs one WASI (preview 1) module under [wasmi] with instruction (fuel), memory, wall-clock and
//! output limits, and turns whatever the module did into one bounded result message.
//!
//! The crate separates two kinds of failure (see [`error`]):
//! - a [`Fault`] is the guest's doing (trap, limit hit, bad output, bad module, bad secrets); it
//!   still produces a well-formed [`ResultMessage`] with `ok: false`;
//! - a [`PlatformError`] means the executor could not do its job (unreadable files, checksum
//!   mismatch, result not writable); the binary exits non-zero and writes no result.
//!
//! [`Executor`] holds the engine and linker, built once; [`Executor::run`] executes one [`Job`].

pub mod config;
mod determinism;
pub mod error;
mod executor;
pub mod handoff;
mod limiter;
pub mod module_file;
pub mod output;
pub mod result;
mod sched;
mod stdio;

pub use config::{Deterministic, Limits, ResponseFormat, SystemEnv};
pub use error::{Fault, PlatformError};
pub use executor::{Execution, Executor, Job};
pub use result::ResultMessage;

/// Result alias for platform failures.
pub type Result<T, E = PlatformError> = std::result::Result<T, E>;
