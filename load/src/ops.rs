//! What the load tool sends and how it checks each answer: a 200 that is not a proper KMS answer
//! counts as an error, so a server cannot look fast by answering garbage. Also the set-up before
//! a run: the key (and, with `--key-store`, a connected custom key store) the requests use, and
//! for Verify, GenerateMac and VerifyMac the signature or MAC made once to check against.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::client::{Answer, Connection};

/// The operations the load tool can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    Encrypt,
    Decrypt,
    GenerateDataKey,
    CreateKey,
    Sign,
    Verify,
    GenerateMac,
    VerifyMac,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Encrypt => "encrypt",
            Op::Decrypt => "decrypt",
            Op::GenerateDataKey => "generate-data-key",
            Op::CreateKey => "create-key",
            Op::Sign => "sign",
            Op::Verify => "verify",
            Op::GenerateMac => "generate-mac",
            Op::VerifyMac => "verify-mac",
        }
    }

    /// The KMS operation, as `X-Amz-Target` names it.
    pub fn target(self) -> &'static str {
        match self {
            Op::Encrypt => "TrentService.Encrypt",
            Op::Decrypt => "TrentService.Decrypt",
            Op::GenerateDataKey => "TrentService.GenerateDataKey",
            Op::CreateKey => "TrentService.CreateKey",
            Op::Sign => "TrentService.Sign",
            Op::Verify => "TrentService.Verify",
            Op::GenerateMac => "TrentService.GenerateMac",
            Op::VerifyMac => "TrentService.VerifyMac",
        }
    }

    /// The key a run of this operation makes when it is given none: its `KeySpec`, its
    /// `KeyUsage` and the algorithm every request names. `None` for the symmetric encryption
    /// key of Encrypt, Decrypt and GenerateDataKey (CreateKey's default).
    pub fn key_kind(self) -> Option<(&'static str, &'static str, &'static str)> {
        match self {
            Op::Sign | Op::Verify => Some(("ECC_NIST_P256", "SIGN_VERIFY", "ECDSA_SHA_256")),
            Op::GenerateMac | Op::VerifyMac => {
                Some(("HMAC_256", "GENERATE_VERIFY_MAC", "HMAC_SHA_256"))
            }
            Op::Encrypt | Op::Decrypt | Op::GenerateDataKey | Op::CreateKey => None,
        }
    }

    /// Whether the operation signs or MACs a message (`--plaintext-bytes` is its size).
    pub fn takes_message(self) -> bool {
        self.key_kind().is_some()
    }
}

/// The least a ciphertext blob adds to its plaintext: an AES-GCM nonce and tag (12 + 16 bytes).
/// Real KMS, moto and hsmkms all add more (a header naming the key).
pub const MIN_SEALING_OVERHEAD: usize = 28;

/// How long a key store may take to connect during set-up.
const CONNECT_DEADLINE: Duration = Duration::from_secs(60);

/// Where the run's keys come from.
#[derive(Debug, Clone)]
pub struct KeyStoreChoice {
    /// The store to use; found or created when `None`.
    pub id: Option<String>,
    pub name: String,
    pub trust_anchor: std::path::PathBuf,
    pub kmsuser_password: String,
}

/// Everything a request needs, made once before the run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub op: Op,
    /// The ARN answers must name.
    pub key_arn: String,
    /// The store new keys go to (`create-key --key-store`).
    pub key_store: Option<String>,
    /// The plaintext of Encrypt and Decrypt; the message of Sign, Verify and the MACs.
    pub plaintext: Vec<u8>,
    /// The signing or MAC algorithm every request names, which answers must name too.
    pub algorithm: Option<String>,
    /// The MAC GenerateMac made at set-up: HMAC is deterministic, so every GenerateMac answer
    /// must be this one (empty for other operations).
    pub mac: Vec<u8>,
    /// The body every request sends (`create-key` sends the same body each time).
    pub body: Vec<u8>,
    /// `X-Amz-Target` of every request.
    pub target: &'static str,
}

