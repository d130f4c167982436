//! The node actor: the thin shell around [`NodeCore`]. It routes calls into the core, sends the
//! changes the core decides on to the store, installs them in the core once they are durable
//! (or abandons them if the commit failed, so nothing visible changes), then pushes them to
//! the peer links and answers (once on the quorum of HSMs, for new keys). Slow work (password
//! hashing, fsync, peer round trips) runs off the actor's thread; the actor only waits for its
//! results.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::stream::{FuturesUnordered, StreamExt};
use hsmkms_common::aead::Sealer;
use hsmkms_common::clock::Clock;
use hsmkms_common::secret::SecretString;
use hsmkms_common::wire::{
    ErrorCode, KeyHandle, NodeOutcome, NodeStatus, Object, ObjectId, Request, Response, Role,
    WireError, DIGEST_BUCKETS, MAX_CRYPTO_BYTES, MAX_OBJECTS_PER_CALL,
};
use rustls::ClientConfig;

use crate::actors::peer::PeerLink;
use crate::actors::stall::{after_stall, freeze_while_stalled};
use crate::core::quorum::{end_of_generation, GenerationEnd, Observed};
use crate::core::{ConnId, Entry, NodeCore, Stored};
use crate::material::{self, Place};
use crate::password;
use crate::rebuild::{Rebuild, RebuildCheck, HANDLE_GAP_AFTER_PARTIAL_REBUILD};
use crate::seeds::Seeds;
use crate::stall::StallGate;
use crate::store::{Store, StoreError};

// The node actor's messages and options, also under the paths callers have always used.
#[cfg(feature = "test-util")]
pub use crate::actors::messages::MaterialForTest;
pub use crate::actors::messages::{
    ApplyPulled, Call, CaughtUp, ConnClosed, LinkState, LocalDigest, Wanted,
};
use crate::actors::messages::{NodeSide, PullNow, Push, Stop, NOT_CONNECTED};
use crate::options::{retry_backoff, RETRIED_COMMIT_ATTEMPTS};
pub use crate::options::{NodeOptions, MAILBOX_CAPACITY};

// Where it always was, for callers that name it here.
pub use crate::core::quorum::ACK_MARGIN_MILLIS;

/// Whether a caller's deadline (Unix milliseconds) has passed at `now_millis`.
fn past(deadline_unix_millis: u64, now_millis: u64) -> bool {
    now_millis >= deadline_unix_millis
}

/// The actor holding one HSM node's state.
pub struct NodeActor {
    core: NodeCore,
    store: Store,
    sync: Arc<Sealer>,
    clock: Arc<dyn Clock>,
    tls: Arc<ClientConfig>,
    options: NodeOptions,
    /// Peer links by address.
    links: HashMap<String, Addr<PeerLink>>,
    /// Which links are up, and to which HSM.
    linked: HashMap<String, String>,
    /// Addresses to link to that are not (yet) known members: join targets, and nodes that
    /// said Hello.
    seeds: Seeds,
    /// Its store was unreadable and it started empty: it answers no client (only peers) until
    /// it has caught up with every peer it knows of, or waited long enough for those that do
    /// not answer ([`crate::rebuild`]), so it never serves, or mints a key handle, from a
    /// state that lacks what it acknowledged before.
    rebuilding: Option<Rebuild>,
    /// The timer that ends a rebuild whose peers do not answer: cancelled when the rebuild
    /// ends, so it does not wake the node for nothing every second from then on.
    rebuild_timer: Option<SpawnHandle>,
    /// The stall switch of fault injection ([`crate::stall`]); never closes unless a handle
    /// holds its switch.
    gate: StallGate,
    /// Connections with a login in flight (its password check or commit still running): a
    /// connection that closes meanwhile leaves here, and its login then opens no session, so
    /// no stale session keeps the user "logged in" (KMS's USER_LOGGED_IN) after it is gone.
    logins: HashSet<ConnId>,
}

impl std::fmt::Debug for NodeActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeActor")
            .field("hsm_id", &self.core.me().hsm_id)
            .finish_non_exhaustive()
    }
}

type Reply = ResponseActFuture<NodeActor, Response>;

/// A change the node makes on its own, that no caller waits for but that must become durable:
/// its commit is retried ([`NodeActor::own_committed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnChange {
    /// A key generation that failed is rolled back: until the tombstone is durable the key
    /// stays on this disk, and anti-entropy may spread it.
    RollBack,
    /// This node's member record, at start or when a peer's stale copy won: until it is
    /// durable the cluster may dial an address this node no longer serves.
    SelfMember,
}

