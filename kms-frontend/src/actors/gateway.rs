//! The gateway to the key store actors: it finds (or starts) a store's actor and sends it each
//! call with a deadline, turning a late answer into DependencyTimeoutException.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use hsmkms_common::secret::{SecretBytes, SecretString};
use hsmkms_common::wire::{Request, Response};

use super::key_store::*;
use crate::cluster::ClusterDirectory;
use crate::faults::Faults;
use crate::service::connect::Opened;
use crate::service::connection_state::ConnectionErrorCode;
use crate::service::error::KmsError;

/// Routes calls to the key store actors.
#[derive(Debug)]
pub struct HsmGateway {
    clusters: Arc<dyn ClusterDirectory>,
    faults: Arc<Faults>,
    actors: Mutex<HashMap<String, Addr<KeyStoreActor>>>,
}

fn mailbox(e: MailboxError) -> KmsError {
    match e {
        // The cluster did not answer within the request's deadline.
        MailboxError::Timeout => KmsError::dependency_timeout(),
        MailboxError::Closed => {
            KmsError::KmsInternal("The key store connection is not answering.".into())
        }
    }
}

impl HsmGateway {
    pub fn new(clusters: Arc<dyn ClusterDirectory>, faults: Arc<Faults>) -> Self {
        Self {
            clusters,
            faults,
            actors: Mutex::new(HashMap::new()),
        }
    }

    /// The store's actor, started if it has none: only a connect starts one, so the map holds
    /// only stores that connected since the start and still exist.
    fn actor_to_connect(&self, store_id: &str) -> Addr<KeyStoreActor> {
        let mut actors = self.actors.lock().unwrap_or_else(|e| e.into_inner());
        actors
            .entry(store_id.to_string())
            .or_insert_with(|| {
                KeyStoreActor::new(self.clusters.clone(), self.faults.clone()).start()
            })
            .clone()
    }

    /// The store's actor if it has one. A store without one has no sessions, so every other
    /// call is answered as for a store with none, without starting an actor for it (a store
    /// that was deleted meanwhile, say).
    fn actor(&self, store_id: &str) -> Option<Addr<KeyStoreActor>> {
        self.actors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(store_id)
            .cloned()
    }

    /// Stops a deleted store's actor (its timers would otherwise keep it running), so the map
    /// and the running actors are only those of stores that exist.
    pub fn forget(&self, store_id: &str) {
        let removed = self
            .actors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(store_id);
        if let Some(addr) = removed {
            // Nothing to wait for: a deleted store has no sessions left to close.
            addr.do_send(Stop);
        }
    }

    /// Logs kmsuser in on every active HSM (generation `generation` of the store's
    /// connection). Answers the password that worked, and whether every HSM took it.
    pub async fn open(
        &self,
        store_id: &str,
        generation: u64,
        cluster_id: &str,
        password: SecretString,
        pending: Option<SecretString>,
    ) -> Result<Opened, ConnectionErrorCode> {
        self.actor_to_connect(store_id)
            .send(Open {
                generation,
                cluster_id: cluster_id.to_string(),
                password,
                pending,
            })
            .timeout(OPEN_DEADLINE)
            .await
            .unwrap_or(Err(ConnectionErrorCode::InternalError))
    }

    /// Changes kmsuser's password through the sessions of `generation`.
    pub async fn rotate(
        &self,
        store_id: &str,
        generation: u64,
        password: SecretString,
    ) -> Result<(), KmsError> {
        let actor = self
            .actor(store_id)
            .ok_or_else(KmsError::cluster_unreachable)?;
        actor
            .send(Rotate {
                generation,
                password,
            })
            .timeout(HSM_DEADLINE + ACTOR_MARGIN)
            .await
            .map_err(mailbox)?
    }

    /// Whether the store's sessions are open: its connect logged in, and no disconnect has
    /// closed them since (HSMs may still come and go underneath).
    pub async fn logged_in(&self, store_id: &str) -> bool {
        match self.actor(store_id) {
            Some(actor) => actor
                .send(LoggedIn)
                .timeout(ACTOR_MARGIN)
                .await
                .unwrap_or(true),
            None => false,
        }
    }

    /// Logs out every session opened at or before `generation`.
    pub async fn close(&self, store_id: &str, generation: u64) {
        if let Some(actor) = self.actor(store_id) {
            let _ = actor
                .send(Close { generation })
                .timeout(OPEN_DEADLINE)
                .await;
        }
    }

    /// The HSMs the store has a kmsuser session on now (none if it has no actor), for the
    /// backing-key report and tests.
    pub async fn session_hsms(&self, store_id: &str) -> Vec<String> {
        match self.actor(store_id) {
            Some(actor) => actor
                .send(SessionHsms)
                .timeout(ACTOR_MARGIN)
                .await
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// Runs a request on one of the store's HSMs; also answers whether an earlier attempt may
    /// have run somewhere too (see [`Run`]).
    async fn run_uncertain(
        &self,
        store_id: &str,
        make: impl Fn() -> Request + Send + 'static,
    ) -> (Result<(String, Response), KmsError>, bool) {
        let Some(actor) = self.actor(store_id) else {
            return (Err(KmsError::cluster_unreachable()), false);
        };
        match actor.send(Run(Box::new(make))).timeout(RUN_DEADLINE).await {
            Ok(outcome) => outcome,
            // Gave up waiting: what was sent may still run.
            Err(e) => (Err(mailbox(e)), true),
        }
    }

    async fn run(
        &self,
        store_id: &str,
        make: impl Fn() -> Request + Send + 'static,
    ) -> Result<(String, Response), KmsError> {
        self.run_uncertain(store_id, make).await.0
    }

    /// Generates the backing key of a new KMS key: AES-256, owned by kmsuser, labelled with
    /// the key's ARN. Returns its handle (or the error), and whether an attempt that failed may
    /// have made a key too (an HSM that stopped answering, or left, after it got the call): then
    /// the caller reconciles the label ([`HsmGateway::reconcile`]).
    pub async fn generate_key(&self, store_id: &str, label: &str) -> (Result<u64, KmsError>, bool) {
        let label = label.to_string();
        let make = move || Request::GenerateAesKey {
            label: label.clone(),
            length_bytes: 32,
        };
        let (answer, uncertain) = self.run_uncertain(store_id, make).await;
        let handle = match answer {
            Ok((_, Response::KeyCreated { key, .. })) => Ok(key.handle),
            Ok((_, other)) => Err(KmsError::KmsInternal(format!(
                "unexpected answer from the HSM: {other:?}"
            ))),
            Err(e) => Err(e),
        };
        (handle, uncertain)
    }

    /// Deletes every kmsuser key object labelled `label` but the one KMS keeps (`keep`; none
    /// when the creation failed): the second key a generation that timed out or lost its HSM
    /// may have left. Returns how many it deleted.
    pub async fn reconcile(&self, store_id: &str, label: &str, keep: Option<u64>) -> usize {
        let wanted = label.to_string();
        let found = self
            .run(store_id, move || Request::FindKeys {
                label: Some(wanted.clone()),
                owner: Some(KMSUSER.into()),
            })
            .await;
        let Ok((_, Response::Keys(keys))) = found else {
            return 0;
        };
        let mut deleted = 0;
        for key in keys.into_iter().filter(|k| Some(k.handle) != keep) {
            let handle = key.handle;
            if self
                .run(store_id, move || Request::DeleteKey { handle })
                .await
                .is_ok()
            {
                tracing::warn!(%handle, label, "deleted a second backing key an interrupted generation left");
                deleted += 1;
            }
        }
        deleted
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
        let connected = self.session_hsms(store_id).await;
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
