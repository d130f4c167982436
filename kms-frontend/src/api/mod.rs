//! The HTTP surface: AWS JSON 1.1 on `POST /` (KMS as `TrentService.*`, CloudHSMv2 as
//! `BaldrApiService.*`, told apart by `X-Amz-Target`), CloudHSMv2 over Smithy RPCv2 CBOR on
//! `POST /service/BaldrApiService/operation/<Op>`, and the emulator's control API under
//! `/_hsmkms/`, with the dashboard at `/_hsmkms/ui`. Every failure is an AWS-shaped JSON error;
//! nothing a client sends can panic a handler or get an HTML page back (the dashboard's pages
//! are the only HTML served, and only to a GET of them).

pub mod auth;
pub mod cbor;
pub mod cloudhsm;
pub mod control;
pub mod dashboard;
pub mod deadline;
pub mod kms;
pub mod types;

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::frontend::Frontend;
use crate::service::cloudhsm::error::CloudHsmError;
use crate::service::error::KmsError;
use crate::service::key_ref::Arns;

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
/// An error's JSON body: its type, and its message unless it has none (AWS sends some errors,
/// InvalidCiphertextException among them, without one).
fn error_body(e: &KmsError) -> serde_json::Value {
    let message = e.message();
    if message.is_empty() {
        serde_json::json!({"__type": e.type_name()})
    } else {
        serde_json::json!({"__type": e.type_name(), "message": message})
    }
}

pub fn error_response(e: &KmsError, request_id: &str) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST))
        .content_type("application/x-amz-json-1.1")
        .insert_header(("x-amzn-RequestId", request_id.to_string()))
        .insert_header(("x-amzn-ErrorType", e.type_name()))
        .json(error_body(e))
}

/// How long a request body may take to arrive, whole. A client that stalls its upload is
/// answered RequestTimeoutException and its connection closed, so stalled uploads cannot pile
/// up and take every descriptor.
pub const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Unreadable or over [`MAX_BODY`]: the message.
    Invalid(String),
    /// Not all there within [`BODY_DEADLINE`].
    Late,
}

