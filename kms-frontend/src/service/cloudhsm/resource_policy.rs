//! Resource policies (GetResourcePolicy, PutResourcePolicy, DeleteResourcePolicy): the ARN a
//! request names and the policy document it carries, checked as plain data before anything is
//! looked up, so a bad request changes nothing.
//!
//! The ARN follows botocore's `CloudHsmArn` pattern (backup, cluster or HSM); only backups take
//! a policy, as AWS documents. The policy is 1 to 20,000 characters (botocore's
//! `ResourcePolicy`) and must read as an IAM resource policy: AWS documents no checks of its
//! own, but hands the policy to AWS RAM, which refuses documents that are not policies.

use serde_json::Value;

use super::error::CloudHsmError;

/// The longest policy the model allows, in characters.
pub const MAX_POLICY_CHARS: usize = 20_000;

/// botocore's `CloudHsmArn` pattern, quoted in validation errors as AWS quotes patterns.
pub const ARN_PATTERN: &str = "arn:aws(-(us-gov))?:cloudhsm:([a-z]{2}(-(gov|isob|iso))?-(east|west|north|south|central){1,2}-[0-9]{1}):[0-9]{12}:(backup/backup|cluster/cluster|hsm/hsm)-[2-7a-zA-Z]{11,16}";

/// What kind of CloudHSM resource an ARN names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    Backup,
    Cluster,
    Hsm,
}

/// A well-formed CloudHSM ARN, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceArn {
    pub partition: String,
    pub region: String,
    pub account_id: String,
    pub kind: ResourceKind,
    /// The resource's id (`backup-...`, `cluster-...`, `hsm-...`).
    pub id: String,
}

impl ResourceArn {
    /// Parses `arn` against the model's pattern (anchored at both ends); anything else is
    /// CloudHsmInvalidRequestException naming the member and the pattern.
    pub fn parse(arn: &str) -> Result<Self, CloudHsmError> {
        Self::parts(arn).ok_or_else(|| {
            CloudHsmError::InvalidRequest(format!(
                "1 validation error detected: Value '{}' at 'resourceArn' failed to satisfy constraint: Member must satisfy regular expression pattern: {ARN_PATTERN}",
                shortened(arn)
            ))
        })
    }

    fn parts(arn: &str) -> Option<Self> {
        let mut fields = arn.splitn(6, ':');
        let (arn_prefix, partition, service, region, account, resource) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        let well_formed = arn_prefix == "arn"
            && matches!(partition, "aws" | "aws-us-gov")
            && service == "cloudhsm"
            && is_model_region(region)
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit());
        if !well_formed {
            return None;
        }
        let (kind, prefix, id) = if let Some(id) = resource.strip_prefix("backup/") {
            (ResourceKind::Backup, "backup-", id)
        } else if let Some(id) = resource.strip_prefix("cluster/") {
            (ResourceKind::Cluster, "cluster-", id)
        } else if let Some(id) = resource.strip_prefix("hsm/") {
            (ResourceKind::Hsm, "hsm-", id)
        } else {
            return None;
        };
        hsmkms_common::ids::is_valid_id(prefix, id).then(|| ResourceArn {
            partition: partition.to_string(),
            region: region.to_string(),
            account_id: account.to_string(),
            kind,
            id: id.to_string(),
        })
    }
}

/// A value as an error quotes it: whole if short, else its start (a request may carry up to
/// the body limit, and the message should stay readable).
fn shortened(value: &str) -> String {
    const QUOTED: usize = 256;
    if value.chars().count() <= QUOTED {
        value.to_string()
    } else {
        let start: String = value.chars().take(QUOTED).collect();
        format!("{start}...")
    }
}

/// The model's Region pattern inside `CloudHsmArn`:
/// `[a-z]{2}(-(gov|isob|iso))?-(east|west|north|south|central){1,2}-[0-9]{1}`.
fn is_model_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    let (area, rest) = match parts.as_slice() {
        [area, rest @ ..] => (area, rest),
        [] => return false,
    };
    let rest = match rest {
        [kind, rest @ ..] if matches!(*kind, "gov" | "isob" | "iso") => rest,
        rest => rest,
    };
    let [direction, number] = rest else {
        return false;
    };
    area.len() == 2
        && area.bytes().all(|b| b.is_ascii_lowercase())
        && is_direction(direction)
        && number.len() == 1
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// One or two of east, west, north, south, central, run together (`southeast`).
fn is_direction(s: &str) -> bool {
    const WORDS: [&str; 5] = ["east", "west", "north", "south", "central"];
    WORDS.iter().any(|first| {
        s.strip_prefix(first)
            .is_some_and(|rest| rest.is_empty() || WORDS.contains(&rest))
    })
}

