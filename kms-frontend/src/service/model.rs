//! What the frontend keeps about keys, aliases and custom key stores: the records that are
//! persisted (postcard, in the frontend's store) and loaded at start. No logic here.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::connection_state::ConnectionState;
use super::key_spec::{KeySpec, KeyUsage};

/// A key's scheduled deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDeletion {
    /// When the waiting period ends, on the emulator clock (ms since the epoch).
    pub deletion_date_millis: u64,
    pub window_days: u32,
}

/// The backing key of a custom key store key: a key object in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackingKey {
    pub key_handle: u64,
    /// An opaque id KMS reports for the material (CloudTrail's `backingKeyId`).
    pub backing_key_id: String,
}

/// Where a key's material lives.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyOrigin {
    /// `AWS_KMS`: material generated and held by the frontend, wrapped under its master key.
    AwsKms { wrapped_material: Vec<u8> },
    /// `AWS_CLOUDHSM`: material only in the cluster behind a custom key store.
    CloudHsm {
        custom_key_store_id: String,
        cluster_id: String,
        backing_key: BackingKey,
    },
    /// `AWS_KMS` with another spec than SYMMETRIC_DEFAULT (asymmetric and HMAC keys): the
    /// private key (PKCS#8 DER) or HMAC key, wrapped under the frontend's master key. After the
    /// first two variants, so records written before it read unchanged (postcard numbers
    /// variants in order).
    AwsKmsTyped {
        spec: KeySpec,
        usage: KeyUsage,
        wrapped_material: Vec<u8>,
    },
    /// `EXTERNAL`: material the caller imports (ImportKeyMaterial); none until then, and none
    /// again after DeleteImportedKeyMaterial or its expiry (the key is then PendingImport).
    External {
        spec: KeySpec,
        usage: KeyUsage,
        /// The `KeyMaterialId` of the material first imported, kept when it is deleted or
        /// expires: only that material can be imported again.
        material_id: Option<String>,
        imported: Option<ImportedMaterial>,
    },
}

/// Key material imported into an EXTERNAL key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedMaterial {
    /// The material (32 bytes, an HMAC key or a PKCS#8 private key), sealed under the
    /// frontend's master key.
    pub wrapped_material: Vec<u8>,
    /// When it expires on the emulator clock (`KEY_MATERIAL_EXPIRES`), or never.
    pub valid_to_millis: Option<u64>,
}

impl fmt::Debug for ImportedMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportedMaterial")
            .field("valid_to_millis", &self.valid_to_millis)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for KeyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyOrigin::AwsKms { .. } => f.write_str("AwsKms { wrapped_material: <redacted> }"),
            KeyOrigin::AwsKmsTyped { spec, usage, .. } => f
                .debug_struct("AwsKmsTyped")
                .field("spec", spec)
                .field("usage", usage)
                .finish_non_exhaustive(),
            KeyOrigin::External {
                spec,
                usage,
                material_id,
                imported,
            } => f
                .debug_struct("External")
                .field("spec", spec)
                .field("usage", usage)
                .field("material_id", material_id)
                .field("imported", imported)
                .finish(),
            KeyOrigin::CloudHsm {
                custom_key_store_id,
                cluster_id,
                backing_key,
            } => f
                .debug_struct("CloudHsm")
                .field("custom_key_store_id", custom_key_store_id)
                .field("cluster_id", cluster_id)
                .field("backing_key", backing_key)
                .finish(),
        }
    }
}

impl KeyOrigin {
    /// The AWS name of the origin.
    pub fn as_str(&self) -> &'static str {
        match self {
            KeyOrigin::AwsKms { .. } | KeyOrigin::AwsKmsTyped { .. } => "AWS_KMS",
            KeyOrigin::CloudHsm { .. } => "AWS_CLOUDHSM",
            KeyOrigin::External { .. } => "EXTERNAL",
        }
    }

    /// The handle of a key store key's backing key.
    pub fn backing_handle(&self) -> Option<u64> {
        match self {
            KeyOrigin::AwsKms { .. }
            | KeyOrigin::AwsKmsTyped { .. }
            | KeyOrigin::External { .. } => None,
            KeyOrigin::CloudHsm { backing_key, .. } => Some(backing_key.key_handle),
        }
    }

    /// The custom key store the key lives in, if any.
    pub fn store_id(&self) -> Option<&str> {
        match self {
            KeyOrigin::AwsKms { .. }
            | KeyOrigin::AwsKmsTyped { .. }
            | KeyOrigin::External { .. } => None,
            KeyOrigin::CloudHsm {
                custom_key_store_id,
                ..
            } => Some(custom_key_store_id),
        }
    }
}

