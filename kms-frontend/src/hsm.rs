//! The frontend's side of the cluster: one actor per custom key store that owns the store's
//! kmsuser sessions (one per HSM), and the gateway that routes calls to them. Crypto calls for
//! key store keys run on an HSM (any active one, failing over to the next), as KMS sends them
//! to the cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use hsmkms_common::client::{ClientError, NodeClient};
use hsmkms_common::secret::{SecretBytes, SecretString};
use hsmkms_common::wire::{ErrorCode, Request, Response, Role};
use rand::distributions::{Alphanumeric, DistString};

use crate::cluster::ClusterDirectory;
use crate::service::connection_state::ConnectionErrorCode;
use crate::service::error::KmsError;

/// Deadline of every call to an HSM.
pub const HSM_DEADLINE: Duration = Duration::from_secs(10);
/// The crypto user KMS logs in as.
pub const KMSUSER: &str = "kmsuser";

/// A logged-in kmsuser session on one HSM.
#[derive(Debug, Clone)]
struct Session {
    hsm_id: String,
    client: Arc<NodeClient>,
}

/// A new random kmsuser password: 32 letters and digits, as KMS sets on every connect.
pub fn new_password() -> String {
    Alphanumeric.sample_string(&mut rand::rngs::OsRng, 32)
}

fn unreachable_cluster() -> KmsError {
    KmsError::KmsInvalidState(
        "KMS cannot communicate with your CloudHSM cluster. This might be a transient network issue. \
         If you see this error repeatedly, verify that the Network ACLs and the security group rules \
         for the VPC of your AWS CloudHSM cluster are correct."
            .into(),
    )
}

fn hsm_error(e: ClientError) -> KmsError {
    match e {
        ClientError::Remote(w) if w.code == ErrorCode::KeyNotFound => KmsError::KmsInvalidState(
            "The key material for this KMS key is not in the associated AWS CloudHSM cluster."
                .into(),
        ),
        ClientError::Remote(w) if w.code == ErrorCode::DecryptionFailed => {
            KmsError::InvalidCiphertext("The ciphertext failed authentication.".into())
        }
        ClientError::Remote(w) => KmsError::KmsInternal(format!(
            "The CloudHSM cluster refused the call: {}",
            w.message
        )),
        _ => unreachable_cluster(),
    }
}

/// Whether an error means "try another HSM".
fn retryable(e: &ClientError) -> bool {
    !matches!(e, ClientError::Remote(_))
}

// ---- the actor ------------------------------------------------------------------------

/// Opens kmsuser sessions on every active HSM and checks nobody else is logged in as kmsuser.
#[derive(Debug, Message)]
#[rtype(result = "Result<String, ConnectionErrorCode>")]
struct Open {
    cluster_id: String,
    password: SecretString,
    pending: Option<SecretString>,
}

/// Changes the kmsuser password (from a logged-in session).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), KmsError>")]
struct Rotate(SecretString);

/// Logs out and forgets every session.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Close;

/// Builds a request afresh for each attempt (requests hold secrets, which are not `Clone`).
type MakeRequest = Box<dyn Fn() -> Request + Send>;

/// Runs one request on an HSM, failing over between sessions.
#[derive(Message)]
#[rtype(result = "Result<(String, Response), KmsError>")]
struct Run(MakeRequest);

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Run(..)")
    }
}

/// Which HSMs the store has sessions on.
#[derive(Debug, Message)]
#[rtype(result = "Vec<String>")]
struct SessionHsms;

/// The sessions of one custom key store.
#[derive(Debug)]
pub struct KeyStoreActor {
    clusters: Arc<dyn ClusterDirectory>,
    sessions: Vec<Session>,
    next: usize,
    /// While connected: the cluster and the kmsuser password, to log in again on HSMs that
    /// restarted (the CloudHSM client reconnects by itself; the store stays CONNECTED).
    login: Option<(String, SecretString)>,
}

