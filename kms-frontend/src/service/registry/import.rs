//! Imported key material (EXTERNAL keys): the import tokens GetParametersForImport hands out,
//! ImportKeyMaterial, DeleteImportedKeyMaterial and the expiry of material whose ValidTo passed
//! on the emulator clock, planned as changes like every other write.
//!
//! An import token is self-contained: the key it is for, the wrapping algorithm, the wrapping
//! key's private half and its expiry, sealed under the frontend's master key. So tokens survive
//! restarts and need no table, and a token cannot be forged or moved to another key.

use aws_lc_rs::hmac;
use hsmkms_common::secret::{KeyMaterial, SecretBytes};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::{Registry, DAY_MILLIS};
use crate::service::error::KmsError;
use crate::service::key_spec::KeySpec;
use crate::service::key_state::KeyOp;
use crate::service::model::{ImportedMaterial, KeyOrigin, KeyRecord};

/// How long a wrapping key and its import token are valid.
pub const IMPORT_PARAMETERS_VALIDITY_MILLIS: u64 = DAY_MILLIS;
/// The furthest ValidTo ImportKeyMaterial takes: 365 days ahead.
pub const MAX_VALID_TO_MILLIS: u64 = 365 * DAY_MILLIS;

const TOKEN_CONTEXT: &[u8] = b"hsmkms/import-token/v1";

/// What an import token carries.
#[derive(Serialize, Deserialize)]
pub struct ImportToken {
    pub key_id: Uuid,
    pub wrapping_algorithm: String,
    /// The wrapping key's private half, PKCS#8.
    pub wrapping_key: Zeroizing<Vec<u8>>,
    pub valid_to_millis: u64,
}

impl std::fmt::Debug for ImportToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportToken")
            .field("key_id", &self.key_id)
            .field("wrapping_algorithm", &self.wrapping_algorithm)
            .field("valid_to_millis", &self.valid_to_millis)
            .finish_non_exhaustive()
    }
}

/// What imported material is sealed with, apart from every other material of every key.
pub(super) fn imported_context(id: &Uuid) -> Vec<u8> {
    let mut ctx = b"hsmkms/kms-key-imported/v1/".to_vec();
    ctx.extend_from_slice(id.as_bytes());
    ctx
}

/// The HMAC-SHA-256 key of imported materials' ids: HMAC of a label under the master key (one
/// block of HKDF-Expand), so it is the master key's alone and never one of its other uses.
pub(super) fn material_id_key(master: &KeyMaterial) -> hmac::Key {
    let master = hmac::Key::new(hmac::HMAC_SHA256, master.expose());
    let derived = Zeroizing::new(
        hmac::sign(&master, b"hsmkms/imported-material-id-key/v1\x01")
            .as_ref()
            .to_vec(),
    );
    hmac::Key::new(hmac::HMAC_SHA256, &derived)
}

/// The id earlier versions gave imported material (unkeyed SHA-256), still recognised so that
/// material imported before ids were keyed can be imported again.
pub(super) fn legacy_material_id(id: &Uuid, material: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"hsmkms/imported-material-id/v1/")
        .chain_update(id.as_bytes())
        .chain_update(material)
        .finalize();
    hex::encode(digest)
}

impl Registry {
    /// The `KeyMaterialId` of material imported into a key: the same material gets the same
    /// id. Keyed (HMAC under a key derived from the master key): an unkeyed hash of material
    /// would let anyone who sees the id test guesses of the material against it.
    pub fn imported_material_id(&self, id: &Uuid, material: &[u8]) -> String {
        // A multi-Region family's keys take the same material under the same id.
        let base = self.family_of(id).unwrap_or(*id);
        let mut ctx = hmac::Context::with_key(&self.material_id_key);
        ctx.update(b"hsmkms/imported-material-id/v2/");
        ctx.update(base.as_bytes());
        ctx.update(material);
        hex::encode(ctx.sign().as_ref())
    }

    /// The EXTERNAL key `key_id` names (a key id or ARN, no alias), or AWS's error for another
    /// origin (recorded text).
    pub fn external_key(&self, key_id: &str, op: KeyOp) -> Result<&KeyRecord, KmsError> {
        let record = self.checked(key_id, false, op)?;
        if !matches!(record.origin, KeyOrigin::External { .. }) {
            return Err(KmsError::UnsupportedOperation(format!(
                "{} origin is {} which is not valid for this operation.",
                self.key_arn(&record.key_id),
                record.origin.as_str()
            )));
        }
        Ok(record)
    }

    /// A sealed import token.
    pub fn seal_import_token(&self, token: &ImportToken) -> Result<Vec<u8>, KmsError> {
        let bytes = Zeroizing::new(
            postcard::to_allocvec(token).map_err(|e| KmsError::KmsInternal(e.to_string()))?,
        );
        Ok(self.master.seal(&bytes, TOKEN_CONTEXT))
    }

    /// An import token's content, if it is one this frontend sealed.
    pub fn open_import_token(&self, sealed: &[u8]) -> Option<ImportToken> {
        let bytes = self.master.open(sealed, TOKEN_CONTEXT).ok()?;
        postcard::from_bytes(bytes.expose()).ok()
    }

    /// EXTERNAL keys with material whose ValidTo passed at `now`.
    pub fn due_expirations(&self, now_millis: u64) -> Vec<Uuid> {
        let mut due: Vec<Uuid> = self
            .expiries()
            .filter(|(_, t)| *t <= now_millis)
            .map(|(id, _)| id)
            .collect();
        due.sort();
        due.dedup();
        due
    }

    /// The earliest expiry of imported material, if any.
    pub fn next_expiration(&self) -> Option<u64> {
        self.expiries().map(|(_, t)| t).min()
    }

    /// Takes in the material of an EXTERNAL key as it now is.
    pub(super) fn install_imported(
        &mut self,
        id: Uuid,
        spec: KeySpec,
        imported: Option<&ImportedMaterial>,
    ) -> Result<(), crate::store::StoreError> {
        let Some(imported) = imported else {
            return Ok(());
        };
        let mut bytes = self
            .master
            .open(&imported.wrapped_material, &imported_context(&id))
            .map_err(|_| {
                crate::store::StoreError::Corrupt(format!(
                    "imported material of key {id} does not unwrap"
                ))
            })?;
        if spec == KeySpec::SymmetricDefault {
            let mut raw = bytes.expose().to_vec();
            let material =
                hsmkms_common::secret::KeyMaterial::from_slice(&mut raw).ok_or_else(|| {
                    crate::store::StoreError::Corrupt(format!(
                        "imported material of key {id} is not 32 bytes"
                    ))
                })?;
            zeroize::Zeroize::zeroize(&mut raw);
            self.materials.insert(id, material);
        } else {
            self.typed.insert(
                id,
                std::mem::replace(&mut bytes, SecretBytes::new(Vec::new())),
            );
        }
        Ok(())
    }
}
