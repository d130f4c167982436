//! More than one imported material in a symmetric EXTERNAL key: ImportKeyMaterial with
//! ImportType NEW_KEY_MATERIAL imports material for the key's next on-demand rotation
//! (PENDING_ROTATION), RotateKeyOnDemand makes it current, and the material it rotated from
//! stays permanently associated with the key (NON_CURRENT): ciphertexts made under it still
//! decrypt, and while it is not imported (deleted by DeleteImportedKeyMaterial with its
//! KeyMaterialId, or expired) the key is PendingImport, as AWS's guide says.
//!
//! The key's record always holds its current material (so its state, ValidTo and the hot path
//! read it as for any EXTERNAL key); [`ImportedMaterials`] holds the others, each sealed under
//! the key's id and its number.

use hsmkms_common::secret::SecretBytes;
use uuid::Uuid;

use super::import::imported_context;
use super::{Registry, MAX_ON_DEMAND_ROTATIONS};
use crate::service::change::Change;
use crate::service::error::KmsError;
use crate::service::key_spec::KeySpec;
use crate::service::model::{
    ImportedMaterial, ImportedMaterials, ImportedRotation, KeyOrigin, KeyRecord,
};
use crate::store::StoreError;

/// What material `n` of a key (not its current one) is sealed with.
fn other_context(id: &Uuid, n: u32) -> Vec<u8> {
    let mut ctx = b"hsmkms/kms-key-imported-other/v1/".to_vec();
    ctx.extend_from_slice(id.as_bytes());
    ctx.extend_from_slice(&n.to_be_bytes());
    ctx
}

/// What material pending rotation is sealed with.
fn pending_context(id: &Uuid) -> Vec<u8> {
    let mut ctx = b"hsmkms/kms-key-imported-pending/v1/".to_vec();
    ctx.extend_from_slice(id.as_bytes());
    ctx
}

/// Which of a key's materials a KeyMaterialId names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Current,
    Other(u32),
    Pending,
}

/// One entry of ListKeyRotations for an imported material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedEntry {
    pub material_id: String,
    pub description: Option<String>,
    pub imported: bool,
    /// CURRENT, NON_CURRENT or PENDING_ROTATION.
    pub state: &'static str,
    pub valid_to_millis: Option<u64>,
    pub rotated_at_millis: Option<u64>,
}

/// What ImportKeyMaterial asks besides the material.
#[derive(Debug, Clone, Copy)]
pub struct ImportAsk<'a> {
    /// ImportType, if given.
    pub import_type: Option<&'a str>,
    /// KeyMaterialId, if given.
    pub material_id: Option<&'a str>,
    /// KeyMaterialDescription, if given.
    pub description: Option<&'a str>,
    pub valid_to_millis: Option<u64>,
}

impl Registry {
    /// Takes in a key's other imported materials as they now are.
    pub(super) fn install_imports(
        &mut self,
        id: Uuid,
        imports: ImportedMaterials,
    ) -> Result<(), StoreError> {
        if let Some(old) = self.imports.get(&id) {
            for n in old.others.keys() {
                self.rotated.remove(&(id, *n));
            }
        }
        for (n, other) in &imports.others {
            let Some(imported) = &other.imported else {
                continue;
            };
            let material = self
                .master
                .unwrap_key(&imported.wrapped_material, &other_context(&id, *n))
                .map_err(|_| {
                    StoreError::Corrupt(format!(
                        "imported material {n} of key {id} does not unwrap"
                    ))
                })?;
            self.rotated.insert((id, *n), material);
        }
        self.imports.insert(id, imports);
        Ok(())
    }

    /// A key's other imported materials (empty for a key that only ever had one).
    pub fn imports_of(&self, id: &Uuid) -> ImportedMaterials {
        self.imports.get(id).cloned().unwrap_or_default()
    }

    /// Which of `record`'s materials has id `material_id`.
    pub fn which_material(&self, record: &KeyRecord, material_id: &str) -> Option<Which> {
        if record.imported_material_id() == Some(material_id) {
            return Some(Which::Current);
        }
        let imports = self.imports.get(&record.key_id)?;
        if let Some((n, _)) = imports
            .others
            .iter()
            .find(|(_, o)| o.material_id == material_id)
        {
            return Some(Which::Other(*n));
        }
        imports
            .pending
            .as_ref()
            .filter(|p| p.material_id == material_id)
            .map(|_| Which::Pending)
    }