impl OwnChange {
    fn what(self) -> &'static str {
        match self {
            OwnChange::RollBack => "a key's roll-back",
            OwnChange::SelfMember => "this node's member record",
        }
    }
}

fn reply(result: Result<Response, WireError>) -> Reply {
    Box::pin(fut::ready(result.unwrap_or_else(Response::Error)))
}

fn internal(e: impl std::fmt::Display) -> WireError {
    WireError::new(ErrorCode::Internal, e.to_string())
}

/// The answer to a call whose change could not be made durable: nothing changed.
fn not_durable(e: impl std::fmt::Display) -> Response {
    Response::Error(WireError::new(
        ErrorCode::Internal,
        format!("{e}; nothing was changed"),
    ))
}

impl NodeActor {
    pub fn new(
        core: NodeCore,
        store: Store,
        sync: Arc<Sealer>,
        clock: Arc<dyn Clock>,
        tls: Arc<ClientConfig>,
        options: NodeOptions,
        join: Vec<String>,
    ) -> Self {
        Self {
            core,
            store,
            sync,
            clock,
            tls,
            options,
            links: HashMap::new(),
            linked: HashMap::new(),
            seeds: Seeds::new(join),
            rebuilding: None,
            rebuild_timer: None,
            gate: StallGate::open(),
            logins: HashSet::new(),
        }
    }

    /// Makes the node obey a stall switch (see [`crate::stall`]).
    pub fn stall_gate(mut self, gate: StallGate) -> Self {
        self.gate = gate;
        self
    }

    /// Starts the node rebuilding from its peers (see [`NodeActor::rebuilding`]).
    pub fn rebuilding(mut self, rebuilding: bool) -> Self {
        self.rebuilding = rebuilding.then(|| Rebuild::new(self.clock.now_millis()));
        self
    }

    /// Ends the rebuild if every peer has been caught up with, or the wait for those that do
    /// not answer is over.
    fn check_rebuild(&mut self, ctx: &mut Context<Self>) {
        let Some(rebuild) = &self.rebuilding else {
            return;
        };
        let check = rebuild.check(
            self.links.keys(),
            self.clock.now_millis(),
            self.options.rebuild_wait,
        );
        match check {
            RebuildCheck::Waiting => return,
            RebuildCheck::Complete => tracing::info!(
                keys = self.core.key_count(),
                "the HSM's store is rebuilt from every peer; serving clients again"
            ),
            RebuildCheck::Partial { missing } => {
                // A key this node generated may be held only by a peer that did not answer:
                // its handle must not be minted again.
                self.core.skip_handles(HANDLE_GAP_AFTER_PARTIAL_REBUILD);
                tracing::warn!(
                    keys = self.core.key_count(),
                    ?missing,
                    waited = ?self.options.rebuild_wait,
                    "the HSM's store is rebuilt from the peers that answered; serving clients again"
                );
            }
        }
        self.rebuilding = None;
        if let Some(timer) = self.rebuild_timer.take() {
            ctx.cancel_future(timer);
        }
    }

    /// Starts links to every member and seed we have none to, stops links to addresses that
    /// are neither any more.
    fn sync_links(&mut self, ctx: &mut Context<Self>) {
        let me = self.core.me().clone();
        let members = self.core.members();
        // A removed HSM's address is no seed any more, even if it once said Hello; nor is one
        // the membership now names.
        let core = &self.core;
        self.seeds
            .prune(&members, |hsm_id| core.is_forgotten(hsm_id), &self.linked);
        let mut wanted: HashSet<String> = members.into_iter().map(|m| m.address).collect();
        wanted.extend(self.seeds.addresses().cloned());
        wanted.remove(&me.address);
        self.links.retain(|address, link| {
            let keep = wanted.contains(address);
            if !keep {
                link.do_send(Stop);
            }
            keep
        });
        self.linked.retain(|address, _| wanted.contains(address));
        for address in wanted {
            if !self.links.contains_key(&address) {
                let link = PeerLink::new(
                    address.clone(),
                    NodeSide::of(&ctx.address()),
                    me.clone(),
                    self.core.cluster_id().to_string(),
                    self.tls.clone(),
                    self.options.clone(),
                    self.gate.clone(),
                )
                .start();
                self.links.insert(address, link);
            }
        }
    }

    fn wire(&self, stored: &[Stored]) -> Vec<Object> {
        stored
            .iter()
            .map(|s| material::wrap(s, &self.sync, Place::Wire, self.core.cluster_id()))
            .collect()
    }

