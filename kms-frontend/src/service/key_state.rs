//! The KMS key-state table (reference §3) as pure functions: which state a key reports, and
//! whether an operation may run on a key in that state, with the exact error AWS answers.
//!
//! The six states a key of this emulator can be in are modelled: multi-Region keys are made
//! and changed at once (so never `Creating` or `Updating`), and a multi-Region primary key
//! scheduled for deletion while it has replicas is `PendingReplicaDeletion`. Only EXTERNAL keys
//! are `PendingImport`, only CloudHSM key store keys `Unavailable`.

use super::error::KmsError;

/// The state KMS reports for a key (`KeyMetadata.KeyState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Usable for cryptographic operations.
    Enabled,
    /// Disabled by the caller; management calls still work.
    Disabled,
    /// Scheduled for deletion; only CancelKeyDeletion brings it back.
    PendingDeletion,
    /// In a custom key store that is not connected (never an AWS_KMS key).
    Unavailable,
    /// An EXTERNAL key without key material (never imported, deleted or expired).
    PendingImport,
    /// A multi-Region primary key scheduled for deletion while replicas of it remain; it is
    /// treated as PendingDeletion by every operation.
    PendingReplicaDeletion,
}

impl KeyState {
    /// The name AWS uses on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            KeyState::Enabled => "Enabled",
            KeyState::Disabled => "Disabled",
            KeyState::PendingDeletion => "PendingDeletion",
            KeyState::Unavailable => "Unavailable",
            KeyState::PendingImport => "PendingImport",
            KeyState::PendingReplicaDeletion => "PendingReplicaDeletion",
        }
    }
}

/// The state a key reports, derived rather than stored so that connecting or disconnecting its
/// store never has to rewrite every key (reference §3, "State machine for one CloudHSM key
/// store key").
///
/// `enabled` is the underlying flag EnableKey/DisableKey set; `store_connected` is `None` for an
/// AWS_KMS key and `Some(connected)` for a key in a custom key store, where only the CONNECTED
/// connection state counts as connected.
pub fn reported_state(
    enabled: bool,
    pending_deletion: bool,
    store_connected: Option<bool>,
    pending_import: bool,
) -> KeyState {
    // Footnote 13: a key pending deletion stays PendingDeletion while its store is disconnected,
    // so the deletion can still be cancelled during the waiting period.
    if pending_deletion {
        KeyState::PendingDeletion
    } else if store_connected == Some(false) {
        KeyState::Unavailable
    } else if pending_import {
        KeyState::PendingImport
    } else if enabled {
        KeyState::Enabled
    } else {
        KeyState::Disabled
    }
}

