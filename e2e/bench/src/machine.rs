//! What the figures were measured on: they mean little without the machine and the builds.

use std::path::Path;

pub fn describe(executor: (&Path, &str), operator: (&Path, &str)) -> String {
    format!(
        "{}\n\
         builds: executor {} ({}), operator binary {} ({}), in-process controllers (steps 1-2) {}\n\
         control plane, node agent, executor pods, operator and this bench all share these CPUs",
        machine(),
        executor.1,
        executor.0.display(),
        operator.1,
        operator.0.display(),
        in_process_profile(),
    )
}

/// The profile this process (and so any in-process controllers) was built with.
pub fn in_process_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// CPUs, CPU model, memory and the load average right now, on one line.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "?".to_string());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".to_string());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "machine: nproc {cpus}, CPU {model}, MemTotal {memory}, load average at start {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}
