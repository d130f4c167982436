//! `hsmkms-load report`: turns what one comparison run measured (JSON lines written by
//! `benches/compare.sh`) into `BENCHMARKS.md`, an SVG chart of requests/s and p99 latency
//! against connection count, and an SVG chart of the per-second p99 timeline. Every ratio in it
//! is between figures of the same run: hsmkms against the reference handlers of
//! `hsmkms-load echo` (the least the same work costs), Decrypt, GenerateDataKey, Sign, Verify
//! and GenerateMac against Encrypt, and the binary of `--baseline` against the one measured.
//!
//! A figure measured in several rounds (`compare.sh --rounds`, each line with its `round`) is
//! reported as the median of its runs, and a ratio as the median of the per-round ratios with
//! their range: the machine's speed drifts by up to a third within a minute, so only runs taken
//! next to each other compare, and one slow round must not decide a verdict.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde::Deserialize;
use serde_json::Value;

use crate::bench::{Latency, RunResult};

/// Options of `hsmkms-load report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// JSON lines: load runs (`hsmkms-load bench --json`, the wrk scripts) and other figures.
    #[arg(long)]
    pub results: PathBuf,
    /// The commands the run used, one per line, shown in the report.
    #[arg(long)]
    pub commands: Option<PathBuf>,
    /// Where to write the report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
    /// Where to write the chart (linked from the report by its path relative to the report).
    #[arg(long, default_value = "benches/results/encrypt.svg")]
    pub chart: PathBuf,
    /// Where to write the chart of the per-second p99 timeline.
    #[arg(long, default_value = "benches/results/timeline.svg")]
    pub timeline_chart: PathBuf,
    /// The summary `benches/profile.sh` wrote (Markdown, included as it is).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Notes of the run (Markdown lines, e.g. what could not be measured), shown near the top.
    #[arg(long)]
    pub notes: Option<PathBuf>,
    /// Commit that was measured.
    #[arg(long, default_value = "")]
    pub commit: String,
    /// Commit whose binary was measured beside it as `before` (`compare.sh --baseline`).
    #[arg(long, default_value = "")]
    pub baseline: String,
}

/// A measurement that is not a load run, as `compare.sh` records it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Figure {
    /// What was measured, e.g. `memory-100k-keys`, `start-ready-100k-keys`, `aead/seal/4KiB`.
    name: String,
    value: f64,
    unit: String,
    #[serde(default)]
    note: String,
}

#[derive(Debug, Default)]
struct Results {
    runs: Vec<RunResult>,
    figures: BTreeMap<String, Figure>,
}

fn load(path: &Path) -> Result<Results> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text, &path.display().to_string())
}

/// The lines of a results file (`source` names it in errors).
fn parse(text: &str, source: &str) -> Result<Results> {
    let mut results = Results::default();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value =
            serde_json::from_str(line).with_context(|| format!("{source}:{}: not JSON", n + 1))?;
        if value.get("requestsPerSecond").is_some() {
            results.runs.push(
                serde_json::from_value(value)
                    .with_context(|| format!("{source}:{}: not a load run", n + 1))?,
            );
        } else {
            let figure: Figure = serde_json::from_value(value)
                .with_context(|| format!("{source}:{}: neither a run nor a figure", n + 1))?;
            results.figures.insert(figure.name.clone(), figure);
        }
    }
    Ok(results)
}

/// The external load generator's name in results.
const WRK: &str = "wrk";
/// The project's own load tool's name in results.
const OWN: &str = "hsmkms-load";
/// The labels of `--baseline`'s runs: the previous binary, and the new one measured beside it.
const BEFORE: &str = "before";
const AFTER: &str = "after";

/// Whether an operation's runs differ by `plaintextBytes`: its plaintext (Encrypt, Decrypt) or
/// its message (Sign, Verify and the MACs) is that long.
fn sized(op: &str) -> bool {
    matches!(
        op,
        "encrypt" | "decrypt" | "sign" | "verify" | "generate-mac" | "verify-mac"
    )
}

/// The series of the chart and the tables: one target, one operation, one kind of key, one
/// load generator.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Series {
    label: String,
    op: String,
    key_store: bool,
    plaintext_bytes: usize,
    loader: String,
}

impl Series {
    fn of(r: &RunResult) -> Self {
        Self {
            label: r.label.clone(),
            op: r.op.clone(),
            key_store: r.key_store,
            plaintext_bytes: r.plaintext_bytes,
            loader: r.loader.clone(),
        }
    }

    /// What the series measured; the load generator is named when it is not `primary`.
    fn title(&self, primary: &str) -> String {
        let emulator = matches!(self.label.as_str(), "hsmkms" | BEFORE | AFTER);
        let key = match (emulator, self.op.as_str(), self.key_store) {
            (true, "create-key", true) => " in a key store",
            (true, "create-key", false) => ", AWS_KMS keys",
            (true, _, true) => ", key store key",
            (true, _, false) => ", AWS_KMS key",
            _ => "",
        };
        let size = if sized(&self.op) {
            format!(", {} B", self.plaintext_bytes)
        } else {
            String::new()
        };
        let loader = if self.loader == primary {
            String::new()
        } else {
            format!(" ({})", self.loader)
        };
        format!("{} {}{key}{size}{loader}", self.label, self.op)
    }
}

/// The value in the middle (the mean of the two middle ones for an even count; 0 for none): a
/// slow or fast round moves it no more than any other round does.
fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.into_iter().collect();
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Every run of one figure (the same target, operation, key kind, connections, plaintext size
/// and load generator): one per round of `compare.sh --rounds`, or just one. Never empty.
#[derive(Debug, Clone)]
struct Measured<'a> {
    runs: Vec<&'a RunResult>,
}

impl<'a> Measured<'a> {
    fn new(runs: Vec<&'a RunResult>) -> Option<Self> {
        (!runs.is_empty()).then_some(Self { runs })
    }

    /// The first run, for what every run of the figure shares (label, operation, key kind,
    /// connections, load generator).
    fn first(&self) -> &'a RunResult {
        self.runs[0]
    }

    /// The median requests/s of the runs.
    fn rps(&self) -> f64 {
        median(self.runs.iter().map(|r| r.requests_per_second))
    }

    /// Each percentile's median over the runs (each on its own: not one run's latencies).
    fn latency(&self) -> Latency {
        let of = |f: fn(&Latency) -> f64| median(self.runs.iter().map(|r| f(&r.latency_ms)));
        Latency {
            p50: of(|l| l.p50),
            p90: of(|l| l.p90),
            p99: of(|l| l.p99),
            p999: of(|l| l.p999),
            max: of(|l| l.max),
            mean: of(|l| l.mean),
        }
    }

    /// The errors of every run.
    fn errors(&self) -> u64 {
        self.runs.iter().map(|r| r.errors).sum()
    }

    /// The smallest and largest requests/s of the runs.
    fn rps_range(&self) -> (f64, f64) {
        self.runs.iter().fold((f64::MAX, f64::MIN), |(lo, hi), r| {
            (lo.min(r.requests_per_second), hi.max(r.requests_per_second))
        })
    }
}

/// A ratio of two figures' requests/s: the median of the per-round ratios, with their range.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ratio {
    median: f64,
    min: f64,
    max: f64,
    /// How many rounds had both sides; 1 for a ratio of two medians (see [`Ratio::of`]).
    rounds: usize,
}

