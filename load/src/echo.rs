//! `hsmkms-load echo`: the reference handlers of the comparison, each the least that a part of
//! hsmkms's work costs on this machine, served by a minimal actix-web server with as many
//! workers as the emulator's frontend:
//!
//! - `parse` parses each KMS JSON request and answers the smallest well-formed answer the load
//!   tool accepts, without cryptography, storage or key lookup: the ceiling of any actix-web
//!   service here.
//! - `inline` does what any correct Encrypt, Decrypt or GenerateDataKey must do besides: base64
//!   in and out, and AES-256-GCM (the project's own AEAD, one fixed key) on the HTTP worker.
//! - `actor` seals and opens in an actix actor on an arbiter of its own, so every request pays
//!   one message hop and back: the least a key store key's HSM hop adds.
//!
//! Whatever hsmkms loses against them is what its own KMS work costs.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use actix::{Actor, Addr, Context, Handler, Message};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::{Context as _, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hsmkms_common::aead::Sealer;
use hsmkms_common::secret::KeyMaterial;
use serde::{Deserialize, Serialize};

/// Which reference handler the server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Reference {
    /// Parse the request and answer, no crypto.
    Parse,
    /// Parse, base64 and AES-256-GCM on the HTTP worker.
    Inline,
    /// The same with the AES-256-GCM in an actor on another arbiter.
    Actor,
}

/// Options of `hsmkms-load echo`.
#[derive(Debug, clap::Args)]
pub struct EchoArgs {
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 4598)]
    pub port: u16,
    /// HTTP workers (the emulator's frontend runs 2).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// The reference handler.
    #[arg(long, value_enum, default_value_t = Reference::Parse)]
    pub handler: Reference,
    /// Region and account in the ARNs it answers with.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    #[arg(long, default_value = "111122223333")]
    pub account_id: String,
}

/// 30 zero bytes in base64: the `parse` handler's fake blob header.
const FAKE_HEADER_B64: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
/// 32 bytes of 0x01 in base64: the `parse` handler's fake data key.
const FAKE_DATA_KEY_B64: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

/// The members of a KMS request the handlers read (borrowed where the JSON has no escapes).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Request<'a> {
    #[serde(borrow)]
    key_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    plaintext: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ciphertext_blob: Option<Cow<'a, str>>,
    #[serde(borrow)]
    origin: Option<Cow<'a, str>>,
    #[serde(borrow)]
    custom_key_store_id: Option<Cow<'a, str>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct CryptoAnswer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext_blob: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext: Option<String>,
    key_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    encryption_algorithm: Option<&'static str>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct KeyMetadata<'a> {
    key_id: &'a str,
    arn: &'a str,
    key_state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    custom_key_store_id: Option<&'a str>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct MetadataAnswer<'a> {
    key_metadata: KeyMetadata<'a>,
}

/// Seals or opens a message in the cipher actor.
#[derive(Debug, Message)]
#[rtype(result = "Option<Vec<u8>>")]
enum Crypt {
    Seal(Vec<u8>),
    Open(Vec<u8>),
}

/// The `actor` handler's cipher, on an arbiter of its own.
#[derive(Debug)]
struct CipherActor {
    sealer: Arc<Sealer>,
}

impl Actor for CipherActor {
    type Context = Context<Self>;
}

impl Handler<Crypt> for CipherActor {
    type Result = Option<Vec<u8>>;
    fn handle(&mut self, msg: Crypt, _: &mut Context<Self>) -> Option<Vec<u8>> {
        match msg {
            Crypt::Seal(plain) => Some(self.sealer.seal(&plain, b"")),
            Crypt::Open(sealed) => self
                .sealer
                .open(&sealed, b"")
                .ok()
                .map(|p| p.expose().to_vec()),
        }
    }
}

/// What every worker shares.
#[derive(Debug)]
struct Shared {
    prefix: String,
    handler: Reference,
    sealer: Arc<Sealer>,
    actor: Option<Addr<CipherActor>>,
}

impl Shared {
    async fn crypt(&self, msg: Crypt) -> Option<Vec<u8>> {
        match (&self.actor, msg) {
            (Some(actor), msg) => actor.send(msg).await.ok().flatten(),
            (None, Crypt::Seal(plain)) => Some(self.sealer.seal(&plain, b"")),
            (None, Crypt::Open(sealed)) => self
                .sealer
                .open(&sealed, b"")
                .ok()
                .map(|p| p.expose().to_vec()),
        }
    }
}

fn error(kind: &str, message: &str) -> HttpResponse {
    HttpResponse::BadRequest()
        .content_type("application/x-amz-json-1.1")
        .json(serde_json::json!({"__type": kind, "message": message}))
}

fn ok<T: Serialize>(answer: &T) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/x-amz-json-1.1")
        .json(answer)
}