    /// Plans ImportKeyMaterial of `material` (checked against the key's spec) into the EXTERNAL
    /// key `id`: its first material, a material it has again (its current one, one it rotated
    /// from, or the one pending rotation), or new material for its next rotation.
    pub fn plan_import(
        &self,
        id: Uuid,
        material: &SecretBytes,
        ask: ImportAsk<'_>,
    ) -> Result<(Vec<Change>, String), KmsError> {
        let record = self.by_id(&id).ok_or_else(|| {
            KmsError::NotFound(format!("Key '{}' does not exist", self.key_arn(&id)))
        })?;
        let arn = self.key_arn(&id);
        let KeyOrigin::External {
            spec,
            material_id: current_id,
            ..
        } = &record.origin
        else {
            return Err(KmsError::KmsInternal("not an EXTERNAL key".into()));
        };
        let symmetric = *spec == KeySpec::SymmetricDefault;
        if !symmetric
            && (ask.import_type.is_some() || ask.material_id.is_some() || ask.description.is_some())
        {
            return Err(KmsError::Validation(
                "ImportType, KeyMaterialId and KeyMaterialDescription are only valid for symmetric encryption KMS keys.".into(),
            ));
        }
        let mut material_id = self.imported_material_id(&id, material.expose());
        let ever = current_id.is_some();
        let new = match ask.import_type {
            Some(t) => t == "NEW_KEY_MATERIAL",
            None => !ever,
        };
        if new && ask.material_id.is_some() {
            return Err(KmsError::Validation(
                "You cannot specify a KeyMaterialId with ImportType NEW_KEY_MATERIAL.".into(),
            ));
        }
        let mut imports = self.imports_of(&id);
        let sealed = ImportedMaterial {
            wrapped_material: Vec::new(),
            valid_to_millis: ask.valid_to_millis,
        };
        let mut key = KeyRecord::clone(record);
        if new && !ever {
            // The first material: current, permanently the key's.
            set_current(&mut key, material_id.clone());
            self.seal_current(&mut key, material, sealed);
            if ask.description.is_some() {
                imports.current_description = ask.description.map(str::to_string);
            }
        } else if new {
            if self.family_of(&id).is_some() {
                return Err(KmsError::UnsupportedOperation(format!(
                    "{arn} is a multi-Region key; hsmkms does not rotate the imported material of multi-Region keys."
                )));
            }
            if self.which_material(record, &material_id).is_some() {
                return Err(KmsError::IncorrectKeyMaterial(format!(
                    "The key material in the request is already associated with {arn}; import it with ImportType EXISTING_KEY_MATERIAL."
                )));
            }
            if let Some(pending) = &imports.pending {
                return Err(KmsError::KmsInvalidState(format!(
                    "{arn} already has key material pending rotation ({}); delete it with DeleteImportedKeyMaterial to import other new key material.",
                    pending.material_id
                )));
            }
            imports.pending = Some(ImportedRotation {
                material_id: material_id.clone(),
                description: ask.description.map(str::to_string),
                imported: Some(ImportedMaterial {
                    wrapped_material: self.master.seal(material.expose(), &pending_context(&id)),
                    ..sealed
                }),
                rotated_at_millis: None,
            });
        } else {
            if !ever {
                return Err(KmsError::IncorrectKeyMaterial(format!(
                    "No key material was ever imported into {arn}, so there is no existing key material to reimport. Use ImportType NEW_KEY_MATERIAL."
                )));
            }
            let which = match self.which_material(record, &material_id) {
                Some(which) => which,
                // Imported before ids were keyed: the same material keeps the id it has.
                None if current_id.as_deref()
                    == Some(super::import::legacy_material_id(&id, material.expose()).as_str()) =>
                {
                    material_id = current_id.clone().unwrap_or_default();
                    Which::Current
                }
                None => {
                    return Err(KmsError::IncorrectKeyMaterial(
                        "The key material in the request is not the same key material that was previously imported into this KMS key.".into(),
                    ))
                }
            };
            if let Some(asked) = ask.material_id {
                if self.which_material(record, asked).is_none() {
                    return Err(KmsError::IncorrectKeyMaterial(format!(
                        "The key material id {asked} is not associated with this KMS key."
                    )));
                }
                if asked != material_id {
                    return Err(KmsError::IncorrectKeyMaterial(format!(
                        "The key material in the request is not the key material {asked}."
                    )));
                }
            }
            let description = ask.description.map(str::to_string);
            match which {
                Which::Current => {
                    self.seal_current(&mut key, material, sealed);
                    if description.is_some() {
                        imports.current_description = description;
                    }
                }
                Which::Other(n) => {
                    if let Some(other) = imports.others.get_mut(&n) {
                        other.imported = Some(ImportedMaterial {
                            wrapped_material: self
                                .master
                                .seal(material.expose(), &other_context(&id, n)),
                            ..sealed
                        });
                        if description.is_some() {
                            other.description = description;
                        }
                    }
                }
                Which::Pending => {
                    if let Some(pending) = imports.pending.as_mut() {
                        pending.imported = Some(ImportedMaterial {
                            wrapped_material: self
                                .master
                                .seal(material.expose(), &pending_context(&id)),
                            ..sealed
                        });
                        if description.is_some() {
                            pending.description = description;
                        }
                    }
                }
            }
        }
        let mut changes = Vec::new();
        if key != *record {
            changes.push(Change::PutKey(key));
        }
        if imports != self.imports_of(&id) {
            changes.push(Change::PutImports(id, imports));
        }
        Ok((changes, material_id))
    }