impl Ratio {
    /// `num` against `den`, round by round: within a round the two sides ran next to each
    /// other, so each round's ratio is clear of the machine's drift between rounds. Sides not
    /// measured in the same rounds (moto's single run against wrk's rounds, results written
    /// without rounds) give the ratio of their medians instead, as one round.
    fn of(num: &Measured, den: &Measured) -> Self {
        let den_by_round: BTreeMap<u32, f64> = den
            .runs
            .iter()
            .filter_map(|r| r.round.map(|k| (k, r.requests_per_second)))
            .collect();
        let per_round: Vec<f64> = num
            .runs
            .iter()
            .filter_map(|r| {
                let d = den_by_round.get(&r.round?)?;
                Some(r.requests_per_second / d)
            })
            .collect();
        if per_round.is_empty() {
            let v = num.rps() / den.rps();
            return Self {
                median: v,
                min: v,
                max: v,
                rounds: 1,
            };
        }
        Self {
            median: median(per_round.iter().copied()),
            min: per_round.iter().copied().fold(f64::MAX, f64::min),
            max: per_round.iter().copied().fold(f64::MIN, f64::max),
            rounds: per_round.len(),
        }
    }

    /// The rounds' range, e.g. " (0.58–0.66, 3 rounds)"; empty for one round.
    fn range(&self) -> String {
        if self.rounds < 2 {
            return String::new();
        }
        format!(
            " ({}–{}, {} rounds)",
            decimals(self.min),
            decimals(self.max),
            self.rounds
        )
    }

    /// E.g. "0.62× (0.58–0.66, 3 rounds)", or "0.62×" for one round.
    fn show(&self) -> String {
        format!("{}{}", ratio(self.median), self.range())
    }

    /// The same with the ratio in bold.
    fn show_bold(&self) -> String {
        format!("**{}**{}", ratio(self.median), self.range())
    }
}

impl Results {
    /// The load generator of the ratios: wrk when the run had it.
    fn primary(&self) -> &'static str {
        if self.runs.iter().any(|r| r.loader == WRK) {
            WRK
        } else {
            OWN
        }
    }

    /// Every run of one figure, in every round it was measured (`None` if it was not).
    fn find_by(
        &self,
        loader: &str,
        label: &str,
        op: &str,
        key_store: bool,
        conns: usize,
        bytes: usize,
    ) -> Option<Measured<'_>> {
        Measured::new(
            self.runs
                .iter()
                .filter(|r| {
                    r.loader == loader
                        && r.label == label
                        && r.op == op
                        && r.key_store == key_store
                        && r.connections == conns
                        && (r.plaintext_bytes == bytes || !sized(op))
                        && r.timeline.is_empty()
                })
                .collect(),
        )
    }

    /// The runs of the primary load generator.
    fn find(
        &self,
        label: &str,
        op: &str,
        key_store: bool,
        conns: usize,
        bytes: usize,
    ) -> Option<Measured<'_>> {
        self.find_by(self.primary(), label, op, key_store, conns, bytes)
    }

    /// The most rounds any figure was measured in (`None` for results without rounds).
    fn rounds(&self) -> Option<u32> {
        self.runs.iter().filter_map(|r| r.round).max()
    }

    /// The run with a per-second timeline (`hsmkms-load bench --timeline`).
    fn timeline(&self) -> Option<&RunResult> {
        self.runs.iter().find(|r| !r.timeline.is_empty())
    }

    /// Each series with its figures, one per connection count, in order of connections.
    fn series(&self) -> BTreeMap<Series, Vec<Measured<'_>>> {
        let mut map: BTreeMap<Series, BTreeMap<usize, Vec<&RunResult>>> = BTreeMap::new();
        for r in self.runs.iter().filter(|r| r.timeline.is_empty()) {
            map.entry(Series::of(r))
                .or_default()
                .entry(r.connections)
                .or_default()
                .push(r);
        }
        map.into_iter()
            .map(|(series, by_conns)| {
                let figures = by_conns.into_values().filter_map(Measured::new).collect();
                (series, figures)
            })
            .collect()
    }

    /// The largest shares of hsmkms's CPU samples in a profile (`aws-kms` or `key-store`).
    fn profile_top(&self, target: &str, n: usize) -> Vec<(&str, f64)> {
        let prefix = format!("profile/{target}/");
        let mut shares: Vec<(&str, f64)> = self
            .figures
            .iter()
            .filter_map(|(name, f)| name.strip_prefix(&prefix).map(|c| (c, f.value)))
            .collect();
        shares.sort_by(|a, b| b.1.total_cmp(&a.1));
        shares.truncate(n);
        shares
    }
}

/// Writes the report and the charts.
pub fn main(args: ReportArgs) -> Result<()> {
    let results = load(&args.results)?;
    for path in [&args.chart, &args.timeline_chart] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
    }
    chart(&results, &args.chart)?;
    let read = |path: &Option<PathBuf>| -> Result<String> {
        match path {
            Some(path) => {
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
            }
            None => Ok(String::new()),
        }
    };
    let report_dir = match args.out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let timeline_link = match results.timeline() {
        Some(run) => {
            timeline_chart(run, &args.timeline_chart)?;
            Some(relative(&args.timeline_chart, report_dir))
        }
        None => None,
    };
    let inputs = Inputs {
        chart: relative(&args.chart, report_dir),
        timeline_chart: timeline_link,
        commands: read(&args.commands)?,
        profile: match &args.profile {
            Some(path) if path.exists() => read(&args.profile)?,
            _ => String::new(),
        },
        notes: read(&args.notes)?,
        commit: args.commit.clone(),
        baseline: args.baseline.clone(),
    };
    let text = render(&results, &inputs);
    std::fs::write(&args.out, text).with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} and {}{}",
        args.out.display(),
        args.chart.display(),
        if results.timeline().is_some() {
            format!(", {}", args.timeline_chart.display())
        } else {
            String::new()
        }
    );
    Ok(())
}

/// What the report shows besides the results.
#[derive(Debug, Default)]
struct Inputs {
    chart: String,
    timeline_chart: Option<String>,
    commands: String,
    profile: String,
    notes: String,
    commit: String,
    baseline: String,
}

fn relative(path: &Path, base: &Path) -> String {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
    path.strip_prefix(&base)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.display().to_string())
}

/// What the machine is, read from /proc.
fn machine() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown CPU");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kernel = read("/proc/sys/kernel/osrelease");
    format!(
        "{model}, {cores} cores, {:.0} GiB memory, Linux {}",
        mem_kib as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}

/// One target of issue 10 and what this run measured for it.
#[derive(Debug)]
struct Target {
    what: String,
    goal: String,
    /// Markdown.
    measured: String,
    /// `None` for a figure that is reported, not judged, or was not measured.
    met: Option<bool>,
    /// For a missed target: by how much.
    short: String,
    /// The profile (`aws-kms` or `key-store`) that says where this target's time goes.
    profile: Option<&'static str>,
}

impl Target {
    fn verdict(&self) -> &'static str {
        match (self.met, self.measured.is_empty()) {
            (_, true) => "not measured",
            (Some(true), _) => "met",
            (Some(false), _) => "**missed**",
            (None, _) => "reported",
        }
    }
}

/// A ratio of two figures' requests/s against a least ratio: the median of the per-round
/// ratios decides.
fn ratio_target(
    what: &str,
    goal: f64,
    against: &str,
    num: Option<Measured>,
    den: Option<Measured>,
    profile: Option<&'static str>,
) -> Target {
    let mut target = Target {
        what: what.to_string(),
        goal: format!("≥ {goal:.2}× {against}"),
        measured: String::new(),
        met: None,
        short: String::new(),
        profile,
    };
    if let (Some(n), Some(d)) = (num, den) {
        let r = Ratio::of(&n, &d);
        let ratio = r.median;
        // Over several rounds the two figures are medians and the ratio is the median of the
        // rounds' ratios, which need not be the one of the medians: "=" would be wrong.
        target.measured = if r.rounds > 1 {
            format!(
                "median {} vs {}; {}",
                per_second(n.rps()),
                per_second(d.rps()),
                r.show_bold()
            )
        } else {
            format!(
                "{} vs {} = {}",
                per_second(n.rps()),
                per_second(d.rps()),
                r.show_bold()
            )
        };
        target.met = Some(ratio >= goal);
        if ratio < goal {
            target.short = format!(
                "{:.0}% short ({ratio:.2}× for {goal:.2}×: {} more)",
                (1.0 - ratio / goal) * 100.0,
                per_second(goal * d.rps() - n.rps())
            );
        }
    }
    target
}

