//! Sealing and opening ciphertext blobs, shared by the operations that encrypt and decrypt:
//! in the frontend for AWS_KMS keys, on an HSM for key store keys.

use std::collections::BTreeMap;
use std::sync::Arc;

use hsmkms_common::secret::SecretBytes;
use uuid::Uuid;

use crate::frontend::Frontend;
use crate::service::ciphertext::{self, Header};
use crate::service::error::KmsError;
use crate::service::key_spec::{KeySpec, KeyUsage};
use crate::service::key_state::KeyOp;
use crate::service::model::KeyOrigin;
use crate::service::registry::UsableKey;

/// Seals `plaintext` under a usable key: in the frontend for AWS_KMS keys, on an HSM for key
/// store keys. Returns the ciphertext blob.
pub(super) async fn seal(
    fe: &Arc<Frontend>,
    key: &UsableKey,
    plaintext: &[u8],
    ctx: &BTreeMap<String, String>,
) -> Result<Vec<u8>, KmsError> {
    let header = Header {
        key_id: key.record.key_id,
        material: key.material,
    };
    let aad = ciphertext::aad(&header, ctx);
    let sealed = match (&key.sealer, &key.record.origin) {
        (Some(sealer), _) => sealer.seal(plaintext, &aad),
        (
            None,
            KeyOrigin::CloudHsm {
                custom_key_store_id,
                backing_key,
                ..
            },
        ) => {
            fe.hsm
                .encrypt(custom_key_store_id, backing_key.key_handle, plaintext, &aad)
                .await?
        }
        (None, _) => return Err(not_loaded()),
    };
    Ok(ciphertext::assemble(&header, &sealed))
}

/// What a Decrypt or ReEncrypt `KeyId` names, from the one lookup that decides the path.
#[derive(Debug, Clone, Copy)]
pub(super) struct NamedKey {
    pub id: Uuid,
    /// An asymmetric ENCRYPT_DECRYPT key, whose ciphertexts are RSAES-OAEP, not this
    /// frontend's blobs. A KeyId of a signing, MAC or key agreement key takes the symmetric
    /// path, where a ciphertext of another key is IncorrectKeyException, as AWS answers a
    /// symmetric ciphertext with an HMAC KeyId (recorded), not InvalidKeyUsageException.
    pub asymmetric_encryption: bool,
}

/// Looks a `KeyId` up once. Its error is kept for the symmetric path to answer after the
/// blob's own checks, in the order it always had.
pub(super) fn named_key(fe: &Frontend, key_id: &str) -> Result<NamedKey, KmsError> {
    fe.registry().resolve(key_id, true).map(|r| NamedKey {
        id: r.key_id,
        asymmetric_encryption: r.spec() != KeySpec::SymmetricDefault
            && r.usage() == KeyUsage::EncryptDecrypt,
    })
}

/// Opens a ciphertext blob: finds its key (checking that the key a KeyId named, looked up by
/// [`named_key`], is it), checks the key's state for `op`, and decrypts. Returns the plaintext
/// and the key.
pub(super) async fn open(
    fe: &Arc<Frontend>,
    blob: &[u8],
    named: Option<Result<NamedKey, KmsError>>,
    ctx: &BTreeMap<String, String>,
    op: KeyOp,
) -> Result<(SecretBytes, UsableKey), KmsError> {
    let (header, sealed) = ciphertext::parse(blob)?;
    let key = {
        let reg = fe.registry();
        // The blob's key as the request's Region sees it: itself, or for a multi-Region key
        // the key of its family that lives there.
        let record = reg
            .key_for_blob(&header.key_id)
            .and_then(|id| reg.by_id(&id))
            .ok_or_else(|| {
                KmsError::NotFound(format!(
                    "Key '{}' does not exist",
                    reg.scope().key_arn(&header.key_id)
                ))
            })?;
        if let Some(named) = named {
            if named?.id != record.key_id {
                return Err(KmsError::IncorrectKey(
                    "The key ID in the request does not identify a CMK that can perform this operation.".into(),
                ));
            }
        }
        let mut key = reg.usable_by_id(&record.key_id, op)?;
        // The material the blob names, which may be an earlier one than the key's current.
        if header.material != key.material {
            key.material = header.material;
            key.sealer = reg.sealer_at(&record.key_id, header.material);
            if key.sealer.is_none() {
                return Err(KmsError::invalid_ciphertext());
            }
        }
        key
    };
    let aad = ciphertext::aad(&header, ctx);
    let plaintext = match (&key.sealer, &key.record.origin) {
        (Some(sealer), _) => sealer
            .open(sealed, &aad)
            .map_err(|_| KmsError::invalid_ciphertext())?,
        (
            None,
            KeyOrigin::CloudHsm {
                custom_key_store_id,
                backing_key,
                ..
            },
        ) => {
            fe.hsm
                .decrypt(custom_key_store_id, backing_key.key_handle, sealed, &aad)
                .await?
        }
        (None, _) => return Err(not_loaded()),
    };
    Ok((plaintext, key))
}

/// An AWS_KMS key whose material the registry did not unwrap: a defect, never a client's doing.
fn not_loaded() -> KmsError {
    KmsError::KmsInternal("key material is not loaded".into())
}
