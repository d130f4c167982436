//! The node core: everything an HSM node knows and decides, as a plain struct with no I/O.
//!
//! It holds the replicated objects (members, users, keys and their tombstones), the versions
//! that decide which copy wins, the anti-entropy digest, and the open sessions.
//!
//! Decide, persist, install: a call that changes something only decides, returning the
//! [`Stored`] objects to make durable, and changes nothing anyone can see. The shell commits
//! them, then hands them back: [`NodeCore::install_local`] once they are durable, or
//! [`NodeCore::abandon`] if the commit failed, which leaves every visible state as it was.
//! Decisions still in flight are kept apart (`pending`) so that the next decision builds on
//! them (a second failed login counts as the second, not again as the first) while every
//! query sees only what is durable.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use hsmkms_common::aead::Sealer;
use hsmkms_common::entropy::{Entropy, OsEntropy};
use hsmkms_common::secret::{KeyMaterial, SecretBytes, KEY_LEN};
use hsmkms_common::wire::{
    ErrorCode, KeyAttributes, KeyClass, KeyHandle, KeyType, LoginState, MemberRecord, ObjectId,
    Role, UserInfo, UserRecord, Version, WireError, DIGEST_BUCKETS, MAX_RANDOM_BYTES,
};
use sha2::{Digest, Sha256};

/// Consecutive failed logins after which a user is locked out, as on CloudHSM.
pub const MAX_FAILED_LOGINS: u32 = 5;
/// Longest label a key may carry (KMS labels its backing keys with key ARNs, under 128 bytes).
pub const MAX_LABEL_LEN: usize = 256;
/// Longest user name CloudHSM allows.
pub const MAX_USERNAME_LEN: usize = 31;
/// Password length bounds of CloudHSM.
pub const PASSWORD_LEN: std::ops::RangeInclusive<usize> = 7..=32;

/// The low 32 bits of a key handle: the generating node's counter (the node number is above).
const HANDLE_SEQ_MASK: u64 = 0xffff_ffff;

/// Every key id, in `ObjectId` order (login states sort after keys).
const KEYS: std::ops::RangeInclusive<ObjectId> = ObjectId::Key(0)..=ObjectId::Key(KeyHandle::MAX);

/// Identifies one client connection (and so one session) on this node.
pub type ConnId = u64;

/// A key object as the node holds it in memory: attributes and material.
pub struct KeyEntry {
    pub attributes: KeyAttributes,
    material: KeyMaterial,
}

impl std::fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEntry")
            .field("attributes", &self.attributes)
            .finish_non_exhaustive()
    }
}

impl KeyEntry {
    pub fn new(attributes: KeyAttributes, material: KeyMaterial) -> Self {
        Self {
            attributes,
            material,
        }
    }

    /// The plaintext material, for wrapping (storage, replication) only.
    pub fn material(&self) -> &KeyMaterial {
        &self.material
    }

    /// The key's cipher, for the HSM's encrypt and decrypt operations. Made per operation
    /// rather than kept: a kept one costs hundreds of bytes for each of thousands of keys. Its
    /// key schedule is wiped when it is dropped.
    pub fn sealer(&self) -> Sealer {
        Sealer::new(&self.material)
    }
}

/// The content of an object as held in memory.
#[derive(Debug, Clone)]
///
/// Every variant but the tombstone is boxed, so an entry is two words: a node holds one per
/// object in its map, and keys are nearly all of them.
pub enum Entry {
    Member(Box<MemberRecord>),
    User(Box<UserRecord>),
    Key(Arc<KeyEntry>),
    Tombstone,
    /// A user's failed logins, counted against one of its credentials.
    LoginState(Box<LoginState>),
}

/// An object at a version.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: ObjectId,
    pub version: Version,
    pub entry: Entry,
}

/// A logged-in session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub username: String,
    pub role: Role,
}

/// A user as a login sees it (see [`NodeCore::login_user`]).
struct LoginView<'a> {
    /// The durable record: the password and role a login is checked against.
    user: &'a UserRecord,
    /// Its version, which names the credential.
    credential: Version,
    /// Failed logins and lockout as durable, and as decided (in-flight failures counted).
    durable: (u32, bool),
    decided: (u32, bool),
}

/// What a login attempt needs checked outside the core (the password hash is slow on purpose).
#[derive(Debug)]
pub struct LoginCheck {
    pub password_hash: String,
}

fn err(code: ErrorCode, message: impl Into<String>) -> WireError {
    WireError::new(code, message)
}

/// Which digest bucket an object id falls in.
pub fn bucket_of(id: &ObjectId) -> usize {
    let encoded = postcard::to_stdvec(id).unwrap_or_default();
    Sha256::digest(&encoded)[0] as usize % DIGEST_BUCKETS
}