/// A figure against an upper bound (`at_most`) or a lower one.
fn bound_target(
    what: &str,
    goal: &str,
    value: Option<(f64, String)>,
    bound: f64,
    at_most: bool,
    unit: &str,
    profile: Option<&'static str>,
) -> Target {
    let mut target = Target {
        what: what.to_string(),
        goal: goal.to_string(),
        measured: String::new(),
        met: None,
        short: String::new(),
        profile,
    };
    if let Some((v, detail)) = value {
        target.measured = format!("**{} {unit}**{detail}", trim(v));
        let met = if at_most { v < bound } else { v >= bound };
        target.met = Some(met);
        if !met {
            target.short = if at_most {
                format!("{:.0}% over", (v / bound - 1.0) * 100.0)
            } else {
                format!("{:.0}% short", (1.0 - v / bound) * 100.0)
            };
        }
    }
    target
}

/// A ratio with two decimals, or four below 0.1 (moto's are tiny).
fn ratio(v: f64) -> String {
    format!("{}×", decimals(v))
}

/// Two decimals, or four below 0.1.
fn decimals(v: f64) -> String {
    if v < 0.1 {
        format!("{v:.4}")
    } else {
        format!("{v:.2}")
    }
}

fn per_second(v: f64) -> String {
    format!("{}/s", thousands(v))
}

/// 12345.6 as "12,346".
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

/// The per-second p99 verdict of a timeline: (median second, worst second, worst / median,
/// seconds without an answer).
fn stall(run: &RunResult) -> (f64, f64, f64, usize) {
    let mut p99: Vec<f64> = run
        .timeline
        .iter()
        .filter(|s| s.requests > 0)
        .map(|s| s.p99_ms)
        .collect();
    let silent = run.timeline.len() - p99.len();
    if p99.is_empty() {
        return (0.0, 0.0, f64::INFINITY, silent);
    }
    p99.sort_by(f64::total_cmp);
    let median = p99[p99.len() / 2];
    let worst = p99[p99.len() - 1];
    (median, worst, worst / median.max(1e-9), silent)
}

/// The most a second's p99 may be against the median second's.
const STALL_BOUND: f64 = 3.0;
/// 150 MB in MiB.
const MEMORY_BOUND_MIB: f64 = 150.0 / 1.048_576;

/// Issue 10's targets, each beside what this run measured.
fn targets(results: &Results) -> Vec<Target> {
    let run = |label: &str, op: &str, ks: bool, c: usize, bytes: usize| {
        results.find(label, op, ks, c, bytes)
    };
    let mut out = vec![
        ratio_target(
            "Encrypt, AWS_KMS key, 32 B, 64 connections",
            0.60,
            "the inline-Encrypt handler",
            run("hsmkms", "encrypt", false, 64, 32),
            run("inline", "encrypt", false, 64, 32),
            Some("aws-kms"),
        ),
        ratio_target(
            "Encrypt, key store key, 32 B, 64 connections",
            0.40,
            "the actor-hop handler",
            run("hsmkms", "encrypt", true, 64, 32),
            run("actor", "encrypt", false, 64, 32),
            Some("key-store"),
        ),
    ];
    for (op, title) in [
        ("decrypt", "Decrypt"),
        ("generate-data-key", "GenerateDataKey"),
    ] {
        for (ks, key, profile) in [
            (false, "AWS_KMS key", "aws-kms"),
            (true, "key store key", "key-store"),
        ] {
            out.push(ratio_target(
                &format!("{title}, {key}, 64 connections, within 10% of Encrypt"),
                0.90,
                "Encrypt, same key kind",
                run("hsmkms", op, ks, 64, 32),
                run("hsmkms", "encrypt", ks, 64, 32),
                Some(profile),
            ));
        }
    }
    out.push(ratio_target(
        "Encrypt, AWS_KMS key, 4 KiB, 64 connections",
        0.60,
        "the inline handler at 4 KiB",
        run("hsmkms", "encrypt", false, 64, 4096),
        run("inline", "encrypt", false, 64, 4096),
        Some("aws-kms"),
    ));
    let create = run("hsmkms", "create-key", true, 64, 0);
    out.push(bound_target(
        "CreateKey in a key store (durable on two HSMs and the frontend), 64 connections",
        "≥ 5,000 keys/s",
        create.map(|m| {
            let rounds = if m.runs.len() > 1 {
                let (lo, hi) = m.rps_range();
                format!(
                    " (median of {} rounds, {}–{})",
                    m.runs.len(),
                    thousands(lo),
                    thousands(hi)
                )
            } else {
                String::new()
            };
            (m.rps(), format!("{rounds}, p99 {:.1} ms", m.latency().p99))
        }),
        5000.0,
        false,
        "keys/s",
        Some("key-store"),
    ));
    let figure = |name: &str| {
        results
            .figures
            .get(name)
            .map(|f| (f.value, format!(" {}", f.note)))
    };
    out.push(bound_target(
        "Resident memory with 100,000 keys",
        "< 150 MB (143.1 MiB)",
        figure("memory-100k-keys"),
        MEMORY_BOUND_MIB,
        true,
        "MiB",
        None,
    ));
    out.push(bound_target(
        "Start to `Ready.` with 100,000 keys",
        "< 2 s",
        figure("start-ready-100k-keys"),
        2.0,
        true,
        "s",
        None,
    ));
    let mut no_stall = Target {
        what: "No periodic stall: per-second p99 of Encrypt, AWS_KMS key, 64 connections"
            .to_string(),
        goal: format!("every second ≤ {STALL_BOUND:.0}× the median second"),
        measured: String::new(),
        met: None,
        short: String::new(),
        profile: Some("aws-kms"),
    };
    if let Some(run) = results.timeline() {
        let (median, worst, ratio, silent) = stall(run);
        no_stall.measured = format!(
            "worst {worst:.2} ms / median {median:.2} ms = **{ratio:.2}×** over {} s{}",
            run.timeline.len(),
            if silent > 0 {
                format!(", {silent} s without an answer")
            } else {
                String::new()
            }
        );
        let met = ratio <= STALL_BOUND && silent == 0;
        no_stall.met = Some(met);
        if !met {
            no_stall.short = format!("{:.0}% over", (ratio / STALL_BOUND - 1.0) * 100.0);
        }
    }
    out.push(no_stall);
    for (ks, key) in [(false, "AWS_KMS key"), (true, "key store key")] {
        let cells: Vec<String> = [1, 16, 64]
            .iter()
            .filter_map(|&c| {
                run("hsmkms", "encrypt", ks, c, 32).map(|m| {
                    let l = m.latency();
                    format!("{c}: {:.2} / {:.2} / {:.2}", l.p50, l.p99, l.p999)
                })
            })
            .collect();
        out.push(Target {
            what: format!("Latency of Encrypt, {key}, 32 B, at 1, 16, 64 connections"),
            goal: "p50 / p99 / p99.9 ms, reported".to_string(),
            measured: cells.join("; "),
            met: None,
            short: String::new(),
            profile: None,
        });
    }
    out
}

