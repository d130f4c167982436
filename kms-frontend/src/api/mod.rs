//! The HTTP surface: AWS JSON 1.1 on `POST /` (KMS as `TrentService.*`, CloudHSMv2 as
//! `BaldrApiService.*`, told apart by `X-Amz-Target`), and the emulator's control API under
//! `/_hsmkms/`. Every failure is an AWS-shaped JSON error; nothing a client sends can panic a
//! handler or get an HTML page back.

pub mod cloudhsm;
pub mod control;
pub mod key_stores;
pub mod kms;
pub mod types;

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::frontend::Frontend;
use crate::service::error::KmsError;

/// Largest request body accepted (a 4 KiB plaintext in base64, a 32 KiB policy, with room).
pub const MAX_BODY: usize = 1024 * 1024;

/// Parses a request body. An empty body is an empty object, as AWS SDKs send for operations
/// without input.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, KmsError> {
    let body: &[u8] = if body.iter().all(|b| b.is_ascii_whitespace()) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        KmsError::Serialization(format!(
            "The request body is not valid for this operation: {e}"
        ))
    })
}

/// The JSON answer for an error, with its status.
pub fn error_response(e: &KmsError, request_id: &str) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST))
        .content_type("application/x-amz-json-1.1")
        .insert_header(("x-amzn-RequestId", request_id.to_string()))
        .insert_header(("x-amzn-ErrorType", e.type_name()))
        .json(serde_json::json!({"__type": e.type_name(), "message": e.message()}))
}

/// `POST /`: the AWS JSON services.
async fn aws_json(
    req: HttpRequest,
    mut payload: web::Payload,
    frontend: web::Data<Arc<Frontend>>,
) -> HttpResponse {
    let request_id = uuid::Uuid::new_v4().to_string();
    // Read the body with a limit, so an oversized one gets an AWS-shaped answer too.
    let mut body = web::BytesMut::new();
    while let Some(chunk) = futures::StreamExt::next(&mut payload).await {
        let Ok(chunk) = chunk else {
            return error_response(
                &KmsError::Serialization("The request body could not be read.".into()),
                &request_id,
            );
        };
        if body.len() + chunk.len() > MAX_BODY {
            return error_response(
                &KmsError::Validation(format!("The request body is larger than {MAX_BODY} bytes.")),
                &request_id,
            );
        }
        body.extend_from_slice(&chunk);
    }
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let result: Result<Value, KmsError> = match target.split_once('.') {
        Some(("TrentService", op)) => kms::call(&frontend, op, &body, &request_id).await,
        Some(("BaldrApiService", op)) => cloudhsm::call(&frontend, op, &body).await,
        _ => Err(KmsError::UnknownOperation(format!(
            "The X-Amz-Target header '{target}' names no operation of this endpoint (TrentService.* or BaldrApiService.*)."
        ))),
    };
    match result {
        Ok(value) => HttpResponse::Ok()
            .content_type("application/x-amz-json-1.1")
            .insert_header(("x-amzn-RequestId", request_id))
            .json(value),
        Err(e) => error_response(&e, &request_id),
    }
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    error_response(
        &KmsError::UnknownOperation(format!(
            "{} {} is not an operation of this endpoint.",
            req.method(),
            req.path()
        )),
        &uuid::Uuid::new_v4().to_string(),
    )
}

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::scope("/_hsmkms").configure(control::configure))
        .route("/", web::post().to(aws_json))
        .default_service(web::to(not_found));
}
