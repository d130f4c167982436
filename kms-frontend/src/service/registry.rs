//! The key registry: every KMS key, alias and custom key store, and the rules of the KMS API
//! that concern them alone (validation, key states, aliases, tags, policies, deletion). Plain
//! data and pure methods: each operation plans [`Change`]s from the registry as it is, without
//! touching it; the caller makes them durable ([`Registry::writes`]), then installs them
//! ([`Registry::install`]), so nothing is visible before it is on disk. Calls into the
//! cluster happen elsewhere.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use hsmkms_common::aead::Sealer;
use hsmkms_common::entropy::Entropy;
use hsmkms_common::secret::{KeyMaterial, SecretBytes, SecretString};
use uuid::Uuid;

use super::change::Change;
use super::connection_state::ConnectionState;
use super::error::KmsError;
use super::key_ref::{key_id_text, request_scope, Arns, KeyRef};
use super::key_spec::{KeySpec, KeyUsage};
use super::key_state::{self, KeyOp, KeyState};
use super::model::{
    AliasRecord, DeletedBacking, DeletionTask, GrantRecord, ImportedMaterials, KeyOrigin, KeyPlace,
    KeyRecord, KeyRotations, KeyStoreRecord, PendingDeletion,
};
use crate::store::{decode, Loaded, StoreError, Table, Write};

mod grants;
mod import;
mod import_rotation;
mod multi_region;
mod rotation;
pub use grants::{check_grant_tokens, GrantRequest, GRANT_OPERATIONS, MAX_GRANTS_PER_KEY};
pub use import::{ImportToken, IMPORT_PARAMETERS_VALIDITY_MILLIS, MAX_VALID_TO_MILLIS};
pub use import_rotation::{ImportAsk, ImportedEntry, Which};
pub use multi_region::{MultiRegionView, ReplicaRequest};
pub use rotation::{DEFAULT_ROTATION_PERIOD_DAYS, MAX_ON_DEMAND_ROTATIONS};

/// Most aliases one key may have.
pub const MAX_ALIASES_PER_KEY: usize = 50;
/// Most tags one key may have.
pub const MAX_TAGS_PER_KEY: usize = 50;
/// Most KMS keys in the account and Region.
pub const MAX_KEYS: usize = 100_000;
/// Most custom key stores.
pub const MAX_KEY_STORES: usize = 10;
/// Milliseconds in a day, for deletion windows.
pub const DAY_MILLIS: u64 = 24 * 60 * 60 * 1000;

/// The default key policy, as KMS writes it for a key created without one.
pub fn default_policy(account_id: &str) -> String {
    format!(
        r#"{{
  "Version" : "2012-10-17",
  "Id" : "key-default-1",
  "Statement" : [ {{
    "Sid" : "Enable IAM User Permissions",
    "Effect" : "Allow",
    "Principal" : {{
      "AWS" : "arn:aws:iam::{account_id}:root"
    }},
    "Action" : "kms:*",
    "Resource" : "*"
  }} ]
}}"#
    )
}

fn validation(field: &str, value: impl std::fmt::Display, constraint: &str) -> KmsError {
    KmsError::Validation(format!(
        "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: {constraint}"
    ))
}

/// Checks a key policy document: JSON, at most 32 KiB.
pub fn check_policy(policy: &str) -> Result<(), KmsError> {
    if policy.is_empty() || policy.len() > 32_768 {
        return Err(KmsError::MalformedPolicyDocument(
            "The key policy must be 1 to 32768 bytes.".into(),
        ));
    }
    match serde_json::from_str::<serde_json::Value>(policy) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        _ => Err(KmsError::MalformedPolicyDocument(
            "The key policy is not a valid JSON policy document.".into(),
        )),
    }
}

/// Checks tags: keys 1-128 and values 0-256 characters, no `aws:` prefix.
///
/// The texts are AWS's (recorded): member paths name the tag's place in the request, each
/// bound has its own message, the reserved prefix is `aws:` in any case, and a request that
/// names a key twice is refused.
pub fn check_tags(tags: &[(String, String)]) -> Result<(), KmsError> {
    for (i, (k, v)) in tags.iter().enumerate() {
        let member = |name: &str| format!("tags.{}.member.{name}", i + 1);
        if k.is_empty() {
            return Err(validation(
                &member("tagKey"),
                k,
                "Member must have length greater than or equal to 1",
            ));
        }
        if k.chars().count() > 128 {
            return Err(validation(
                &member("tagKey"),
                k,
                "Member must have length less than or equal to 128",
            ));
        }
        if v.chars().count() > 256 {
            return Err(validation(
                &member("tagValue"),
                v,
                "Member must have length less than or equal to 256",
            ));
        }
        if k.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("aws:")) {
            return Err(KmsError::Tag(
                "Tags beginning with aws: are reserved".into(),
            ));
        }
    }
    for (i, (k, _)) in tags.iter().enumerate() {
        if tags[..i].iter().any(|(seen, _)| seen == k) {
            return Err(KmsError::Tag("Duplicate tag keys".into()));
        }
    }
    Ok(())
}

/// Checks what a new key is given besides its material (description, policy, tags), so
/// CreateKey can refuse them before it spends time making key material.
pub fn check_key_inputs(
    description: Option<&str>,
    policy: Option<&str>,
    tags: &[(String, String)],
) -> Result<(), KmsError> {
    if description.is_some_and(|d| d.chars().count() > 8192) {
        return Err(validation(
            "description",
            "...",
            "Member must have length less than or equal to 8192",
        ));
    }
    if let Some(policy) = policy {
        check_policy(policy)?;
    }
    check_tags(tags)?;
    if tags.len() > MAX_TAGS_PER_KEY {
        return Err(KmsError::too_many_tags());
    }
    Ok(())
}

/// Checks an alias name for CreateAlias and UpdateAlias.
pub fn check_alias_name(name: &str) -> Result<(), KmsError> {
    let well_formed = (1..=256).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_-:".contains(&b));
    if !well_formed {
        return Err(validation(
            "aliasName",
            name,
            "Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$",
        ));
    }
    // AWS's recorded answer: a ValidationException, its text ending at the guide's address.
    if !name.starts_with("alias/") || name.len() == "alias/".len() {
        return Err(KmsError::Validation(
            "Alias must start with the prefix \"alias/\". Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html".into(),
        ));
    }
    if name.starts_with("alias/aws/") {
        return Err(KmsError::InvalidAliasName(format!(
            "Alias {name} must not start with the reserved prefix alias/aws/."
        )));
    }
    Ok(())
}

/// The row (and map key) of alias `name` in `scope`: the name itself in the home scope, and
/// `<region>/<account>/` before it in any other (alias names begin with `alias/`, so rows of
/// different scopes never meet).
fn alias_row<'a>(scope: &Arns, home: &Arns, name: &'a str) -> std::borrow::Cow<'a, str> {
    if scope == home {
        std::borrow::Cow::Borrowed(name)
    } else {
        std::borrow::Cow::Owned(format!("{}/{}/{name}", scope.region, scope.account_id))
    }
}

