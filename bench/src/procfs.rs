//! What the bench reads from `/proc`: CPU time and RSS of processes, processes by name, and
//! facts about the machine for the results header.

use std::collections::HashMap;
use std::fs;
use std::process::Command;
use std::sync::LazyLock;
use std::time::Instant;

/// Clock ticks per second of `utime`/`stime` (`getconf CLK_TCK`, almost always 100).
static CLK_TCK: LazyLock<f64> = LazyLock::new(|| {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(100.0)
});

/// User + system CPU time of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `comm` (field 2) may hold spaces: count fields after its closing parenthesis.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Resident set size of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Processes whose command name (`/proc/<pid>/comm`) is `name`.
pub fn pids_named(name: &str) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim_end() == name))
        .collect()
}

/// A group of processes whose CPU use is measured together (Postgres is one process per
/// connection; Redis may be several servers).
#[derive(Debug, Clone)]
pub enum Group {
    Pid(u32),
    Named(&'static str),
    /// These processes (Postgres backends found by the caller), as they are at each snapshot.
    Pids(Vec<u32>),
    /// Processes named `name` other than these.
    NamedExcept(&'static str, Vec<u32>),
}

impl Group {
    fn pids(&self) -> Vec<u32> {
        match self {
            Group::Pid(pid) => vec![*pid],
            Group::Named(name) => pids_named(name),
            Group::Pids(pids) => pids.clone(),
            Group::NamedExcept(name, except) => pids_named(name).into_iter().filter(|p| !except.contains(p)).collect(),
        }
    }
}

/// CPU time of labelled process groups at one instant.
#[derive(Debug)]
pub struct CpuSnapshot {
    at: Instant,
    ticks: Vec<(String, HashMap<u32, u64>)>,
    /// Busy and total ticks of the whole machine (`/proc/stat`), all CPUs summed.
    machine: Option<(u64, u64)>,
}

impl CpuSnapshot {
    pub fn take(groups: &[(String, Group)]) -> Self {
        let ticks = groups
            .iter()
            .map(|(label, group)| {
                let per_pid = group.pids().into_iter().filter_map(|pid| Some((pid, cpu_ticks(pid)?))).collect();
                (label.clone(), per_pid)
            })
            .collect();
        Self { at: Instant::now(), ticks, machine: machine_ticks() }
    }

    /// How busy the whole machine was since `earlier`, in percent of one core (so up to
    /// `nproc` × 100).
    pub fn machine_percent_since(&self, earlier: &CpuSnapshot) -> Option<f64> {
        let ((busy0, total0), (busy1, total1)) = (earlier.machine?, self.machine?);
        let total = total1.checked_sub(total0).filter(|t| *t > 0)?;
        Some(busy1.saturating_sub(busy0) as f64 / total as f64 * nproc() as f64 * 100.0)
    }

    /// CPU use of each group since `earlier`, in percent of one core. A process that started in
    /// between counts from zero; one that ended in between is lost.
    pub fn percent_since(&self, earlier: &CpuSnapshot) -> Vec<(String, f64)> {
        let wall = self.at.duration_since(earlier.at).as_secs_f64().max(1e-9);
        self.ms_since(earlier).into_iter().map(|(label, ms)| (label, ms / 1000.0 / wall * 100.0)).collect()
    }

    /// CPU time of each group since `earlier`, in milliseconds (clock-tick resolution, 10 ms
    /// per process on most systems). Counted as [`Self::percent_since`] counts.
    pub fn ms_since(&self, earlier: &CpuSnapshot) -> Vec<(String, f64)> {
        self.ticks
            .iter()
            .map(|(label, now)| {
                let before = earlier.ticks.iter().find(|(l, _)| l == label).map(|(_, t)| t);
                let used: u64 = now
                    .iter()
                    .map(|(pid, t)| t.saturating_sub(before.and_then(|b| b.get(pid).copied()).unwrap_or(0)))
                    .sum();
                (label.clone(), used as f64 / *CLK_TCK * 1000.0)
            })
            .collect()
    }
}

/// (busy, total) ticks of all CPUs from the `cpu` line of `/proc/stat` (idle and iowait are not
/// busy).
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user)
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The soft limit on open files of this process (inherited by the processes it starts).
pub fn open_files_limit() -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The 1-, 5- and 15-minute load averages, as `/proc/loadavg` shows them.
pub fn load_average() -> Option<String> {
    let loadavg = fs::read_to_string("/proc/loadavg").ok()?;
    Some(loadavg.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// Total memory, in GiB.
pub fn mem_total_gib() -> Option<f64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    let kib: f64 = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0 / 1024.0)
}

/// The CPU model, from `/proc/cpuinfo`.
pub fn cpu_model() -> Option<String> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = cpuinfo.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_owned())
}

/// Number of CPUs this process may use (what `nproc` prints).
pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
