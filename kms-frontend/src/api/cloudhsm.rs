//! CloudHSMv2 (`BaldrApiService.*`) over AWS JSON 1.1: for now DescribeClusters, so users find
//! their cluster, its HSMs and its certificates the AWS way.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use super::parse;
use crate::cluster::ClusterView;
use crate::frontend::{epoch_seconds, Frontend};
use crate::service::error::KmsError;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeClustersRequest {
    filters: Option<std::collections::BTreeMap<String, Vec<String>>>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

fn cluster_json(c: &ClusterView, region: &str) -> Value {
    json!({
        "ClusterId": c.cluster_id,
        "State": c.state,
        "HsmType": c.hsm_type,
        "CreateTimestamp": epoch_seconds(c.created_at_millis),
        "VpcId": c.vpc_id,
        "SecurityGroup": c.security_group,
        "SubnetMapping": c.subnet_mapping.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "BackupPolicy": "DEFAULT",
        "BackupRetentionPolicy": {"Type": "DAYS", "Value": c.backup_retention_days.to_string()},
        "Certificates": {"ClusterCertificate": c.trust_anchor, "AwsHardwareCertificate": "", "ManufacturerHardwareCertificate": ""},
        "Hsms": c.hsms.iter().map(|h| json!({
            "HsmId": h.hsm_id,
            "AvailabilityZone": h.availability_zone,
            "ClusterId": c.cluster_id,
            "SubnetId": c.subnet_mapping.iter().find(|(az, _)| *az == h.availability_zone).map(|(_, s)| s.clone()).unwrap_or_default(),
            "EniIp": h.address.split(':').next().unwrap_or_default(),
            "State": h.state,
            "StateMessage": format!("HSM {} is {} in {region}.", h.hsm_id, h.state),
        })).collect::<Vec<_>>(),
        "TagList": [],
    })
}

fn invalid(message: String) -> KmsError {
    // CloudHSMv2 errors carry their own names; this variant maps to a 400 with that name.
    KmsError::Validation(message)
}

pub async fn call(fe: &Arc<Frontend>, op: &str, body: &[u8]) -> Result<Value, KmsError> {
    match op {
        "DescribeClusters" => {
            let req: DescribeClustersRequest = parse(body)?;
            let max = req.max_results.unwrap_or(25);
            if !(1..=25).contains(&max) {
                return Err(invalid("MaxResults must be between 1 and 25.".into()));
            }
            let filters = req.filters.unwrap_or_default();
            let mut clusters: Vec<ClusterView> = fe
                .clusters
                .clusters()
                .into_iter()
                .filter(|c| {
                    filters
                        .get("clusterIds")
                        .is_none_or(|ids| ids.contains(&c.cluster_id))
                })
                .filter(|c| filters.get("states").is_none_or(|s| s.contains(&c.state)))
                .filter(|c| filters.get("vpcIds").is_none_or(|v| v.contains(&c.vpc_id)))
                .collect();
            clusters.sort_by(|a, b| a.cluster_id.cmp(&b.cluster_id));
            let start = match &req.next_token {
                None => 0,
                Some(t) => t
                    .parse::<usize>()
                    .map_err(|_| invalid(format!("Invalid NextToken: {t}")))?,
            };
            let page: Vec<Value> = clusters
                .iter()
                .skip(start)
                .take(max as usize)
                .map(|c| cluster_json(c, &fe.arns.region))
                .collect();
            let end = start + page.len();
            let mut answer = json!({"Clusters": page});
            if end < clusters.len() {
                answer["NextToken"] = json!(end.to_string());
            }
            Ok(answer)
        }
        other => Err(KmsError::UnknownOperation(format!(
            "BaldrApiService.{other} is not an operation hsmkms serves yet."
        ))),
    }
}