/// How the runs were taken and how the figures and ratios are formed, for `rounds` rounds.
fn method(rounds: Option<u32>) -> String {
    let beside = "the two sides of each ratio ran back to back (at each connection count the \
                  reference handlers beside hsmkms, each Encrypt beside the Decrypt and \
                  GenerateDataKey of the same key kind, the inline handler beside hsmkms at \
                  4 KiB, before beside after)";
    match rounds {
        Some(n) if n > 1 => format!(
            "each figure of a ratio was measured in {n} rounds. Within a round {beside}, and \
             the order reverses from one round to the next (A then B, then B then A), so the \
             machine's drift (up to a third within a minute here) weighs on both sides alike. \
             A figure is the median of its rounds' runs (requests/s and each latency \
             percentile on its own); a ratio is the median of the per-round ratios, with the \
             smallest and largest in brackets. A figure measured once (moto, the timeline, \
             `hsmkms-load bench` beside wrk) enters a ratio through the median of the other \
             side."
        ),
        Some(_) => format!(
            "each figure of a ratio was measured once (one round): {beside}, but a single run \
             is exposed to the machine's drift (up to a third within a minute here); \
             `compare.sh --rounds N` repeats them."
        ),
        None => "each figure was measured once, without rounds: a ratio's two sides may have \
                 run minutes apart, exposed to the machine's drift."
            .to_string(),
    }
}

fn render(results: &Results, inputs: &Inputs) -> String {
    let mut out = String::new();
    let primary = results.primary();
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let _ = writeln!(out, "# hsmkms benchmarks\n");
    let _ = writeln!(
        out,
        "The latest run of `benches/compare.sh`, written by `hsmkms-load report`. Every ratio \
         below is between figures measured in this one run, on this one machine: hsmkms against \
         the least the same work costs (the reference handlers below), so the numbers can be \
         compared with each other but not with another machine's.\n"
    );
    let _ = writeln!(
        out,
        "- Run: {date}{}",
        if inputs.commit.is_empty() {
            String::new()
        } else {
            format!(", commit `{}`", inputs.commit)
        }
    );
    let _ = writeln!(out, "- Machine: {}", machine());
    if primary == WRK {
        let _ = writeln!(
            out,
            "- Load: `wrk` (Debian's), 2 threads (1 at 1 connection), on the same machine as the \
             server, for every ratio: it takes far less CPU than the project's own \
             `hsmkms-load bench`, which signs every request, so it leaves the server more of the \
             machine. Each wrk run sends one SigV4-signed KMS request (made and checked once by \
             `hsmkms-load wrk-script`) over keep-alive HTTP/1.1 connections; an answer that is \
             not 2xx counts as an error, but wrk does not read the bodies. `hsmkms-load bench` \
             runs beside it, checking every answer (key ARN, blob, plaintext), and measures \
             moto and the timeline."
        );
    } else {
        let _ = writeln!(
            out,
            "- Load: **no external load generator**: wrk could not be installed, so every ratio \
             is between runs of `hsmkms-load bench` (which signs and checks every request and so \
             takes more of the machine from the server than wrk would)."
        );
    }
    let _ = writeln!(out, "- Method: {}\n", method(results.rounds()));
    if !inputs.notes.trim().is_empty() {
        let _ = writeln!(out, "{}\n", inputs.notes.trim_end());
    }
    let _ = writeln!(
        out,
        "What was loaded, each an HTTP server on 127.0.0.1 with the 2 actix-web workers of \
         hsmkms's frontend:\n\n\
         - `parse`: `hsmkms-load echo --handler parse`, parses the KMS request and answers, no \
         crypto: the ceiling of any actix-web service here.\n\
         - `inline`: `--handler inline`, the same plus base64 and AES-256-GCM on the HTTP worker: \
         the least any correct Encrypt does.\n\
         - `actor`: `--handler actor`, the same with the sealing in an actix actor on another \
         arbiter: the least an HSM hop adds.\n\
         - `hsmkms`: the emulator from `cargo run --release`, its default cluster of two \
         in-process HSMs; an AWS_KMS key, or a key in a connected custom key store.\n\
         - `moto`: moto's server from PyPI. It closes each connection after answering, which \
         wrk counts as a failure, so it is loaded by `hsmkms-load bench` (which reconnects, as \
         an SDK client would).\n"
    );

    let _ = writeln!(out, "## Targets\n");
    let _ = writeln!(out, "Issue 10's targets, with this run's figures:\n");
    let _ = writeln!(out, "| target | goal | measured | |");
    let _ = writeln!(out, "|---|---|---|---|");
    let targets = targets(results);
    for t in &targets {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            t.what,
            t.goal,
            if t.measured.is_empty() {
                "—"
            } else {
                &t.measured
            },
            t.verdict()
        );
    }
    let _ = writeln!(out);

    ladder(&mut out, results, primary);
    beside_encrypt(&mut out, results, primary);
    latency(&mut out, results, inputs, primary);
    timeline_section(&mut out, results, inputs);
    beside(&mut out, results, primary);
    before_after(&mut out, results, inputs);
    all_runs(&mut out, results, primary);
    let _ = writeln!(out, "## Where the time goes\n");
    if inputs.profile.trim().is_empty() {
        let _ = writeln!(
            out,
            "No profile in this run (a `--quick` run, or perf and valgrind were missing): \
             `benches/profile.sh` makes one.\n"
        );
    } else {
        let _ = writeln!(out, "{}\n", inputs.profile.trim_end());
    }
    other_figures(&mut out, results);
    closing_note(&mut out, results, &targets, inputs);
    if !inputs.commands.trim().is_empty() {
        let _ = writeln!(out, "## Commands\n");
        let _ = writeln!(
            out,
            "Reproduce the whole run with `benches/compare.sh` (it installs wrk with apt-get \
             and moto into `target/bench-venv`). It ran:\n"
        );
        let _ = writeln!(out, "```sh\n{}\n```", inputs.commands.trim_end());
    }
    out
}

/// The reference ladder: each step's requests/s, against parse-and-answer and against the step
/// before it.
fn ladder(out: &mut String, results: &Results, primary: &str) {
    let steps: Vec<(&str, Option<Measured>)> = vec![
        (
            "`parse`: parse and answer",
            results.find("parse", "encrypt", false, 64, 32),
        ),
        (
            "`inline`: + base64 and AES-256-GCM inline",
            results.find("inline", "encrypt", false, 64, 32),
        ),
        (
            "`actor`: + the sealing in an actor on another arbiter",
            results.find("actor", "encrypt", false, 64, 32),
        ),
        (
            "hsmkms, AWS_KMS key",
            results.find("hsmkms", "encrypt", false, 64, 32),
        ),
        (
            "hsmkms, key store key",
            results.find("hsmkms", "encrypt", true, 64, 32),
        ),
        (
            "moto (`hsmkms-load bench`)",
            results.find_by(OWN, "moto", "encrypt", false, 64, 32),
        ),
    ];
    let _ = writeln!(out, "## Encrypt, 32 B, 64 connections, step by step\n");
    let _ = writeln!(
        out,
        "Loaded by {primary} (moto by `hsmkms-load bench`). The ratios say what each step's \
         work costs against the least that work costs here (requests/s: the median of the \
         rounds; ratios: the median of the per-round ratios).\n"
    );
    let _ = writeln!(out, "| what | requests/s | × parse | × the step before |");
    let _ = writeln!(out, "|---|---|---|---|");
    let parse = steps[0].1.clone();
    let mut before: Option<Measured> = None;
    for (i, (what, run)) in steps.into_iter().enumerate() {
        let Some(m) = run else {
            let _ = writeln!(out, "| {what} | not measured | | |");
            continue;
        };
        let vs = |base: &Option<Measured>| {
            base.as_ref()
                .map_or(String::new(), |b| Ratio::of(&m, b).show())
        };
        // parse against itself is 1 in every round: no range to show.
        let _ = writeln!(
            out,
            "| {what} | {} | {} | {} |",
            thousands(m.rps()),
            if i == 0 { ratio(1.0) } else { vs(&parse) },
            vs(&before)
        );
        before = Some(m);
    }
    let _ = writeln!(out);
}

