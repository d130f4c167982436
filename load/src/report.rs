//! `hsmkms-load report`: turns what one comparison run measured (JSON lines written by
//! `benches/compare.sh`) into `BENCHMARKS.md` and an SVG chart of requests/s and p99 latency
//! against connection count. Every ratio in it is between figures of the same run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde::Deserialize;
use serde_json::Value;

use crate::bench::RunResult;

/// Options of `hsmkms-load report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// JSON lines: load runs (`hsmkms-load bench --json`) and other measurements.
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
    /// Commit that was measured.
    #[arg(long, default_value = "")]
    pub commit: String,
}

/// A measurement that is not a load run, as `compare.sh` records it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Figure {
    /// What was measured, e.g. `memory-100k-keys`, `aead/seal/4KiB`, `catch-up-10000`.
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
    let mut results = Results::default();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
        if value.get("requestsPerSecond").is_some() {
            results.runs.push(serde_json::from_value(value)?);
        } else {
            let figure: Figure = serde_json::from_value(value).with_context(|| {
                format!("{}:{}: neither a run nor a figure", path.display(), n + 1)
            })?;
            results.figures.insert(figure.name.clone(), figure);
        }
    }
    Ok(results)
}

/// The series of the chart and the main table: one target, one operation, one kind of key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Series {
    label: String,
    op: String,
    key_store: bool,
    plaintext_bytes: usize,
}

impl Series {
    fn of(r: &RunResult) -> Self {
        Self {
            label: r.label.clone(),
            op: r.op.clone(),
            key_store: r.key_store,
            plaintext_bytes: r.plaintext_bytes,
        }
    }

    fn title(&self) -> String {
        let key = match (self.label.as_str(), self.op.as_str(), self.key_store) {
            ("hsmkms", "create-key", true) => " in a key store",
            ("hsmkms", "create-key", false) => ", AWS_KMS keys",
            ("hsmkms", _, true) => ", key store key",
            ("hsmkms", _, false) => ", AWS_KMS key",
            _ => "",
        };
        let size = if self.op == "encrypt" || self.op == "decrypt" {
            format!(", {} B", self.plaintext_bytes)
        } else {
            String::new()
        };
        format!("{} {}{key}{size}", self.label, self.op)
    }
}

impl Results {
    fn find(
        &self,
        label: &str,
        op: &str,
        key_store: bool,
        conns: usize,
        bytes: usize,
    ) -> Option<&RunResult> {
        self.runs.iter().find(|r| {
            r.label == label
                && r.op == op
                && r.key_store == key_store
                && r.connections == conns
                && (r.plaintext_bytes == bytes || (op != "encrypt" && op != "decrypt"))
        })
    }

    fn series(&self) -> BTreeMap<Series, Vec<&RunResult>> {
        let mut map: BTreeMap<Series, Vec<&RunResult>> = BTreeMap::new();
        for r in &self.runs {
            map.entry(Series::of(r)).or_default().push(r);
        }
        for runs in map.values_mut() {
            runs.sort_by_key(|r| r.connections);
        }
        map
    }
}

