//! Key rotation (EnableKeyRotation, DisableKeyRotation, RotateKeyOnDemand, ListKeyRotations and
//! the automatic rotation the scheduler runs on the emulator clock), planned as changes like
//! every other write. A rotation adds material that becomes current; every earlier material
//! stays, so every earlier ciphertext still decrypts (its blob names its material).

use hsmkms_common::aead::Sealer;
use hsmkms_common::entropy::Entropy;
use hsmkms_common::secret::KeyMaterial;
use uuid::Uuid;

use super::{validation, Registry};
use crate::service::change::Change;
use crate::service::error::KmsError;
use crate::service::key_state::{KeyOp, KeyState};
use crate::service::model::{KeyOrigin, KeyRotations, MaterialRotation, RotationSchedule};
use crate::store::StoreError;

/// The period EnableKeyRotation sets when the request names none.
pub const DEFAULT_ROTATION_PERIOD_DAYS: u32 = 365;
/// The bounds of `RotationPeriodInDays`.
const MIN_PERIOD_DAYS: i64 = 90;
const MAX_PERIOD_DAYS: i64 = 2560;
/// KMS's quota of on-demand rotations of one key: 25, as the Developer Guide now says (the API
/// reference and earlier recordings said 10).
pub const MAX_ON_DEMAND_ROTATIONS: usize = 25;

const DAY_MILLIS: u64 = 24 * 3600 * 1000;

/// What a rotated material is wrapped with, apart from every other material of every key.
pub(super) fn rotated_context(id: &Uuid, material: u32) -> Vec<u8> {
    let mut ctx = b"hsmkms/kms-key-rotation/v1/".to_vec();
    ctx.extend_from_slice(id.as_bytes());
    ctx.extend_from_slice(&material.to_be_bytes());
    ctx
}

impl Registry {
    /// Takes a key's rotations in, unwrapping the materials it does not hold yet.
    pub(super) fn install_rotations(
        &mut self,
        id: Uuid,
        rotations: KeyRotations,
    ) -> Result<(), StoreError> {
        for (i, rotation) in rotations.rotations.iter().enumerate() {
            let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
            if self.rotated.contains_key(&(id, n)) {
                continue;
            }
            let material = self
                .master
                .unwrap_key(&rotation.wrapped_material, &rotated_context(&id, n))
                .map_err(|_| {
                    StoreError::Corrupt(format!("rotated material {n} of key {id} does not unwrap"))
                })?;
            self.rotated.insert((id, n), material);
        }
        self.rotations.insert(id, rotations);
        Ok(())
    }

    /// The `KeyMaterialId` of material `n` of a key: a rotation's own id, or for the original
    /// material an id derived from the key's (SHA-256, 64 hex digits), so it needs no storage
    /// and never changes.
    pub fn material_id(&self, id: &Uuid, n: u32) -> String {
        if let Some(imports) = self.imports.get(id) {
            if n != imports.current {
                if let Some(other) = imports.others.get(&n) {
                    return other.material_id.clone();
                }
            }
        }
        use sha2::{Digest, Sha256};
        if n > 0 {
            if let Some(r) = self
                .rotations
                .get(id)
                .and_then(|r| r.rotations.get(n as usize - 1))
            {
                return r.material_id.clone();
            }
        }
        if let Some(imported) = self.keys.get(id).and_then(|k| k.imported_material_id()) {
            return imported.to_string();
        }
        // A multi-Region family shares its material, so its id too.
        let base = self.family_of(id).unwrap_or(*id);
        let digest = Sha256::new()
            .chain_update(b"hsmkms/key-material-id/v1/")
            .chain_update(base.as_bytes())
            .finalize();
        hex::encode(digest)
    }

    /// The number of a key's current material: 0 until it rotates.
    pub fn current_material(&self, id: &Uuid) -> u32 {
        if let Some(imports) = self.imports.get(id) {
            return imports.current;
        }
        self.rotations.get(id).map_or(0, KeyRotations::current)
    }

    /// The cipher of material `n` of an AWS_KMS key, made for one call.
    pub fn sealer_at(&self, id: &Uuid, n: u32) -> Option<Sealer> {
        // An EXTERNAL key's record holds its current material, whatever its number.
        let in_record = self.imports.get(id).map_or(0, |m| m.current);
        if n == in_record {
            self.sealer(id)
        } else {
            self.rotated.get(&(*id, n)).map(Sealer::new)
        }
    }

    /// A key's rotations, if it has a schedule or rotated.
    pub fn rotations_of(&self, id: &Uuid) -> Option<&KeyRotations> {
        self.rotations.get(id)
    }

    /// EnableKeyRotation: automatic rotation every `period_days` (365 if not given), the next
    /// one a period from now. Enabling it again with another period restarts the count.
    pub fn enable_rotation(
        &self,
        key_id: &str,
        period_days: Option<i64>,
        now: u64,
    ) -> Result<Vec<Change>, KmsError> {
        let period = match period_days {
            None => i64::from(DEFAULT_ROTATION_PERIOD_DAYS),
            Some(p) if p < MIN_PERIOD_DAYS => {
                return Err(validation(
                    "rotationPeriodInDays",
                    p,
                    "Member must have value greater than or equal to 90",
                ))
            }
            Some(p) if p > MAX_PERIOD_DAYS => {
                return Err(validation(
                    "rotationPeriodInDays",
                    p,
                    "Member must have value less than or equal to 2560",
                ))
            }
            Some(p) => p,
        };
        let period = u32::try_from(period).unwrap_or(DEFAULT_ROTATION_PERIOD_DAYS);
        let id = self
            .checked(key_id, false, KeyOp::EnableKeyRotation)?
            .key_id;
        self.check_not_replica(&id)?;
        let mut rotations = self.rotations.get(&id).cloned().unwrap_or_default();
        match rotations.schedule {
            Some(s) if s.period_days == period => return Ok(vec![]),
            _ => {
                rotations.schedule = Some(RotationSchedule {
                    period_days: period,
                    next_rotation_millis: now.saturating_add(u64::from(period) * DAY_MILLIS),
                })
            }
        }
        self.with_siblings(id, rotations)
    }