fn entry_hash(id: &ObjectId, version: Version) -> u64 {
    let mut h = Sha256::new();
    h.update(postcard::to_stdvec(id).unwrap_or_default());
    h.update(version.counter.to_be_bytes());
    h.update(version.node.to_be_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_be_bytes(first)
}

/// Whether copy `new` of an object wins over copy `old`: the higher version wins, and for keys
/// a tombstone always wins (and a live copy never beats one), so a deleted key never comes
/// back.
fn beats(new: &Stored, old: &Stored) -> bool {
    supersedes(
        &new.id,
        (new.version, matches!(new.entry, Entry::Tombstone)),
        (old.version, matches!(old.entry, Entry::Tombstone)),
    )
}

/// The rule of [`beats`] on an object's id and each copy's version and whether it is a
/// tombstone: what the store needs to refuse, on disk too, to replace a copy with one that
/// lost to it.
pub fn supersedes(id: &ObjectId, new: (Version, bool), old: (Version, bool)) -> bool {
    let is_key = matches!(id, ObjectId::Key(_));
    let ((new_version, new_dead), (old_version, old_dead)) = (new, old);
    if is_key && old_dead && !new_dead {
        return false;
    }
    (is_key && new_dead && !old_dead) || new_version > old_version
}

/// The state of one HSM node.
#[derive(Debug)]
pub struct NodeCore {
    me: MemberRecord,
    cluster_id: String,
    objects: BTreeMap<ObjectId, Stored>,
    buckets: Vec<u64>,
    lamport: u64,
    next_handle_seq: u64,
    sessions: HashMap<ConnId, Session>,
    /// Local changes decided but not yet durable, by object: what the next decision reads,
    /// never what a query answers. The version numbers and key handles they took are not given
    /// back if their commit fails: a copy may have reached a peer, and must never be confused
    /// with a later change.
    pending: BTreeMap<ObjectId, Stored>,
    /// Copies from peers planned for the disk and not yet durable, by object. A later copy is
    /// planned only if it beats these too: one that lost to a copy still being written would
    /// otherwise be written after it and leave the disk holding the loser.
    incoming: BTreeMap<ObjectId, Stored>,
    /// Where key material, random bytes and password salts come from: the operating system's
    /// CSPRNG, or a seeded source in tests and simulations.
    entropy: Arc<dyn Entropy>,
}

impl NodeCore {
    /// A core for the node `me`, holding `objects` (as loaded from its store).
    pub fn new(me: MemberRecord, cluster_id: String, objects: Vec<Stored>) -> Self {
        let mut core = Self {
            me,
            cluster_id,
            objects: BTreeMap::new(),
            buckets: vec![0; DIGEST_BUCKETS],
            lamport: 0,
            next_handle_seq: 1,
            sessions: HashMap::new(),
            pending: BTreeMap::new(),
            incoming: BTreeMap::new(),
            entropy: Arc::new(OsEntropy),
        };
        for stored in objects {
            core.install(stored);
        }
        core
    }

    /// The same core drawing its randomness from `entropy`.
    pub fn with_entropy(mut self, entropy: Arc<dyn Entropy>) -> Self {
        self.entropy = entropy;
        self
    }

    /// The core's source of randomness, for the work it hands the shell (password hashing).
    pub fn entropy(&self) -> Arc<dyn Entropy> {
        self.entropy.clone()
    }

    pub fn me(&self) -> &MemberRecord {
        &self.me
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Puts an object in place, keeping the digest, the Lamport clock and the handle counter
    /// in step.
    fn install(&mut self, stored: Stored) {
        let bucket = bucket_of(&stored.id);
        if let Some(old) = self.objects.get(&stored.id) {
            self.buckets[bucket] ^= entry_hash(&old.id, old.version);
        }
        self.buckets[bucket] ^= entry_hash(&stored.id, stored.version);
        self.lamport = self.lamport.max(stored.version.counter);
        if let ObjectId::Key(handle) = stored.id {
            if handle >> 32 == u64::from(self.me.node_number) {
                // May pass the low 32 bits (a peer's handle ending in 0xffffffff): then
                // `generate_key` refuses rather than mint into the node-number bits.
                self.next_handle_seq = self.next_handle_seq.max((handle & HANDLE_SEQ_MASK) + 1);
            }
        }
        self.objects.insert(stored.id.clone(), stored);
    }

    /// Decides a change made on this node, at a version newer than any it has seen. Nothing
    /// visible changes: the change waits in `pending` until it is installed or abandoned.
    fn decide(&mut self, id: ObjectId, entry: Entry) -> Stored {
        // Saturating: a peer may have sent a version at the top of the range (no honest
        // cluster gets there); a panic or a wrap to 0 would be worse than a tie.
        self.lamport = self.lamport.saturating_add(1);
        let stored = Stored {
            id,
            version: Version {
                counter: self.lamport,
                node: self.me.node_number,
            },
            entry,
        };
        self.pending.insert(stored.id.clone(), stored.clone());
        stored
    }

    /// Installs local changes once they are durable (each only if it still wins: a newer copy
    /// may have been installed while they were being written).
    pub fn install_local(&mut self, durable: Vec<Stored>) {
        for stored in durable {
            self.settle(&stored);
            if self.wins(&stored) {
                self.install(stored);
            }
        }
    }

    /// Forgets local changes whose commit failed: every visible state stays as it was.
    pub fn abandon(&mut self, failed: &[Stored]) {
        for stored in failed {
            self.settle(stored);
        }
    }

    /// Takes a change out of `pending`, unless a later decision on the same object replaced it
    /// there (that one settles on its own).
    fn settle(&mut self, stored: &Stored) {
        if self
            .pending
            .get(&stored.id)
            .is_some_and(|p| p.version == stored.version)
        {
            self.pending.remove(&stored.id);
        }
    }

    /// The newest copy of an object this node has decided on, durable or not: what decisions
    /// read.
    fn latest(&self, id: &ObjectId) -> Option<&Stored> {
        self.pending.get(id).or_else(|| self.objects.get(id))
    }

    /// Local changes decided and not yet settled (for tests and diagnostics).
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Copies from peers planned and not yet settled (for tests and diagnostics).
    pub fn incoming_count(&self) -> usize {
        self.incoming.len()
    }

    /// Whether `stored` would win over this node's installed copy (see [`beats`]).
    fn wins(&self, stored: &Stored) -> bool {
        self.objects
            .get(&stored.id)
            .is_none_or(|local| beats(stored, local))
    }

    /// Of objects from a peer, those that would change this node: what to persist. Nothing
    /// visible changes; the copies are kept as in flight until [`NodeCore::install_remote`]
    /// installs them once they are durable, or [`NodeCore::abandon_remote`] forgets them. A
    /// copy is planned only if it beats everything this node holds or is writing: the
    /// installed copy, a local change still being committed, and a peer's copy still being
    /// written. Planned after one that beats it, it would be written after it too, and leave
    /// the disk holding the loser.
    pub fn winners(&mut self, incoming: Vec<Stored>) -> Vec<Stored> {
        let mut winners: Vec<Stored> = Vec::new();
        for stored in incoming {
            if !self.beats_all_known(&stored) {
                continue;
            }
            // Two copies of one object in a batch: the one that beats the other.
            match winners.iter_mut().find(|w| w.id == stored.id) {
                Some(w) if beats(&stored, w) => *w = stored,
                Some(_) => {}
                None => winners.push(stored),
            }
        }
        for w in &winners {
            // A Lamport clock moves on when it hears of a version: a change decided here while
            // these are written is newer than they are.
            self.lamport = self.lamport.max(w.version.counter);
            self.incoming.insert(w.id.clone(), w.clone());
        }
        winners
    }

    /// Whether a peer's copy beats the installed copy and every copy in flight here.
    fn beats_all_known(&self, stored: &Stored) -> bool {
        self.wins(stored)
            && [self.pending.get(&stored.id), self.incoming.get(&stored.id)]
                .into_iter()
                .flatten()
                .all(|in_flight| beats(stored, in_flight))
    }

    /// Takes a peer's copy out of the in-flight set, unless a later one replaced it there.
    fn settle_incoming(&mut self, stored: &Stored) {
        if self
            .incoming
            .get(&stored.id)
            .is_some_and(|i| i.version == stored.version)
        {
            self.incoming.remove(&stored.id);
        }
    }

    /// Installs objects from a peer once they are durable, each only if it still wins (another
    /// change may have been installed while they were being written). Returns how many did.
    pub fn install_remote(&mut self, durable: Vec<Stored>) -> usize {
        let mut installed = 0;
        for stored in durable {
            self.settle_incoming(&stored);
            if self.wins(&stored) {
                self.install(stored);
                installed += 1;
            }
        }
        installed
    }

    /// Forgets objects from a peer whose commit failed: nothing visible changed, and a later
    /// copy of them is planned as if they had never come.
    pub fn abandon_remote(&mut self, failed: &[Stored]) {
        for stored in failed {
            self.settle_incoming(stored);
        }
    }

    /// Merges objects from a peer at once (for callers that need no durability: tests and
    /// restores); returns what changed here.
    pub fn apply_remote(&mut self, incoming: Vec<Stored>) -> Vec<Stored> {
        let winners = self.winners(incoming);
        self.install_remote(winners.clone());
        winners
    }

    /// This node's member record, to write (and install once durable), if the installed one
    /// is missing or is not what this node is: at start, a node started by hand on another
    /// host brings its record along, and one whose port moved records the new address; later,
    /// a peer's older copy (its old address, say) may win over the one written at start,
    /// which an empty store writes at version 1. Decided at a version newer than every one
    /// seen, so it wins everywhere. Nothing while one is in flight (asked again once it
    /// settles), nor for a node the cluster has removed (its record is a tombstone): a removed
    /// node does not bring itself back.
    pub fn self_member_to_write(&mut self) -> Option<Stored> {
        let id = ObjectId::Member(self.me.hsm_id.clone());
        if self.pending.contains_key(&id) {
            return None;
        }
        match self.objects.get(&id).map(|s| &s.entry) {
            Some(Entry::Member(m)) if **m == self.me => None,
            Some(Entry::Tombstone) => None,
            _ => Some(self.decide(id, Entry::Member(Box::new(self.me.clone())))),
        }
    }

    /// Moves the key handle counter `gap` on: after a rebuild that could not reach every peer,
    /// handles this node minted before may be held by one that did not answer.
    pub fn skip_handles(&mut self, gap: u64) {
        self.next_handle_seq = self.next_handle_seq.saturating_add(gap);
    }

    // ---- membership -------------------------------------------------------------------

    /// Removes a member (the cluster service deleted its HSM): its record becomes a tombstone.
    /// Returns the tombstone to persist and replicate, or `None` if it was already gone.
    pub fn forget_member(&mut self, hsm_id: &str) -> Result<Option<Stored>, WireError> {
        if hsm_id == self.me.hsm_id {
            return Err(err(
                ErrorCode::InvalidRequest,
                "a node cannot forget itself; ask another node of the cluster",
            ));
        }
        let id = ObjectId::Member(hsm_id.to_string());
        match self.latest(&id).map(|s| &s.entry) {
            Some(Entry::Member(_)) => Ok(Some(self.decide(id, Entry::Tombstone))),
            _ => Ok(None),
        }
    }

    /// Whether `hsm_id` was a member and has been removed.
    pub fn is_forgotten(&self, hsm_id: &str) -> bool {
        matches!(
            self.objects
                .get(&ObjectId::Member(hsm_id.to_string()))
                .map(|s| &s.entry),
            Some(Entry::Tombstone)
        )
    }

    /// Every current member of the cluster, this node included.
    pub fn members(&self) -> Vec<MemberRecord> {
        // Members sort first (`ObjectId`'s variant order), so this never walks the keys.
        self.objects
            .range(..ObjectId::User(String::new()))
            .map(|(_, s)| s)
            .filter_map(|s| match &s.entry {
                Entry::Member(m) => Some((**m).clone()),
                _ => None,
            })
            .collect()
    }

    /// How many HSMs must hold a new key before it is acknowledged: two, or one in a cluster
    /// of one (CloudHSM's key availability quorum).
    pub fn quorum(&self) -> usize {
        self.members().len().clamp(1, 2)
    }

    // ---- digest and anti-entropy ------------------------------------------------------

    /// The per-bucket digests of everything this node holds.
    pub fn digest(&self) -> Vec<u64> {
        self.buckets.clone()
    }

    /// Ids and versions of every object in the given buckets.
    pub fn entries(&self, buckets: &[u16]) -> Vec<(ObjectId, Version)> {
        let wanted: std::collections::HashSet<usize> =
            buckets.iter().map(|b| *b as usize).collect();
        self.objects
            .values()
            .filter(|s| wanted.contains(&bucket_of(&s.id)))
            .map(|s| (s.id.clone(), s.version))
            .collect()
    }

    /// Of a peer's entries, the ids whose copy there would win here: what to fetch.
    pub fn wanted_from(&self, theirs: &[(ObjectId, Version)]) -> Vec<ObjectId> {
        theirs
            .iter()
            .filter(|(id, version)| match self.objects.get(id) {
                None => true,
                Some(local) => {
                    *version > local.version
                        && !(matches!(id, ObjectId::Key(_))
                            && matches!(local.entry, Entry::Tombstone))
                }
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The objects with the given ids that this node holds.
    pub fn get_objects(&self, ids: &[ObjectId]) -> Vec<Stored> {
        ids.iter()
            .filter_map(|id| self.objects.get(id).cloned())
            .collect()
    }

    // ---- users and sessions -----------------------------------------------------------

    /// A user as decisions see it: including changes still being committed.
    fn user(&self, username: &str) -> Option<&UserRecord> {
        match self.latest(&ObjectId::User(username.to_string())) {
            Some(Stored {
                entry: Entry::User(u),
                ..
            }) => Some(u),
            _ => None,
        }
    }

    /// A user as a login sees it: its credential (record and version) as durable, since a
    /// login never rests on a creation or password change that may still fail; and its
    /// failure count and lockout for that credential twice, as durable (what queries show)
    /// and as decided (so failed logins in flight at once all count).
    fn login_user(&self, username: &str) -> Option<LoginView<'_>> {
        let credential = self.objects.get(&ObjectId::User(username.to_string()))?;
        let Entry::User(user) = &credential.entry else {
            return None;
        };
        let id = ObjectId::LoginState(username.to_string());
        let counts = |state: Option<&Stored>| match state {
            // Failures counted against this very credential; any other credential's are
            // stale (the password changed since), and the record's own counts stand.
            Some(Stored {
                entry: Entry::LoginState(l),
                ..
            }) if l.credential == credential.version => (l.failed_logins, l.locked),
            _ => (user.failed_logins, user.locked),
        };
        Some(LoginView {
            user,
            credential: credential.version,
            durable: counts(self.objects.get(&id)),
            decided: counts(self.latest(&id)),
        })
    }

    pub fn session(&self, conn: ConnId) -> Option<&Session> {
        self.sessions.get(&conn)
    }

    fn require_session(&self, conn: ConnId) -> Result<&Session, WireError> {
        self.sessions.get(&conn).ok_or_else(|| {
            err(
                ErrorCode::NotLoggedIn,
                "this call needs a logged-in session",
            )
        })
    }

    fn require_officer(&self, conn: ConnId) -> Result<&Session, WireError> {
        let session = self.require_session(conn)?;
        if session.role != Role::CryptoOfficer {
            return Err(err(
                ErrorCode::AccessDenied,
                "only a crypto officer (admin) may manage users",
            ));
        }
        Ok(session)
    }

    /// First half of a login: everything but the password check. Returns the hash to verify.
    pub fn begin_login(
        &self,
        conn: ConnId,
        username: &str,
        role: Role,
    ) -> Result<LoginCheck, WireError> {
        if self.sessions.contains_key(&conn) {
            return Err(err(
                ErrorCode::AlreadyLoggedIn,
                "this session is already logged in; log out first",
            ));
        }
        let view = self.login_user(username).ok_or_else(|| {
            err(
                ErrorCode::UserNotFound,
                format!("user {username} does not exist"),
            )
        })?;
        let user = view.user;
        if view.durable.1 || view.decided.1 {
            return Err(err(
                ErrorCode::UserLockedOut,
                format!(
                    "user {username} is locked out after {MAX_FAILED_LOGINS} failed logins; \
                     a crypto officer must change its password"
                ),
            ));
        }
        if user.role != role {
            return Err(err(
                ErrorCode::InvalidCredentials,
                format!("invalid user name, role or password for {username}"),
            ));
        }
        Ok(LoginCheck {
            password_hash: user.password_hash.clone(),
        })
    }

    /// Second half of a login, once the password was checked. Decides the session, or the
    /// error to answer, and the login state to persist if the failure count changes; the
    /// caller opens the session ([`NodeCore::open_session`]) and answers once that state is
    /// durable. The count is kept against the user's credential, never in its record: a
    /// failure counted here must not replace a password changed on another HSM.
    pub fn finish_login(
        &mut self,
        username: &str,
        role: Role,
        password_ok: bool,
    ) -> (Result<Session, WireError>, Option<Stored>) {
        let Some((credential, (failed_logins, locked))) = self
            .login_user(username)
            .map(|view| (view.credential, view.decided))
        else {
            return (
                Err(err(
                    ErrorCode::UserNotFound,
                    format!("user {username} does not exist"),
                )),
                None,
            );
        };
        if locked {
            return (
                Err(err(
                    ErrorCode::UserLockedOut,
                    format!("user {username} is locked out"),
                )),
                None,
            );
        }
        let id = ObjectId::LoginState(username.to_string());
        if password_ok {
            let changed = (failed_logins != 0).then(|| {
                let reset = LoginState {
                    credential,
                    failed_logins: 0,
                    locked: false,
                };
                self.decide(id, Entry::LoginState(Box::new(reset)))
            });
            let session = Session {
                username: username.to_string(),
                role,
            };
            return (Ok(session), changed);
        }
        let failed_logins = failed_logins.saturating_add(1);
        let locked = failed_logins >= MAX_FAILED_LOGINS;
        let message = if locked {
            format!(
                "invalid user name, role or password for {username}; the user is now locked \
                 out after {MAX_FAILED_LOGINS} failed logins"
            )
        } else {
            format!("invalid user name, role or password for {username}")
        };
        let state = LoginState {
            credential,
            failed_logins,
            locked,
        };
        let stored = self.decide(id, Entry::LoginState(Box::new(state)));
        (
            Err(err(ErrorCode::InvalidCredentials, message)),
            Some(stored),
        )
    }

    /// Opens the session a login decided on, once what it changed is durable.
    pub fn open_session(&mut self, conn: ConnId, session: Session) {
        self.sessions.insert(conn, session);
    }

    /// Ends the session of a connection (logout or disconnect).
    pub fn logout(&mut self, conn: ConnId) -> Result<(), WireError> {
        self.sessions
            .remove(&conn)
            .map(|_| ())
            .ok_or_else(|| err(ErrorCode::NotLoggedIn, "this session is not logged in"))
    }

    /// Every user, with the sessions it has open on this node.
    pub fn list_users(&self, conn: ConnId) -> Result<Vec<UserInfo>, WireError> {
        self.require_session(conn)?;
        Ok(self
            .objects
            .range(ObjectId::User(String::new())..ObjectId::Key(0))
            .filter_map(|(_, s)| match &s.entry {
                Entry::User(u) => Some(UserInfo {
                    username: u.username.clone(),
                    role: u.role,
                    locked: self
                        .login_user(&u.username)
                        .is_some_and(|view| view.durable.1),
                    sessions: self
                        .sessions
                        .values()
                        .filter(|s| s.username == u.username)
                        .count() as u32,
                }),
                _ => None,
            })
            .collect())
    }

    /// Checks that a password change is allowed and well-formed, before the slow hash.
    pub fn check_change_password(
        &self,
        conn: ConnId,
        username: &str,
        role: Role,
        new_password_len: usize,
    ) -> Result<(), WireError> {
        let session = self.require_session(conn)?;
        if session.role != Role::CryptoOfficer && session.username != username {
            return Err(err(
                ErrorCode::AccessDenied,
                "a crypto user may change only its own password",
            ));
        }
        let user = self.user(username).ok_or_else(|| {
            err(
                ErrorCode::UserNotFound,
                format!("user {username} does not exist"),
            )
        })?;
        if user.role != role {
            return Err(err(
                ErrorCode::UserNotFound,
                format!("user {username} does not have the role {}", role.cli_name()),
            ));
        }
        check_password_len(new_password_len)
    }

    /// Sets a user's password hash: a new credential, so this also unlocks it (failures
    /// counted against the old one no longer apply).
    pub fn set_password(
        &mut self,
        username: &str,
        password_hash: String,
    ) -> Result<Stored, WireError> {
        let mut user = self.user(username).cloned().ok_or_else(|| {
            err(
                ErrorCode::UserNotFound,
                format!("user {username} does not exist"),
            )
        })?;
        user.password_hash = password_hash;
        user.failed_logins = 0;
        user.locked = false;
        Ok(self.decide(
            ObjectId::User(username.to_string()),
            Entry::User(Box::new(user)),
        ))
    }

    /// Checks that a user may be created, before the slow hash.
    pub fn check_create_user(
        &self,
        conn: ConnId,
        username: &str,
        password_len: usize,
    ) -> Result<(), WireError> {
        self.require_officer(conn)?;
        check_username(username)?;
        if self.user(username).is_some() {
            return Err(err(
                ErrorCode::UserExists,
                format!("user {username} already exists"),
            ));
        }
        check_password_len(password_len)
    }

    /// Adds a user (the caller has checked with [`NodeCore::check_create_user`]).
    pub fn create_user(&mut self, username: &str, role: Role, password_hash: String) -> Stored {
        self.decide(
            ObjectId::User(username.to_string()),
            Entry::User(Box::new(UserRecord {
                username: username.to_string(),
                role,
                password_hash,
                failed_logins: 0,
                locked: false,
            })),
        )
    }

    /// Removes a user that owns no keys, and its failed logins with it: both become
    /// tombstones (the user's first), so no login state outlives its user on any HSM that
    /// hears of the deletion. A user created later under the same name starts with no
    /// failures either way, since failures count against a credential (a user record's
    /// version) and the new record's is newer than any the old one had.
    pub fn delete_user(&mut self, conn: ConnId, username: &str) -> Result<Vec<Stored>, WireError> {
        let session = self.require_officer(conn)?;
        if session.username == username {
            return Err(err(
                ErrorCode::InvalidRequest,
                "a user cannot delete itself",
            ));
        }
        if self.user(username).is_none() {
            return Err(err(
                ErrorCode::UserNotFound,
                format!("user {username} does not exist"),
            ));
        }
        // Keys being generated count too: a user must not go while one is on its way.
        let owned = self
            .latest_keys()
            .filter(|k| k.attributes.owner == username)
            .count();
        if owned > 0 {
            return Err(err(
                ErrorCode::InvalidRequest,
                format!("user {username} owns {owned} keys; delete them first"),
            ));
        }
        let mut changed = vec![self.decide(ObjectId::User(username.to_string()), Entry::Tombstone)];
        let login_state = ObjectId::LoginState(username.to_string());
        if matches!(
            self.latest(&login_state).map(|s| &s.entry),
            Some(Entry::LoginState(_))
        ) {
            changed.push(self.decide(login_state, Entry::Tombstone));
        }
        Ok(changed)
    }

    /// Open sessions on this node, by user name.
    pub fn sessions_of(&self, username: &str) -> usize {
        self.sessions
            .values()
            .filter(|s| s.username == username)
            .count()
    }

    // ---- keys -------------------------------------------------------------------------

    fn keys(&self) -> impl Iterator<Item = &Arc<KeyEntry>> {
        // Keys sort last (`ObjectId`'s variant order).
        self.objects
            .range(KEYS)
            .filter_map(|(_, s)| match &s.entry {
                Entry::Key(k) => Some(k),
                _ => None,
            })
    }

    /// Live keys as decisions see them: including generations and deletions still being
    /// committed.
    fn latest_keys(&self) -> impl Iterator<Item = &Arc<KeyEntry>> {
        let durable = self
            .objects
            .range(KEYS)
            .filter(|(id, _)| !self.pending.contains_key(id));
        durable
            .chain(self.pending.range(KEYS))
            .filter_map(|(_, s)| match &s.entry {
                Entry::Key(k) => Some(k),
                _ => None,
            })
    }

    /// A live key by handle.
    pub fn key(&self, handle: KeyHandle) -> Option<&Arc<KeyEntry>> {
        match self.objects.get(&ObjectId::Key(handle)) {
            Some(Stored {
                entry: Entry::Key(k),
                ..
            }) => Some(k),
            _ => None,
        }
    }

    /// Generates an AES-256 token key owned by the session's crypto user.
    pub fn generate_key(
        &mut self,
        conn: ConnId,
        label: &str,
        length_bytes: u32,
        now_millis: u64,
    ) -> Result<Stored, WireError> {
        let session = self.require_session(conn)?;
        if session.role != Role::CryptoUser {
            return Err(err(
                ErrorCode::AccessDenied,
                "only a crypto user may generate keys",
            ));
        }
        if length_bytes as usize != KEY_LEN {
            return Err(err(
                ErrorCode::InvalidRequest,
                format!("key length must be {KEY_LEN} bytes (AES-256), got {length_bytes}"),
            ));
        }
        if label.is_empty() || label.len() > MAX_LABEL_LEN {
            return Err(err(
                ErrorCode::InvalidRequest,
                format!("label must be 1 to {MAX_LABEL_LEN} bytes"),
            ));
        }
        let owner = session.username.clone();
        if self.next_handle_seq > HANDLE_SEQ_MASK {
            // The counter fills the low 32 bits; one more would be another node's handle.
            return Err(err(
                ErrorCode::Internal,
                "this HSM has minted every key handle it may; generate keys on another HSM",
            ));
        }
        let handle = (u64::from(self.me.node_number) << 32) | self.next_handle_seq;
        self.next_handle_seq += 1;
        let attributes = KeyAttributes {
            handle,
            label: label.to_string(),
            owner,
            class: KeyClass::SecretKey,
            key_type: KeyType::Aes,
            length_bytes,
            extractable: false,
            token: true,
            created_at_millis: now_millis,
        };
        let entry = KeyEntry::new(attributes, KeyMaterial::generate_from(&*self.entropy));
        Ok(self.decide(ObjectId::Key(handle), Entry::Key(Arc::new(entry))))
    }

    /// Keys matching the filters that the session's user may see: its own keys (a crypto
    /// officer sees every key, as `key list` does for admins).
    pub fn find_keys(
        &self,
        conn: ConnId,
        label: Option<&str>,
        owner: Option<&str>,
    ) -> Result<Vec<KeyAttributes>, WireError> {
        let session = self.require_session(conn)?;
        Ok(self
            .keys()
            .filter(|k| {
                session.role == Role::CryptoOfficer || k.attributes.owner == session.username
            })
            .filter(|k| label.is_none_or(|l| k.attributes.label == l))
            .filter(|k| owner.is_none_or(|o| k.attributes.owner == o))
            .map(|k| k.attributes.clone())
            .collect())
    }

    /// A key the session may use or see.
    pub fn visible_key(
        &self,
        conn: ConnId,
        handle: KeyHandle,
    ) -> Result<&Arc<KeyEntry>, WireError> {
        let session = self.require_session(conn)?;
        let key = self.key(handle).ok_or_else(|| {
            err(
                ErrorCode::KeyNotFound,
                format!("no key with handle {handle}"),
            )
        })?;
        if session.role != Role::CryptoOfficer && key.attributes.owner != session.username {
            // Like CloudHSM, a key the user neither owns nor shares does not exist for it.
            return Err(err(
                ErrorCode::KeyNotFound,
                format!("no key with handle {handle}"),
            ));
        }
        Ok(key)
    }

    /// A key the session's crypto user may encrypt and decrypt with.
    pub fn usable_key(&self, conn: ConnId, handle: KeyHandle) -> Result<Arc<KeyEntry>, WireError> {
        let key = self.visible_key(conn, handle)?;
        if key.attributes.owner != self.require_session(conn)?.username {
            return Err(err(
                ErrorCode::AccessDenied,
                "only the key's owner may use it",
            ));
        }
        Ok(key.clone())
    }

    /// Deletes a key: only its owner may. The tombstone is what replicates.
    pub fn delete_key(&mut self, conn: ConnId, handle: KeyHandle) -> Result<Stored, WireError> {
        let session = self.require_session(conn)?.clone();
        let deleting = matches!(
            self.pending.get(&ObjectId::Key(handle)).map(|s| &s.entry),
            Some(Entry::Tombstone)
        );
        let key = self.key(handle).filter(|_| !deleting).ok_or_else(|| {
            err(
                ErrorCode::KeyNotFound,
                format!("no key with handle {handle}"),
            )
        })?;
        if key.attributes.owner != session.username {
            return Err(err(
                ErrorCode::AccessDenied,
                format!(
                    "only the owner of key {handle} ({}) may delete it",
                    key.attributes.owner
                ),
            ));
        }
        Ok(self.decide(ObjectId::Key(handle), Entry::Tombstone))
    }

    /// Random bytes for a logged-in session (`GenerateRandom`), from the core's entropy.
    pub fn random(&self, conn: ConnId, length: u32) -> Result<SecretBytes, WireError> {
        self.require_session(conn)?;
        if length == 0 || length > MAX_RANDOM_BYTES {
            return Err(err(
                ErrorCode::InvalidRequest,
                format!("length must be 1 to {MAX_RANDOM_BYTES} bytes"),
            ));
        }
        let mut bytes = vec![0u8; length as usize];
        self.entropy.fill(&mut bytes);
        Ok(SecretBytes::new(bytes))
    }

    /// Takes back a key whose creation did not reach its quorum: a tombstone, so no copy that
    /// did get out can come back.
    pub fn roll_back_key(&mut self, handle: KeyHandle) -> Stored {
        self.decide(ObjectId::Key(handle), Entry::Tombstone)
    }

    pub fn key_count(&self) -> u64 {
        self.keys().count() as u64
    }

    pub fn user_count(&self) -> u64 {
        self.objects
            .range(ObjectId::User(String::new())..ObjectId::Key(0))
            .filter(|(_, s)| matches!(s.entry, Entry::User(_)))
            .count() as u64
    }

    /// The plaintext material of a key, for tests that prove it never leaks.
    #[cfg(feature = "test-util")]
    pub fn material_for_test(&self, handle: KeyHandle) -> Option<[u8; KEY_LEN]> {
        self.key(handle).map(|k| *k.material().expose())
    }
}

/// Checks a user name against CloudHSM's rules.
pub fn check_username(username: &str) -> Result<(), WireError> {
    let ok = !username.is_empty()
        && username.len() <= MAX_USERNAME_LEN
        && username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(err(
            ErrorCode::InvalidRequest,
            format!("user name must be 1 to {MAX_USERNAME_LEN} letters, digits, '-' or '_'"),
        ))
    }
}

fn check_password_len(len: usize) -> Result<(), WireError> {
    if PASSWORD_LEN.contains(&len) {
        Ok(())
    } else {
        Err(err(
            ErrorCode::InvalidRequest,
            format!(
                "password must be {} to {} characters",
                PASSWORD_LEN.start(),
                PASSWORD_LEN.end()
            ),
        ))
    }
}

pub mod quorum;

#[cfg(test)]
mod tests;
