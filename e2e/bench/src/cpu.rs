//! Where the CPU time of a step went: this process (in-process operator, localnet, node agent), the
//! executor sandboxes it started (reaped children), the control plane's processes (live children),
//! and everything else on the machine (other builds) — so a figure measured on a shared 2-core
//! machine says how contended it was.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Cumulative CPU counters at one moment.
pub struct CpuSnapshot {
    at: Instant,
    own: Duration,
    reaped: Duration,
    /// Live children by command name (etcd, kube-apiserver, …), summed over processes.
    children: BTreeMap<String, Duration>,
    /// All CPUs of the machine: busy and total time, from /proc/stat.
    machine_busy: Duration,
    machine_total: Duration,
}

impl CpuSnapshot {
    /// `None` where /proc is unreadable (not Linux): the figures are then left out.
    pub fn take() -> Option<Self> {
        let tick = clock_tick()?;
        let own = ProcStat::read("self")?;
        let me = std::process::id();
        let mut children = BTreeMap::new();
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            // Processes exit while we look: skip those.
            if let Some(stat) = ProcStat::read(pid)
                && stat.ppid == me
            {
                *children.entry(stat.comm.clone()).or_default() +=
                    ticks(stat.utime + stat.stime, tick);
            }
        }
        let (machine_busy, machine_total) = machine_times(tick)?;
        Some(Self {
            at: Instant::now(),
            own: ticks(own.utime + own.stime, tick),
            reaped: ticks(own.cutime + own.cstime, tick),
            children,
            machine_busy,
            machine_total,
        })
    }

    /// What was used between `self` and the later snapshot `end`.
    pub fn until(&self, end: &CpuSnapshot) -> CpuUse {
        let mut children: Vec<(String, Duration)> = end
            .children
            .iter()
            .map(|(name, &cpu)| {
                let before = self.children.get(name).copied().unwrap_or_default();
                (name.clone(), cpu.saturating_sub(before))
            })
            .filter(|(_, cpu)| !cpu.is_zero())
            .collect();
        children.sort_by_key(|(_, cpu)| std::cmp::Reverse(*cpu));
        let own = end.own.saturating_sub(self.own);
        let reaped = end.reaped.saturating_sub(self.reaped);
        let machine_busy = end.machine_busy.saturating_sub(self.machine_busy);
        let ours = own + reaped + children.iter().map(|(_, cpu)| *cpu).sum::<Duration>();
        CpuUse {
            wall: end.at.duration_since(self.at),
            own,
            reaped,
            children,
            others: machine_busy.saturating_sub(ours),
            machine_busy,
            machine_total: end.machine_total.saturating_sub(self.machine_total),
        }
    }
}

pub struct CpuUse {
    pub wall: Duration,
    pub own: Duration,
    pub reaped: Duration,
    pub children: Vec<(String, Duration)>,
    /// Busy time of the machine not accounted to this process tree (other builds and tests).
    pub others: Duration,
    pub machine_busy: Duration,
    pub machine_total: Duration,
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |d: Duration| d.as_secs_f64();
        write!(
            f,
            "CPU over {:.1} s wall: this process (operator, localnet, node agent) {:.1} s, \
             executor sandboxes {:.1} s",
            s(self.wall),
            s(self.own),
            s(self.reaped)
        )?;
        for (name, cpu) in &self.children {
            write!(f, ", {name} {:.1} s", s(*cpu))?;
        }
        write!(
            f,
            ", other processes on the machine {:.1} s; machine busy {:.1} of {:.1} CPU-s",
            s(self.others),
            s(self.machine_busy),
            s(self.machine_total)
        )
    }
}

struct ProcStat {
    comm: String,
    ppid: u32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
}

impl ProcStat {
    fn read(pid: &str) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    fn parse(text: &str) -> Option<Self> {
        // The command name is in parentheses and may itself contain spaces or parentheses.
        let (head, rest) = text.rsplit_once(')')?;
        let comm = head.split_once('(')?.1.to_string();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| fields.get(i)?.parse::<u64>().ok();
        Some(Self {
            comm,
            ppid: u32::try_from(field(1)?).ok()?,
            utime: field(11)?,
            stime: field(12)?,
            cutime: field(13)?,
            cstime: field(14)?,
        })
    }
}

/// Busy (everything but idle and iowait) and total time of all CPUs.
fn machine_times(tick: u64) -> Option<(Duration, Duration)> {
    parse_machine_times(&std::fs::read_to_string("/proc/stat").ok()?, tick)
}

fn parse_machine_times(text: &str, tick: u64) -> Option<(Duration, Duration)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or_default();
    Some((ticks(total - idle, tick), ticks(total, tick)))
}

fn clock_tick() -> Option<u64> {
    // SAFETY: sysconf only reads a configuration value.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(tick).ok().filter(|&t| t > 0)
}

fn ticks(count: u64, per_second: u64) -> Duration {
    Duration::from_nanos(count.saturating_mul(1_000_000_000) / per_second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_stat_line_with_an_awkward_command_name() {
        let line =
            "4242 (kube (x) y) S 17 4242 4242 0 -1 4194560 1 2 3 4 250 75 30 12 20 0 9 0 100";
        let stat = ProcStat::parse(line).unwrap();
        assert_eq!(stat.comm, "kube (x) y");
        assert_eq!(stat.ppid, 17);
        assert_eq!((stat.utime, stat.stime), (250, 75));
        assert_eq!((stat.cutime, stat.cstime), (30, 12));
        assert!(ProcStat::parse("4242 (cut short) S 17").is_none());
    }

    #[test]
    fn machine_busy_time_leaves_out_idle_and_iowait() {
        let text = "cpu  100 5 20 300 10 1 2 3 0 0\ncpu0 50 2 10 150 5 0 1 1 0 0\n";
        let (busy, total) = parse_machine_times(text, 100).unwrap();
        assert_eq!(total, Duration::from_millis(4410));
        assert_eq!(busy, Duration::from_millis(1310));
    }

    #[test]
    fn snapshots_of_this_process_are_ordered() {
        let (Some(start), Some(end)) = (CpuSnapshot::take(), CpuSnapshot::take()) else {
            return; // no /proc here
        };
        let used = start.until(&end);
        assert!(used.machine_busy <= used.machine_total, "{used}");
        assert!(used.others <= used.machine_busy, "{used}");
    }
}
