//! CloudHSMv2 (`BaldrApiService.*`): the operations, their request and answer shapes. The
//! transport (AWS JSON 1.1 on `POST /`, Smithy RPCv2 CBOR on `/service/BaldrApiService/...`)
//! is the caller's: requests arrive here as JSON values and answers leave as JSON values.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::cloudhsm::{eni_of, HsmInfo};
use crate::frontend::{epoch_seconds, Frontend};
use crate::service::cloudhsm::error::CloudHsmError;
use crate::service::cloudhsm::resource_policy::{check_policy, ResourceArn, ResourceKind};
use crate::service::cloudhsm::{BackupRecord, ClusterRecord};

/// Parses a request into its shape; anything malformed is CloudHsmInvalidRequestException.
fn parse<T: DeserializeOwned>(body: Value) -> Result<T, CloudHsmError> {
    serde_json::from_value(body).map_err(|e| {
        CloudHsmError::InvalidRequest(format!("The request is not valid for this operation: {e}"))
    })
}

fn required<T>(value: Option<T>, name: &str) -> Result<T, CloudHsmError> {
    value.ok_or_else(|| {
        CloudHsmError::InvalidRequest(format!(
            "1 validation error detected: Value null at '{name}' failed to satisfy constraint: Member must not be null"
        ))
    })
}

fn check_id(prefix: &str, id: &str, name: &str) -> Result<(), CloudHsmError> {
    if hsmkms_common::ids::is_valid_id(prefix, id) {
        Ok(())
    } else {
        Err(CloudHsmError::InvalidRequest(format!(
            "1 validation error detected: Value '{id}' at '{name}' failed to satisfy constraint: Member must satisfy regular expression pattern: {prefix}[2-7a-zA-Z]{{11,16}}"
        )))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Tag {
    key: String,
    value: String,
}

fn tag_map(list: Option<Vec<Tag>>) -> BTreeMap<String, String> {
    list.unwrap_or_default()
        .into_iter()
        .map(|t| (t.key, t.value))
        .collect()
}

fn tag_list(tags: &BTreeMap<String, String>) -> Value {
    Value::Array(
        tags.iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect(),
    )
}

/// Inserts only the present values, as AWS omits absent members.
fn put(obj: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        obj.insert(key.into(), v);
    }
}

fn hsm_json(cluster_id: &str, h: &HsmInfo, hsm_type: &str) -> Value {
    let ip = h.view.address.split(':').next().unwrap_or_default();
    json!({
        "AvailabilityZone": h.view.availability_zone,
        "ClusterId": cluster_id,
        "SubnetId": h.subnet_id,
        "EniId": eni_of(&h.view.hsm_id),
        "EniIp": ip,
        "HsmId": h.view.hsm_id,
        "HsmType": hsm_type,
        "State": h.view.state.as_str(),
        "StateMessage": format!("HSM {} is {}.", h.view.hsm_id, h.view.state.as_str()),
    })
}

fn cluster_json(c: &ClusterRecord, hsms: &[HsmInfo]) -> Value {
    let mut certificates = Map::new();
    put(
        &mut certificates,
        "ClusterCsr",
        c.cluster_csr.clone().map(Value::String),
    );
    put(
        &mut certificates,
        "ClusterCertificate",
        c.cluster_certificate.clone().map(Value::String),
    );
    let mut obj = json!({
        "BackupPolicy": "DEFAULT",
        "BackupRetentionPolicy": {"Type": "DAYS", "Value": c.retention_days.to_string()},
        "ClusterId": c.cluster_id,
        "CreateTimestamp": epoch_seconds(c.created_at_millis),
        "Hsms": hsms.iter().map(|h| hsm_json(&c.cluster_id, h, &c.hsm_type)).collect::<Vec<_>>(),
        "HsmType": c.hsm_type,
        "SecurityGroup": c.security_group,
        "State": c.state.as_str(),
        "SubnetMapping": c.subnet_mapping,
        "VpcId": c.vpc_id,
        "NetworkType": "IPV4",
        "Certificates": certificates,
        "TagList": tag_list(&c.tags),
        "Mode": "FIPS",
    });
    if let Value::Object(o) = &mut obj {
        put(
            o,
            "SourceBackupId",
            c.source_backup_id.clone().map(Value::String),
        );
        if !c.state_message.is_empty() {
            o.insert("StateMessage".into(), json!(c.state_message));
        }
    }
    obj
}

fn backup_arn(b: &BackupRecord, account_id: &str) -> String {
    format!(
        "arn:aws:cloudhsm:{}:{account_id}:backup/{}",
        b.region, b.backup_id
    )
}

fn backup_json(b: &BackupRecord, account_id: &str) -> Value {
    let mut obj = Map::new();
    obj.insert("BackupId".into(), json!(b.backup_id));
    obj.insert("BackupArn".into(), json!(backup_arn(b, account_id)));
    obj.insert("BackupState".into(), json!(b.state.as_str()));
    put(
        &mut obj,
        "ClusterId",
        b.cluster_id.clone().map(Value::String),
    );
    obj.insert(
        "CreateTimestamp".into(),
        json!(epoch_seconds(b.created_at_millis)),
    );
    put(
        &mut obj,
        "CopyTimestamp",
        b.copied_at_millis.map(|t| json!(epoch_seconds(t))),
    );
    obj.insert("NeverExpires".into(), json!(b.never_expires));
    put(
        &mut obj,
        "SourceRegion",
        b.source_region.clone().map(Value::String),
    );
    put(
        &mut obj,
        "SourceBackup",
        b.source_backup.clone().map(Value::String),
    );
    put(
        &mut obj,
        "SourceCluster",
        b.source_cluster.clone().map(Value::String),
    );
    put(
        &mut obj,
        "DeleteTimestamp",
        b.delete_at_millis.map(|t| json!(epoch_seconds(t))),
    );
    obj.insert("TagList".into(), tag_list(&b.tags));
    obj.insert("HsmType".into(), json!(b.hsm_type));
    obj.insert("Mode".into(), json!("FIPS"));
    Value::Object(obj)
}

/// Pages of a sorted list: `NextToken` is the index of the next item.
fn page<T>(
    items: Vec<T>,
    next_token: Option<String>,
    max: usize,
) -> Result<(Vec<T>, Option<String>), CloudHsmError> {
    let start = match next_token {
        None => 0,
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|s| *s <= items.len())
            .ok_or_else(|| CloudHsmError::InvalidRequest(format!("Invalid NextToken: {t}")))?,
    };
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(start).take(max).collect();
    let end = start + page.len();
    Ok((page, (end < total).then(|| end.to_string())))
}

