//! KeyMetadata, as DescribeKey, CreateKey and the other key answers give it.

use crate::api::types::*;
use crate::frontend::epoch_seconds;
use crate::service::key_spec::{self, KeySpec};
use crate::service::key_state;
use crate::service::model::{KeyOrigin, KeyRecord};
use crate::service::registry::Registry;

/// A key's metadata, as DescribeKey and CreateKey return it.
pub fn metadata(registry: &Registry, record: &KeyRecord) -> KeyMetadata {
    let state = registry.state_of(record);
    let (spec, usage) = (record.spec(), record.usage());
    let algorithms = key_spec::algorithms(spec, usage);
    let multi_region = registry.multi_region_view(&record.key_id);
    let (store, cluster) = match &record.origin {
        KeyOrigin::CloudHsm {
            custom_key_store_id,
            cluster_id,
            ..
        } => (Some(custom_key_store_id.clone()), Some(cluster_id.clone())),
        _ => (None, None),
    };
    KeyMetadata {
        aws_account_id: registry.account_of(&record.key_id).to_string(),
        key_id: registry.key_id_text(&record.key_id),
        arn: registry.key_arn(&record.key_id),
        creation_date: epoch_seconds(record.created_at_millis),
        enabled: state == key_state::KeyState::Enabled,
        description: record.description.clone(),
        key_usage: usage.as_str(),
        key_state: state.as_str(),
        // A primary key waiting for its replicas' deletion has no date yet.
        deletion_date: record
            .deletion
            .filter(|_| state != key_state::KeyState::PendingReplicaDeletion)
            .map(|d| epoch_seconds(d.deletion_date_millis)),
        pending_deletion_window_in_days: record.deletion.map(|d| d.window_days),
        origin: record.origin.as_str(),
        valid_to: record
            .imported()
            .and_then(|m| m.valid_to_millis)
            .map(epoch_seconds),
        expiration_model: record.imported().map(|m| {
            if m.valid_to_millis.is_some() {
                "KEY_MATERIAL_EXPIRES"
            } else {
                "KEY_MATERIAL_DOES_NOT_EXPIRE"
            }
        }),
        custom_key_store_id: store,
        cloud_hsm_cluster_id: cluster,
        key_manager: "CUSTOMER",
        customer_master_key_spec: spec.customer_master_key_spec(),
        key_spec: spec.as_str(),
        encryption_algorithms: some(algorithms.encryption),
        signing_algorithms: some(algorithms.signing),
        mac_algorithms: some(algorithms.mac),
        key_agreement_algorithms: some(algorithms.key_agreement),
        encapsulation_algorithms: some(algorithms.encapsulation),
        multi_region: multi_region.is_some(),
        multi_region_configuration: multi_region.map(|v| MultiRegionConfiguration {
            multi_region_key_type: if v.primary { "PRIMARY" } else { "REPLICA" },
            primary_key: MultiRegionKey {
                arn: v.primary_key.0,
                region: v.primary_key.1,
            },
            replica_keys: v
                .replica_keys
                .into_iter()
                .map(|(arn, region)| MultiRegionKey { arn, region })
                .collect(),
        }),
        current_key_material_id: (spec == KeySpec::SymmetricDefault && !record.pending_import())
            .then(|| {
                registry.material_id(&record.key_id, registry.current_material(&record.key_id))
            }),
    }
}

/// A list KMS reports only when it has members.
pub fn some(list: Vec<&'static str>) -> Option<Vec<&'static str>> {
    (!list.is_empty()).then_some(list)
}
