//! Every error the KMS API answers with, one variant per AWS error shape, each carrying the
//! message the caller sees. One exhaustive `match` gives each its `__type` and HTTP status.

use thiserror::Error;

/// An AWS-shaped KMS error.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KmsError {
    #[error("{0}")]
    NotFound(String),
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
}

impl KmsError {
    /// The `__type` AWS puts in the error body (and SDKs map to an exception class).
    pub fn type_name(&self) -> &'static str {
        match self {
            KmsError::NotFound(_) => "NotFoundException",
            KmsError::InvalidArn(_) => "InvalidArnException",
            KmsError::Disabled(_) => "DisabledException",
            KmsError::KmsInvalidState(_) => "KMSInvalidStateException",
            KmsError::InvalidCiphertext(_) => "InvalidCiphertextException",
            KmsError::IncorrectKey(_) => "IncorrectKeyException",
            KmsError::InvalidKeyUsage(_) => "InvalidKeyUsageException",
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
