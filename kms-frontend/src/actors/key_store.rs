//! One actor per custom key store: it owns the store's kmsuser sessions (one per HSM), opens
//! and closes them in generation order, logs in again on HSMs that come back, and runs crypto
//! calls on an HSM (any active one, failing over to the next), as KMS sends them to the
//! cluster.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use hsmkms_common::client::{ClientError, NodeClient};
use hsmkms_common::secret::SecretString;
use hsmkms_common::wire::{ErrorCode, Request, Response, Role};

use crate::cluster::ClusterDirectory;
use crate::faults::{EniError, Faults};
use crate::service::connect::{decide_logins, LoginAnswer, Opened};
use crate::service::connection_state::ConnectionErrorCode;
use crate::service::error::KmsError;

/// Deadline of every call to an HSM.
pub const HSM_DEADLINE: Duration = Duration::from_secs(5);
/// Slack for an actor's own work on top of the HSM calls it waits for.
pub const ACTOR_MARGIN: Duration = Duration::from_secs(2);
/// Longest a crypto call of a key store key may take: one HSM that does not answer, then the
/// next; past it the caller gets DependencyTimeoutException.
pub const RUN_DEADLINE: Duration = Duration::from_secs(12);
/// Longest opening (or closing) a store's sessions may take: connecting to and logging in on
/// each HSM, and the USER_LOGGED_IN check.
pub const OPEN_DEADLINE: Duration = Duration::from_secs(40);
/// The crypto user KMS logs in as.
pub const KMSUSER: &str = "kmsuser";

/// A logged-in kmsuser session on one HSM.
#[derive(Debug, Clone)]
struct Session {
    hsm_id: String,
    client: Arc<NodeClient>,
}

impl Session {
    /// One call on the session; on a network path that is cut (fault injection) the
    /// connection is gone, as a dropped link leaves it.
    async fn call(
        &self,
        faults: &Faults,
        request: Request,
        deadline: Duration,
    ) -> Result<Response, ClientError> {
        if faults.is_cut(&self.hsm_id) {
            return Err(ClientError::Closed {
                addr: self.client.addr().to_string(),
            });
        }
        self.client.call(request, deadline).await
    }
}

/// Connects to an HSM, unless the frontend's network path to it is cut (fault injection):
/// then the connection is refused, as by a firewall between KMS and the cluster's subnets.
async fn connect_to(
    faults: &Faults,
    hsm_id: &str,
    address: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<NodeClient, ClientError> {
    if faults.is_cut(hsm_id) {
        return Err(ClientError::Connect {
            addr: address.to_string(),
            reason: "the network path to the HSM is cut".into(),
        });
    }
    NodeClient::connect(address, tls, HSM_DEADLINE).await
}

fn hsm_error(e: ClientError) -> KmsError {
    match e {
        ClientError::Remote(w) if w.code == ErrorCode::KeyNotFound => {
            KmsError::key_material_missing()
        }
        ClientError::Remote(w) if w.code == ErrorCode::DecryptionFailed => {
            KmsError::invalid_ciphertext()
        }
        ClientError::Remote(w) => KmsError::KmsInternal(format!(
            "The CloudHSM cluster refused the call: {}",
            w.message
        )),
        _ => KmsError::cluster_unreachable(),
    }
}

/// Whether an error means "try another HSM": it did not answer, or it is rebuilding.
fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Remote(w) => w.code == ErrorCode::Rebuilding,
        _ => true,
    }
}

// ---- the actor ------------------------------------------------------------------------

/// Opens kmsuser sessions on every active HSM and checks nobody else is logged in as kmsuser.
/// `generation` orders it against [`Close`]: an open older than the last close is refused, so a
/// slow connect can never reopen sessions after a disconnect overtook it.
#[derive(Debug, Message)]
#[rtype(result = "Result<Opened, ConnectionErrorCode>")]
pub(super) struct Open {
    pub(super) generation: u64,
    pub(super) cluster_id: String,
    pub(super) password: SecretString,
    pub(super) pending: Option<SecretString>,
}

/// Changes the kmsuser password (from a logged-in session of `generation`).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), KmsError>")]
pub(super) struct Rotate {
    pub(super) generation: u64,
    pub(super) password: SecretString,
}