impl Actor for KeyStoreActor {
    type Context = Context<Self>;
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

async fn open_sessions(
    clusters: Arc<dyn ClusterDirectory>,
    msg: Open,
) -> Result<(Vec<Session>, String), ConnectionErrorCode> {
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
    let mut clients = Vec::new();
    for hsm in active {
        if let Ok(c) = NodeClient::connect(&hsm.address, tls.clone(), HSM_DEADLINE).await {
            clients.push((hsm.hsm_id.clone(), Arc::new(c)));
        }
    }
    let Some((_, first)) = clients.first() else {
        return Err(ConnectionErrorCode::NetworkErrors);
    };
    // The password KMS holds, or the one a rotation was about to set when it was interrupted.
    let mut password = msg.password;
    if let Err(e) = login(first, &password).await {
        let retry_pending = matches!(
            connection_error(&e),
            ConnectionErrorCode::InvalidCredentials
        );
        match (retry_pending, msg.pending) {
            (true, Some(pending)) => {
                login(first, &pending)
                    .await
                    .map_err(|e| connection_error(&e))?;
                password = pending;
            }
            _ => return Err(connection_error(&e)),
        }
    }
    for (_, c) in clients.iter().skip(1) {
        login(c, &password)
            .await
            .map_err(|e| connection_error(&e))?;
    }
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
    Ok((sessions, password.expose().to_string()))
}

impl Handler<Open> for KeyStoreActor {
    type Result = ResponseActFuture<Self, Result<String, ConnectionErrorCode>>;

    fn handle(&mut self, msg: Open, _: &mut Context<Self>) -> Self::Result {
        self.sessions.clear();
        self.login = None;
        let cluster_id = msg.cluster_id.clone();
        Box::pin(
            open_sessions(self.clusters.clone(), msg)
                .into_actor(self)
                .map(|r, act, _| {
                    r.map(|(sessions, password)| {
                        act.sessions = sessions;
                        act.login = Some((cluster_id, SecretString::new(password.as_str())));
                        password
                    })
                }),
        )
    }
}

impl Handler<Rotate> for KeyStoreActor {
    type Result = ResponseActFuture<Self, Result<(), KmsError>>;

    fn handle(&mut self, msg: Rotate, _: &mut Context<Self>) -> Self::Result {
        let first = self.sessions.first().cloned();
        let new_password = msg.0.duplicate();
        Box::pin(
            async move {
                let session = first.ok_or_else(unreachable_cluster)?;
                session
                    .client
                    .call(
                        Request::ChangePassword {
                            username: KMSUSER.into(),
                            role: Role::CryptoUser,
                            new_password: msg.0,
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
        )
    }
}

impl Handler<Close> for KeyStoreActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Close, _: &mut Context<Self>) -> Self::Result {
        let sessions = std::mem::take(&mut self.sessions);
        self.login = None;
        Box::pin(async move {
            for s in sessions {
                let _ = s.client.call(Request::Logout, HSM_DEADLINE).await;
            }
        })
    }
}

impl Handler<SessionHsms> for KeyStoreActor {
    type Result = MessageResult<SessionHsms>;

    fn handle(&mut self, _: SessionHsms, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.sessions.iter().map(|s| s.hsm_id.clone()).collect())
    }
}

/// Tries a request on each session in turn; the first answer wins, a refusal ends the round.
async fn try_sessions(
    order: &[Session],
    make: &MakeRequest,
) -> Result<(String, Response), (bool, KmsError)> {
    let mut last = unreachable_cluster();
    for session in order {
        match session.client.call(make(), HSM_DEADLINE).await {
            Ok(r) => return Ok((session.hsm_id.clone(), r)),
            Err(e) if retryable(&e) => {
                tracing::warn!(hsm_id = %session.hsm_id, error = %e, "HSM unreachable; trying the next");
                last = hsm_error(e);
            }
            Err(e) => return Err((false, hsm_error(e))),
        }
    }
    Err((true, last))
}

/// Logs in again on every active HSM that answers (after HSMs restarted).
async fn relogin(
    clusters: Arc<dyn ClusterDirectory>,
    cluster_id: &str,
    password: &SecretString,
) -> Vec<Session> {
    let (Some(cluster), Some(tls)) = (
        clusters.cluster(cluster_id),
        clusters.client_tls(cluster_id),
    ) else {
        return vec![];
    };
    let mut sessions = Vec::new();
    for hsm in cluster.active_hsms() {
        let attempt = async {
            let client = NodeClient::connect(&hsm.address, tls.clone(), HSM_DEADLINE).await?;
            login(&client, password).await?;
            Ok::<_, ClientError>(client)
        };
        match attempt.await {
            Ok(client) => sessions.push(Session {
                hsm_id: hsm.hsm_id.clone(),
                client: Arc::new(client),
            }),
            Err(e) => {
                tracing::warn!(hsm_id = %hsm.hsm_id, error = %e, "cannot log in to the HSM again")
            }
        }
    }
    tracing::info!(
        sessions = sessions.len(),
        "logged in to the cluster's HSMs again"
    );
    sessions
}

impl Handler<Run> for KeyStoreActor {
    type Result = ResponseActFuture<Self, Result<(String, Response), KmsError>>;