    /// Pushes objects to every peer link; resolves to each link's address and outcome.
    fn push_all(
        &self,
        stored: &[Stored],
    ) -> FuturesUnordered<impl std::future::Future<Output = (String, Result<(), String>)>> {
        self.push(stored, false, self.options.call_deadline)
    }

    /// Pushes objects to every peer link, as [`NodeActor::push_all`], but a link that is not
    /// connected (a peer that just restarted, say) is tried again every 100 ms for `within`
    /// (at most the call deadline): a new key waits for its quorum to come back rather than
    /// failing at once.
    fn push_until_linked(
        &self,
        stored: &[Stored],
        within: Duration,
    ) -> FuturesUnordered<impl std::future::Future<Output = (String, Result<(), String>)>> {
        self.push(stored, true, within.min(self.options.call_deadline))
    }

    /// One push to every link within `within`; with `retry_unlinked`, a link that is not
    /// connected is tried again until then.
    fn push(
        &self,
        stored: &[Stored],
        retry_unlinked: bool,
        within: Duration,
    ) -> FuturesUnordered<impl std::future::Future<Output = (String, Result<(), String>)>> {
        let objects = self.wire(stored);
        let until = tokio::time::Instant::now() + within;
        self.links
            .iter()
            .map(|(address, link)| {
                let (address, link, objects) = (address.clone(), link.clone(), objects.clone());
                async move {
                    loop {
                        let left = until.saturating_duration_since(tokio::time::Instant::now());
                        let outcome = match tokio::time::timeout(
                            left,
                            link.send(Push(objects.clone())),
                        )
                        .await
                        {
                            Ok(Ok(result)) => result,
                            Ok(Err(_)) => Err("peer link stopped".to_string()),
                            Err(_) => Err(format!("no answer within {left:?}")),
                        };
                        match outcome {
                            Err(e) if retry_unlinked && e == NOT_CONNECTED && !left.is_zero() => {
                                tokio::time::sleep(left.min(Duration::from_millis(100))).await
                            }
                            other => return (address, other),
                        }
                    }
                }
            })
            .collect()
    }

    /// Persists local changes the core decided on, installs them once they are durable,
    /// pushes them to peers (best effort), and answers `ok`.
    fn commit_then(&mut self, changed: Vec<Stored>, ok: Response) -> Reply {
        self.commit_and(changed, move |_| ok)
    }

    /// Persists local changes the core decided on; once they are durable, installs them, pushes
    /// them to peers (best effort: anti-entropy covers a push that fails) and answers with
    /// `then`. If the commit fails the core abandons them, so nothing visible changed, nothing
    /// left this node, and the caller hears why.
    fn commit_and(
        &mut self,
        changed: Vec<Stored>,
        then: impl FnOnce(&mut NodeActor) -> Response + 'static,
    ) -> Reply {
        let store = self.store.clone();
        let commit = store.commit(changed.clone());
        Box::pin(commit.into_actor(self).map(move |result, act, ctx| {
            if let Err(e) = result {
                act.core.abandon(&changed);
                return not_durable(e);
            }
            let mut pushes = act.push_all(&changed);
            actix::spawn(async move { while pushes.next().await.is_some() {} });
            act.install(changed, ctx);
            then(act)
        }))
    }

    /// Installs durable local changes, and follows a change of membership with the links.
    fn install(&mut self, durable: Vec<Stored>, ctx: &mut Context<Self>) {
        let touches_members = durable.iter().any(|s| matches!(s.id, ObjectId::Member(_)));
        self.core.install_local(durable);
        if touches_members {
            self.membership_changed(ctx);
        }
    }

    /// After a change of membership: links follow it, and if the cluster's record of this node
    /// is not what this node is (an older copy, with an old address, won over the one it wrote
    /// at start), a newer one is written and replicated.
    fn membership_changed(&mut self, ctx: &mut Context<Self>) {
        self.sync_links(ctx);
        self.write_self_member(ctx, false);
    }

    /// Writes this node's member record if the core finds the installed one missing or not
    /// what this node is ([`NodeCore::self_member_to_write`]), then installs and replicates it.
    /// At start (`at_start`) nothing else runs until the first attempt is over, so no call
    /// sees a membership this node does not hold on disk; a failed attempt is retried in the
    /// background (the record stays decided meanwhile, so nothing decides it twice), since
    /// until it is durable the cluster may dial an address this node no longer serves.
    fn write_self_member(&mut self, ctx: &mut Context<Self>, at_start: bool) {
        let Some(me) = self.core.self_member_to_write() else {
            return;
        };
        let attempt = self.commit_own(OwnChange::SelfMember, me, 1);
        if at_start {
            ctx.wait(attempt);
        } else {
            ctx.spawn(attempt);
        }
    }