/// A KMS key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub key_id: Uuid,
    pub created_at_millis: u64,
    pub description: String,
    /// The underlying enabled flag; the reported state also depends on deletion and the store.
    pub enabled: bool,
    pub deletion: Option<PendingDeletion>,
    pub origin: KeyOrigin,
    /// Shared between keys that have the same document (most have the default policy), so
    /// 100,000 keys do not hold 100,000 copies of it; stored as a plain string.
    pub policy: Arc<str>,
    pub tags: BTreeMap<String, String>,
}

impl KeyRecord {
    /// An EXTERNAL key without material: PendingImport.
    pub fn pending_import(&self) -> bool {
        matches!(&self.origin, KeyOrigin::External { imported: None, .. })
    }

    /// The id of an EXTERNAL key's material, once some was imported.
    pub fn imported_material_id(&self) -> Option<&str> {
        match &self.origin {
            KeyOrigin::External { material_id, .. } => material_id.as_deref(),
            _ => None,
        }
    }

    /// The imported material of an EXTERNAL key, if it has some.
    pub fn imported(&self) -> Option<&ImportedMaterial> {
        match &self.origin {
            KeyOrigin::External { imported, .. } => imported.as_ref(),
            _ => None,
        }
    }

    /// The key's spec (SYMMETRIC_DEFAULT for every key but asymmetric and HMAC ones).
    pub fn spec(&self) -> KeySpec {
        match &self.origin {
            KeyOrigin::AwsKmsTyped { spec, .. } | KeyOrigin::External { spec, .. } => *spec,
            _ => KeySpec::SymmetricDefault,
        }
    }

    /// The key's usage.
    pub fn usage(&self) -> KeyUsage {
        match &self.origin {
            KeyOrigin::AwsKmsTyped { usage, .. } | KeyOrigin::External { usage, .. } => *usage,
            _ => KeyUsage::EncryptDecrypt,
        }
    }
}

/// Where a key lives when that is not the home Region and account, or when it is a
/// multi-Region key: stored apart from the key's record (the places table, by key id), so
/// records written before every Region was served keep their layout, and a key without a row
/// is in the home scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPlace {
    pub region: String,
    pub account_id: String,
    /// For a multi-Region key: the 32 hex digits after `mrk-`, shared by the primary key and
    /// its replicas (each of which has a record, and an internal id, of its own).
    pub multi_region: Option<Uuid>,
    /// Whether this multi-Region key is its family's primary key.
    pub primary: bool,
}

/// The materials of a symmetric EXTERNAL key besides its current one (whose bytes and ValidTo
/// are in the key's record): every material it rotated from, and the one imported for its next
/// on-demand rotation. Stored apart from the record (the imports table), so records keep their
/// layout; a key without a row has only its current material, number 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedMaterials {
    /// The number ciphertexts give the current material.
    pub current: u32,
    /// The current material's KeyMaterialDescription.
    pub current_description: Option<String>,
    /// When the current material became current by a rotation (none for the first).
    pub current_rotated_at_millis: Option<u64>,
    /// The materials the key rotated from, by number: permanently associated with the key, so
    /// one that is not imported (deleted or expired) leaves the key PendingImport.
    pub others: BTreeMap<u32, ImportedRotation>,
    /// Material imported (ImportType NEW_KEY_MATERIAL) and waiting for RotateKeyOnDemand.
    pub pending: Option<ImportedRotation>,
}

impl ImportedMaterials {
    /// Whether a material the key rotated from is missing.
    pub fn other_missing(&self) -> bool {
        self.others.values().any(|o| o.imported.is_none())
    }
}

/// One imported material of a symmetric EXTERNAL key that is not its current one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedRotation {
    pub material_id: String,
    pub description: Option<String>,
    /// The material and its expiry; none once deleted or expired.
    pub imported: Option<ImportedMaterial>,
    /// When it became current (none for the first material, and while pending rotation).
    pub rotated_at_millis: Option<u64>,
}

/// An alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasRecord {
    pub name: String,
    pub target_key_id: Uuid,
    pub created_at_millis: u64,
    pub updated_at_millis: u64,
}