/// Logs out and forgets every session opened at or before `generation`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(super) struct Close {
    pub(super) generation: u64,
}

/// Builds a request afresh for each attempt (requests hold secrets, which are not `Clone`).
pub(super) type MakeRequest = Box<dyn Fn() -> Request + Send>;

/// Runs one request on an HSM, failing over between sessions. Answers the outcome, and
/// whether an earlier attempt failed after it may have reached its HSM (a timeout or a closed
/// connection), so the request may have run there too.
#[derive(Message)]
#[rtype(result = "(Result<(String, Response), KmsError>, bool)")]
pub(super) struct Run(pub(super) MakeRequest);

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Run(..)")
    }
}

/// Stops the actor: its store was deleted.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(super) struct Stop;

/// Whether a connect logged the store in (and no close ended it since).
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub(super) struct LoggedIn;

/// Which HSMs the store has sessions on.
#[derive(Debug, Message)]
#[rtype(result = "Vec<String>")]
pub(super) struct SessionHsms;

/// How often a connected store logs in again on active HSMs it has no session on (an HSM that
/// restarted, or one whose session timed out and was set aside).
pub const RELOGIN_INTERVAL: Duration = Duration::from_secs(1);

/// The sessions of one custom key store.
#[derive(Debug)]
pub struct KeyStoreActor {
    clusters: Arc<dyn ClusterDirectory>,
    /// The emulated network between KMS and the clusters (and its faults).
    faults: Arc<Faults>,
    sessions: Vec<Session>,
    next: usize,
    /// The newest generation an [`Open`] or [`Close`] carried.
    generation: u64,
    /// While connected: the cluster and the kmsuser password, to log in again on HSMs that
    /// restarted (the CloudHSM client reconnects by itself; the store stays CONNECTED).
    login: Option<(String, SecretString)>,
    /// A background re-login is running.
    relogging: bool,
    /// HSMs whose session timed out: only the background re-login tries them again.
    suspect: Vec<String>,
}

impl KeyStoreActor {
    /// A store's actor before its first connect: no sessions.
    pub fn new(clusters: Arc<dyn ClusterDirectory>, faults: Arc<Faults>) -> Self {
        Self {
            clusters,
            faults,
            sessions: Vec::new(),
            next: 0,
            generation: 0,
            login: None,
            relogging: false,
            suspect: Vec::new(),
        }
    }
}

impl Actor for KeyStoreActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        ctx.run_interval(RELOGIN_INTERVAL, |act, ctx| act.relogin_missing(ctx));
    }
}

/// Messages a key store actor queues before senders wait.
pub const MAILBOX_CAPACITY: usize = 4_096;

impl KeyStoreActor {
    /// Logs in, in the background, on active HSMs that have no live session. Sessions whose
    /// connection closed are dropped first.
    fn relogin_missing(&mut self, ctx: &mut Context<Self>) {
        // A session whose network path is cut is dropped (its connection closes with it).
        let faults = self.faults.clone();
        self.sessions
            .retain(|s| !s.client.is_closed() && !faults.is_cut(&s.hsm_id));
        if self.relogging {
            return;
        }
        let Some(plan) = self.relogin_plan(&[]) else {
            return;
        };
        self.relogging = true;
        let generation = self.generation;
        ctx.spawn(
            log_in_again(plan)
                .into_actor(self)
                .map(move |fresh, act, _| {
                    act.relogging = false;
                    act.adopt(generation, fresh);
                }),
        );
    }

    /// What logging in again takes: the active HSMs with no live session (less `skip`), the
    /// TLS configuration, the password. `None` when not connected or nothing is missing.
    fn relogin_plan(&self, skip: &[String]) -> Option<Relogin> {
        let (cluster_id, password) = self.login.as_ref()?;
        let cluster = self.clusters.cluster(cluster_id)?;
        let have: Vec<&str> = self
            .sessions
            .iter()
            .filter(|s| !s.client.is_closed())
            .map(|s| s.hsm_id.as_str())
            .collect();
        let missing: Vec<(String, String)> = cluster
            .active_hsms()
            .into_iter()
            .filter(|h| !have.contains(&h.hsm_id.as_str()) && !skip.contains(&h.hsm_id))
            .map(|h| (h.hsm_id.clone(), h.address.clone()))
            .collect();
        if missing.is_empty() {
            return None;
        }
        Some(Relogin {
            missing,
            tls: self.clusters.client_tls(cluster_id)?,
            password: password.duplicate(),
            faults: self.faults.clone(),
        })
    }