/// The operations measured beside Encrypt with an AWS_KMS key at 64 connections, with their
/// titles; VerifyMac is shown only when a run measured it (`compare.sh` does not).
const BESIDE_ENCRYPT: [(&str, &str); 4] = [
    ("sign", "Sign"),
    ("verify", "Verify"),
    ("generate-mac", "GenerateMac"),
    ("verify-mac", "VerifyMac"),
];

/// Sign, Verify and GenerateMac (AWS_KMS keys, 64 connections) beside the Encrypt of the same
/// rounds: requests/s, latency, and the ratio to Encrypt.
fn beside_encrypt(out: &mut String, results: &Results, primary: &str) {
    let _ = writeln!(
        out,
        "## Sign, Verify and GenerateMac beside Encrypt
"
    );
    let measured: Vec<(&str, Option<Measured>)> = BESIDE_ENCRYPT
        .iter()
        .map(|&(op, title)| (title, results.find("hsmkms", op, false, 64, 32)))
        .filter(|(title, m)| m.is_some() || *title != "VerifyMac")
        .collect();
    if measured.iter().all(|(_, m)| m.is_none()) {
        let _ = writeln!(
            out,
            "Not measured in this run: `benches/compare.sh` measures them at 64 connections \
             beside Encrypt.\n"
        );
        return;
    }
    let encrypt = results.find("hsmkms", "encrypt", false, 64, 32);
    let _ = writeln!(
        out,
        "hsmkms with AWS_KMS keys, 64 connections, loaded by {primary}, in the same rounds as \
         Encrypt with an AWS_KMS key: each run follows that Encrypt and its Decrypt and \
         GenerateDataKey (precedes them in reversed rounds), and × Encrypt is the median of the \
         per-round ratios, with their range. Each request carries a 32-byte RAW message: Sign \
         and Verify use an ECC_NIST_P256 key (Verify checks one signature made at set-up), the \
         MACs an HMAC_256 key.{}\n",
        if primary == WRK {
            " wrk checks only the status of each answer; `hsmkms-load bench`'s runs of the same \
             operations, which check every signature, verdict and MAC, are in the section \
             \"wrk beside `hsmkms-load bench`\"."
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "| operation | algorithm | requests/s | p50 ms | p99 ms | errors | runs | × Encrypt |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    let row = |out: &mut String, what: &str, m: &Measured, vs: String| {
        let l = m.latency();
        let _ = writeln!(
            out,
            "| {what} | {} | {} | {:.2} | {:.2} | {} | {} | {vs} |",
            m.first().algorithm.as_deref().unwrap_or("—"),
            thousands(m.rps()),
            l.p50,
            l.p99,
            m.errors(),
            m.runs.len()
        );
    };
    match &encrypt {
        // Encrypt against itself is 1 in every round: no range to show.
        Some(e) => row(out, "Encrypt, 32 B plaintext", e, ratio(1.0)),
        None => {
            let _ = writeln!(
                out,
                "| Encrypt, 32 B plaintext | | not measured | | | | | |"
            );
        }
    }
    for (title, m) in measured {
        match m {
            Some(m) => {
                let vs = encrypt
                    .as_ref()
                    .map_or("—".to_string(), |e| Ratio::of(&m, e).show());
                row(out, &format!("{title}, 32 B message"), &m, vs);
            }
            None => {
                let _ = writeln!(out, "| {title}, 32 B message | | not measured | | | | | |");
            }
        }
    }
    let _ = writeln!(out);
}

fn latency(out: &mut String, results: &Results, inputs: &Inputs, primary: &str) {
    let _ = writeln!(out, "## Latency against connections\n");
    let _ = writeln!(
        out,
        "Encrypt, 32 B, loaded by {primary} (moto by `hsmkms-load bench`); milliseconds. Over \
         several runs (rounds), requests/s and each percentile are the median of the runs, \
         and the errors are those of all of them.\n"
    );
    if let (Some(idle), Some(busy)) = (
        results.find("parse", "encrypt", false, 1, 32),
        results.figures.get("parse-1-connection-busy-cores"),
    ) {
        let (idle, busy) = (idle.rps(), busy.value);
        let _ = write!(
            out,
            "At 1 connection, with both cores kept out of idle by two `nice -n 19` spin loops, \
             the parse handler's single-connection rate went from {}/s to {}/s in this run",
            thousands(idle),
            thousands(busy)
        );
        if busy > idle * 1.1 {
            let _ = writeln!(
                out,
                ": the 1-connection figures mostly measure how fast an idle core wakes up on \
                 this machine. The ratios that matter are at 16 and 64 connections, where \
                 the cores are busy anyway.\n"
            );
        } else {
            let _ = writeln!(
                out,
                ", so waking an idle core is not what limits it here.\n"
            );
        }
    }
    let _ = writeln!(
        out,
        "| target | connections | requests/s | p50 ms | p99 ms | p99.9 ms | max ms | errors | runs |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for (series, figures) in results.series() {
        let shown = series.op == "encrypt"
            && series.plaintext_bytes == 32
            && series.label != BEFORE
            && series.label != AFTER
            && (series.loader == primary || series.label == "moto");
        if !shown {
            continue;
        }
        for m in figures {
            let l = m.latency();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {} |",
                series.title(primary),
                m.first().connections,
                thousands(m.rps()),
                l.p50,
                l.p99,
                l.p999,
                l.max,
                m.errors(),
                m.runs.len()
            );
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "![requests/s and p99 latency against connections]({})\n",
        inputs.chart
    );
}

fn timeline_section(out: &mut String, results: &Results, inputs: &Inputs) {
    let _ = writeln!(out, "## A periodic stall?\n");
    let Some(run) = results.timeline() else {
        let _ = writeln!(out, "No timeline in this run.\n");
        return;
    };
    let (median, worst, ratio, silent) = stall(run);
    let _ =
        writeln!(
        out,
        "`hsmkms-load bench --timeline`: {} {}, {} connections, {} s, every second's answers in \
         a histogram of their own. The worst second's p99 is {worst:.2} ms, the median \
         second's {median:.2} ms: **{ratio:.2}×** against a bound of {STALL_BOUND:.0}×{}.\n",
        run.label,
        Series::of(run).title(OWN).trim_start_matches(&format!("{} ", run.label)),
        run.connections,
        run.timeline.len(),
        if silent > 0 {
            format!("; {silent} seconds had no answer at all")
        } else {
            String::new()
        }
    );
    if let Some(chart) = &inputs.timeline_chart {
        let _ = writeln!(out, "![p99 latency of each second]({chart})\n");
    }
    let _ = writeln!(out, "| seconds | p99 ms of each second |");
    let _ = writeln!(out, "|---|---|");
    for (i, chunk) in run.timeline.chunks(10).enumerate() {
        let cells: Vec<String> = chunk.iter().map(|s| format!("{:.2}", s.p99_ms)).collect();
        let _ = writeln!(
            out,
            "| {}–{} | {} |",
            i * 10 + 1,
            i * 10 + chunk.len(),
            cells.join(" ")
        );
    }
    let _ = writeln!(out);
}

/// The runs of the project's own tool beside wrk's of the same thing.
fn beside(out: &mut String, results: &Results, primary: &str) {
    if primary != WRK {
        return;
    }
    let own: Vec<&RunResult> = results
        .runs
        .iter()
        .filter(|r| r.loader == OWN && r.label != "moto" && r.timeline.is_empty())
        .collect();
    if own.is_empty() {
        return;
    }
    let _ = writeln!(out, "## wrk beside `hsmkms-load bench`\n");
    let _ = writeln!(
        out,
        "The same runs, loaded by the project's own tool, which signs each request and checks \
         each answer: it leaves the server less of the 2 cores, so its figures are lower. Each \
         is one run; wrk's figures are the medians of their rounds.\n"
    );
    let _ = writeln!(
        out,
        "| target | connections | wrk | hsmkms-load | wrk p99 ms | hsmkms-load p99 ms | errors (hsmkms-load) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for r in own {
        let series = Series::of(r);
        let wrk = results.find_by(
            WRK,
            &r.label,
            &r.op,
            r.key_store,
            r.connections,
            r.plaintext_bytes,
        );
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.2} | {} |",
            series.title(OWN),
            r.connections,
            wrk.as_ref()
                .map_or("—".to_string(), |w| per_second(w.rps())),
            per_second(r.requests_per_second),
            wrk.as_ref()
                .map_or("—".to_string(), |w| format!("{:.2}", w.latency().p99)),
            r.latency_ms.p99,
            r.errors
        );
    }
    let _ = writeln!(out);
}

