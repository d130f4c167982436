//! The frontend's shared state and the flows that span the registry, the store, the audit trail
//! and the cluster: what the API handlers call. One `Frontend` serves every HTTP worker.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use hsmkms_common::clock::Clock;
use hsmkms_common::keyfile;
use hsmkms_common::secret::KeyMaterial;
use serde_json::{json, Value};

use crate::audit::{Audit, Metrics};
use crate::cloudhsm::CloudHsm;
use crate::cluster::{ClusterDirectory, Provisioner};
use crate::hsm::HsmGateway;
use crate::service::clock::{EmulatorClock, OFFSET_KEY};
use crate::service::error::KmsError;
use crate::service::key_ref::Arns;
use crate::service::model::KeyOrigin;
use crate::service::registry::Registry;
use crate::store::{decode, Store, Write};

/// Where the frontend keeps its files, inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";
pub const STORE_FILE: &str = "kms.redb";
pub const AUDIT_FILE: &str = "audit.jsonl";
pub const EVENTS_FILE: &str = "events.jsonl";

/// How the frontend is set up.
#[derive(Debug, Clone)]
pub struct FrontendOptions {
    /// The frontend's own directory (the launcher uses `<data-dir>/kms`).
    pub dir: PathBuf,
    pub region: String,
    pub account_id: String,
    /// Runs the HSMs of the CloudHSM service.
    pub provisioner: Arc<dyn Provisioner>,
    pub base_clock: Arc<dyn Clock>,
}

/// Everything the API handlers share.
#[derive(Debug)]
pub struct Frontend {
    registry: RwLock<Registry>,
    pub store: Store,
    pub clock: Arc<EmulatorClock>,
    pub audit: Audit,
    pub metrics: Metrics,
    /// The CloudHSM service, which is also the cluster directory KMS uses.
    pub clusters: Arc<CloudHsm>,
    pub hsm: HsmGateway,
    pub arns: Arns,
    events: Audit,
    deletions: tokio::sync::Mutex<()>,
}

