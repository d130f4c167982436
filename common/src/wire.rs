//! The node protocol: what HSM nodes, their peers and their clients (the KMS frontend, the
//! cluster CLI) say to each other. Shapes only; no logic. Every message travels in a versioned
//! [`Envelope`], encoded with postcard, inside a length-delimited frame, inside mutual TLS.
//!
//! Key material only ever appears here wrapped (AES-256-GCM under the cluster's
//! synchronisation key) or, for the results of crypto calls, as [`SecretBytes`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::secret::{SecretBytes, SecretString};

/// Bumped on any incompatible change; a peer speaking another version is refused.
/// 3: calls carry a deadline. 4: `NodeStatus` says whether the node's store is failing;
/// login failures replicate apart from users ([`LoginState`]).
pub const PROTOCOL_VERSION: u16 = 4;

/// Number of buckets the anti-entropy digest splits objects into.
pub const DIGEST_BUCKETS: usize = 256;

/// Most objects one `Replicate` or `Fetch` may carry, keeping frames well under the limit.
pub const MAX_OBJECTS_PER_CALL: usize = 1_000;

/// Most random bytes one `GenerateRandom` may ask for (KMS's own limit is 1,024).
pub const MAX_RANDOM_BYTES: u32 = 4_096;

/// Most bytes an `Encrypt` or `Decrypt` may carry.
pub const MAX_CRYPTO_BYTES: usize = 1024 * 1024;

/// Every message's outer shape: a protocol version, a call id that pairs a response with its
/// request (calls are pipelined), the call's deadline, and the body.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub version: u16,
    pub id: u64,
    /// When the caller stops waiting, in milliseconds since the Unix epoch (wall clock; 0 for
    /// none, as on answers). A node never runs a call whose deadline has passed, so a caller
    /// that timed out and retried elsewhere cannot have its first attempt run later too (an HSM
    /// that stalled, say, and reads the call once it runs again).
    pub deadline_unix_millis: u64,
    pub body: T,
}

/// The two roles of CloudHSM users that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Crypto officer (`admin` in the CloudHSM CLI): manages users, cannot use keys.
    CryptoOfficer,
    /// Crypto user (`crypto-user`): owns and uses keys. `kmsuser` is one.
    CryptoUser,
}

impl Role {
    /// The name the CloudHSM CLI uses for the role.
    pub fn cli_name(self) -> &'static str {
        match self {
            Role::CryptoOfficer => "admin",
            Role::CryptoUser => "crypto-user",
        }
    }

    /// Parses a CloudHSM CLI role name (`admin`, `crypto-user`; also `CO`, `CU`).
    pub fn from_cli_name(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "admin" | "co" | "crypto-officer" => Some(Role::CryptoOfficer),
            "crypto-user" | "cu" => Some(Role::CryptoUser),
            _ => None,
        }
    }
}

/// A key object's handle: unique in the cluster, the same on every HSM.
pub type KeyHandle = u64;

/// What a replicated object is, and its identity across the cluster. The variant order is
/// relied on: members sort before users, users before keys, keys before login states. New
/// variants go last: stores and backups written before keep their encoding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ObjectId {
    /// A cluster member (an HSM), by HSM id.
    Member(String),
    /// A user, by name.
    User(String),
    /// A key object, by handle.
    Key(KeyHandle),
    /// A user's failed logins and lockout, by user name ([`LoginState`]).
    LoginState(String),
}

/// A Lamport-style version: higher counter wins; the node number breaks ties, so every node
/// picks the same winner for concurrent changes.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Version {
    pub counter: u64,
    pub node: u32,
}

/// `OBJ_ATTR_CLASS`: only secret keys exist in this emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyClass {
    SecretKey,
}

/// `OBJ_ATTR_KEY_TYPE`: only AES.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyType {
    Aes,
}

/// A key object's public attributes, as `key list` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAttributes {
    pub handle: KeyHandle,
    pub label: String,
    pub owner: String,
    pub class: KeyClass,
    pub key_type: KeyType,
    pub length_bytes: u32,
    pub extractable: bool,
    pub token: bool,
    pub created_at_millis: u64,
}

/// A key object with its material wrapped (under the sync key on the wire, under the node's
/// storage key at rest).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    pub attributes: KeyAttributes,
    #[serde(with = "serde_bytes")]
    pub wrapped_material: Vec<u8>,
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey")
            .field("attributes", &self.attributes)
            .field("wrapped_material", &"<redacted>")
            .finish()
    }
}

/// A user of the cluster. The password is held only as an argon2 PHC hash string. The record
/// changes only with its credentials (creation, password changes), so its version names the
/// credential; logins count their failures in a [`LoginState`] apart from it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub username: String,
    pub role: Role,
    pub password_hash: String,
    /// Failed logins when the record was written (0 since protocol 4; stores written before
    /// may hold counts here, which stand until a [`LoginState`] for this credential exists).
    pub failed_logins: u32,
    pub locked: bool,
}