    /// `key`'s current material becomes `material`, sealed as a record's is.
    fn seal_current(&self, key: &mut KeyRecord, material: &SecretBytes, sealed: ImportedMaterial) {
        let id = key.key_id;
        if let KeyOrigin::External { imported, .. } = &mut key.origin {
            *imported = Some(ImportedMaterial {
                wrapped_material: self.master.seal(material.expose(), &imported_context(&id)),
                ..sealed
            });
        }
    }

    /// Plans DeleteImportedKeyMaterial: the material `material_id` names (the current one if
    /// none), which the key keeps the id of; material pending rotation goes altogether.
    /// Returns the deleted material's id.
    pub fn plan_delete_imported(
        &self,
        id: Uuid,
        material_id: Option<&str>,
    ) -> Result<(Vec<Change>, Option<String>), KmsError> {
        let Some(record) = self.by_id(&id) else {
            return Ok((vec![], None));
        };
        let which = match material_id {
            None => Which::Current,
            Some(asked) => self.which_material(record, asked).ok_or_else(|| {
                KmsError::NotFound(format!(
                    "Key material {asked} is not associated with {}.",
                    self.key_arn(&id)
                ))
            })?,
        };
        let mut imports = self.imports_of(&id);
        let (changes, deleted) = match which {
            Which::Current => (
                self.update_key(id, |k| {
                    if let KeyOrigin::External { imported, .. } = &mut k.origin {
                        *imported = None;
                    }
                }),
                record.imported_material_id().map(str::to_string),
            ),
            Which::Other(n) => {
                let other = imports.others.get_mut(&n);
                let deleted = other.as_ref().map(|o| o.material_id.clone());
                if let Some(other) = other {
                    other.imported = None;
                }
                (vec![Change::PutImports(id, imports)], deleted)
            }
            Which::Pending => {
                let deleted = imports.pending.take().map(|p| p.material_id);
                (vec![Change::PutImports(id, imports)], deleted)
            }
        };
        Ok((changes, deleted))
    }

    /// RotateKeyOnDemand of a symmetric EXTERNAL key: the material pending rotation becomes
    /// current; the current one stays, NON_CURRENT.
    pub(super) fn plan_rotate_imported(
        &self,
        record: &KeyRecord,
        now_millis: u64,
    ) -> Result<Vec<Change>, KmsError> {
        let id = record.key_id;
        let arn = self.key_arn(&id);
        let mut imports = self.imports_of(&id);
        let pending = match imports.pending.take() {
            Some(p) if p.imported.is_some() => p,
            _ => {
                return Err(KmsError::KmsInvalidState(format!(
                    "No available key material pending rotation for the key: {arn}."
                )))
            }
        };
        let rotations = imports
            .others
            .values()
            .filter(|o| o.rotated_at_millis.is_some())
            .count()
            + usize::from(imports.current_rotated_at_millis.is_some());
        if rotations >= MAX_ON_DEMAND_ROTATIONS {
            return Err(KmsError::LimitExceeded(format!(
                "The on-demand rotations limit has been reached for the given keyId. No more on-demand rotations can be performed for this key: {arn}"
            )));
        }
        let unseal = |wrapped: &[u8], ctx: &[u8]| {
            self.master
                .open(wrapped, ctx)
                .map_err(|_| KmsError::KmsInternal("imported material does not unwrap".into()))
        };
        let (current_material, current_valid_to) = match record.imported() {
            Some(m) => (
                Some(unseal(&m.wrapped_material, &imported_context(&id))?),
                m.valid_to_millis,
            ),
            None => (None, None),
        };
        let next = imports
            .others
            .keys()
            .copied()
            .chain([imports.current])
            .max()
            .unwrap_or(0)
            .saturating_add(1);
        let old = imports.current;
        imports.others.insert(
            old,
            ImportedRotation {
                material_id: record
                    .imported_material_id()
                    .unwrap_or_default()
                    .to_string(),
                description: imports.current_description.take(),
                imported: current_material.map(|m| ImportedMaterial {
                    wrapped_material: self.master.seal(m.expose(), &other_context(&id, old)),
                    valid_to_millis: current_valid_to,
                }),
                rotated_at_millis: imports.current_rotated_at_millis,
            },
        );
        let Some(new) = &pending.imported else {
            return Err(KmsError::KmsInternal("pending material vanished".into()));
        };
        let material = unseal(&new.wrapped_material, &pending_context(&id))?;
        imports.current = next;
        imports.current_description = pending.description;
        imports.current_rotated_at_millis = Some(now_millis);
        let mut key = KeyRecord::clone(record);
        set_current(&mut key, pending.material_id);
        self.seal_current(
            &mut key,
            &material,
            ImportedMaterial {
                wrapped_material: Vec::new(),
                valid_to_millis: new.valid_to_millis,
            },
        );
        Ok(vec![Change::PutKey(key), Change::PutImports(id, imports)])
    }

