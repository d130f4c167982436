//! The audit trail, modelled on CloudTrail: one JSON record per API call and per service event,
//! appended to `audit.jsonl` by a writer thread that batches and fsyncs, and counters served in
//! Prometheus text format. Secrets never enter a record: plaintexts, ciphertexts and passwords
//! are stripped from request and response elements before they are written.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde_json::{json, Value};
use tokio::sync::mpsc;

/// Members never written to the trail.
const SECRET_MEMBERS: [&str; 4] = [
    "Plaintext",
    "KeyStorePassword",
    "CiphertextBlob",
    "CiphertextForRecipient",
];

/// Records waiting for the writer before new ones are dropped (with a count of the loss).
const MAX_QUEUED: usize = 65_536;

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
    pub fn count_request(&self, operation: &str) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry(operation.to_string()).or_default() += 1;
        }
    }

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
                    "hsmkms_requests_total{{operation=\"{op}\"}} {n}\n"
                ));
            }
        }
        out.push_str("# HELP hsmkms_errors_total Failed API calls by error type.\n# TYPE hsmkms_errors_total counter\n");
        if let Ok(m) = self.errors.lock() {
            for (t, n) in m.iter() {
                out.push_str(&format!("hsmkms_errors_total{{type=\"{t}\"}} {n}\n"));
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

/// The audit trail's writer.
#[derive(Debug)]
pub struct Audit {
    path: PathBuf,
    tx: mpsc::Sender<Value>,
}

impl Audit {
    /// Opens (appending to) `path` and starts the writer thread.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let (tx, rx) = mpsc::channel(MAX_QUEUED);
        std::thread::Builder::new()
            .name("kms-audit".into())
            .spawn(move || write_loop(file, rx))?;
        Ok(Self {
            path: path.to_path_buf(),
            tx,
        })
    }

    /// Appends a record (asynchronously; the writer batches and fsyncs).
    pub fn record(&self, metrics: &Metrics, record: Value) {
        if self.tx.try_send(record).is_err() {
            metrics.audit_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records whose `resources` or request/response name `key` (an id or ARN), or all.
    pub fn read(&self, key: Option<&str>, limit: usize) -> Vec<Value> {
        let Ok(file) = File::open(&self.path) else {
            return vec![];
        };
        let mut out: Vec<Value> = BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter(|line| key.is_none_or(|k| line.contains(k)))
            .filter_map(|line| serde_json::from_str(&line).ok())
            .collect();
        if out.len() > limit {
            out.drain(..out.len() - limit);
        }
        out
    }
}

fn write_loop(mut file: File, mut rx: mpsc::Receiver<Value>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while let Ok(next) = rx.try_recv() {
            batch.push(next);
            if batch.len() >= 4_096 {
                break;
            }
        }
        let mut buf = Vec::new();
        for record in batch {
            if serde_json::to_writer(&mut buf, &record).is_ok() {
                buf.push(b'\n');
            }
        }
        if let Err(e) = file.write_all(&buf).and_then(|_| file.sync_data()) {
            tracing::error!(error = %e, "cannot append to the audit trail");
        }
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
}
