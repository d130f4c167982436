//! `hsmkms-load echo`: the ceiling of the comparison. A minimal actix-web server, with as many
//! workers as the emulator's frontend, that parses each KMS JSON request and answers with the
//! smallest well-formed answer the load tool accepts, without any cryptography, storage or
//! key lookup. Whatever hsmkms loses against it is what the KMS work itself costs.

use std::net::SocketAddr;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::{Context, Result};
use serde_json::{json, Value};

/// Options of `hsmkms-load echo`.
#[derive(Debug, clap::Args)]
pub struct EchoArgs {
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 4598)]
    pub port: u16,
    /// HTTP workers (the emulator's frontend runs 2).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Region and account in the ARNs it answers with.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    #[arg(long, default_value = "111122223333")]
    pub account_id: String,
}

/// 30 zero bytes in base64: the fake blob header.
const FAKE_HEADER_B64: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
/// 32 bytes of 0x01 in base64: the fake data key.
const FAKE_DATA_KEY_B64: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

#[derive(Debug, Clone)]
struct Arns {
    prefix: String,
}

async fn answer(request: HttpRequest, body: web::Bytes, arns: web::Data<Arns>) -> HttpResponse {
    let target = request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Ok(input) = serde_json::from_slice::<Value>(&body) else {
        return HttpResponse::BadRequest()
            .json(json!({"__type": "SerializationException", "message": "not JSON"}));
    };
    let key_arn = |id: &Value| format!("{}{}", arns.prefix, id.as_str().unwrap_or_default());
    let output = match target.strip_prefix("TrentService.") {
        Some("CreateKey") => {
            let id = uuid::Uuid::new_v4().to_string();
            json!({"KeyMetadata": {
                "KeyId": id,
                "Arn": format!("{}{id}", arns.prefix),
                "KeyState": "Enabled",
                "Origin": input.get("Origin").cloned().unwrap_or(json!("AWS_KMS")),
                "CustomKeyStoreId": input.get("CustomKeyStoreId").cloned().unwrap_or(Value::Null),
            }})
        }
        Some("DescribeKey") => json!({"KeyMetadata": {
            "KeyId": input["KeyId"], "Arn": key_arn(&input["KeyId"]), "KeyState": "Enabled",
        }}),
        // The "ciphertext" is the plaintext behind a fixed 30-byte "header" (a whole number
        // of base64 groups, so the strings just join), big enough to pass for a sealed blob.
        Some("Encrypt") => json!({
            "CiphertextBlob": format!("{FAKE_HEADER_B64}{}", input["Plaintext"].as_str().unwrap_or_default()),
            "KeyId": key_arn(&input["KeyId"]),
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        }),
        Some("Decrypt") => json!({
            "Plaintext": input["CiphertextBlob"].as_str().unwrap_or_default().strip_prefix(FAKE_HEADER_B64).unwrap_or_default(),
            "KeyId": key_arn(&input["KeyId"]),
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        }),
        Some("GenerateDataKey") => json!({
            "Plaintext": FAKE_DATA_KEY_B64,
            "CiphertextBlob": format!("{FAKE_HEADER_B64}{FAKE_DATA_KEY_B64}"),
            "KeyId": key_arn(&input["KeyId"]),
        }),
        _ => {
            return HttpResponse::BadRequest().json(json!({
                "__type": "UnknownOperationException",
                "message": format!("the echo server does not answer {target}"),
            }))
        }
    };
    HttpResponse::Ok()
        .content_type("application/x-amz-json-1.1")
        .json(output)
}

/// Serves until Ctrl-C or SIGTERM.
pub async fn run(args: EchoArgs) -> Result<()> {
    let arns = web::Data::new(Arns {
        prefix: format!("arn:aws:kms:{}:{}:key/", args.region, args.account_id),
    });
    let bind = SocketAddr::from(([127, 0, 0, 1], args.port));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(arns.clone())
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