    /// Every imported material of a symmetric EXTERNAL key, in ListKeyRotations' order: by
    /// number, then the one pending rotation.
    pub fn imported_entries(&self, record: &KeyRecord) -> Vec<ImportedEntry> {
        let imports = self.imports_of(&record.key_id);
        let mut entries: Vec<(u32, ImportedEntry)> = imports
            .others
            .iter()
            .map(|(n, o)| {
                (
                    *n,
                    ImportedEntry {
                        material_id: o.material_id.clone(),
                        description: o.description.clone(),
                        imported: o.imported.is_some(),
                        state: "NON_CURRENT",
                        valid_to_millis: o.imported.as_ref().and_then(|m| m.valid_to_millis),
                        rotated_at_millis: o.rotated_at_millis,
                    },
                )
            })
            .collect();
        if let Some(current_id) = record.imported_material_id() {
            entries.push((
                imports.current,
                ImportedEntry {
                    material_id: current_id.to_string(),
                    description: imports.current_description.clone(),
                    imported: record.imported().is_some(),
                    state: "CURRENT",
                    valid_to_millis: record.imported().and_then(|m| m.valid_to_millis),
                    rotated_at_millis: imports.current_rotated_at_millis,
                },
            ));
        }
        entries.sort_by_key(|(n, _)| *n);
        let mut list: Vec<ImportedEntry> = entries.into_iter().map(|(_, e)| e).collect();
        if let Some(p) = imports.pending {
            list.push(ImportedEntry {
                material_id: p.material_id,
                description: p.description,
                imported: p.imported.is_some(),
                state: "PENDING_ROTATION",
                valid_to_millis: p.imported.as_ref().and_then(|m| m.valid_to_millis),
                rotated_at_millis: None,
            });
        }
        list
    }

    /// The changes that delete every material of key `id` whose ValidTo passed at `now`, if
    /// any did.
    pub fn plan_expire(&self, id: &Uuid, now_millis: u64) -> Option<Vec<Change>> {
        let record = self.by_id(id)?;
        let expired = |m: &Option<ImportedMaterial>| {
            m.as_ref()
                .and_then(|m| m.valid_to_millis)
                .is_some_and(|t| t <= now_millis)
        };
        let mut changes = Vec::new();
        if expired(&record.imported().cloned()) {
            changes.extend(self.update_key(*id, |k| {
                if let KeyOrigin::External { imported, .. } = &mut k.origin {
                    *imported = None;
                }
            }));
        }
        if let Some(old) = self.imports.get(id) {
            let mut imports = old.clone();
            for other in imports.others.values_mut() {
                if expired(&other.imported) {
                    other.imported = None;
                }
            }
            if imports
                .pending
                .as_ref()
                .is_some_and(|p| expired(&p.imported))
            {
                imports.pending = None;
            }
            if imports != *old {
                changes.push(Change::PutImports(*id, imports));
            }
        }
        (!changes.is_empty()).then_some(changes)
    }

    /// When each key's earliest imported material expires, for [`Registry::due_expirations`].
    pub(super) fn expiries(&self) -> impl Iterator<Item = (Uuid, u64)> + '_ {
        let current = self.keys.values().filter_map(|k| {
            k.imported()
                .and_then(|m| m.valid_to_millis)
                .map(|t| (k.key_id, t))
        });
        let others = self.imports.iter().flat_map(|(id, imports)| {
            imports
                .others
                .values()
                .chain(imports.pending.iter())
                .filter_map(move |o| {
                    o.imported
                        .as_ref()
                        .and_then(|m| m.valid_to_millis)
                        .map(|t| (*id, t))
                })
        });
        current.chain(others)
    }
}

/// Sets the id of a key's current material and clears its bytes (the caller seals them).
fn set_current(key: &mut KeyRecord, id: String) {
    if let KeyOrigin::External {
        material_id,
        imported,
        ..
    } = &mut key.origin
    {
        *material_id = Some(id);
        *imported = None;
    }
}
