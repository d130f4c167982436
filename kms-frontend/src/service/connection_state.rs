//! The connection state machine of a custom key store (reference §4): one enum and one pure
//! transition function, so every API call and every internal event is checked in one place.
//!
//! ```text
//! DISCONNECTED --Connect--> CONNECTING --ConnectSucceeded--> CONNECTED
//!                                      \--ConnectFailed-----> FAILED (error code set)
//! CONNECTED | CONNECTING | FAILED --Disconnect--> DISCONNECTING --DisconnectCompleted--> DISCONNECTED
//! ```

use serde::{Deserialize, Serialize};

use super::error::KmsError;

/// Why a connection attempt failed (`ConnectionErrorCode`, CloudHSM key store values only).
///
/// Persisted: append new variants at the end and never reorder them, as compact formats store
/// the variant index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConnectionErrorCode {
    /// No cluster with the store's cluster ID.
    #[serde(rename = "CLUSTER_NOT_FOUND")]
    ClusterNotFound,
    /// The cluster has no active HSM.
    #[serde(rename = "INSUFFICIENT_CLOUDHSM_HSMS")]
    InsufficientCloudHsmHsms,
    /// A cluster subnet has no free IP address.
    #[serde(rename = "INSUFFICIENT_FREE_ADDRESSES_IN_SUBNET")]
    InsufficientFreeAddressesInSubnet,
    /// An internal KMS error; retry after disconnecting.
    #[serde(rename = "INTERNAL_ERROR")]
    InternalError,
    /// `KeyStorePassword` does not match the `kmsuser` password.
    #[serde(rename = "INVALID_CREDENTIALS")]
    InvalidCredentials,
    /// Usually transient network trouble.
    #[serde(rename = "NETWORK_ERRORS")]
    NetworkErrors,
    /// A subnet of the cluster configuration was deleted.
    #[serde(rename = "SUBNET_NOT_FOUND")]
    SubnetNotFound,
    /// `kmsuser` is locked out after too many failed logins.
    #[serde(rename = "USER_LOCKED_OUT")]
    UserLockedOut,
    /// `kmsuser` is logged in to the cluster, so KMS cannot rotate its password and log in.
    #[serde(rename = "USER_LOGGED_IN")]
    UserLoggedIn,
    /// There is no `kmsuser` crypto user in the cluster.
    #[serde(rename = "USER_NOT_FOUND")]
    UserNotFound,
}

impl ConnectionErrorCode {
    /// The name AWS uses on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            ConnectionErrorCode::ClusterNotFound => "CLUSTER_NOT_FOUND",
            ConnectionErrorCode::InsufficientCloudHsmHsms => "INSUFFICIENT_CLOUDHSM_HSMS",
            ConnectionErrorCode::InsufficientFreeAddressesInSubnet => {
                "INSUFFICIENT_FREE_ADDRESSES_IN_SUBNET"
            }
            ConnectionErrorCode::InternalError => "INTERNAL_ERROR",
            ConnectionErrorCode::InvalidCredentials => "INVALID_CREDENTIALS",
            ConnectionErrorCode::NetworkErrors => "NETWORK_ERRORS",
            ConnectionErrorCode::SubnetNotFound => "SUBNET_NOT_FOUND",
            ConnectionErrorCode::UserLockedOut => "USER_LOCKED_OUT",
            ConnectionErrorCode::UserLoggedIn => "USER_LOGGED_IN",
            ConnectionErrorCode::UserNotFound => "USER_NOT_FOUND",
        }
    }
}

/// The connection state of a custom key store (`ConnectionState`). A failed attempt carries
/// its error code, so a code can only exist while the store is FAILED.
///
/// Persisted: append new variants at the end and never reorder them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConnectionState {
    /// Never connected, or explicitly disconnected.
    #[serde(rename = "DISCONNECTED")]
    Disconnected,
    /// A connection attempt is in progress.
    #[serde(rename = "CONNECTING")]
    Connecting,
    /// Connected; keys in the store are usable. Stays so even if the cluster loses its HSMs.
    #[serde(rename = "CONNECTED")]
    Connected,
    /// The last connection attempt failed; the store must be disconnected before reconnecting.
    #[serde(rename = "FAILED")]
    Failed(ConnectionErrorCode),
    /// A disconnection is in progress.
    #[serde(rename = "DISCONNECTING")]
    Disconnecting,
}