/// Checks a policy document: 1 to [`MAX_POLICY_CHARS`] characters, a JSON object whose
/// `Statement` (one, or a non-empty list) each have an `Effect` of Allow or Deny, a
/// `Principal` (or `NotPrincipal`), as every resource policy must, and an `Action` (or
/// `NotAction`); a `Version`, if given, is one IAM knows.
pub fn check_policy(policy: &str) -> Result<(), CloudHsmError> {
    let chars = policy.chars().count();
    if chars < 1 {
        return Err(CloudHsmError::InvalidRequest(
            "1 validation error detected: Value at 'policy' failed to satisfy constraint: Member must have length greater than or equal to 1".into(),
        ));
    }
    if chars > MAX_POLICY_CHARS {
        return Err(CloudHsmError::InvalidRequest(format!(
            "1 validation error detected: Value at 'policy' failed to satisfy constraint: Member must have length less than or equal to {MAX_POLICY_CHARS}"
        )));
    }
    let malformed = |why: &str| {
        CloudHsmError::InvalidRequest(format!("The resource policy is malformed: {why}"))
    };
    let document: Value = serde_json::from_str(policy)
        .map_err(|e| malformed(&format!("it is not valid JSON ({e}).")))?;
    let Value::Object(document) = document else {
        return Err(malformed("it must be a JSON object."));
    };
    if let Some(version) = document.get("Version") {
        if !matches!(version.as_str(), Some("2012-10-17" | "2008-10-17")) {
            return Err(malformed(
                "Version must be \"2012-10-17\" or \"2008-10-17\".",
            ));
        }
    }
    let statements: Vec<&Value> = match document.get("Statement") {
        Some(Value::Array(list)) if !list.is_empty() => list.iter().collect(),
        Some(one @ Value::Object(_)) => vec![one],
        Some(_) => {
            return Err(malformed(
                "Statement must be an object or a non-empty list.",
            ))
        }
        None => return Err(malformed("it has no Statement.")),
    };
    for (i, statement) in statements.iter().enumerate() {
        let n = i + 1;
        let Value::Object(s) = statement else {
            return Err(malformed(&format!("statement {n} is not an object.")));
        };
        if !matches!(
            s.get("Effect").and_then(Value::as_str),
            Some("Allow" | "Deny")
        ) {
            return Err(malformed(&format!(
                "statement {n} needs an Effect of \"Allow\" or \"Deny\"."
            )));
        }
        if !s.contains_key("Principal") && !s.contains_key("NotPrincipal") {
            return Err(malformed(&format!(
                "statement {n} names no Principal; a resource policy must say whom it applies to."
            )));
        }
        if !s.contains_key("Action") && !s.contains_key("NotAction") {
            return Err(malformed(&format!("statement {n} names no Action.")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_of_the_model_parse_and_others_do_not() {
        let arn = ResourceArn::parse(
            "arn:aws:cloudhsm:ap-southeast-1:111122223333:backup/backup-abcdefghij2",
        )
        .unwrap();
        assert_eq!(arn.kind, ResourceKind::Backup);
        assert_eq!(arn.region, "ap-southeast-1");
        assert_eq!(arn.account_id, "111122223333");
        assert_eq!(arn.id, "backup-abcdefghij2");
        for good in [
            "arn:aws-us-gov:cloudhsm:us-gov-west-1:111122223333:cluster/cluster-abcdefghij2",
            "arn:aws:cloudhsm:eu-central-1:111122223333:hsm/hsm-abcdefghij2",
        ] {
            assert!(ResourceArn::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "backup-abcdefghij2",
            "arn:aws:kms:us-east-1:111122223333:backup/backup-abcdefghij2",
            "arn:aws:cloudhsm:us-east-1:11112222333:backup/backup-abcdefghij2",
            "arn:aws:cloudhsm:us-east-12:111122223333:backup/backup-abcdefghij2",
            "arn:aws:cloudhsm:us-middle-1:111122223333:backup/backup-abcdefghij2",
            "arn:aws:cloudhsm:us-east-1:111122223333:backup/backup-abc",
            "arn:aws:cloudhsm:us-east-1:111122223333:backup/cluster-abcdefghij2",
            "arn:aws:cloudhsm:us-east-1:111122223333:backup/backup-abcdefghij2/x",
            "arn:aws-cn:cloudhsm:us-east-1:111122223333:backup/backup-abcdefghij2",
        ] {
            assert!(
                matches!(
                    ResourceArn::parse(bad),
                    Err(CloudHsmError::InvalidRequest(m)) if m.contains("at 'resourceArn'")
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn policies_must_be_resource_policies_within_the_model_length() {
        let good = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::444455556666:root"},"Action":["cloudhsm:DescribeBackups","cloudhsm:CreateCluster"],"Resource":"*"}]}"#;
        assert!(check_policy(good).is_ok());
        let single = r#"{"Statement":{"Effect":"Deny","NotPrincipal":"*","NotAction":"*"}}"#;
        assert!(check_policy(single).is_ok());
        for bad in [
            "",
            "not json",
            "[]",
            r#"{"Version":"2020-01-01","Statement":[]}"#,
            r#"{"Statement":[]}"#,
            r#"{"Statement":[{"Effect":"Maybe","Principal":"*","Action":"*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Action":"*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Principal":"*"}]}"#,
            r#"{"Statement":["x"]}"#,
        ] {
            assert!(
                matches!(check_policy(bad), Err(CloudHsmError::InvalidRequest(_))),
                "{bad}"
            );
        }
        // The bound is in characters, as the model counts them.
        let padded = |n: usize| {
            let base = r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"*","Sid":""}}"#;
            let fill = "é".repeat(n - base.chars().count());
            base.replace(r#""Sid":"""#, &format!(r#""Sid":"{fill}""#))
        };
        assert!(check_policy(&padded(MAX_POLICY_CHARS)).is_ok());
        assert!(matches!(
            check_policy(&padded(MAX_POLICY_CHARS + 1)),
            Err(CloudHsmError::InvalidRequest(m)) if m.contains("less than or equal to 20000")
        ));
    }
}