    /// Takes sessions logged in again, if the connection they were made for still stands.
    fn adopt(&mut self, generation: u64, fresh: Vec<Session>) {
        // Only into the sessions it was started for: a close meanwhile ends them.
        if self.generation != generation || self.login.is_none() {
            return;
        }
        self.sessions.retain(|s| !s.client.is_closed());
        for s in fresh {
            self.suspect.retain(|h| *h != s.hsm_id);
            if !self.sessions.iter().any(|have| have.hsm_id == s.hsm_id) {
                tracing::info!(hsm_id = %s.hsm_id, "logged in to the HSM again");
                self.sessions.push(s);
            }
        }
    }
}

/// HSMs to log in to again, and how.
struct Relogin {
    missing: Vec<(String, String)>,
    tls: Arc<rustls::ClientConfig>,
    password: SecretString,
    faults: Arc<Faults>,
}

/// Connects and logs in as kmsuser on each HSM of `plan`; returns the sessions that worked.
async fn log_in_again(plan: Relogin) -> Vec<Session> {
    let mut fresh = Vec::new();
    for (hsm_id, address) in plan.missing {
        let one = async {
            let client = connect_to(&plan.faults, &hsm_id, &address, plan.tls.clone()).await?;
            login(&client, &plan.password).await?;
            Ok::<_, ClientError>(client)
        };
        match one.await {
            Ok(client) => fresh.push(Session {
                hsm_id,
                client: Arc::new(client),
            }),
            Err(e) => tracing::debug!(%hsm_id, error = %e, "cannot log in to the HSM again yet"),
        }
    }
    fresh
}

async fn login(client: &NodeClient, password: &SecretString) -> Result<(), ClientError> {
    client
        .call(
            Request::Login {
                username: KMSUSER.into(),
                role: Role::CryptoUser,
                password: password.duplicate(),
            },
            HSM_DEADLINE,
        )
        .await
        .map(|_| ())
}

fn connection_error(e: &ClientError) -> ConnectionErrorCode {
    match e {
        ClientError::Remote(w) => match w.code {
            ErrorCode::UserNotFound => ConnectionErrorCode::UserNotFound,
            ErrorCode::InvalidCredentials => ConnectionErrorCode::InvalidCredentials,
            ErrorCode::UserLockedOut => ConnectionErrorCode::UserLockedOut,
            _ => ConnectionErrorCode::InternalError,
        },
        _ => ConnectionErrorCode::NetworkErrors,
    }
}

