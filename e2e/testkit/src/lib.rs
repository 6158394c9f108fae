//! What the workspace's tests and benchmarks share, in one place: where the build put an artifact
//! ([`target_dir`], [`artifact`], [`contract_wasm`], [`guest_wasm`]), `git` with a fixed identity
//! ([`git`]), polling waits that fail with what they waited for ([`wait_for`], [`wait_until`]), NEAR
//! test accounts, keys and amounts ([`near`], feature `near`), the standard localnet genesis
//! ([`localnet`], feature `localnet`), test repositories pods can read and waits on Kubernetes
//! conditions ([`cluster`], feature `cluster`).
//!
//! A dev-dependency (or a benchmark's dependency) only: helpers panic with a message that says what
//! is missing and how to make it, which is what a test wants and a product never does.

#[cfg(feature = "cluster")]
pub mod cluster;
mod git;
#[cfg(feature = "localnet")]
pub mod localnet;
#[cfg(feature = "near")]
pub mod near;
mod paths;
mod wait;

pub use git::{example_repository, git, reproducible_git, try_git, which};
pub use paths::{artifact, contract_wasm, guest_wasm, target_dir, workspace_root};
pub use wait::{wait_for, wait_until};