/// A key as the API layer needs it for crypto: the record, its reported state, and the
/// cipher of an AWS_KMS key.
#[derive(Debug)]
pub struct UsableKey {
    pub record: Arc<KeyRecord>,
    pub arn: String,
    pub state: KeyState,
    /// Made for this call from the key's material: 185 ns, where keeping a cipher per key
    /// would cost 544 bytes for each of up to 100,000 keys.
    pub sealer: Option<Sealer>,
    /// The number of the material `sealer` seals with (0 unless the key rotated).
    pub material: u32,
}

/// An asymmetric or HMAC key as the API layer needs it for crypto.
#[derive(Debug)]
pub struct TypedKey {
    pub record: Arc<KeyRecord>,
    pub arn: String,
    pub spec: KeySpec,
    pub usage: KeyUsage,
    /// The private key (PKCS#8 DER) or HMAC key.
    pub material: SecretBytes,
}

impl NewKeyMaterial {
    /// A SYMMETRIC_DEFAULT key of 32 given bytes (a seed file's, LocalStack's tag's), checked
    /// by the caller; the copy made here is wiped by [`KeyMaterial::from_slice`].
    pub fn symmetric_given(material: &SecretBytes) -> Result<Self, KmsError> {
        let mut bytes = material.expose().to_vec();
        KeyMaterial::from_slice(&mut bytes)
            .map(NewKeyMaterial::SymmetricGiven)
            .ok_or_else(|| KmsError::KmsInternal("symmetric material is not 32 bytes".into()))
    }
}

/// What a new key's material is, for [`Registry::new_key`].
#[derive(Debug)]
pub enum NewKeyMaterial {
    /// A SYMMETRIC_DEFAULT key of origin AWS_KMS: generated here.
    Symmetric,
    /// A SYMMETRIC_DEFAULT key of origin AWS_KMS with material the caller gives (LocalStack's
    /// `_custom_key_material_` tag).
    SymmetricGiven(KeyMaterial),
    /// An asymmetric or HMAC key of origin AWS_KMS, with material the caller generated
    /// (away from the registry's lock: an RSA 4096 key takes a second).
    Typed {
        spec: KeySpec,
        usage: KeyUsage,
        material: SecretBytes,
    },
    /// A key store key: its backing key is made in the cluster.
    CloudHsm,
    /// An EXTERNAL key: no material until the caller imports some.
    External { spec: KeySpec, usage: KeyUsage },
}

/// The name of `op` in InvalidKeyUsageException's text.
fn op_name(op: KeyOp) -> &'static str {
    match op {
        KeyOp::Encrypt => "Encrypt",
        KeyOp::Decrypt => "Decrypt",
        KeyOp::ReEncryptSource => "ReEncryptFrom",
        KeyOp::ReEncryptDestination => "ReEncryptTo",
        KeyOp::GenerateDataKey => "GenerateDataKey",
        KeyOp::GenerateDataKeyWithoutPlaintext => "GenerateDataKeyWithoutPlaintext",
        KeyOp::GenerateDataKeyPair => "GenerateDataKeyPair",
        KeyOp::GenerateDataKeyPairWithoutPlaintext => "GenerateDataKeyPairWithoutPlaintext",
        KeyOp::Sign => "Sign",
        KeyOp::Verify => "Verify",
        KeyOp::GenerateMac => "GenerateMac",
        KeyOp::VerifyMac => "VerifyMac",
        KeyOp::DeriveSharedSecret => "DeriveSharedSecret",
        KeyOp::GetPublicKey => "GetPublicKey",
        KeyOp::Encapsulate => "Encapsulate",
        KeyOp::Decapsulate => "Decapsulate",
        _ => "this operation",
    }
}

/// Whether a key's spec and usage allow `op` (AWS's texts, recorded: `<arn> key usage is
/// SIGN_VERIFY which is not valid for Encrypt.`). Operations that only symmetric encryption
/// keys do name the key spec instead [inferred].
pub fn check_usage(record: &KeyRecord, op: KeyOp, arn: &str) -> Result<(), KmsError> {
    let (spec, usage) = (record.spec(), record.usage());
    let wrong_usage = || {
        Err(KmsError::InvalidKeyUsage(format!(
            "{arn} key usage is {} which is not valid for {}.",
            usage.as_str(),
            op_name(op)
        )))
    };
    let wanted = match op {
        KeyOp::Encrypt | KeyOp::Decrypt | KeyOp::ReEncryptSource | KeyOp::ReEncryptDestination => {
            KeyUsage::EncryptDecrypt
        }
        KeyOp::GenerateDataKey
        | KeyOp::GenerateDataKeyWithoutPlaintext
        | KeyOp::GenerateDataKeyPair
        | KeyOp::GenerateDataKeyPairWithoutPlaintext => {
            if usage != KeyUsage::EncryptDecrypt {
                return wrong_usage();
            }
            if spec != KeySpec::SymmetricDefault {
                return Err(KmsError::InvalidKeyUsage(format!(
                    "{arn} key spec is {} which is not valid for {}.",
                    spec.as_str(),
                    op_name(op)
                )));
            }
            return Ok(());
        }
        KeyOp::Sign | KeyOp::Verify => KeyUsage::SignVerify,
        KeyOp::GenerateMac | KeyOp::VerifyMac => KeyUsage::GenerateVerifyMac,
        KeyOp::DeriveSharedSecret => KeyUsage::KeyAgreement,
        KeyOp::Encapsulate | KeyOp::Decapsulate => KeyUsage::EncapsulateDecapsulate,
        KeyOp::GetPublicKey => {
            if !spec.is_asymmetric() {
                return Err(KmsError::UnsupportedOperation(format!(
                    "{arn} key spec is {} which is not valid for GetPublicKey.",
                    spec.as_str()
                )));
            }
            return Ok(());
        }
        // Rotation is for symmetric encryption keys only; AWS answers other keys with an
        // UnsupportedOperationException without a message (recorded), and EXTERNAL keys with
        // footnote 7's (recorded), but for the on-demand rotation of a symmetric one's
        // imported material (and the listing of its materials).
        KeyOp::RotateKeyOnDemand | KeyOp::GetKeyRotationStatus | KeyOp::ListKeyRotations
            if matches!(record.origin, KeyOrigin::External { .. })
                && spec == KeySpec::SymmetricDefault =>
        {
            return Ok(());
        }
        KeyOp::EnableKeyRotation
        | KeyOp::RotateKeyOnDemand
        | KeyOp::GetKeyRotationStatus
        | KeyOp::ListKeyRotations
            if matches!(record.origin, KeyOrigin::External { .. }) =>
        {
            return Err(key_state::origin_external(arn));
        }
        KeyOp::EnableKeyRotation | KeyOp::RotateKeyOnDemand => {
            if spec != KeySpec::SymmetricDefault {
                return Err(KmsError::UnsupportedOperation(String::new()));
            }
            return Ok(());
        }
        _ => return Ok(()),
    };
    if usage != wanted {
        return wrong_usage();
    }
    Ok(())
}

/// The removal of a key whose waiting period ended, as planned: the aliases that go with it,
/// the writes that make it durable, and the task that finishes it afterwards.
#[derive(Debug)]
pub struct PlannedDeletion {
    pub aliases: Vec<String>,
    pub writes: Vec<Write>,
    pub task: DeletionTask,
}

