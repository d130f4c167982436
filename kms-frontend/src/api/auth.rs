//! `--auth strict`: every request to the KMS and CloudHSMv2 endpoints must carry a SigV4
//! signature by one of the configured access keys, checked as AWS checks it, and the control
//! API (`/_hsmkms/...`) needs the control token (`Authorization: Bearer <token>`).
//!
//! The check is an actix middleware wrapped around the whole app in [`crate::serve`], inside
//! `Condition`: in the default mode (`--auth any`) a request costs one branch more than it did
//! before, and nothing here runs.
//!
//! The expected signature is computed by AWS's own signer (`aws-sigv4`, what the Rust SDK signs
//! with), given the request as received: its method, path and query, the headers its
//! `SignedHeaders` names, its payload hash (`x-amz-content-sha256` if sent, else the SHA-256 of
//! the body), its credential scope's Region and service and its own `X-Amz-Date` as the signing
//! time. The two signatures are compared in constant time. [`Strict::verify`] is a pure
//! function of (keys, clock, request), tested below without HTTP.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderMap;
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use chrono::{DateTime, NaiveDateTime, Utc};
use hsmkms_common::clock::Clock;
use hsmkms_common::secret::SecretString;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::access_keys::AccessKeys;
use crate::service::cloudhsm::error::CloudHsmError;
use crate::service::error::KmsError;

/// How far a request's `X-Amz-Date` may be from the emulator's real time, either way: AWS's
/// allowed skew.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// The one algorithm of SigV4 over headers.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// SigV4's credential scope terminator.
const TERMINATOR: &str = "aws4_request";
/// `X-Amz-Date`'s format (ISO 8601 basic).
const AMZ_DATE: &str = "%Y%m%dT%H%M%SZ";

/// How requests are authenticated.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    /// Any credentials, or none, are accepted (AWS's signature is not looked at).
    #[default]
    Any,
    /// Signatures are checked; the control API needs the token.
    Strict(Arc<Strict>),
}

impl Auth {
    pub fn is_strict(&self) -> bool {
        matches!(self, Auth::Strict(_))
    }
}

/// What strict mode checks against.
#[derive(Debug)]
pub struct Strict {
    keys: AccessKeys,
    control_token: SecretString,
    /// Real time (never the emulator's movable clock: clients sign with the wall clock).
    clock: Arc<dyn Clock>,
}

/// The signing name of each service, as the credential scope must say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Kms,
    CloudHsm,
}

impl Service {
    fn signing_name(self) -> &'static str {
        match self {
            Service::Kms => "kms",
            Service::CloudHsm => "cloudhsm",
        }
    }
}

/// Why a request is refused, one variant per AWS error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header at all.
    MissingAuthenticationToken,
    /// The `Authorization` header lacks a part, or is malformed: the message.
    IncompleteSignature(String),
    /// The signature, its scope or its time is wrong: the message.
    InvalidSignature(String),
    /// The access key id is not one of ours, or a session token was sent (the emulator issues
    /// none).
    UnrecognizedClient,
}

/// AWS's answer to a wrong signature.
pub const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

impl AuthError {
    pub fn type_name(&self) -> &'static str {
        match self {
            AuthError::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            AuthError::IncompleteSignature(_) => "IncompleteSignatureException",
            AuthError::InvalidSignature(_) => "InvalidSignatureException",
            AuthError::UnrecognizedClient => "UnrecognizedClientException",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            AuthError::MissingAuthenticationToken => "Missing Authentication Token",
            AuthError::IncompleteSignature(m) | AuthError::InvalidSignature(m) => m,
            AuthError::UnrecognizedClient => {
                "The security token included in the request is invalid."
            }
        }
    }

    /// AWS's statuses: its common errors list MissingAuthenticationToken as 403; the others are
    /// 400 on the AWS JSON services.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::MissingAuthenticationToken => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// One request as received: what the signature covers.
#[derive(Debug)]
pub struct Received<'a> {
    pub method: &'a str,
    /// Path and query, as sent.
    pub uri: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