    fn hsm_id_of(&self, address: &str) -> String {
        self.core
            .members()
            .into_iter()
            .find(|m| m.address == address)
            .map(|m| m.hsm_id)
            .or_else(|| self.linked.get(address).cloned())
            .unwrap_or_else(|| address.to_string())
    }

    fn login(
        &mut self,
        conn: ConnId,
        username: String,
        role: Role,
        password: SecretString,
    ) -> Reply {
        let check = match self.core.begin_login(conn, &username, role) {
            Ok(check) => check,
            Err(e) => return reply(Err(e)),
        };
        self.logins.insert(conn);
        let verify = tokio::task::spawn_blocking(move || {
            password::verify(&check.password_hash, password.expose())
        });
        Box::pin(
            async move { verify.await.unwrap_or(false) }
                .into_actor(self)
                .then(move |ok, act, _| {
                    let (result, changed) = act.core.finish_login(&username, role, ok);
                    // The session opens only once the reset failure count is durable: a login
                    // answered with an error leaves no session behind.
                    let open = move |act: &mut NodeActor| match result {
                        Ok(_) if !act.logins.remove(&conn) => Response::Error(WireError::new(
                            ErrorCode::NotLoggedIn,
                            "the connection closed before its login finished",
                        )),
                        Ok(session) => {
                            let answer = Response::LoggedIn {
                                username: session.username.clone(),
                                role: session.role,
                            };
                            act.core.open_session(conn, session);
                            answer
                        }
                        Err(e) => {
                            act.logins.remove(&conn);
                            Response::Error(e)
                        }
                    };
                    match changed {
                        Some(changed) => act.commit_and(vec![changed], open),
                        None => reply(Ok(open(act))),
                    }
                }),
        )
    }

    /// Hashes a password off the actor, then applies `then` to the hash.
    fn with_hash(
        &mut self,
        password: SecretString,
        then: impl FnOnce(&mut NodeActor, String) -> Result<Stored, WireError> + 'static,
    ) -> Reply {
        let entropy = self.core.entropy();
        let hashing =
            tokio::task::spawn_blocking(move || password::hash_with(password.expose(), &*entropy));
        Box::pin(
            async move {
                hashing
                    .await
                    .map_err(internal)
                    .and_then(|r| r.map_err(internal))
            }
            .into_actor(self)
            .then(move |hash, act, _| match hash.and_then(|h| then(act, h)) {
                Ok(changed) => act.commit_then(vec![changed], Response::Ok),
                Err(e) => reply(Err(e)),
            }),
        )
    }

    fn generate(
        &mut self,
        conn: ConnId,
        label: String,
        length_bytes: u32,
        deadline_unix_millis: u64,
    ) -> Reply {
        let now = self.clock.now_millis();
        let stored = match self.core.generate_key(conn, &label, length_bytes, now) {
            Ok(s) => s,
            Err(e) => return reply(Err(e)),
        };
        let (ObjectId::Key(handle), Entry::Key(key)) = (&stored.id, &stored.entry) else {
            self.core.abandon(&[stored]);
            return reply(Err(internal("generated object is not a key")));
        };
        let (handle, attributes) = (*handle, key.attributes.clone());
        let quorum = self.core.quorum();
        let store = self.store.clone();
        let local = store.commit(vec![stored.clone()]);
        // The push runs beside the local commit, not after it: a new key's latency is then one
        // fsync, not two in a row. A key that reaches a peer but not this disk is rolled back
        // below, on the peers too.
        // Waiting for the quorum past the last moment the key could be acknowledged (the
        // caller's deadline less the margin) would only keep the caller waiting for a roll-back.
        let ack_by = deadline_unix_millis.saturating_sub(ACK_MARGIN_MILLIS);
        let within = Duration::from_millis(ack_by.saturating_sub(now));
        let mut pushes = self.push_until_linked(std::slice::from_ref(&stored), within);
        let need_remote = quorum.saturating_sub(1);
        let remote = async move {
            let mut acked = Vec::new();
            while acked.len() < need_remote {
                match pushes.next().await {
                    Some((address, Ok(()))) => acked.push(address),
                    Some((address, Err(e))) => {
                        tracing::debug!(peer = %address, error = %e, "key push not acknowledged")
                    }
                    None => break,
                }
            }
            // The other peers still get the key; nobody waits for them.
            actix::spawn(async move { while pushes.next().await.is_some() {} });
            acked
        };
        Box::pin(
            async move { futures::join!(local, remote) }
                .into_actor(self)
                .then(move |(local, acked), act, ctx| {
                    // Memory follows the disk: the key is installed if it is durable here, even
                    // if it is rolled back below.
                    match &local {
                        Ok(()) => act.install(vec![stored], ctx),
                        Err(_) => act.core.abandon(&[stored]),
                    }
                    // The core decides; the actor carries it out.
                    let observed = Observed {
                        local: local.map_err(|e| e.to_string()),
                        acked_remote: acked.len(),
                        quorum,
                        deadline_unix_millis,
                        now_millis: act.clock.now_millis(),
                    };
                    let (code, message) =
                        match end_of_generation(&observed, act.options.call_deadline) {
                            GenerationEnd::Acknowledge => {
                                let mut durable_on = vec![act.core.me().hsm_id.clone()];
                                durable_on.extend(acked.iter().map(|a| act.hsm_id_of(a)));
                                return reply(Ok(Response::KeyCreated {
                                    key: attributes,
                                    durable_on,
                                }));
                            }
                            GenerationEnd::RollBack { code, message } => (code, message),
                        };
                    tracing::warn!(handle, "{message}");
                    let tombstone = act.core.roll_back_key(handle);
                    let error = Response::Error(WireError::new(code, message));
                    // Peers that got the key hear of the roll-back even if this disk refuses it.
                    let mut pushes = act.push_all(std::slice::from_ref(&tombstone));
                    actix::spawn(async move { while pushes.next().await.is_some() {} });
                    Box::pin(
                        act.commit_own(OwnChange::RollBack, tombstone, 1)
                            .map(move |(), _, _| error),
                    ) as Reply
                }),
        )
    }

