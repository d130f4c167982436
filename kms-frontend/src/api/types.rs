//! The KMS API's JSON shapes (AWS JSON 1.1), named exactly as AWS names them. Required members
//! are `Option`s here so a missing one gets KMS's own validation message rather than a generic
//! parse error; [`required`] checks them.

use std::collections::BTreeMap;

use hsmkms_common::secret::SecretString;
use serde::{Deserialize, Serialize};

use crate::service::error::KmsError;

/// Checks that a required member is present.
pub fn required<T>(value: Option<T>, member: &str) -> Result<T, KmsError> {
    value.ok_or_else(|| {
        KmsError::Validation(format!(
            "1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"
        ))
    })
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    pub tag_key: Option<String>,
    pub tag_value: Option<String>,
}

/// Reads a tag list into pairs, checking required members.
pub fn tag_pairs(tags: Option<Vec<Tag>>) -> Result<Vec<(String, String)>, KmsError> {
    tags.unwrap_or_default()
        .into_iter()
        .map(|t| {
            Ok((
                required(t.tag_key, "tagKey")?,
                required(t.tag_value, "tagValue")?,
            ))
        })
        .collect()
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateKeyRequest {
    pub policy: Option<String>,
    pub description: Option<String>,
    pub key_usage: Option<String>,
    pub key_spec: Option<String>,
    pub customer_master_key_spec: Option<String>,
    pub origin: Option<String>,
    pub custom_key_store_id: Option<String>,
    pub bypass_policy_lockout_safety_check: Option<bool>,
    pub tags: Option<Vec<Tag>>,
    pub multi_region: Option<bool>,
    pub xks_key_id: Option<String>,
}

/// A multi-Region key's primary and replicas, as KeyMetadata gives them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MultiRegionConfiguration {
    pub multi_region_key_type: &'static str,
    pub primary_key: MultiRegionKey,
    pub replica_keys: Vec<MultiRegionKey>,
}