/// Every key, alias and custom key store, of every Region and account.
pub struct Registry {
    /// The home scope: the emulator's Region and account.
    pub arns: Arns,
    home: Arc<Arns>,
    master: Sealer,
    /// Behind pointers, so the table has little slack at any size and a resize copies 8
    /// bytes an entry, not the whole record (memory with 100,000 keys); shared, so a crypto
    /// call takes the record without copying it.
    keys: HashMap<Uuid, Arc<KeyRecord>>,
    /// The material of AWS_KMS keys, unwrapped once at load or creation.
    materials: HashMap<Uuid, KeyMaterial>,
    /// The private keys (PKCS#8) and HMAC keys of asymmetric and HMAC keys, unwrapped once.
    typed: HashMap<Uuid, SecretBytes>,
    /// The default key policy, shared by every key that has it.
    default_policy: Arc<str>,
    aliases: BTreeMap<String, AliasRecord>,
    stores: BTreeMap<String, KeyStoreRecord>,
    /// Grants by key, then grant id: a key's grants are one range.
    grants: BTreeMap<(Uuid, String), GrantRecord>,
    /// Rotation schedules and rotated materials, for the keys that have either.
    rotations: HashMap<Uuid, KeyRotations>,
    /// Rotated materials by key and number (1 for the first rotation), unwrapped once.
    rotated: HashMap<(Uuid, u32), KeyMaterial>,
    /// Where keys live that are not in the home scope or are multi-Region keys.
    places: HashMap<Uuid, KeyPlace>,
    /// Multi-Region keys: the keys (primary and replicas) that share each `mrk-` id.
    families: HashMap<Uuid, Vec<Uuid>>,
    /// The other imported materials of symmetric EXTERNAL keys that have more than one.
    imports: HashMap<Uuid, ImportedMaterials>,
    /// The HMAC key of imported materials' ids, derived from the master key, so an id tells
    /// nothing of the material to whoever lacks it.
    material_id_key: aws_lc_rs::hmac::Key,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("keys", &self.keys.len())
            .field("aliases", &self.aliases.len())
            .field("stores", &self.stores.len())
            .finish_non_exhaustive()
    }
}

pub(super) fn material_context(id: &Uuid) -> Vec<u8> {
    let mut ctx = b"hsmkms/kms-key/v1/".to_vec();
    ctx.extend_from_slice(id.as_bytes());
    ctx
}

pub(super) fn typed_material_context(id: &Uuid) -> Vec<u8> {
    let mut ctx = b"hsmkms/kms-key-typed/v1/".to_vec();
    ctx.extend_from_slice(id.as_bytes());
    ctx
}

fn password_context(store_id: &str) -> Vec<u8> {
    let mut ctx = b"hsmkms/kmsuser-password/v1/".to_vec();
    ctx.extend_from_slice(store_id.as_bytes());
    ctx
}

/// The text of key `id`'s id given its place record (`None` for a single-Region key of the
/// home scope): its UUID, or `mrk-` and its family's digits. Also for a key whose place is
/// gone from the registry (a finished deletion names the key as it was).
pub fn key_id_text_at(id: &Uuid, place: Option<&KeyPlace>) -> String {
    match place {
        Some(KeyPlace {
            multi_region: Some(mrk),
            ..
        }) => key_id_text(mrk, true),
        _ => id.to_string(),
    }
}

/// Key `id`'s ARN, in the Region and account of its place record (the home scope's without
/// one), as [`key_id_text_at`] names it.
pub fn key_arn_at(home: &Arns, id: &Uuid, place: Option<&KeyPlace>) -> String {
    match place {
        None => home.key_arn(id),
        Some(p) => format!(
            "arn:aws:kms:{}:{}:key/{}",
            p.region,
            p.account_id,
            key_id_text_at(id, place)
        ),
    }
}

/// A key's row in the keys table: its creation time (16 hex digits) before its id, so new keys
/// land at the end of the table's B-tree and a commit rewrites a few pages on its right edge,
/// not a leaf anywhere in it (key ids are random). Rows also load in creation order.
pub fn key_row(record: &KeyRecord) -> String {
    format!("{:016x}/{}", record.created_at_millis, record.key_id)
}

/// The writes that move rows of the keys table written before [`key_row`] (named by the bare
/// key id) to their rows: applied once, before the frontend serves.
pub fn key_rows_to_relayout(loaded: &Loaded) -> Result<Vec<Write>, StoreError> {
    let mut writes = Vec::new();
    for (row, bytes) in loaded.keys.iter().filter(|(row, _)| !row.contains('/')) {
        let record: KeyRecord = decode(bytes)?;
        writes.push(Write::delete(Table::Keys, row.clone()));
        writes.push(Write::Put {
            table: Table::Keys,
            key: key_row(&record),
            value: bytes.clone(),
        });
    }
    Ok(writes)
}

impl Registry {
    /// The registry as loaded from the store; `master` unwraps AWS_KMS key material.
    /// The keys' raw records are taken out of `loaded` and freed as they are decoded.
    pub fn load(arns: Arns, master: &KeyMaterial, loaded: &mut Loaded) -> Result<Self, StoreError> {
        let raw_keys = std::mem::take(&mut loaded.keys);
        let mut registry = Self {
            default_policy: Arc::from(default_policy(&arns.account_id)),
            home: Arc::new(arns.clone()),
            arns,
            master: Sealer::new(master),
            keys: HashMap::with_capacity(raw_keys.len()),
            materials: HashMap::with_capacity(raw_keys.len()),
            typed: HashMap::new(),
            aliases: BTreeMap::new(),
            stores: BTreeMap::new(),
            grants: BTreeMap::new(),
            rotations: HashMap::new(),
            rotated: HashMap::new(),
            places: HashMap::new(),
            families: HashMap::new(),
            imports: HashMap::new(),
            material_id_key: import::material_id_key(master),
        };
        for (_, v) in raw_keys {
            let record: KeyRecord = decode(&v)?;
            registry.install_key(record)?;
        }
        for (row, v) in &loaded.places {
            let place: KeyPlace = decode(v)?;
            match Uuid::parse_str(row) {
                Ok(id) if registry.keys.contains_key(&id) => registry.install_place(id, place),
                _ => tracing::warn!(%row, "a place record without its key is skipped"),
            }
        }
        for (row, v) in &loaded.imports {
            let imports: ImportedMaterials = decode(v)?;
            match Uuid::parse_str(row) {
                Ok(id) if registry.keys.contains_key(&id) => {
                    registry.install_imports(id, imports)?
                }
                _ => tracing::warn!(%row, "an imports record without its key is skipped"),
            }
        }
        for (_, v) in &loaded.aliases {
            let alias: AliasRecord = decode(v)?;
            registry.aliases.insert(alias.name.clone(), alias);
        }
        for (_, v) in &loaded.key_stores {
            let store: KeyStoreRecord = decode(v)?;
            registry.stores.insert(store.id.clone(), store);
        }
        for (row, v) in &loaded.rotations {
            let rotations: KeyRotations = decode(v)?;
            // A row can only outlive its key in a store edited by hand: skipped then.
            match Uuid::parse_str(row) {
                Ok(id) if registry.keys.contains_key(&id) => {
                    registry.install_rotations(id, rotations)?
                }
                _ => tracing::warn!(%row, "a rotation record without its key is skipped"),
            }
        }
        for (_, v) in &loaded.grants {
            let grant: GrantRecord = decode(v)?;
            registry
                .grants
                .insert((grant.key_id, grant.grant_id.clone()), grant);
        }
        Ok(registry)
    }