    /// One attempt at committing a change the node makes on its own, which no caller waits
    /// for but which must become durable; then what follows it ([`NodeActor::own_committed`]).
    fn commit_own(
        &mut self,
        change: OwnChange,
        stored: Stored,
        attempt: u32,
    ) -> impl ActorFuture<Self, Output = ()> {
        let commit = self.store.commit(vec![stored.clone()]);
        commit
            .into_actor(self)
            .map(move |result, act, ctx| act.own_committed(change, stored, result, attempt, ctx))
    }

    /// What follows an attempt at committing a change of the node's own: installed (and
    /// pushed) once durable; otherwise tried again with backoff, up to
    /// [`RETRIED_COMMIT_ATTEMPTS`] attempts. Meanwhile the change stays decided (`pending`), so
    /// no decision takes the object as it was on disk (a rolled-back key as live) or decides
    /// the change a second time; it is abandoned only after the last attempt.
    fn own_committed(
        &mut self,
        change: OwnChange,
        stored: Stored,
        result: Result<(), StoreError>,
        attempt: u32,
        ctx: &mut Context<Self>,
    ) {
        let object = format!("{:?}", stored.id);
        match result {
            Ok(()) => {
                if attempt > 1 {
                    tracing::info!(%object, attempt, "{} is durable at last", change.what());
                }
                // A roll-back was pushed before its first attempt, so peers hear of it even
                // if this disk refuses it; it is pushed again once durable after a retry, as
                // peers may have pulled the key from this disk meanwhile.
                if change == OwnChange::SelfMember || attempt > 1 {
                    let mut pushes = self.push_all(std::slice::from_ref(&stored));
                    actix::spawn(async move { while pushes.next().await.is_some() {} });
                }
                self.install(vec![stored], ctx);
            }
            Err(e) if attempt < RETRIED_COMMIT_ATTEMPTS => {
                let backoff = retry_backoff(attempt);
                tracing::warn!(%object, attempt, error = %e, ?backoff, "cannot persist {}; retrying", change.what());
                ctx.run_later(backoff, move |act, ctx| {
                    let next = act.commit_own(change, stored, attempt + 1);
                    ctx.spawn(next);
                });
            }
            Err(e) => {
                tracing::error!(%object, attempts = attempt, error = %e, "cannot persist {}; giving up", change.what());
                self.core.abandon(&[stored]);
            }
        }
    }

