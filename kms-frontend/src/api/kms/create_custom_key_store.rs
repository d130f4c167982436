//! CreateCustomKeyStore: a DISCONNECTED store on an active cluster with two HSMs in two
//! Availability Zones; an identical request for an existing store is an idempotent retry.

use std::sync::Arc;

use serde_json::{json, Value};

use super::checks::*;
use crate::api::types::*;
use crate::frontend::Frontend;
use crate::key_stores::persist;
use crate::service::connection_state::ConnectionState;
use crate::service::error::KmsError;
use crate::service::model::KeyStoreRecord;

pub(super) async fn handle(
    fe: &Arc<Frontend>,
    req: CreateCustomKeyStoreRequest,
) -> Result<Value, KmsError> {
    let name = required(req.custom_key_store_name, "customKeyStoreName")?;
    check_name(&name)?;
    match req.custom_key_store_type.as_deref() {
        None | Some("AWS_CLOUDHSM") => {}
        Some("EXTERNAL_KEY_STORE") => {
            return Err(KmsError::UnsupportedOperation("hsmkms does not support external key stores.".into()))
        }
        Some(other) => {
            return Err(KmsError::Validation(format!(
                "1 validation error detected: Value '{other}' at 'customKeyStoreType' failed to satisfy constraint: Member must satisfy enum value set: [EXTERNAL_KEY_STORE, AWS_CLOUDHSM]"
            )))
        }
    }
    let cluster_id = required(req.cloud_hsm_cluster_id, "cloudHsmClusterId")?;
    let trust_anchor = required(req.trust_anchor_certificate, "trustAnchorCertificate")?;
    let password = required(req.key_store_password, "keyStorePassword")?;
    check_password(password.expose())?;
    // Names are unique: creations and renames take turns.
    let _names = fe.store_names.lock().await;
    // An identical request for an existing disconnected store is an idempotent retry.
    {
        let reg = fe.registry();
        if let Some(existing) = reg.store_by_name(&name) {
            let same = existing.cluster_id == cluster_id
                && same_certificate(&existing.trust_anchor, &trust_anchor)
                && existing.state == ConnectionState::Disconnected
                && reg
                    .passwords(existing)
                    .map(|(p, _)| p.ct_eq(password.expose()))
                    .unwrap_or(false);
            if same {
                return Ok(json!({"CustomKeyStoreId": existing.id}));
            }
            return Err(KmsError::store_name_in_use(&name));
        }
        reg.check_store_quota()?;
    }
    let cluster = check_cluster(fe, &cluster_id, None)?;
    if !same_certificate(&cluster.trust_anchor, &trust_anchor) {
        return Err(KmsError::IncorrectTrustAnchor(format!(
            "The trust anchor certificate does not match the trust anchor of AWS CloudHSM cluster {cluster_id}."
        )));
    }
    let id = new_store_id(fe.entropy.as_ref());
    let record = KeyStoreRecord {
        wrapped_password: fe.registry().wrap_password(&id, &password),
        wrapped_pending_password: None,
        id: id.clone(),
        name,
        cluster_id,
        trust_anchor,
        state: ConnectionState::Disconnected,
        created_at_millis: fe.now(),
    };
    persist(fe, record).await?;
    Ok(json!({"CustomKeyStoreId": id}))
}
