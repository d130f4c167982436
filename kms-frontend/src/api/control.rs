//! The emulator's control API under `/_hsmkms/`: health, the clock (read it, move it forward;
//! deletions that fall due run before the answer), the audit trail, metrics and events, and
//! the faults (inject, list, clear).

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
    /// The HSM of `stop`, `start`, `stall`, `resume`, `cut-network` and `restore-network`.
    hsm_id: Option<String>,
    /// The subnet of `delete-subnet`, `restore-subnet`, `exhaust-subnet` and `free-subnet`.
    subnet_id: Option<String>,
    /// What to do; the README's "Faults" section lists every action, what it produces and
    /// what reverts it. `clear` reverts every fault in force.
    action: String,
    count: Option<u32>,
    /// `fail-commits` only: how many commits succeed before the failures start (default 0).
    after: Option<u32>,
    /// `stall-commits`: how long the frontend's commits hang, as on a disk that stops
    /// answering. `stall`: how long the HSM stalls before it answers again (for good
    /// without).
    seconds: Option<u64>,
}

/// Longest one `stall-commits` may hang the store.
const MAX_COMMIT_STALL_SECONDS: u64 = 600;

/// Longest one timed `stall` of an HSM may last.
const MAX_HSM_STALL_SECONDS: u64 = 600;

/// Most commits one `fail-commits` may fail.
const MAX_INJECTED_COMMIT_FAILURES: u32 = 1_000;

const ACTIONS: &str = "stop, start, stall, resume, cut-network, restore-network, delete-subnet, restore-subnet, exhaust-subnet, free-subnet, fail-connects, heal-connects, clear, fail-commits, stall-commits, crash-after-deletion-commit, crash-during-hsm-create or crash-during-hsm-delete";

fn too_many(_: crate::faults::TooMany) -> HttpResponse {
    bad(format!(
        "At most {} faults of one kind may be in force.",
        crate::faults::MAX_FAULTS
    ))
}

/// The HSMs of every cluster and the faults in force: what every fault action answers.
fn fault_answer(fe: &Frontend) -> HttpResponse {
    let hsms: Vec<_> = fe
        .clusters
        .clusters()
        .iter()
        .flat_map(|c| c.hsms.clone())
        .map(|h| json!({"hsmId": h.hsm_id, "state": h.state.as_str()}))
        .collect();
    HttpResponse::Ok().json(json!({"hsms": hsms, "faults": fe.faults.list()}))
}

/// `GET /_hsmkms/faults`: the faults in force.
async fn list_faults(fe: web::Data<Arc<Frontend>>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"faults": fe.faults.list()}))
}

/// Whether some cluster has this HSM.
fn hsm_exists(fe: &Frontend, hsm_id: &str) -> bool {
    fe.clusters
        .clusters()
        .iter()
        .any(|c| c.hsms.iter().any(|h| h.hsm_id == hsm_id))
}

/// Whether some cluster's subnet mapping names this subnet.
fn subnet_exists(fe: &Frontend, subnet_id: &str) -> bool {
    fe.clusters
        .clusters()
        .iter()
        .any(|c| c.subnet_mapping.iter().any(|(_, s)| s == subnet_id))
}

/// Stalls an HSM; with `seconds`, it answers again once they have passed (unless a later
/// stall or a resume took over).
async fn stall_hsm(fe: &Arc<Frontend>, hsm_id: &str, seconds: Option<u64>) -> HttpResponse {
    if let Some(s) = seconds {
        if s == 0 || s > MAX_HSM_STALL_SECONDS {
            return bad(format!(
                "stall takes seconds from 1 to {MAX_HSM_STALL_SECONDS} (or none: until resume)."
            ));
        }
    }
    if let Err(message) = fe.clusters.set_hsm_stalled(hsm_id, true).await {
        return bad(message);
    }
    let duration = seconds.map(std::time::Duration::from_secs);
    let until = duration.map(|d| std::time::Instant::now() + d);
    let token = match fe.faults.stall(hsm_id, until) {
        Ok(t) => t,
        Err(e) => {
            let _ = fe.clusters.set_hsm_stalled(hsm_id, false).await;
            return too_many(e);
        }
    };
    if let Some(d) = duration {
        let fe = fe.clone();
        let hsm_id = hsm_id.to_string();
        actix_web::rt::spawn(async move {
            tokio::time::sleep(d).await;
            if fe.faults.resume(&hsm_id, Some(token)) {
                if let Err(e) = fe.clusters.set_hsm_stalled(&hsm_id, false).await {
                    tracing::warn!(%hsm_id, error = %e, "cannot end the HSM's timed stall");
                }
            }
        });
    }
    fault_answer(fe)
}

/// Reverts every fault in force: stopped HSMs start, stalled ones run, the network and the
/// subnets are whole again, connects and commits work.
async fn clear_faults(fe: &Arc<Frontend>) -> HttpResponse {
    let (stopped, stalled) = fe.faults.clear();
    let mut errors = Vec::new();
    for hsm_id in stalled {
        if let Err(e) = fe.clusters.set_hsm_stalled(&hsm_id, false).await {
            errors.push(e);
        }
    }
    for hsm_id in stopped {
        if let Err(e) = fe.clusters.set_hsm_running(&hsm_id, true).await {
            errors.push(e);
        }
    }
    fe.store.stall_commits(std::time::Duration::ZERO);
    fe.store.fail_next_commits(0, 0);
    if errors.is_empty() {
        fault_answer(fe)
    } else {
        error_response(
            &KmsError::KmsInternal(format!(
                "Some faults could not be cleared: {}",
                errors.join("; ")
            )),
            &uuid::Uuid::new_v4().to_string(),
        )
    }
}

