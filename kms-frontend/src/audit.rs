//! The audit trail, modelled on CloudTrail: one JSON record per API call and per service event,
//! appended to `audit.jsonl` by a writer thread that batches and fsyncs, rotated so its files
//! stay under a total cap; and counters served in Prometheus text format. A record holds the
//! request's parameters, never its whole body; secrets never enter one: plaintexts, ciphertexts
//! and passwords are stripped from request and response elements before they are written.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::mpsc;

/// Members never written to the trail.
const SECRET_MEMBERS: [&str; 4] = [
    "Plaintext",
    "KeyStorePassword",
    "CiphertextBlob",
    "CiphertextForRecipient",
];

/// Largest record written; a larger one keeps its envelope and loses its request parameters
/// and response elements (marked `"truncated": true`).
pub const MAX_RECORD_BYTES: usize = 16 * 1024;
/// Most request parameters recorded from one request, and the longest one (serialized).
const MAX_PARAMETERS: usize = 32;
const MAX_PARAMETER_BYTES: usize = 4 * 1024;
/// Bytes of records waiting for the writer before new ones are dropped (and counted).
pub const MAX_QUEUED_BYTES: usize = 32 * 1024 * 1024;
/// The trail is kept in this many files: the current one and the older ones it rotated to.
pub const SEGMENTS: u64 = 4;
/// The default total cap on the trail's files (`--audit-max-bytes`).
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Most records one query returns.
pub const MAX_QUERY_RECORDS: usize = 10_000;

/// Removes secret members (at any depth) from request or response elements.
pub fn scrub(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for member in SECRET_MEMBERS {
                map.remove(member);
            }
            map.values_mut().for_each(scrub);
        }
        Value::Array(items) => items.iter_mut().for_each(scrub),
        _ => {}
    }
}

/// What CloudTrail records of a request: its parameters, without secrets and bounded (at most
/// [`MAX_PARAMETERS`] members, each at most [`MAX_PARAMETER_BYTES`] serialized; a longer one is
/// replaced by a note of its size). Not a JSON object: nothing.
pub fn request_parameters(body: &[u8]) -> Value {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return Value::Null;
    };
    let mut kept = serde_json::Map::new();
    for (name, mut value) in map.into_iter().take(MAX_PARAMETERS) {
        if SECRET_MEMBERS.contains(&name.as_str()) {
            continue;
        }
        scrub(&mut value);
        let size = serde_json::to_vec(&value).map(|v| v.len()).unwrap_or(0);
        if size > MAX_PARAMETER_BYTES {
            value = json!(format!("({size} bytes, not recorded)"));
        }
        kept.insert(name, value);
    }
    Value::Object(kept)
}

/// The operations whose requests are counted by name; anything else counts as `Other`, so
/// the metrics hold one entry per operation this emulator serves whatever clients send.
pub fn metric_name<'a>(operation: &'a str, served: &[&'static str]) -> &'a str {
    if served.contains(&operation) {
        operation
    } else {
        "Other"
    }
}

/// A Prometheus label value, escaped (backslash, double quote, new line).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Counters of the emulator, served at `/_hsmkms/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<String, u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    pending_deletion_errors: AtomicU64,
    deletions: AtomicU64,
    audit_dropped: AtomicU64,
}

impl Metrics {
    /// Counts a request of `operation`, which must be one of a bounded set (see
    /// [`metric_name`]).
    pub fn count_request(&self, operation: &str) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry(operation.to_string()).or_default() += 1;
        }
    }

    /// Counts an error by its AWS type name (a fixed set).
    pub fn count_error(&self, error_type: &str) {
        if let Ok(mut m) = self.errors.lock() {
            *m.entry(error_type.to_string()).or_default() += 1;
        }
    }

    /// A call failed because its key is pending deletion: the `KMSKeyPendingDeletionErrorCount`
    /// metric of the AWS guide.
    pub fn count_pending_deletion_error(&self) {
        self.pending_deletion_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn pending_deletion_errors(&self) -> u64 {
        self.pending_deletion_errors.load(Ordering::Relaxed)
    }

    pub fn count_deletion(&self) {
        self.deletions.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP KMSKeyPendingDeletionErrorCount Calls that failed because their KMS key is pending deletion.\n");
        out.push_str("# TYPE KMSKeyPendingDeletionErrorCount counter\n");
        out.push_str(&format!(
            "KMSKeyPendingDeletionErrorCount {}\n",
            self.pending_deletion_errors()
        ));
        out.push_str("# HELP hsmkms_requests_total API calls by operation.\n# TYPE hsmkms_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for (op, n) in m.iter() {
                out.push_str(&format!(
                    "hsmkms_requests_total{{operation=\"{}\"}} {n}\n",
                    label(op)
                ));
            }
        }
        out.push_str("# HELP hsmkms_errors_total Failed API calls by error type.\n# TYPE hsmkms_errors_total counter\n");
        if let Ok(m) = self.errors.lock() {
            for (t, n) in m.iter() {
                out.push_str(&format!(
                    "hsmkms_errors_total{{type=\"{}\"}} {n}\n",
                    label(t)
                ));
            }
        }
        out.push_str("# HELP hsmkms_key_deletions_total KMS keys deleted at the end of their waiting period.\n# TYPE hsmkms_key_deletions_total counter\n");
        out.push_str(&format!(
            "hsmkms_key_deletions_total {}\n",
            self.deletions.load(Ordering::Relaxed)
        ));
        out.push_str("# HELP hsmkms_audit_dropped_total Audit records dropped because the writer fell behind.\n# TYPE hsmkms_audit_dropped_total counter\n");
        out.push_str(&format!(
            "hsmkms_audit_dropped_total {}\n",
            self.audit_dropped.load(Ordering::Relaxed)
        ));
        out
    }
}

