//! `hsmkms-load bench`: drives a running emulator (or any KMS endpoint) over HTTP with real,
//! signed KMS requests for a bounded time and reports requests/s and latency.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::client::{self, Connection, Endpoint};
use crate::ops::{self, KeyStoreChoice, Op, Plan};

/// The longest run the tool accepts: every load loop stops by itself.
pub const MAX_DURATION: Duration = Duration::from_secs(120);
/// The most connections the tool opens.
pub const MAX_CONNECTIONS: usize = 1024;
/// Distinct error messages kept for the report.
const ERROR_SAMPLES: usize = 5;
/// A connection that fails to reconnect this many times in a row gives up.
const RECONNECT_ATTEMPTS: u32 = 20;

/// Options of `hsmkms-load bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The operation every request makes.
    #[arg(long, value_enum, default_value_t = Op::Encrypt)]
    pub op: Op,
    /// Use a key in a CloudHSM key store (crypto runs on an HSM) instead of an AWS_KMS key; with
    /// `create-key`, create keys in the store. Not with sign, verify and the MACs: a store holds
    /// only symmetric encryption keys. A connected store named `--key-store-name` is
    /// used, or created from the first ACTIVE cluster and connected.
    #[arg(long)]
    pub key_store: bool,
    /// Use this custom key store (implies `--key-store`).
    #[arg(long)]
    pub key_store_id: Option<String>,
    /// Name of the key store to find or create.
    #[arg(long, default_value = "hsmkms-bench")]
    pub key_store_name: String,
    /// Trust anchor certificate for a key store the tool creates.
    #[arg(long, default_value = "./hsmkms-data/customerCA.crt")]
    pub trust_anchor: PathBuf,
    /// kmsuser password for a key store the tool creates.
    #[arg(long, default_value = "kmsPassword1", hide_default_value = true)]
    pub kmsuser_password: String,
    /// Use this existing key instead of creating one (sign, verify and the MACs then name the
    /// first algorithm its metadata lists; without it they make an ECC_NIST_P256 key for
    /// ECDSA_SHA_256, or an HMAC_256 key for HMAC_SHA_256).
    #[arg(long)]
    pub key_id: Option<String>,
    /// Plaintext size of encrypt and decrypt requests, and message size of sign, verify,
    /// generate-mac and verify-mac (RAW messages), 1 to 4096.
    #[arg(long, default_value_t = 32)]
    pub plaintext_bytes: usize,
    /// Connections, each sending one request after another.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// How long to measure, in seconds (at most 120).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring starts (not counted).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Stop after this many measured requests, if that comes before `--duration`.
    #[arg(long)]
    pub requests: Option<u64>,
    /// The endpoint (also `AWS_ENDPOINT_URL`).
    #[arg(
        long,
        env = "AWS_ENDPOINT_URL",
        default_value = "http://127.0.0.1:4599"
    )]
    pub endpoint: String,
    /// Region requests are signed for.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub region: String,
    /// Threads of the load tool's runtime (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// A name for the target in the results (`hsmkms`, `moto`, `echo`, ...).
    #[arg(long, default_value = "hsmkms")]
    pub label: String,
    /// Print the results as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also keep each second of the measured window apart: its answers and its p50 and p99
    /// (`timeline` in the result), to show whether latency stalls now and then.
    #[arg(long)]
    pub timeline: bool,
}

/// Latency figures of a run, in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    /// p99.9 (absent from results written before it was measured).
    #[serde(default)]
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// One second of a run's measured window (`--timeline`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Second {
    /// Answers that passed the check and arrived in this second.
    pub requests: u64,
    /// Their latency percentiles, in milliseconds (0 for a second without answers).
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// What a run measured; `--json` prints it, the comparison collects it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunResult {
    pub label: String,
    /// What generated the load: `hsmkms-load` (this tool, every answer checked) or `wrk`.
    #[serde(default = "default_loader")]
    pub loader: String,
    pub op: String,
    pub key_store: bool,
    pub connections: usize,
    pub plaintext_bytes: usize,
    pub duration_seconds: f64,
    /// Answers that passed the check.
    pub requests: u64,
    pub errors: u64,
    pub requests_per_second: f64,
    pub latency_ms: Latency,
    /// The signing or MAC algorithm of sign, verify and the MACs (absent for other operations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    pub error_samples: Vec<String>,
    /// Each whole second of the measured window, in order (`--timeline`; empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<Second>,
    /// The round of a repeated comparison the run belongs to (1, 2, ...: `compare.sh --rounds`
    /// adds it to the line); absent for a run measured once, as in results written before
    /// rounds existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u32>,
}

fn default_loader() -> String {
    "hsmkms-load".to_string()
}