/// A user's consecutive failed logins and lockout, counted against one credential: the
/// version of the user record whose password the logins were checked with. Kept apart from
/// the user record so that a failure counted on one HSM never replaces a password changed on
/// another (records replicate whole, newest version first); one counted against a credential
/// that has since changed no longer applies, so a password change also unlocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginState {
    pub credential: Version,
    pub failed_logins: u32,
    pub locked: bool,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("username", &self.username)
            .field("role", &self.role)
            .field("failed_logins", &self.failed_logins)
            .field("locked", &self.locked)
            .finish_non_exhaustive()
    }
}

/// A member of the cluster: one HSM, where it listens and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub hsm_id: String,
    pub availability_zone: String,
    /// `host:port` of the node's TLS listener.
    pub address: String,
    /// Small number unique in the cluster; it prefixes key handles and breaks version ties.
    pub node_number: u32,
}

/// The content of a replicated object. A deletion is a tombstone, kept for ever, so that a
/// deleted object never comes back through replication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectBody {
    Member(MemberRecord),
    User(UserRecord),
    Key(WrappedKey),
    Tombstone,
    LoginState(LoginState),
}

/// One replicated object at one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    pub id: ObjectId,
    pub version: Version,
    pub body: ObjectBody,
}

/// A user as `user list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub username: String,
    pub role: Role,
    pub locked: bool,
    /// Sessions this user has open on the node that answered.
    pub sessions: u32,
}

/// What a node says about itself and the cluster as it sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub hsm_id: String,
    pub cluster_id: String,
    pub availability_zone: String,
    pub members: Vec<MemberRecord>,
    /// HSM ids of peers this node has a live link to.
    pub connected_peers: Vec<String>,
    pub key_count: u64,
    pub user_count: u64,
    /// Why the node's store cannot commit, while its last commit failed (a full disk, say);
    /// `None` when it commits. It reopens its file before the next commit, so this clears
    /// by itself once the cause is gone.
    pub storage_failing: Option<String>,
}

/// The result of deleting a key on one HSM, as `deleteKey` reports per node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeOutcome {
    pub hsm_id: String,
    pub success: bool,
    pub detail: String,
}

/// Calls a node serves. The first group is for clients (any certificate from the cluster CA);
/// the second only for peers (a node certificate).
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    Login {
        username: String,
        role: Role,
        password: SecretString,
    },
    Logout,
    ListUsers,
    CreateUser {
        username: String,
        role: Role,
        password: SecretString,
    },
    DeleteUser {
        username: String,
    },
    ChangePassword {
        username: String,
        role: Role,
        new_password: SecretString,
    },
    GenerateAesKey {
        label: String,
        length_bytes: u32,
    },
    FindKeys {
        label: Option<String>,
        owner: Option<String>,
    },
    GetKeyAttributes {
        handle: KeyHandle,
    },
    DeleteKey {
        handle: KeyHandle,
    },
    Encrypt {
        handle: KeyHandle,
        plaintext: SecretBytes,
        #[serde(with = "serde_bytes")]
        aad: Vec<u8>,
    },
    Decrypt {
        handle: KeyHandle,
        #[serde(with = "serde_bytes")]
        ciphertext: Vec<u8>,
        #[serde(with = "serde_bytes")]
        aad: Vec<u8>,
    },
    GenerateRandom {
        length: u32,
    },
    Status,

    /// A peer introduces itself; the answer is the responder's own member record. Nodes of
    /// different clusters refuse each other here, even when their clusters share a CA (a
    /// cluster restored from another's backup does).
    Hello {
        member: MemberRecord,
        cluster_id: String,
    },
    /// A peer pushes objects (new keys, tombstones, user changes).
    Replicate {
        objects: Vec<Object>,
    },
    /// Anti-entropy, step 1: the per-bucket digests.
    Digest,
    /// Anti-entropy, step 2: ids and versions of every object in the named buckets.
    ListEntries {
        buckets: Vec<u16>,
    },
    /// Anti-entropy, step 3: the objects themselves.
    Fetch {
        ids: Vec<ObjectId>,
    },
    /// The cluster service removes an HSM: its member record becomes a tombstone, which
    /// replicates, so the others stop linking to it.
    Forget {
        hsm_id: String,
    },
}

impl Request {
    /// Whether only a peer (a node certificate) may make this call.
    pub fn is_peer_only(&self) -> bool {
        matches!(
            self,
            Request::Hello { .. }
                | Request::Replicate { .. }
                | Request::Digest
                | Request::ListEntries { .. }
                | Request::Fetch { .. }
                | Request::Forget { .. }
        )
    }