/// The audit trail's writer: records are serialized on the caller's thread (bounded in size),
/// queued (bounded in bytes), and appended by a writer thread that batches, fsyncs, and rotates
/// the file so the trail's files stay under their total cap.
#[derive(Debug)]
pub struct Audit {
    path: PathBuf,
    tx: mpsc::Sender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
}

/// The `n`-th older file of the trail at `path` (`audit.jsonl` -> `audit.1.jsonl`).
fn segment(path: &Path, n: u64) -> PathBuf {
    if n == 0 {
        return path.to_path_buf();
    }
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("audit");
    let ext = path.extension().and_then(|s| s.to_str()).unwrap_or("jsonl");
    path.with_file_name(format!("{stem}.{n}.{ext}"))
}

impl Audit {
    /// Opens (appending to) `path` and starts the writer thread; the trail's files together
    /// stay under `max_bytes`.
    pub fn open(path: &Path, max_bytes: u64) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let (tx, rx) = mpsc::channel(65_536);
        let queued = Arc::new(AtomicUsize::new(0));
        let writer = Writer {
            path: path.to_path_buf(),
            segment_bytes: (max_bytes / SEGMENTS).max(64 * 1024),
            written: file.metadata().map(|m| m.len()).unwrap_or(0),
            file,
            queued: queued.clone(),
        };
        std::thread::Builder::new()
            .name("kms-audit".into())
            .spawn(move || writer.run(rx))?;
        Ok(Self {
            path: path.to_path_buf(),
            tx,
            queued,
        })
    }

    /// Appends a record (asynchronously; the writer batches and fsyncs). A record over
    /// [`MAX_RECORD_BYTES`] loses its parameters and elements; one that finds the queue full is
    /// dropped and counted.
    pub fn record(&self, metrics: &Metrics, mut record: Value) {
        let mut line = serde_json::to_vec(&record).unwrap_or_default();
        if line.len() > MAX_RECORD_BYTES {
            for member in [
                "requestParameters",
                "responseElements",
                "additionalEventData",
            ] {
                if let Some(m) = record.get_mut(member) {
                    *m = json!({"truncated": true});
                }
            }
            line = serde_json::to_vec(&record).unwrap_or_default();
        }
        line.push(b'\n');
        let len = line.len();
        if self.queued.fetch_add(len, Ordering::SeqCst) + len > MAX_QUEUED_BYTES
            || self.tx.try_send(line).is_err()
        {
            self.queued.fetch_sub(len, Ordering::SeqCst);
            metrics.audit_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records, oldest first, whose line names `key` (an id or ARN) and whose `eventTime` is at
    /// or after `since` (ISO 8601, as the records write it); the newest `limit` of them (at
    /// most [`MAX_QUERY_RECORDS`]). A blocking read of the trail's files: call it off the HTTP
    /// workers.
    pub fn read(&self, key: Option<&str>, since: Option<&str>, limit: usize) -> Vec<Value> {
        let limit = limit.min(MAX_QUERY_RECORDS);
        let mut kept: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        for n in (0..SEGMENTS).rev() {
            let Ok(file) = File::open(segment(&self.path, n)) else {
                continue;
            };
            for line in BufReader::new(file).lines().map_while(Result::ok) {
                if key.is_some_and(|k| !line.contains(k)) {
                    continue;
                }
                if let Some(since) = since {
                    let time = line
                        .split("\"eventTime\":\"")
                        .nth(1)
                        .and_then(|rest| rest.split('"').next())
                        .unwrap_or("");
                    if time < since {
                        continue;
                    }
                }
                kept.push_back(line);
                if kept.len() > limit {
                    kept.pop_front();
                }
            }
        }
        kept.iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

/// The writer thread's state.
struct Writer {
    path: PathBuf,
    segment_bytes: u64,
    written: u64,
    file: File,
    queued: Arc<AtomicUsize>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Vec<u8>>) {
        while let Some(first) = rx.blocking_recv() {
            let mut buf = first;
            // A batch fills at most the room left in the current file (and 1 MiB), so a file
            // passes its share of the cap by one record at most.
            let room = self
                .segment_bytes
                .saturating_sub(self.written)
                .min(1024 * 1024) as usize;
            while buf.len() < room {
                match rx.try_recv() {
                    Ok(next) => buf.extend_from_slice(&next),
                    Err(_) => break,
                }
            }
            self.queued.fetch_sub(buf.len(), Ordering::SeqCst);
            if let Err(e) = self
                .file
                .write_all(&buf)
                .and_then(|_| self.file.sync_data())
            {
                tracing::error!(error = %e, path = %self.path.display(), "cannot append to the audit trail");
            }
            self.written += buf.len() as u64;
            if self.written >= self.segment_bytes {
                if let Err(e) = self.rotate() {
                    tracing::error!(error = %e, "cannot rotate the audit trail");
                }
            }
        }
    }

    /// The current file becomes `.1`, `.1` becomes `.2`, ...; the oldest is dropped.
    fn rotate(&mut self) -> std::io::Result<()> {
        for n in (1..SEGMENTS).rev() {
            let from = segment(&self.path, n - 1);
            if from.exists() {
                std::fs::rename(&from, segment(&self.path, n))?;
            }
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

/// A CloudTrail-like record of one API call.
pub fn api_call_record(
    event_time: String,
    event_name: &str,
    request_id: &str,
    mut request: Value,
    mut response: Value,
    error: Option<(&str, String)>,
    additional: Option<Value>,
) -> Value {
    scrub(&mut request);
    scrub(&mut response);
    let mut record = json!({
        "eventVersion": "1.08",
        "eventSource": "kms.amazonaws.com",
        "eventType": "AwsApiCall",
        "eventName": event_name,
        "eventTime": event_time,
        "requestID": request_id,
        "requestParameters": request,
        "responseElements": if error.is_some() { Value::Null } else { response },
    });
    if let Some((code, message)) = error {
        record["errorCode"] = json!(code);
        record["errorMessage"] = json!(message);
    }
    if let Some(extra) = additional {
        record["additionalEventData"] = extra;
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_scrubbed_at_any_depth() {
        let mut v = json!({"KeyId": "k", "Plaintext": "c2VjcmV0", "Nested": [{"KeyStorePassword": "pw", "Ok": 1}]});
        scrub(&mut v);
        assert_eq!(v, json!({"KeyId": "k", "Nested": [{"Ok": 1}]}));
    }

    #[test]
    fn metrics_render_the_pending_deletion_counter() {
        let m = Metrics::default();
        m.count_pending_deletion_error();
        m.count_request("Encrypt");
        let text = m.render();
        assert!(text.contains("KMSKeyPendingDeletionErrorCount 1\n"));
        assert!(text.contains("hsmkms_requests_total{operation=\"Encrypt\"} 1\n"));
    }

    #[test]
    fn unknown_operations_share_one_label_and_labels_are_escaped() {
        assert_eq!(metric_name("Encrypt", &["Encrypt"]), "Encrypt");
        assert_eq!(metric_name("\"} 1e99 #", &["Encrypt"]), "Other");
        let m = Metrics::default();
        m.count_error("a\"b\\c\nd");
        assert!(m
            .render()
            .contains("hsmkms_errors_total{type=\"a\\\"b\\\\c\\nd\"} 1\n"));
    }

    #[test]
    fn request_parameters_are_bounded_and_secret_free() {
        let big = "x".repeat(10_000);
        let body = json!({"KeyId": "k", "Plaintext": "c2VjcmV0", "Policy": big}).to_string();
        let p = request_parameters(body.as_bytes());
        assert_eq!(p["KeyId"], "k");
        assert!(p.get("Plaintext").is_none());
        assert_eq!(p["Policy"], "(10002 bytes, not recorded)");
        let many: serde_json::Map<String, Value> =
            (0..1000).map(|i| (format!("m{i:04}"), json!(i))).collect();
        let p = request_parameters(Value::Object(many).to_string().as_bytes());
        assert_eq!(p.as_object().unwrap().len(), MAX_PARAMETERS);
        assert_eq!(request_parameters(b"not json"), Value::Null);
    }

    #[test]
    fn the_trail_rotates_under_its_cap_and_answers_queries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::open(&path, 4 * 64 * 1024).unwrap();
        let m = Metrics::default();
        for i in 0..3_000 {
            audit.record(
                &m,
                json!({"eventTime": format!("2026-01-01T00:{:02}:00Z", i / 60 % 60), "n": i, "pad": "p".repeat(300)}),
            );
        }
        drop(audit);
        std::thread::sleep(std::time::Duration::from_millis(500));
        let total: u64 = (0..SEGMENTS)
            .filter_map(|n| std::fs::metadata(segment(&path, n)).ok())
            .map(|m| m.len())
            .sum();
        assert!(total <= 4 * 64 * 1024 + 64 * 1024, "{total} bytes");
        let audit = Audit::open(&path, 4 * 64 * 1024).unwrap();
        let newest = audit.read(None, None, 10);
        assert_eq!(newest.len(), 10);
        assert_eq!(newest[9]["n"], 2_999);
        let since = audit.read(None, Some("2026-01-01T00:49:00Z"), 10_000);
        assert!(since.iter().all(|r| r["n"].as_u64().unwrap() >= 49 * 60));
    }
}
