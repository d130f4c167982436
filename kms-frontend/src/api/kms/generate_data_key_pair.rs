//! GenerateDataKeyPair and GenerateDataKeyPairWithoutPlaintext: a new key pair whose private
//! key (PKCS#8 DER) comes back encrypted under a symmetric encryption key.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::checks::*;
use super::envelope::seal;
use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::asymmetric;
use crate::service::error::KmsError;
use crate::service::key_spec::KeySpec;
use crate::service::key_state::KeyOp;

/// KMS's `DataKeyPairSpec` enum.
const PAIR_SPECS: [&str; 12] = [
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "SM2",
    "ECC_NIST_EDWARDS25519",
    "ML_KEM_512",
    "ML_KEM_768",
    "ML_KEM_1024",
];

pub(super) async fn generate(
    fe: &Arc<Frontend>,
    req: GenerateDataKeyPairRequest,
    with_plaintext: bool,
) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let pair_spec = required(req.key_pair_spec, "keyPairSpec")?;
    check_enum(&pair_spec, "keyPairSpec", &PAIR_SPECS)?;
    check_grant_tokens(&req.grant_tokens)?;
    if req.recipient.is_some() {
        return Err(recipient_unsupported());
    }
    let op = if with_plaintext {
        KeyOp::GenerateDataKeyPair
    } else {
        KeyOp::GenerateDataKeyPairWithoutPlaintext
    };
    let key = fe.registry().usable(&key_id, op)?;
    if key.record.origin.store_id().is_some() {
        return Err(KmsError::UnsupportedOperation(format!(
            "{} is in a custom key store, which does not support {}.",
            key.arn,
            if with_plaintext {
                "GenerateDataKeyPair"
            } else {
                "GenerateDataKeyPairWithoutPlaintext"
            }
        )));
    }
    let spec = KeySpec::parse(&pair_spec, "keyPairSpec")?;
    if spec == KeySpec::Sm2 {
        return Err(KmsError::UnsupportedOperation(
            "KeyPairSpec SM2 is only available in the China Regions.".into(),
        ));
    }
    dry_run(req.dry_run)?;
    // Key pairs are made on a blocking thread (an RSA 4096 key takes up to a second).
    let entropy = fe.entropy.clone();
    let (private, public) = tokio::task::spawn_blocking(move || {
        let material = asymmetric::generate(spec, entropy.as_ref())?;
        let public = asymmetric::public_key(spec, material.expose())?;
        let private = asymmetric::private_key_pkcs8(spec, &material)?;
        Ok::<_, KmsError>((private, public))
    })
    .await
    .map_err(|_| KmsError::KmsInternal("Key generation did not complete.".into()))??;
    let ctx = req.encryption_context.unwrap_or_default();
    let blob = seal(fe, &key, private.expose(), &ctx).await?;
    let material_id = fe.registry().material_id(&key.record.key_id, key.material);
    let mut answer = json!({
        "PrivateKeyCiphertextBlob": B64.encode(blob),
        "PublicKey": B64.encode(public),
        "KeyId": key.arn,
        "KeyPairSpec": pair_spec,
        "KeyMaterialId": material_id,
    });
    if with_plaintext {
        answer["PrivateKeyPlaintext"] = json!(B64.encode(private.expose()));
    }
    Ok(answer)
}
