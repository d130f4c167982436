//! Converting between the in-memory objects of the core and their wrapped forms: on the wire
//! (material under the cluster's synchronisation key) and at rest (under the node's storage
//! key). The wrapping is bound to where the copy lives and to the key's handle, so a wrapped
//! blob cannot be replayed as another key or moved between disk and wire.

use std::sync::Arc;

use hsmkms_common::aead::Sealer;
use hsmkms_common::wire::{ErrorCode, Object, ObjectBody, ObjectId, WireError, WrappedKey};

use crate::core::{Entry, KeyEntry, Stored};

/// Where a wrapped copy lives; part of the wrapping's associated data.
#[derive(Debug, Clone, Copy)]
pub enum Place {
    Wire,
    Disk,
}

fn context(place: Place, cluster_id: &str, handle: u64) -> Vec<u8> {
    let tag: &[u8] = match place {
        Place::Wire => b"hsmkms/wire/v1",
        Place::Disk => b"hsmkms/disk/v1",
    };
    let mut ctx = Vec::with_capacity(tag.len() + cluster_id.len() + 10);
    ctx.extend_from_slice(tag);
    ctx.push(0);
    ctx.extend_from_slice(cluster_id.as_bytes());
    ctx.push(0);
    ctx.extend_from_slice(&handle.to_be_bytes());
    ctx
}

/// Wraps an object for `place`.
pub fn wrap(stored: &Stored, sealer: &Sealer, place: Place, cluster_id: &str) -> Object {
    let body = match &stored.entry {
        Entry::Member(m) => ObjectBody::Member((**m).clone()),
        Entry::User(u) => ObjectBody::User((**u).clone()),
        Entry::Tombstone => ObjectBody::Tombstone,
        Entry::LoginState(l) => ObjectBody::LoginState(**l),
        Entry::Key(k) => ObjectBody::Key(WrappedKey {
            attributes: k.attributes.clone(),
            wrapped_material: sealer.wrap(
                k.material(),
                &context(place, cluster_id, k.attributes.handle),
            ),
        }),
    };
    Object {
        id: stored.id.clone(),
        version: stored.version,
        body,
    }
}

/// Unwraps an object that came from `place`. Fails if the material does not authenticate, or
/// if the object's parts disagree (a key body under a user id, say).
pub fn unwrap(
    object: Object,
    sealer: &Sealer,
    place: Place,
    cluster_id: &str,
) -> Result<Stored, WireError> {
    let bad = |what: &str| {
        WireError::new(
            ErrorCode::InvalidRequest,
            format!("rejected object: {what}"),
        )
    };
    let entry = match (&object.id, object.body) {
        (ObjectId::Member(id), ObjectBody::Member(m)) if *id == m.hsm_id => {
            Entry::Member(Box::new(m))
        }
        (ObjectId::User(name), ObjectBody::User(u)) if *name == u.username => {
            Entry::User(Box::new(u))
        }
        (ObjectId::Key(handle), ObjectBody::Key(k)) if *handle == k.attributes.handle => {
            let material = sealer
                .unwrap_key(&k.wrapped_material, &context(place, cluster_id, *handle))
                .map_err(|_| bad("key material does not authenticate"))?;
            Entry::Key(Arc::new(KeyEntry::new(k.attributes, material)))
        }
        (ObjectId::LoginState(_), ObjectBody::LoginState(l)) => Entry::LoginState(Box::new(l)),
        (_, ObjectBody::Tombstone) => Entry::Tombstone,
        _ => return Err(bad("id and body disagree")),
    };
    Ok(Stored {
        id: object.id,
        version: object.version,
        entry,
    })
}