async fn answer(request: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let target = request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Ok(input) = serde_json::from_slice::<Request<'_>>(&body) else {
        return error("SerializationException", "not a KMS request");
    };
    let key_arn = format!(
        "{}{}",
        shared.prefix,
        input.key_id.as_deref().unwrap_or_default()
    );
    let crypto = shared.handler != Reference::Parse;
    match target.strip_prefix("TrentService.") {
        Some("CreateKey") => {
            let id = uuid::Uuid::new_v4().to_string();
            let arn = format!("{}{id}", shared.prefix);
            ok(&MetadataAnswer {
                key_metadata: KeyMetadata {
                    key_id: &id,
                    arn: &arn,
                    key_state: "Enabled",
                    origin: Some(input.origin.as_deref().unwrap_or("AWS_KMS")),
                    custom_key_store_id: input.custom_key_store_id.as_deref(),
                },
            })
        }
        Some("DescribeKey") => ok(&MetadataAnswer {
            key_metadata: KeyMetadata {
                key_id: input.key_id.as_deref().unwrap_or_default(),
                arn: &key_arn,
                key_state: "Enabled",
                origin: None,
                custom_key_store_id: None,
            },
        }),
        Some("Encrypt") => {
            let plaintext = input.plaintext.as_deref().unwrap_or_default();
            let blob = if crypto {
                let Ok(plain) = B64.decode(plaintext) else {
                    return error("ValidationException", "Plaintext is not base64");
                };
                let Some(sealed) = shared.crypt(Crypt::Seal(plain)).await else {
                    return error("KMSInternalException", "sealing failed");
                };
                B64.encode(sealed)
            } else {
                // The "ciphertext" is the plaintext behind a fixed 30-byte "header" (a whole
                // number of base64 groups, so the strings just join).
                format!("{FAKE_HEADER_B64}{plaintext}")
            };
            ok(&CryptoAnswer {
                ciphertext_blob: Some(blob),
                plaintext: None,
                key_id: &key_arn,
                encryption_algorithm: Some("SYMMETRIC_DEFAULT"),
            })
        }
        Some("Decrypt") => {
            let blob = input.ciphertext_blob.as_deref().unwrap_or_default();
            let plaintext = if crypto {
                let Ok(sealed) = B64.decode(blob) else {
                    return error("ValidationException", "CiphertextBlob is not base64");
                };
                let Some(plain) = shared.crypt(Crypt::Open(sealed)).await else {
                    return error("InvalidCiphertextException", "");
                };
                B64.encode(plain)
            } else {
                blob.strip_prefix(FAKE_HEADER_B64)
                    .unwrap_or_default()
                    .to_string()
            };
            ok(&CryptoAnswer {
                ciphertext_blob: None,
                plaintext: Some(plaintext),
                key_id: &key_arn,
                encryption_algorithm: Some("SYMMETRIC_DEFAULT"),
            })
        }
        Some("GenerateDataKey") => {
            let (plaintext, blob) = if crypto {
                let data_key = KeyMaterial::generate();
                let Some(sealed) = shared.crypt(Crypt::Seal(data_key.expose().to_vec())).await
                else {
                    return error("KMSInternalException", "sealing failed");
                };
                (B64.encode(data_key.expose()), B64.encode(sealed))
            } else {
                (
                    FAKE_DATA_KEY_B64.to_string(),
                    format!("{FAKE_HEADER_B64}{FAKE_DATA_KEY_B64}"),
                )
            };
            ok(&CryptoAnswer {
                ciphertext_blob: Some(blob),
                plaintext: Some(plaintext),
                key_id: &key_arn,
                encryption_algorithm: None,
            })
        }
        _ => error(
            "UnknownOperationException",
            &format!("the echo server does not answer {target}"),
        ),
    }
}

/// Serves until Ctrl-C or SIGTERM.
pub async fn run(args: EchoArgs) -> Result<()> {
    let sealer = Arc::new(Sealer::new(&KeyMaterial::generate()));
    let actor = (args.handler == Reference::Actor).then(|| {
        let arbiter = actix::Arbiter::new();
        let sealer = sealer.clone();
        CipherActor::start_in_arbiter(&arbiter.handle(), move |_| CipherActor { sealer })
    });
    let shared = web::Data::new(Shared {
        prefix: format!("arn:aws:kms:{}:{}:key/", args.region, args.account_id),
        handler: args.handler,
        sealer,
        actor,
    });
    let bind = SocketAddr::from(([127, 0, 0, 1], args.port));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(shared.clone())
            .app_data(web::PayloadConfig::new(1024 * 1024))
            .route("/", web::post().to(answer))
    })
    .workers(args.workers.max(1))
    .bind(bind)
    .with_context(|| format!("binding {bind}"))?
    .run();
    println!("Ready.");
    server.await.context("echo server")
}