/// Reads a request body, up to [`MAX_BODY`], within [`BODY_DEADLINE`] (a handler's
/// `web::Payload`, or the raw payload the strict-auth middleware reads).
pub async fn read_body<S>(mut payload: S) -> Result<web::BytesMut, BodyError>
where
    S: futures::Stream<Item = Result<web::Bytes, actix_web::error::PayloadError>> + Unpin,
{
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = futures::StreamExt::next(&mut payload).await {
            let chunk = chunk.map_err(|_| {
                BodyError::Invalid("The request body could not be read.".to_string())
            })?;
            if body.len() + chunk.len() > MAX_BODY {
                return Err(BodyError::Invalid(format!(
                    "The request body is larger than {MAX_BODY} bytes."
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(BODY_DEADLINE, read)
        .await
        .unwrap_or(Err(BodyError::Late))
}

/// The answer to a body that did not arrive in time; the connection is closed after it.
pub fn late_body(request_id: &str) -> HttpResponse {
    let e = KmsError::RequestTimeout(format!(
        "The request body did not arrive within {} seconds.",
        BODY_DEADLINE.as_secs()
    ));
    let mut response = error_response(&e, request_id);
    response
        .head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
    response
}

/// The Region a request was signed for (the SigV4 credential scope), if it says.
fn signed_region(req: &HttpRequest) -> Option<String> {
    signed_scope(req)
        .and_then(|(_, region)| region)
        .map(str::to_string)
}

/// The access key id and the Region of a request's SigV4 credential, where it gives them.
fn signed_scope(req: &HttpRequest) -> Option<(Option<&str>, Option<&str>)> {
    // Bytes, not `to_str()`: that checks every byte of a 200-byte header on every request,
    // while only the credential's scope is read.
    let auth = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .as_bytes();
    // The SDKs put the credential first; a header that does not is searched.
    const FIRST: &[u8] = b"AWS4-HMAC-SHA256 Credential=";
    let credential = match auth.strip_prefix(FIRST) {
        Some(rest) => rest,
        None => {
            let at = auth
                .windows(b"Credential=".len())
                .position(|w| w == b"Credential=")?;
            &auth[at + b"Credential=".len()..]
        }
    };
    let end = credential
        .iter()
        .position(|&b| b == b',' || b == b' ')
        .unwrap_or(credential.len());
    let mut scope = std::str::from_utf8(&credential[..end]).ok()?.split('/');
    let access_key = scope.next().filter(|a| !a.is_empty());
    let region = scope.nth(1).filter(|r| !r.is_empty());
    Some((access_key, region))
}

/// A CloudHSMv2 error as AWS JSON 1.1.
fn cloudhsm_json_error(e: &CloudHsmError, request_id: &str) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST))
        .content_type("application/x-amz-json-1.1")
        .insert_header(("x-amzn-RequestId", request_id.to_string()))
        .insert_header(("x-amzn-ErrorType", e.type_name()))
        .json(serde_json::json!({"__type": e.type_name(), "message": e.message(), "Message": e.message()}))
}

/// `POST /`: the AWS JSON services.
async fn aws_json(
    req: HttpRequest,
    payload: web::Payload,
    frontend: web::Data<Arc<Frontend>>,
) -> HttpResponse {
    let request_id = uuid::Uuid::new_v4().to_string();
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Read the body with a limit, so an oversized one gets an AWS-shaped answer too.
    let body = match read_body(payload).await {
        Ok(b) => b,
        Err(BodyError::Late) => return late_body(&request_id),
        Err(BodyError::Invalid(message)) => {
            return if target.starts_with("BaldrApiService.") {
                cloudhsm_json_error(&CloudHsmError::InvalidRequest(message), &request_id)
            } else {
                error_response(&KmsError::Validation(message), &request_id)
            }
        }
    };
    let body = body.freeze();
    let result: Result<Value, KmsError> = match target.split_once('.') {
        Some(("TrentService", op)) => {
            let (access_key, region) = signed_scope(&req).unwrap_or_default();
            let scope = Arns::for_request(&frontend.home_scope, region, access_key);
            kms::call(&frontend, op, &body, &request_id, scope).await
        }
        Some(("BaldrApiService", op)) => {
            let region = signed_region(&req).unwrap_or_else(|| frontend.arns.region.clone());
            let answer = match parse::<Value>(&body) {
                Ok(input) if input.is_object() => {
                    cloudhsm_within_deadline(&frontend, op, input, region).await
                }
                _ => Err(CloudHsmError::InvalidRequest(
                    "The request body is not a JSON object.".into(),
                )),
            };
            return match answer {
                Ok(value) => HttpResponse::Ok()
                    .content_type("application/x-amz-json-1.1")
                    .insert_header(("x-amzn-RequestId", request_id))
                    .json(value),
                Err(e) => cloudhsm_json_error(&e, &request_id),
            };
        }
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

/// Runs a CloudHSMv2 operation within the request deadline, as a task of its own that the
/// deadline does not cancel (see [`deadline`]): past it the client gets
/// CloudHsmInternalFailureException, and what the operation started still finishes.
async fn cloudhsm_within_deadline(
    fe: &Arc<Frontend>,
    op: &str,
    input: Value,
    region: String,
) -> Result<Value, CloudHsmError> {
    let (task_fe, task_op) = (fe.clone(), op.to_string());
    let work = async move { cloudhsm::call(&task_fe, &task_op, input, &region).await };
    deadline::detached(fe.request_deadline, &fe.overdue, work)
        .await
        .unwrap_or_else(|late| {
            Err(match late {
                deadline::Late::Timeout => CloudHsmError::InternalFailure(format!(
                    "The request did not complete within {} seconds; it may still take effect.",
                    fe.request_deadline.as_secs()
                )),
                deadline::Late::Busy => CloudHsmError::Throttling(
                    "Too many earlier requests are still being processed. Retry the request later."
                        .into(),
                ),
                deadline::Late::Lost => {
                    CloudHsmError::InternalFailure("The request could not be completed.".into())
                }
            })
        })
}

fn cbor_response(status: StatusCode, body: &Value, request_id: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/cbor")
        .insert_header(("smithy-protocol", "rpc-v2-cbor"))
        .insert_header(("x-amzn-RequestId", request_id.to_string()))
        .body(cbor::encode(body))
}

/// `POST /service/BaldrApiService/operation/<Op>`: CloudHSMv2 over Smithy RPCv2 CBOR.
async fn rpc_v2_cbor(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    frontend: web::Data<Arc<Frontend>>,
) -> HttpResponse {
    let request_id = uuid::Uuid::new_v4().to_string();
    let op = path.into_inner();
    let answer = match read_body(payload).await {
        Err(BodyError::Late) => return late_body(&request_id),
        Err(BodyError::Invalid(message)) => Err(CloudHsmError::InvalidRequest(message)),
        Ok(body) => match cbor::decode(&body) {
            Err(message) => Err(CloudHsmError::InvalidRequest(format!(
                "The request body is not valid: {message}."
            ))),
            Ok(input) => {
                let region = signed_region(&req).unwrap_or_else(|| frontend.arns.region.clone());
                cloudhsm_within_deadline(&frontend, &op, input, region).await
            }
        },
    };
    match answer {
        Ok(value) => cbor_response(StatusCode::OK, &value, &request_id),
        Err(e) => cbor_response(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
            &serde_json::json!({
                "__type": format!("com.amazonaws.cloudhsmv2#{}", e.type_name()),
                "message": e.message(),
                "Message": e.message(),
            }),
            &request_id,
        ),
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
    cfg.service(
        web::scope("/_hsmkms")
            .configure(control::configure)
            .configure(dashboard::configure),
    )
    .route("/", web::post().to(aws_json))
    .route(
        "/service/BaldrApiService/operation/{op}",
        web::post().to(rpc_v2_cbor),
    )
    .default_service(web::to(not_found));
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::signed_scope;

    #[test]
    fn the_signed_scope_is_read_wherever_the_credential_stands() {
        let sdk = TestRequest::default()
            .insert_header((
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=111122223333/20261204/eu-west-1/kms/aws4_request, SignedHeaders=host;x-amz-date, Signature=00",
            ))
            .to_http_request();
        assert_eq!(
            signed_scope(&sdk),
            Some((Some("111122223333"), Some("eu-west-1")))
        );
        let reordered = TestRequest::default()
            .insert_header((
                "Authorization",
                "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00, Credential=AKID/20261204/us-west-2/kms/aws4_request",
            ))
            .to_http_request();
        assert_eq!(
            signed_scope(&reordered),
            Some((Some("AKID"), Some("us-west-2")))
        );
        let empty = TestRequest::default()
            .insert_header((
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=/20261204//kms",
            ))
            .to_http_request();
        assert_eq!(signed_scope(&empty), Some((None, None)));
        assert_eq!(
            signed_scope(&TestRequest::default().to_http_request()),
            None
        );
    }
}