    fn handle(&mut self, msg: Run, _: &mut Context<Self>) -> Self::Result {
        // Spread calls over the HSMs, as the CloudHSM client load-balances.
        let mut order = self.sessions.clone();
        if !order.is_empty() {
            self.next = (self.next + 1) % order.len();
            order.rotate_left(self.next);
        }
        let login = self
            .login
            .as_ref()
            .map(|(cluster, password)| (cluster.clone(), password.duplicate()));
        let clusters = self.clusters.clone();
        Box::pin(
            async move {
                let make = msg.0;
                match try_sessions(&order, &make).await {
                    Ok(answer) => (Ok(answer), None),
                    // Every session is gone: the HSMs may have restarted. Log in again once.
                    Err((true, e)) => match login {
                        Some((cluster_id, password)) => {
                            let fresh = relogin(clusters, &cluster_id, &password).await;
                            if fresh.is_empty() {
                                return (Err(e), None);
                            }
                            let answer = try_sessions(&fresh, &make).await.map_err(|(_, e)| e);
                            (answer, Some(fresh))
                        }
                        None => (Err(e), None),
                    },
                    Err((false, e)) => (Err(e), None),
                }
            }
            .into_actor(self)
            .map(|(answer, fresh), act, _| {
                // Only while still connected: a Close meanwhile cleared the login.
                if let (Some(fresh), true) = (fresh, act.login.is_some()) {
                    act.sessions = fresh;
                }
                answer
            }),
        )
    }
}

// ---- the gateway ----------------------------------------------------------------------

/// Routes calls to the key store actors.
#[derive(Debug)]
pub struct HsmGateway {
    clusters: Arc<dyn ClusterDirectory>,
    actors: Mutex<HashMap<String, Addr<KeyStoreActor>>>,
}

fn mailbox(e: MailboxError) -> KmsError {
    KmsError::KmsInternal(format!("The key store connection is not answering: {e}"))
}

impl HsmGateway {
    pub fn new(clusters: Arc<dyn ClusterDirectory>) -> Self {
        Self {
            clusters,
            actors: Mutex::new(HashMap::new()),
        }
    }

    fn actor(&self, store_id: &str) -> Addr<KeyStoreActor> {
        let mut actors = self.actors.lock().unwrap_or_else(|e| e.into_inner());
        actors
            .entry(store_id.to_string())
            .or_insert_with(|| {
                KeyStoreActor {
                    clusters: self.clusters.clone(),
                    sessions: Vec::new(),
                    next: 0,
                    login: None,
                }
                .start()
            })
            .clone()
    }

    /// Logs kmsuser in on every active HSM. Returns the password that worked.
    pub async fn open(
        &self,
        store_id: &str,
        cluster_id: &str,
        password: String,
        pending: Option<String>,
    ) -> Result<String, ConnectionErrorCode> {
        self.actor(store_id)
            .send(Open {
                cluster_id: cluster_id.to_string(),
                password: SecretString::new(password),
                pending: pending.map(SecretString::new),
            })
            .await
            .unwrap_or(Err(ConnectionErrorCode::InternalError))
    }

