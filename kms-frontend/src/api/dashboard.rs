//! The dashboard at `/_hsmkms/ui`: one HTML page, rendered on the server, showing the cluster
//! (HSMs and subnets by Availability Zone, reachable or not, their object counts and whether
//! they agree with their peers), the faults in force, the key stores, the keys of every Region
//! and account and their deletion countdowns, orphaned material and the backups that hold it,
//! and the audit trail's tail, with controls that call the control API (`POST /_hsmkms/clock`,
//! `POST /_hsmkms/faults`).
//!
//! The keys of one Region and account are chosen with `?keys=<region>/<account>` (links on the
//! page, with each one's count); without it every key is listed, Region and account first.
//!
//! Templates are askama's: compiled and type-checked with the crate (a template that names a
//! field the view lacks does not build), HTML-escaped by default, no template files to ship
//! beside the binary. The page polls `/_hsmkms/ui/live` every second or so for the live part,
//! rendered by the same template, so no value ever reaches the page without going through its
//! escaping; `/_hsmkms/ui/state` gives the same view as JSON. Nothing is fetched from outside
//! and there is no front-end build: the page's script is a few lines of plain JavaScript.
//!
//! No key material and no password is on the page: the view is built from records without
//! them (ids, states, labels, handles, counts, times), and audit records show only their
//! time, operation, key and error code.
//!
//! An HSM that is down or stalled costs the page at most [`STATUS_DEADLINE`] (every HSM is
//! asked at once), and the orphan report at most [`ORPHANS_DEADLINE`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use hsmkms_common::client::NodeClient;
use hsmkms_common::wire::{NodeStatus, Request, Response};
use serde::Serialize;
use serde_json::Value;

use crate::cluster::{ClusterDirectory, HsmState};
use crate::frontend::{iso8601, Frontend};

/// How long one HSM may take to connect and tell its status before the page shows it
/// unreachable.
pub const STATUS_DEADLINE: Duration = Duration::from_secs(1);
/// How long the orphan report (which reads the cluster's key objects) may take before the page
/// says it could not be read this time.
pub const ORPHANS_DEADLINE: Duration = Duration::from_secs(3);
/// Most keys listed (of the Region and account chosen, or of all); the page says how many more
/// there are.
pub const MAX_KEYS_SHOWN: usize = 200;
/// Most Region and account links above the keys; the rest are counted.
pub const MAX_SCOPES_SHOWN: usize = 50;
/// Most backups listed.
pub const MAX_BACKUPS_SHOWN: usize = 100;
/// Audit records in the tail.
pub const AUDIT_TAIL: usize = 15;

/// Who a fault action applies to, and so where its control goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Target {
    /// A button on each HSM's row; the request carries its `hsmId`.
    Hsm,
    /// A button on each Availability Zone's subnet; the request carries its `subnetId`.
    Subnet,
    /// A button in the frontend's fault panel.
    Frontend,
}