impl<'a> Received<'a> {
    fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn has_query_signature(&self) -> bool {
        self.uri.split_once('?').is_some_and(|(_, query)| {
            query.split('&').any(|p| {
                let name = p.split('=').next().unwrap_or("");
                name.eq_ignore_ascii_case("X-Amz-Signature")
                    || name.eq_ignore_ascii_case("X-Amz-Credential")
                    || name.eq_ignore_ascii_case("X-Amz-Algorithm")
            })
        })
    }
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
/// Signature=...` header.
struct Authorization<'a> {
    credential: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

/// Splits the header as AWS does, with AWS's messages for what is missing or malformed.
fn parse_authorization<'a>(
    header: &'a str,
    has_date: bool,
) -> Result<(&'a str, Authorization<'a>), AuthError> {
    let header_trimmed = header.trim();
    let (algorithm, rest) = header_trimmed
        .split_once(' ')
        .unwrap_or((header_trimmed, ""));
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, value)) = part.split_once('=') else {
            return Err(AuthError::IncompleteSignature(format!(
                "'{part}' not a valid key=value pair (missing equal-sign) in Authorization header: '{header}'."
            )));
        };
        match name.trim() {
            "Credential" => credential = Some(value.trim()),
            "SignedHeaders" => signed_headers = Some(value.trim()),
            "Signature" => signature = Some(value.trim()),
            _ => {}
        }
    }
    let mut missing = String::new();
    for (part, found) in [
        ("Credential", credential.is_some()),
        ("Signature", signature.is_some()),
        ("SignedHeaders", signed_headers.is_some()),
    ] {
        if !found {
            missing.push_str(&format!(
                "Authorization header requires '{part}' parameter. "
            ));
        }
    }
    if !has_date {
        missing.push_str(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. ",
        );
    }
    match (credential, signed_headers, signature) {
        (Some(credential), Some(signed_headers), Some(signature)) if missing.is_empty() => Ok((
            algorithm,
            Authorization {
                credential,
                signed_headers,
                signature,
            },
        )),
        _ => Err(AuthError::IncompleteSignature(format!(
            "{missing}Authorization={header}"
        ))),
    }
}

fn amz_date(t: DateTime<Utc>) -> String {
    t.format(AMZ_DATE).to_string()
}

impl Strict {
    pub fn new(keys: AccessKeys, control_token: SecretString, clock: Arc<dyn Clock>) -> Self {
        Self {
            keys,
            control_token,
            clock,
        }
    }