/// Connects to every active HSM and logs in as kmsuser where the password works (see
/// [`decide_logins`]); HSMs left out are logged in later by the background re-login.
async fn open_sessions(
    clusters: Arc<dyn ClusterDirectory>,
    faults: Arc<Faults>,
    msg: Open,
) -> Result<(Vec<Session>, Opened), ConnectionErrorCode> {
    let cluster = clusters
        .cluster(&msg.cluster_id)
        .ok_or(ConnectionErrorCode::ClusterNotFound)?;
    let tls = clusters
        .client_tls(&msg.cluster_id)
        .ok_or(ConnectionErrorCode::ClusterNotFound)?;
    let active = cluster.active_hsms();
    if active.is_empty() {
        return Err(ConnectionErrorCode::InsufficientCloudHsmHsms);
    }
    // KMS reaches the HSMs through a network interface of its own in each of the cluster's
    // subnets: no subnet, or no free address in one, and there is no interface.
    faults
        .create_enis(cluster.subnet_mapping.iter().map(|(_, s)| s.as_str()))
        .map_err(|e| {
            tracing::warn!(cluster_id = %msg.cluster_id, error = ?e, "cannot create KMS's network interface");
            match e {
                EniError::SubnetNotFound(_) => ConnectionErrorCode::SubnetNotFound,
                EniError::NoFreeAddress(_) => ConnectionErrorCode::InsufficientFreeAddressesInSubnet,
            }
        })?;
    let connects = active.iter().map(|hsm| {
        let tls = tls.clone();
        let faults = faults.clone();
        async move {
            connect_to(&faults, &hsm.hsm_id, &hsm.address, tls)
                .await
                .ok()
                .map(|c| (hsm.hsm_id.clone(), Arc::new(c)))
        }
    });
    let clients: Vec<(String, Arc<NodeClient>)> = futures::future::join_all(connects)
        .await
        .into_iter()
        .flatten()
        .collect();
    // An HSM rebuilding its store serves nobody yet: left out, logged in later in the
    // background like one that did not answer.
    let mut serving = Vec::new();
    for (hsm_id, client) in clients {
        match client.call(Request::Status, HSM_DEADLINE).await {
            Err(ClientError::Remote(w)) if w.code == ErrorCode::Rebuilding => {
                tracing::info!(%hsm_id, "HSM rebuilding; connecting without it for now")
            }
            _ => serving.push((hsm_id, client)),
        }
    }
    if serving.is_empty() {
        return Err(ConnectionErrorCode::NetworkErrors);
    }
    // Every HSM at once (each checks the password on its own): with the password KMS holds,
    // or, if it refuses that as wrong, the one a rotation was about to set when it was
    // interrupted.
    let answers = futures::future::join_all(
        serving
            .iter()
            .map(|(_, client)| log_in_with_either(client, &msg.password, msg.pending.as_ref())),
    )
    .await;
    let logins = decide_logins(&answers)?;
    let mut clients = Vec::new();
    let mut others = Vec::new();
    for (i, ((hsm_id, client), answer)) in serving.into_iter().zip(&answers).enumerate() {
        if logins.keep.contains(&i) {
            clients.push((hsm_id, client));
            continue;
        }
        // Behind on a password change (it refused the password another HSM took, or took
        // the older one), or not answering: connected without it for now; the background
        // re-login logs in there once it has caught up.
        match answer {
            LoginAnswer::Unreachable => {
                tracing::info!(%hsm_id, "HSM did not answer the login; connecting without it for now")
            }
            LoginAnswer::Refused(code) => tracing::warn!(
                %hsm_id,
                code = code.as_str(),
                "HSM refused the kmsuser password another HSM took (behind on a password change?); connecting without it for now"
            ),
            LoginAnswer::Current | LoginAnswer::Pending => {
                tracing::warn!(%hsm_id, "HSM still holds kmsuser's older password; connecting without it for now");
                others.push(client);
            }
        }
    }
    futures::future::join_all(others.iter().map(|c| c.call(Request::Logout, HSM_DEADLINE))).await;
    let password = match (logins.pending, msg.pending) {
        (true, Some(pending)) => pending,
        _ => msg.password,
    };
    // kmsuser logged in anywhere else stops KMS from connecting (USER_LOGGED_IN).
    for (_, c) in &clients {
        if let Ok(Response::Users(users)) = c.call(Request::ListUsers, HSM_DEADLINE).await {
            if users
                .iter()
                .any(|u| u.username == KMSUSER && u.sessions > 1)
            {
                for (_, c) in &clients {
                    let _ = c.call(Request::Logout, HSM_DEADLINE).await;
                }
                return Err(ConnectionErrorCode::UserLoggedIn);
            }
        }
    }
    let sessions = clients
        .into_iter()
        .map(|(hsm_id, client)| Session { hsm_id, client })
        .collect();
    Ok((
        sessions,
        Opened {
            password,
            pending: logins.pending,
            in_step: logins.in_step,
        },
    ))
}