async fn fault(fe: web::Data<Arc<Frontend>>, payload: web::Payload) -> HttpResponse {
    let body = match body_of(payload).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    let fault: Fault = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return bad(format!(
                "Expected {{\"action\": \"...\"}} with hsmId, subnetId, seconds, count or after as the action needs: {e}"
            ))
        }
    };
    let fe = fe.get_ref();
    // A reset of the clusters waits for the fault, or the fault for the reset: never one
    // recorded against HSMs the reset removed.
    let _pass = fe.clusters.enter().await;
    let action = fault.action.as_str();
    match action {
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
        "fail-connects" | "heal-connects" => {
            fe.faults.set_connects_fail(action == "fail-connects");
            return fault_answer(fe);
        }
        "clear" => return clear_faults(fe).await,
        "delete-subnet" | "restore-subnet" | "exhaust-subnet" | "free-subnet" => {
            let Some(subnet_id) = fault.subnet_id else {
                return bad(format!("{action} needs a subnetId."));
            };
            let faulting = matches!(action, "delete-subnet" | "exhaust-subnet");
            if faulting && !subnet_exists(fe, &subnet_id) {
                return bad(format!("No cluster has a subnet {subnet_id}."));
            }
            let done = if matches!(action, "delete-subnet" | "restore-subnet") {
                fe.faults.set_subnet_deleted(&subnet_id, faulting)
            } else {
                fe.faults.set_subnet_full(&subnet_id, faulting)
            };
            return match done {
                Ok(()) => fault_answer(fe),
                Err(e) => too_many(e),
            };
        }
        "stop" | "start" | "stall" | "resume" | "cut-network" | "restore-network" => {}
        other => return bad(format!("Unknown action {other:?}: use {ACTIONS}.")),
    }
    let Some(hsm_id) = fault.hsm_id else {
        return bad(format!("{action} needs an hsmId."));
    };
    let applied = match action {
        "stop" | "start" => {
            let running = action == "start";
            match fe.clusters.set_hsm_running(&hsm_id, running).await {
                Ok(()) => fe.faults.set_stopped(&hsm_id, !running).map_err(|_| {
                    format!(
                        "At most {} faults of one kind may be in force.",
                        crate::faults::MAX_FAULTS
                    )
                }),
                Err(e) => Err(e),
            }
        }
        "stall" => return stall_hsm(fe, &hsm_id, fault.seconds).await,
        "resume" => {
            let resumed = fe.clusters.set_hsm_stalled(&hsm_id, false).await;
            fe.faults.resume(&hsm_id, None);
            resumed
        }
        _ => {
            let cut = action == "cut-network";
            if cut && !hsm_exists(fe, &hsm_id) {
                Err(format!("No cluster has an HSM {hsm_id}."))
            } else {
                fe.faults.set_cut(&hsm_id, cut).map_err(|_| {
                    format!(
                        "At most {} faults of one kind may be in force.",
                        crate::faults::MAX_FAULTS
                    )
                })
            }
        }
    };
    match applied {
        Ok(()) => fault_answer(fe),
        Err(message) => bad(message),
    }
}

/// `GET /_hsmkms/orphans`: per cluster, the kmsuser-owned keys whose label names no KMS key.
async fn orphans(fe: web::Data<Arc<Frontend>>) -> HttpResponse {
    let fe2 = fe.clone();
    let is_kms_key = move |label: &str| {
        label.starts_with("arn:") && fe2.registry().resolve(label, false).is_ok()
    };
    let report = {
        let _pass = fe.clusters.enter().await;
        fe.clusters.orphans(is_kms_key).await
    };
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

/// `POST /_hsmkms/reset`: KMS's state back to a fresh start, and with `{"cluster": true}` the
/// CloudHSM side too (see [`Frontend::reset`]), answered once that is durable, with how long
/// it took.
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
            Err(e) => {
                return bad(format!(
                    "Expected {{}}, {{\"cluster\": false}} or {{\"cluster\": true}}: {e}"
                ))
            }
        }
    };
    let cluster = asked.cluster == Some(true);
    let started = std::time::Instant::now();
    if let Err(e) = fe.reset(cluster).await {
        return error_response(&e, &uuid::Uuid::new_v4().to_string());
    }
    let millis = started.elapsed().as_secs_f64() * 1000.0;
    if !cluster {
        return HttpResponse::Ok().json(json!({"reset": "kms", "millis": millis}));
    }
    let clusters: Vec<String> = fe
        .clusters
        .clusters()
        .into_iter()
        .map(|c| c.cluster_id)
        .collect();
    HttpResponse::Ok().json(json!({
        "reset": "cluster",
        "millis": millis,
        "clusterIds": clusters,
    }))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/clock", web::get().to(get_clock))
        .route("/clock", web::post().to(post_clock))
        .route("/audit", web::get().to(audit))
        .route("/metrics", web::get().to(metrics))
        .route("/events", web::get().to(events))
        .route("/faults", web::get().to(list_faults))
        .route("/faults", web::post().to(fault))
        .route("/reset", web::post().to(reset))
        .route("/orphans", web::get().to(orphans))
        .route("/backups", web::get().to(backups));
}