/// A KMS key as CreateKey or DescribeKey returns it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyMetadata<'a> {
    key_id: &'a str,
    arn: Option<&'a str>,
    key_state: Option<&'a str>,
    origin: Option<&'a str>,
    custom_key_store_id: Option<&'a str>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateKeyAnswer<'a> {
    #[serde(borrow)]
    key_metadata: KeyMetadata<'a>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CryptoAnswer<'a> {
    key_id: Option<&'a str>,
    ciphertext_blob: Option<&'a str>,
    plaintext: Option<&'a str>,
    signature: Option<&'a str>,
    signing_algorithm: Option<&'a str>,
    signature_valid: Option<bool>,
    mac: Option<&'a str>,
    mac_algorithm: Option<&'a str>,
    mac_valid: Option<bool>,
}

/// Finds a connected store, or creates and connects one (on hsmkms, from its first ACTIVE
/// cluster and the trust anchor in its data directory).
async fn key_store(conn: &mut Connection, choice: &KeyStoreChoice) -> Result<String> {
    let stores = conn.kms("DescribeCustomKeyStores", json!({})).await?;
    let stores = stores["CustomKeyStores"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let pick = |s: &&Value| match &choice.id {
        Some(id) => s["CustomKeyStoreId"] == id.as_str(),
        None => s["CustomKeyStoreName"] == choice.name.as_str(),
    };
    let id = match stores.iter().find(pick) {
        Some(store) => store["CustomKeyStoreId"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        None if choice.id.is_some() => bail!("no custom key store {:?}", choice.id),
        None => {
            let clusters = conn
                .json("cloudhsm", "BaldrApiService.DescribeClusters", json!({}))
                .await?;
            let cluster = clusters["Clusters"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["State"] == "ACTIVE"))
                .and_then(|c| c["ClusterId"].as_str())
                .ok_or_else(|| anyhow!("no ACTIVE CloudHSM cluster to make a key store in"))?
                .to_string();
            let anchor = read_trust_anchor(&choice.trust_anchor)?;
            let created = conn
                .kms(
                    "CreateCustomKeyStore",
                    json!({
                        "CustomKeyStoreName": choice.name,
                        "CloudHsmClusterId": cluster,
                        "TrustAnchorCertificate": anchor,
                        "KeyStorePassword": choice.kmsuser_password,
                    }),
                )
                .await?;
            created["CustomKeyStoreId"]
                .as_str()
                .ok_or_else(|| anyhow!("CreateCustomKeyStore answered no CustomKeyStoreId"))?
                .to_string()
        }
    };
    let started = Instant::now();
    loop {
        let stores = conn
            .kms("DescribeCustomKeyStores", json!({"CustomKeyStoreId": id}))
            .await?;
        let store = &stores["CustomKeyStores"][0];
        match store["ConnectionState"].as_str() {
            Some("CONNECTED") => return Ok(id),
            Some("DISCONNECTED") => {
                conn.kms("ConnectCustomKeyStore", json!({"CustomKeyStoreId": id}))
                    .await?;
            }
            Some("FAILED") => bail!(
                "key store {id} failed to connect: {}",
                store["ConnectionErrorCode"]
            ),
            _ => {}
        }
        if started.elapsed() > CONNECT_DEADLINE {
            bail!("key store {id} did not connect within {CONNECT_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn read_trust_anchor(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading the trust anchor {} (give --trust-anchor, or run from the directory \
             that holds hsmkms-data)",
            path.display()
        )
    })
}

/// The CreateKey body for a key of the run.
fn create_key_body(key_store: Option<&str>) -> Value {
    match key_store {
        Some(store) => json!({
            "Origin": "AWS_CLOUDHSM",
            "CustomKeyStoreId": store,
            "Description": "hsmkms-load bench",
        }),
        None => json!({"Description": "hsmkms-load bench"}),
    }
}

/// The CreateKey body of the key a run of `op` uses (a symmetric encryption key unless the
/// operation needs another kind).
fn run_key_body(op: Op, key_store: Option<&str>) -> Value {
    let mut body = create_key_body(key_store);
    if let Some((spec, usage, _)) = op.key_kind() {
        body["KeySpec"] = spec.into();
        body["KeyUsage"] = usage.into();
    }
    body
}

/// The length of an HMAC with this algorithm, in bytes.
fn mac_len(algorithm: &str) -> Option<usize> {
    match algorithm {
        "HMAC_SHA_224" => Some(28),
        "HMAC_SHA_256" => Some(32),
        "HMAC_SHA_384" => Some(48),
        "HMAC_SHA_512" => Some(64),
        _ => None,
    }
}

/// Whether `sig` can be a signature made with `algorithm`: ECDSA and SM2 signatures are DER
/// SEQUENCEs whose length is the rest of the signature; an RSA signature is as long as the
/// modulus (2048 bits at least). The load tool has no verifier of its own: Verify runs do that.
fn plausible_signature(algorithm: &str, sig: &[u8]) -> bool {
    if algorithm.starts_with("ECDSA_") || algorithm == "SM2DSA" {
        return match sig {
            [0x30, n, rest @ ..] if *n < 0x80 => rest.len() == usize::from(*n),
            [0x30, 0x81, n, rest @ ..] => *n >= 0x80 && rest.len() == usize::from(*n),
            _ => false,
        };
    }
    if algorithm.starts_with("RSASSA_") {
        return sig.len() >= 256;
    }
    !sig.is_empty()
}

/// The algorithm a run with an existing key (`--key-id`) names: the first its metadata lists
/// for the operation.
fn algorithm_of(meta: &Value, op: Op) -> Result<String> {
    let list = match op {
        Op::Sign | Op::Verify => "SigningAlgorithms",
        _ => "MacAlgorithms",
    };
    meta[list][0]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("the key lists no {list}: it cannot serve {}", op.name()))
}

/// Sets up a run: the key store and key it uses, the body it sends.
pub async fn plan(
    conn: &mut Connection,
    op: Op,
    key_id: Option<String>,
    store: Option<&KeyStoreChoice>,
    plaintext_bytes: usize,
) -> Result<Plan> {
    let mut algorithm = op.key_kind().map(|(_, _, a)| a.to_string());
    let mut key_store = match store {
        Some(choice) => Some(key_store(conn, choice).await?),
        None => None,
    };
    let plaintext: Vec<u8> = (0..plaintext_bytes).map(|i| (i % 251) as u8).collect();
    let (key_id, key_arn) = match (op, key_id) {
        (Op::CreateKey, _) => (String::new(), String::new()),
        (_, Some(id)) => {
            let described = conn.kms("DescribeKey", json!({"KeyId": id})).await?;
            let arn = described["KeyMetadata"]["Arn"]
                .as_str()
                .ok_or_else(|| anyhow!("DescribeKey answered no Arn"))?;
            // The results say which kind of key was used, whatever the flags said.
            key_store = described["KeyMetadata"]["CustomKeyStoreId"]
                .as_str()
                .map(str::to_string);
            if op.takes_message() {
                algorithm = Some(algorithm_of(&described["KeyMetadata"], op)?);
            }
            (id.clone(), arn.to_string())
        }
        (_, None) => {
            let created = conn
                .kms("CreateKey", run_key_body(op, key_store.as_deref()))
                .await?;
            let meta = &created["KeyMetadata"];
            let id = meta["KeyId"].as_str().unwrap_or_default().to_string();
            let arn = meta["Arn"].as_str().unwrap_or_default().to_string();
            if id.is_empty() || arn.is_empty() {
                bail!("CreateKey answered no KeyId or Arn: {created}");
            }
            (id, arn)
        }
    };
    let body = match op {
        Op::Encrypt => json!({"KeyId": key_id, "Plaintext": B64.encode(&plaintext)}),
        Op::Decrypt => {
            let sealed = conn
                .kms(
                    "Encrypt",
                    json!({"KeyId": key_id, "Plaintext": B64.encode(&plaintext)}),
                )
                .await?;
            let blob = sealed["CiphertextBlob"]
                .as_str()
                .ok_or_else(|| anyhow!("Encrypt answered no CiphertextBlob"))?;
            json!({"KeyId": key_id, "CiphertextBlob": blob})
        }
        Op::GenerateDataKey => json!({"KeyId": key_id, "KeySpec": "AES_256"}),
        Op::CreateKey => create_key_body(key_store.as_deref()),
        Op::Sign | Op::Verify => json!({
            "KeyId": key_id,
            "Message": B64.encode(&plaintext),
            "MessageType": "RAW",
            "SigningAlgorithm": algorithm,
        }),
        Op::GenerateMac | Op::VerifyMac => json!({
            "KeyId": key_id,
            "Message": B64.encode(&plaintext),
            "MacAlgorithm": algorithm,
        }),
    };
    // Verify checks a signature, and VerifyMac a MAC, made once here; GenerateMac's answers
    // must all be the MAC made here.
    let mut mac = Vec::new();
    let body = match op {
        Op::Verify => {
            let signed = conn.kms("Sign", body.clone()).await?;
            let signature = signed["Signature"]
                .as_str()
                .ok_or_else(|| anyhow!("Sign answered no Signature"))?;
            let mut body = body;
            body["Signature"] = signature.into();
            body
        }
        Op::GenerateMac | Op::VerifyMac => {
            let made = conn.kms("GenerateMac", body.clone()).await?;
            let text = made["Mac"]
                .as_str()
                .ok_or_else(|| anyhow!("GenerateMac answered no Mac"))?;
            mac = B64
                .decode(text)
                .map_err(|_| anyhow!("GenerateMac's Mac is not base64"))?;
            let algorithm = algorithm.as_deref().unwrap_or_default();
            if mac_len(algorithm).is_some_and(|n| n != mac.len()) {
                bail!("GenerateMac answered a {}-byte {algorithm}", mac.len());
            }
            let mut body = body;
            if op == Op::VerifyMac {
                body["Mac"] = text.into();
            }
            body
        }
        _ => body,
    };
    Ok(Plan {
        op,
        key_arn,
        key_store,
        plaintext,
        algorithm,
        mac,
        body: serde_json::to_vec(&body)?,
        target: op.target(),
    })
}

fn decode(field: Option<&str>, name: &str) -> Result<Vec<u8>, String> {
    let text = field.ok_or_else(|| format!("no {name}"))?;
    B64.decode(text)
        .map_err(|_| format!("{name} is not base64"))
}

impl Plan {
    /// Checks one answer; `Err` says why it is not a proper answer to the request.
    pub fn check(&self, answer: &Answer) -> Result<(), String> {
        if answer.status != 200 {
            return Err(answer.error_summary());
        }
        let bad =
            |e: serde_json::Error| format!("HTTP 200 but not a {} answer: {e}", self.op.name());
        match self.op {
            Op::CreateKey => {
                let created: CreateKeyAnswer = serde_json::from_slice(&answer.body).map_err(bad)?;
                let meta = created.key_metadata;
                if meta.key_id.is_empty() || !meta.arn.is_some_and(|a| a.ends_with(meta.key_id)) {
                    return Err("CreateKey answered a key without a matching KeyId and Arn".into());
                }
                if meta.key_state != Some("Enabled") {
                    return Err(format!("new key is {:?}, not Enabled", meta.key_state));
                }
                match &self.key_store {
                    Some(store)
                        if meta.origin != Some("AWS_CLOUDHSM")
                            || meta.custom_key_store_id != Some(store.as_str()) =>
                    {
                        return Err("new key is not in the key store".into());
                    }
                    Some(_) => {}
                    None if meta.origin != Some("AWS_KMS") => {
                        return Err(format!(
                            "new key's origin is {:?}, not AWS_KMS",
                            meta.origin
                        ));
                    }
                    None => {}
                }
            }
            _ => {
                let got: CryptoAnswer = serde_json::from_slice(&answer.body).map_err(bad)?;
                if got.key_id != Some(self.key_arn.as_str()) {
                    return Err(format!(
                        "answer names key {:?}, not {}",
                        got.key_id, self.key_arn
                    ));
                }
                match self.op {
                    Op::Encrypt => {
                        let blob = decode(got.ciphertext_blob, "CiphertextBlob")?;
                        if blob.len() < self.plaintext.len() + MIN_SEALING_OVERHEAD
                            || blob == self.plaintext
                        {
                            return Err("CiphertextBlob cannot hold a sealed plaintext".into());
                        }
                    }
                    Op::Decrypt => {
                        if decode(got.plaintext, "Plaintext")? != self.plaintext {
                            return Err("Plaintext is not what was encrypted".into());
                        }
                    }
                    Op::GenerateDataKey => {
                        let key = decode(got.plaintext, "Plaintext")?;
                        if key.len() != 32 {
                            return Err("data key is not 32 bytes".into());
                        }
                        let blob = decode(got.ciphertext_blob, "CiphertextBlob")?;
                        if blob.len() < key.len() + MIN_SEALING_OVERHEAD || blob == key {
                            return Err("CiphertextBlob cannot hold a sealed data key".into());
                        }
                    }
                    Op::Sign | Op::Verify => {
                        let algorithm = self.algorithm.as_deref();
                        if got.signing_algorithm != algorithm {
                            return Err(format!(
                                "SigningAlgorithm is {:?}, not {algorithm:?}",
                                got.signing_algorithm
                            ));
                        }
                        if self.op == Op::Verify {
                            if got.signature_valid != Some(true) {
                                return Err("SignatureValid is not true".into());
                            }
                        } else {
                            let signature = decode(got.signature, "Signature")?;
                            if !plausible_signature(algorithm.unwrap_or_default(), &signature) {
                                return Err(format!(
                                    "Signature cannot be a {} signature",
                                    algorithm.unwrap_or_default()
                                ));
                            }
                        }
                    }
                    Op::GenerateMac | Op::VerifyMac => {
                        let algorithm = self.algorithm.as_deref();
                        if got.mac_algorithm != algorithm {
                            return Err(format!(
                                "MacAlgorithm is {:?}, not {algorithm:?}",
                                got.mac_algorithm
                            ));
                        }
                        if self.op == Op::VerifyMac {
                            if got.mac_valid != Some(true) {
                                return Err("MacValid is not true".into());
                            }
                        } else if decode(got.mac, "Mac")? != self.mac {
                            return Err("Mac is not the message's MAC made at set-up".into());
                        }
                    }
                    Op::CreateKey => {}
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn plan(op: Op) -> Plan {
        Plan {
            op,
            key_arn: ARN.into(),
            key_store: None,
            plaintext: b"attack at dawn".to_vec(),
            algorithm: op.key_kind().map(|(_, _, a)| a.to_string()),
            mac: Vec::new(),
            body: Vec::new(),
            target: op.target(),
        }
    }

    fn answer(status: u16, body: Value) -> Answer {
        Answer {
            status,
            body: serde_json::to_vec(&body).unwrap_or_default().into(),
        }
    }

    #[test]
    fn a_proper_answer_passes_and_anything_else_is_an_error() {
        let encrypt = plan(Op::Encrypt);
        let blob = B64.encode([7u8; 64]);
        assert_eq!(
            encrypt.check(&answer(200, json!({"KeyId": ARN, "CiphertextBlob": blob}))),
            Ok(())
        );
        // The plaintext handed back, or too short to hold a nonce and a tag.
        let echoed = B64.encode(b"attack at dawn");
        let short = B64.encode([7u8; 14 + 27]);
        // A 200 that is not an Encrypt answer, names another key, or carries no valid blob.
        for bad in [
            json!({}),
            json!({"KeyId": "arn:aws:kms:us-east-1:111122223333:key/other", "CiphertextBlob": blob}),
            json!({"KeyId": ARN, "CiphertextBlob": "not base64!"}),
            json!({"KeyId": ARN, "CiphertextBlob": B64.encode([1u8; 3])}),
            json!({"KeyId": ARN, "CiphertextBlob": echoed}),
            json!({"KeyId": ARN, "CiphertextBlob": short}),
            json!({"KeyId": ARN}),
        ] {
            assert!(encrypt.check(&answer(200, bad.clone())).is_err(), "{bad}");
        }
        let not_json = Answer {
            status: 200,
            body: bytes::Bytes::from_static(b"<html>ok</html>"),
        };
        assert!(encrypt.check(&not_json).is_err());
        // An AWS error is reported by type and message.
        let throttled = answer(
            400,
            json!({"__type": "ThrottlingException", "message": "Rate exceeded"}),
        );
        assert_eq!(
            encrypt.check(&throttled),
            Err("HTTP 400 ThrottlingException: Rate exceeded".into())
        );
    }

    #[test]
    fn decrypt_must_give_back_the_plaintext() {
        let decrypt = plan(Op::Decrypt);
        let right = json!({"KeyId": ARN, "Plaintext": B64.encode(b"attack at dawn")});
        let wrong = json!({"KeyId": ARN, "Plaintext": B64.encode(b"attack at dusk")});
        assert_eq!(decrypt.check(&answer(200, right)), Ok(()));
        assert!(decrypt.check(&answer(200, wrong)).is_err());
    }

    #[test]
    fn a_new_key_must_be_enabled_and_in_the_store_asked_for() {
        let mut create = plan(Op::CreateKey);
        create.key_store = Some("cks-1234567890abcdef0".into());
        let key = |origin: &str, store: &str, state: &str| {
            answer(
                200,
                json!({"KeyMetadata": {"KeyId": "k1", "Arn": "arn:aws:kms:us-east-1:1:key/k1",
                    "KeyState": state, "Origin": origin, "CustomKeyStoreId": store}}),
            )
        };
        assert_eq!(
            create.check(&key("AWS_CLOUDHSM", "cks-1234567890abcdef0", "Enabled")),
            Ok(())
        );
        assert!(create
            .check(&key("AWS_KMS", "cks-1234567890abcdef0", "Enabled"))
            .is_err());
        assert!(create
            .check(&key("AWS_CLOUDHSM", "cks-other", "Enabled"))
            .is_err());
        assert!(create
            .check(&key("AWS_CLOUDHSM", "cks-1234567890abcdef0", "Unavailable"))
            .is_err());
        // Without a store, the key must be KMS's own.
        create.key_store = None;
        assert_eq!(create.check(&key("AWS_KMS", "", "Enabled")), Ok(()));
        assert!(create
            .check(&key("AWS_CLOUDHSM", "cks-1234567890abcdef0", "Enabled"))
            .is_err());
    }

    #[test]
    fn a_data_key_must_be_32_bytes() {
        let gdk = plan(Op::GenerateDataKey);
        let blob = B64.encode([7u8; 80]);
        let ok = json!({"KeyId": ARN, "Plaintext": B64.encode([1u8; 32]), "CiphertextBlob": blob});
        let short =
            json!({"KeyId": ARN, "Plaintext": B64.encode([1u8; 16]), "CiphertextBlob": blob});
        let same = json!({"KeyId": ARN, "Plaintext": B64.encode([1u8; 32]), "CiphertextBlob": B64.encode([1u8; 32])});
        assert_eq!(gdk.check(&answer(200, ok)), Ok(()));
        assert!(gdk.check(&answer(200, short)).is_err());
        assert!(gdk.check(&answer(200, same)).is_err());
    }

    /// A DER ECDSA P-256 signature: SEQUENCE { INTEGER r, INTEGER s }, 70 bytes.
    fn ecdsa_signature() -> Vec<u8> {
        let mut sig = vec![0x30, 68, 0x02, 32];
        sig.extend([1u8; 32]);
        sig.extend([0x02, 32]);
        sig.extend([2u8; 32]);
        sig
    }

    #[test]
    fn a_signature_must_name_the_algorithm_and_be_one() {
        let sign = plan(Op::Sign);
        let sig = B64.encode(ecdsa_signature());
        let ok = json!({"KeyId": ARN, "Signature": sig, "SigningAlgorithm": "ECDSA_SHA_256"});
        assert_eq!(sign.check(&answer(200, ok)), Ok(()));
        // Another algorithm, no signature, one that is not DER, another key.
        let truncated = B64.encode(&ecdsa_signature()[..40]);
        for bad in [
            json!({"KeyId": ARN, "Signature": sig, "SigningAlgorithm": "ECDSA_SHA_384"}),
            json!({"KeyId": ARN, "SigningAlgorithm": "ECDSA_SHA_256"}),
            json!({"KeyId": ARN, "Signature": B64.encode(b"attack at dawn"), "SigningAlgorithm": "ECDSA_SHA_256"}),
            json!({"KeyId": ARN, "Signature": truncated, "SigningAlgorithm": "ECDSA_SHA_256"}),
            json!({"KeyId": "arn:aws:kms:us-east-1:111122223333:key/other", "Signature": sig, "SigningAlgorithm": "ECDSA_SHA_256"}),
        ] {
            assert!(sign.check(&answer(200, bad.clone())).is_err(), "{bad}");
        }
        // DER's long form (P-521's signatures pass 127 bytes); RSA's length.
        let mut long = vec![0x30, 0x81, 135];
        long.extend([0u8; 135]);
        assert!(plausible_signature("ECDSA_SHA_512", &long));
        assert!(!plausible_signature("ECDSA_SHA_512", &long[..100]));
        assert!(plausible_signature("RSASSA_PSS_SHA_256", &[5u8; 256]));
        assert!(!plausible_signature("RSASSA_PSS_SHA_256", &[5u8; 70]));
    }

    #[test]
    fn a_verification_must_say_valid() {
        let verify = plan(Op::Verify);
        let ok = json!({"KeyId": ARN, "SignatureValid": true, "SigningAlgorithm": "ECDSA_SHA_256"});
        assert_eq!(verify.check(&answer(200, ok)), Ok(()));
        for bad in [
            json!({"KeyId": ARN, "SignatureValid": false, "SigningAlgorithm": "ECDSA_SHA_256"}),
            json!({"KeyId": ARN, "SigningAlgorithm": "ECDSA_SHA_256"}),
            json!({"KeyId": ARN, "SignatureValid": true}),
        ] {
            assert!(verify.check(&answer(200, bad.clone())).is_err(), "{bad}");
        }
        // KMS answers a signature that does not verify with an error, not SignatureValid false.
        let invalid = answer(400, json!({"__type": "KMSInvalidSignatureException"}));
        assert!(verify.check(&invalid).is_err());
    }

    #[test]
    fn every_mac_must_be_the_one_made_at_set_up() {
        let mut generate = plan(Op::GenerateMac);
        generate.mac = vec![9u8; 32];
        let ok =
            json!({"KeyId": ARN, "Mac": B64.encode([9u8; 32]), "MacAlgorithm": "HMAC_SHA_256"});
        assert_eq!(generate.check(&answer(200, ok)), Ok(()));
        for bad in [
            json!({"KeyId": ARN, "Mac": B64.encode([8u8; 32]), "MacAlgorithm": "HMAC_SHA_256"}),
            json!({"KeyId": ARN, "Mac": B64.encode([9u8; 32]), "MacAlgorithm": "HMAC_SHA_512"}),
            json!({"KeyId": ARN, "MacAlgorithm": "HMAC_SHA_256"}),
        ] {
            assert!(generate.check(&answer(200, bad.clone())).is_err(), "{bad}");
        }
        let verify = plan(Op::VerifyMac);
        let ok = json!({"KeyId": ARN, "MacValid": true, "MacAlgorithm": "HMAC_SHA_256"});
        let bad = json!({"KeyId": ARN, "MacValid": false, "MacAlgorithm": "HMAC_SHA_256"});
        assert_eq!(verify.check(&answer(200, ok)), Ok(()));
        assert!(verify.check(&answer(200, bad)).is_err());
    }

    #[test]
    fn signing_and_mac_runs_make_the_key_they_need() {
        let sign = run_key_body(Op::Verify, None);
        assert_eq!(
            (&sign["KeySpec"], &sign["KeyUsage"]),
            (&json!("ECC_NIST_P256"), &json!("SIGN_VERIFY"))
        );
        let mac = run_key_body(Op::GenerateMac, None);
        assert_eq!(
            (&mac["KeySpec"], &mac["KeyUsage"]),
            (&json!("HMAC_256"), &json!("GENERATE_VERIFY_MAC"))
        );
        // Encrypt's key is CreateKey's default: no spec or usage named.
        assert!(run_key_body(Op::Encrypt, None).get("KeySpec").is_none());
    }
}