/// `--baseline`: the previous binary beside the new one, run after run.
fn before_after(out: &mut String, results: &Results, inputs: &Inputs) {
    let pairs = pairs(results);
    let _ = writeln!(out, "## Before and after\n");
    if pairs.is_empty() {
        let _ = writeln!(
            out,
            "No baseline in this run: `benches/compare.sh --baseline <commit>` builds that \
             commit's hsmkms and measures it beside this one.\n"
        );
        return;
    }
    let _ = writeln!(
        out,
        "The hsmkms of `{}` (before) and of this run's commit{} (after), both started fresh \
         for each round and loaded one right after the other by {}, with scripts made the same \
         way; which goes first alternates from one operation and one round to the next. Over \
         several rounds, requests/s and p99 are the medians of the rounds, and after / before \
         is the median of the per-round ratios, with their range.\n",
        inputs.baseline,
        if inputs.commit.is_empty() {
            String::new()
        } else {
            format!(" `{}`", inputs.commit)
        },
        pairs[0].0.first().loader
    );
    let _ = writeln!(
        out,
        "| what | before | after | after / before | p99 ms before | p99 ms after |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for (before, after) in pairs {
        let a = after.first();
        let title = Series::of(a).title(&a.loader);
        let _ = writeln!(
            out,
            "| {}, {} connections | {} | {} | {} | {:.2} | {:.2} |",
            title.trim_start_matches("after "),
            a.connections,
            per_second(before.rps()),
            per_second(after.rps()),
            Ratio::of(&after, &before).show_bold(),
            before.latency().p99,
            after.latency().p99
        );
    }
    let _ = writeln!(out);
}

/// Each figure of `after` (all its rounds) with the `before` figure of the same thing, in the
/// order they were first measured.
fn pairs(results: &Results) -> Vec<(Measured<'_>, Measured<'_>)> {
    let mut seen: Vec<(Series, usize)> = Vec::new();
    let mut out = Vec::new();
    for r in results
        .runs
        .iter()
        .filter(|r| r.label == AFTER && r.timeline.is_empty())
    {
        let identity = (Series::of(r), r.connections);
        if seen.contains(&identity) {
            continue;
        }
        seen.push(identity);
        let find = |label: &str| {
            results.find_by(
                &r.loader,
                label,
                &r.op,
                r.key_store,
                r.connections,
                r.plaintext_bytes,
            )
        };
        if let (Some(before), Some(after)) = (find(BEFORE), find(AFTER)) {
            out.push((before, after));
        }
    }
    out
}

fn all_runs(out: &mut String, results: &Results, primary: &str) {
    let _ = writeln!(out, "## Every load run\n");
    let _ = writeln!(
        out,
        "| target | loader | connections | round | requests/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    for (series, figures) in results.series() {
        let mut runs: Vec<&RunResult> = figures.iter().flat_map(|m| m.runs.clone()).collect();
        // Within a figure, in the order of its rounds (a run without one, first).
        runs.sort_by_key(|r| (r.connections, r.round));
        for r in runs {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {} |",
                series.title(&series.loader),
                r.loader,
                r.connections,
                r.round.map_or("—".to_string(), |k| k.to_string()),
                r.requests_per_second,
                r.latency_ms.p50,
                r.latency_ms.p90,
                r.latency_ms.p99,
                r.latency_ms.p999,
                r.latency_ms.max,
                r.errors
            );
        }
    }
    let _ = writeln!(out);
    let _ = primary;
}

fn other_figures(out: &mut String, results: &Results) {
    let others: Vec<&Figure> = results
        .figures
        .values()
        .filter(|f| !f.name.starts_with("profile/"))
        .collect();
    if others.is_empty() {
        return;
    }
    let _ = writeln!(out, "## Other figures of this run\n");
    let _ = writeln!(out, "| figure | value | note |");
    let _ = writeln!(out, "|---|---|---|");
    for f in others {
        let _ = writeln!(
            out,
            "| {} | {} {} | {} |",
            f.name,
            trim(f.value),
            f.unit,
            f.note
        );
    }
    let _ = writeln!(out);
}

/// Each target beside its figure; for a missed one, by how much and what the profile says;
/// then the before and after.
fn closing_note(out: &mut String, results: &Results, targets: &[Target], inputs: &Inputs) {
    let _ = writeln!(out, "## Closing note\n");
    for t in targets
        .iter()
        .filter(|t| t.met.is_some() || t.measured.is_empty())
    {
        let _ = write!(out, "- {}: goal {}; ", t.what, t.goal);
        match t.met {
            None => {
                let _ = writeln!(out, "not measured in this run.");
            }
            Some(true) => {
                let _ = writeln!(out, "measured {}: met.", t.measured);
            }
            Some(false) => {
                let _ = write!(out, "measured {}: **missed, {}**.", t.measured, t.short);
                let top = t
                    .profile
                    .map(|p| results.profile_top(p, 4))
                    .unwrap_or_default();
                if let (Some(profile), false) = (t.profile, top.is_empty()) {
                    let shares: Vec<String> =
                        top.iter().map(|(c, v)| format!("{c} {v:.1}%")).collect();
                    let _ = write!(
                        out,
                        " Where the time goes ({} profile, share of hsmkms's CPU samples): {}.",
                        profile,
                        shares.join(", ")
                    );
                    if let Some(a) = results
                        .figures
                        .get(&format!("allocations-per-request/encrypt-{profile}"))
                    {
                        let _ = write!(out, " {} allocations per request.", trim(a.value));
                    }
                } else if t.profile.is_some() {
                    let _ = write!(
                        out,
                        " No profile in this run to say why (see `benches/profile.sh`)."
                    );
                }
                let _ = writeln!(out);
            }
        }
    }
    let pairs = pairs(results);
    if pairs.is_empty() {
        let _ = writeln!(
            out,
            "- Before and after: no baseline measured in this run (`--baseline <commit>`)."
        );
    } else {
        let cells: Vec<String> = pairs
            .iter()
            .map(|(b, a)| {
                let first = a.first();
                format!(
                    "{}: {} before, {} after ({})",
                    Series::of(first)
                        .title(&first.loader)
                        .trim_start_matches("after "),
                    per_second(b.rps()),
                    per_second(a.rps()),
                    Ratio::of(a, b).show()
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "- Before (`{}`) and after, same run: {}.",
            inputs.baseline,
            cells.join("; ")
        );
    }
    let _ = writeln!(out);
}

fn trim(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The per-second p99 of the timeline run, with its median and the stall bound.
fn timeline_chart(run: &RunResult, path: &Path) -> Result<()> {
    let (median, worst, _, _) = stall(run);
    let seconds = run.timeline.len() as f64;
    let top = worst.max(median * STALL_BOUND) * 1.15;
    let root = SVGBackend::new(path, (900, 320)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "p99 latency of each second, ms ({} connections)",
                run.connections
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..seconds + 1.0, 0.0..top.max(0.01))
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("second")
        .y_label_formatter(&|v| format!("{v:.1}"))
        .draw()
        .map_err(plot_error)?;
    let blue = RGBColor(31, 119, 180);
    let points: Vec<(f64, f64)> = run
        .timeline
        .iter()
        .enumerate()
        .map(|(i, s)| (i as f64 + 1.0, s.p99_ms))
        .collect();
    chart
        .draw_series(LineSeries::new(points.clone(), blue.stroke_width(2)))
        .map_err(plot_error)?
        .label("p99 of the second")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], blue.stroke_width(2)));
    chart
        .draw_series(points.iter().map(|&p| Circle::new(p, 2, blue.filled())))
        .map_err(plot_error)?;
    for (value, colour, label) in [
        (median, RGBColor(44, 160, 44), "median second"),
        (
            median * STALL_BOUND,
            RGBColor(214, 39, 40),
            "3× the median: the bound",
        ),
    ] {
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, value), (seconds + 1.0, value)],
                colour.stroke_width(1),
            ))
            .map_err(plot_error)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

