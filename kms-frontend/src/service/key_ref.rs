//! Reading the `KeyId` of a request: a key id (UUID), a multi-Region key id (`mrk-`), a key
//! ARN, an alias name or an alias ARN, in the Region and account of the request.
//!
//! Every Region and account is served: a request's scope (the Region of its SigV4 credential
//! scope, the account of its access key id when that is 12 digits) is set for the request's
//! task with [`in_request_scope`]; the registry reads it with [`request_scope`]. Work outside
//! a request (the deletion scheduler, the control API) has none and sees the home scope.

use std::future::Future;
use std::sync::Arc;

use uuid::Uuid;

use super::error::KmsError;

/// What a `KeyId` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    Key(Uuid),
    /// A multi-Region key's id: `mrk-` and these 32 hex digits.
    MultiRegion(Uuid),
    Alias(String),
}

tokio::task_local! {
    static REQUEST_SCOPE: Arc<Arns>;
}

/// The Region and account of the request being served, if this task serves one.
pub fn request_scope() -> Option<Arc<Arns>> {
    REQUEST_SCOPE.try_with(Arc::clone).ok()
}

/// Runs `work` as a request of `scope`. A plain function rather than an `async fn`: an async
/// wrapper would hold `work` twice (as its argument and as the future it awaits), doubling the
/// size of every future that carries a request.
pub fn in_request_scope<F: Future>(
    scope: Arc<Arns>,
    work: F,
) -> tokio::task::futures::TaskLocalFuture<Arc<Arns>, F> {
    REQUEST_SCOPE.scope(scope, work)
}

/// A Region name as KMS's model constrains it (`^([a-z]+-){2,3}\d+$`, 1 to 32 characters).
pub fn is_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    region.len() <= 32
        && (3..=4).contains(&parts.len())
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The text of a key's id: a UUID, or `mrk-` and 32 hex digits for a multi-Region key.
pub fn key_id_text(id: &Uuid, multi_region: bool) -> String {
    if multi_region {
        format!("mrk-{}", id.simple())
    } else {
        id.to_string()
    }
}

/// The Region and account ARNs are minted in: the home scope (the emulator's options), or a
/// request's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arns {
    pub region: String,
    pub account_id: String,
}

impl Arns {
    pub fn key_arn(&self, id: &Uuid) -> String {
        format!("arn:aws:kms:{}:{}:key/{id}", self.region, self.account_id)
    }

    /// The ARN of a key named by the text of its id (see [`key_id_text`]).
    pub fn key_arn_of(&self, id: &str) -> String {
        format!("arn:aws:kms:{}:{}:key/{id}", self.region, self.account_id)
    }

    /// The scope a request signed for `region` with access key id `access_key` is served in:
    /// the Region if it is one, the account if the access key id is 12 digits (LocalStack's
    /// convention), the home scope's otherwise.
    pub fn for_request(
        home: &Arc<Arns>,
        region: Option<&str>,
        access_key: Option<&str>,
    ) -> Arc<Arns> {
        let region = region.filter(|r| *r != home.region && is_region(r));
        let account = access_key.filter(|a| {
            a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()) && *a != home.account_id
        });
        if region.is_none() && account.is_none() {
            return home.clone();
        }
        Arc::new(Arns {
            region: region.unwrap_or(&home.region).to_string(),
            account_id: account.unwrap_or(&home.account_id).to_string(),
        })
    }

    pub fn alias_arn(&self, name: &str) -> String {
        format!("arn:aws:kms:{}:{}:{name}", self.region, self.account_id)
    }

    /// Parses a `KeyId`. `allow_alias` is false for the operations that take only a key id
    /// or key ARN.
    pub fn parse(&self, key_id: &str, allow_alias: bool) -> Result<KeyRef, KmsError> {
        if key_id.is_empty() || key_id.len() > 2048 {
            let n = i64::try_from(key_id.len()).unwrap_or(i64::MAX);
            let shown = format!(" '{key_id}'");
            return Err(KmsError::out_of_bounds(
                "keyId", &shown, "length", n, 1, 2048,
            ));
        }
        if let Some(rest) = key_id.strip_prefix("arn:") {
            let Some([partition, service, region, account, resource]) = arn_fields(rest) else {
                return Err(KmsError::InvalidArn(format!(
                    "{key_id} is not a valid ARN."
                )));
            };
            if partition != "aws" || service != "kms" {
                return Err(KmsError::InvalidArn(format!(
                    "{key_id} is not a valid KMS ARN."
                )));
            }
            if region != self.region {
                // AWS's recorded answer for another Region's ARN names the Region.
                return Err(KmsError::NotFound(format!("Invalid arn {region}")));
            }
            if account != self.account_id {
                // A key of another account does not exist here.
                return Err(KmsError::NotFound(format!("Key '{key_id}' does not exist")));
            }
            if let Some(id) = resource.strip_prefix("key/") {
                return self.bare_key_id(id);
            }
            if resource.starts_with("alias/") && allow_alias {
                return Ok(KeyRef::Alias(resource.to_string()));
            }
            return Err(KmsError::InvalidArn(format!(
                "{key_id} is not a valid key ARN."
            )));
        }
        if key_id.starts_with("alias/") {
            if allow_alias {
                return Ok(KeyRef::Alias(key_id.to_string()));
            }
            return Err(invalid_key_id(key_id));
        }
        self.bare_key_id(key_id)
    }

    /// A key id without its ARN: a UUID in its hyphenated form (AWS refuses the 32 digits
    /// without hyphens), or a multi-Region key's `mrk-` and 32 lowercase hex digits.
    fn bare_key_id(&self, id: &str) -> Result<KeyRef, KmsError> {
        if let Some(digits) = id.strip_prefix("mrk-") {
            if digits.len() == 32 && digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                if let Ok(id) = Uuid::try_parse(digits) {
                    return Ok(KeyRef::MultiRegion(id));
                }
            }
            return Err(invalid_key_id(id));
        }
        if id.len() != 36 {
            return Err(invalid_key_id(id));
        }
        Uuid::try_parse(id)
            .map(KeyRef::Key)
            .map_err(|_| invalid_key_id(id))
    }
}

