//! Grants (CreateGrant, ListGrants, ListRetirableGrants, RetireGrant, RevokeGrant), planned as
//! changes like every other write. They are stored and listed as AWS does; they are not yet
//! enforced, as key policies are not (every caller may use every key).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use hsmkms_common::entropy::Entropy;
use uuid::Uuid;

use super::Registry;
use crate::service::change::Change;
use crate::service::error::KmsError;
use crate::service::key_state::KeyOp;
use crate::service::model::{GrantConstraints, GrantRecord};

/// KMS's quota of grants on one key.
pub const MAX_GRANTS_PER_KEY: usize = 50_000;

/// The operations a grant may allow (the model's `GrantOperation`).
pub const GRANT_OPERATIONS: [&str; 17] = [
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "Sign",
    "Verify",
    "GetPublicKey",
    "CreateGrant",
    "RetireGrant",
    "DescribeKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateMac",
    "VerifyMac",
    "DeriveSharedSecret",
];

/// What a grant token carries before base64: a tag, the key, the grant and the grant's nonce.
const TOKEN_TAG: &str = "hsmkms-grant-token/v1";

/// A grant's row in the grants table.
pub fn row(key_id: &Uuid, grant_id: &str) -> String {
    format!("{key_id}/{grant_id}")
}

/// A CreateGrant request, its members checked for shape by the API layer.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    pub key_id: String,
    pub grantee_principal: String,
    pub retiring_principal: Option<String>,
    pub operations: Vec<String>,
    pub constraints: Option<GrantConstraints>,
    pub name: Option<String>,
}

/// A token for `grant`: usable at once (RetireGrant takes it), opaque to the caller.
fn token(grant: &GrantRecord) -> String {
    B64URL.encode(format!(
        "{TOKEN_TAG}:{}:{}:{}",
        grant.key_id,
        grant.grant_id,
        hex::encode(grant.token_nonce)
    ))
}

/// The key and grant a token names, if it is one of ours.
fn parse_token(token: &str) -> Option<(Uuid, String, String)> {
    let text = String::from_utf8(B64URL.decode(token.trim_end_matches('=')).ok()?).ok()?;
    let mut parts = text.split(':');
    if parts.next()? != TOKEN_TAG {
        return None;
    }
    let key_id = Uuid::parse_str(parts.next()?).ok()?;
    let grant_id = parts.next()?.to_string();
    let nonce = parts.next()?.to_string();
    parts.next().is_none().then_some((key_id, grant_id, nonce))
}

/// Checks the `GrantTokens` of a request: each must be a token hsmkms made (KMS answers
/// InvalidGrantTokenException for one that is not a grant token). Grants are not enforced, so
/// a token of a retired grant, or of another key's grant, still passes.
pub fn check_grant_tokens(tokens: &[String]) -> Result<(), KmsError> {
    if tokens.iter().all(|t| parse_token(t).is_some()) {
        Ok(())
    } else {
        Err(invalid_grant_token())
    }
}

/// A grant id as KMS makes them: 64 lowercase hex digits.
fn well_formed_grant_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn grant_not_found(grant_id: &str) -> KmsError {
    KmsError::NotFound(format!("Grant ID {grant_id} not found."))
}

fn invalid_grant_id(grant_id: &str) -> KmsError {
    KmsError::InvalidGrantId(format!("Invalid grant ID: {grant_id}"))
}

fn invalid_grant_token() -> KmsError {
    KmsError::InvalidGrantToken("The grant token is not valid.".into())
}

