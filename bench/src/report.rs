//! The results table (`metric | runq | direct / baseline | target | verdict`) and the results
//! file with its header.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::procfs;
use crate::scenarios::Plan;
use crate::stack::LogSummary;

/// A DESIGN.md target a figure is held against.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// At most this many milliseconds.
    MaxMs(f64),
    /// At most this many seconds.
    MaxSecs(f64),
    /// At most this many KiB.
    MaxKib(f64),
    /// At least this many per second.
    MinPerSec(f64),
}

impl Target {
    fn describe(self) -> String {
        match self {
            Target::MaxMs(v) => format!("≤ {v} ms"),
            Target::MaxSecs(v) => format!("≤ {v} s"),
            Target::MaxKib(v) => format!("≤ {v} KiB"),
            Target::MinPerSec(v) => format!("≥ {} /s", thousands(v)),
        }
    }

    fn met_by(self, value: f64) -> bool {
        match self {
            Target::MaxMs(max) | Target::MaxSecs(max) | Target::MaxKib(max) => value <= max,
            Target::MinPerSec(min) => value >= min,
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    metric: String,
    runq: String,
    baseline: String,
    target: String,
    verdict: String,
}

impl Row {
    /// A figure with no baseline and no target (yet).
    pub fn new(metric: impl Into<String>, runq: impl Into<String>) -> Self {
        Self {
            metric: metric.into(),
            runq: runq.into(),
            baseline: String::new(),
            target: String::new(),
            verdict: String::new(),
        }
    }

    /// Something that could not be measured, and why.
    pub fn na(metric: impl Into<String>, reason: impl AsRef<str>) -> Self {
        Self::new(metric, format!("n/a ({})", reason.as_ref().replace('|', "/").replace('\n', " ")))
    }

    /// The direct-to-provider figure or other point of comparison.
    pub fn baseline(mut self, baseline: impl Into<String>) -> Self {
        self.baseline = baseline.into();
        self
    }

    /// Holds `value` (in the target's unit) against `target`.
    pub fn judged(mut self, target: Target, value: f64) -> Self {
        self.target = target.describe();
        self.verdict = if target.met_by(value) { "meets" } else { "MISSES" }.into();
        self
    }

    /// A target shown for reference where no figure could be judged.
    pub fn unjudged(mut self, target: Target) -> Self {
        self.target = target.describe();
        self
    }

    /// Shown for information only: no target, no verdict.
    pub fn informational(mut self) -> Self {
        self.target.clear();
        self.verdict.clear();
        self
    }

    fn cells(&self) -> [&str; 5] {
        [&self.metric, &self.runq, &self.baseline, &self.target, &self.verdict]
    }
}

/// The whole report of one bench run.
#[derive(Debug)]
pub struct Report {
    header: Vec<(String, String)>,
    rows: Vec<Row>,
    file_stem: String,
}

impl Report {
    pub fn new(plan: &Plan, rows: Vec<Row>, logs: &[LogSummary], load_at_start: &str) -> Self {
        let now = chrono::Utc::now();
        let (rev, dirty) = git_revision();
        let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
        let logs: Vec<String> =
            logs.iter().map(|l| format!("{} {} warnings ({})", l.name, l.warnings, l.path.display())).collect();
        let header = vec![
            ("date".into(), now.format("%Y-%m-%d %H:%M UTC").to_string()),
            ("mode".into(), plan.mode.to_string()),
            ("nproc".into(), procfs::nproc().to_string()),
            ("cpu".into(), procfs::cpu_model().unwrap_or_else(|| "unknown".into())),
            ("load average at start".into(), load_at_start.into()),
            ("memory".into(), procfs::mem_total_gib().map_or_else(|| "unknown".into(), |g| format!("{g:.1} GiB"))),
            ("git revision".into(), if dirty { format!("{rev} (with uncommitted changes)") } else { rev.clone() }),
            ("build profile".into(), profile.into()),
            ("N".into(), plan.describe()),
            ("logs".into(), logs.join("; ")),
        ];
        let file_stem = format!("{}-{rev}-{}", now.format("%Y-%m-%dT%H%MZ"), plan.mode);
        Self { header, rows, file_stem }
    }

    /// The table alone, columns padded so it also reads well in a terminal.
    pub fn markdown(&self) -> String {
        let titles = ["metric", "runq", "direct / baseline", "target", "verdict"];
        let mut widths = titles.map(|t| t.chars().count());
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row.cells()) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: [&str; 5]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(widths)
                .map(|(cell, w)| format!("{cell}{}", " ".repeat(w - cell.chars().count())))
                .collect();
            format!("| {} |\n", padded.join(" | "))
        };
        let mut out = line(titles);
        out.push_str(&format!("|{}|\n", widths.map(|w| "-".repeat(w + 2)).join("|")));
        for row in &self.rows {
            out.push_str(&line(row.cells()));
        }
        out
    }

    /// Writes `<dir>/<UTC date>-<rev>-<mode>.md` (header, then the table); returns its path.
    pub fn write(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let mut text = format!("# runq bench, {}\n\n", self.file_stem);
        for (key, value) in &self.header {
            let _ = writeln!(text, "- {key}: {value}");
        }
        let _ = writeln!(text, "\n{}", self.markdown());
        let path = dir.join(format!("{}.md", self.file_stem));
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

/// Short revision of the workspace, and whether it has uncommitted changes.
fn git_revision() -> (String, bool) {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let rev = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "norev".into());
    let dirty = git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
    (rev, dirty)
}

/// `12345.6` → `12,346`.
pub fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}