/// Logs in as kmsuser with `password`, or, if the HSM refuses it as wrong, with `pending`;
/// answers which worked, or why neither did.
async fn log_in_with_either(
    client: &NodeClient,
    password: &SecretString,
    pending: Option<&SecretString>,
) -> LoginAnswer {
    let refused = |e: &ClientError| match e {
        ClientError::Remote(_) => LoginAnswer::Refused(connection_error(e)),
        _ => LoginAnswer::Unreachable,
    };
    match login(client, password).await {
        Ok(()) => LoginAnswer::Current,
        Err(e) => match (connection_error(&e), pending) {
            (ConnectionErrorCode::InvalidCredentials, Some(pending)) => {
                match login(client, pending).await {
                    Ok(()) => LoginAnswer::Pending,
                    Err(e) => refused(&e),
                }
            }
            _ => refused(&e),
        },
    }
}

async fn logout_all(sessions: Vec<Session>) {
    futures::future::join_all(
        sessions
            .iter()
            .map(|s| s.client.call(Request::Logout, HSM_DEADLINE)),
    )
    .await;
}

impl Handler<Open> for KeyStoreActor {
    type Result = AtomicResponse<Self, Result<Opened, ConnectionErrorCode>>;

    fn handle(&mut self, msg: Open, _: &mut Context<Self>) -> Self::Result {
        if msg.generation < self.generation {
            // A disconnect (or a newer connect) overtook this one.
            return AtomicResponse::new(Box::pin(fut::ready(Err(
                ConnectionErrorCode::InternalError,
            ))));
        }
        self.generation = msg.generation;
        let old = std::mem::take(&mut self.sessions);
        self.login = None;
        self.suspect.clear();
        let cluster_id = msg.cluster_id.clone();
        let clusters = self.clusters.clone();
        let faults = self.faults.clone();
        AtomicResponse::new(Box::pin(
            async move {
                logout_all(old).await;
                open_sessions(clusters, faults, msg).await
            }
            .into_actor(self)
            .map(|r, act, _| {
                r.map(|(sessions, opened)| {
                    act.sessions = sessions;
                    act.login = Some((cluster_id, opened.password.duplicate()));
                    opened
                })
            }),
        ))
    }
}

impl Handler<Rotate> for KeyStoreActor {
    type Result = AtomicResponse<Self, Result<(), KmsError>>;

    fn handle(&mut self, msg: Rotate, _: &mut Context<Self>) -> Self::Result {
        let first = self
            .sessions
            .first()
            .cloned()
            .filter(|_| msg.generation == self.generation && self.login.is_some());
        let new_password = msg.password.duplicate();
        let faults = self.faults.clone();
        AtomicResponse::new(Box::pin(
            async move {
                let session = first.ok_or_else(KmsError::cluster_unreachable)?;
                session
                    .call(
                        &faults,
                        Request::ChangePassword {
                            username: KMSUSER.into(),
                            role: Role::CryptoUser,
                            new_password: msg.password,
                        },
                        HSM_DEADLINE,
                    )
                    .await
                    .map(|_| ())
                    .map_err(hsm_error)
            }
            .into_actor(self)
            .map(move |r, act, _| {
                if r.is_ok() {
                    if let Some((_, password)) = act.login.as_mut() {
                        *password = new_password;
                    }
                }
                r
            }),
        ))
    }
}

impl Handler<Close> for KeyStoreActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Close, _: &mut Context<Self>) -> Self::Result {
        if msg.generation < self.generation {
            return AtomicResponse::new(Box::pin(fut::ready(())));
        }
        self.generation = msg.generation;
        let sessions = std::mem::take(&mut self.sessions);
        self.login = None;
        self.suspect.clear();
        AtomicResponse::new(Box::pin(logout_all(sessions).into_actor(self)))
    }
}

impl Handler<LoggedIn> for KeyStoreActor {
    type Result = bool;

    fn handle(&mut self, _: LoggedIn, _: &mut Context<Self>) -> bool {
        self.login.is_some()
    }
}

impl Handler<Stop> for KeyStoreActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<SessionHsms> for KeyStoreActor {
    type Result = MessageResult<SessionHsms>;

    fn handle(&mut self, _: SessionHsms, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.sessions.iter().map(|s| s.hsm_id.clone()).collect())
    }
}

/// What one round over the sessions found: the answer (or the error), and the HSMs whose
/// session did not answer in time, to be set aside until they are logged in again.
struct Round {
    answer: Result<(String, Response), (bool, KmsError)>,
    timed_out: Vec<String>,
    /// An attempt failed in a way that leaves open whether it ran.
    uncertain: bool,
}