/// A KMS operation whose outcome depends on the state of the key it names (one row of §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyOp {
    /// Encrypt.
    Encrypt,
    /// Decrypt.
    Decrypt,
    /// ReEncrypt, checked against the key that decrypts the source ciphertext.
    ReEncryptSource,
    /// ReEncrypt, checked against the key that encrypts the result.
    ReEncryptDestination,
    /// GenerateDataKey.
    GenerateDataKey,
    /// GenerateDataKeyWithoutPlaintext.
    GenerateDataKeyWithoutPlaintext,
    /// GenerateDataKeyPair.
    GenerateDataKeyPair,
    /// GenerateDataKeyPairWithoutPlaintext.
    GenerateDataKeyPairWithoutPlaintext,
    /// Sign.
    Sign,
    /// Verify.
    Verify,
    /// GenerateMac.
    GenerateMac,
    /// VerifyMac.
    VerifyMac,
    /// DeriveSharedSecret.
    DeriveSharedSecret,
    /// GetPublicKey.
    GetPublicKey,
    /// Encapsulate.
    Encapsulate,
    /// Decapsulate.
    Decapsulate,
    /// GetParametersForImport, ImportKeyMaterial and DeleteImportedKeyMaterial.
    ImportKeyMaterial,
    /// EnableKey.
    EnableKey,
    /// DisableKey.
    DisableKey,
    /// ScheduleKeyDeletion.
    ScheduleKeyDeletion,
    /// CancelKeyDeletion.
    CancelKeyDeletion,
    /// CreateAlias, checked against the alias's target key.
    CreateAlias,
    /// UpdateAlias, checked against the new target key (footnote 10: the current target may be
    /// pending deletion, so it is not checked).
    UpdateAliasNewTarget,
    /// DeleteAlias, checked against the alias's target key.
    DeleteAlias,
    /// DescribeKey.
    DescribeKey,
    /// ReplicateKey, checked against the primary key.
    ReplicateKey,
    /// UpdatePrimaryRegion, checked against the current primary key.
    UpdatePrimaryRegion,
    /// TagResource.
    TagResource,
    /// UntagResource.
    UntagResource,
    /// UpdateKeyDescription.
    UpdateKeyDescription,
    /// GetKeyPolicy.
    GetKeyPolicy,
    /// PutKeyPolicy.
    PutKeyPolicy,
    /// ListKeyPolicies.
    ListKeyPolicies,
    /// ListResourceTags.
    ListResourceTags,
    /// ListAliases with a KeyId.
    ListAliases,
    /// GetKeyRotationStatus.
    GetKeyRotationStatus,
    /// CreateGrant.
    CreateGrant,
    /// ListGrants.
    ListGrants,
    /// RetireGrant and RevokeGrant.
    RetireGrant,
    /// EnableKeyRotation and DisableKeyRotation.
    EnableKeyRotation,
    /// RotateKeyOnDemand: as EnableKeyRotation, but a key pending import is refused as
    /// pending import (recorded), not for its origin.
    RotateKeyOnDemand,
    /// ListKeyRotations.
    ListKeyRotations,
}