    /// The shared copy of `policy` if it is the default one.
    fn interned(&self, policy: Arc<str>) -> Arc<str> {
        // An empty policy is how a record with the default one is stored (see `key_write`).
        if policy.is_empty() || *policy == *self.default_policy {
            self.default_policy.clone()
        } else {
            policy
        }
    }

    fn install_key(&mut self, mut record: KeyRecord) -> Result<(), StoreError> {
        record.policy = self.interned(record.policy);
        // An EXTERNAL key's material comes and goes (import, delete, expiry): what the record
        // now says is what the key has.
        if let KeyOrigin::External { spec, imported, .. } = &record.origin {
            self.materials.remove(&record.key_id);
            self.typed.remove(&record.key_id);
            self.install_imported(record.key_id, *spec, imported.as_ref())?;
        }
        if let KeyOrigin::AwsKms { wrapped_material } = &record.origin {
            let material = self
                .master
                .unwrap_key(wrapped_material, &material_context(&record.key_id))
                .map_err(|_| {
                    StoreError::Corrupt(format!(
                        "material of key {} does not unwrap",
                        record.key_id
                    ))
                })?;
            self.materials.insert(record.key_id, material);
        }
        if let KeyOrigin::AwsKmsTyped {
            wrapped_material, ..
        } = &record.origin
        {
            let material = self
                .master
                .open(wrapped_material, &typed_material_context(&record.key_id))
                .map_err(|_| {
                    StoreError::Corrupt(format!(
                        "material of key {} does not unwrap",
                        record.key_id
                    ))
                })?;
            self.typed.insert(record.key_id, material);
        }
        self.keys.insert(record.key_id, Arc::new(record));
        Ok(())
    }

    /// A key record's write. A record with the default policy is stored with an empty one
    /// (never a policy a client can set: PutKeyPolicy and CreateKey need at least one
    /// character): 250 bytes less per row, which is over half of most rows and so of the pages
    /// each CreateKey commit writes.
    fn key_write(&self, record: &KeyRecord) -> Write {
        if Arc::ptr_eq(&record.policy, &self.default_policy) {
            let stored = KeyRecord {
                policy: Arc::from(""),
                ..record.clone()
            };
            return Write::put(Table::Keys, key_row(record), &stored);
        }
        Write::put(Table::Keys, key_row(record), record)
    }

    // ---- lookups ----------------------------------------------------------------------

    /// The key a `KeyId` names (following an alias if allowed).
    pub fn resolve(&self, key_id: &str, allow_alias: bool) -> Result<&KeyRecord, KmsError> {
        self.resolve_shared(key_id, allow_alias).map(|r| &**r)
    }

    fn resolve_shared(&self, key_id: &str, allow_alias: bool) -> Result<&Arc<KeyRecord>, KmsError> {
        let scope = self.scope();
        let missing = |text: String| {
            KmsError::NotFound(format!("Key '{}' does not exist", scope.key_arn_of(&text)))
        };
        let id = match scope.parse(key_id, allow_alias)? {
            KeyRef::Key(id) => {
                if !self.in_scope(&id, &scope) || self.family_of(&id).is_some() {
                    return Err(missing(id.to_string()));
                }
                id
            }
            KeyRef::MultiRegion(mrk) => self
                .family_member(&mrk, &scope)
                .ok_or_else(|| missing(key_id_text(&mrk, true)))?,
            KeyRef::Alias(name) => {
                self.aliases
                    .get(&*alias_row(&scope, &self.home, &name))
                    .ok_or_else(|| {
                        KmsError::NotFound(format!(
                            "Alias {} is not found.",
                            scope.alias_arn(&name)
                        ))
                    })?
                    .target_key_id
            }
        };
        self.keys
            .get(&id)
            .ok_or_else(|| missing(self.key_id_text(&id)))
    }

    /// Forgets every key, alias, grant and custom key store (the reset of the control API, once
    /// their rows are deleted).
    pub fn clear(&mut self) {
        self.keys.clear();
        self.materials.clear();
        self.typed.clear();
        self.aliases.clear();
        self.stores.clear();
        self.grants.clear();
        self.rotations.clear();
        self.rotated.clear();
        self.places.clear();
        self.families.clear();
        self.imports.clear();
    }

    /// Every custom key store's id, whatever the request's scope.
    pub fn all_store_ids(&self) -> Vec<String> {
        self.stores.keys().cloned().collect()
    }

    // ---- Regions and accounts ---------------------------------------------------------

    /// The scope of the request being served: its Region and account (the home scope
    /// outside a request).
    pub fn scope(&self) -> Arc<Arns> {
        request_scope().unwrap_or_else(|| self.home.clone())
    }

    /// Whether the request being served is in the home Region and account, where custom key
    /// stores live (a CloudHSM key store stays in the Region of its cluster).
    pub fn in_home_scope(&self) -> bool {
        *self.scope() == *self.home
    }

    /// Whether a key lives in `scope`.
    pub fn in_scope(&self, id: &Uuid, scope: &Arns) -> bool {
        match self.places.get(id) {
            None => scope.region == self.home.region && scope.account_id == self.home.account_id,
            Some(p) => p.region == scope.region && p.account_id == scope.account_id,
        }
    }

    /// The `mrk-` id a multi-Region key shares with its primary and replicas.
    pub fn family_of(&self, id: &Uuid) -> Option<Uuid> {
        self.places.get(id).and_then(|p| p.multi_region)
    }

    /// The keys of a multi-Region family (primary and replicas).
    pub fn family(&self, mrk: &Uuid) -> &[Uuid] {
        self.families.get(mrk).map_or(&[], Vec::as_slice)
    }

    /// The key of a multi-Region family in `scope`'s Region and account.
    pub fn family_member(&self, mrk: &Uuid, scope: &Arns) -> Option<Uuid> {
        self.family(mrk)
            .iter()
            .copied()
            .find(|id| self.in_scope(id, scope))
    }

    /// The Region a key lives in.
    pub fn region_of(&self, id: &Uuid) -> &str {
        self.places.get(id).map_or(&self.home.region, |p| &p.region)
    }

    /// The account a key lives in.
    pub fn account_of(&self, id: &Uuid) -> &str {
        self.places
            .get(id)
            .map_or(&self.home.account_id, |p| &p.account_id)
    }

    /// The text of a key's id: its UUID, or `mrk-` and its family's digits.
    pub fn key_id_text(&self, id: &Uuid) -> String {
        key_id_text_at(id, self.places.get(id))
    }

    /// A key's ARN, in the Region and account it lives in.
    pub fn key_arn(&self, id: &Uuid) -> String {
        key_arn_at(&self.home, id, self.places.get(id))
    }