    /// Whether a control API request carries the control token (`Authorization: Bearer`).
    fn control_token_check(&self, headers: &HeaderMap) -> Result<(), StatusCode> {
        let presented = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.split_once(' ')
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            })
            .map(|(_, token)| token.trim());
        match presented {
            None => Err(StatusCode::UNAUTHORIZED),
            Some(token) if self.control_token.ct_eq(token) => Ok(()),
            Some(_) => Err(StatusCode::FORBIDDEN),
        }
    }

    /// Checks a request's SigV4 signature for `service` (`None`: the request names neither
    /// service, and either signing name is accepted). The checks run in the order AWS reports
    /// them: the header's shape, the credential scope, the time, the access key, the signature.
    pub fn verify(&self, req: &Received<'_>, service: Option<Service>) -> Result<(), AuthError> {
        let Some(header) = req.headers.get("authorization") else {
            if req.has_query_signature() {
                return Err(AuthError::IncompleteSignature(
                    "hsmkms checks SigV4 signatures in the Authorization header only; query-string (presigned) authentication is not supported.".into(),
                ));
            }
            return Err(AuthError::MissingAuthenticationToken);
        };
        let header = header.to_str().map_err(|_| {
            AuthError::IncompleteSignature(
                "The Authorization header is not valid ASCII.".to_string(),
            )
        })?;
        let x_amz_date = req.header("x-amz-date");
        let has_date = x_amz_date.is_some() || req.headers.contains_key("date");
        let (algorithm, auth) = parse_authorization(header, has_date)?;
        if algorithm != ALGORITHM {
            return Err(AuthError::IncompleteSignature(format!(
                "Unsupported AWS 'algorithm': '{algorithm}'"
            )));
        }
        let scope: Vec<&str> = auth.credential.split('/').collect();
        let [access_key_id, scope_date, region, scope_service, terminator] = scope[..] else {
            return Err(AuthError::IncompleteSignature(format!(
                "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '{}'",
                auth.credential
            )));
        };
        let Some(x_amz_date) = x_amz_date else {
            return Err(AuthError::IncompleteSignature(
                "hsmkms needs the request time in the X-Amz-Date header (signing with the Date header is not supported).".into(),
            ));
        };
        let signed_at = NaiveDateTime::parse_from_str(x_amz_date, AMZ_DATE)
            .map(|t| t.and_utc())
            .map_err(|_| {
                AuthError::IncompleteSignature(format!(
                    "Date must be in ISO-8601 'basic format'. Got '{x_amz_date}'. See http://en.wikipedia.org/wiki/ISO_8601"
                ))
            })?;
        let signed: Vec<&str> = auth.signed_headers.split(';').collect();
        if !signed.contains(&"host") {
            return Err(AuthError::IncompleteSignature(
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".into(),
            ));
        }
        if !signed.contains(&"x-amz-date") {
            return Err(AuthError::IncompleteSignature(
                "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization.".into(),
            ));
        }
        if terminator != TERMINATOR {
            return Err(AuthError::InvalidSignature(format!(
                "Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{terminator}'. "
            )));
        }
        let service = match service {
            Some(s) if s.signing_name() != scope_service => {
                return Err(AuthError::InvalidSignature(format!(
                    "Credential should be scoped to correct service: '{}'. ",
                    s.signing_name()
                )))
            }
            Some(s) => s,
            None => match scope_service {
                "kms" => Service::Kms,
                "cloudhsm" => Service::CloudHsm,
                _ => {
                    return Err(AuthError::InvalidSignature(
                        "Credential should be scoped to correct service: 'kms'. ".into(),
                    ))
                }
            },
        };
        let day = signed_at.format("%Y%m%d").to_string();
        if scope_date != day {
            return Err(AuthError::InvalidSignature(format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{scope_date}' != '{day}', from '{x_amz_date}'."
            )));
        }
        if region.is_empty() {
            return Err(AuthError::InvalidSignature(
                "Credential should be scoped to a valid region, not ''. ".into(),
            ));
        }
        self.check_time(signed_at)?;
        if req.headers.contains_key("x-amz-security-token") {
            return Err(AuthError::UnrecognizedClient);
        }
        let Some(secret) = self.keys.secret(access_key_id) else {
            return Err(AuthError::UnrecognizedClient);
        };
        let expected = expected_signature(
            req,
            &signed,
            access_key_id,
            secret,
            region,
            service,
            signed_at,
        )
        .ok_or_else(|| AuthError::InvalidSignature(SIGNATURE_MISMATCH.into()))?;
        if bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
            Ok(())
        } else {
            Err(AuthError::InvalidSignature(SIGNATURE_MISMATCH.into()))
        }
    }

    /// AWS's allowed skew, with its messages.
    fn check_time(&self, signed_at: DateTime<Utc>) -> Result<(), AuthError> {
        let now_millis = i64::try_from(self.clock.now_millis()).unwrap_or(i64::MAX);
        let now = DateTime::from_timestamp_millis(now_millis).unwrap_or_default();
        let skew = chrono::Duration::from_std(MAX_SKEW).unwrap_or_default();
        let minutes = MAX_SKEW.as_secs() / 60;
        if signed_at < now - skew {
            return Err(AuthError::InvalidSignature(format!(
                "Signature expired: {} is now earlier than {} ({} - {minutes} min.)",
                amz_date(signed_at),
                amz_date(now - skew),
                amz_date(now)
            )));
        }
        if signed_at > now + skew {
            return Err(AuthError::InvalidSignature(format!(
                "Signature not yet current: {} is still later than {} ({} + {minutes} min.)",
                amz_date(signed_at),
                amz_date(now + skew),
                amz_date(now)
            )));
        }
        Ok(())
    }
}

