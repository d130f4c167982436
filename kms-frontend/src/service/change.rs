//! A change to the key registry, as an operation plans it: what to persist, then install. An
//! operation is a pure function of the registry and its request that returns changes (or an
//! error); the shell makes them durable, installs them once they are, and only then answers.

use uuid::Uuid;

use super::model::{
    AliasRecord, GrantRecord, ImportedMaterials, KeyPlace, KeyRecord, KeyRotations,
};

/// One planned change to the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A key's record, new or changed.
    PutKey(KeyRecord),
    /// An alias, new or pointed at another key.
    PutAlias(AliasRecord),
    /// An alias removed.
    DeleteAlias(String),
    /// A grant, new.
    PutGrant(GrantRecord),
    /// A grant retired or revoked.
    DeleteGrant { key_id: Uuid, grant_id: String },
    /// A key's rotation schedule and materials, as they now are.
    PutRotations(Uuid, KeyRotations),
    /// Where a key lives, when not in the home scope or multi-Region (written with the key).
    PutPlace(Uuid, KeyPlace),
    /// A symmetric EXTERNAL key's other imported materials, as they now are.
    PutImports(Uuid, ImportedMaterials),
}
