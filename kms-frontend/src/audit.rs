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

use std::borrow::Cow;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::api::kms::OPERATIONS;

/// Members never written to the trail.
const SECRET_MEMBERS: [&str; 13] = [
    "Plaintext",
    "KeyStorePassword",
    "CiphertextBlob",
    "CiphertextForRecipient",
    // Data key pairs' private keys, and what ECDH derives.
    "PrivateKeyPlaintext",
    "PrivateKeyCiphertextBlob",
    "SharedSecret",
    "SharedSecretCiphertextBlob",
    // Imported key material, wrapped, and the token that unwraps it.
    "EncryptedKeyMaterial",
    "ImportToken",
    // What Sign and GenerateMac are given (CloudTrail records neither) and the MAC they make.
    "Message",
    "Mac",
    // A grant token lets whoever holds it use the grant: a bearer credential.
    "GrantToken",
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
/// The longest a written record waits to be made durable (fsync'd): the trail loses at most
/// this much of its newest records if the machine stops, and nothing if only the process does.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// How long the writer lets records gather after writing a batch. While it waits, callers
/// queue records without waking it (a wake-up per record cost more than the record).
const BATCH_PAUSE: Duration = Duration::from_millis(2);
/// The longest a query waits for the records queued before it to be written.
const QUERY_WAIT: Duration = Duration::from_secs(1);
/// Most records one query returns.
pub const MAX_QUERY_RECORDS: usize = 10_000;

/// Removes secret members from request or response elements. Only top-level members: KMS's
/// secrets are all members of a request or response itself, while deeper names are the
/// caller's (an `EncryptionContext` key named `Message` or `Mac` is not a secret, and its
/// CloudTrail record keeps it).
pub fn scrub(value: &mut Value) {
    if let Value::Object(map) = value {
        for member in SECRET_MEMBERS {
            map.remove(member);
        }
    }
}

/// CreateKey's `_custom_key_material_` tag (LocalStack's convention) carries key material: its
/// value is never recorded.
fn scrub_material_tag(tags: &mut Value) {
    if let Value::Array(tags) = tags {
        for tag in tags.iter_mut() {
            if tag.get("TagKey").and_then(Value::as_str) == Some("_custom_key_material_") {
                tag["TagValue"] = Value::String("(not recorded)".into());
            }
        }
    }
}

/// One recorded request parameter: its JSON text as the client sent it (strings, numbers and
/// the like), a structure to be written without its secret members, or a note of its size.
#[derive(Debug)]
enum Parameter<'a> {
    Raw(&'a RawValue),
    Structure(Value),
    Note(String),
}

/// What CloudTrail records of a request: its parameters, without secrets and bounded (at most
/// [`MAX_PARAMETERS`] members, in name order, each at most [`MAX_PARAMETER_BYTES`] as sent; a
/// longer one is replaced by a note of its size). Borrowed from the body, so recording a
/// request copies only what it writes.
#[derive(Debug)]
pub struct Parameters<'a> {
    members: Vec<(Cow<'a, str>, Parameter<'a>)>,
}

impl<'a> Parameters<'a> {
    /// The parameters of `body`; `None` if it is not a JSON object.
    pub fn of(body: &'a [u8]) -> Option<Self> {
        let map: BTreeMap<Cow<'a, str>, &'a RawValue> = serde_json::from_slice(body).ok()?;
        let members = map
            .into_iter()
            .filter(|(name, _)| !SECRET_MEMBERS.contains(&name.as_ref()))
            .take(MAX_PARAMETERS)
            .map(|(name, raw)| {
                let text = raw.get();
                let parameter = if text.len() > MAX_PARAMETER_BYTES {
                    Parameter::Note(format!("({} bytes, not recorded)", text.len()))
                } else if text.starts_with(['{', '[']) {
                    let mut value = serde_json::from_str(text).unwrap_or(Value::Null);
                    if name == "Tags" {
                        scrub_material_tag(&mut value);
                    }
                    Parameter::Structure(value)
                } else {
                    Parameter::Raw(raw)
                };
                (name, parameter)
            })
            .collect();
        Some(Self { members })
    }