/// The signature AWS's signer gives the request as received, or `None` if it cannot be
/// signed at all (a signed header missing or not text): then it cannot match either.
fn expected_signature(
    req: &Received<'_>,
    signed: &[&str],
    access_key_id: &str,
    secret: &SecretString,
    region: &str,
    service: Service,
    signed_at: DateTime<Utc>,
) -> Option<String> {
    let mut headers = Vec::with_capacity(signed.len());
    for name in signed {
        let mut values = req.headers.get_all(*name).peekable();
        // A header the client says it signed but did not send: AWS cannot match it either.
        values.peek()?;
        for value in values {
            headers.push((*name, value.to_str().ok()?));
        }
    }
    let body = match req.header("x-amz-content-sha256") {
        Some(hash) => {
            // A hash that is a hash must be the body's: otherwise the body was changed after
            // signing.
            let is_hash = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
            if is_hash && !hash.eq_ignore_ascii_case(&hex::encode(Sha256::digest(req.body))) {
                return None;
            }
            SignableBody::Precomputed(hash.to_string())
        }
        None => SignableBody::Bytes(req.body),
    };
    let identity: Identity =
        Credentials::new(access_key_id, secret.expose(), None, None, "hsmkms-strict").into();
    let mut settings = SigningSettings::default();
    // Exactly the headers the client signed are given, so none is to be left out.
    settings.excluded_headers = None;
    let time = UNIX_EPOCH + Duration::from_secs(u64::try_from(signed_at.timestamp()).ok()?);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service.signing_name())
        .time(time)
        .settings(settings)
        .build()
        .ok()?
        .into();
    let signable = SignableRequest::new(req.method, req.uri, headers.into_iter(), body).ok()?;
    let (_, signature) = sign(signable, &params).ok()?.into_parts();
    Some(signature)
}

/// How a request's errors are written.
#[derive(Debug, Clone, Copy)]
enum Protocol {
    /// AWS JSON 1.1 on `POST /` (KMS or CloudHSMv2 by `X-Amz-Target`, or neither).
    Json(Option<Service>),
    /// CloudHSMv2 over Smithy RPCv2 CBOR.
    Cbor,
}

impl Protocol {
    fn of(req: &ServiceRequest) -> Self {
        if req.path().starts_with("/service/") {
            return Protocol::Cbor;
        }
        let target = req
            .headers()
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        Protocol::Json(if target.starts_with("TrentService.") {
            Some(Service::Kms)
        } else if target.starts_with("BaldrApiService.") {
            Some(Service::CloudHsm)
        } else {
            None
        })
    }

    fn service(self) -> Option<Service> {
        match self {
            Protocol::Json(service) => service,
            Protocol::Cbor => Some(Service::CloudHsm),
        }
    }

    /// An AWS-shaped error answer in this protocol.
    fn error(self, status: StatusCode, type_name: &str, message: &str) -> HttpResponse {
        let request_id = uuid::Uuid::new_v4().to_string();
        let body = serde_json::json!({"__type": type_name, "message": message});
        let mut answer = HttpResponse::build(status);
        answer
            .insert_header(("x-amzn-RequestId", request_id))
            .insert_header(("x-amzn-ErrorType", type_name.to_string()));
        match self {
            Protocol::Json(_) => answer.content_type("application/x-amz-json-1.1").json(body),
            Protocol::Cbor => answer
                .content_type("application/cbor")
                .insert_header(("smithy-protocol", "rpc-v2-cbor"))
                .body(super::cbor::encode(&body)),
        }
    }
}

/// The control API's answer to a request without the right token.
fn control_refusal(status: StatusCode) -> HttpResponse {
    let (type_name, message) = if status == StatusCode::UNAUTHORIZED {
        (
            "MissingControlTokenException",
            "In strict mode the control API needs the control token: send 'Authorization: Bearer <token>' (the token of --control-token or HSMKMS_CONTROL_TOKEN).",
        )
    } else {
        (
            "InvalidControlTokenException",
            "The control token in the request is not the emulator's.",
        )
    };
    let mut answer = HttpResponse::build(status);
    if status == StatusCode::UNAUTHORIZED {
        answer.insert_header(("WWW-Authenticate", "Bearer realm=\"hsmkms control API\""));
    }
    answer.json(serde_json::json!({"__type": type_name, "message": message}))
}