    /// Short name for logs (never the content).
    pub fn name(&self) -> &'static str {
        match self {
            Request::Login { .. } => "Login",
            Request::Logout => "Logout",
            Request::ListUsers => "ListUsers",
            Request::CreateUser { .. } => "CreateUser",
            Request::DeleteUser { .. } => "DeleteUser",
            Request::ChangePassword { .. } => "ChangePassword",
            Request::GenerateAesKey { .. } => "GenerateAesKey",
            Request::FindKeys { .. } => "FindKeys",
            Request::GetKeyAttributes { .. } => "GetKeyAttributes",
            Request::DeleteKey { .. } => "DeleteKey",
            Request::Encrypt { .. } => "Encrypt",
            Request::Decrypt { .. } => "Decrypt",
            Request::GenerateRandom { .. } => "GenerateRandom",
            Request::Status => "Status",
            Request::Hello { .. } => "Hello",
            Request::Replicate { .. } => "Replicate",
            Request::Digest => "Digest",
            Request::ListEntries { .. } => "ListEntries",
            Request::Fetch { .. } => "Fetch",
            Request::Forget { .. } => "Forget",
        }
    }
}

/// Answers. Each request has one success shape, or [`Response::Error`].
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    Ok,
    LoggedIn {
        username: String,
        role: Role,
    },
    Users(Vec<UserInfo>),
    KeyCreated {
        key: KeyAttributes,
        /// HSM ids on which the key was durable when the call was acknowledged.
        durable_on: Vec<String>,
    },
    Key(KeyAttributes),
    Keys(Vec<KeyAttributes>),
    KeyDeleted {
        handle: KeyHandle,
        outcomes: Vec<NodeOutcome>,
    },
    Ciphertext(#[serde(with = "serde_bytes")] Vec<u8>),
    Plaintext(SecretBytes),
    Random(SecretBytes),
    Status(NodeStatus),
    Hello {
        member: MemberRecord,
        cluster_id: String,
    },
    Applied {
        count: u32,
    },
    Digest {
        buckets: Vec<u64>,
    },
    Entries(Vec<(ObjectId, Version)>),
    Objects(Vec<Object>),
    Error(WireError),
}

/// Why a call failed, in terms a client can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The call needs a logged-in session.
    NotLoggedIn,
    /// The session is already logged in; log out first.
    AlreadyLoggedIn,
    /// Wrong user name, role or password.
    InvalidCredentials,
    /// The user is locked out after too many failed logins.
    UserLockedOut,
    /// No such user.
    UserNotFound,
    /// A user of that name exists.
    UserExists,
    /// The session's user may not do this (not the key's owner, not a crypto officer, ...).
    AccessDenied,
    /// No key object with that handle.
    KeyNotFound,
    /// The key could not be made durable on enough HSMs in time; nothing was acknowledged.
    QuorumNotReached,
    /// The request is malformed or out of range.
    InvalidRequest,
    /// The call is for peers only and the caller holds a client certificate.
    PeerOnly,
    /// Ciphertext or associated data failed authentication.
    DecryptionFailed,
    /// The node failed internally (storage, for example).
    Internal,
    /// The call's deadline passed before the node ran it (or, for a key generation, before it
    /// could acknowledge it: the key was rolled back).
    DeadlineExceeded,
    /// The HSM is rebuilding its store from its peers and serves no client until it has
    /// caught up; try another HSM.
    Rebuilding,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for WireError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte fields are byte strings now (serde_bytes); postcard encodes a byte string exactly
    /// as it encoded the sequence of bytes before, so nodes, stored records and backups
    /// written by an older hsmkms still read, and the other way round.
    #[test]
    fn byte_fields_encode_as_the_byte_sequences_they_were() {
        #[derive(serde::Serialize)]
        struct Before {
            handle: KeyHandle,
            plaintext: Vec<u8>,
            aad: Vec<u8>,
        }
        let plaintext: Vec<u8> = (0..=255).collect();
        let aad = b"context".to_vec();
        let handle: KeyHandle = 7;
        let now = postcard::to_allocvec(&Request::Encrypt {
            handle,
            plaintext: SecretBytes::new(plaintext.clone()),
            aad: aad.clone(),
        })
        .unwrap();
        let before = postcard::to_allocvec(&Before {
            handle,
            plaintext: plaintext.clone(),
            aad: aad.clone(),
        })
        .unwrap();
        // The variant's index comes first; the fields after it are the same bytes.
        assert_eq!(&now[now.len() - before.len()..], &before[..]);
        match postcard::from_bytes::<Request>(&now).unwrap() {
            Request::Encrypt {
                handle: h,
                plaintext: p,
                aad: a,
            } => {
                assert_eq!((h, p.expose(), a), (handle, &plaintext[..], aad));
            }
            _ => panic!("not an Encrypt"),
        }
        let answer = postcard::to_allocvec(&Response::Ciphertext(plaintext.clone())).unwrap();
        match postcard::from_bytes::<Response>(&answer).unwrap() {
            Response::Ciphertext(c) => assert_eq!(c, plaintext),
            _ => panic!("not a Ciphertext"),
        }
    }
}