/// Writes the report and the chart.
pub fn main(args: ReportArgs) -> Result<()> {
    let results = load(&args.results)?;
    if let Some(dir) = args.chart.parent() {
        std::fs::create_dir_all(dir)?;
    }
    chart(&results, &args.chart)?;
    let commands = match &args.commands {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => String::new(),
    };
    let report_dir = match args.out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let chart_link = relative(&args.chart, report_dir);
    let text = render(&results, &chart_link, &commands, &args.commit);
    std::fs::write(&args.out, text).with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {} and {}", args.out.display(), args.chart.display());
    Ok(())
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

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

fn render(results: &Results, chart: &str, commands: &str, commit: &str) -> String {
    let mut out = String::new();
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let _ = writeln!(out, "# hsmkms-load benchmarks\n");
    let _ = writeln!(
        out,
        "The latest run of `benches/compare.sh`, written by `hsmkms-load report`. Every ratio \
         below is between figures measured in this one run, on this one machine, so the numbers \
         can be compared with each other but not with another machine's.\n"
    );
    let _ = writeln!(
        out,
        "- Run: {date}{}",
        if commit.is_empty() {
            String::new()
        } else {
            format!(", commit `{commit}`")
        }
    );
    let _ = writeln!(out, "- Machine: {}", machine());
    let _ = writeln!(
        out,
        "- Load: `hsmkms-load bench`, on the same machine as the server (so both share the cores); \
         SigV4-signed KMS JSON requests over keep-alive HTTP/1.1 connections, each connection \
         sending its next request when the previous answer arrives. Every answer is checked \
         (key ARN, blob, plaintext); one that is not a proper KMS answer counts as an error.\n"
    );
    let _ = writeln!(
        out,
        "Targets: `echo` is `hsmkms-load echo`, an actix-web server with the same 2 workers as \
         hsmkms that parses each request and answers the smallest valid reply, no crypto: the \
         ceiling of any actix-web service here. `moto` is moto's server from PyPI; it closes \
         each connection after answering, so each of its requests also pays a reconnect, as an \
         SDK client's would. `hsmkms` is the emulator from `cargo run --release` with its \
         default cluster of two in-process HSMs.\n"
    );

    let _ = writeln!(out, "## Targets\n");
    let _ = writeln!(out, "| target | goal | measured | |");
    let _ = writeln!(out, "|---|---|---|---|");
    let rps = |label: &str, op: &str, ks: bool, c: usize| {
        results
            .find(label, op, ks, c, 32)
            .map(|r| r.requests_per_second)
    };
    let echo64 = rps("echo", "encrypt", false, 64);
    if let (Some(h), Some(e)) = (rps("hsmkms", "encrypt", false, 64), echo64) {
        let _ = writeln!(out, "| Encrypt, AWS_KMS key, 32 B, 64 connections, against the echo ceiling | ≥ 0.45× | {:.0}/s vs {:.0}/s = **{:.2}×** | {} |", h, e, h / e, verdict(h / e >= 0.45));
    }
    if let (Some(h), Some(m)) = (
        rps("hsmkms", "encrypt", false, 64),
        rps("moto", "encrypt", false, 64),
    ) {
        let _ = writeln!(out, "| Encrypt, AWS_KMS key, 32 B, 64 connections, against moto | ≥ 50× | {:.0}/s vs {:.0}/s = **{:.0}×** | {} |", h, m, h / m, verdict(h / m >= 50.0));
    }
    if let (Some(h), Some(e)) = (rps("hsmkms", "encrypt", true, 64), echo64) {
        let _ = writeln!(out, "| Encrypt, key store key (an HSM hop per request), 64 connections, against the echo ceiling | ≥ 0.30× | {:.0}/s vs {:.0}/s = **{:.2}×** | {} |", h, e, h / e, verdict(h / e >= 0.30));
    }
    if let Some(r) = results.find("hsmkms", "create-key", true, 64, 0) {
        let _ = writeln!(out, "| CreateKey in a key store (durable on two HSMs and in the frontend), 64 connections | ≥ 1,000 keys/s | **{:.0} keys/s**, p99 {:.1} ms | {} |", r.requests_per_second, r.latency_ms.p99, verdict(r.requests_per_second >= 1000.0));
    }
    for (name, goal, check) in [
        (
            "catch-up-10000",
            "≤ 2 s",
            Box::new(|v: f64| v <= 2.0) as Box<dyn Fn(f64) -> bool>,
        ),
        (
            "aead/seal/4KiB",
            "≥ 0.45× ring",
            Box::new(|v: f64| v >= 0.45),
        ),
        (
            "aead/open/4KiB",
            "≥ 0.45× ring",
            Box::new(|v: f64| v >= 0.45),
        ),
        // The figure is in MiB; 200 MB is 190.7 MiB.
        (
            "memory-100k-keys",
            "< 200 MB (190.7 MiB)",
            Box::new(|v: f64| v * 1.048_576 < 200.0),
        ),
    ] {
        if let Some(f) = results.figures.get(name) {
            let label = match name {
                "catch-up-10000" => {
                    "An HSM that was down for 10,000 key creations has them all".to_string()
                }
                "memory-100k-keys" => {
                    "Resident memory of the emulator with 100,000 keys".to_string()
                }
                other => format!(
                    "AES-256-GCM {}: the project's AEAD (RustCrypto aes-gcm 0.11, wiping \
                     plaintexts) against bare ring, same run",
                    other.trim_start_matches("aead/")
                ),
            };
            let _ = writeln!(
                out,
                "| {label} | {goal} | **{} {}** {} | {} |",
                trim(f.value),
                f.unit,
                f.note,
                verdict(check(f.value))
            );
        }
    }
    let _ = writeln!(out);

    let _ = writeln!(out, "## Requests/s and p99 latency against connections\n");
    if let (Some(idle), Some(busy)) = (
        rps("echo", "encrypt", false, 1),
        results.figures.get("echo-1-connection-busy-cores"),
    ) {
        let _ = writeln!(
            out,
            "At 1 connection the figures mostly measure how fast an idle core wakes up on this \
             machine: with both cores kept out of idle by two `nice -n 19` spin loops, the echo \
             server's single-connection rate went from {idle:.0}/s to {:.0}/s in this run. \
             hsmkms keeps its cores warmer (HSM, storage and audit threads), so it can beat \
             the echo server at 1 connection; the ratios that matter are at 16 and 64 \
             connections, where the cores are busy anyway.\n",
            busy.value
        );
    }
    let _ = writeln!(
        out,
        "![requests/s and p99 latency against connections]({chart})\n"
    );
    let _ = writeln!(
        out,
        "| target | connections | requests/s | p50 ms | p90 ms | p99 ms | max ms | errors |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for (series, runs) in results.series() {
        for r in runs {
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {} |",
                series.title(),
                r.connections,
                r.requests_per_second,
                r.latency_ms.p50,
                r.latency_ms.p90,
                r.latency_ms.p99,
                r.latency_ms.max,
                r.errors
            );
        }
    }
    let _ = writeln!(out);
    let others: Vec<&Figure> = results.figures.values().collect();
    if !others.is_empty() {
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
    if !commands.trim().is_empty() {
        let _ = writeln!(out, "## Commands\n");
        let _ = writeln!(out, "Reproduce the whole run with `benches/compare.sh` (it installs moto into `target/bench-venv`). It ran:\n");
        let _ = writeln!(out, "```sh\n{}\n```", commands.trim_end());
    }
    out
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

/// Two panels, side by side: requests/s and p99 latency (ms, log scale), both against
/// connections (log scale), one line per series.
fn chart(results: &Results, path: &Path) -> Result<()> {
    let series = results.series();
    let root = SVGBackend::new(path, (1100, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let (left, right) = root.split_horizontally(550);
    let max_conns = results
        .runs
        .iter()
        .map(|r| r.connections)
        .max()
        .unwrap_or(64)
        .max(2) as f64;
    let max_rps = results
        .runs
        .iter()
        .map(|r| r.requests_per_second)
        .fold(1.0, f64::max);
    let max_p99 = results
        .runs
        .iter()
        .map(|r| r.latency_ms.p99)
        .fold(1.0, f64::max);
    let min_p99 = results
        .runs
        .iter()
        .map(|r| r.latency_ms.p99)
        .fold(f64::MAX, f64::min)
        .max(0.01);
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
    for (i, (s, runs)) in series
        .iter()
        .filter(|(s, _)| s.op == "encrypt" && s.plaintext_bytes == 32)
        .enumerate()
    {
        let colour = colours[i % colours.len()];
        let rps: Vec<(f64, f64)> = runs
            .iter()
            .map(|r| (r.connections as f64, r.requests_per_second))
            .collect();
        let p99: Vec<(f64, f64)> = runs
            .iter()
            .map(|r| (r.connections as f64, r.latency_ms.p99))
            .collect();
        rps_chart
            .draw_series(LineSeries::new(rps.clone(), colour.stroke_width(2)))
            .map_err(plot_error)?
            .label(s.title())
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
