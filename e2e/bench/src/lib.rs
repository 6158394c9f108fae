//! What the benchmark binaries share: the cluster they run on, what the machine is, percentiles.
//! `operator-bench` (src/main.rs) and `onchain-bench` (src/bin/onchain-bench/) keep their own steps.

pub mod apiserver;
pub mod cpu;
pub mod env;
pub mod machine;
pub mod stats;
pub mod watch;
