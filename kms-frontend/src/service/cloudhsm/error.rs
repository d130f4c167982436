//! The errors of the CloudHSMv2 API, one variant per error shape of its model, each with the
//! message the caller sees.

use thiserror::Error;

/// An AWS-shaped CloudHSMv2 error.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CloudHsmError {
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    InternalFailure(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    ResourceLimitExceeded(String),
    #[error("{0}")]
    ResourceNotFound(String),
    #[error("{0}")]
    Service(String),
    #[error("{0}")]
    Tag(String),
    /// Not a CloudHSM shape: the protocol-level answer to an operation the service lacks.
    #[error("{0}")]
    UnknownOperation(String),
    /// Not a CloudHSM shape: the common AWS answer to too many requests, which SDKs retry.
    #[error("{0}")]
    Throttling(String),
}

impl CloudHsmError {
    /// The shape name (`__type`).
    pub fn type_name(&self) -> &'static str {
        match self {
            CloudHsmError::AccessDenied(_) => "CloudHsmAccessDeniedException",
            CloudHsmError::InternalFailure(_) => "CloudHsmInternalFailureException",
            CloudHsmError::InvalidRequest(_) => "CloudHsmInvalidRequestException",
            CloudHsmError::ResourceLimitExceeded(_) => "CloudHsmResourceLimitExceededException",
            CloudHsmError::ResourceNotFound(_) => "CloudHsmResourceNotFoundException",
            CloudHsmError::Service(_) => "CloudHsmServiceException",
            CloudHsmError::Tag(_) => "CloudHsmTagException",
            CloudHsmError::UnknownOperation(_) => "UnknownOperationException",
            CloudHsmError::Throttling(_) => "ThrottlingException",
        }
    }

    /// HTTP status: the model sets none; 500 for the server fault, 400 for the rest.
    pub fn status(&self) -> u16 {
        match self {
            CloudHsmError::InternalFailure(_) => 500,
            _ => 400,
        }
    }

    pub fn message(&self) -> String {
        self.to_string()
    }
}