/// Whether `op` may run on a key in `state`, and if not, the error AWS returns (§3 footnotes).
///
/// EnableKey and DisableKey succeed on an Unavailable key (footnote 12): the caller records the
/// new underlying flag, which shows once the store reconnects.
pub fn check(
    op: KeyOp,
    state: KeyState,
    key_arn: &str,
    in_custom_key_store: bool,
) -> Result<(), KmsError> {
    // A primary key waiting for its replicas' deletion is pending deletion to every operation.
    match op {
        KeyOp::Encrypt
        | KeyOp::Decrypt
        | KeyOp::ReEncryptSource
        | KeyOp::ReEncryptDestination
        | KeyOp::GenerateDataKey
        | KeyOp::GenerateDataKeyWithoutPlaintext
        | KeyOp::GenerateDataKeyPair
        | KeyOp::GenerateDataKeyPairWithoutPlaintext
        | KeyOp::Sign
        | KeyOp::Verify
        | KeyOp::GenerateMac
        | KeyOp::VerifyMac
        | KeyOp::DeriveSharedSecret
        | KeyOp::GetPublicKey
        | KeyOp::Encapsulate
        | KeyOp::Decapsulate => match state {
            KeyState::Enabled => Ok(()),
            KeyState::Disabled => Err(disabled(key_arn)),
            // The table allows [2] or [3]; field reports show [3], which the reference
            // recommends.
            KeyState::PendingDeletion | KeyState::PendingReplicaDeletion => {
                Err(pending_deletion(key_arn))
            }
            KeyState::Unavailable => Err(unavailable(key_arn)),
            KeyState::PendingImport => Err(pending_import(key_arn)),
        },
        // The table: a disabled key takes no new grant ([1]), a key pending deletion none
        // either ([3]); an Unavailable one does.
        KeyOp::CreateGrant => match state {
            KeyState::Enabled | KeyState::Unavailable => Ok(()),
            KeyState::Disabled => Err(disabled(key_arn)),
            KeyState::PendingDeletion | KeyState::PendingReplicaDeletion => {
                Err(pending_deletion(key_arn))
            }
            KeyState::PendingImport => Err(pending_import(key_arn)),
        },
        KeyOp::EnableKey | KeyOp::DisableKey => match state {
            KeyState::PendingDeletion | KeyState::PendingReplicaDeletion => {
                Err(pending_deletion(key_arn))
            }
            KeyState::PendingImport => Err(pending_import(key_arn)),
            KeyState::Enabled | KeyState::Disabled | KeyState::Unavailable => Ok(()),
        },
        KeyOp::ScheduleKeyDeletion
        | KeyOp::CreateAlias
        | KeyOp::UpdateAliasNewTarget
        | KeyOp::TagResource
        | KeyOp::UntagResource
        | KeyOp::UpdateKeyDescription
        | KeyOp::ImportKeyMaterial
        | KeyOp::ReplicateKey
        | KeyOp::UpdatePrimaryRegion => match state {
            KeyState::PendingDeletion | KeyState::PendingReplicaDeletion => {
                Err(pending_deletion(key_arn))
            }
            KeyState::Enabled
            | KeyState::Disabled
            | KeyState::Unavailable
            | KeyState::PendingImport => Ok(()),
        },
        KeyOp::CancelKeyDeletion => match state {
            KeyState::PendingDeletion | KeyState::PendingReplicaDeletion => Ok(()),
            KeyState::Enabled
            | KeyState::Disabled
            | KeyState::Unavailable
            | KeyState::PendingImport => Err(not_pending_deletion(key_arn)),
        },
        KeyOp::DeleteAlias
        | KeyOp::DescribeKey
        | KeyOp::GetKeyPolicy
        | KeyOp::PutKeyPolicy
        | KeyOp::ListKeyPolicies
        | KeyOp::ListResourceTags
        | KeyOp::ListAliases
        | KeyOp::ListGrants
        | KeyOp::RetireGrant => Ok(()),
        // Footnote 7 first, then the key's state: [1] for a disabled key, [3] for one
        // pending deletion.
        KeyOp::EnableKeyRotation | KeyOp::RotateKeyOnDemand => {
            if in_custom_key_store || state == KeyState::Unavailable {
                return Err(rotation_unsupported(key_arn));
            }
            match state {
                KeyState::Enabled => Ok(()),
                KeyState::Disabled => Err(disabled(key_arn)),
                // AWS's answers to RotateKeyOnDemand on an EXTERNAL key without material, of
                // SYMMETRIC_DEFAULT and of RSA_4096 (recorded): its state, before its origin
                // or spec.
                KeyState::PendingImport if op == KeyOp::RotateKeyOnDemand => {
                    Err(pending_import(key_arn))
                }
                KeyState::PendingImport => Err(origin_external(key_arn)),
                KeyState::PendingDeletion
                | KeyState::PendingReplicaDeletion
                | KeyState::Unavailable => Err(pending_deletion(key_arn)),
            }
        }
        // Footnote 7. Only custom key store keys can be Unavailable, so that column is always
        // the custom key store case.
        KeyOp::GetKeyRotationStatus | KeyOp::ListKeyRotations => {
            if in_custom_key_store || state == KeyState::Unavailable {
                Err(rotation_unsupported(key_arn))
            } else if state == KeyState::PendingImport {
                Err(origin_external(key_arn))
            } else {
                Ok(())
            }
        }
    }
}

/// Whether `err` would be counted by the CloudWatch metric filter of §7
/// (`$.errorMessage = "* is pending deletion."`), which feeds the
/// `KMSKeyPendingDeletionErrorCount` metric and its alarm.
pub fn counts_as_pending_deletion_error(err: &KmsError) -> bool {
    err.message().ends_with(" is pending deletion.")
}

/// Footnote [1].
fn disabled(key_arn: &str) -> KmsError {
    KmsError::Disabled(format!("{key_arn} is disabled."))
}

/// Footnote [3].
fn pending_deletion(key_arn: &str) -> KmsError {
    KmsError::KmsInvalidState(format!("{key_arn} is pending deletion."))
}

/// Footnote [4].
fn not_pending_deletion(key_arn: &str) -> KmsError {
    KmsError::KmsInvalidState(format!("{key_arn} is not pending deletion."))
}

/// Footnote [5].
fn pending_import(key_arn: &str) -> KmsError {
    KmsError::KmsInvalidState(format!("{key_arn} is pending import."))
}

