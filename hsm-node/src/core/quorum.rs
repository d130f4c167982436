//! The end of a key generation: acknowledge it, or roll it back. A pure function of what the
//! shell observed (did the local commit succeed, how many peers acknowledged the key, the
//! caller's deadline and the time now); the node actor only carries the decision out.

use std::time::Duration;

use hsmkms_common::wire::ErrorCode;

/// A key generation is acknowledged only this long before its caller's deadline at the latest;
/// later, the caller may already have given up and retried elsewhere, so it is rolled back.
pub const ACK_MARGIN_MILLIS: u64 = 500;

/// What a key generation observed once its local commit and the pushes it waited for are done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The local commit's outcome (its error, as text).
    pub local: Result<(), String>,
    /// Peers that acknowledged the key durable.
    pub acked_remote: usize,
    /// HSMs the key must be durable on, this one included.
    pub quorum: usize,
    /// When the caller stops waiting (Unix milliseconds): the call's deadline as its
    /// connection capped it, never 0.
    pub deadline_unix_millis: u64,
    /// The time now (Unix milliseconds).
    pub now_millis: u64,
}

/// How a key generation ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenerationEnd {
    /// Durable here and on enough peers, in time: answer with the key.
    Acknowledge,
    /// Roll the key back (a tombstone, here and on the peers) and answer this error.
    RollBack { code: ErrorCode, message: String },
}

/// Decides how a key generation ends. `call_deadline` is how long the pushes may take,
/// for the error's text.
pub fn end_of_generation(observed: &Observed, call_deadline: Duration) -> GenerationEnd {
    let late = observed.now_millis
        >= observed
            .deadline_unix_millis
            .saturating_sub(ACK_MARGIN_MILLIS);
    let held_by = observed.acked_remote.saturating_add(1);
    let (code, why) = match &observed.local {
        Ok(()) if held_by >= observed.quorum && !late => return GenerationEnd::Acknowledge,
        Err(e) => (
            ErrorCode::QuorumNotReached,
            format!("it could not be stored on this HSM ({e})"),
        ),
        Ok(()) if late => (
            ErrorCode::DeadlineExceeded,
            "its caller's deadline passed before it was acknowledged".to_string(),
        ),
        Ok(()) => (
            ErrorCode::QuorumNotReached,
            format!(
                "it reached {held_by} of the {} HSMs it must be on",
                observed.quorum
            ),
        ),
    };
    GenerationEnd::RollBack {
        code,
        message: format!(
            "key generation failed and was rolled back: {why} within {call_deadline:?}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(5);

    fn observed(local: Result<(), &str>, acked_remote: usize, quorum: usize) -> Observed {
        Observed {
            local: local.map_err(str::to_string),
            acked_remote,
            quorum,
            deadline_unix_millis: 10_000,
            now_millis: 9_000,
        }
    }

    fn code(end: GenerationEnd) -> Option<ErrorCode> {
        match end {
            GenerationEnd::Acknowledge => None,
            GenerationEnd::RollBack { code, .. } => Some(code),
        }
    }

    #[test]
    fn a_key_is_acknowledged_only_durable_on_its_quorum_in_time() {
        // Here and on one peer, with a quorum of two; or alone in a cluster of one.
        assert_eq!(
            end_of_generation(&observed(Ok(()), 1, 2), DEADLINE),
            GenerationEnd::Acknowledge
        );
        assert_eq!(
            end_of_generation(&observed(Ok(()), 0, 1), DEADLINE),
            GenerationEnd::Acknowledge
        );
        // No peer acknowledged: rolled back, saying how far it got.
        let end = end_of_generation(&observed(Ok(()), 0, 2), DEADLINE);
        match &end {
            GenerationEnd::RollBack { message, .. } => {
                assert!(message.contains("1 of the 2"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(code(end), Some(ErrorCode::QuorumNotReached));
        // Not durable here: rolled back, whatever the peers said.
        assert_eq!(
            code(end_of_generation(
                &observed(Err("disk full"), 2, 2),
                DEADLINE
            )),
            Some(ErrorCode::QuorumNotReached)
        );
    }

    #[test]
    fn a_key_ready_within_the_margin_of_its_deadline_is_rolled_back() {
        let mut late = observed(Ok(()), 1, 2);
        late.now_millis = 10_000 - ACK_MARGIN_MILLIS;
        assert_eq!(
            code(end_of_generation(&late, DEADLINE)),
            Some(ErrorCode::DeadlineExceeded)
        );
        late.now_millis -= 1;
        assert_eq!(
            end_of_generation(&late, DEADLINE),
            GenerationEnd::Acknowledge
        );
        // A deadline too close to zero to leave a margin: late at once.
        late.deadline_unix_millis = 100;
        late.now_millis = 0;
        assert_eq!(
            code(end_of_generation(&late, DEADLINE)),
            Some(ErrorCode::DeadlineExceeded)
        );
    }
}