    /// A key's place record (none for a single-Region key of the home scope).
    pub fn place_of(&self, id: &Uuid) -> Option<&KeyPlace> {
        self.places.get(id)
    }

    /// The place a new key of the request's scope gets (none for a single-Region key of the
    /// home scope).
    pub fn place_for_new_key(&self, id: &Uuid, multi_region: bool) -> Option<KeyPlace> {
        let scope = self.scope();
        (multi_region || *scope != *self.home).then(|| KeyPlace {
            region: scope.region.clone(),
            account_id: scope.account_id.clone(),
            multi_region: multi_region.then_some(*id),
            primary: multi_region,
        })
    }

    fn install_place(&mut self, id: Uuid, place: KeyPlace) {
        if let Some(mrk) = place.multi_region {
            let members = self.families.entry(mrk).or_default();
            if !members.contains(&id) {
                members.push(id);
            }
        }
        self.places.insert(id, place);
    }

    fn uninstall_place(&mut self, id: &Uuid) {
        if let Some(place) = self.places.remove(id) {
            if let Some(mrk) = place.multi_region {
                if let Some(members) = self.families.get_mut(&mrk) {
                    members.retain(|m| m != id);
                    if members.is_empty() {
                        self.families.remove(&mrk);
                    }
                }
            }
        }
    }

    /// The reported state of a key (§3): deletion first, then the store's connection.
    pub fn state_of(&self, record: &KeyRecord) -> KeyState {
        let store_connected = record.origin.store_id().map(|id| {
            matches!(
                self.stores.get(id).map(|s| s.state),
                Some(ConnectionState::Connected)
            )
        });
        // Every material an EXTERNAL key rotated from must be imported for it to be usable.
        let pending_import = record.pending_import()
            || (matches!(record.origin, KeyOrigin::External { .. })
                && self
                    .imports
                    .get(&record.key_id)
                    .is_some_and(ImportedMaterials::other_missing));
        let state = key_state::reported_state(
            record.enabled,
            record.deletion.is_some(),
            store_connected,
            pending_import,
        );
        if state == KeyState::PendingDeletion && self.has_replicas(&record.key_id) {
            return KeyState::PendingReplicaDeletion;
        }
        state
    }

    /// Resolves a key and checks that `op` is allowed in its state.
    pub fn checked(
        &self,
        key_id: &str,
        allow_alias: bool,
        op: KeyOp,
    ) -> Result<&KeyRecord, KmsError> {
        let record = self.resolve(key_id, allow_alias)?;
        let arn = self.key_arn(&record.key_id);
        key_state::check(
            op,
            self.state_of(record),
            &arn,
            record.origin.store_id().is_some(),
        )?;
        check_usage(record, op, &arn)?;
        Ok(record)
    }

    /// A key for a crypto operation, checked for `op`.
    pub fn usable(&self, key_id: &str, op: KeyOp) -> Result<UsableKey, KmsError> {
        let record = self.resolve_shared(key_id, true)?;
        self.usable_record(record, op)
    }

    /// A key named by its internal id (as a ciphertext blob names it) for a crypto
    /// operation, checked for `op`; the caller checked it is in the request's scope.
    pub fn usable_by_id(&self, id: &Uuid, op: KeyOp) -> Result<UsableKey, KmsError> {
        let record = self.keys.get(id).ok_or_else(|| {
            KmsError::NotFound(format!("Key '{}' does not exist", self.key_arn(id)))
        })?;
        self.usable_record(record, op)
    }

    fn usable_record(&self, record: &Arc<KeyRecord>, op: KeyOp) -> Result<UsableKey, KmsError> {
        let id = record.key_id;
        let arn = self.key_arn(&id);
        let state = self.state_of(record);
        key_state::check(op, state, &arn, record.origin.store_id().is_some())?;
        check_usage(record, op, &arn)?;
        let material = self.current_material(&id);
        Ok(UsableKey {
            arn,
            state,
            sealer: self.sealer_at(&id, material),
            material,
            record: record.clone(),
        })
    }

    /// An asymmetric or HMAC key for `op`, checked for its state and usage, with its material
    /// (a copy, wiped when dropped).
    pub fn typed_key(&self, key_id: &str, op: KeyOp) -> Result<TypedKey, KmsError> {
        let record = self.resolve_shared(key_id, true)?;
        let arn = self.key_arn(&record.key_id);
        key_state::check(
            op,
            self.state_of(record),
            &arn,
            record.origin.store_id().is_some(),
        )?;
        check_usage(record, op, &arn)?;
        let material = self
            .typed
            .get(&record.key_id)
            .map(|m| SecretBytes::new(m.expose().to_vec()))
            .ok_or_else(|| KmsError::KmsInternal("The key material is not loaded.".into()))?;
        Ok(TypedKey {
            spec: record.spec(),
            usage: record.usage(),
            record: record.clone(),
            arn,
            material,
        })
    }

    /// A key by id, for decrypting a blob that names it.
    pub fn by_id(&self, id: &Uuid) -> Option<&KeyRecord> {
        self.keys.get(id).map(|r| &**r)
    }

    /// The cipher of an AWS_KMS key, made for one call; its key schedule is wiped when the
    /// call drops it.
    pub fn sealer(&self, id: &Uuid) -> Option<Sealer> {
        self.materials.get(id).map(Sealer::new)
    }

