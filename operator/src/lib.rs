//! The OutLayer operator: watches the contract, turns each request into an `ExecutionRequest`, compiles
//! the code in a sandboxed Job into a content-addressed cache, runs it in a per-execution executor pod and
//! reports the result on chain. See DESIGN.md for the architecture.
//!
//! This crate is growing: today it holds the custom resource types (`crd`) and the `crdgen` binary.

pub mod crd;