/// The middleware: registered (under `Condition`) only in strict mode.
pub async fn gate(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(Auth::Strict(strict)) = req
        .app_data::<web::Data<Auth>>()
        .map(|a| a.get_ref().clone())
    else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    if req.path() == "/_hsmkms" || req.path().starts_with("/_hsmkms/") {
        return match strict.control_token_check(req.headers()) {
            Ok(()) => Ok(next.call(req).await?.map_into_left_body()),
            Err(status) => Ok(req
                .into_response(control_refusal(status))
                .map_into_right_body()),
        };
    }
    let protocol = Protocol::of(&req);
    // The signature may cover the body: read it here (with the handlers' limits), then hand
    // it on to the handler.
    let body = match super::read_body(req.take_payload()).await {
        Ok(body) => body.freeze(),
        Err(super::BodyError::Late) => {
            let answer = super::late_body(&uuid::Uuid::new_v4().to_string());
            return Ok(req.into_response(answer).map_into_right_body());
        }
        Err(super::BodyError::Invalid(message)) => {
            let answer = match protocol {
                Protocol::Json(Some(Service::Kms)) | Protocol::Json(None) => {
                    let e = KmsError::Validation(message);
                    protocol.error(StatusCode::BAD_REQUEST, e.type_name(), &e.message())
                }
                _ => {
                    let e = CloudHsmError::InvalidRequest(message);
                    protocol.error(StatusCode::BAD_REQUEST, e.type_name(), &e.message())
                }
            };
            return Ok(req.into_response(answer).map_into_right_body());
        }
    };
    let uri = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    let verdict = strict.verify(
        &Received {
            method: req.method().as_str(),
            uri: &uri,
            headers: req.headers(),
            body: &body,
        },
        protocol.service(),
    );
    match verdict {
        Ok(()) => {
            req.set_payload(Payload::from(body));
            Ok(next.call(req).await?.map_into_left_body())
        }
        Err(e) => {
            tracing::debug!(
                error = e.type_name(),
                path = req.path(),
                "request refused by strict auth"
            );
            let answer = protocol.error(e.status(), e.type_name(), e.message());
            Ok(req.into_response(answer).map_into_right_body())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use actix_web::http::header::{HeaderName, HeaderValue};
    use hsmkms_common::clock::ManualClock;

    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn strict() -> Strict {
        let mut keys = AccessKeys::default();
        keys.add_list("AKIDGOOD:goodsecret", "test").unwrap();
        Strict::new(
            keys,
            SecretString::new("token"),
            Arc::new(ManualClock::new(NOW)),
        )
    }

    /// A request signed as the SDKs sign it, with AWS's signer, at `at` (epoch millis).
    fn signed(akid: &str, secret: &str, service: &str, at: u64, body: &[u8]) -> HeaderMap {
        let base = [
            ("host", "127.0.0.1:4599"),
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", "TrentService.ListKeys"),
        ];
        let identity: Identity = Credentials::new(akid, secret, None, None, "t").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name(service)
            .time(UNIX_EPOCH + Duration::from_millis(at))
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let signable = SignableRequest::new(
            "POST",
            "http://127.0.0.1:4599/",
            base.iter().copied(),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut headers = HeaderMap::new();
        for (k, v) in base.iter().copied().chain(instructions.headers()) {
            headers.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        headers
    }

    fn check(headers: &HeaderMap, body: &[u8]) -> Result<(), AuthError> {
        strict().verify(
            &Received {
                method: "POST",
                uri: "/",
                headers,
                body,
            },
            Some(Service::Kms),
        )
    }

    #[test]
    fn accepts_a_good_signature_and_refuses_a_changed_request() {
        let body = br#"{"Limit":5}"#;
        let headers = signed("AKIDGOOD", "goodsecret", "kms", NOW, body);
        assert_eq!(check(&headers, body), Ok(()));
        // The body changed after signing.
        assert_eq!(
            check(&headers, br#"{"Limit":6}"#),
            Err(AuthError::InvalidSignature(SIGNATURE_MISMATCH.into()))
        );
        // A signed header changed.
        let mut changed = headers.clone();
        changed.insert(
            HeaderName::from_static("x-amz-target"),
            HeaderValue::from_static("TrentService.DescribeKey"),
        );
        assert_eq!(
            check(&changed, body),
            Err(AuthError::InvalidSignature(SIGNATURE_MISMATCH.into()))
        );
    }

    #[test]
    fn wrong_secret_unknown_key_and_session_tokens_are_refused() {
        let wrong = signed("AKIDGOOD", "badsecret", "kms", NOW, b"{}");
        assert_eq!(
            check(&wrong, b"{}"),
            Err(AuthError::InvalidSignature(SIGNATURE_MISMATCH.into()))
        );
        let unknown = signed("AKIDNOPE", "goodsecret", "kms", NOW, b"{}");
        assert_eq!(check(&unknown, b"{}"), Err(AuthError::UnrecognizedClient));
        let mut token = signed("AKIDGOOD", "goodsecret", "kms", NOW, b"{}");
        token.insert(
            HeaderName::from_static("x-amz-security-token"),
            HeaderValue::from_static("t"),
        );
        assert_eq!(check(&token, b"{}"), Err(AuthError::UnrecognizedClient));
    }

    #[test]
    fn times_outside_fifteen_minutes_are_refused_with_aws_messages() {
        let stale = signed("AKIDGOOD", "goodsecret", "kms", NOW - 20 * 60_000, b"{}");
        // NOW is 2023-11-14T22:13:20Z.
        assert_eq!(
            check(&stale, b"{}"),
            Err(AuthError::InvalidSignature(
                "Signature expired: 20231114T215320Z is now earlier than 20231114T215820Z (20231114T221320Z - 15 min.)".into()
            ))
        );
        let future = signed("AKIDGOOD", "goodsecret", "kms", NOW + 16 * 60_000, b"{}");
        assert_eq!(
            check(&future, b"{}"),
            Err(AuthError::InvalidSignature(
                "Signature not yet current: 20231114T222920Z is still later than 20231114T222820Z (20231114T221320Z + 15 min.)".into()
            ))
        );
        let recent = signed("AKIDGOOD", "goodsecret", "kms", NOW - 14 * 60_000, b"{}");
        assert_eq!(check(&recent, b"{}"), Ok(()));
    }

    #[test]
    fn the_scope_must_name_the_service() {
        let cloudhsm = signed("AKIDGOOD", "goodsecret", "cloudhsm", NOW, b"{}");
        assert_eq!(
            check(&cloudhsm, b"{}"),
            Err(AuthError::InvalidSignature(
                "Credential should be scoped to correct service: 'kms'. ".into()
            ))
        );
    }

    #[test]
    fn missing_and_incomplete_headers_get_aws_messages() {
        assert_eq!(
            check(&HeaderMap::new(), b""),
            Err(AuthError::MissingAuthenticationToken)
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("authorization"),
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=AKIDGOOD/20231114/us-east-1/kms/aws4_request",
            ),
        );
        assert_eq!(
            check(&headers, b""),
            Err(AuthError::IncompleteSignature(
                "Authorization header requires 'Signature' parameter. Authorization header requires 'SignedHeaders' parameter. Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. Authorization=AWS4-HMAC-SHA256 Credential=AKIDGOOD/20231114/us-east-1/kms/aws4_request".into()
            ))
        );
        headers.insert(
            HeaderName::from_static("authorization"),
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(
            check(&headers, b""),
            Err(AuthError::IncompleteSignature(
                "'abc' not a valid key=value pair (missing equal-sign) in Authorization header: 'Bearer abc'.".into()
            ))
        );
    }

    #[test]
    fn the_control_token_is_checked() {
        let s = strict();
        let mut headers = HeaderMap::new();
        assert_eq!(
            s.control_token_check(&headers),
            Err(StatusCode::UNAUTHORIZED)
        );
        headers.insert(
            HeaderName::from_static("authorization"),
            HeaderValue::from_static("Bearer nope"),
        );
        assert_eq!(s.control_token_check(&headers), Err(StatusCode::FORBIDDEN));
        headers.insert(
            HeaderName::from_static("authorization"),
            HeaderValue::from_static("Bearer token"),
        );
        assert_eq!(s.control_token_check(&headers), Ok(()));
    }
}