/// Shared counters of a run. An answer counts (as ok or as an error) when it arrives inside the
/// measured window; with `--requests`, when its request took one of the N tickets instead.
#[derive(Debug)]
struct Tally {
    /// The instant the other times are measured from.
    origin: Instant,
    ok: AtomicU64,
    errors: AtomicU64,
    /// Tickets taken so far (`--requests`).
    issued: AtomicU64,
    measuring: AtomicBool,
    /// When measuring began, in µs since `origin` (set before `measuring`).
    start_us: AtomicU64,
    stop: AtomicBool,
    /// When the last counted answer arrived, in µs since `origin`.
    last_answer_us: AtomicU64,
    samples: Mutex<Vec<String>>,
}

impl Tally {
    fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    /// Whether an answer arriving now counts: in a timed run (`ticket` is `None`) if it arrives
    /// in the window; with `--requests`, if its request took a ticket.
    fn counts(&self, ticket: Option<bool>) -> bool {
        let counts = match ticket {
            Some(ticket) => ticket,
            None => self.measuring.load(Ordering::Relaxed) && !self.stop.load(Ordering::Relaxed),
        };
        if counts {
            self.last_answer_us
                .fetch_max(self.now_us(), Ordering::Relaxed);
        }
        counts
    }

    fn error(&self, why: String, counted: bool) {
        if !counted {
            return;
        }
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() < ERROR_SAMPLES && !samples.contains(&why) {
            samples.push(why);
        }
    }
}

/// Runs `hsmkms-load bench` on its own runtime.
pub fn main(args: BenchArgs) -> Result<()> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(&args))?;
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        print_table(&result);
    }
    Ok(())
}

fn print_table(r: &RunResult) {
    let what = match (r.op.as_str(), r.key_store) {
        ("create-key", true) => "keys in a key store".to_string(),
        ("create-key", false) => "AWS_KMS keys".to_string(),
        (op, store) => {
            let key = if store {
                "key store key"
            } else {
                "AWS_KMS key"
            };
            match (op, &r.algorithm) {
                ("generate-data-key", _) => key.to_string(),
                (_, Some(algorithm)) => {
                    format!("{key}, {algorithm}, {} B message", r.plaintext_bytes)
                }
                _ => format!("{key}, {} B plaintext", r.plaintext_bytes),
            }
        }
    };
    println!(
        "{} {} ({what}), {} connections, {:.1} s",
        r.label, r.op, r.connections, r.duration_seconds
    );
    println!("  requests/s  {:>10.0}", r.requests_per_second);
    println!(
        "  latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}",
        r.latency_ms.p50, r.latency_ms.p90, r.latency_ms.p99, r.latency_ms.max
    );
    println!("  answers     {} ok, {} errors", r.requests, r.errors);
    for sample in &r.error_samples {
        println!("  error       {sample}");
    }
    if !r.timeline.is_empty() {
        let p99: Vec<String> = r
            .timeline
            .iter()
            .map(|s| format!("{:.2}", s.p99_ms))
            .collect();
        println!("  p99 ms by second  {}", p99.join(" "));
    }
}

/// Checks a run's options, sets up its key (and store) and checks that the first request
/// succeeds: the endpoint and the plan every request follows.
pub async fn prepare(args: &BenchArgs) -> Result<(Endpoint, Plan)> {
    if !(args.duration > 0.0 && args.duration <= MAX_DURATION.as_secs_f64()) {
        bail!(
            "--duration must be more than 0 and at most {} seconds",
            MAX_DURATION.as_secs()
        );
    }
    if !(0.0..=10.0).contains(&args.warmup) {
        bail!("--warmup must be 0 to 10 seconds");
    }
    if args.connections == 0 || args.connections > MAX_CONNECTIONS {
        bail!("--connections must be 1 to {MAX_CONNECTIONS}");
    }
    let needs_plaintext = matches!(args.op, Op::Encrypt | Op::Decrypt) || args.op.takes_message();
    if args.plaintext_bytes > 4096 || (needs_plaintext && args.plaintext_bytes == 0) {
        bail!(
            "--plaintext-bytes must be 1 to 4096 (KMS's limit), not {}",
            args.plaintext_bytes
        );
    }
    if args.op.takes_message() && (args.key_store || args.key_store_id.is_some()) {
        bail!(
            "--op {} needs an AWS_KMS key: a custom key store holds only symmetric encryption \
             keys",
            args.op.name()
        );
    }
    let access = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "test".into());
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "test".into());
    let endpoint = Endpoint::parse(&args.endpoint, &args.region, &access, &secret)?;

    let mut setup = Connection::open(&endpoint).await?;
    let store = (args.key_store || args.key_store_id.is_some()).then(|| KeyStoreChoice {
        id: args.key_store_id.clone(),
        name: args.key_store_name.clone(),
        trust_anchor: args.trust_anchor.clone(),
        kmsuser_password: args.kmsuser_password.clone(),
    });
    let plan = ops::plan(
        &mut setup,
        args.op,
        args.key_id.clone(),
        store.as_ref(),
        args.plaintext_bytes,
    )
    .await
    .context("setting up the run")?;
    // The first request of the run must succeed, or nothing after it means anything.
    let first = setup
        .call("kms", plan.target, plan.body.clone())
        .await
        .context("the first request")?;
    if let Err(why) = plan.check(&first) {
        bail!("the first request failed: {why}");
    }
    Ok((endpoint, plan))
}