/// One key of a multi-Region family.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MultiRegionKey {
    pub arn: String,
    pub region: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadata {
    #[serde(rename = "AWSAccountId")]
    pub aws_account_id: String,
    pub key_id: String,
    pub arn: String,
    pub creation_date: f64,
    pub enabled: bool,
    pub description: String,
    pub key_usage: &'static str,
    pub key_state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_deletion_window_in_days: Option<u32>,
    pub origin: &'static str,
    /// EXTERNAL keys with material: when it expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration_model: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_key_store_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_hsm_cluster_id: Option<String>,
    pub key_manager: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_master_key_spec: Option<&'static str>,
    pub key_spec: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_algorithms: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_algorithms: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac_algorithms: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_agreement_algorithms: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encapsulation_algorithms: Option<Vec<&'static str>>,
    pub multi_region: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multi_region_configuration: Option<MultiRegionConfiguration>,
    /// Symmetric encryption keys only, as AWS reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_key_material_id: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadataResponse {
    pub key_metadata: KeyMetadata,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteImportedKeyMaterialRequest {
    pub key_id: Option<String>,
    pub key_material_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyIdRequest {
    pub key_id: Option<String>,
    pub grant_tokens: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListRequest {
    pub key_id: Option<String>,
    pub limit: Option<i64>,
    pub marker: Option<String>,
    /// ListKeys's filter: checked as the model says.
    pub resource_owners: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyListEntry {
    pub key_id: String,
    pub key_arn: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeysResponse {
    pub keys: Vec<KeyListEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
    pub truncated: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateKeyDescriptionRequest {
    pub key_id: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduleKeyDeletionRequest {
    pub key_id: Option<String>,
    pub pending_window_in_days: Option<i64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduleKeyDeletionResponse {
    pub key_id: String,
    /// Absent for a multi-Region primary key that still has replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<f64>,
    pub key_state: &'static str,
    pub pending_window_in_days: u32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyIdResponse {
    pub key_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyPolicyRequest {
    pub key_id: Option<String>,
    pub policy_name: Option<String>,
    pub policy: Option<String>,
    pub bypass_policy_lockout_safety_check: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptRequest {
    pub key_id: Option<String>,
    pub plaintext: Option<String>,
    pub encryption_context: Option<BTreeMap<String, String>>,
    pub grant_tokens: Option<Vec<String>>,
    pub encryption_algorithm: Option<String>,
    pub dry_run: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptRequest {
    pub ciphertext_blob: Option<String>,
    pub encryption_context: Option<BTreeMap<String, String>>,
    pub grant_tokens: Option<Vec<String>>,
    pub key_id: Option<String>,
    pub encryption_algorithm: Option<String>,
    pub dry_run: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReEncryptRequest {
    pub ciphertext_blob: Option<String>,
    pub source_encryption_context: Option<BTreeMap<String, String>>,
    pub source_key_id: Option<String>,
    pub destination_key_id: Option<String>,
    pub destination_encryption_context: Option<BTreeMap<String, String>>,
    pub source_encryption_algorithm: Option<String>,
    pub destination_encryption_algorithm: Option<String>,
    pub grant_tokens: Option<Vec<String>>,
    pub dry_run: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyRequest {
    pub key_id: Option<String>,
    pub encryption_context: Option<BTreeMap<String, String>>,
    pub number_of_bytes: Option<i64>,
    pub key_spec: Option<String>,
    pub grant_tokens: Option<Vec<String>>,
    pub dry_run: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateRandomRequest {
    pub number_of_bytes: Option<i64>,
    pub custom_key_store_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AliasRequest {
    pub alias_name: Option<String>,
    pub target_key_id: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AliasListEntry {
    pub alias_name: String,
    pub alias_arn: String,
    pub target_key_id: String,
    pub creation_date: f64,
    pub last_updated_date: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListAliasesResponse {
    pub aliases: Vec<AliasListEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
    pub truncated: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagResourceRequest {
    pub key_id: Option<String>,
    pub tags: Option<Vec<Tag>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UntagResourceRequest {
    pub key_id: Option<String>,
    pub tag_keys: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateCustomKeyStoreRequest {
    pub custom_key_store_name: Option<String>,
    pub cloud_hsm_cluster_id: Option<String>,
    pub trust_anchor_certificate: Option<String>,
    pub key_store_password: Option<SecretString>,
    pub custom_key_store_type: Option<String>,
    /// Members of external key stores: hsmkms has none, but checks them as the model says.
    pub xks_proxy_uri_endpoint: Option<String>,
    pub xks_proxy_uri_path: Option<String>,
    pub xks_proxy_vpc_endpoint_service_name: Option<String>,
    pub xks_proxy_vpc_endpoint_service_owner: Option<String>,
    pub xks_proxy_connectivity: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomKeyStoreIdRequest {
    pub custom_key_store_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeCustomKeyStoresRequest {
    pub custom_key_store_id: Option<String>,
    pub custom_key_store_name: Option<String>,
    pub limit: Option<i64>,
    pub marker: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateCustomKeyStoreRequest {
    pub custom_key_store_id: Option<String>,
    pub new_custom_key_store_name: Option<String>,
    pub key_store_password: Option<SecretString>,
    pub cloud_hsm_cluster_id: Option<String>,
    /// Members of external key stores: hsmkms has none, but checks them as the model says.
    pub xks_proxy_uri_endpoint: Option<String>,
    pub xks_proxy_uri_path: Option<String>,
    pub xks_proxy_vpc_endpoint_service_name: Option<String>,
    pub xks_proxy_vpc_endpoint_service_owner: Option<String>,
    pub xks_proxy_connectivity: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomKeyStoreEntry {
    pub custom_key_store_id: String,
    pub custom_key_store_name: String,
    pub cloud_hsm_cluster_id: String,
    pub trust_anchor_certificate: String,
    pub connection_state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_error_code: Option<&'static str>,
    pub creation_date: f64,
    pub custom_key_store_type: &'static str,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GrantConstraintsMembers {
    pub encryption_context_subset: Option<BTreeMap<String, String>>,
    pub encryption_context_equals: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateGrantRequest {
    pub key_id: Option<String>,
    pub grantee_principal: Option<String>,
    pub retiring_principal: Option<String>,
    pub operations: Option<Vec<String>>,
    pub constraints: Option<GrantConstraintsMembers>,
    pub grant_tokens: Option<Vec<String>>,
    pub name: Option<String>,
    pub grantee_service_principal: Option<String>,
    pub retiring_service_principal: Option<String>,
    pub dry_run: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListGrantsRequest {
    pub key_id: Option<String>,
    pub limit: Option<i64>,
    pub marker: Option<String>,
    pub grant_id: Option<String>,
    pub grantee_principal: Option<String>,
    pub retiring_principal: Option<String>,
    pub grantee_service_principal: Option<String>,
    pub retiring_service_principal: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RetireGrantRequest {
    pub key_id: Option<String>,
    pub grant_id: Option<String>,
    pub grant_token: Option<String>,
    pub dry_run: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EnableKeyRotationRequest {
    pub key_id: Option<String>,
    pub rotation_period_in_days: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyRotationsRequest {
    pub key_id: Option<String>,
    pub include_key_material: Option<String>,
    pub limit: Option<i64>,
    pub marker: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SignRequest {
    pub key_id: Option<String>,
    pub message: Option<String>,
    pub message_type: Option<String>,
    pub signature: Option<String>,
    pub signing_algorithm: Option<String>,
    pub grant_tokens: Option<Vec<String>>,
    pub dry_run: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MacRequest {
    pub key_id: Option<String>,
    pub message: Option<String>,
    pub mac_algorithm: Option<String>,
    pub mac: Option<String>,
    pub grant_tokens: Option<Vec<String>>,
    pub dry_run: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyPairRequest {
    pub key_id: Option<String>,
    pub key_pair_spec: Option<String>,
    pub encryption_context: Option<BTreeMap<String, String>>,
    pub grant_tokens: Option<Vec<String>>,
    pub recipient: Option<serde_json::Value>,
    pub dry_run: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncapsulateRequest {
    pub key_id: Option<String>,
    pub encapsulation_algorithm: Option<String>,
    pub shared_secret_ciphertext_blob: Option<String>,
    pub grant_tokens: Option<Vec<String>>,
    pub dry_run: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeriveSharedSecretRequest {
    pub key_id: Option<String>,
    pub key_agreement_algorithm: Option<String>,
    pub public_key: Option<String>,
    pub grant_tokens: Option<Vec<String>>,
    pub recipient: Option<serde_json::Value>,
    pub dry_run: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetParametersForImportRequest {
    pub key_id: Option<String>,
    pub wrapping_algorithm: Option<String>,
    pub wrapping_key_spec: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImportKeyMaterialRequest {
    pub key_id: Option<String>,
    pub import_token: Option<String>,
    pub encrypted_key_material: Option<String>,
    /// Epoch seconds, as the JSON protocol sends timestamps.
    pub valid_to: Option<f64>,
    pub expiration_model: Option<String>,
    pub import_type: Option<String>,
    pub key_material_description: Option<String>,
    pub key_material_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReplicateKeyRequest {
    pub key_id: Option<String>,
    pub replica_region: Option<String>,
    pub policy: Option<String>,
    pub bypass_policy_lockout_safety_check: Option<bool>,
    pub description: Option<String>,
    pub tags: Option<Vec<Tag>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdatePrimaryRegionRequest {
    pub key_id: Option<String>,
    pub primary_region: Option<String>,
}