    /// A string parameter.
    pub fn str(&self, name: &str) -> Option<Cow<'a, str>> {
        self.members.iter().find_map(|(n, p)| match p {
            Parameter::Raw(raw) if n == name => serde_json::from_str::<Cow<'a, str>>(raw.get())
                .ok()
                .map(|s| Cow::Owned(s.into_owned())),
            _ => None,
        })
    }
}

impl Serialize for Parameters<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.members.len()))?;
        for (name, parameter) in &self.members {
            match parameter {
                Parameter::Raw(raw) => map.serialize_entry(name, raw)?,
                // A member's structure is the caller's (an encryption context, tags): kept
                // whole; secrets were left out by their member names above.
                Parameter::Structure(value) => map.serialize_entry(name, value)?,
                Parameter::Note(note) => map.serialize_entry(name, note)?,
            }
        }
        map.end()
    }
}

/// A response written without its secret (top-level) members, as [`scrub`] removes them,
/// without copying it.
#[derive(Debug)]
pub struct Scrubbed<'a>(pub &'a Value);

impl Serialize for Scrubbed<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(members) => {
                let mut map = serializer.serialize_map(None)?;
                for (name, value) in members {
                    if !SECRET_MEMBERS.contains(&name.as_str()) {
                        map.serialize_entry(name, value)?;
                    }
                }
                map.end()
            }
            other => other.serialize(serializer),
        }
    }
}