/// ISO 8601 time of a millisecond timestamp, as CloudTrail writes `eventTime`.
pub fn iso8601(millis: u64) -> String {
    chrono::DateTime::from_timestamp_millis(millis as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Epoch seconds (fractional), as the KMS JSON protocol writes timestamps.
pub fn epoch_seconds(millis: u64) -> f64 {
    millis as f64 / 1000.0
}

fn master_key(dir: &Path) -> Result<KeyMaterial> {
    let path = dir.join(MASTER_KEY_FILE);
    if !path.exists() {
        keyfile::write_secret(&path, KeyMaterial::generate().expose())
            .with_context(|| format!("creating {}", path.display()))?;
    }
    Ok(keyfile::read_key(&path)?)
}

impl Frontend {
    /// Opens the frontend's state in `options.dir`; returns it and the storage thread.
    pub fn open(options: FrontendOptions) -> Result<(Arc<Self>, JoinHandle<()>)> {
        std::fs::create_dir_all(&options.dir)
            .with_context(|| format!("creating {}", options.dir.display()))?;
        let master = master_key(&options.dir)?;
        let (store, loaded, thread) = Store::open(&options.dir.join(STORE_FILE))?;
        let arns = Arns {
            region: options.region.clone(),
            account_id: options.account_id.clone(),
        };
        let registry = Registry::load(arns.clone(), &master, &loaded)?;
        let offset = loaded
            .meta
            .iter()
            .find(|(k, _)| k == OFFSET_KEY)
            .map(|(_, v)| decode::<u64>(v))
            .transpose()?
            .unwrap_or(0);
        let clock = Arc::new(EmulatorClock::new(options.base_clock.clone(), offset));
        let (cloudhsm, adopted) = CloudHsm::open(
            options.provisioner.clone(),
            store.clone(),
            &loaded,
            clock.clone(),
            &options.region,
        )?;
        // Clusters the launcher made before the service knew them; recorded before serving.
        futures::executor::block_on(store.commit(adopted))
            .context("recording the launcher's clusters")?;
        let clusters = Arc::new(cloudhsm);
        let directory: Arc<dyn ClusterDirectory> = clusters.clone();
        let frontend = Arc::new(Self {
            registry: RwLock::new(registry),
            store,
            clock,
            audit: Audit::open(&options.dir.join(AUDIT_FILE))?,
            metrics: Metrics::default(),
            hsm: HsmGateway::new(directory),
            clusters,
            arns,
            events: Audit::open(&options.dir.join(EVENTS_FILE))?,
            deletions: tokio::sync::Mutex::new(()),
        });
        Ok((frontend, thread))
    }

    /// Reads the registry. Never held across an await.
    pub fn registry(&self) -> RwLockReadGuard<'_, Registry> {
        // A panic while holding the lock would be a bug; the data is still consistent (every
        // change is applied whole), so carry on with it.
        self.registry.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the registry. Never held across an await.
    pub fn registry_mut(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes writes durable; an acknowledged change must have passed here.
    pub async fn commit(&self, writes: Vec<Write>) -> Result<(), KmsError> {
        self.store
            .commit(writes)
            .await
            .map_err(|e| KmsError::KmsInternal(format!("The change could not be stored: {e}")))
    }

    pub fn now(&self) -> u64 {
        self.clock.now_millis()
    }

    /// Service events (`KMS CMK Deletion`), newest last.
    pub fn events(&self, limit: usize) -> Vec<Value> {
        self.events.read(None, limit)
    }

    /// Deletes every key whose waiting period has ended: the KMS key and its aliases first
    /// (durably), then a best-effort delete of the backing key on every HSM of its cluster.
    /// Each deletion is recorded (CloudTrail `DeleteKey`) and announced (`KMS CMK Deletion`).
    pub async fn run_due_deletions(&self) -> usize {
        // One run at a time: the timer and a clock advance may both ask.
        let _running = self.deletions.lock().await;
        let due = self.registry().due_for_deletion(self.now());
        let mut done = 0;
        for id in due {
            let (record, aliases, writes) = self.registry_mut().delete_key(&id);
            let Some(record) = record else { continue };
            if let Err(e) = self.commit(writes).await {
                tracing::error!(key_id = %id, error = %e, "cannot record a key deletion; retrying later");
                // Put it back so the next run retries; nothing was acknowledged.
                let _ = self.registry_mut().insert_key(record);
                continue;
            }
            let arn = self.arns.key_arn(&id);
            let mut additional = json!({});
            if let KeyOrigin::CloudHsm {
                custom_key_store_id,
                cluster_id,
                backing_key,
            } = &record.origin
            {
                let statuses = self
                    .hsm
                    .delete_backing_key(custom_key_store_id, cluster_id, backing_key.key_handle)
                    .await;
                let backing = json!([{"keyHandle": backing_key.key_handle.to_string(), "backingKeyId": backing_key.backing_key_id}]);
                let status: Vec<Value> = statuses
                    .iter()
                    .map(|(hsm_id, ok)| {
                        json!({
                            "keyHandle": backing_key.key_handle.to_string(),
                            "backingKeyId": backing_key.backing_key_id,
                            "hsmId": hsm_id,
                            "deletionStatus": if *ok { "SUCCESS" } else { "FAILURE" },
                        })
                    })
                    .collect();
                additional = json!({
                    "customKeyStoreId": custom_key_store_id,
                    "clusterId": cluster_id,
                    "backingKeys": backing.to_string(),
                    "backingKeysDeletionStatus": Value::Array(status).to_string(),
                });
            }
            let now = iso8601(self.now());
            self.audit.record(
                &self.metrics,
                json!({
                    "eventVersion": "1.08",
                    "eventSource": "kms.amazonaws.com",
                    "eventType": "AwsServiceEvent",
                    "eventName": "DeleteKey",
                    "eventTime": now,
                    "userIdentity": {"accountId": self.arns.account_id, "invokedBy": "AWS Internal"},
                    "requestParameters": null,
                    "responseElements": {"keyId": arn},
                    "resources": [{"ARN": arn, "type": "AWS::KMS::Key"}],
                    "additionalEventData": additional,
                    "deletedAliases": aliases,
                }),
            );
            {
                self.events.record(
                    &self.metrics,
                    json!({
                        "version": "0",
                        "id": uuid::Uuid::new_v4().to_string(),
                        "detail-type": "KMS CMK Deletion",
                        "source": "aws.kms",
                        "account": self.arns.account_id,
                        "time": now,
                        "region": self.arns.region,
                        "resources": [arn],
                        "detail": {"key-id": id.to_string()},
                    }),
                );
            }
            self.metrics.count_deletion();
            tracing::info!(key_id = %id, "KMS key deleted at the end of its waiting period");
            done += 1;
        }
        done
    }
}