impl Registry {
    /// The grants on `key`, in grant id order.
    pub(super) fn grants_of(&self, key: &Uuid) -> impl Iterator<Item = &GrantRecord> + '_ {
        let key = *key;
        self.grants
            .range((key, String::new())..)
            .take_while(move |((k, _), _)| *k == key)
            .map(|(_, g)| g)
    }

    /// CreateGrant: the grant to store, its id and a token. A grant with the same name and the
    /// same terms as one the key has is that grant again (AWS's answer to a retried
    /// CreateGrant): nothing to store, its id, a token for it.
    pub fn create_grant(
        &self,
        req: GrantRequest,
        now: u64,
        entropy: &dyn Entropy,
    ) -> Result<(Vec<Change>, String, String), KmsError> {
        let key_id = self.checked(&req.key_id, false, KeyOp::CreateGrant)?.key_id;
        if let Some(name) = &req.name {
            let same = self.grants_of(&key_id).find(|g| {
                g.name.as_ref() == Some(name)
                    && g.grantee_principal == req.grantee_principal
                    && g.retiring_principal == req.retiring_principal
                    && g.operations == req.operations
                    && g.constraints == req.constraints
            });
            if let Some(grant) = same {
                return Ok((vec![], grant.grant_id.clone(), token(grant)));
            }
        }
        if self.grants_of(&key_id).count() >= MAX_GRANTS_PER_KEY {
            return Err(KmsError::LimitExceeded(format!(
                "The request was rejected because the number of grants on KMS key {} exceeds {MAX_GRANTS_PER_KEY}.",
                self.key_arn(&key_id)
            )));
        }
        let mut id = [0u8; 32];
        entropy.fill(&mut id);
        let mut token_nonce = [0u8; 16];
        entropy.fill(&mut token_nonce);
        let grant = GrantRecord {
            grant_id: hex::encode(id),
            key_id,
            name: req.name,
            grantee_principal: req.grantee_principal,
            retiring_principal: req.retiring_principal,
            issuing_account: format!("arn:aws:iam::{}:root", self.scope().account_id),
            operations: req.operations,
            constraints: req.constraints,
            created_at_millis: now,
            token_nonce,
        };
        let answer = (grant.grant_id.clone(), token(&grant));
        Ok((vec![Change::PutGrant(grant)], answer.0, answer.1))
    }

    /// ListGrants: the key's grants, those with `grant_id` or for `grantee` only if given.
    pub fn list_grants(
        &self,
        key_id: &str,
        grant_id: Option<&str>,
        grantee: Option<&str>,
    ) -> Result<Vec<&GrantRecord>, KmsError> {
        let key = self.checked(key_id, false, KeyOp::ListGrants)?.key_id;
        if let Some(id) = grant_id.filter(|id| !well_formed_grant_id(id)) {
            return Err(invalid_grant_id(id));
        }
        Ok(self
            .grants_of(&key)
            .filter(|g| grant_id.is_none_or(|id| g.grant_id == id))
            .filter(|g| grantee.is_none_or(|p| g.grantee_principal == p))
            .collect())
    }

    /// ListRetirableGrants: every grant `principal` may retire on the keys of the request's
    /// Region and account, by key then grant id.
    pub fn retirable_grants(&self, principal: &str) -> Vec<&GrantRecord> {
        let scope = self.scope();
        self.grants
            .values()
            .filter(|g| g.retiring_principal.as_deref() == Some(principal))
            .filter(|g| self.in_scope(&g.key_id, &scope))
            .collect()
    }

    /// RetireGrant (by token, or by key and grant id) and RevokeGrant (by key and grant id):
    /// the grant's removal.
    pub fn remove_grant(
        &self,
        key_id: Option<&str>,
        grant_id: Option<&str>,
        token: Option<&str>,
    ) -> Result<Vec<Change>, KmsError> {
        let (key, grant_id) = match (key_id, grant_id, token) {
            (Some(key_id), Some(grant_id), _) => {
                let key = self.checked(key_id, false, KeyOp::RetireGrant)?.key_id;
                if !well_formed_grant_id(grant_id) {
                    return Err(invalid_grant_id(grant_id));
                }
                (key, grant_id.to_string())
            }
            (None, None, Some(token)) => {
                // A grant goes with its key, so a grant that exists has a key, and RetireGrant
                // runs in every key state: the grant's existence is the one check (below).
                let (key, grant_id, nonce) = parse_token(token).ok_or_else(invalid_grant_token)?;
                if let Some(g) = self.grants.get(&(key, grant_id.clone())) {
                    if hex::encode(g.token_nonce) != nonce {
                        return Err(invalid_grant_token());
                    }
                }
                (key, grant_id)
            }
            (None, Some(_), _) => {
                return Err(KmsError::Validation(
                    "A KeyId is required with a GrantId.".into(),
                ))
            }
            (Some(_), None, _) => {
                return Err(KmsError::Validation(
                    "A GrantId is required with a KeyId.".into(),
                ))
            }
            (None, None, None) => {
                return Err(KmsError::Validation(
                    "Either a GrantToken, or a KeyId and a GrantId, is required.".into(),
                ))
            }
        };
        if !self.grants.contains_key(&(key, grant_id.clone())) {
            return Err(grant_not_found(&grant_id));
        }
        Ok(vec![Change::DeleteGrant {
            key_id: key,
            grant_id,
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_grant_and_nothing_else_parses() {
        let grant = GrantRecord {
            grant_id: "ab".repeat(32),
            key_id: Uuid::new_v4(),
            name: None,
            grantee_principal: "p".into(),
            retiring_principal: None,
            issuing_account: "arn:aws:iam::111122223333:root".into(),
            operations: vec!["Encrypt".into()],
            constraints: None,
            created_at_millis: 0,
            token_nonce: [7; 16],
        };
        let t = token(&grant);
        assert_eq!(
            parse_token(&t),
            Some((grant.key_id, grant.grant_id.clone(), hex::encode([7; 16])))
        );
        for bad in ["", "x", "aGVsbG8", &t[1..]] {
            assert_eq!(parse_token(bad), None, "{bad}");
        }
        assert!(well_formed_grant_id(&grant.grant_id));
        assert!(!well_formed_grant_id("AB"));
    }
}