/// A Prometheus label value, escaped (backslash, double quote, new line).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Counters of the emulator, served at `/_hsmkms/metrics`. Requests are counted per operation
/// this emulator serves, in one atomic each (anything else counts as `Other`), so the metrics
/// hold a bounded set of entries whatever clients send, and counting takes no lock.
#[derive(Debug)]
pub struct Metrics {
    /// One counter per entry of [`OPERATIONS`], then `Other`.
    requests: Box<[AtomicU64]>,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    pending_deletion_errors: AtomicU64,
    deletions: AtomicU64,
    audit_dropped: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: (0..=OPERATIONS.len()).map(|_| AtomicU64::new(0)).collect(),
            errors: Mutex::new(BTreeMap::new()),
            pending_deletion_errors: AtomicU64::new(0),
            deletions: AtomicU64::new(0),
            audit_dropped: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts a request of the operation at `index` in [`OPERATIONS`], or of one hsmkms does
    /// not serve (`Other`).
    pub fn count_request(&self, index: Option<usize>) {
        let index = index.unwrap_or(OPERATIONS.len()).min(OPERATIONS.len());
        self.requests[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an error by its AWS type name (a fixed set).
    pub fn count_error(&self, error_type: &'static str) {
        if let Ok(mut m) = self.errors.lock() {
            *m.entry(error_type).or_default() += 1;
        }
    }

    /// A call failed because its key is pending deletion: the `KMSKeyPendingDeletionErrorCount`
    /// metric of the AWS guide.
    pub fn count_pending_deletion_error(&self) {
        self.pending_deletion_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Every counter back to zero (the reset of the control API).
    pub fn reset(&self) {
        for n in self.requests.iter() {
            n.store(0, Ordering::Relaxed);
        }
        if let Ok(mut m) = self.errors.lock() {
            m.clear();
        }
        for n in [
            &self.pending_deletion_errors,
            &self.deletions,
            &self.audit_dropped,
        ] {
            n.store(0, Ordering::Relaxed);
        }
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
        let mut counted: Vec<(&str, u64)> = OPERATIONS
            .iter()
            .map(|op| op.name)
            .chain(["Other"])
            .zip(self.requests.iter().map(|n| n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        counted.sort_unstable();
        for (op, n) in counted {
            out.push_str(&format!(
                "hsmkms_requests_total{{operation=\"{op}\"}} {n}\n"
            ));
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
    tx: mpsc::SyncSender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    /// Records handed to the writer, and records it has written.
    sent: AtomicU64,
    written: Arc<AtomicU64>,
}

/// Every file the trail at `path` may have: itself and its older segments.
pub fn segments(path: &Path) -> Vec<PathBuf> {
    (0..SEGMENTS).map(|n| segment(path, n)).collect()
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
        let (tx, rx) = mpsc::sync_channel(65_536);
        let queued = Arc::new(AtomicUsize::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            records: written.clone(),
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
            sent: AtomicU64::new(0),
            written,
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
        self.enqueue(metrics, line);
    }

    /// Appends the record of an API call, as [`Audit::record`] does.
    pub fn record_call(&self, metrics: &Metrics, mut call: ApiCall<'_>) {
        let mut line = Vec::with_capacity(512);
        let _ = serde_json::to_writer(&mut line, &call);
        if line.len() > MAX_RECORD_BYTES {
            call.truncated = true;
            line.clear();
            let _ = serde_json::to_writer(&mut line, &call);
        }
        self.enqueue(metrics, line);
    }

    fn enqueue(&self, metrics: &Metrics, mut line: Vec<u8>) {
        line.push(b'\n');
        let len = line.len();
        if self.queued.fetch_add(len, Ordering::SeqCst) + len > MAX_QUEUED_BYTES
            || self.tx.try_send(line).is_err()
        {
            self.queued.fetch_sub(len, Ordering::SeqCst);
            metrics.audit_dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            self.sent.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Waits (at most [`QUERY_WAIT`]) until the records queued before this call are written,
    /// so a query sees every call answered before it.
    /// Empties the trail (every file), after the records queued before; returns once that is
    /// done (or after [`QUERY_WAIT`]). The reset of the control API calls it.
    pub fn clear(&self) {
        // An empty line is never a record (records end with a newline): the writer's sign to
        // clear. Sent with a wait, never dropped.
        if self.tx.send(Vec::new()).is_ok() {
            self.sent.fetch_add(1, Ordering::SeqCst);
        }
        self.settle();
    }

    fn settle(&self) {
        let sent = self.sent.load(Ordering::SeqCst);
        let deadline = Instant::now() + QUERY_WAIT;
        while self.written.load(Ordering::SeqCst) < sent && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Records, oldest first, whose line names `key` (an id or ARN) and whose `eventTime` is at
    /// or after `since` (ISO 8601, as the records write it); the newest `limit` of them (at
    /// most [`MAX_QUERY_RECORDS`]). A blocking read of the trail's files: call it off the HTTP
    /// workers.
    pub fn read(&self, key: Option<&str>, since: Option<&str>, limit: usize) -> Vec<Value> {
        self.settle();
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

impl Audit {
    /// The newest `limit` records, oldest first, from the end of the newest file only (its
    /// last [`TAIL_BYTES`]): a cheap read for a page that polls, where [`Audit::read`] would
    /// read every file each time. Right after the trail moves on to a new file, it may show
    /// fewer. A blocking read: call it off the HTTP workers.
    pub fn tail(&self, limit: usize) -> Vec<Value> {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut file) = File::open(segment(&self.path, 0)) else {
            return Vec::new();
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let start = len.saturating_sub(TAIL_BYTES);
        let mut text = Vec::new();
        if file.seek(SeekFrom::Start(start)).is_err()
            || file.take(TAIL_BYTES).read_to_end(&mut text).is_err()
        {
            return Vec::new();
        }
        let text = String::from_utf8_lossy(&text);
        let mut lines: Vec<&str> = text.lines().collect();
        if start > 0 && !lines.is_empty() {
            // The first line was cut by the seek.
            lines.remove(0);
        }
        let from = lines.len().saturating_sub(limit.min(MAX_QUERY_RECORDS));
        lines[from..]
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

/// How much of the newest audit file [`Audit::tail`] reads.
pub const TAIL_BYTES: u64 = 256 * 1024;

/// The writer thread's state.
struct Writer {
    path: PathBuf,
    segment_bytes: u64,
    written: u64,
    file: File,
    queued: Arc<AtomicUsize>,
    /// Records written so far.
    records: Arc<AtomicU64>,
}

impl Writer {
    /// Appends batches as they come (a query waits for those queued before it) and makes them durable
    /// on a schedule: at most [`SYNC_INTERVAL`] after they were written, before a rotation,
    /// and when the trail closes.
    fn run(mut self, rx: mpsc::Receiver<Vec<u8>>) {
        let mut unsynced: Option<Instant> = None;
        loop {
            let next = match unsynced {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(since) => rx.recv_timeout(SYNC_INTERVAL.saturating_sub(since.elapsed())),
            };
            match next {
                Ok(first) if first.is_empty() => {
                    self.clear();
                    unsynced = None;
                }
                Ok(first) => {
                    if self.append(first, &rx) {
                        self.clear();
                    }
                    unsynced.get_or_insert_with(Instant::now);
                    std::thread::sleep(BATCH_PAUSE);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.sync();
                    return;
                }
            }
            if unsynced.is_some_and(|since| since.elapsed() >= SYNC_INTERVAL) {
                self.sync();
                unsynced = None;
            }
            if self.written >= self.segment_bytes {
                self.sync();
                unsynced = None;
                if let Err(e) = self.rotate() {
                    tracing::error!(error = %e, "cannot rotate the audit trail");
                }
            }
        }
    }

    /// Writes `first` and whatever else is queued, as one batch; true if a sign to clear the
    /// trail ended the batch (the caller clears it, after this batch).
    fn append(&mut self, first: Vec<u8>, rx: &mpsc::Receiver<Vec<u8>>) -> bool {
        let mut buf = first;
        let mut clear = false;
        let mut records = 1;
        // A batch fills at most the room left in the current file (and 1 MiB), so a file
        // passes its share of the cap by one record at most.
        let room = self
            .segment_bytes
            .saturating_sub(self.written)
            .min(1024 * 1024) as usize;
        while buf.len() < room {
            match rx.try_recv() {
                Ok(next) if next.is_empty() => {
                    clear = true;
                    break;
                }
                Ok(next) => {
                    buf.extend_from_slice(&next);
                    records += 1;
                }
                Err(_) => break,
            }
        }
        self.queued.fetch_sub(buf.len(), Ordering::SeqCst);
        if let Err(e) = self.file.write_all(&buf) {
            tracing::error!(error = %e, path = %self.path.display(), "cannot append to the audit trail");
        }
        self.written += buf.len() as u64;
        self.records.fetch_add(records, Ordering::SeqCst);
        clear
    }

    /// Empties every file of the trail; counts the sign to clear as written.
    fn clear(&mut self) {
        let result = (|| -> std::io::Result<()> {
            for n in 1..SEGMENTS {
                let path = segment(&self.path, n);
                if path.exists() {
                    std::fs::remove_file(path)?;
                }
            }
            self.file.set_len(0)?;
            self.file.sync_all()
        })();
        if let Err(e) = result {
            tracing::error!(error = %e, path = %self.path.display(), "cannot clear the audit trail");
        }
        self.written = 0;
        self.records.fetch_add(1, Ordering::SeqCst);
    }

    fn sync(&mut self) {
        if let Err(e) = self.file.sync_data() {
            tracing::error!(error = %e, path = %self.path.display(), "cannot sync the audit trail");
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

/// A CloudTrail-like record of one API call, written straight from what the call has (its
/// parameters borrowed from the body, its answer) without building a JSON tree.
#[derive(Debug)]
pub struct ApiCall<'a> {
    pub event_time: String,
    pub event_name: &'a str,
    pub request_id: &'a str,
    /// CloudTrail's `eventID`: what GetKeyLastUsage names as `CloudTrailEventId`.
    pub event_id: &'a str,
    /// `None` for operations this emulator does not serve and bodies that are not objects.
    pub request: Option<&'a Parameters<'a>>,
    /// The answer, or the error's type and message.
    pub result: Result<&'a Value, (&'static str, String)>,
    pub additional: Option<Value>,
    /// Written as `{"truncated": true}` in place of parameters, elements and additional data,
    /// with the error message cut to 4 KiB.
    pub truncated: bool,
}

impl Serialize for ApiCall<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let truncated = serde_json::json!({"truncated": true});
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("eventVersion", "1.08")?;
        map.serialize_entry("eventSource", "kms.amazonaws.com")?;
        map.serialize_entry("eventType", "AwsApiCall")?;
        map.serialize_entry("eventName", self.event_name)?;
        map.serialize_entry("eventTime", &self.event_time)?;
        map.serialize_entry("requestID", self.request_id)?;
        map.serialize_entry("eventID", self.event_id)?;
        if self.truncated {
            map.serialize_entry("requestParameters", &truncated)?;
            map.serialize_entry("responseElements", &truncated)?;
        } else {
            map.serialize_entry("requestParameters", &self.request)?;
            map.serialize_entry(
                "responseElements",
                &self.result.as_ref().ok().map(|v| Scrubbed(v)),
            )?;
        }
        if let Err((code, message)) = &self.result {
            map.serialize_entry("errorCode", code)?;
            // A message can quote a member as sent (a validation error): a truncated record
            // keeps its first 4 KiB.
            let mut end = message.len();
            if self.truncated && end > MAX_PARAMETER_BYTES {
                end = MAX_PARAMETER_BYTES;
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
            }
            map.serialize_entry("errorMessage", &message[..end])?;
        }
        match (&self.additional, self.truncated) {
            (Some(_), true) => map.serialize_entry("additionalEventData", &truncated)?,
            (Some(extra), false) => map.serialize_entry("additionalEventData", extra)?,
            (None, _) => {}
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_scrubbed_at_the_top_level_only() {
        // An encryption context's keys are the caller's names, not KMS's secret members.
        let mut v = json!({"KeyId": "k", "Plaintext": "c2VjcmV0", "EncryptionContext": {"Message": "m", "Mac": "x"}});
        scrub(&mut v);
        assert_eq!(
            v,
            json!({"KeyId": "k", "EncryptionContext": {"Message": "m", "Mac": "x"}})
        );
        let response =
            json!({"KeyId": "k", "Plaintext": "c2VjcmV0", "Tags": [{"TagKey": "Plaintext"}]});
        assert_eq!(
            serde_json::to_value(Scrubbed(&response)).unwrap(),
            json!({"KeyId": "k", "Tags": [{"TagKey": "Plaintext"}]})
        );
    }

    #[test]
    fn metrics_render_the_pending_deletion_counter() {
        let m = Metrics::default();
        m.count_pending_deletion_error();
        m.count_request(crate::api::kms::operation_index("Encrypt"));
        let text = m.render();
        assert!(text.contains("KMSKeyPendingDeletionErrorCount 1\n"));
        assert!(text.contains("hsmkms_requests_total{operation=\"Encrypt\"} 1\n"));
    }

    #[test]
    fn unknown_operations_share_one_label_and_labels_are_escaped() {
        let m = Metrics::default();
        m.count_request(crate::api::kms::operation_index("Encrypt"));
        m.count_request(crate::api::kms::operation_index("\"} 1e99 #"));
        m.count_request(crate::api::kms::operation_index("Nope"));
        let text = m.render();
        assert!(text.contains("hsmkms_requests_total{operation=\"Encrypt\"} 1\n"));
        assert!(text.contains("hsmkms_requests_total{operation=\"Other\"} 2\n"));
        assert!(!text.contains("1e99"));
        m.count_error("a\"b\\c\nd");
        assert!(m
            .render()
            .contains("hsmkms_errors_total{type=\"a\\\"b\\\\c\\nd\"} 1\n"));
    }

    #[test]
    fn request_parameters_are_bounded_and_secret_free() {
        let big = "x".repeat(10_000);
        let body = json!({"KeyId": "k", "Plaintext": "c2VjcmV0", "Policy": big}).to_string();
        let recorded =
            |body: &[u8]| serde_json::to_value(Parameters::of(body)).unwrap_or(Value::Null);
        let p = recorded(body.as_bytes());
        assert_eq!(p["KeyId"], "k");
        assert!(p.get("Plaintext").is_none());
        assert_eq!(p["Policy"], "(10002 bytes, not recorded)");
        // Secrets are members of the request itself; what a member holds is the caller's.
        let nested = json!({"EncryptionContext": {"Message": "m", "CiphertextBlob": "n"}, "Message": "c2VjcmV0", "Esc": "a\"b"});
        let p = recorded(nested.to_string().as_bytes());
        assert_eq!(
            p,
            json!({"EncryptionContext": {"Message": "m", "CiphertextBlob": "n"}, "Esc": "a\"b"})
        );
        assert_eq!(
            Parameters::of(nested.to_string().as_bytes())
                .and_then(|p| p.str("Esc"))
                .as_deref(),
            Some("a\"b")
        );
        let many: serde_json::Map<String, Value> =
            (0..1000).map(|i| (format!("m{i:04}"), json!(i))).collect();
        let p = recorded(Value::Object(many).to_string().as_bytes());
        assert_eq!(p.as_object().unwrap().len(), MAX_PARAMETERS);
        assert_eq!(recorded(b"not json"), Value::Null);
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