    fn delete(&mut self, conn: ConnId, handle: KeyHandle) -> Reply {
        let stored = match self.core.delete_key(conn, handle) {
            Ok(s) => s,
            Err(e) => return reply(Err(e)),
        };
        let local = self.store.commit(vec![stored.clone()]);
        let me = self.core.me().clone();
        // Persist, install, then push: a deletion this disk refused reaches no peer either.
        Box::pin(local.into_actor(self).then(move |local, act, ctx| {
            if let Err(e) = local {
                act.core.abandon(&[stored]);
                return reply(Ok(not_durable(e)));
            }
            let pushes = act.push_all(std::slice::from_ref(&stored));
            act.install(vec![stored], ctx);
            Box::pin(
                async move { pushes.collect::<Vec<_>>().await }
                    .into_actor(act)
                    .map(move |pushed, act, _| {
                        let mut outcomes = vec![NodeOutcome {
                            hsm_id: me.hsm_id.clone(),
                            success: true,
                            detail: "deleted".into(),
                        }];
                        let pushed: HashMap<String, Result<(), String>> =
                            pushed.into_iter().collect();
                        for member in act.core.members() {
                            if member.hsm_id == me.hsm_id {
                                continue;
                            }
                            let outcome = match pushed.get(&member.address) {
                                Some(Ok(())) => NodeOutcome {
                                    hsm_id: member.hsm_id,
                                    success: true,
                                    detail: "deleted".into(),
                                },
                                Some(Err(e)) => NodeOutcome {
                                    hsm_id: member.hsm_id,
                                    success: false,
                                    detail: format!(
                                    "not reached ({e}); it will sync the deletion when it rejoins"
                                ),
                                },
                                None => NodeOutcome {
                                    hsm_id: member.hsm_id,
                                    success: false,
                                    detail:
                                        "not connected; it will sync the deletion when it rejoins"
                                            .into(),
                                },
                            };
                            outcomes.push(outcome);
                        }
                        Response::KeyDeleted { handle, outcomes }
                    }),
            )
        }))
    }

    fn apply_objects(
        &mut self,
        objects: Vec<Object>,
    ) -> ResponseActFuture<Self, Result<usize, WireError>> {
        if objects.len() > MAX_OBJECTS_PER_CALL {
            return Box::pin(fut::ready(Err(WireError::new(
                ErrorCode::InvalidRequest,
                format!("at most {MAX_OBJECTS_PER_CALL} objects per call"),
            ))));
        }
        // Unwrap everything first: one bad object rejects the whole batch, changing nothing.
        let cluster_id = self.core.cluster_id().to_string();
        let unwrapped: Result<Vec<Stored>, WireError> = objects
            .into_iter()
            .map(|o| material::unwrap(o, &self.sync, Place::Wire, &cluster_id))
            .collect();
        let incoming = match unwrapped {
            Ok(v) => v,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        // Persist, then install: a copy that failed to reach the disk is not served either.
        let changed = self.core.winners(incoming);
        let count = changed.len();
        let touches_members = changed.iter().any(|s| matches!(s.id, ObjectId::Member(_)));
        let store = self.store.clone();
        let durable = changed.clone();
        Box::pin(
            async move { store.commit(changed).await }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    if let Err(e) = result {
                        act.core.abandon_remote(&durable);
                        return Err(internal(e));
                    }
                    act.core.install_remote(durable);
                    if touches_members {
                        act.membership_changed(ctx);
                    }
                    Ok(count)
                }),
        )
    }

    fn status(&self) -> NodeStatus {
        let me = self.core.me();
        let mut connected_peers: Vec<String> = self.linked.values().cloned().collect();
        connected_peers.sort();
        connected_peers.dedup();
        NodeStatus {
            hsm_id: me.hsm_id.clone(),
            cluster_id: self.core.cluster_id().to_string(),
            availability_zone: me.availability_zone.clone(),
            members: self.core.members(),
            connected_peers,
            key_count: self.core.key_count(),
            user_count: self.core.user_count(),
            storage_failing: self.store.failing(),
        }
    }
}

impl Actor for NodeActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        freeze_while_stalled(self.gate.clone(), ctx);
        self.write_self_member(ctx, true);
        self.sync_links(ctx);
        if self.rebuilding.is_some() {
            // The wait for peers that do not answer ends even if none of them ever does.
            let timer = ctx.run_interval(self.options.anti_entropy_interval, |act, ctx| {
                act.check_rebuild(ctx)
            });
            self.rebuild_timer = Some(timer);
        }
        tracing::info!(
            hsm_id = %self.core.me().hsm_id,
            keys = self.core.key_count(),
            members = self.core.members().len(),
            "HSM node started"
        );
    }
}

impl Handler<Call> for NodeActor {
    type Result = Reply;

    fn handle(&mut self, msg: Call, ctx: &mut Context<Self>) -> Reply {
        if self.gate.is_stalled() {
            // A stalled node holds the call and runs it (deadline check first) once it runs
            // again, before anything that queued meanwhile.
            let (answer, answered) = tokio::sync::oneshot::channel();
            after_stall(&self.gate, ctx, move |act, ctx| {
                let reply = act.call(msg, ctx);
                ctx.spawn(reply.map(move |response, _, _| {
                    let _ = answer.send(response);
                }));
            });
            return Box::pin(fut::wrap_future(async move {
                answered.await.unwrap_or_else(|_| {
                    Response::Error(internal("the node stopped before it ran the call"))
                })
            }));
        }
        self.call(msg, ctx)
    }
}