/// Sets up, loads the endpoint for the warm-up and the measured window, and gathers figures.
pub async fn run(args: &BenchArgs) -> Result<RunResult> {
    let (endpoint, plan) = prepare(args).await?;
    let plan = Arc::new(plan);

    let tally = Arc::new(Tally {
        origin: Instant::now(),
        ok: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        issued: AtomicU64::new(0),
        measuring: AtomicBool::new(false),
        start_us: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        last_answer_us: AtomicU64::new(0),
        samples: Mutex::new(Vec::new()),
    });
    // Without a warm-up, connections start once measuring has begun, so none sends a request
    // that is not measured.
    let (warmed, warm) = tokio::sync::watch::channel(());
    let mut workers = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let mut warm = warm.clone();
        let wait = args.warmup == 0.0;
        let (endpoint, plan, tally) = (endpoint.clone(), plan.clone(), tally.clone());
        let (limit, timeline) = (args.requests, args.timeline);
        workers.push(tokio::spawn(async move {
            if wait {
                let _ = warm.changed().await;
            }
            worker(endpoint, plan, tally, limit, timeline).await
        }));
    }

    let bar = progress_bar(args);
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let started = Instant::now();
    let start_us = started.duration_since(tally.origin).as_micros() as u64;
    tally.start_us.store(start_us, Ordering::Relaxed);
    tally.measuring.store(true, Ordering::Relaxed);
    let _ = warmed.send(());
    let window = Duration::from_secs_f64(args.duration);
    let deadline = tokio::time::Instant::from_std(started + window);
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = ticker.tick() => {}
        }
        if tally.stop.load(Ordering::Relaxed) {
            break;
        }
        let elapsed = started.elapsed();
        bar.set_position(elapsed.as_millis().min(window.as_millis()) as u64);
        bar.set_message(format!(
            "{:.0} req/s, {} errors",
            tally.ok.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64().max(1e-3),
            tally.errors.load(Ordering::Relaxed)
        ));
    }
    tally.stop.store(true, Ordering::Relaxed);
    let stopped_us = tally.now_us();
    bar.finish_and_clear();
    let mut histogram = new_histogram();
    let mut answers = Vec::new();
    for worker in workers {
        // A worker ends within one request deadline of the stop flag.
        match worker.await {
            Ok(done) => {
                histogram
                    .add(&done.histogram)
                    .map_err(|e| anyhow::anyhow!("merging latencies: {e}"))?;
                answers.extend(done.answers);
            }
            Err(e) => bail!("a load connection failed: {e}"),
        }
    }
    // A timed run lasts its window (answers after it do not count); one of `--requests`
    // lasts until the last of its answers.
    let end_us = match args.requests {
        Some(_) => tally
            .last_answer_us
            .load(Ordering::Relaxed)
            .max(start_us + 1),
        None => stopped_us,
    };
    let elapsed = (end_us - start_us) as f64 / 1e6;
    let ok = tally.ok.load(Ordering::Relaxed);
    let ms = |us: u64| us as f64 / 1000.0;
    let samples = tally
        .samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(RunResult {
        label: args.label.clone(),
        loader: default_loader(),
        op: args.op.name().to_string(),
        key_store: plan.key_store.is_some(),
        connections: args.connections,
        plaintext_bytes: args.plaintext_bytes,
        duration_seconds: elapsed,
        requests: ok,
        errors: tally.errors.load(Ordering::Relaxed),
        requests_per_second: ok as f64 / elapsed,
        latency_ms: Latency {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1000.0,
        },
        algorithm: plan.algorithm.clone(),
        error_samples: samples,
        timeline: if args.timeline {
            timeline(&answers, elapsed)
        } else {
            Vec::new()
        },
        round: None,
    })
}

