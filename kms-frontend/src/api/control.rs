//! The emulator's control API under `/_hsmkms/`: health, the clock (read it, move it forward;
//! deletions that fall due run before the answer), the audit trail, metrics and events.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::error_response;
use crate::cluster::ClusterDirectory;
use crate::frontend::{epoch_seconds, iso8601, Frontend};
use crate::service::error::KmsError;

/// Longest a single clock advance may be: ten years, far past any waiting period.
const MAX_ADVANCE_SECONDS: u64 = 10 * 366 * 24 * 3600;

fn bad(message: String) -> HttpResponse {
    error_response(
        &KmsError::Validation(message),
        &uuid::Uuid::new_v4().to_string(),
    )
}

async fn health(fe: web::Data<Arc<Frontend>>) -> HttpResponse {
    let clusters = fe.clusters.clusters();
    // A cluster without HSMs (new, or emptied on purpose) is not a failure; one whose HSMs
    // are all down is.
    let clusters_serving = clusters
        .iter()
        .all(|c| c.hsms.is_empty() || !c.active_hsms().is_empty());
    // A store that cannot commit cannot acknowledge anything: not healthy, and why.
    let storage = fe.store.failing();
    let serving = clusters_serving && storage.is_none();
    let body = json!({
        "status": match (&storage, clusters_serving) {
            (Some(_), _) => "unhealthy",
            (None, false) => "degraded",
            (None, true) => "ok",
        },
        "storage": match &storage {
            Some(why) => json!({"status": "failing", "reason": why}),
            None => json!({"status": "ok"}),
        },
        "clusters": clusters.iter().map(|c| json!({
            "clusterId": c.cluster_id,
            "state": c.state,
            "activeHsms": c.active_hsms().len(),
        })).collect::<Vec<_>>(),
    });
    if serving {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

fn clock_body(fe: &Frontend) -> serde_json::Value {
    let now = fe.now();
    json!({
        "now": iso8601(now),
        "epochSeconds": epoch_seconds(now),
        "offsetSeconds": fe.clock.offset_millis() / 1000,
    })
}

async fn get_clock(fe: web::Data<Arc<Frontend>>) -> HttpResponse {
    HttpResponse::Ok().json(clock_body(&fe))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Advance {
    advance_seconds: Option<u64>,
}

/// Reads a control request's body with the same limits and deadline as the AWS endpoints.
async fn body_of(payload: web::Payload) -> Result<web::BytesMut, HttpResponse> {
    let id = uuid::Uuid::new_v4().to_string();
    match super::read_body(payload).await {
        Ok(body) => Ok(body),
        Err(super::BodyError::Late) => Err(super::late_body(&id)),
        Err(super::BodyError::Invalid(message)) => Err(bad(message)),
    }
}

async fn post_clock(fe: web::Data<Arc<Frontend>>, payload: web::Payload) -> HttpResponse {
    let body = match body_of(payload).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    let advance: Advance = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return bad(format!(
                "Expected {{\"advanceSeconds\": N}} with N a whole number of seconds: {e}"
            ))
        }
    };
    let Some(seconds) = advance.advance_seconds else {
        return bad("Expected {\"advanceSeconds\": N}.".into());
    };
    if seconds > MAX_ADVANCE_SECONDS {
        return bad(format!(
            "advanceSeconds must be at most {MAX_ADVANCE_SECONDS}."
        ));
    }
    if let Err(e) = fe.advance_clock(seconds * 1000).await {
        return error_response(&e, &uuid::Uuid::new_v4().to_string());
    }
    // The cluster's clockwork first: the daily backups of the days that passed are taken
    // before deletions that fell due in them.
    fe.clusters.run_due().await;
    let deleted = fe.run_due_deletions().await;
    let rotated = fe.run_due_rotations().await;
    let expired = fe.run_due_expirations().await;
    let mut body = clock_body(&fe);
    body["deletedKeys"] = json!(deleted);
    body["rotatedKeys"] = json!(rotated);
    body["expiredKeyMaterials"] = json!(expired);
    HttpResponse::Ok().json(body)
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    /// Only records naming this key id or ARN.
    key: Option<String>,
    /// Only records at or after this time: epoch seconds, or ISO 8601 as `eventTime` writes it.
    since: Option<String>,
    /// The newest this many (default 1,000, at most 10,000).
    limit: Option<usize>,
}

/// `GET /_hsmkms/audit[?key=][&since=][&limit=]`: read off the HTTP workers, bounded.
async fn audit(fe: web::Data<Arc<Frontend>>, query: web::Query<AuditQuery>) -> HttpResponse {
    let limit = query
        .limit
        .unwrap_or(1000)
        .min(crate::audit::MAX_QUERY_RECORDS);
    let since = match query.since.as_deref() {
        None => None,
        Some(s) => match s.parse::<f64>() {
            Ok(secs) if secs >= 0.0 => Some(iso8601((secs * 1000.0) as u64)),
            Ok(_) => return bad("since must not be negative.".into()),
            Err(_) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => Some(s.to_string()),
            Err(_) => {
                return bad(format!(
                    "since must be epoch seconds or an ISO 8601 time, not {s:?}."
                ))
            }
        },
    };
    let key = query.key.clone();
    let fe = fe.get_ref().clone();
    match web::block(move || fe.audit.read(key.as_deref(), since.as_deref(), limit)).await {
        Ok(records) => HttpResponse::Ok().json(json!({ "records": records })),
        Err(e) => error_response(
            &KmsError::KmsInternal(format!("The audit trail could not be read: {e}")),
            &uuid::Uuid::new_v4().to_string(),
        ),
    }
}

async fn metrics(fe: web::Data<Arc<Frontend>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(fe.metrics.render())
}

async fn events(fe: web::Data<Arc<Frontend>>) -> HttpResponse {
    let fe = fe.get_ref().clone();
    match web::block(move || fe.events(crate::audit::MAX_QUERY_RECORDS)).await {
        Ok(events) => HttpResponse::Ok().json(json!({ "events": events })),
        Err(e) => error_response(
            &KmsError::KmsInternal(format!("The events could not be read: {e}")),
            &uuid::Uuid::new_v4().to_string(),
        ),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Fault {
    /// The HSM of `stop` and `start`.
    hsm_id: Option<String>,
    /// `stop` (the HSM fails: DEGRADED, unreachable), `start` (it comes back), `stall` (it
    /// stays ACTIVE and connected but answers nothing, as under SIGSTOP), `resume` (it runs
    /// again and answers what it held, refusing what is past its deadline), or
    /// `fail-commits` (the frontend's next `count` commits fail, as on a disk that refuses
    /// writes), `stall-commits` (they hang for `seconds`), or `crash-after-deletion-commit`
    /// (the process dies right after the next key deletion is durable, before the HSMs hear of
    /// it), or `crash-during-hsm-create` (the process dies once the next new HSM serves, before
    /// it is recorded ACTIVE), or `crash-during-hsm-delete` (the process dies once the next
    /// deleted HSM's peers have forgotten it, before its removal is recorded).
    action: String,
    count: Option<u32>,
    /// `fail-commits` only: how many commits succeed before the failures start (default 0).
    after: Option<u32>,
    /// `stall-commits`: how long the frontend's commits hang, as on a disk that stops
    /// answering.
    seconds: Option<u64>,
}

/// Longest one `stall-commits` may hang the store.
const MAX_COMMIT_STALL_SECONDS: u64 = 600;

/// Most commits one `fail-commits` may fail.
const MAX_INJECTED_COMMIT_FAILURES: u32 = 1_000;

async fn fault(fe: web::Data<Arc<Frontend>>, payload: web::Payload) -> HttpResponse {
    let body = match body_of(payload).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    let fault: Fault = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return bad(format!(
                "Expected {{\"hsmId\": \"hsm-...\", \"action\": \"stop\"|\"start\"|\"stall\"|\"resume\"}} or {{\"action\": \"fail-commits\", \"count\": N}}: {e}"
            ))
        }
    };
    enum HsmFault {
        Running(bool),
        Stalled(bool),
    }
    let change = match fault.action.as_str() {
        "stop" => HsmFault::Running(false),
        "start" => HsmFault::Running(true),
        "stall" => HsmFault::Stalled(true),
        "resume" => HsmFault::Stalled(false),
        "crash-after-deletion-commit" => {
            fe.crash_after_deletion_commit
                .store(true, std::sync::atomic::Ordering::SeqCst);
            return HttpResponse::Ok().json(json!({"crashAfterDeletionCommit": true}));
        }
        "crash-during-hsm-create" => {
            fe.clusters
                .crash_during_hsm_create
                .store(true, std::sync::atomic::Ordering::SeqCst);
            return HttpResponse::Ok().json(json!({"crashDuringHsmCreate": true}));
        }
        "crash-during-hsm-delete" => {
            return match fe.clusters.crash_during_next_hsm_delete() {
                Ok(()) => HttpResponse::Ok().json(json!({"crashDuringHsmDelete": true})),
                Err(message) => bad(message),
            };
        }
        "stall-commits" => {
            let seconds = fault.seconds.unwrap_or(0);
            if seconds == 0 || seconds > MAX_COMMIT_STALL_SECONDS {
                return bad(format!(
                    "stall-commits needs seconds, from 1 to {MAX_COMMIT_STALL_SECONDS}."
                ));
            }
            fe.store
                .stall_commits(std::time::Duration::from_secs(seconds));
            return HttpResponse::Ok().json(json!({"stalledCommitsSeconds": seconds}));
        }
        "fail-commits" => {
            let count = fault.count.unwrap_or(1);
            let after = fault.after.unwrap_or(0);
            if count > MAX_INJECTED_COMMIT_FAILURES || after > MAX_INJECTED_COMMIT_FAILURES {
                return bad(format!(
                    "count and after must be at most {MAX_INJECTED_COMMIT_FAILURES}."
                ));
            }
            fe.store.fail_next_commits(count, after);
            return HttpResponse::Ok()
                .json(json!({"failingCommits": count, "failingAfter": after}));
        }
        other => {
            return bad(format!(
                "Unknown action {other:?}: use stop, start, stall, resume, fail-commits, stall-commits, crash-after-deletion-commit, crash-during-hsm-create or crash-during-hsm-delete."
            ))
        }
    };
    let Some(hsm_id) = fault.hsm_id else {
        return bad(format!("{} needs an hsmId.", fault.action));
    };
    let applied = match change {
        HsmFault::Running(running) => fe.clusters.set_hsm_running(&hsm_id, running).await,
        HsmFault::Stalled(stalled) => fe.clusters.set_hsm_stalled(&hsm_id, stalled).await,
    };
    match applied {
        Ok(()) => {
            let hsms: Vec<_> = fe
                .clusters
                .clusters()
                .iter()
                .flat_map(|c| c.hsms.clone())
                .map(|h| json!({"hsmId": h.hsm_id, "state": h.state.as_str()}))
                .collect();
            HttpResponse::Ok().json(json!({"hsms": hsms}))
        }
        Err(message) => bad(message),
    }
}

/// `GET /_hsmkms/orphans`: per cluster, the kmsuser-owned keys whose label names no KMS key.
async fn orphans(fe: web::Data<Arc<Frontend>>) -> HttpResponse {
    let fe2 = fe.clone();
    let is_kms_key = move |label: &str| {
        label.starts_with("arn:") && fe2.registry().resolve(label, false).is_ok()
    };
    let report = fe.clusters.orphans(is_kms_key).await;
    let clusters: Vec<_> = report
        .into_iter()
        .map(|(cluster_id, result)| match result {
            Ok(keys) => json!({
                "clusterId": cluster_id,
                "orphans": keys.iter().map(|k| json!({
                    "keyHandle": k.handle.to_string(),
                    "label": k.label,
                    "owner": k.owner,
                })).collect::<Vec<_>>(),
            }),
            Err(e) => json!({"clusterId": cluster_id, "error": e}),
        })
        .collect();
    HttpResponse::Ok().json(json!({"clusters": clusters}))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BackupQuery {
    contains_key: Option<String>,
}

/// `GET /_hsmkms/backups[?containsKey=<key ARN>]`: every backup in every Region that still
/// holds data, or only those holding that key's material.
async fn backups(fe: web::Data<Arc<Frontend>>, query: web::Query<BackupQuery>) -> HttpResponse {
    let listed: Vec<_> = fe
        .clusters
        .backups(None)
        .into_iter()
        .filter(|b| b.holds_data())
        .filter(|b| {
            query
                .contains_key
                .as_ref()
                .is_none_or(|arn| b.keys.iter().any(|k| &k.label == arn))
        })
        .map(|b| {
            json!({
                "backupId": b.backup_id,
                "region": b.region,
                "clusterId": b.cluster_id,
                "sourceCluster": b.source_cluster,
                "backupState": b.state.as_str(),
                "createTimestamp": iso8601(b.created_at_millis),
                "neverExpires": b.never_expires,
                "keys": b.keys.len(),
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({"backups": listed}))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reset {
    cluster: Option<bool>,
}

/// `POST /_hsmkms/reset`: KMS's state back to a fresh start (see [`Frontend::reset`]),
/// answered once that is durable, with how long it took.
async fn reset(fe: web::Data<Arc<Frontend>>, payload: web::Payload) -> HttpResponse {
    let body = match body_of(payload).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    let asked: Reset = if body.iter().all(u8::is_ascii_whitespace) {
        Reset::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return bad(format!("Expected {{}} or {{\"cluster\": false}}: {e}")),
        }
    };
    if asked.cluster == Some(true) {
        return bad(
            "A reset of the CloudHSM side ({\"cluster\": true}) is not supported yet: only KMS's state is reset.".into(),
        );
    }
    let started = std::time::Instant::now();
    if let Err(e) = fe.reset().await {
        return error_response(&e, &uuid::Uuid::new_v4().to_string());
    }
    HttpResponse::Ok().json(json!({
        "reset": "kms",
        "millis": started.elapsed().as_secs_f64() * 1000.0,
    }))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/clock", web::get().to(get_clock))
        .route("/clock", web::post().to(post_clock))
        .route("/audit", web::get().to(audit))
        .route("/metrics", web::get().to(metrics))
        .route("/events", web::get().to(events))
        .route("/faults", web::post().to(fault))
        .route("/reset", web::post().to(reset))
        .route("/orphans", web::get().to(orphans))
        .route("/backups", web::get().to(backups));
}