impl NodeActor {
    /// Runs a call: the deadline and access rules first, then the call itself.
    fn call(&mut self, msg: Call, ctx: &mut Context<Self>) -> Reply {
        let Call {
            conn,
            peer,
            deadline_unix_millis,
            request,
        } = msg;
        // The connection capped the deadline as the call came in; a stalled node reads it
        // only now, and refuses the call if it has passed meanwhile.
        if past(deadline_unix_millis, self.clock.now_millis()) {
            tracing::warn!(
                call = request.name(),
                "a call arrived after its deadline; not run"
            );
            return reply(Err(WireError::new(
                ErrorCode::DeadlineExceeded,
                format!("{} arrived after its caller's deadline", request.name()),
            )));
        }
        if self.rebuilding.is_some() && !peer {
            return reply(Err(WireError::new(
                ErrorCode::Rebuilding,
                "this HSM is rebuilding its store from its peers; try another HSM",
            )));
        }
        if request.is_peer_only() && !peer {
            return reply(Err(WireError::new(
                ErrorCode::PeerOnly,
                format!("{} is for HSM peers only", request.name()),
            )));
        }
        let core = &mut self.core;
        match request {
            Request::Login {
                username,
                role,
                password,
            } => self.login(conn, username, role, password),
            Request::Logout => reply(core.logout(conn).map(|()| Response::Ok)),
            Request::ListUsers => reply(core.list_users(conn).map(Response::Users)),
            Request::CreateUser {
                username,
                role,
                password,
            } => {
                if let Err(e) = core.check_create_user(conn, &username, password.expose().len()) {
                    return reply(Err(e));
                }
                self.with_hash(password, move |act, hash| {
                    // Checked again: another session may have created it meanwhile.
                    act.core.check_create_user(conn, &username, 7)?;
                    Ok(act.core.create_user(&username, role, hash))
                })
            }
            Request::DeleteUser { username } => match core.delete_user(conn, &username) {
                Ok(changed) => self.commit_then(changed, Response::Ok),
                Err(e) => reply(Err(e)),
            },
            Request::ChangePassword {
                username,
                role,
                new_password,
            } => {
                let len = new_password.expose().len();
                if let Err(e) = core.check_change_password(conn, &username, role, len) {
                    return reply(Err(e));
                }
                self.with_hash(new_password, move |act, hash| {
                    act.core.set_password(&username, hash)
                })
            }
            Request::GenerateAesKey {
                label,
                length_bytes,
            } => self.generate(conn, label, length_bytes, deadline_unix_millis),
            Request::FindKeys { label, owner } => reply(
                core.find_keys(conn, label.as_deref(), owner.as_deref())
                    .map(Response::Keys),
            ),
            Request::GetKeyAttributes { handle } => reply(
                core.visible_key(conn, handle)
                    .map(|k| Response::Key(k.attributes.clone())),
            ),
            Request::DeleteKey { handle } => self.delete(conn, handle),
            Request::Encrypt {
                handle,
                plaintext,
                aad,
            } => reply(check_size(plaintext.len()).and_then(|()| {
                core.usable_key(conn, handle)
                    .map(|k| Response::Ciphertext(k.sealer().seal(plaintext.expose(), &aad)))
            })),
            Request::Decrypt {
                handle,
                ciphertext,
                aad,
            } => reply(check_size(ciphertext.len()).and_then(|()| {
                let key = core.usable_key(conn, handle)?;
                key.sealer()
                    .open(&ciphertext, &aad)
                    .map(Response::Plaintext)
                    .map_err(|e| WireError::new(ErrorCode::DecryptionFailed, e.to_string()))
            })),
            Request::GenerateRandom { length } => {
                reply(core.random(conn, length).map(Response::Random))
            }
            Request::Status => reply(Ok(Response::Status(self.status()))),
            Request::Hello { member, cluster_id } => {
                let me = core.me().clone();
                let ours = core.cluster_id().to_string();
                if cluster_id != ours {
                    return reply(Err(WireError::new(
                        ErrorCode::InvalidRequest,
                        format!("this node belongs to cluster {ours}, not {cluster_id}"),
                    )));
                }
                if member.address != me.address
                    && !self.links.contains_key(&member.address)
                    && self.seeds.hello(&member.hsm_id, &member.address)
                {
                    self.sync_links(ctx);
                }
                // A peer says Hello as its link to this node comes up: changes it made while
                // that link was down (a password change right after it restarted, say) could
                // not be pushed here, so our link to it reconnects and pulls now rather than
                // at its next retry and round. Best effort: a full mailbox leaves it to those.
                if let Some(link) = self.links.get(&member.address) {
                    let _ = link.try_send(PullNow);
                }
                reply(Ok(Response::Hello {
                    member: me,
                    cluster_id: ours,
                }))
            }
            Request::Replicate { objects } => {
                Box::pin(self.apply_objects(objects).map(|r, _, _| {
                    r.map(|count| Response::Applied {
                        count: count as u32,
                    })
                    .unwrap_or_else(Response::Error)
                }))
            }
            Request::Digest => reply(Ok(Response::Digest {
                buckets: core.digest(),
            })),
            Request::ListEntries { buckets } => {
                if buckets.len() > DIGEST_BUCKETS
                    || buckets.iter().any(|b| *b as usize >= DIGEST_BUCKETS)
                {
                    return reply(Err(WireError::new(
                        ErrorCode::InvalidRequest,
                        "bucket out of range",
                    )));
                }
                reply(Ok(Response::Entries(core.entries(&buckets))))
            }
            Request::Fetch { ids } => {
                if ids.len() > MAX_OBJECTS_PER_CALL {
                    return reply(Err(WireError::new(
                        ErrorCode::InvalidRequest,
                        format!("at most {MAX_OBJECTS_PER_CALL} objects per call"),
                    )));
                }
                let objects = core.get_objects(&ids);
                reply(Ok(Response::Objects(self.wire(&objects))))
            }
            Request::Forget { hsm_id } => match core.forget_member(&hsm_id) {
                Ok(Some(tombstone)) => self.commit_then(vec![tombstone], Response::Ok),
                Ok(None) => reply(Ok(Response::Ok)),
                Err(e) => reply(Err(e)),
            },
        }
    }
}