/// Each whole second of a window of `elapsed` seconds, from the answers' (second, µs) pairs;
/// answers in the last, partial second are left out.
fn timeline(answers: &[(u32, u32)], elapsed: f64) -> Vec<Second> {
    let seconds = (elapsed.floor() as usize).max(1);
    let mut histograms: Vec<Histogram<u64>> = (0..seconds).map(|_| new_histogram()).collect();
    for &(second, us) in answers {
        if let Some(h) = histograms.get_mut(second as usize) {
            let _ = h.record(u64::from(us).max(1));
        }
    }
    let ms = |us: u64| us as f64 / 1000.0;
    histograms
        .iter()
        .map(|h| Second {
            requests: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
        })
        .collect()
}

fn progress_bar(args: &BenchArgs) -> ProgressBar {
    let window = Duration::from_secs_f64(args.duration);
    let bar = ProgressBar::new(window.as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {elapsed:>3} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(format!(
        "{} {} x{}",
        args.label,
        args.op.name(),
        args.connections
    ));
    bar
}

/// Latencies in microseconds, from 1 µs to twice the request deadline, at 3 significant figures.
fn new_histogram() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5).
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, client::REQUEST_DEADLINE.as_micros() as u64 * 2, 3)
        .expect("valid histogram bounds")
}

/// What one connection measured.
struct WorkerResult {
    histogram: Histogram<u64>,
    /// With `--timeline`, each counted answer as (second of the window it arrived in, µs).
    answers: Vec<(u32, u32)>,
}

/// One connection's loop: send, check, time, until the run stops.
async fn worker(
    endpoint: Endpoint,
    plan: Arc<Plan>,
    tally: Arc<Tally>,
    limit: Option<u64>,
    timeline: bool,
) -> WorkerResult {
    let mut histogram = new_histogram();
    let mut answers = Vec::new();
    let mut conn: Option<Connection> = None;
    let mut failures = 0u32;
    while !tally.stop.load(Ordering::Relaxed) {
        let connection = match conn.as_mut() {
            Some(c) => c,
            None => match Connection::open(&endpoint).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    tally.error(format!("{e:#}"), tally.counts(limit.map(|_| false)));
                    failures += 1;
                    if failures >= RECONNECT_ATTEMPTS {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // With `--requests`, the measured requests are the first N sent after the warm-up.
        let ticket = match limit {
            Some(limit) if tally.measuring.load(Ordering::Relaxed) => {
                if tally.issued.fetch_add(1, Ordering::Relaxed) >= limit {
                    tally.stop.store(true, Ordering::Relaxed);
                    break;
                }
                Some(true)
            }
            Some(_) => Some(false),
            None => None,
        };
        let sent = Instant::now();
        let result = connection.call("kms", plan.target, plan.body.clone()).await;
        let took = sent.elapsed();
        let counted = tally.counts(ticket);
        match result {
            Ok(answer) => {
                failures = 0;
                match plan.check(&answer) {
                    Ok(()) if counted => {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                        let us = took.as_micros().max(1) as u64;
                        let _ = histogram.record(us);
                        if timeline {
                            let since = tally
                                .now_us()
                                .saturating_sub(tally.start_us.load(Ordering::Relaxed));
                            let second = u32::try_from(since / 1_000_000).unwrap_or(u32::MAX);
                            answers.push((second, u32::try_from(us).unwrap_or(u32::MAX)));
                        }
                    }
                    Ok(()) => {}
                    Err(why) => tally.error(why, counted),
                }
            }
            Err(e) => {
                tally.error(format!("{e:#}"), counted);
                conn = None;
            }
        }
    }
    WorkerResult { histogram, answers }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeline_keeps_whole_seconds_apart() {
        // Second 0: 100 answers of 1 ms; second 1: 99 of 1 ms and one of 50 ms; second 2 is
        // the partial last second and is left out; second 3 never happened.
        let mut answers: Vec<(u32, u32)> = (0..100).map(|_| (0, 1000)).collect();
        answers.extend((0..99).map(|_| (1, 1000)));
        answers.push((1, 50_000));
        answers.push((2, 7000));
        answers.push((3, 7000));
        let seconds = timeline(&answers, 2.4);
        assert_eq!(seconds.len(), 2);
        assert_eq!(seconds[0].requests, 100);
        assert!((seconds[0].p99_ms - 1.0).abs() < 0.01);
        assert_eq!(seconds[1].requests, 100);
        assert!((seconds[1].p99_ms - 1.0).abs() < 0.01, "{:?}", seconds[1]);
        assert!((seconds[1].p50_ms - 1.0).abs() < 0.01);
        // A second without answers is there, with no latency.
        let seconds = timeline(&[(1, 1000)], 2.0);
        assert_eq!(seconds[0].requests, 0);
        assert_eq!(seconds[0].p99_ms, 0.0);
    }
}
