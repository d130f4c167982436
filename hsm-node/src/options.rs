//! A node's tunables. Every cross-node wait has its deadline here; every queue its bound.

use std::time::Duration;

/// Messages the node actor queues before senders wait.
pub const MAILBOX_CAPACITY: usize = 4_096;

/// Longest a call may ask the node to work on it: a call's deadline is capped this far from
/// its arrival, and a deadline of 0 (the wire's "none") means this long. No caller can ask
/// for an unbounded wait.
pub const MAX_CALL_WAIT: Duration = Duration::from_secs(60);

/// How long past a call's deadline its connection still waits for the node's answer before
/// answering `DeadlineExceeded` itself: the node answers a call it could not finish in time
/// by its own deadline checks, with the real reason, well within this.
pub const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// Bytes one connection may hold in memory by default: the frames of its calls in flight and
/// the answers queued for it that its client has not read yet. A call past it gets an error
/// answer at once. Counting calls alone let one connection hold 1,024 calls of up to 4 MiB
/// each, and their answers again, if its client stopped reading.
pub const MAX_HELD_BYTES_PER_CONNECTION: usize = 16 * 1024 * 1024;

/// Attempts at making durable a change the node makes on its own, that no caller waits for (a
/// key's roll-back, its own member record): one, then retries after 100 ms, 200 ms, ... up to
/// [`RETRIED_COMMIT_MAX_BACKOFF`] apart (about a minute and a half in all). Until it is
/// durable a rolled-back key stays on this HSM's disk, and could spread from there; a moved
/// HSM's address is not advertised.
pub const RETRIED_COMMIT_ATTEMPTS: u32 = 20;
/// Longest wait between two attempts of [`RETRIED_COMMIT_ATTEMPTS`].
pub const RETRIED_COMMIT_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The wait after failed attempt number `attempt` (from 1) of [`RETRIED_COMMIT_ATTEMPTS`]:
/// 100 ms, doubling, at most [`RETRIED_COMMIT_MAX_BACKOFF`].
pub fn retry_backoff(attempt: u32) -> Duration {
    Duration::from_millis(100)
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(RETRIED_COMMIT_MAX_BACKOFF)
}

/// Tunables of a node; every cross-node wait has a deadline here.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// How long a new key may take to reach its quorum, and any peer call may take.
    pub call_deadline: Duration,
    /// How often each peer link compares digests with its peer.
    pub anti_entropy_interval: Duration,
    /// How often a broken peer link tries to reconnect.
    pub reconnect_interval: Duration,
    /// How long a TLS handshake may take before the connection is dropped.
    pub handshake_timeout: Duration,
    /// Most client and peer connections served at once.
    pub max_connections: usize,
    /// How long a node rebuilding its store waits for peers that do not answer, once at
    /// least one has caught it up ([`crate::rebuild`]).
    pub rebuild_wait: Duration,
    /// Most bytes of calls in flight and unread answers one connection may hold.
    pub max_held_bytes_per_connection: usize,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            call_deadline: Duration::from_secs(5),
            anti_entropy_interval: Duration::from_secs(1),
            reconnect_interval: Duration::from_millis(250),
            handshake_timeout: Duration::from_secs(3),
            max_connections: 1_024,
            rebuild_wait: Duration::from_secs(10),
            max_held_bytes_per_connection: MAX_HELD_BYTES_PER_CONNECTION,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_100_ms_doubling_to_the_cap() {
        let waits: Vec<u64> = (1..=8)
            .map(|a| retry_backoff(a).as_millis() as u64)
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000]);
        assert_eq!(retry_backoff(u32::MAX), RETRIED_COMMIT_MAX_BACKOFF);
        assert_eq!(retry_backoff(0), Duration::from_millis(100));
    }
}