fn check_size(len: usize) -> Result<(), WireError> {
    if len > MAX_CRYPTO_BYTES {
        return Err(WireError::new(
            ErrorCode::InvalidRequest,
            format!("at most {MAX_CRYPTO_BYTES} bytes per call"),
        ));
    }
    Ok(())
}

impl Handler<ConnClosed> for NodeActor {
    type Result = ();

    fn handle(&mut self, msg: ConnClosed, _: &mut Context<Self>) {
        self.logins.remove(&msg.0);
        let _ = self.core.logout(msg.0);
    }
}

impl Handler<LocalDigest> for NodeActor {
    type Result = MessageResult<LocalDigest>;

    fn handle(&mut self, _: LocalDigest, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.core.digest())
    }
}

impl Handler<Wanted> for NodeActor {
    type Result = MessageResult<Wanted>;

    fn handle(&mut self, msg: Wanted, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.core.wanted_from(&msg.0))
    }
}

impl Handler<ApplyPulled> for NodeActor {
    type Result = ResponseActFuture<Self, Result<usize, WireError>>;

    fn handle(&mut self, msg: ApplyPulled, _: &mut Context<Self>) -> Self::Result {
        self.apply_objects(msg.0)
    }
}

impl Handler<CaughtUp> for NodeActor {
    type Result = ();

    fn handle(&mut self, msg: CaughtUp, ctx: &mut Context<Self>) {
        if let Some(rebuild) = &mut self.rebuilding {
            tracing::info!(peer = %msg.address, keys = self.core.key_count(), "rebuilding: caught up with a peer");
            rebuild.caught_up(&msg.address);
            self.check_rebuild(ctx);
        }
    }
}

impl Handler<LinkState> for NodeActor {
    type Result = ();

    fn handle(&mut self, msg: LinkState, _: &mut Context<Self>) {
        match msg.hsm_id {
            Some(hsm_id) => {
                tracing::info!(peer = %hsm_id, address = %msg.address, "peer link up");
                self.linked.insert(msg.address, hsm_id);
            }
            None => {
                if let Some(hsm_id) = self.linked.remove(&msg.address) {
                    tracing::info!(peer = %hsm_id, address = %msg.address, "peer link down");
                }
            }
        }
    }
}

#[cfg(feature = "test-util")]
impl Handler<MaterialForTest> for NodeActor {
    type Result = Option<[u8; 32]>;

    fn handle(&mut self, msg: MaterialForTest, _: &mut Context<Self>) -> Self::Result {
        self.core.material_for_test(msg.0)
    }
}
