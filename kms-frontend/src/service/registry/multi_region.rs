//! Multi-Region keys: a primary key and its replicas in other Regions of the same account,
//! which share their `mrk-` id, key material (every rotation of it), spec, usage, origin and
//! rotation schedule, and nothing else (description, policy, tags, aliases, grants and state
//! are each key's own).
//!
//! Each key of a family has a record and an internal id of its own (the primary first created
//! has the family's digits as its id), its material wrapped under its own id like any key's;
//! the places table says which family a key belongs to and whether it is the primary. A
//! ciphertext names the internal id of the key that made it; in another Region of the family
//! it opens with that Region's key, which has the same material under the same number.

use hsmkms_common::entropy::Entropy;
use uuid::Uuid;

use super::rotation::rotated_context;
use super::{check_key_inputs, default_policy, material_context, typed_material_context, Registry};
use crate::service::change::Change;
use crate::service::error::KmsError;
use crate::service::key_ref::key_id_text;
use crate::service::key_state::KeyOp;
use crate::service::model::{
    KeyOrigin, KeyPlace, KeyRecord, KeyRotations, MaterialRotation, RotationSchedule,
};

/// A multi-Region key's place in its family, as KeyMetadata's MultiRegionConfiguration gives
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiRegionView {
    pub primary: bool,
    /// The primary key's ARN and Region.
    pub primary_key: (String, String),
    /// Every replica's ARN and Region, in Region order.
    pub replica_keys: Vec<(String, String)>,
}

/// What ReplicateKey asks for besides the key and the Region.
#[derive(Debug, Default)]
pub struct ReplicaRequest {
    pub description: Option<String>,
    pub policy: Option<String>,
    pub tags: Vec<(String, String)>,
}

impl Registry {
    /// Whether a key is a multi-Region primary key.
    pub fn is_primary(&self, id: &Uuid) -> bool {
        self.places
            .get(id)
            .is_some_and(|p| p.multi_region.is_some() && p.primary)
    }

    /// Whether a key is a multi-Region replica key.
    pub fn is_replica(&self, id: &Uuid) -> bool {
        self.places
            .get(id)
            .is_some_and(|p| p.multi_region.is_some() && !p.primary)
    }