/// One point of the chart's lines.
#[derive(Debug, Clone, Copy)]
struct Point {
    connections: usize,
    rps: f64,
    p99: f64,
}

/// Two panels, side by side: requests/s and p99 latency (ms, log scale), both against
/// connections (log scale), one line per series of Encrypt, 32 B.
fn chart(results: &Results, path: &Path) -> Result<()> {
    let primary = results.primary();
    // Each point: connections, and the median requests/s and p99 of the figure's rounds.
    let series: Vec<(Series, Vec<Point>)> = results
        .series()
        .into_iter()
        .filter(|(s, _)| {
            s.op == "encrypt"
                && s.plaintext_bytes == 32
                && s.label != BEFORE
                && s.label != AFTER
                && (s.loader == primary || s.label == "moto")
        })
        .map(|(s, figures)| {
            let points = figures
                .iter()
                .map(|m| Point {
                    connections: m.first().connections,
                    rps: m.rps(),
                    p99: m.latency().p99,
                })
                .collect();
            (s, points)
        })
        .collect();
    let shown = || series.iter().flat_map(|(_, points)| points.iter());
    let root = SVGBackend::new(path, (1100, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let (left, right) = root.split_horizontally(550);
    let max_conns = shown().map(|p| p.connections).max().unwrap_or(64).max(2) as f64;
    let max_rps = shown().map(|p| p.rps).fold(1.0, f64::max);
    let max_p99 = shown().map(|p| p.p99).fold(1.0, f64::max);
    let min_p99 = shown().map(|p| p.p99).fold(f64::MAX, f64::min).max(0.01);
    let colours = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];

    let mut rps_chart = ChartBuilder::on(&left)
        .caption("requests/s", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d((0.8..max_conns * 1.25).log_scale(), 0.0..max_rps * 1.1)
        .map_err(plot_error)?;
    rps_chart
        .configure_mesh()
        .x_desc("connections")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(plot_error)?;
    let mut p99_chart = ChartBuilder::on(&right)
        .caption("p99 latency, ms", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (0.8..max_conns * 1.25).log_scale(),
            (min_p99 * 0.8..max_p99 * 1.25).log_scale(),
        )
        .map_err(plot_error)?;
    p99_chart
        .configure_mesh()
        .x_desc("connections")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .draw()
        .map_err(plot_error)?;
    for (i, (s, points)) in series.iter().enumerate() {
        let colour = colours[i % colours.len()];
        let rps: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (p.connections as f64, p.rps))
            .collect();
        let p99: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (p.connections as f64, p.p99))
            .collect();
        rps_chart
            .draw_series(LineSeries::new(rps.clone(), colour.stroke_width(2)))
            .map_err(plot_error)?
            .label(s.title(primary))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
        rps_chart
            .draw_series(rps.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(plot_error)?;
        p99_chart
            .draw_series(LineSeries::new(p99.clone(), colour.stroke_width(2)))
            .map_err(plot_error)?;
        p99_chart
            .draw_series(p99.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(plot_error)?;
    }
    rps_chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

fn plot_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A results line as a wrk script prints it, with the round compare.sh adds (if any).
    fn line(
        label: &str,
        op: &str,
        key_store: bool,
        rps: f64,
        p99: f64,
        round: Option<u32>,
    ) -> String {
        let mut run = serde_json::json!({
            "label": label, "loader": "wrk", "op": op, "keyStore": key_store,
            "connections": 64, "plaintextBytes": 32, "durationSeconds": 6.0,
            "requests": (rps * 6.0) as u64, "errors": 0, "requestsPerSecond": rps,
            "latencyMs": {"p50": 1.0, "p90": 2.0, "p99": p99, "p999": 4.5, "max": 9.0, "mean": 1.2},
            "errorSamples": [],
        });
        if let Some(k) = round {
            run["round"] = k.into();
        }
        format!("{run}\n")
    }

    #[test]
    fn the_median_is_the_middle_value_or_the_mean_of_the_two_middle_ones() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median([7.0]), 7.0);
        assert_eq!(median([]), 0.0);
    }

    #[test]
    fn a_ratio_is_the_median_of_the_per_round_ratios_with_their_range() {
        // Three rounds in ABBA order (round 2 reversed); the machine slows in round 2 and
        // speeds up in round 3. Per round, hsmkms / inline = 0.60, 0.50, 0.80: the median
        // ratio is 0.60, while the medians' ratio (30,000 / 45,000 = 0.67) would overstate it.
        let mut text = String::new();
        text += &line("inline", "encrypt", false, 50_000.0, 3.0, Some(1));
        text += &line("hsmkms", "encrypt", false, 30_000.0, 5.0, Some(1));
        text += &line("hsmkms", "encrypt", false, 20_000.0, 9.0, Some(2));
        text += &line("inline", "encrypt", false, 40_000.0, 4.0, Some(2));
        text += &line("inline", "encrypt", false, 45_000.0, 3.5, Some(3));
        text += &line("hsmkms", "encrypt", false, 36_000.0, 4.0, Some(3));
        let results = parse(&text, "test").unwrap();
        let hsmkms = results.find("hsmkms", "encrypt", false, 64, 32).unwrap();
        let inline = results.find("inline", "encrypt", false, 64, 32).unwrap();
        assert_eq!(
            hsmkms.runs.len(),
            3,
            "every round counts, not the first match"
        );
        assert_eq!(hsmkms.rps(), 30_000.0);
        assert_eq!(inline.rps(), 45_000.0);
        // Each percentile is the median of the rounds' own.
        assert_eq!(hsmkms.latency().p99, 5.0);
        let r = Ratio::of(&hsmkms, &inline);
        assert!((r.median - 0.60).abs() < 1e-9, "{r:?}");
        assert!(
            (r.min - 0.50).abs() < 1e-9 && (r.max - 0.80).abs() < 1e-9,
            "{r:?}"
        );
        assert_eq!(r.rounds, 3);
        assert_eq!(r.show(), "0.60× (0.50–0.80, 3 rounds)");

        let target = &targets(&results)[0];
        assert_eq!(
            target.measured,
            "median 30,000/s vs 45,000/s; **0.60×** (0.50–0.80, 3 rounds)"
        );
        assert_eq!(target.met, Some(true));
    }

    #[test]
    fn decrypt_and_generate_data_key_pair_with_the_encrypt_of_their_round() {
        // Per round for the key store key: Encrypt, Decrypt, GenerateDataKey, reversed in
        // round 2. Decrypt / Encrypt = 0.90, 0.70 (median 0.80); GenerateDataKey / Encrypt =
        // 0.50, 0.60 (median 0.55).
        let mut text = String::new();
        text += &line("hsmkms", "encrypt", true, 20_000.0, 5.0, Some(1));
        text += &line("hsmkms", "decrypt", true, 18_000.0, 5.0, Some(1));
        text += &line("hsmkms", "generate-data-key", true, 10_000.0, 5.0, Some(1));
        text += &line("hsmkms", "generate-data-key", true, 6_000.0, 5.0, Some(2));
        text += &line("hsmkms", "decrypt", true, 7_000.0, 5.0, Some(2));
        text += &line("hsmkms", "encrypt", true, 10_000.0, 5.0, Some(2));
        let results = parse(&text, "test").unwrap();
        let targets = targets(&results);
        let decrypt = targets
            .iter()
            .find(|t| t.what.starts_with("Decrypt, key store key"))
            .unwrap();
        assert_eq!(
            decrypt.measured,
            "median 12,500/s vs 15,000/s; **0.80×** (0.70–0.90, 2 rounds)"
        );
        assert_eq!(decrypt.met, Some(false));
        assert!(
            decrypt.short.starts_with("11% short (0.80× for 0.90×"),
            "{}",
            decrypt.short
        );
        let gdk = targets
            .iter()
            .find(|t| t.what.starts_with("GenerateDataKey, key store key"))
            .unwrap();
        assert_eq!(
            gdk.measured,
            "median 8,000/s vs 15,000/s; **0.55×** (0.50–0.60, 2 rounds)"
        );
    }

    #[test]
    fn before_and_after_pair_round_by_round_once_per_operation() {
        // after / before = 1.10, 0.90, 1.00 over three rounds, whichever went first.
        let mut text = String::new();
        for (k, before, after) in [
            (1, 50_000.0, 55_000.0),
            (2, 60_000.0, 54_000.0),
            (3, 40_000.0, 40_000.0),
        ] {
            if k % 2 == 1 {
                text += &line(BEFORE, "encrypt", false, before, 3.0, Some(k));
                text += &line(AFTER, "encrypt", false, after, 3.0, Some(k));
            } else {
                text += &line(AFTER, "encrypt", false, after, 3.0, Some(k));
                text += &line(BEFORE, "encrypt", false, before, 3.0, Some(k));
            }
        }
        let results = parse(&text, "test").unwrap();
        let pairs = pairs(&results);
        assert_eq!(pairs.len(), 1, "one row per operation, not per round");
        let (before, after) = &pairs[0];
        assert_eq!((before.runs.len(), after.runs.len()), (3, 3));
        let mut out = String::new();
        let inputs = Inputs {
            baseline: "abc1234".to_string(),
            ..Inputs::default()
        };
        before_after(&mut out, &results, &inputs);
        assert!(
            out.contains(
                "| encrypt, AWS_KMS key, 32 B, 64 connections | 50,000/s | 54,000/s | **1.00×** (0.90–1.10, 3 rounds) | 3.00 | 3.00 |"
            ),
            "{out}"
        );
    }

    #[test]
    fn lines_without_rounds_still_make_ratios() {
        // Results written before rounds existed: one run each, the ratio of the two.
        let mut text = String::new();
        text += &line("inline", "encrypt", false, 50_000.0, 3.0, None);
        text += &line("hsmkms", "encrypt", false, 35_000.0, 3.0, None);
        let results = parse(&text, "test").unwrap();
        assert_eq!(results.rounds(), None);
        assert_eq!(
            targets(&results)[0].measured,
            "35,000/s vs 50,000/s = **0.70×**"
        );
        // A figure measured once against one measured in rounds (moto against wrk's parse):
        // the ratio of the medians, as one round.
        text += &line("parse", "encrypt", false, 60_000.0, 3.0, Some(1));
        text += &line("parse", "encrypt", false, 40_000.0, 3.0, Some(2));
        let results = parse(&text, "test").unwrap();
        let once = results.find("hsmkms", "encrypt", false, 64, 32).unwrap();
        let rounds = results.find("parse", "encrypt", false, 64, 32).unwrap();
        assert_eq!(Ratio::of(&once, &rounds).show(), "0.70×");
    }

    #[test]
    fn sign_verify_and_mac_stand_beside_the_encrypt_of_their_rounds() {
        // AWS_KMS keys at 64 connections in two rounds, the second reversed and on a slower
        // machine. Against Encrypt, per round: Sign 0.50 and 0.60, Verify 0.40 and 0.50,
        // GenerateMac 0.90 and 0.80.
        let with = |line: String, algorithm: &str| {
            let mut run: Value = serde_json::from_str(&line).unwrap();
            run["algorithm"] = algorithm.into();
            format!("{run}\n")
        };
        let mut text = String::new();
        text += &line("hsmkms", "encrypt", false, 30_000.0, 5.0, Some(1));
        text += &with(
            line("hsmkms", "sign", false, 15_000.0, 6.0, Some(1)),
            "ECDSA_SHA_256",
        );
        text += &with(
            line("hsmkms", "verify", false, 12_000.0, 7.0, Some(1)),
            "ECDSA_SHA_256",
        );
        text += &with(
            line("hsmkms", "generate-mac", false, 27_000.0, 5.0, Some(1)),
            "HMAC_SHA_256",
        );
        text += &with(
            line("hsmkms", "generate-mac", false, 16_000.0, 7.0, Some(2)),
            "HMAC_SHA_256",
        );
        text += &with(
            line("hsmkms", "verify", false, 10_000.0, 9.0, Some(2)),
            "ECDSA_SHA_256",
        );
        text += &with(
            line("hsmkms", "sign", false, 12_000.0, 8.0, Some(2)),
            "ECDSA_SHA_256",
        );
        text += &line("hsmkms", "encrypt", false, 20_000.0, 5.0, Some(2));
        let results = parse(&text, "test").unwrap();
        let mut out = String::new();
        beside_encrypt(&mut out, &results, WRK);
        for row in [
            "| Encrypt, 32 B plaintext | — | 25,000 | 1.00 | 5.00 | 0 | 2 | 1.00× |",
            "| Sign, 32 B message | ECDSA_SHA_256 | 13,500 | 1.00 | 7.00 | 0 | 2 | 0.55× (0.50–0.60, 2 rounds) |",
            "| Verify, 32 B message | ECDSA_SHA_256 | 11,000 | 1.00 | 8.00 | 0 | 2 | 0.45× (0.40–0.50, 2 rounds) |",
            "| GenerateMac, 32 B message | HMAC_SHA_256 | 21,500 | 1.00 | 6.00 | 0 | 2 | 0.85× (0.80–0.90, 2 rounds) |",
        ] {
            assert!(out.contains(row), "{row} missing from:\n{out}");
        }
        // VerifyMac is not measured by compare.sh: no row for it.
        assert!(!out.contains("VerifyMac"), "{out}");

        // In the whole report, the new runs appear in that section and in the list of every
        // run, and leave the Encrypt sections (targets, latency table) as they were.
        let report = render(&results, &Inputs::default());
        assert!(report.contains("| hsmkms sign, AWS_KMS key, 32 B | wrk | 64 | 1 | 15000 |"));
        let latency = report
            .split("## Latency against connections")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .unwrap();
        assert!(
            !latency.contains("sign") && !latency.contains("mac"),
            "{latency}"
        );
        assert_eq!(targets(&results).len(), 13);
        let order: Vec<usize> = [
            "## Encrypt, 32 B, 64 connections, step by step",
            "## Sign, Verify and GenerateMac beside Encrypt",
            "## Latency against connections",
        ]
        .iter()
        .map(|h| report.find(h).unwrap())
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");

        // Results without them say so.
        let encrypt_only = parse(&line("hsmkms", "encrypt", false, 1.0, 1.0, None), "t").unwrap();
        let mut out = String::new();
        beside_encrypt(&mut out, &encrypt_only, WRK);
        assert!(out.contains("Not measured in this run"), "{out}");
    }
}