/// An ARN's partition, service, Region, account and resource (what follows `arn:`), as
/// `splitn(5, ':')` gives them; a byte scan, as ARNs are short and every request with a key
/// ARN parses one (a searcher per field cost more than the rest of the parse).
fn arn_fields(rest: &str) -> Option<[&str; 5]> {
    let mut fields = [""; 5];
    let (mut start, mut n) = (0, 0);
    for (i, b) in rest.bytes().enumerate() {
        if b == b':' {
            // ':' is ASCII, so `i` is a character boundary.
            fields[n] = &rest[start..i];
            start = i + 1;
            n += 1;
            if n == 4 {
                break;
            }
        }
    }
    if n < 4 {
        return None;
    }
    fields[4] = &rest[start..];
    Some(fields)
}

/// AWS's answer for a key id that is not one (recorded).
fn invalid_key_id(id: &str) -> KmsError {
    KmsError::NotFound(format!("Invalid keyId '{id}'"))
}

#[cfg(test)]
mod recorded {
    use super::*;

    #[test]
    fn arn_fields_are_split_as_splitn_splits_them() {
        for rest in [
            "aws:kms:us-east-1:111111111111:key/1234",
            "aws:kms:us-east-1:111111111111:alias/a:b:c",
            "aws:kms:us-east-1:111111111111:",
            "::::",
            "aws:kms:us-east-1:111111111111",
            "aws:kms",
            "",
            "aws:kms:é:ü:key/ß",
        ] {
            let split: Vec<&str> = rest.splitn(5, ':').collect();
            let expected = <[&str; 5]>::try_from(split).ok();
            assert_eq!(arn_fields(rest), expected, "{rest}");
        }
    }

    /// The recorded answers of AWS (../shared/reference/aws-recorded-errors.md).
    #[test]
    fn key_ids_get_the_answers_aws_recorded() {
        let a = Arns {
            region: "us-east-1".into(),
            account_id: "111111111111".into(),
        };
        let message = |id: &str| match a.parse(id, true) {
            Err(KmsError::NotFound(m)) => m,
            other => panic!("{id}: {other:?}"),
        };
        assert_eq!(message("fake-key-id"), "Invalid keyId 'fake-key-id'");
        assert_eq!(
            message("134f2428cec14b25a1ae9048164dba47"),
            "Invalid keyId '134f2428cec14b25a1ae9048164dba47'"
        );
        assert_eq!(
            message("mrk-fake-key-id"),
            "Invalid keyId 'mrk-fake-key-id'"
        );
        // A well-formed multi-Region id is looked up (the registry answers that it does not
        // exist, with its ARN: see the registry's tests).
        let mrk = "mrk-1234abcd12ab34cd56ef1234567890ab";
        assert_eq!(
            a.parse(mrk, true),
            Ok(KeyRef::MultiRegion(
                Uuid::parse_str("1234abcd12ab34cd56ef1234567890ab").unwrap()
            ))
        );
        let elsewhere = format!("arn:aws:kms:eu-west-1:111111111111:key/{}", Uuid::new_v4());
        assert_eq!(message(&elsewhere), "Invalid arn eu-west-1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arns() -> Arns {
        Arns {
            region: "us-east-1".into(),
            account_id: "111122223333".into(),
        }
    }

    #[test]
    fn every_form_of_key_id_is_understood() {
        let id = Uuid::new_v4();
        let a = arns();
        assert_eq!(a.parse(&id.to_string(), false), Ok(KeyRef::Key(id)));
        assert_eq!(a.parse(&a.key_arn(&id), false), Ok(KeyRef::Key(id)));
        assert_eq!(
            a.parse("alias/x", true),
            Ok(KeyRef::Alias("alias/x".into()))
        );
        assert_eq!(
            a.parse(&a.alias_arn("alias/x"), true),
            Ok(KeyRef::Alias("alias/x".into()))
        );
    }

    #[test]
    fn bad_key_ids_get_aws_errors() {
        let a = arns();
        assert!(
            matches!(a.parse("nope", true), Err(KmsError::NotFound(m)) if m == "Invalid keyId 'nope'")
        );
        assert!(matches!(
            a.parse("alias/x", false),
            Err(KmsError::NotFound(_))
        ));
        assert!(matches!(
            a.parse("arn:aws:s3:::bucket", true),
            Err(KmsError::InvalidArn(_))
        ));
        assert!(matches!(
            a.parse("arn:bad", true),
            Err(KmsError::InvalidArn(_))
        ));
        let other = format!("arn:aws:kms:eu-west-1:111122223333:key/{}", Uuid::new_v4());
        assert!(matches!(a.parse(&other, true), Err(KmsError::NotFound(_))));
        assert!(matches!(a.parse("", true), Err(KmsError::Validation(_))));
    }
}