/// An API call or internal event that a custom key store's connection state decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionOp {
    /// ConnectCustomKeyStore.
    Connect,
    /// Internal: the connection attempt succeeded.
    ConnectSucceeded,
    /// Internal: the connection attempt failed for this reason.
    ConnectFailed(ConnectionErrorCode),
    /// DisconnectCustomKeyStore.
    Disconnect,
    /// Internal: the disconnection finished.
    DisconnectCompleted,
    /// Internal, at start: a store that was CONNECTED (or CONNECTING) when the emulator
    /// stopped has no sessions any more and connects again, as its keys' users expect.
    Reconnect,
    /// UpdateCustomKeyStore changing only `NewCustomKeyStoreName`.
    UpdateName,
    /// UpdateCustomKeyStore changing `KeyStorePassword` or `CloudHsmClusterId`.
    UpdatePasswordOrCluster,
    /// DeleteCustomKeyStore (whether the store still holds keys is checked elsewhere).
    Delete,
    /// CreateKey in the store.
    CreateKey,
    /// GenerateRandom with the store's `CustomKeyStoreId`.
    GenerateRandom,
}

impl ConnectionState {
    /// The name AWS uses on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            ConnectionState::Disconnected => "DISCONNECTED",
            ConnectionState::Connecting => "CONNECTING",
            ConnectionState::Connected => "CONNECTED",
            ConnectionState::Failed(_) => "FAILED",
            ConnectionState::Disconnecting => "DISCONNECTING",
        }
    }

    /// The `ConnectionErrorCode` AWS reports, which it sets only for a FAILED store.
    pub fn error_code(&self) -> Option<ConnectionErrorCode> {
        match self {
            ConnectionState::Failed(code) => Some(*code),
            _ => None,
        }
    }

    /// The state after `op`, or the `CustomKeyStoreInvalidStateException` AWS answers when the
    /// store's state does not allow it (§4 table). Operations that do not move the state return
    /// it unchanged, so callers can run every check through here.
    ///
    /// The internal events (`ConnectSucceeded`, `ConnectFailed`, `DisconnectCompleted`) change
    /// the state only from the state that started them; arriving in any other state means a
    /// later API call overtook them (for example a Disconnect during Connecting), so they are
    /// ignored rather than refused.
    pub fn apply(self, op: ConnectionOp, store_id: &str) -> Result<ConnectionState, KmsError> {
        use ConnectionState::{Connected, Connecting, Disconnected, Disconnecting, Failed};
        match (op, self) {
            (ConnectionOp::Connect, Disconnected | Connecting) => Ok(Connecting),
            (ConnectionOp::Connect, Connected) => Ok(Connected),
            (ConnectionOp::Connect, Failed(_) | Disconnecting) => {
                Err(needs_disconnected(store_id, self, "connecting it again"))
            }

            (ConnectionOp::ConnectSucceeded, Connecting) => Ok(Connected),
            (ConnectionOp::ConnectFailed(code), Connecting) => Ok(Failed(code)),
            (ConnectionOp::ConnectSucceeded | ConnectionOp::ConnectFailed(_), _) => Ok(self),

            (ConnectionOp::Disconnect, Connected | Connecting | Failed(_)) => Ok(Disconnecting),
            (ConnectionOp::Disconnect, Disconnecting) => {
                Err(invalid(store_id, self, "It is already being disconnected."))
            }
            (ConnectionOp::Disconnect, Disconnected) => Err(invalid(
                store_id,
                self,
                "Only a CONNECTED, CONNECTING or FAILED custom key store can be disconnected.",
            )),

            (ConnectionOp::DisconnectCompleted, Disconnecting) => Ok(Disconnected),
            (ConnectionOp::DisconnectCompleted, _) => Ok(self),

            (ConnectionOp::Reconnect, Connected | Connecting) => Ok(Connecting),
            (ConnectionOp::Reconnect, _) => Ok(self),

            (ConnectionOp::UpdateName, Connected | Disconnected) => Ok(self),
            (ConnectionOp::UpdateName, Connecting | Failed(_) | Disconnecting) => Err(invalid(
                store_id,
                self,
                "UpdateCustomKeyStore can be called on a custom key store in the CONNECTED \
                 state only to update NewCustomKeyStoreName; any other update needs the \
                 DISCONNECTED state.",
            )),

            (ConnectionOp::UpdatePasswordOrCluster, Disconnected) => Ok(self),
            (ConnectionOp::UpdatePasswordOrCluster, Connected) => Err(invalid(
                store_id,
                self,
                "UpdateCustomKeyStore can be called on a custom key store in the CONNECTED \
                 state only to update NewCustomKeyStoreName. Disconnect it before updating \
                 KeyStorePassword or CloudHsmClusterId.",
            )),
            (ConnectionOp::UpdatePasswordOrCluster, Connecting | Failed(_) | Disconnecting) => {
                Err(needs_disconnected(
                    store_id,
                    self,
                    "updating KeyStorePassword or CloudHsmClusterId",
                ))
            }

            (ConnectionOp::Delete, Disconnected) => Ok(self),
            (ConnectionOp::Delete, Connected | Connecting | Failed(_) | Disconnecting) => {
                Err(needs_disconnected(store_id, self, "deleting it"))
            }

            (ConnectionOp::CreateKey, Connected) => Ok(self),
            (ConnectionOp::CreateKey, _) => {
                Err(needs_connected(store_id, self, "creating KMS keys in it"))
            }
            (ConnectionOp::GenerateRandom, Connected) => Ok(self),
            (ConnectionOp::GenerateRandom, _) => Err(needs_connected(
                store_id,
                self,
                "generating random bytes with it",
            )),
        }
    }
}