fn max_results(value: Option<i64>, limit: i64) -> Result<usize, CloudHsmError> {
    match value {
        None => Ok(limit as usize),
        Some(v) if (1..=limit).contains(&v) => Ok(v as usize),
        Some(v) => Err(CloudHsmError::InvalidRequest(format!(
            "1 validation error detected: Value '{v}' at 'maxResults' failed to satisfy constraint: Member must have value between 1 and {limit}"
        ))),
    }
}

type Filters = Option<BTreeMap<String, Vec<String>>>;

fn check_filters(filters: &Filters, allowed: &[&str]) -> Result<(), CloudHsmError> {
    for name in filters.iter().flat_map(|f| f.keys()) {
        if !allowed.contains(&name.as_str()) {
            return Err(CloudHsmError::InvalidRequest(format!(
                "Invalid filter {name}; valid filters are {}.",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeClusters {
    filters: Filters,
    next_token: Option<String>,
    max_results: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RetentionPolicy {
    #[serde(rename = "Type")]
    kind: Option<String>,
    value: Option<String>,
}

fn retention_days(policy: Option<RetentionPolicy>) -> Result<Option<u32>, CloudHsmError> {
    let Some(p) = policy else { return Ok(None) };
    if p.kind.as_deref().unwrap_or("DAYS") != "DAYS" {
        return Err(CloudHsmError::InvalidRequest(
            "BackupRetentionPolicy Type must be DAYS.".into(),
        ));
    }
    let value = required(p.value, "backupRetentionPolicy.value")?;
    value.parse::<u32>().map(Some).map_err(|_| {
        CloudHsmError::InvalidRequest(format!(
            "BackupRetentionPolicy Value must be a number of days, not {value:?}."
        ))
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateCluster {
    backup_retention_policy: Option<RetentionPolicy>,
    hsm_type: Option<String>,
    source_backup_id: Option<String>,
    subnet_ids: Option<Vec<String>>,
    network_type: Option<String>,
    tag_list: Option<Vec<Tag>>,
    mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ClusterIdOnly {
    cluster_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ModifyCluster {
    cluster_id: Option<String>,
    backup_retention_policy: Option<RetentionPolicy>,
    hsm_type: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateHsm {
    cluster_id: Option<String>,
    availability_zone: Option<String>,
    ip_address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteHsm {
    cluster_id: Option<String>,
    hsm_id: Option<String>,
    eni_id: Option<String>,
    eni_ip: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeBackups {
    filters: Filters,
    next_token: Option<String>,
    max_results: Option<i64>,
    shared: Option<bool>,
    sort_ascending: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BackupIdOnly {
    backup_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ModifyBackupAttributes {
    backup_id: Option<String>,
    never_expires: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CopyBackupToRegion {
    destination_region: Option<String>,
    backup_id: Option<String>,
    tag_list: Option<Vec<Tag>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ResourceArnOnly {
    resource_arn: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutResourcePolicy {
    resource_arn: Option<String>,
    policy: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InitializeCluster {
    cluster_id: Option<String>,
    signed_cert: Option<String>,
    trust_anchor: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagResource {
    resource_id: Option<String>,
    tag_list: Option<Vec<Tag>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UntagResource {
    resource_id: Option<String>,
    tag_key_list: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListTags {
    resource_id: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

fn cluster_id(value: Option<String>) -> Result<String, CloudHsmError> {
    let id = required(value, "clusterId")?;
    check_id("cluster-", &id, "clusterId")?;
    Ok(id)
}

fn backup_id(value: Option<String>) -> Result<String, CloudHsmError> {
    let id = required(value, "backupId")?;
    check_id("backup-", &id, "backupId")?;
    Ok(id)
}

fn resource_id(value: Option<String>) -> Result<String, CloudHsmError> {
    let id = required(value, "resourceId")?;
    if !(hsmkms_common::ids::is_valid_id("cluster-", &id)
        || hsmkms_common::ids::is_valid_id("backup-", &id))
    {
        return Err(CloudHsmError::InvalidRequest(format!(
            "Invalid ResourceId {id}: expected a cluster or backup id."
        )));
    }
    Ok(id)
}

/// The backup a resource policy request names, from its `ResourceArn`: well formed (the
/// model's pattern), a backup's (AWS: only backups take resource policies), this account's
/// (the operations have no cross-account use) and in the Region the request was sent to.
/// Answers the backup's id.
fn policy_backup(
    value: Option<String>,
    region: &str,
    account_id: &str,
) -> Result<String, CloudHsmError> {
    let text = required(value, "resourceArn")?;
    let arn = ResourceArn::parse(&text)?;
    let what = match arn.kind {
        ResourceKind::Backup => None,
        ResourceKind::Cluster => Some("a cluster"),
        ResourceKind::Hsm => Some("an HSM"),
    };
    if let Some(what) = what {
        return Err(CloudHsmError::InvalidRequest(format!(
            "{text} names {what}; only backups take resource policies."
        )));
    }
    if arn.account_id != account_id {
        return Err(CloudHsmError::AccessDenied(format!(
            "{text} belongs to account {}; resource policies can be read and changed only in the resource's own account ({account_id} here).",
            arn.account_id
        )));
    }
    if arn.partition != "aws" || arn.region != region {
        return Err(CloudHsmError::ResourceNotFound(format!(
            "Backup {} not found: {text} is not a backup of {region}, the Region this request was sent to.",
            arn.id
        )));
    }
    Ok(arn.id)
}

/// Runs one CloudHSMv2 operation. `region` is the Region the request was signed for: backups
/// live in a Region (copies in another); clusters live in the emulator's own Region.
pub async fn call(
    fe: &Arc<Frontend>,
    op: &str,
    body: Value,
    region: &str,
) -> Result<Value, CloudHsmError> {
    let svc = &fe.clusters;
    // Held to the answer (and by the tasks the call leaves running): a reset waits for it,
    // and the call for a reset, so it sees the clusters and backups before or after one.
    let pass = svc.enter().await;
    let home = region == svc.region;
    let account = fe.arns.account_id.as_str();
    let not_here =
        |id: &str| CloudHsmError::ResourceNotFound(format!("Cluster {id} not found in {region}."));
    match op {
        "DescribeClusters" => {
            let req: DescribeClusters = parse(body)?;
            let max = max_results(req.max_results, 25)?;
            check_filters(&req.filters, &["clusterIds", "vpcIds", "states"])?;
            let f = req.filters.unwrap_or_default();
            let matches =
                |key: &str, value: &str| f.get(key).is_none_or(|v| v.iter().any(|x| x == value));
            let clusters: Vec<Value> = if home { svc.describe_all() } else { vec![] }
                .into_iter()
                .filter(|(c, _)| {
                    matches("clusterIds", &c.cluster_id)
                        && matches("vpcIds", &c.vpc_id)
                        && matches("states", c.state.as_str())
                })
                .map(|(c, hsms)| cluster_json(&c, &hsms))
                .collect();
            let (page, next) = page(clusters, req.next_token, max)?;
            let mut answer = json!({"Clusters": page});
            if let Some(n) = next {
                answer["NextToken"] = json!(n);
            }
            Ok(answer)
        }
        "CreateCluster" => {
            let req: CreateCluster = parse(body)?;
            if !home {
                return Err(CloudHsmError::InvalidRequest(format!(
                    "This emulator runs clusters in {} only.",
                    svc.region
                )));
            }
            if let Some(n) = req.network_type.as_deref().filter(|n| *n != "IPV4") {
                return Err(CloudHsmError::InvalidRequest(format!(
                    "NetworkType {n} is not supported here; use IPV4."
                )));
            }
            if let Some(m) = req.mode.as_deref().filter(|m| *m != "FIPS") {
                return Err(CloudHsmError::InvalidRequest(format!(
                    "Mode {m} is not supported here; use FIPS."
                )));
            }
            let record = svc
                .create_cluster(
                    required(req.hsm_type, "hsmType")?,
                    required(req.subnet_ids, "subnetIds")?,
                    req.source_backup_id,
                    retention_days(req.backup_retention_policy)?,
                    tag_map(req.tag_list),
                )
                .await?;
            Ok(json!({"Cluster": cluster_json(&record, &[])}))
        }
        "DeleteCluster" => {
            let req: ClusterIdOnly = parse(body)?;
            let id = cluster_id(req.cluster_id)?;
            if !home {
                return Err(not_here(&id));
            }
            // DELETE_IN_PROGRESS, as AWS answers: the record as DeleteCluster's check installed
            // it (it may be DELETED already by now).
            let record = svc.delete_cluster(&id).await?;
            Ok(json!({"Cluster": cluster_json(&record, &[])}))
        }
        "ModifyCluster" => {
            let req: ModifyCluster = parse(body)?;
            let id = cluster_id(req.cluster_id)?;
            if !home {
                return Err(not_here(&id));
            }
            if req.hsm_type.is_some() {
                return Err(CloudHsmError::InvalidRequest(
                    "Changing the HSM type of a cluster is not supported here.".into(),
                ));
            }
            let days = required(
                retention_days(req.backup_retention_policy)?,
                "backupRetentionPolicy",
            )?;
            let record = svc.modify_cluster(&id, Some(days)).await?;
            let hsms = svc.describe(&id).map(|(_, h)| h).unwrap_or_default();
            Ok(json!({"Cluster": cluster_json(&record, &hsms)}))
        }
        "InitializeCluster" => {
            let req: InitializeCluster = parse(body)?;
            let id = cluster_id(req.cluster_id)?;
            if !home {
                return Err(not_here(&id));
            }
            let signed = required(req.signed_cert, "signedCert")?;
            let anchor = required(req.trust_anchor, "trustAnchor")?;
            let record = svc.initialize_cluster(&id, &signed, &anchor).await?;
            Ok(json!({"State": record.state.as_str(), "StateMessage": record.state_message}))
        }
        "CreateHsm" => {
            let req: CreateHsm = parse(body)?;
            let id = cluster_id(req.cluster_id)?;
            if !home {
                return Err(not_here(&id));
            }
            let zone = required(req.availability_zone, "availabilityZone")?;
            if let Some(ip) = &req.ip_address {
                if ip.parse::<std::net::Ipv4Addr>().is_err() {
                    return Err(CloudHsmError::InvalidRequest(format!(
                        "Invalid IpAddress {ip}."
                    )));
                }
            }
            let hsm = svc.create_hsm(&pass, &id, &zone).await?;
            let hsm_type = svc
                .describe(&id)
                .map(|(c, _)| c.hsm_type)
                .unwrap_or_default();
            Ok(json!({"Hsm": hsm_json(&id, &hsm, &hsm_type)}))
        }
        "DeleteHsm" => {
            let req: DeleteHsm = parse(body)?;
            let id = cluster_id(req.cluster_id)?;
            if !home {
                return Err(not_here(&id));
            }
            if req.hsm_id.is_none() && req.eni_id.is_none() && req.eni_ip.is_none() {
                return Err(CloudHsmError::InvalidRequest(
                    "Name the HSM to delete with HsmId, EniId or EniIp.".into(),
                ));
            }
            if let Some(h) = &req.hsm_id {
                check_id("hsm-", h, "hsmId")?;
            }
            let hsm_id = svc
                .delete_hsm(
                    &pass,
                    &id,
                    req.hsm_id.as_deref(),
                    req.eni_id.as_deref(),
                    req.eni_ip.as_deref(),
                )
                .await?;
            Ok(json!({"HsmId": hsm_id}))
        }
        "DescribeBackups" => {
            let req: DescribeBackups = parse(body)?;
            let max = max_results(req.max_results, 50)?;
            check_filters(
                &req.filters,
                &[
                    "backupIds",
                    "sourceBackupIds",
                    "clusterIds",
                    "states",
                    "neverExpires",
                ],
            )?;
            let f = req.filters.unwrap_or_default();
            let matches = |key: &str, value: Option<&str>| {
                f.get(key)
                    .is_none_or(|v| value.is_some_and(|value| v.iter().any(|x| x == value)))
            };
            let mut backups: Vec<BackupRecord> = svc
                .backups(Some(region))
                .into_iter()
                .filter(|b| {
                    matches("backupIds", Some(&b.backup_id))
                        && matches("sourceBackupIds", b.source_backup.as_deref())
                        && matches("clusterIds", b.cluster_id.as_deref())
                        && matches("states", Some(b.state.as_str()))
                        && matches(
                            "neverExpires",
                            Some(if b.never_expires { "true" } else { "false" }),
                        )
                })
                .collect();
            // Shared backups come from other accounts; this emulator has one account.
            if req.shared == Some(true) {
                backups.clear();
            }
            backups.sort_by(|a, b| {
                (a.created_at_millis, &a.backup_id).cmp(&(b.created_at_millis, &b.backup_id))
            });
            if req.sort_ascending != Some(true) {
                backups.reverse();
            }
            let (page, next) = page(backups, req.next_token, max)?;
            let mut answer = json!({"Backups": page.iter().map(|b| backup_json(b, account)).collect::<Vec<_>>()});
            if let Some(n) = next {
                answer["NextToken"] = json!(n);
            }
            Ok(answer)
        }
        "DeleteBackup" => {
            let req: BackupIdOnly = parse(body)?;
            let id = backup_id(req.backup_id)?;
            let backup = svc.delete_backup(&id, region).await?;
            Ok(json!({"Backup": backup_json(&backup, account)}))
        }
        "RestoreBackup" => {
            let req: BackupIdOnly = parse(body)?;
            let id = backup_id(req.backup_id)?;
            let backup = svc.restore_backup(&id, region).await?;
            Ok(json!({"Backup": backup_json(&backup, account)}))
        }
        "ModifyBackupAttributes" => {
            let req: ModifyBackupAttributes = parse(body)?;
            let id = backup_id(req.backup_id)?;
            let never = required(req.never_expires, "neverExpires")?;
            let backup = svc.set_never_expires(&id, region, never).await?;
            Ok(json!({"Backup": backup_json(&backup, account)}))
        }
        "CopyBackupToRegion" => {
            let req: CopyBackupToRegion = parse(body)?;
            let destination = required(req.destination_region, "destinationRegion")?;
            let id = backup_id(req.backup_id)?;
            // Without a TagList the copy takes the source's tags (AWS documents it).
            let tags = req.tag_list.map(|list| tag_map(Some(list)));
            let copy = svc.copy_backup(&id, region, &destination, tags).await?;
            Ok(json!({"DestinationBackup": {
                "CreateTimestamp": epoch_seconds(copy.created_at_millis),
                "SourceRegion": copy.source_region,
                "SourceBackup": copy.source_backup,
                "SourceCluster": copy.source_cluster,
            }}))
        }
        "GetResourcePolicy" => {
            let req: ResourceArnOnly = parse(body)?;
            let id = policy_backup(req.resource_arn, region, account)?;
            // A backup without a policy answers no Policy member.
            let mut answer = Map::new();
            put(
                &mut answer,
                "Policy",
                svc.resource_policy(&id, region)?.map(Value::String),
            );
            Ok(Value::Object(answer))
        }
        "PutResourcePolicy" => {
            let req: PutResourcePolicy = parse(body)?;
            let arn = required(req.resource_arn, "resourceArn")?;
            let policy = required(req.policy, "policy")?;
            let id = policy_backup(Some(arn), region, account)?;
            check_policy(&policy)?;
            let backup = svc.put_resource_policy(&id, region, policy).await?;
            Ok(json!({
                "ResourceArn": backup_arn(&backup, account),
                "Policy": backup.resource_policy,
            }))
        }
        "DeleteResourcePolicy" => {
            let req: ResourceArnOnly = parse(body)?;
            let id = policy_backup(req.resource_arn, region, account)?;
            let previous = svc.delete_resource_policy(&id, region).await?;
            let mut answer = Map::new();
            answer.insert(
                "ResourceArn".into(),
                json!(format!("arn:aws:cloudhsm:{region}:{account}:backup/{id}")),
            );
            put(&mut answer, "Policy", previous.map(Value::String));
            Ok(Value::Object(answer))
        }
        "TagResource" => {
            let req: TagResource = parse(body)?;
            let id = resource_id(req.resource_id)?;
            let tags = required(req.tag_list, "tagList")?;
            if tags.is_empty() {
                return Err(CloudHsmError::InvalidRequest(
                    "TagList must not be empty.".into(),
                ));
            }
            svc.tag(&id, region, tag_map(Some(tags))).await?;
            Ok(json!({}))
        }
        "UntagResource" => {
            let req: UntagResource = parse(body)?;
            let id = resource_id(req.resource_id)?;
            let keys = required(req.tag_key_list, "tagKeyList")?;
            svc.untag(&id, region, &keys).await?;
            Ok(json!({}))
        }
        "ListTags" => {
            let req: ListTags = parse(body)?;
            let id = resource_id(req.resource_id)?;
            let max = max_results(req.max_results, 100)?;
            let tags: Vec<(String, String)> = svc.list_tags(&id, region)?.into_iter().collect();
            let (page, next) = page(tags, req.next_token, max)?;
            let mut answer = json!({"TagList": page.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect::<Vec<_>>()});
            if let Some(n) = next {
                answer["NextToken"] = json!(n);
            }
            Ok(answer)
        }
        other => Err(CloudHsmError::UnknownOperation(format!(
            "BaldrApiService.{other} is not an operation of CloudHSMv2."
        ))),
    }
}