/// One action of `POST /_hsmkms/faults`, as the page offers it. New actions need only a line
/// in [`FAULT_ACTIONS`].
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FaultAction {
    /// The `action` sent.
    pub action: &'static str,
    /// The button's text.
    pub label: &'static str,
    pub target: Target,
    /// A whole-number parameter and its default (`count`, `seconds`), read from an input.
    pub param: Option<(&'static str, u64)>,
    /// What it does, shown as the button's title.
    pub help: &'static str,
    /// Asks before sending: the action ends the emulator's process.
    pub confirm: bool,
}

/// The fault actions the page offers, in the order shown.
pub const FAULT_ACTIONS: &[FaultAction] = &[
    FaultAction {
        action: "stop",
        label: "stop",
        target: Target::Hsm,
        param: None,
        help: "The HSM fails: DEGRADED and unreachable.",
        confirm: false,
    },
    FaultAction {
        action: "start",
        label: "start",
        target: Target::Hsm,
        param: None,
        help: "A stopped HSM comes back.",
        confirm: false,
    },
    FaultAction {
        action: "stall",
        label: "stall",
        target: Target::Hsm,
        param: None,
        help: "The HSM stays ACTIVE and connected but answers nothing (as under SIGSTOP).",
        confirm: false,
    },
    FaultAction {
        action: "resume",
        label: "resume",
        target: Target::Hsm,
        param: None,
        help: "A stalled HSM runs again.",
        confirm: false,
    },
    FaultAction {
        action: "cut-network",
        label: "cut network",
        target: Target::Hsm,
        param: None,
        help: "KMS cannot reach the HSM: its sessions drop, a connect gets NETWORK_ERRORS.",
        confirm: false,
    },
    FaultAction {
        action: "restore-network",
        label: "restore network",
        target: Target::Hsm,
        param: None,
        help: "KMS reaches the HSM again.",
        confirm: false,
    },
    FaultAction {
        action: "delete-subnet",
        label: "delete subnet",
        target: Target::Subnet,
        param: None,
        help: "The subnet is deleted: a connect gets SUBNET_NOT_FOUND, CreateHsm in this zone is refused.",
        confirm: false,
    },
    FaultAction {
        action: "restore-subnet",
        label: "restore subnet",
        target: Target::Subnet,
        param: None,
        help: "The deleted subnet exists again.",
        confirm: false,
    },
    FaultAction {
        action: "exhaust-subnet",
        label: "exhaust subnet",
        target: Target::Subnet,
        param: None,
        help: "The subnet has no free address: a connect gets INSUFFICIENT_FREE_ADDRESSES_IN_SUBNET, CreateHsm in this zone is refused.",
        confirm: false,
    },
    FaultAction {
        action: "free-subnet",
        label: "free subnet",
        target: Target::Subnet,
        param: None,
        help: "The subnet has free addresses again.",
        confirm: false,
    },
    FaultAction {
        action: "fail-connects",
        label: "fail connects",
        target: Target::Frontend,
        param: None,
        help: "KMS fails internally on connect: INTERNAL_ERROR.",
        confirm: false,
    },
    FaultAction {
        action: "heal-connects",
        label: "heal connects",
        target: Target::Frontend,
        param: None,
        help: "Connects no longer fail internally.",
        confirm: false,
    },
    FaultAction {
        action: "clear",
        label: "clear all faults",
        target: Target::Frontend,
        param: None,
        help: "Reverts every fault in force (HSMs, network, subnets, connects, commits).",
        confirm: false,
    },
    FaultAction {
        action: "fail-commits",
        label: "fail commits",
        target: Target::Frontend,
        param: Some(("count", 1)),
        help: "The frontend's next commits fail, as on a disk that refuses writes (0 clears).",
        confirm: false,
    },
    FaultAction {
        action: "stall-commits",
        label: "stall commits",
        target: Target::Frontend,
        param: Some(("seconds", 5)),
        help: "The frontend's commits hang this many seconds.",
        confirm: false,
    },
    FaultAction {
        action: "crash-after-deletion-commit",
        label: "crash after next deletion commit",
        target: Target::Frontend,
        param: None,
        help: "The process dies right after the next key deletion is durable.",
        confirm: true,
    },
    FaultAction {
        action: "crash-during-hsm-create",
        label: "crash during next HSM create",
        target: Target::Frontend,
        param: None,
        help: "The process dies once the next new HSM serves, before it is recorded ACTIVE.",
        confirm: true,
    },
    FaultAction {
        action: "crash-during-hsm-delete",
        label: "crash during next HSM delete",
        target: Target::Frontend,
        param: None,
        help: "The process dies during the next DeleteHsm.",
        confirm: true,
    },
];

/// Clock advances offered as one-click buttons: label and seconds.
pub const CLOCK_STEPS: &[(&str, u64)] = &[
    ("+1 hour", 3600),
    ("+1 day", 86_400),
    ("+7 days", 7 * 86_400),
    ("+30 days", 30 * 86_400),
];

/// Everything the page shows, built fresh for each request.
#[derive(Debug, Serialize)]
pub struct View {
    pub now: String,
    pub offset: String,
    pub clusters: Vec<ClusterRow>,
    /// The faults in force, as `GET /_hsmkms/faults` lists them.
    pub faults: Vec<FaultRow>,
    pub stores: Vec<StoreRow>,
    /// Every Region and account that has keys, with their counts, and whether it is chosen.
    pub key_scopes: Vec<ScopeRow>,
    /// Regions and accounts with keys not linked past [`MAX_SCOPES_SHOWN`].
    pub key_scopes_more: usize,
    /// The Region and account chosen (`<region>/<account>`), or empty for every key.
    pub keys_scope: String,
    /// Keys in every Region and account.
    pub keys_total: usize,
    /// The keys listed: of the chosen Region and account, or all.
    pub keys: Vec<KeyRow>,
    /// Keys of the choice not listed past [`MAX_KEYS_SHOWN`].
    pub keys_more: usize,
    pub orphans: Vec<OrphanCluster>,
    pub backups: Vec<BackupRow>,
    pub backups_more: usize,
    pub audit: Vec<AuditRow>,
}

#[derive(Debug, Serialize)]
pub struct ClusterRow {
    pub cluster_id: String,
    pub state: String,
    pub zones: Vec<ZoneRow>,
}

#[derive(Debug, Serialize)]
pub struct ZoneRow {
    pub zone: String,
    /// The cluster's subnet in the zone, or empty (an HSM in a zone the mapping lacks).
    pub subnet_id: String,
    /// The subnet faults in force on it.
    pub subnet_deleted: bool,
    pub subnet_full: bool,
    pub hsms: Vec<HsmRow>,
}

/// One fault in force, with the action that reverts it.
#[derive(Debug, Serialize)]
pub struct FaultRow {
    pub action: String,
    /// The HSM or subnet it acts on, or empty (a fault of the frontend).
    pub hsm_id: String,
    pub subnet_id: String,
    pub produces: String,
    pub cleared_by: String,
    /// What is left of a timed stall, or empty.
    pub remaining: String,
}

/// A Region and account that has keys, as the page links it.
#[derive(Debug, Serialize)]
pub struct ScopeRow {
    /// `<region>/<account>`, as `?keys=` takes it.
    pub scope: String,
    /// The link's query, percent-encoded.
    pub query: String,
    pub keys: usize,
    pub chosen: bool,
}

#[derive(Debug, Serialize)]
pub struct HsmRow {
    pub hsm_id: String,
    pub state: String,
    pub address: String,
    pub reachable: bool,
    /// Why it is not reachable, or empty.
    pub problem: String,
    /// Key objects and users, as the HSM reports them; empty when unreachable.
    pub keys: String,
    pub users: String,
    /// `in sync`, `out of sync` or `unknown`.
    pub sync: &'static str,
    /// Why it is out of sync, or empty.
    pub sync_note: String,
}

#[derive(Debug, Serialize)]
pub struct StoreRow {
    pub id: String,
    pub name: String,
    pub cluster_id: String,
    pub state: &'static str,
    pub error_code: &'static str,
}

#[derive(Debug, Serialize)]
pub struct KeyRow {
    /// As KMS shows it (`mrk-...` for a multi-Region key).
    pub key_id: String,
    pub region: String,
    pub account_id: String,
    pub state: &'static str,
    pub origin: &'static str,
    pub store_id: String,
    /// The deletion date (ISO 8601, emulator clock), or empty.
    pub deletion_date: String,
    /// Time left until it, as `6d 23h 59m 58s`, or empty.
    pub deletion_in: String,
    /// Backups that still hold the key's material.
    pub backups: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct OrphanCluster {
    pub cluster_id: String,
    /// Why the cluster's objects could not be read, or empty.
    pub error: String,
    pub orphans: Vec<OrphanRow>,
}

#[derive(Debug, Serialize)]
pub struct OrphanRow {
    pub handle: String,
    pub label: String,
    pub backups: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct BackupRow {
    pub backup_id: String,
    pub region: String,
    pub cluster_id: String,
    pub state: &'static str,
    pub created: String,
    pub keys: usize,
}

#[derive(Debug, Serialize)]
pub struct AuditRow {
    pub time: String,
    pub name: String,
    pub key: String,
    pub error: String,
}

/// `6d 23h 59m 58s` for a span of milliseconds.
pub fn countdown(millis: u64) -> String {
    let s = millis / 1000;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h {m}m {s}s")
    } else {
        format!("{h}h {m}m {s}s")
    }
}

/// What one HSM said, or why it said nothing.
async fn status_of(
    address: String,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<NodeStatus, String> {
    let tls = tls.ok_or("no client credentials for its cluster")?;
    if address.is_empty() {
        return Err("no address".into());
    }
    let ask = async {
        let client = NodeClient::connect(&address, tls, STATUS_DEADLINE)
            .await
            .map_err(|e| e.to_string())?;
        match client.call(Request::Status, STATUS_DEADLINE).await {
            Ok(Response::Status(status)) => Ok(status),
            Ok(_) => Err("unexpected answer".to_string()),
            Err(e) => Err(e.to_string()),
        }
    };
    // Connect and call each have the deadline; the whole is bounded too.
    tokio::time::timeout(STATUS_DEADLINE * 2, ask)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {STATUS_DEADLINE:?}")))
}

/// The cluster rows: every HSM asked for its status at once.
async fn cluster_rows(fe: &Frontend) -> Vec<ClusterRow> {
    let clusters = fe.clusters.clusters();
    let mut asks = Vec::new();
    for c in &clusters {
        let tls = fe.clusters.client_tls(&c.cluster_id);
        for h in &c.hsms {
            let deleted = matches!(h.state, HsmState::Deleted);
            let (address, tls) = (h.address.clone(), tls.clone());
            asks.push(async move {
                if deleted {
                    Err("deleted".to_string())
                } else {
                    status_of(address, tls).await
                }
            });
        }
    }
    let mut answers = futures::future::join_all(asks).await.into_iter();
    let mut rows = Vec::new();
    for c in clusters {
        let statuses: Vec<Result<NodeStatus, String>> = c
            .hsms
            .iter()
            .map(|_| answers.next().unwrap_or(Err("not asked".into())))
            .collect();
        // What the reachable HSMs agree on: the most keys and users any of them holds.
        let reached: Vec<&NodeStatus> = statuses.iter().filter_map(|s| s.as_ref().ok()).collect();
        let most_keys = reached.iter().map(|s| s.key_count).max().unwrap_or(0);
        let most_users = reached.iter().map(|s| s.user_count).max().unwrap_or(0);
        let mut zones: BTreeMap<String, Vec<HsmRow>> = c
            .subnet_mapping
            .iter()
            .map(|(zone, _)| (zone.clone(), Vec::new()))
            .collect();
        let subnets: BTreeMap<&str, &str> = c
            .subnet_mapping
            .iter()
            .map(|(zone, subnet)| (zone.as_str(), subnet.as_str()))
            .collect();
        for (h, status) in c.hsms.iter().zip(statuses.iter()) {
            let row = match status {
                Ok(s) => {
                    let peers: Vec<&str> = reached
                        .iter()
                        .map(|p| p.hsm_id.as_str())
                        .filter(|id| *id != s.hsm_id)
                        .collect();
                    let unlinked: Vec<&str> = peers
                        .iter()
                        .copied()
                        .filter(|id| !s.connected_peers.iter().any(|p| p == id))
                        .collect();
                    let mut notes = Vec::new();
                    if s.key_count < most_keys {
                        notes.push(format!("{} keys, a peer has {most_keys}", s.key_count));
                    }
                    if s.user_count < most_users {
                        notes.push(format!("{} users, a peer has {most_users}", s.user_count));
                    }
                    if !unlinked.is_empty() {
                        notes.push(format!("no link to {}", unlinked.join(", ")));
                    }
                    if let Some(why) = &s.storage_failing {
                        notes.push(format!("storage failing: {why}"));
                    }
                    HsmRow {
                        hsm_id: h.hsm_id.clone(),
                        state: h.state.as_str().to_string(),
                        address: h.address.clone(),
                        reachable: true,
                        problem: String::new(),
                        keys: s.key_count.to_string(),
                        users: s.user_count.to_string(),
                        sync: if notes.is_empty() {
                            "in sync"
                        } else {
                            "out of sync"
                        },
                        sync_note: notes.join("; "),
                    }
                }
                Err(why) => HsmRow {
                    hsm_id: h.hsm_id.clone(),
                    state: h.state.as_str().to_string(),
                    address: h.address.clone(),
                    reachable: false,
                    problem: why.clone(),
                    keys: String::new(),
                    users: String::new(),
                    sync: "unknown",
                    sync_note: String::new(),
                },
            };
            zones
                .entry(h.availability_zone.clone())
                .or_default()
                .push(row);
        }
        let zones = zones
            .into_iter()
            .map(|(zone, hsms)| {
                let subnet_id = subnets.get(zone.as_str()).copied().unwrap_or_default();
                ZoneRow {
                    subnet_deleted: fe.faults.subnet_deleted(subnet_id),
                    subnet_full: fe.faults.subnet_full(subnet_id),
                    subnet_id: subnet_id.to_string(),
                    zone,
                    hsms,
                }
            })
            .collect();
        rows.push(ClusterRow {
            cluster_id: c.cluster_id.clone(),
            state: c.state.clone(),
            zones,
        });
    }
    rows
}

/// The text of a JSON member, or empty.
fn text(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The query text of `?keys=` for a scope: unreserved characters and `/` as they are, the
/// rest percent-encoded (Region and account names come from clients' signatures).
fn query_value(scope: &str) -> String {
    scope
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The faults in force, each with what reverts it.
fn fault_rows(fe: &Frontend) -> Vec<FaultRow> {
    fe.faults
        .list()
        .iter()
        .map(|f| FaultRow {
            action: text(f, "/action"),
            hsm_id: text(f, "/hsmId"),
            subnet_id: text(f, "/subnetId"),
            produces: text(f, "/produces"),
            cleared_by: text(f, "/clearedBy"),
            remaining: f
                .get("remainingSeconds")
                .and_then(Value::as_u64)
                .map(|s| countdown(s * 1000))
                .unwrap_or_default(),
        })
        .collect()
}

/// What the page asks for: `?keys=<region>/<account>` chooses the keys of one Region and
/// account.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Choice {
    pub keys: Option<String>,
}

/// Builds the whole view. Never fails: what cannot be read says so in its place.
pub async fn view(fe: &Arc<Frontend>, choice: &Choice) -> View {
    let now = fe.now();
    let clusters = cluster_rows(fe).await;

    let backups: Vec<_> = fe
        .clusters
        .backups(None)
        .into_iter()
        .filter(|b| b.holds_data())
        .collect();
    let holding = |label: &str| -> Vec<String> {
        backups
            .iter()
            .filter(|b| b.keys.iter().any(|k| k.label == label))
            .map(|b| b.backup_id.clone())
            .collect()
    };

    let chosen = choice.keys.clone().unwrap_or_default();
    let (stores, keys, keys_more, key_scopes, keys_total) = {
        let reg = fe.registry();
        let stores: Vec<StoreRow> = reg
            .stores()
            .map(|s| StoreRow {
                id: s.id.clone(),
                name: s.name.clone(),
                cluster_id: s.cluster_id.clone(),
                state: s.state.as_str(),
                error_code: s.state.error_code().map(|c| c.as_str()).unwrap_or(""),
            })
            .collect();
        // Every key, whatever its Region and account (the page runs in no request's scope),
        // counted per Region and account; those of the choice listed in that order.
        let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        let mut listed: Vec<(&str, &str, &crate::service::model::KeyRecord)> = Vec::new();
        let mut total = 0;
        for (k, region, account) in reg.keys_everywhere() {
            total += 1;
            *counts.entry((region, account)).or_default() += 1;
            let in_choice = chosen.is_empty()
                || chosen
                    .split_once('/')
                    .is_some_and(|(r, a)| r == region && a == account);
            if in_choice {
                listed.push((region, account, k));
            }
        }
        let shown = MAX_KEYS_SHOWN.min(listed.len());
        if shown > 0 && shown < listed.len() {
            listed.select_nth_unstable_by_key(shown - 1, |(r, a, k)| (*r, *a, k.key_id));
        }
        let more = listed.len() - shown;
        listed.truncate(shown);
        listed.sort_unstable_by_key(|(r, a, k)| (*r, *a, k.key_id));
        let scopes: Vec<ScopeRow> = counts
            .iter()
            .map(|((region, account), n)| {
                let scope = format!("{region}/{account}");
                ScopeRow {
                    query: format!("?keys={}", query_value(&scope)),
                    chosen: scope == chosen,
                    scope,
                    keys: *n,
                }
            })
            .collect();
        let keys: Vec<KeyRow> = listed
            .into_iter()
            .map(|(region, account, k)| {
                let deletion = k.deletion.as_ref();
                KeyRow {
                    key_id: reg.key_id_text(&k.key_id),
                    region: region.to_string(),
                    account_id: account.to_string(),
                    state: reg.state_of(k).as_str(),
                    origin: k.origin.as_str(),
                    store_id: k.origin.store_id().unwrap_or_default().to_string(),
                    deletion_date: deletion
                        .map(|d| iso8601(d.deletion_date_millis))
                        .unwrap_or_default(),
                    deletion_in: deletion
                        .map(|d| countdown(d.deletion_date_millis.saturating_sub(now)))
                        .unwrap_or_default(),
                    backups: if k.origin.store_id().is_some() {
                        holding(&reg.key_arn(&k.key_id))
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect();
        (stores, keys, more, scopes, total)
    };
    let key_scopes_more = key_scopes.len().saturating_sub(MAX_SCOPES_SHOWN);
    // The chosen one stays linked even past the bound.
    let key_scopes: Vec<ScopeRow> = key_scopes
        .into_iter()
        .enumerate()
        .filter(|(i, s)| *i < MAX_SCOPES_SHOWN || s.chosen)
        .map(|(_, s)| s)
        .collect();

    let fe2 = fe.clone();
    let is_kms_key = move |label: &str| {
        label.starts_with("arn:") && fe2.registry().resolve(label, false).is_ok()
    };
    let orphans =
        match tokio::time::timeout(ORPHANS_DEADLINE, fe.clusters.orphans(is_kms_key)).await {
            Ok(report) => report
                .into_iter()
                .map(|(cluster_id, result)| match result {
                    Ok(keys) => OrphanCluster {
                        cluster_id,
                        error: String::new(),
                        orphans: keys
                            .into_iter()
                            .map(|k| OrphanRow {
                                handle: k.handle.to_string(),
                                backups: holding(&k.label),
                                label: k.label,
                            })
                            .collect(),
                    },
                    Err(error) => OrphanCluster {
                        cluster_id,
                        error,
                        orphans: Vec::new(),
                    },
                })
                .collect(),
            Err(_) => vec![OrphanCluster {
                cluster_id: "(every cluster)".into(),
                error: format!("not read within {ORPHANS_DEADLINE:?}"),
                orphans: Vec::new(),
            }],
        };

    let backup_rows: Vec<BackupRow> = backups
        .iter()
        .rev()
        .take(MAX_BACKUPS_SHOWN)
        .map(|b| BackupRow {
            backup_id: b.backup_id.clone(),
            region: b.region.clone(),
            cluster_id: b.cluster_id.clone().unwrap_or_default(),
            state: b.state.as_str(),
            created: iso8601(b.created_at_millis),
            keys: b.keys.len(),
        })
        .collect();

    let fe3 = fe.clone();
    let audit = web::block(move || fe3.audit.tail(AUDIT_TAIL))
        .await
        .unwrap_or_default()
        .iter()
        .rev()
        .map(|r| AuditRow {
            time: text(r, "/eventTime"),
            name: text(r, "/eventName"),
            // The records keep the request's and answer's member names, as AWS sends them.
            key: [
                "/requestParameters/KeyId",
                "/responseElements/KeyMetadata/KeyId",
                "/resources/0/ARN",
                "/requestParameters/CustomKeyStoreId",
                "/responseElements/CustomKeyStoreId",
            ]
            .iter()
            .map(|p| text(r, p))
            .find(|t| !t.is_empty())
            .unwrap_or_default(),
            error: text(r, "/errorCode"),
        })
        .collect();

    View {
        now: iso8601(now),
        offset: countdown(fe.clock.offset_millis()),
        clusters,
        faults: fault_rows(fe),
        stores,
        key_scopes,
        key_scopes_more,
        keys_scope: chosen,
        keys_total,
        keys,
        keys_more,
        orphans,
        backups_more: backups.len().saturating_sub(MAX_BACKUPS_SHOWN),
        backups: backup_rows,
        audit,
    }
}

/// The whole page.
#[derive(Template)]
#[template(path = "dashboard.html")]
struct Page<'a> {
    v: &'a View,
    hsm_actions: Vec<FaultAction>,
    subnet_actions: Vec<FaultAction>,
    frontend_actions: Vec<FaultAction>,
    clock_steps: &'static [(&'static str, u64)],
}

/// The part the page refreshes.
#[derive(Template)]
#[template(path = "dashboard_live.html")]
struct Live<'a> {
    v: &'a View,
    hsm_actions: Vec<FaultAction>,
    subnet_actions: Vec<FaultAction>,
}

fn actions(target: Target) -> Vec<FaultAction> {
    FAULT_ACTIONS
        .iter()
        .filter(|a| a.target == target)
        .copied()
        .collect()
}

fn html(rendered: Result<String, askama::Error>) -> HttpResponse {
    match rendered {
        Ok(body) => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header(("Cache-Control", "no-store"))
            .body(body),
        Err(e) => HttpResponse::InternalServerError()
            .content_type("text/plain; charset=utf-8")
            .body(format!("The dashboard could not be rendered: {e}")),
    }
}

/// The page's choice from the query; one it cannot read chooses nothing (every key).
fn choice_of(req: &HttpRequest) -> Choice {
    web::Query::<Choice>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default()
}

/// `GET /_hsmkms/ui`.
async fn page(fe: web::Data<Arc<Frontend>>, req: HttpRequest) -> HttpResponse {
    let v = view(&fe, &choice_of(&req)).await;
    html(
        Page {
            v: &v,
            hsm_actions: actions(Target::Hsm),
            subnet_actions: actions(Target::Subnet),
            frontend_actions: actions(Target::Frontend),
            clock_steps: CLOCK_STEPS,
        }
        .render(),
    )
}

/// `GET /_hsmkms/ui/live`: the live part alone, for the page's polling.
async fn live(fe: web::Data<Arc<Frontend>>, req: HttpRequest) -> HttpResponse {
    let v = view(&fe, &choice_of(&req)).await;
    html(
        Live {
            v: &v,
            hsm_actions: actions(Target::Hsm),
            subnet_actions: actions(Target::Subnet),
        }
        .render(),
    )
}

/// `GET /_hsmkms/ui/state`: the same view as JSON.
async fn state(fe: web::Data<Arc<Frontend>>, req: HttpRequest) -> HttpResponse {
    let v = view(&fe, &choice_of(&req)).await;
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(serde_json::json!({"view": v, "faultActions": FAULT_ACTIONS}))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ui", web::get().to(page))
        .route("/ui/live", web::get().to(live))
        .route("/ui/state", web::get().to(state));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countdowns_read_as_days_hours_minutes_seconds() {
        assert_eq!(countdown(0), "0h 0m 0s");
        assert_eq!(countdown(61_000), "0h 1m 1s");
        assert_eq!(countdown((7 * 86_400 - 2) * 1000), "6d 23h 59m 58s");
    }

    #[test]
    fn a_scope_query_keeps_names_and_encodes_the_rest() {
        assert_eq!(
            query_value("eu-west-1/111122223333"),
            "eu-west-1/111122223333"
        );
        assert_eq!(query_value("a&b c/1"), "a%26b%20c/1");
    }

    #[test]
    fn every_fault_action_is_unique_and_labelled() {
        let mut names: Vec<&str> = FAULT_ACTIONS.iter().map(|a| a.action).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FAULT_ACTIONS.len());
        assert!(FAULT_ACTIONS.iter().all(|a| !a.label.is_empty()));
    }
}