/// The error for an operation the store's state forbids: names the store, its state and what
/// the caller must do, since the exception type alone does not say.
fn invalid(store_id: &str, state: ConnectionState, remedy: &str) -> KmsError {
    KmsError::CustomKeyStoreInvalidState(format!(
        "Custom key store {store_id} is {}. {remedy}",
        state.as_str()
    ))
}

/// Refuses an operation that needs a DISCONNECTED store.
fn needs_disconnected(store_id: &str, state: ConnectionState, action: &str) -> KmsError {
    let remedy = match state {
        ConnectionState::Disconnecting => {
            format!("Wait until it is DISCONNECTED before {action}.")
        }
        _ => format!("Disconnect it before {action}."),
    };
    invalid(store_id, state, &remedy)
}

/// Refuses an operation that needs a CONNECTED store.
fn needs_connected(store_id: &str, state: ConnectionState, action: &str) -> KmsError {
    let remedy = match state {
        ConnectionState::Connecting => format!("Wait until it is CONNECTED before {action}."),
        // A FAILED store cannot reconnect directly (§4).
        ConnectionState::Failed(code) => format!(
            "Its last connection attempt failed with {}. Disconnect it, fix the cause and \
             connect it again before {action}.",
            code.as_str()
        ),
        ConnectionState::Disconnecting => {
            format!("Wait until it is DISCONNECTED, then connect it before {action}.")
        }
        _ => format!("Connect it before {action}."),
    };
    invalid(store_id, state, &remedy)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORE: &str = "cks-1234567890abcdef0";
    const CODE: ConnectionErrorCode = ConnectionErrorCode::NetworkErrors;

    const ALL_CODES: [ConnectionErrorCode; 10] = [
        ConnectionErrorCode::ClusterNotFound,
        ConnectionErrorCode::InsufficientCloudHsmHsms,
        ConnectionErrorCode::InsufficientFreeAddressesInSubnet,
        ConnectionErrorCode::InternalError,
        ConnectionErrorCode::InvalidCredentials,
        ConnectionErrorCode::NetworkErrors,
        ConnectionErrorCode::SubnetNotFound,
        ConnectionErrorCode::UserLockedOut,
        ConnectionErrorCode::UserLoggedIn,
        ConnectionErrorCode::UserNotFound,
    ];

    /// Expected outcome of one (op, state) cell.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Expect {
        /// Succeeds and leaves the state as it was.
        Same,
        /// Succeeds and moves to this state.
        To(ConnectionState),
        /// CustomKeyStoreInvalidStateException.
        X,
    }
    use ConnectionState::{Connected, Connecting, Disconnected, Disconnecting, Failed};
    use Expect::{Same, To, X};

    /// Columns of the table, in §4's order.
    const STATES: [ConnectionState; 5] = [
        Connected,
        Connecting,
        Failed(CODE),
        Disconnecting,
        Disconnected,
    ];

    /// §4 written out independently of the implementation. Columns:
    /// CONNECTED, CONNECTING, FAILED, DISCONNECTING, DISCONNECTED.
    const TABLE: [(ConnectionOp, [Expect; 5]); 11] = [
        (ConnectionOp::Connect, [Same, Same, X, X, To(Connecting)]),
        (
            ConnectionOp::ConnectSucceeded,
            [Same, To(Connected), Same, Same, Same],
        ),
        (
            ConnectionOp::ConnectFailed(ConnectionErrorCode::UserLockedOut),
            [
                Same,
                To(Failed(ConnectionErrorCode::UserLockedOut)),
                Same,
                Same,
                Same,
            ],
        ),
        (
            ConnectionOp::Disconnect,
            [
                To(Disconnecting),
                To(Disconnecting),
                To(Disconnecting),
                X,
                X,
            ],
        ),
        (
            ConnectionOp::DisconnectCompleted,
            [Same, Same, Same, To(Disconnected), Same],
        ),
        (
            ConnectionOp::Reconnect,
            [To(Connecting), Same, Same, Same, Same],
        ),
        (ConnectionOp::UpdateName, [Same, X, X, X, Same]),
        (ConnectionOp::UpdatePasswordOrCluster, [X, X, X, X, Same]),
        (ConnectionOp::Delete, [X, X, X, X, Same]),
        (ConnectionOp::CreateKey, [Same, X, X, X, X]),
        (ConnectionOp::GenerateRandom, [Same, X, X, X, X]),
    ];

    /// Does not compile when an op or a state is added, as a reminder to extend the table.
    fn guard(op: ConnectionOp, state: ConnectionState) {
        match op {
            ConnectionOp::Connect
            | ConnectionOp::ConnectSucceeded
            | ConnectionOp::ConnectFailed(_)
            | ConnectionOp::Disconnect
            | ConnectionOp::DisconnectCompleted
            | ConnectionOp::Reconnect
            | ConnectionOp::UpdateName
            | ConnectionOp::UpdatePasswordOrCluster
            | ConnectionOp::Delete
            | ConnectionOp::CreateKey
            | ConnectionOp::GenerateRandom => {}
        }
        match state {
            Connected | Connecting | Failed(_) | Disconnecting | Disconnected => {}
        }
    }

    #[test]
    fn every_operation_in_every_state() {
        for (op, row) in TABLE {
            for (state, expected) in STATES.into_iter().zip(row) {
                guard(op, state);
                let got = match state.apply(op, STORE) {
                    Ok(next) if next == state => Same,
                    Ok(next) => To(next),
                    Err(KmsError::CustomKeyStoreInvalidState(message)) => {
                        // Every refusal names the store and the state it is in.
                        assert!(
                            message.starts_with(&format!(
                                "Custom key store {STORE} is {}. ",
                                state.as_str()
                            )),
                            "{message}"
                        );
                        X
                    }
                    Err(other) => panic!("{op:?} in {state:?}: unexpected {other:?}"),
                };
                assert_eq!(got, expected, "{op:?} in {state:?}");
            }
        }
    }

    #[test]
    fn a_failed_attempt_records_each_code_and_a_disconnect_clears_it() {
        for code in ALL_CODES {
            let failed = ConnectionState::Connecting
                .apply(ConnectionOp::ConnectFailed(code), STORE)
                .unwrap();
            assert_eq!(failed, Failed(code));
            assert_eq!(failed.error_code(), Some(code));
            let back = failed
                .apply(ConnectionOp::Disconnect, STORE)
                .and_then(|s| s.apply(ConnectionOp::DisconnectCompleted, STORE))
                .unwrap();
            assert_eq!(back, Disconnected);
            assert_eq!(back.error_code(), None);
        }
        for state in [Connected, Connecting, Disconnecting, Disconnected] {
            assert_eq!(state.error_code(), None);
        }
    }

    #[test]
    fn refusals_tell_the_caller_what_to_do() {
        let message = |state: ConnectionState, op| state.apply(op, STORE).unwrap_err().message();
        assert_eq!(
            message(Connected, ConnectionOp::Delete),
            format!("Custom key store {STORE} is CONNECTED. Disconnect it before deleting it.")
        );
        assert_eq!(
            message(Failed(CODE), ConnectionOp::Connect),
            format!(
                "Custom key store {STORE} is FAILED. Disconnect it before connecting it again."
            )
        );
        assert!(message(Connecting, ConnectionOp::UpdateName).contains(
            "UpdateCustomKeyStore can be called on a custom key store in the CONNECTED state \
             only to update NewCustomKeyStoreName"
        ));
        assert!(
            message(Connected, ConnectionOp::UpdatePasswordOrCluster).contains(
                "UpdateCustomKeyStore can be called on a custom key store in the CONNECTED state \
             only to update NewCustomKeyStoreName"
            )
        );
        assert_eq!(
            message(Disconnected, ConnectionOp::CreateKey),
            format!(
                "Custom key store {STORE} is DISCONNECTED. Connect it before creating KMS keys \
                 in it."
            )
        );
        assert!(message(Failed(CODE), ConnectionOp::GenerateRandom).contains("NETWORK_ERRORS"));
        assert_eq!(
            Connected
                .apply(ConnectionOp::Delete, STORE)
                .unwrap_err()
                .type_name(),
            "CustomKeyStoreInvalidStateException"
        );
    }

    #[test]
    fn names_match_aws_and_serde_uses_them() {
        let names: Vec<&str> = ALL_CODES.iter().map(ConnectionErrorCode::as_str).collect();
        assert_eq!(
            names,
            [
                "CLUSTER_NOT_FOUND",
                "INSUFFICIENT_CLOUDHSM_HSMS",
                "INSUFFICIENT_FREE_ADDRESSES_IN_SUBNET",
                "INTERNAL_ERROR",
                "INVALID_CREDENTIALS",
                "NETWORK_ERRORS",
                "SUBNET_NOT_FOUND",
                "USER_LOCKED_OUT",
                "USER_LOGGED_IN",
                "USER_NOT_FOUND",
            ]
        );
        let states: Vec<&str> = STATES.iter().map(ConnectionState::as_str).collect();
        assert_eq!(
            states,
            [
                "CONNECTED",
                "CONNECTING",
                "FAILED",
                "DISCONNECTING",
                "DISCONNECTED"
            ]
        );
        for code in ALL_CODES {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(
                serde_json::from_str::<ConnectionErrorCode>(&json).unwrap(),
                code
            );
        }
        for state in STATES {
            let json = serde_json::to_string(&state).unwrap();
            assert!(json.contains(state.as_str()), "{json}");
            assert_eq!(
                serde_json::from_str::<ConnectionState>(&json).unwrap(),
                state
            );
        }
    }
}