    /// DisableKeyRotation: no more automatic rotations; earlier materials stay.
    pub fn disable_rotation(&self, key_id: &str) -> Result<Vec<Change>, KmsError> {
        let id = self
            .checked(key_id, false, KeyOp::EnableKeyRotation)?
            .key_id;
        self.check_not_replica(&id)?;
        match self.rotations.get(&id) {
            Some(r) if r.schedule.is_some() => {
                let mut rotations = r.clone();
                rotations.schedule = None;
                self.with_siblings(id, rotations)
            }
            _ => Ok(vec![]),
        }
    }

    /// RotateKeyOnDemand: new material, current at once; at most ten per key. The key's
    /// automatic schedule, if any, is unchanged.
    pub fn rotate_on_demand(
        &self,
        key_id: &str,
        now: u64,
        entropy: &dyn Entropy,
    ) -> Result<(Vec<Change>, Uuid), KmsError> {
        let record = self.checked(key_id, false, KeyOp::RotateKeyOnDemand)?;
        let id = record.key_id;
        self.check_not_replica(&id)?;
        if matches!(record.origin, KeyOrigin::External { .. }) {
            return Ok((self.plan_rotate_imported(record, now)?, id));
        }
        let mut rotations = self.rotations.get(&id).cloned().unwrap_or_default();
        if rotations.on_demand() >= MAX_ON_DEMAND_ROTATIONS {
            return Err(KmsError::LimitExceeded(format!(
                "The on-demand rotations limit has been reached for the given keyId. No more on-demand rotations can be performed for this key: {}",
                self.key_arn(&id)
            )));
        }
        self.add_material(&id, &mut rotations, now, true, entropy);
        Ok((self.with_siblings(id, rotations)?, id))
    }

    /// Keys whose automatic rotation is due at `now`, soonest first.
    pub fn due_for_rotation(&self, now: u64) -> Vec<Uuid> {
        let mut due: Vec<(u64, Uuid)> = self
            .rotations
            .iter()
            // A replica rotates with its primary.
            .filter(|(id, _)| !self.is_replica(id))
            .filter_map(|(id, r)| {
                r.schedule
                    .filter(|s| s.next_rotation_millis <= now)
                    .map(|s| (s.next_rotation_millis, *id))
            })
            .collect();
        due.sort();
        due.into_iter().map(|(_, id)| id).collect()
    }

    /// The automatic rotation of `id` if it is due at `now` and the key is enabled (a disabled
    /// key or one pending deletion is not rotated; it is once enabled again). The next one is a
    /// period after the one that fell due, so a clock moved past several periods rotates once
    /// for each.
    pub fn plan_automatic_rotation(
        &self,
        id: &Uuid,
        now: u64,
        entropy: &dyn Entropy,
    ) -> Option<Vec<Change>> {
        let record = self.keys.get(id)?;
        if self.state_of(record) != KeyState::Enabled {
            return None;
        }
        let mut rotations = self.rotations.get(id)?.clone();
        let schedule = rotations
            .schedule
            .filter(|s| s.next_rotation_millis <= now)?;
        self.add_material(
            id,
            &mut rotations,
            schedule.next_rotation_millis,
            false,
            entropy,
        );
        rotations.schedule = Some(RotationSchedule {
            next_rotation_millis: schedule
                .next_rotation_millis
                .saturating_add(u64::from(schedule.period_days) * DAY_MILLIS),
            ..schedule
        });
        self.with_siblings(*id, rotations).ok()
    }

    /// A change of key `id`'s rotations, and the same for its multi-Region siblings.
    fn with_siblings(&self, id: Uuid, rotations: KeyRotations) -> Result<Vec<Change>, KmsError> {
        let mut changes = self.sync_rotations(&id, &rotations)?;
        changes.insert(0, Change::PutRotations(id, rotations));
        Ok(changes)
    }

    /// Rotation is a shared property of multi-Region keys, managed on the primary key.
    fn check_not_replica(&self, id: &Uuid) -> Result<(), KmsError> {
        if self.is_replica(id) {
            return Err(KmsError::UnsupportedOperation(format!(
                "{} is not a multi-region primary key.",
                self.key_arn(id)
            )));
        }
        Ok(())
    }

    /// Appends a new material to `rotations`, wrapped under the master key.
    fn add_material(
        &self,
        id: &Uuid,
        rotations: &mut KeyRotations,
        at: u64,
        on_demand: bool,
        entropy: &dyn Entropy,
    ) {
        let n = rotations.current().saturating_add(1);
        let material = KeyMaterial::generate_from(entropy);
        let mut material_id = [0u8; 32];
        entropy.fill(&mut material_id);
        rotations.rotations.push(MaterialRotation {
            rotated_at_millis: at,
            on_demand,
            material_id: hex::encode(material_id),
            wrapped_material: self.master.wrap(&material, &rotated_context(id, n)),
        });
    }
}