/// A custom key store of type AWS_CLOUDHSM.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStoreRecord {
    pub id: String,
    pub name: String,
    pub cluster_id: String,
    pub trust_anchor: String,
    /// The kmsuser password KMS uses, wrapped under the frontend's master key.
    pub wrapped_password: Vec<u8>,
    /// A rotated password not yet confirmed in the cluster (set before a rotation, cleared
    /// after), so a crash mid-rotation never loses the password the cluster has.
    pub wrapped_pending_password: Option<Vec<u8>>,
    pub state: ConnectionState,
    pub created_at_millis: u64,
}

impl fmt::Debug for KeyStoreRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStoreRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("cluster_id", &self.cluster_id)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// A KMS key deleted at the end of its waiting period whose effects have not all run: the
/// best-effort delete of its backing key, the audit record and the event. Persisted with the
/// key's removal, so a stop between the two is finished by the next start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionTask {
    pub key_id: Uuid,
    /// The key's origin as it was (without material for AWS_KMS keys).
    pub backing: Option<DeletedBacking>,
    pub deleted_aliases: Vec<String>,
    /// When the key was removed, on the emulator clock.
    pub deleted_at_millis: u64,
    /// Where the key lived (its place record; `None` for a single-Region key of the home
    /// scope): the record and the event name it by its own ARN, Region and account, though
    /// its place leaves the registry with it. Stored last: tasks written before it end before
    /// it (see `crate::frontend`'s `decode_task`).
    pub place: Option<KeyPlace>,
}

/// The backing key of a deleted key store key, to be deleted from its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedBacking {
    pub custom_key_store_id: String,
    pub cluster_id: String,
    pub backing_key: BackingKey,
}

/// A grant on a KMS key (CreateGrant): who may use the key for which operations, under which
/// encryption context constraints. Stored and listed as AWS does; not yet enforced (hsmkms
/// does not evaluate key policies either, so every caller may use every key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    /// 64 hex digits, as AWS's grant ids are.
    pub grant_id: String,
    pub key_id: Uuid,
    pub name: Option<String>,
    pub grantee_principal: String,
    pub retiring_principal: Option<String>,
    /// The ARN of the account that created the grant (`arn:aws:iam::<account>:root`).
    pub issuing_account: String,
    /// Operation names, in the order the request gave them, without repeats.
    pub operations: Vec<String>,
    pub constraints: Option<GrantConstraints>,
    pub created_at_millis: u64,
    /// Random bytes the grant's tokens carry besides its id (a token is opaque to callers).
    pub token_nonce: [u8; 16],
}

/// The encryption context constraints of a grant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantConstraints {
    pub encryption_context_subset: Option<BTreeMap<String, String>>,
    pub encryption_context_equals: Option<BTreeMap<String, String>>,
}

/// A key's rotation: its automatic schedule, and every material it rotated to (AWS_KMS keys
/// only). Stored apart from the key's record (the rotations table), so records written before
/// rotation existed keep their layout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRotations {
    /// Automatic rotation, when enabled.
    pub schedule: Option<RotationSchedule>,
    /// Every rotation, oldest first: the key's material number n is `rotations[n - 1]`
    /// (material 0 is the key's original one, in its record).
    pub rotations: Vec<MaterialRotation>,
}

impl KeyRotations {
    /// The number of the key's current material.
    pub fn current(&self) -> u32 {
        u32::try_from(self.rotations.len()).unwrap_or(u32::MAX)
    }

    /// How many rotations were on demand (RotateKeyOnDemand allows 10).
    pub fn on_demand(&self) -> usize {
        self.rotations.iter().filter(|r| r.on_demand).count()
    }
}

/// Automatic rotation of a key: every `period_days`, next at `next_rotation_millis` on the
/// emulator clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationSchedule {
    pub period_days: u32,
    pub next_rotation_millis: u64,
}

/// One rotation: when, how, the new material's id and the material wrapped under the
/// frontend's master key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaterialRotation {
    pub rotated_at_millis: u64,
    pub on_demand: bool,
    /// 64 hex digits, as AWS's `KeyMaterialId`.
    pub material_id: String,
    pub wrapped_material: Vec<u8>,
}

impl fmt::Debug for MaterialRotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaterialRotation")
            .field("rotated_at_millis", &self.rotated_at_millis)
            .field("on_demand", &self.on_demand)
            .field("material_id", &self.material_id)
            .finish_non_exhaustive()
    }
}
