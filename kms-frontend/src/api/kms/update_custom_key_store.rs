//! UpdateCustomKeyStore: name, kmsuser password or a related cluster, while DISCONNECTED.

use std::sync::Arc;

use serde_json::{json, Value};

use super::checks::*;
use crate::api::types::*;
use crate::cluster::ClusterDirectory;
use crate::frontend::Frontend;
use crate::key_stores::persist;
use crate::service::connection_state::ConnectionOp;
use crate::service::error::KmsError;

pub(super) async fn handle(
    fe: &Arc<Frontend>,
    req: UpdateCustomKeyStoreRequest,
) -> Result<Value, KmsError> {
    let store_id = required(req.custom_key_store_id, "customKeyStoreId")?;
    let _names = match req.new_custom_key_store_name {
        Some(_) => Some(fe.store_names.lock().await),
        None => None,
    };
    let owner = fe.store_owner(&store_id).await?;
    let record = fe.registry().store(&store_id)?.clone();
    let changes_secret = req.key_store_password.is_some() || req.cloud_hsm_cluster_id.is_some();
    let op = if changes_secret {
        ConnectionOp::UpdatePasswordOrCluster
    } else {
        ConnectionOp::UpdateName
    };
    record.state.apply(op, &store_id)?;
    let mut updated = record.clone();
    if let Some(name) = req.new_custom_key_store_name {
        check_name(&name)?;
        if fe
            .registry()
            .store_by_name(&name)
            .is_some_and(|s| s.id != store_id)
        {
            return Err(KmsError::store_name_in_use(&name));
        }
        updated.name = name;
    }
    if let Some(password) = req.key_store_password {
        check_password(password.expose())?;
        updated.wrapped_password = fe.registry().wrap_password(&store_id, &password);
        updated.wrapped_pending_password = None;
    }
    if let Some(cluster_id) = req.cloud_hsm_cluster_id {
        if cluster_id != record.cluster_id {
            let new = check_cluster(fe, &cluster_id, Some(&store_id))?;
            let related = fe
                .clusters
                .cluster(&record.cluster_id)
                .map(|old| same_certificate(&old.trust_anchor, &new.trust_anchor))
                .unwrap_or_else(|| same_certificate(&record.trust_anchor, &new.trust_anchor));
            if !related {
                return Err(KmsError::CloudHsmClusterNotRelated(format!(
                    "AWS CloudHSM cluster {cluster_id} is not related to {}: it does not share its backup history.",
                    record.cluster_id
                )));
            }
            updated.cluster_id = cluster_id;
        }
    }
    persist(fe, updated).await?;
    drop(owner);
    Ok(json!({}))
}