/// Footnote [6], in AWS's words (recorded).
pub fn origin_external(key_arn: &str) -> KmsError {
    KmsError::UnsupportedOperation(format!(
        "{key_arn} origin is EXTERNAL which is not valid for this operation."
    ))
}

/// Footnote [11].
fn unavailable(key_arn: &str) -> KmsError {
    KmsError::KmsInvalidState(format!("{key_arn} is unavailable."))
}

/// Footnote [7]; AWS's text is not documented, so this one says why.
fn rotation_unsupported(key_arn: &str) -> KmsError {
    KmsError::UnsupportedOperation(format!(
        "{key_arn} is in a custom key store; automatic key rotation is not supported for keys \
         in a custom key store."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    /// Expected outcome of one cell of the §3 table.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Expect {
        Ok,
        /// DisabledException "<ARN> is disabled."
        X1,
        /// KMSInvalidStateException "<ARN> is pending deletion."
        X3,
        /// KMSInvalidStateException "<ARN> is not pending deletion."
        X4,
        /// UnsupportedOperationException (custom key store: no rotation).
        X7,
        /// KMSInvalidStateException "<ARN> is unavailable."
        X11,
    }
    use Expect::{Ok as OK, X1, X11, X3, X4, X7};

    const STATES: [KeyState; 4] = [
        KeyState::Enabled,
        KeyState::Disabled,
        KeyState::PendingDeletion,
        KeyState::Unavailable,
    ];

    /// §3 for a key in a CloudHSM key store, columns in the order of `STATES`:
    /// Enabled, Disabled, PendingDeletion, Unavailable. Written out from the reference, not
    /// from the implementation.
    const CUSTOM_STORE_TABLE: [(KeyOp, [Expect; 4]); 42] = [
        (KeyOp::Encrypt, [OK, X1, X3, X11]),
        (KeyOp::Decrypt, [OK, X1, X3, X11]),
        (KeyOp::ReEncryptSource, [OK, X1, X3, X11]),
        (KeyOp::ReEncryptDestination, [OK, X1, X3, X11]),
        (KeyOp::GenerateDataKey, [OK, X1, X3, X11]),
        (KeyOp::GenerateDataKeyWithoutPlaintext, [OK, X1, X3, X11]),
        (KeyOp::GenerateDataKeyPair, [OK, X1, X3, X11]),
        (
            KeyOp::GenerateDataKeyPairWithoutPlaintext,
            [OK, X1, X3, X11],
        ),
        (KeyOp::Sign, [OK, X1, X3, X11]),
        (KeyOp::Verify, [OK, X1, X3, X11]),
        (KeyOp::GenerateMac, [OK, X1, X3, X11]),
        (KeyOp::VerifyMac, [OK, X1, X3, X11]),
        (KeyOp::DeriveSharedSecret, [OK, X1, X3, X11]),
        (KeyOp::GetPublicKey, [OK, X1, X3, X11]),
        (KeyOp::Encapsulate, [OK, X1, X3, X11]),
        (KeyOp::Decapsulate, [OK, X1, X3, X11]),
        (KeyOp::ImportKeyMaterial, [OK, OK, X3, OK]),
        (KeyOp::EnableKey, [OK, OK, X3, OK]),
        (KeyOp::DisableKey, [OK, OK, X3, OK]),
        (KeyOp::ScheduleKeyDeletion, [OK, OK, X3, OK]),
        (KeyOp::CancelKeyDeletion, [X4, X4, OK, X4]),
        (KeyOp::CreateAlias, [OK, OK, X3, OK]),
        (KeyOp::UpdateAliasNewTarget, [OK, OK, X3, OK]),
        (KeyOp::DeleteAlias, [OK, OK, OK, OK]),
        (KeyOp::DescribeKey, [OK, OK, OK, OK]),
        (KeyOp::ReplicateKey, [OK, OK, X3, OK]),
        (KeyOp::UpdatePrimaryRegion, [OK, OK, X3, OK]),
        (KeyOp::TagResource, [OK, OK, X3, OK]),
        (KeyOp::UntagResource, [OK, OK, X3, OK]),
        (KeyOp::UpdateKeyDescription, [OK, OK, X3, OK]),
        (KeyOp::GetKeyPolicy, [OK, OK, OK, OK]),
        (KeyOp::PutKeyPolicy, [OK, OK, OK, OK]),
        (KeyOp::ListKeyPolicies, [OK, OK, OK, OK]),
        (KeyOp::ListResourceTags, [OK, OK, OK, OK]),
        (KeyOp::ListAliases, [OK, OK, OK, OK]),
        (KeyOp::GetKeyRotationStatus, [X7, X7, X7, X7]),
        (KeyOp::CreateGrant, [OK, X1, X3, OK]),
        (KeyOp::ListGrants, [OK, OK, OK, OK]),
        (KeyOp::RetireGrant, [OK, OK, OK, OK]),
        (KeyOp::EnableKeyRotation, [X7, X7, X7, X7]),
        (KeyOp::RotateKeyOnDemand, [X7, X7, X7, X7]),
        (KeyOp::ListKeyRotations, [X7, X7, X7, X7]),
    ];

    /// An AWS_KMS key differs only where footnote 7 depends on the custom key store; its
    /// Unavailable column cannot occur and keeps the table's X[7].
    fn aws_kms_row(op: KeyOp, custom_store_row: [Expect; 4]) -> [Expect; 4] {
        match op {
            KeyOp::GetKeyRotationStatus | KeyOp::ListKeyRotations => [OK, OK, OK, X7],
            KeyOp::EnableKeyRotation | KeyOp::RotateKeyOnDemand => [OK, X1, X3, X7],
            _ => custom_store_row,
        }
    }

    /// Does not compile when a `KeyOp` is added, as a reminder to add its row above.
    fn row_count_guard(op: KeyOp) -> usize {
        match op {
            KeyOp::Encrypt
            | KeyOp::Decrypt
            | KeyOp::ReEncryptSource
            | KeyOp::ReEncryptDestination
            | KeyOp::GenerateDataKey
            | KeyOp::GenerateDataKeyWithoutPlaintext
            | KeyOp::GenerateDataKeyPair
            | KeyOp::GenerateDataKeyPairWithoutPlaintext
            | KeyOp::Sign
            | KeyOp::Verify
            | KeyOp::GenerateMac
            | KeyOp::VerifyMac
            | KeyOp::DeriveSharedSecret
            | KeyOp::GetPublicKey
            | KeyOp::Encapsulate
            | KeyOp::Decapsulate
            | KeyOp::ImportKeyMaterial
            | KeyOp::EnableKey
            | KeyOp::DisableKey
            | KeyOp::ScheduleKeyDeletion
            | KeyOp::CancelKeyDeletion
            | KeyOp::CreateAlias
            | KeyOp::UpdateAliasNewTarget
            | KeyOp::DeleteAlias
            | KeyOp::DescribeKey
            | KeyOp::ReplicateKey
            | KeyOp::UpdatePrimaryRegion
            | KeyOp::TagResource
            | KeyOp::UntagResource
            | KeyOp::UpdateKeyDescription
            | KeyOp::GetKeyPolicy
            | KeyOp::PutKeyPolicy
            | KeyOp::ListKeyPolicies
            | KeyOp::ListResourceTags
            | KeyOp::ListAliases
            | KeyOp::GetKeyRotationStatus
            | KeyOp::CreateGrant
            | KeyOp::ListGrants
            | KeyOp::RetireGrant
            | KeyOp::EnableKeyRotation
            | KeyOp::RotateKeyOnDemand
            | KeyOp::ListKeyRotations => 42,
        }
    }

    fn outcome(result: Result<(), KmsError>) -> Expect {
        let rotation = format!(
            "{ARN} is in a custom key store; automatic key rotation is not supported for keys in \
             a custom key store."
        );
        match result {
            Ok(()) => OK,
            Err(KmsError::Disabled(m)) if m == format!("{ARN} is disabled.") => X1,
            Err(KmsError::KmsInvalidState(m)) if m == format!("{ARN} is pending deletion.") => X3,
            Err(KmsError::KmsInvalidState(m)) if m == format!("{ARN} is not pending deletion.") => {
                X4
            }
            Err(KmsError::UnsupportedOperation(m)) if m == rotation => X7,
            Err(KmsError::KmsInvalidState(m)) if m == format!("{ARN} is unavailable.") => X11,
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn the_table_lists_every_operation_once() {
        let ops: Vec<KeyOp> = CUSTOM_STORE_TABLE.iter().map(|(op, _)| *op).collect();
        assert_eq!(ops.len(), row_count_guard(KeyOp::Encrypt));
        for (i, a) in ops.iter().enumerate() {
            assert!(!ops[i + 1..].contains(a), "{a:?} listed twice");
        }
    }

    #[test]
    fn every_operation_in_every_state_of_a_custom_key_store_key() {
        for (op, row) in CUSTOM_STORE_TABLE {
            for (state, expected) in STATES.into_iter().zip(row) {
                assert_eq!(
                    outcome(check(op, state, ARN, true)),
                    expected,
                    "{op:?} on a custom key store key in {state:?}"
                );
            }
        }
    }

    #[test]
    fn every_operation_in_every_state_of_an_aws_kms_key() {
        for (op, row) in CUSTOM_STORE_TABLE {
            for (state, expected) in STATES.into_iter().zip(aws_kms_row(op, row)) {
                assert_eq!(
                    outcome(check(op, state, ARN, false)),
                    expected,
                    "{op:?} on an AWS_KMS key in {state:?}"
                );
            }
        }
    }

    /// A multi-Region primary key waiting for its replicas' deletion answers every operation
    /// as a key pending deletion does.
    #[test]
    fn pending_replica_deletion_is_pending_deletion_to_every_operation() {
        for (op, row) in CUSTOM_STORE_TABLE {
            let pending = aws_kms_row(op, row)[2];
            assert_eq!(
                outcome(check(op, KeyState::PendingReplicaDeletion, ARN, false)),
                pending,
                "{op:?} on a primary key pending replica deletion"
            );
        }
        assert_eq!(
            KeyState::PendingReplicaDeletion.as_str(),
            "PendingReplicaDeletion"
        );
    }

    #[test]
    fn errors_carry_the_aws_type_and_exact_message() {
        // A user sees the __type and the message; both must match what AWS prints.
        let err = |op, state| {
            check(op, state, ARN, true)
                .err()
                .map(|e| (e.type_name(), e.message()))
        };
        assert_eq!(
            err(KeyOp::Encrypt, KeyState::Disabled),
            Some(("DisabledException", format!("{ARN} is disabled.")))
        );
        assert_eq!(
            err(KeyOp::Decrypt, KeyState::PendingDeletion),
            Some((
                "KMSInvalidStateException",
                format!("{ARN} is pending deletion.")
            ))
        );
        assert_eq!(
            err(KeyOp::CancelKeyDeletion, KeyState::Enabled),
            Some((
                "KMSInvalidStateException",
                format!("{ARN} is not pending deletion.")
            ))
        );
        assert_eq!(
            err(KeyOp::GenerateDataKey, KeyState::Unavailable),
            Some(("KMSInvalidStateException", format!("{ARN} is unavailable.")))
        );
        assert_eq!(
            err(KeyOp::GetKeyRotationStatus, KeyState::Enabled).map(|(t, _)| t),
            Some("UnsupportedOperationException")
        );
    }

    #[test]
    fn key_states_use_the_aws_names() {
        let names: Vec<&str> = STATES.iter().map(KeyState::as_str).collect();
        assert_eq!(
            names,
            ["Enabled", "Disabled", "PendingDeletion", "Unavailable"]
        );
    }

    #[test]
    fn reported_state_for_every_combination() {
        use KeyState::{Disabled, Enabled, PendingDeletion, Unavailable};
        // (enabled, pending_deletion, store_connected) -> reported
        let table = [
            (true, false, None, Enabled),
            (false, false, None, Disabled),
            (true, true, None, PendingDeletion),
            (false, true, None, PendingDeletion),
            (true, false, Some(true), Enabled),
            (false, false, Some(true), Disabled),
            (true, true, Some(true), PendingDeletion),
            (false, true, Some(true), PendingDeletion),
            (true, false, Some(false), Unavailable),
            (false, false, Some(false), Unavailable),
            // Footnote 13: pending deletion wins over a disconnected store.
            (true, true, Some(false), PendingDeletion),
            (false, true, Some(false), PendingDeletion),
        ];
        for (enabled, pending, connected, expected) in table {
            assert_eq!(
                reported_state(enabled, pending, connected, false),
                expected,
                "enabled={enabled} pending_deletion={pending} store_connected={connected:?}"
            );
        }
    }

    #[test]
    fn an_external_key_without_material_is_pending_import_unless_pending_deletion() {
        assert_eq!(
            reported_state(true, false, None, true),
            KeyState::PendingImport
        );
        assert_eq!(
            reported_state(false, false, None, true),
            KeyState::PendingImport
        );
        assert_eq!(
            reported_state(true, true, None, true),
            KeyState::PendingDeletion
        );
    }

    /// The PendImport column of §3, written out from the reference.
    #[test]
    fn the_pending_import_column() {
        let import = format!("{ARN} is pending import.");
        let external = format!("{ARN} origin is EXTERNAL which is not valid for this operation.");
        for (op, expected) in [
            (KeyOp::Encrypt, Some(&import)),
            (KeyOp::Decrypt, Some(&import)),
            (KeyOp::GenerateDataKey, Some(&import)),
            (KeyOp::GenerateDataKeyPair, Some(&import)),
            (KeyOp::Sign, Some(&import)),
            (KeyOp::GenerateMac, Some(&import)),
            (KeyOp::CreateGrant, Some(&import)),
            (KeyOp::EnableKey, Some(&import)),
            (KeyOp::DisableKey, Some(&import)),
            (KeyOp::EnableKeyRotation, Some(&external)),
            // Recorded: RotateKeyOnDemand on an EXTERNAL key without material.
            (KeyOp::RotateKeyOnDemand, Some(&import)),
            (KeyOp::GetKeyRotationStatus, Some(&external)),
            (KeyOp::CreateAlias, None),
            (KeyOp::ScheduleKeyDeletion, None),
            (KeyOp::TagResource, None),
            (KeyOp::UpdateKeyDescription, None),
            (KeyOp::DescribeKey, None),
        ] {
            let got = check(op, KeyState::PendingImport, ARN, false).err();
            assert_eq!(
                got.as_ref().map(KmsError::message).as_ref(),
                expected,
                "{op:?}"
            );
        }
        assert_eq!(
            check(
                KeyOp::CancelKeyDeletion,
                KeyState::PendingImport,
                ARN,
                false
            )
            .unwrap_err()
            .message(),
            format!("{ARN} is not pending deletion.")
        );
    }

    #[test]
    fn only_pending_deletion_refusals_feed_the_cloudwatch_metric() {
        // The alarm must fire on use of a key pending deletion, and on nothing else.
        let refused = |op, state| check(op, state, ARN, true).err();
        let counted =
            |e: Option<KmsError>| e.as_ref().is_some_and(counts_as_pending_deletion_error);
        assert!(counted(refused(KeyOp::Decrypt, KeyState::PendingDeletion)));
        assert!(counted(refused(
            KeyOp::TagResource,
            KeyState::PendingDeletion
        )));
        assert!(counted(Some(KmsError::Disabled(format!(
            "{ARN} is pending deletion."
        )))));
        assert!(!counted(refused(
            KeyOp::CancelKeyDeletion,
            KeyState::Enabled
        )));
        assert!(!counted(refused(KeyOp::Decrypt, KeyState::Disabled)));
        assert!(!counted(refused(KeyOp::Decrypt, KeyState::Unavailable)));
        assert!(!counted(refused(
            KeyOp::GetKeyRotationStatus,
            KeyState::PendingDeletion
        )));
    }
}