    /// The other keys of a key's multi-Region family.
    pub fn siblings(&self, id: &Uuid) -> impl Iterator<Item = Uuid> + '_ {
        let family = self.family_of(id).map_or(&[][..], |mrk| self.family(&mrk));
        let id = *id;
        family.iter().copied().filter(move |m| *m != id)
    }

    /// Whether a primary key still has replicas (it cannot be deleted until they are).
    pub fn has_replicas(&self, id: &Uuid) -> bool {
        self.is_primary(id) && self.siblings(id).next().is_some()
    }

    /// DescribeKey's MultiRegionConfiguration of a key, if it is a multi-Region key.
    pub fn multi_region_view(&self, id: &Uuid) -> Option<MultiRegionView> {
        let mrk = self.family_of(id)?;
        let mut primary_key = None;
        let mut replica_keys = Vec::new();
        for member in self.family(&mrk) {
            let entry = (self.key_arn(member), self.region_of(member).to_string());
            if self.is_primary(member) {
                primary_key = Some(entry);
            } else {
                replica_keys.push(entry);
            }
        }
        replica_keys.sort_by(|a, b| a.1.cmp(&b.1));
        Some(MultiRegionView {
            primary: self.is_primary(id),
            primary_key: primary_key?,
            replica_keys,
        })
    }

    /// The key a ciphertext blob names, as the request's Region and account sees it: the key
    /// itself if it lives there, else the key of its multi-Region family that does.
    pub fn key_for_blob(&self, id: &Uuid) -> Option<Uuid> {
        let scope = self.scope();
        if !self.keys.contains_key(id) {
            return None;
        }
        if self.in_scope(id, &scope) {
            return Some(*id);
        }
        let mrk = self.family_of(id)?;
        self.family_member(&mrk, &scope)
    }

    /// ReplicateKey: a replica of the primary key `key_id` in `region`, with the primary's
    /// material (and every rotation of it) wrapped under the replica's own id. Returns the
    /// replica's record and the changes.
    pub fn plan_replicate(
        &self,
        key_id: &str,
        region: &str,
        request: ReplicaRequest,
        now_millis: u64,
        entropy: &dyn Entropy,
    ) -> Result<(KeyRecord, Vec<Change>), KmsError> {
        let primary = self.checked(key_id, false, KeyOp::ReplicateKey)?;
        let id = primary.key_id;
        let arn = self.key_arn(&id);
        if !self.is_primary(&id) {
            return Err(KmsError::UnsupportedOperation(format!(
                "{arn} is not a multi-region primary key."
            )));
        }
        let Some(mrk) = self.family_of(&id) else {
            return Err(KmsError::KmsInternal("a primary key has no family".into()));
        };
        let account = self.account_of(&id).to_string();
        if self
            .family(&mrk)
            .iter()
            .any(|m| self.region_of(m) == region)
        {
            return Err(KmsError::AlreadyExists(format!(
                "Key 'arn:aws:kms:{region}:{account}:key/{}' already exists",
                key_id_text(&mrk, true)
            )));
        }
        self.check_quota()?;
        check_key_inputs(
            request.description.as_deref(),
            request.policy.as_deref(),
            &request.tags,
        )?;
        let description = request.description.unwrap_or_default();
        let policy = match request.policy {
            Some(policy) => self.interned(policy.into()),
            None if account == self.home.account_id => self.default_policy.clone(),
            None => default_policy(&account).into(),
        };
        let mut bytes = [0u8; 16];
        entropy.fill(&mut bytes);
        let replica_id = uuid::Builder::from_random_bytes(bytes).into_uuid();
        let origin = match &primary.origin {
            KeyOrigin::AwsKms { .. } => {
                let material = self.materials.get(&id).ok_or_else(not_loaded)?;
                KeyOrigin::AwsKms {
                    wrapped_material: self.master.wrap(material, &material_context(&replica_id)),
                }
            }
            KeyOrigin::AwsKmsTyped { spec, usage, .. } => {
                let material = self.typed.get(&id).ok_or_else(not_loaded)?;
                KeyOrigin::AwsKmsTyped {
                    spec: *spec,
                    usage: *usage,
                    wrapped_material: self
                        .master
                        .seal(material.expose(), &typed_material_context(&replica_id)),
                }
            }
            // A replica of an imported key has no material until the same material is imported
            // into it (AWS's rule): only the primary's material id is accepted.
            KeyOrigin::External {
                spec,
                usage,
                material_id,
                ..
            } => KeyOrigin::External {
                spec: *spec,
                usage: *usage,
                material_id: material_id.clone(),
                imported: None,
            },
            KeyOrigin::CloudHsm { .. } => {
                return Err(KmsError::UnsupportedOperation(format!(
                    "{arn} is not a multi-region primary key."
                )))
            }
        };
        let record = KeyRecord {
            key_id: replica_id,
            created_at_millis: now_millis,
            description,
            enabled: true,
            deletion: None,
            origin,
            policy,
            tags: request.tags.into_iter().collect(),
        };
        let place = KeyPlace {
            region: region.to_string(),
            account_id: account,
            multi_region: Some(mrk),
            primary: false,
        };
        let mut changes = vec![
            Change::PutKey(record.clone()),
            Change::PutPlace(replica_id, place),
        ];
        if let Some(rotations) = self.rotations.get(&id) {
            changes.push(Change::PutRotations(
                replica_id,
                self.rewrapped(&id, rotations, &replica_id)?,
            ));
        }
        Ok((record, changes))
    }

    /// UpdatePrimaryRegion: the family's key in `region` becomes the primary key, the current
    /// primary `key_id` a replica.
    pub fn plan_update_primary(&self, key_id: &str, region: &str) -> Result<Vec<Change>, KmsError> {
        let record = self.checked(key_id, false, KeyOp::UpdatePrimaryRegion)?;
        let id = record.key_id;
        let arn = self.key_arn(&id);
        let Some(mrk) = self.family_of(&id) else {
            return Err(KmsError::UnsupportedOperation(format!(
                "{arn} is not a multi-region key."
            )));
        };
        if !self.is_primary(&id) {
            return Err(KmsError::UnsupportedOperation(format!(
                "{arn} is not a multi-region primary key."
            )));
        }
        if self.region_of(&id) == region {
            return Ok(vec![]);
        }
        let account = self.account_of(&id).to_string();
        let Some(new_primary) = self
            .family(&mrk)
            .iter()
            .copied()
            .find(|m| self.region_of(m) == region)
        else {
            return Err(KmsError::NotFound(format!(
                "Key 'arn:aws:kms:{region}:{account}:key/{}' does not exist",
                key_id_text(&mrk, true)
            )));
        };
        if let Some(target) = self.keys.get(&new_primary) {
            let state = self.state_of(target);
            crate::service::key_state::check(
                KeyOp::UpdatePrimaryRegion,
                state,
                &self.key_arn(&new_primary),
                false,
            )?;
        }
        let place = |m: &Uuid, primary: bool| {
            self.places.get(m).map(|p| {
                Change::PutPlace(
                    *m,
                    KeyPlace {
                        primary,
                        ..p.clone()
                    },
                )
            })
        };
        Ok([place(&id, false), place(&new_primary, true)]
            .into_iter()
            .flatten()
            .collect())
    }

    /// The changes that give a multi-Region key's siblings the rotations `rotations` of key
    /// `id` (rotation and its schedule are shared properties).
    pub(super) fn sync_rotations(
        &self,
        id: &Uuid,
        rotations: &KeyRotations,
    ) -> Result<Vec<Change>, KmsError> {
        self.siblings(id)
            .map(|m| {
                self.rewrapped(id, rotations, &m)
                    .map(|r| Change::PutRotations(m, r))
            })
            .collect()
    }

    /// `rotations` of key `from`, with every material wrapped under key `to`'s id instead.
    fn rewrapped(
        &self,
        from: &Uuid,
        rotations: &KeyRotations,
        to: &Uuid,
    ) -> Result<KeyRotations, KmsError> {
        let mut copy = KeyRotations {
            schedule: rotations.schedule.map(|s| RotationSchedule { ..s }),
            rotations: Vec::with_capacity(rotations.rotations.len()),
        };
        for (i, r) in rotations.rotations.iter().enumerate() {
            let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let material = self
                .master
                .unwrap_key(&r.wrapped_material, &rotated_context(from, n))
                .map_err(|_| not_loaded())?;
            copy.rotations.push(MaterialRotation {
                wrapped_material: self.master.wrap(&material, &rotated_context(to, n)),
                ..r.clone()
            });
        }
        Ok(copy)
    }
}

/// Material the registry should hold and does not: a defect, never a client's doing.
fn not_loaded() -> KmsError {
    KmsError::KmsInternal("The key material is not loaded.".into())
}