    pub async fn rotate(&self, store_id: &str, new_password: &str) -> Result<(), KmsError> {
        self.actor(store_id)
            .send(Rotate(SecretString::new(new_password)))
            .await
            .map_err(mailbox)?
    }

    pub async fn close(&self, store_id: &str) {
        let _ = self.actor(store_id).send(Close).await;
    }

    async fn run(
        &self,
        store_id: &str,
        make: impl Fn() -> Request + Send + 'static,
    ) -> Result<(String, Response), KmsError> {
        self.actor(store_id)
            .send(Run(Box::new(make)))
            .await
            .map_err(mailbox)?
    }

    /// Generates the backing key of a new KMS key: AES-256, owned by kmsuser, labelled with
    /// the key's ARN. Returns its handle.
    pub async fn generate_key(&self, store_id: &str, label: &str) -> Result<u64, KmsError> {
        let label = label.to_string();
        let make = move || Request::GenerateAesKey {
            label: label.clone(),
            length_bytes: 32,
        };
        match self.run(store_id, make).await? {
            (_, Response::KeyCreated { key, .. }) => Ok(key.handle),
            (_, other) => Err(KmsError::KmsInternal(format!(
                "unexpected answer from the HSM: {other:?}"
            ))),
        }
    }

    pub async fn encrypt(
        &self,
        store_id: &str,
        handle: u64,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, KmsError> {
        let (plaintext, aad) = (zeroize::Zeroizing::new(plaintext.to_vec()), aad.to_vec());
        let make = move || Request::Encrypt {
            handle,
            plaintext: SecretBytes::new(plaintext.to_vec()),
            aad: aad.clone(),
        };
        match self.run(store_id, make).await? {
            (_, Response::Ciphertext(c)) => Ok(c),
            (_, other) => Err(KmsError::KmsInternal(format!(
                "unexpected answer from the HSM: {other:?}"
            ))),
        }
    }

    pub async fn decrypt(
        &self,
        store_id: &str,
        handle: u64,
        sealed: &[u8],
        aad: &[u8],
    ) -> Result<SecretBytes, KmsError> {
        let (sealed, aad) = (sealed.to_vec(), aad.to_vec());
        let make = move || Request::Decrypt {
            handle,
            ciphertext: sealed.clone(),
            aad: aad.clone(),
        };
        match self.run(store_id, make).await? {
            (_, Response::Plaintext(p)) => Ok(p),
            (_, other) => Err(KmsError::KmsInternal(format!(
                "unexpected answer from the HSM: {other:?}"
            ))),
        }
    }

    pub async fn random(&self, store_id: &str, length: u32) -> Result<SecretBytes, KmsError> {
        match self
            .run(store_id, move || Request::GenerateRandom { length })
            .await?
        {
            (_, Response::Random(r)) => Ok(r),
            (_, other) => Err(KmsError::KmsInternal(format!(
                "unexpected answer from the HSM: {other:?}"
            ))),
        }
    }

    /// Best-effort delete of a backing key: with the store's session if it has one, else it
    /// fails on every HSM and the material stays (orphaned). Returns the outcome per HSM.
    pub async fn delete_backing_key(
        &self,
        store_id: &str,
        cluster_id: &str,
        handle: u64,
    ) -> Vec<(String, bool)> {
        let all_hsms: Vec<String> = self
            .clusters
            .cluster(cluster_id)
            .map(|c| c.hsms.iter().map(|h| h.hsm_id.clone()).collect())
            .unwrap_or_default();
        let connected = self
            .actor(store_id)
            .send(SessionHsms)
            .await
            .unwrap_or_default();
        if connected.is_empty() {
            return all_hsms.into_iter().map(|h| (h, false)).collect();
        }
        match self
            .run(store_id, move || Request::DeleteKey { handle })
            .await
        {
            Ok((_, Response::KeyDeleted { outcomes, .. })) => outcomes
                .into_iter()
                .map(|o| (o.hsm_id, o.success))
                .collect(),
            _ => all_hsms.into_iter().map(|h| (h, false)).collect(),
        }
    }
}
