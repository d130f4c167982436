//! Every error the KMS API answers with, one variant per AWS error shape, each carrying the
//! message the caller sees. One exhaustive `match` gives each its `__type` and HTTP status.

use thiserror::Error;

/// An AWS-shaped KMS error.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KmsError {
    #[error("{0}")]
    NotFound(String),
    /// A grant token that is malformed or names no grant of the key.
    #[error("{0}")]
    InvalidGrantToken(String),
    /// A grant id that names no grant of the key.
    #[error("{0}")]
    InvalidGrantId(String),
    #[error("{0}")]
    InvalidArn(String),
    #[error("{0}")]
    Disabled(String),
    #[error("{0}")]
    KmsInvalidState(String),
    #[error("{0}")]
    InvalidCiphertext(String),
    #[error("{0}")]
    IncorrectKey(String),
    #[error("{0}")]
    InvalidKeyUsage(String),
    /// Verify: the signature does not verify (AWS sends no message).
    #[error("{0}")]
    KmsInvalidSignature(String),
    /// VerifyMac: the MAC does not verify (AWS sends no message).
    #[error("{0}")]
    KmsInvalidMac(String),
    /// ImportKeyMaterial: a token this frontend did not make, or made for another key.
    #[error("{0}")]
    InvalidImportToken(String),
    /// ImportKeyMaterial: a token past its 24 hours on the emulator clock.
    #[error("{0}")]
    ExpiredImportToken(String),
    /// ImportKeyMaterial: material the key cannot take, or not the material it had.
    #[error("{0}")]
    IncorrectKeyMaterial(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidAliasName(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    InvalidMarker(String),
    #[error("{0}")]
    Tag(String),
    #[error("{0}")]
    UnsupportedOperation(String),
    #[error("{0}")]
    MalformedPolicyDocument(String),
    #[error("{0}")]
    CustomKeyStoreNotFound(String),
    #[error("{0}")]
    CustomKeyStoreInvalidState(String),
    #[error("{0}")]
    CustomKeyStoreNameInUse(String),
    #[error("{0}")]
    CustomKeyStoreHasCmks(String),
    #[error("{0}")]
    CloudHsmClusterNotFound(String),
    #[error("{0}")]
    CloudHsmClusterNotActive(String),
    #[error("{0}")]
    CloudHsmClusterInUse(String),
    #[error("{0}")]
    CloudHsmClusterInvalidConfiguration(String),
    #[error("{0}")]
    CloudHsmClusterNotRelated(String),
    #[error("{0}")]
    IncorrectTrustAnchor(String),
    /// The request names an operation the service does not have.
    #[error("{0}")]
    UnknownOperation(String),
    /// The request body is not valid JSON of the right shape.
    #[error("{0}")]
    Serialization(String),
    /// The request would have succeeded, but `DryRun` was set.
    #[error("{0}")]
    DryRunOperation(String),
    #[error("{0}")]
    KmsInternal(String),
    #[error("{0}")]
    DependencyTimeout(String),
    #[error("{0}")]
    KeyUnavailable(String),
    /// The request's body did not arrive in time (HTTP 408, as AWS answers a stalled upload).
    #[error("{0}")]
    RequestTimeout(String),
    /// Too many requests for now (the common AWS error SDKs retry with backoff).
    #[error("{0}")]
    Throttling(String),
}

impl KmsError {
    /// The `__type` AWS puts in the error body (and SDKs map to an exception class).
    pub fn type_name(&self) -> &'static str {
        match self {
            KmsError::NotFound(_) => "NotFoundException",
            KmsError::InvalidGrantToken(_) => "InvalidGrantTokenException",
            KmsError::InvalidGrantId(_) => "InvalidGrantIdException",
            KmsError::InvalidArn(_) => "InvalidArnException",
            KmsError::Disabled(_) => "DisabledException",
            KmsError::KmsInvalidState(_) => "KMSInvalidStateException",
            KmsError::InvalidCiphertext(_) => "InvalidCiphertextException",
            KmsError::IncorrectKey(_) => "IncorrectKeyException",
            KmsError::InvalidKeyUsage(_) => "InvalidKeyUsageException",
            KmsError::KmsInvalidSignature(_) => "KMSInvalidSignatureException",
            KmsError::KmsInvalidMac(_) => "KMSInvalidMacException",
            KmsError::InvalidImportToken(_) => "InvalidImportTokenException",
            KmsError::ExpiredImportToken(_) => "ExpiredImportTokenException",
            KmsError::IncorrectKeyMaterial(_) => "IncorrectKeyMaterialException",
            KmsError::Validation(_) => "ValidationException",
            KmsError::AlreadyExists(_) => "AlreadyExistsException",
            KmsError::InvalidAliasName(_) => "InvalidAliasNameException",
            KmsError::LimitExceeded(_) => "LimitExceededException",
            KmsError::InvalidMarker(_) => "InvalidMarkerException",
            KmsError::Tag(_) => "TagException",
            KmsError::UnsupportedOperation(_) => "UnsupportedOperationException",
            KmsError::MalformedPolicyDocument(_) => "MalformedPolicyDocumentException",
            KmsError::CustomKeyStoreNotFound(_) => "CustomKeyStoreNotFoundException",
            KmsError::CustomKeyStoreInvalidState(_) => "CustomKeyStoreInvalidStateException",
            KmsError::CustomKeyStoreNameInUse(_) => "CustomKeyStoreNameInUseException",
            KmsError::CustomKeyStoreHasCmks(_) => "CustomKeyStoreHasCMKsException",
            KmsError::CloudHsmClusterNotFound(_) => "CloudHsmClusterNotFoundException",
            KmsError::CloudHsmClusterNotActive(_) => "CloudHsmClusterNotActiveException",
            KmsError::CloudHsmClusterInUse(_) => "CloudHsmClusterInUseException",
            KmsError::CloudHsmClusterInvalidConfiguration(_) => {
                "CloudHsmClusterInvalidConfigurationException"
            }
            KmsError::CloudHsmClusterNotRelated(_) => "CloudHsmClusterNotRelatedException",
            KmsError::IncorrectTrustAnchor(_) => "IncorrectTrustAnchorException",
            KmsError::UnknownOperation(_) => "UnknownOperationException",
            KmsError::Serialization(_) => "SerializationException",
            KmsError::DryRunOperation(_) => "DryRunOperationException",
            KmsError::KmsInternal(_) => "KMSInternalException",
            KmsError::DependencyTimeout(_) => "DependencyTimeoutException",
            KmsError::KeyUnavailable(_) => "KeyUnavailableException",
            KmsError::RequestTimeout(_) => "RequestTimeoutException",
            KmsError::Throttling(_) => "ThrottlingException",
        }
    }

    /// HTTP status: 400 for every client error (as KMS answers on the JSON wire), 500 for the
    /// server faults (the model's 503 for DependencyTimeoutException is not used; see README).
    pub fn status(&self) -> u16 {
        match self {
            KmsError::KmsInternal(_)
            | KmsError::DependencyTimeout(_)
            | KmsError::KeyUnavailable(_) => 500,
            KmsError::RequestTimeout(_) => 408,
            _ => 400,
        }
    }

    /// The message the caller sees.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

// Errors that more than one place gives, each text written once, here.
impl KmsError {
    /// No HSM of a key store's cluster answered, or the store has no session on any.
    pub fn cluster_unreachable() -> Self {
        KmsError::KmsInvalidState(
            "KMS cannot communicate with your CloudHSM cluster. This might be a transient network issue. \
             If you see this error repeatedly, verify that the Network ACLs and the security group rules \
             for the VPC of your AWS CloudHSM cluster are correct."
                .into(),
        )
    }

    /// The backing key of a key store key is not on the HSM that was asked.
    pub fn key_material_missing() -> Self {
        KmsError::KmsInvalidState(
            "The key material for this KMS key is not in the associated AWS CloudHSM cluster."
                .into(),
        )
    }

    /// The cluster did not answer within the request's deadline.
    pub fn dependency_timeout() -> Self {
        KmsError::DependencyTimeout(
            "The system timed out while trying to fulfill the request. The request can be retried."
                .into(),
        )
    }

    /// Too many changes are still running after their callers gave up (a disk or cluster that
    /// stopped answering): a new one is refused at once.
    pub fn throttled() -> Self {
        KmsError::Throttling(
            "Too many earlier requests are still being processed. Retry the request later.".into(),
        )
    }

    /// A ciphertext that does not parse, or does not open under its key with the given
    /// encryption context. AWS answers it without a message (recorded), which also says
    /// nothing about which check failed or whether a key exists.
    pub fn invalid_ciphertext() -> Self {
        KmsError::InvalidCiphertext(String::new())
    }

    /// A commit to the store failed: nothing changed.
    pub fn not_stored(cause: impl std::fmt::Display) -> Self {
        KmsError::KmsInternal(format!("The change could not be stored: {cause}"))
    }

    /// GetKeyPolicy or PutKeyPolicy with a policy name other than `default`.
    pub fn no_such_policy(name: &str) -> Self {
        KmsError::NotFound(format!("No such policy exists: {name}"))
    }

    /// GenerateDataKey or GenerateRandom without a length.
    pub fn length_missing() -> Self {
        KmsError::Validation("Please specify either number of bytes or key spec.".into())
    }

    /// A key store name another store of the account has.
    pub fn store_name_in_use(name: &str) -> Self {
        KmsError::CustomKeyStoreNameInUse(format!(
            "The custom key store name {name} is already in use."
        ))
    }

    /// A cluster ID the account does not have.
    pub fn cluster_not_found(cluster_id: &str) -> Self {
        KmsError::CloudHsmClusterNotFound(format!("AWS CloudHSM cluster {cluster_id} not found."))
    }

    /// A cluster without two active HSMs in two Availability Zones.
    pub fn cluster_too_small(cluster_id: &str) -> Self {
        KmsError::CloudHsmClusterInvalidConfiguration(format!(
            "AWS CloudHSM cluster {cluster_id} must contain at least two active HSMs in different Availability Zones."
        ))
    }

    /// A key that would have more tags than a key may.
    /// More tags on a key than its quota: AWS's text (recorded) names no number.
    pub fn too_many_tags() -> Self {
        KmsError::Tag("Too many tags".into())
    }

    /// `NumberOfBytes` out of its bounds: one message per bound, as AWS words them.
    pub fn number_of_bytes(n: i64) -> Self {
        let bound = if n < 1 {
            "greater than or equal to 1"
        } else {
            "less than or equal to 1024"
        };
        KmsError::Validation(format!(
            "1 validation error detected: Value '{n}' at 'numberOfBytes' failed to satisfy constraint: Member must have value {bound}"
        ))
    }

    /// A value of an enumerated member outside its set.
    /// A length or value outside `min..=max`, in AWS's words: one message for the bound
    /// broken (`Member must have length greater than or equal to 1`). `shown` is the value as
    /// the message quotes it (` 'x'`), or empty for a member AWS does not show.
    pub fn out_of_bounds(
        member: &str,
        shown: &str,
        what: &str,
        n: i64,
        min: i64,
        max: i64,
    ) -> Self {
        let bound = if n < min {
            format!("greater than or equal to {min}")
        } else {
            format!("less than or equal to {max}")
        };
        KmsError::Validation(format!(
            "1 validation error detected: Value{shown} at '{member}' failed to satisfy constraint: Member must have {what} {bound}"
        ))
    }

    pub fn not_in_enum(member: &str, value: &str, allowed: &[&str]) -> Self {
        KmsError::Validation(format!(
            "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
            allowed.join(", ")
        ))
    }
}
