//! The build driver the operator's compile Jobs run (DESIGN §4–5).
//!
//! - [`fetch`]: the fetch Job (network allowed). Validates the repository and ref, fetches exactly
//!   one commit with git (hooks, prompts and foreign protocols off), resolves a branch/tag to the
//!   full SHA and vendors the crate's dependencies so the build needs no network.
//! - [`build`]: the build Job (no network). `cargo build --offline --locked --release --target
//!   wasm32-wasip1`, validates the module ([`module`]) and publishes it to the cache
//!   ([`publish`]) under its sha256.
//!
//! - [`download`]: `fetch-url`, a prebuilt module by URL (https, public addresses, size cap,
//!   sha256 checked first), published by its hash; nothing is built.
//!
//! Both report one JSON object of at most 4096 bytes ([`report`]) and keep the full log in a file
//! ([`log`]); child processes run under a deadline and a workspace-size cap ([`runner`]).

pub mod build;
pub mod download;
pub mod error;
pub mod fetch;
pub mod isolation;
pub mod log;
pub mod module;
pub mod publish;
pub mod repo;
pub mod report;
pub mod reproducible;
pub mod runner;
pub mod toolenv;
pub mod workspace;

pub use error::{Error, Result};

/// The only target the compiler builds (the CRD's `buildTarget`).
pub const BUILD_TARGET: &str = "wasm32-wasip1";