    /// Keys in id order, after `marker` (a key id), at most `limit`.
    pub fn list_keys(
        &self,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Uuid>, Option<String>), KmsError> {
        let scope = self.scope();
        let mut ids: Vec<&Uuid> = self
            .keys
            .keys()
            .filter(|id| self.in_scope(id, &scope))
            .collect();
        ids.sort();
        let start = match marker {
            None => 0,
            Some(m) => {
                let after = Uuid::parse_str(m)
                    .map_err(|_| KmsError::InvalidMarker(format!("Invalid marker: {m}")))?;
                ids.partition_point(|id| **id <= after)
            }
        };
        let page: Vec<Uuid> = ids.iter().skip(start).take(limit).map(|id| **id).collect();
        let next = (start + page.len() < ids.len())
            .then(|| page.last().map(|id| id.to_string()))
            .flatten();
        Ok((page, next))
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Every key with the Region and account it lives in, whatever the request's scope (the
    /// dashboard shows them all), in no particular order.
    pub fn keys_everywhere(&self) -> impl Iterator<Item = (&KeyRecord, &str, &str)> {
        self.keys
            .values()
            .map(|k| (&**k, self.region_of(&k.key_id), self.account_of(&k.key_id)))
    }

    /// Keys whose waiting period has ended at `now`.
    pub fn due_for_deletion(&self, now_millis: u64) -> Vec<Uuid> {
        let mut due: Vec<(u64, Uuid)> = self
            .keys
            .values()
            // A primary key is deleted only once its replicas are.
            .filter(|k| !self.has_replicas(&k.key_id))
            .filter_map(|k| {
                k.deletion
                    .filter(|d| d.deletion_date_millis <= now_millis)
                    .map(|d| (d.deletion_date_millis, k.key_id))
            })
            .collect();
        due.sort();
        due.into_iter().map(|(_, id)| id).collect()
    }

    /// The earliest scheduled deletion, if any.
    pub fn next_deletion(&self) -> Option<u64> {
        self.keys
            .values()
            .filter(|k| !self.has_replicas(&k.key_id))
            .filter_map(|k| k.deletion.map(|d| d.deletion_date_millis))
            .min()
    }

    // ---- keys -------------------------------------------------------------------------

    fn check_quota(&self) -> Result<(), KmsError> {
        if self.keys.len() >= MAX_KEYS {
            return Err(KmsError::LimitExceeded(format!(
                "The request was rejected because the number of KMS keys in this account and Region exceeds {MAX_KEYS}."
            )));
        }
        Ok(())
    }

    /// A new key record, with defaults filled in and inputs checked.
    pub fn new_key(
        &self,
        new_material: NewKeyMaterial,
        description: Option<String>,
        policy: Option<String>,
        tags: Vec<(String, String)>,
        now_millis: u64,
        entropy: &dyn Entropy,
    ) -> Result<(Uuid, KeyRecord, Option<KeyMaterial>), KmsError> {
        self.new_key_with_id(
            None,
            new_material,
            description,
            policy,
            tags,
            now_millis,
            entropy,
        )
    }

    /// [`Registry::new_key`] with the id the caller chose, if any (LocalStack's `_custom_id_`
    /// tag): a random one otherwise.
    #[allow(clippy::too_many_arguments)]
    pub fn new_key_with_id(
        &self,
        custom_id: Option<Uuid>,
        new_material: NewKeyMaterial,
        description: Option<String>,
        policy: Option<String>,
        tags: Vec<(String, String)>,
        now_millis: u64,
        entropy: &dyn Entropy,
    ) -> Result<(Uuid, KeyRecord, Option<KeyMaterial>), KmsError> {
        self.check_quota()?;
        check_key_inputs(description.as_deref(), policy.as_deref(), &tags)?;
        let description = description.unwrap_or_default();
        let scope = self.scope();
        let policy = match policy {
            Some(policy) => self.interned(Arc::from(policy)),
            None if scope.account_id == self.home.account_id => self.default_policy.clone(),
            None => Arc::from(default_policy(&scope.account_id)),
        };
        let key_id = custom_id.unwrap_or_else(|| {
            let mut id = [0u8; 16];
            entropy.fill(&mut id);
            uuid::Builder::from_random_bytes(id).into_uuid()
        });
        let (origin, material) = match new_material {
            NewKeyMaterial::Symmetric | NewKeyMaterial::SymmetricGiven(_) => {
                let material = match new_material {
                    NewKeyMaterial::SymmetricGiven(given) => given,
                    _ => KeyMaterial::generate_from(entropy),
                };
                (
                    KeyOrigin::AwsKms {
                        wrapped_material: self.master.wrap(&material, &material_context(&key_id)),
                    },
                    Some(material),
                )
            }
            NewKeyMaterial::Typed {
                spec,
                usage,
                material,
            } => (
                KeyOrigin::AwsKmsTyped {
                    spec,
                    usage,
                    wrapped_material: self
                        .master
                        .seal(material.expose(), &typed_material_context(&key_id)),
                },
                None,
            ),
            NewKeyMaterial::External { spec, usage } => (
                KeyOrigin::External {
                    spec,
                    usage,
                    material_id: None,
                    imported: None,
                },
                None,
            ),
            // The caller fills in the backing key once the cluster has made it.
            NewKeyMaterial::CloudHsm => (
                KeyOrigin::CloudHsm {
                    custom_key_store_id: String::new(),
                    cluster_id: String::new(),
                    backing_key: super::model::BackingKey {
                        key_handle: 0,
                        backing_key_id: String::new(),
                    },
                },
                None,
            ),
        };
        let record = KeyRecord {
            key_id,
            created_at_millis: now_millis,
            description,
            enabled: true,
            deletion: None,
            origin,
            policy,
            tags: tags.into_iter().collect(),
        };
        Ok((key_id, record, material))
    }

    /// Plans adding a key made by [`Registry::new_key`] (and, for a key store key, its
    /// backing key).
    /// A multi-Region key (`multi_region`) gets its `mrk-` id from its record's id; a key of
    /// another scope than the home one is placed in the request's.
    pub fn insert_key(
        &self,
        record: KeyRecord,
        multi_region: bool,
    ) -> Result<Vec<Change>, KmsError> {
        self.check_quota()?;
        // A key id chosen by the caller (LocalStack's `_custom_id_`) may be taken.
        if self.keys.contains_key(&record.key_id) {
            return Err(KmsError::AlreadyExists(format!(
                "A KMS key with id {} already exists.",
                record.key_id
            )));
        }
        let place = self.place_for_new_key(&record.key_id, multi_region);
        let id = record.key_id;
        let mut changes = vec![Change::PutKey(record)];
        changes.extend(place.map(|p| Change::PutPlace(id, p)));
        Ok(changes)
    }

    /// Plans a change to a key's record: the changed copy; the registry is untouched.
    fn update_key(&self, id: Uuid, change: impl FnOnce(&mut KeyRecord)) -> Vec<Change> {
        match self.keys.get(&id) {
            Some(record) => {
                let mut record = KeyRecord::clone(record);
                change(&mut record);
                vec![Change::PutKey(record)]
            }
            None => vec![],
        }
    }

    /// The writes that make planned changes durable.
    pub fn writes(&self, changes: &[Change]) -> Vec<Write> {
        changes
            .iter()
            .map(|c| match c {
                Change::PutKey(record) => self.key_write(record),
                Change::PutAlias(alias) => Write::put(Table::Aliases, alias.name.clone(), alias),
                Change::DeleteAlias(name) => Write::delete(Table::Aliases, name.clone()),
                Change::PutGrant(grant) => Write::put(
                    Table::Grants,
                    grants::row(&grant.key_id, &grant.grant_id),
                    grant,
                ),
                Change::DeleteGrant { key_id, grant_id } => {
                    Write::delete(Table::Grants, grants::row(key_id, grant_id))
                }
                Change::PutRotations(key_id, rotations) => {
                    Write::put(Table::Rotations, key_id.to_string(), rotations)
                }
                Change::PutPlace(key_id, place) => {
                    Write::put(Table::Places, key_id.to_string(), place)
                }
                Change::PutImports(key_id, imports) => {
                    Write::put(Table::Imports, key_id.to_string(), imports)
                }
            })
            .collect()
    }

    /// Installs planned changes once they are durable.
    pub fn install(&mut self, changes: Vec<Change>) -> Result<(), StoreError> {
        for change in changes {
            match change {
                Change::PutKey(record) => self.install_key(record)?,
                Change::PutAlias(alias) => {
                    self.aliases.insert(alias.name.clone(), alias);
                }
                Change::DeleteAlias(name) => {
                    self.aliases.remove(&name);
                }
                Change::PutGrant(grant) => {
                    self.grants
                        .insert((grant.key_id, grant.grant_id.clone()), grant);
                }
                Change::DeleteGrant { key_id, grant_id } => {
                    self.grants.remove(&(key_id, grant_id));
                }
                Change::PutRotations(key_id, rotations) => {
                    self.install_rotations(key_id, rotations)?;
                }
                Change::PutPlace(key_id, place) => self.install_place(key_id, place),
                Change::PutImports(key_id, imports) => self.install_imports(key_id, imports)?,
            }
        }
        Ok(())
    }

    /// EnableKey or DisableKey: sets the underlying flag (on an Unavailable key too; it shows
    /// once the store reconnects).
    pub fn set_enabled(&self, key_id: &str, enabled: bool) -> Result<Vec<Change>, KmsError> {
        let op = if enabled {
            KeyOp::EnableKey
        } else {
            KeyOp::DisableKey
        };
        let id = self.checked(key_id, false, op)?.key_id;
        Ok(self.update_key(id, |k| k.enabled = enabled))
    }

    pub fn update_description(
        &self,
        key_id: &str,
        description: String,
    ) -> Result<Vec<Change>, KmsError> {
        if description.chars().count() > 8192 {
            return Err(validation(
                "description",
                "...",
                "Member must have length less than or equal to 8192",
            ));
        }
        let id = self
            .checked(key_id, false, KeyOp::UpdateKeyDescription)?
            .key_id;
        Ok(self.update_key(id, |k| k.description = description))
    }

    /// ScheduleKeyDeletion: window 7 to 30 days (default 30).
    pub fn schedule_deletion(
        &self,
        key_id: &str,
        window_days: Option<i64>,
        now_millis: u64,
    ) -> Result<(KeyRecord, Vec<Change>), KmsError> {
        let window = window_days.unwrap_or(30);
        if !(7..=30).contains(&window) {
            return Err(KmsError::Validation(
                "PendingWindowInDays must be between 7 and 30".into(),
            ));
        }
        let id = self
            .checked(key_id, false, KeyOp::ScheduleKeyDeletion)?
            .key_id;
        let deletion = PendingDeletion {
            deletion_date_millis: now_millis + window as u64 * DAY_MILLIS,
            window_days: window as u32,
        };
        let changes = self.update_key(id, |k| k.deletion = Some(deletion));
        let record = match changes.first() {
            Some(Change::PutKey(record)) => record.clone(),
            _ => return Err(KmsError::KmsInternal("key vanished".into())),
        };
        Ok((record, changes))
    }

    /// CancelKeyDeletion: the key comes back Disabled, connected store or not.
    pub fn cancel_deletion(&self, key_id: &str) -> Result<(Uuid, Vec<Change>), KmsError> {
        let id = self
            .checked(key_id, false, KeyOp::CancelKeyDeletion)?
            .key_id;
        let changes = self.update_key(id, |k| {
            k.deletion = None;
            k.enabled = false;
        });
        Ok((id, changes))
    }

    pub fn put_policy(
        &self,
        key_id: &str,
        name: &str,
        policy: String,
    ) -> Result<Vec<Change>, KmsError> {
        if name != "default" {
            return Err(KmsError::no_such_policy(name));
        }
        check_policy(&policy)?;
        let id = self.checked(key_id, false, KeyOp::PutKeyPolicy)?.key_id;
        let policy = self.interned(Arc::from(policy));
        Ok(self.update_key(id, |k| k.policy = policy))
    }

    /// Plans the removal of a key whose waiting period has ended at `now`, and of its
    /// aliases, with the [`DeletionTask`] that finishes it (the backing key's delete, the
    /// records) durable in the same commit; `None` if the key is gone or no longer due (it was
    /// cancelled or rescheduled meanwhile). Nothing changes until [`Registry::remove_key`].
    pub fn plan_delete_key(&self, id: &Uuid, now: u64) -> Option<PlannedDeletion> {
        let record = self.keys.get(id)?;
        if record.deletion.is_none_or(|d| d.deletion_date_millis > now) {
            return None;
        }
        let aliases: Vec<String> = self
            .aliases
            .values()
            .filter(|a| a.target_key_id == *id)
            .map(|a| a.name.clone())
            .collect();
        let task = DeletionTask {
            key_id: *id,
            backing: match &record.origin {
                KeyOrigin::CloudHsm {
                    custom_key_store_id,
                    cluster_id,
                    backing_key,
                } => Some(DeletedBacking {
                    custom_key_store_id: custom_key_store_id.clone(),
                    cluster_id: cluster_id.clone(),
                    backing_key: backing_key.clone(),
                }),
                _ => None,
            },
            deleted_aliases: aliases.clone(),
            deleted_at_millis: now,
            place: self.places.get(id).cloned(),
        };
        let mut writes = vec![Write::delete(Table::Keys, key_row(record))];
        if self.places.contains_key(id) {
            writes.push(Write::delete(Table::Places, id.to_string()));
        }
        if self.imports.contains_key(id) {
            writes.push(Write::delete(Table::Imports, id.to_string()));
        }
        if self.rotations.contains_key(id) {
            writes.push(Write::delete(Table::Rotations, id.to_string()));
        }
        // A key's grants go with it.
        writes.extend(
            self.grants_of(id)
                .map(|g| Write::delete(Table::Grants, grants::row(id, &g.grant_id))),
        );
        writes.extend(
            aliases
                .iter()
                .map(|name| Write::delete(Table::Aliases, name.clone())),
        );
        writes.push(Write::put(Table::Deletions, id.to_string(), &task));
        Some(PlannedDeletion {
            aliases,
            writes,
            task,
        })
    }

    /// Removes a key and the aliases planned with it, once their deletion is durable.
    pub fn remove_key(&mut self, id: &Uuid, aliases: &[String]) {
        self.keys.remove(id);
        self.uninstall_place(id);
        if let Some(imports) = self.imports.remove(id) {
            for n in imports.others.keys() {
                self.rotated.remove(&(*id, *n));
            }
        }
        self.materials.remove(id);
        self.typed.remove(id);
        if let Some(rotations) = self.rotations.remove(id) {
            for n in 1..=rotations.current() {
                self.rotated.remove(&(*id, n));
            }
        }
        let granted: Vec<(Uuid, String)> = self
            .grants_of(id)
            .map(|g| (g.key_id, g.grant_id.clone()))
            .collect();
        for grant in granted {
            self.grants.remove(&grant);
        }
        for name in aliases {
            self.aliases.remove(name);
        }
    }

    // ---- tags -------------------------------------------------------------------------

    pub fn tag(&self, key_id: &str, tags: Vec<(String, String)>) -> Result<Vec<Change>, KmsError> {
        check_tags(&tags)?;
        let record = self.checked(key_id, false, KeyOp::TagResource)?;
        let mut merged = record.tags.clone();
        merged.extend(tags);
        if merged.len() > MAX_TAGS_PER_KEY {
            return Err(KmsError::too_many_tags());
        }
        let id = record.key_id;
        Ok(self.update_key(id, |k| k.tags = merged))
    }

    pub fn untag(&self, key_id: &str, keys: Vec<String>) -> Result<Vec<Change>, KmsError> {
        for (i, k) in keys.iter().enumerate() {
            let n = i64::try_from(k.chars().count()).unwrap_or(i64::MAX);
            if !(1..=128).contains(&n) {
                let path = format!("tagKeys.{}.member", i + 1);
                let shown = format!(" '{k}'");
                return Err(KmsError::out_of_bounds(&path, &shown, "length", n, 1, 128));
            }
        }
        let id = self.checked(key_id, false, KeyOp::UntagResource)?.key_id;
        Ok(self.update_key(id, |k| {
            for key in &keys {
                k.tags.remove(key);
            }
        }))
    }

    // ---- aliases ----------------------------------------------------------------------

    pub fn create_alias(
        &self,
        name: &str,
        target: &str,
        now_millis: u64,
    ) -> Result<Vec<Change>, KmsError> {
        check_alias_name(name)?;
        let id = self.checked(target, false, KeyOp::CreateAlias)?.key_id;
        let scope = self.scope();
        let row = alias_row(&scope, &self.home, name);
        if self.aliases.contains_key(&*row) {
            return Err(KmsError::AlreadyExists(format!(
                "An alias with the name {} already exists",
                scope.alias_arn(name)
            )));
        }
        if self
            .aliases
            .values()
            .filter(|a| a.target_key_id == id)
            .count()
            >= MAX_ALIASES_PER_KEY
        {
            return Err(KmsError::LimitExceeded(format!(
                "A key can have at most {MAX_ALIASES_PER_KEY} aliases."
            )));
        }
        let alias = AliasRecord {
            name: row.into_owned(),
            target_key_id: id,
            created_at_millis: now_millis,
            updated_at_millis: now_millis,
        };
        Ok(vec![Change::PutAlias(alias)])
    }

    pub fn update_alias(
        &self,
        name: &str,
        target: &str,
        now_millis: u64,
    ) -> Result<Vec<Change>, KmsError> {
        check_alias_name(name)?;
        let id = self
            .checked(target, false, KeyOp::UpdateAliasNewTarget)?
            .key_id;
        let scope = self.scope();
        let Some(alias) = self.aliases.get(&*alias_row(&scope, &self.home, name)) else {
            return Err(KmsError::NotFound(format!(
                "Alias {} is not found.",
                scope.alias_arn(name)
            )));
        };
        let mut alias = alias.clone();
        alias.target_key_id = id;
        alias.updated_at_millis = now_millis;
        Ok(vec![Change::PutAlias(alias)])
    }

    pub fn delete_alias(&self, name: &str) -> Result<Vec<Change>, KmsError> {
        if !name.starts_with("alias/") {
            return Err(KmsError::InvalidAliasName(format!(
                "Alias must start with the prefix \"alias/\": {name}"
            )));
        }
        let scope = self.scope();
        let row = alias_row(&scope, &self.home, name);
        if !self.aliases.contains_key(&*row) {
            return Err(KmsError::NotFound(format!(
                "Alias {} is not found.",
                scope.alias_arn(name)
            )));
        }
        Ok(vec![Change::DeleteAlias(row.into_owned())])
    }

    /// The key an alias of the request's scope points at, if the alias exists.
    pub fn alias_target(&self, name: &str) -> Option<Uuid> {
        self.aliases
            .get(&*alias_row(&self.scope(), &self.home, name))
            .map(|a| a.target_key_id)
    }

    /// Aliases in name order, optionally only those of one key, after `marker`.
    pub fn list_aliases(
        &self,
        key_id: Option<&str>,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<AliasRecord>, Option<String>), KmsError> {
        let target = match key_id {
            Some(k) => Some(self.checked(k, false, KeyOp::ListAliases)?.key_id),
            None => None,
        };
        let scope = self.scope();
        let prefix = alias_row(&scope, &self.home, "alias/");
        let mut all = self
            .aliases
            .range::<str, _>((
                std::ops::Bound::Included(&*prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(row, _)| row.starts_with(&*prefix))
            .map(|(_, a)| a)
            .filter(|a| target.is_none_or(|t| a.target_key_id == t));
        if let Some(m) = marker {
            if !m.starts_with("alias/") {
                return Err(KmsError::InvalidMarker(format!("Invalid marker: {m}")));
            }
        }
        let mut page = Vec::new();
        let mut more = false;
        for a in all.by_ref() {
            let name = &a.name[prefix.len() - "alias/".len()..];
            if marker.is_some_and(|m| name <= m) {
                continue;
            }
            if page.len() == limit {
                more = true;
                break;
            }
            page.push(AliasRecord {
                name: name.to_string(),
                ..a.clone()
            });
        }
        let next = if more {
            page.last().map(|a| a.name.clone())
        } else {
            None
        };
        Ok((page, next))
    }

    // ---- custom key stores ------------------------------------------------------------

    /// The custom key stores of the request's scope: the home scope has them all (their
    /// clusters are in the home Region), every other scope none.
    pub fn stores(&self) -> impl Iterator<Item = &KeyStoreRecord> {
        let home = self.in_home_scope();
        self.stores.values().filter(move |_| home)
    }

    pub fn store(&self, id: &str) -> Result<&KeyStoreRecord, KmsError> {
        self.stores
            .get(id)
            .filter(|_| self.in_home_scope())
            .ok_or_else(|| {
                KmsError::CustomKeyStoreNotFound(format!("Custom key store {id} does not exist."))
            })
    }

    pub fn store_by_name(&self, name: &str) -> Option<&KeyStoreRecord> {
        self.stores().find(|s| s.name == name)
    }

    /// Keys (in any state) that live in a store.
    pub fn keys_in_store(&self, id: &str) -> usize {
        self.keys
            .values()
            .filter(|k| k.origin.store_id() == Some(id))
            .count()
    }

    pub fn wrap_password(&self, store_id: &str, password: &SecretString) -> Vec<u8> {
        self.master
            .seal(password.expose().as_bytes(), &password_context(store_id))
    }

    /// The kmsuser password a store holds (and the one being rotated to, if any).
    pub fn passwords(
        &self,
        store: &KeyStoreRecord,
    ) -> Result<(SecretString, Option<SecretString>), KmsError> {
        let open = |w: &[u8]| {
            self.master
                .open(w, &password_context(&store.id))
                .ok()
                .and_then(|p| std::str::from_utf8(p.expose()).ok().map(SecretString::new))
                .ok_or_else(|| KmsError::KmsInternal("a stored password does not unwrap".into()))
        };
        let current = open(&store.wrapped_password)?;
        let pending = match &store.wrapped_pending_password {
            Some(w) => Some(open(w)?),
            None => None,
        };
        Ok((current, pending))
    }

    pub fn check_store_quota(&self) -> Result<(), KmsError> {
        if self.stores.len() >= MAX_KEY_STORES {
            return Err(KmsError::LimitExceeded(format!(
                "The request was rejected because the number of custom key stores exceeds {MAX_KEY_STORES}."
            )));
        }
        Ok(())
    }

    /// The write that makes a store record (new or changed) durable.
    pub fn store_write(record: &KeyStoreRecord) -> Write {
        Write::put(Table::KeyStores, record.id.clone(), record)
    }

    /// Installs a store record once it is durable.
    pub fn install_store(&mut self, record: KeyStoreRecord) {
        self.stores.insert(record.id.clone(), record);
    }

    /// Removes a store record once its deletion is durable.
    pub fn uninstall_store(&mut self, id: &str) {
        self.stores.remove(id);
    }
}

#[cfg(test)]
mod tests;