/// Tries a request on each session in turn; the first answer wins, a refusal ends the round.
async fn try_sessions(faults: &Faults, order: &[Session], make: &MakeRequest) -> Round {
    let mut last = None;
    let mut timed_out = Vec::new();
    let mut uncertain = false;
    for session in order {
        match session.call(faults, make(), HSM_DEADLINE).await {
            Ok(r) => {
                return Round {
                    answer: Ok((session.hsm_id.clone(), r)),
                    timed_out,
                    uncertain,
                }
            }
            Err(e) if retryable(&e) => {
                tracing::warn!(hsm_id = %session.hsm_id, error = %e, "HSM unreachable; trying the next");
                if matches!(e, ClientError::Timeout { .. }) {
                    timed_out.push(session.hsm_id.clone());
                }
                uncertain = true;
                last = Some(hsm_error(e));
            }
            Err(e) => {
                // An HSM (or its connection) that answers DeadlineExceeded may have run the
                // call: a key generation it answers so is reconciled like one that timed out.
                let late =
                    matches!(&e, ClientError::Remote(w) if w.code == ErrorCode::DeadlineExceeded);
                return Round {
                    answer: Err((false, hsm_error(e))),
                    timed_out,
                    uncertain: uncertain || late,
                };
            }
        }
    }
    Round {
        answer: Err((true, last.unwrap_or_else(KmsError::cluster_unreachable))),
        timed_out,
        uncertain,
    }
}

impl Handler<Run> for KeyStoreActor {
    type Result = ResponseActFuture<Self, (Result<(String, Response), KmsError>, bool)>;

    fn handle(&mut self, msg: Run, _: &mut Context<Self>) -> Self::Result {
        // Spread calls over the HSMs, as the CloudHSM client load-balances.
        let mut order = self.sessions.clone();
        if !order.is_empty() {
            self.next = (self.next + 1) % order.len();
            order.rotate_left(self.next);
        }
        // If no session answers because every one was closed (the HSMs restarted), log in
        // again at once and try once more; HSMs that timed out are left to the background.
        let make = std::rc::Rc::new(msg.0);
        let again = make.clone();
        let faults = self.faults.clone();
        Box::pin(
            async move { try_sessions(&faults, &order, &make).await }
                .into_actor(self)
                .then(move |first, act, _| -> RunRound {
                    act.set_aside(&first.timed_out);
                    let all_closed =
                        matches!(first.answer, Err((true, _))) && first.timed_out.is_empty();
                    let plan = if all_closed {
                        act.relogin_plan(&act.suspect)
                    } else {
                        None
                    };
                    let Some(plan) = plan else {
                        return Box::pin(fut::ready(first));
                    };
                    let generation = act.generation;
                    let faults_again = act.faults.clone();
                    Box::pin(
                        async move {
                            let fresh = log_in_again(plan).await;
                            let mut second = try_sessions(&faults_again, &fresh, &again).await;
                            second.uncertain |= first.uncertain;
                            (second, fresh)
                        }
                        .into_actor(act)
                        .map(move |(second, fresh), act, _| {
                            act.set_aside(&second.timed_out);
                            act.adopt(generation, fresh);
                            second
                        }),
                    )
                })
                .map(|round, _, _| (round.answer.map_err(|(_, e)| e), round.uncertain)),
        )
    }
}

/// A round over the sessions, as the actor runs it.
type RunRound = std::pin::Pin<Box<dyn ActorFuture<KeyStoreActor, Output = Round>>>;

impl KeyStoreActor {
    /// Sets aside sessions that timed out: the background re-login opens a new one once their
    /// HSM answers again, so the next call does not wait on them too.
    fn set_aside(&mut self, timed_out: &[String]) {
        if !timed_out.is_empty() {
            self.sessions.retain(|s| !timed_out.contains(&s.hsm_id));
            for hsm in timed_out {
                if !self.suspect.contains(hsm) {
                    self.suspect.push(hsm.clone());
                }
            }
        }
    }
}
