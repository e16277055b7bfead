//! Figures and how they are shown: medians with min–max, paired ratios, a verdict; the
//! table's [`Row`] and the run's [`Bench`] (smoke or full) that every lane writes into.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::chart::Lane;

pub(crate) struct Stat {
    pub(crate) median: f64,
    min: f64,
    max: f64,
}

pub(crate) fn stat(mut v: Vec<f64>) -> Stat {
    v.sort_by(|a, b| a.total_cmp(b));
    Stat {
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
    }
}

/// Ours against a baseline measured right beside it: the ratio of each pair, so that a
/// shared machine speeding up or slowing down between rounds moves both sides alike.
pub(crate) fn paired(ours: &[f64], base: &[f64]) -> Stat {
    stat(ours.iter().zip(base).map(|(o, b)| o / b).collect())
}

pub(crate) fn fmt_ratio(s: &Stat) -> String {
    format!("{:.2}× ({:.2}–{:.2})", s.median, s.min, s.max)
}

pub(crate) fn fmt_ms(s: &Stat) -> String {
    format!("{:.2} ms ({:.2}–{:.2})", s.median, s.min, s.max)
}

pub(crate) fn fmt_rate(s: &Stat, unit: &str) -> String {
    format!("{:.0} {unit} ({:.0}–{:.0})", s.median, s.min, s.max)
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The end of a target cell: whether the target was met, in words a script can grep.
pub(crate) fn verdict(met: bool) -> &'static str {
    if met { "— **met**" } else { "— **missed**" }
}

pub(crate) fn timed(cmd: &mut Command) -> Result<f64> {
    let t = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    let elapsed = ms(t.elapsed());
    if !out.success() {
        bail!("{cmd:?} failed");
    }
    Ok(elapsed)
}

pub(crate) fn timed_input(cmd: &mut Command, input: &str) -> Result<f64> {
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    let elapsed = ms(t.elapsed());
    if !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains("password=") {
        bail!("{cmd:?} did not produce a credential");
    }
    Ok(elapsed)
}

/// One line of the table: the case, ours, the baselines of the same run, target → result.
pub(crate) struct Row {
    pub(crate) case: String,
    pub(crate) ours: String,
    pub(crate) baseline: String,
    pub(crate) target: String,
}

/// One run of the bench: whether it is a smoke run (`cargo xtask bench --smoke`, CI: every
/// lane once, briefly, so the bench cannot rot; the numbers mean nothing), and what the
/// lanes found.
pub(crate) struct Bench {
    smoke: bool,
    pub(crate) rows: Vec<Row>,
    pub(crate) chart: Vec<Lane>,
    pub(crate) notes: Vec<String>,
}

impl Bench {
    pub(crate) fn new(smoke: bool) -> Self {
        Self {
            smoke,
            rows: Vec::new(),
            chart: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub(crate) fn smoke(&self) -> bool {
        self.smoke
    }

    /// `n` rounds, or one in a smoke run.
    pub(crate) fn rounds(&self, n: usize) -> usize {
        if self.smoke { 1 } else { n }
    }

    /// A row of the table: case, ours, baselines, target → result.
    pub(crate) fn row(&mut self, [case, ours, baseline, target]: [String; 4]) {
        self.rows.push(Row {
            case,
            ours,
            baseline,
            target,
        });
    }

    /// A lane of the chart.
    pub(crate) fn lane(&mut self, lane: Lane) {
        self.chart.push(lane);
    }

    pub(crate) fn note(&mut self, note: String) {
        self.notes.push(note);
    }
}
