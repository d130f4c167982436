//! The messages the node's actors exchange: connections call the node, the node pushes to its
//! peer links, peer links report back. Kept apart from the actors so that none of them needs
//! another's type: a peer link talks to the node through [`NodeSide`] recipients, and the
//! node actor and the peer link never import each other.

use actix::prelude::*;
#[cfg(feature = "test-util")]
use hsmkms_common::wire::KeyHandle;
use hsmkms_common::wire::{Object, ObjectId, Request, Response, Version, WireError};

use crate::core::ConnId;

/// A call from a client or peer connection.
#[derive(Debug, Message)]
#[rtype(result = "Response")]
pub struct Call {
    pub conn: ConnId,
    /// Whether the connection holds a node certificate.
    pub peer: bool,
    /// When the caller stops waiting (Unix milliseconds), as the connection capped it when
    /// the call came in (`connection::effective_deadline`): never 0, never more than
    /// `MAX_CALL_WAIT` away. A call whose deadline has passed is not run.
    pub deadline_unix_millis: u64,
    pub request: Request,
}

/// A connection closed: its session ends.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ConnClosed(pub ConnId);

/// From a peer link: our digest, for comparison with the peer's.
#[derive(Debug, Message)]
#[rtype(result = "Vec<u64>")]
pub struct LocalDigest;

/// From a peer link: which of the peer's entries we should fetch.
#[derive(Debug, Message)]
#[rtype(result = "Vec<ObjectId>")]
pub struct Wanted(pub Vec<(ObjectId, Version)>);

/// From a peer link: objects pulled from the peer, to merge and persist.
#[derive(Debug, Message)]
#[rtype(result = "Result<usize, WireError>")]
pub struct ApplyPulled(pub Vec<Object>);

/// From a peer link: it is connected to the peer `hsm_id`, or (None) it lost its connection.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct LinkState {
    pub address: String,
    pub hsm_id: Option<String>,
}

/// Tests only: the plaintext material of a key.
#[cfg(feature = "test-util")]
#[derive(Debug, Message)]
#[rtype(result = "Option<[u8; 32]>")]
pub struct MaterialForTest(pub KeyHandle);

/// From a peer link: an anti-entropy round with its peer completed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CaughtUp {
    pub address: String,
}

/// What a push to a peer that is not connected answers.
pub const NOT_CONNECTED: &str = "not connected";

/// Push objects to the peer; resolves once the peer has them durably.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), String>")]
pub struct Push(pub Vec<Object>);

/// The peer has just linked to this node (it said Hello): connect to it now if this link is
/// down, rather than at the next retry, and pull from it now, rather than at the next
/// anti-entropy round. It may hold changes whose pushes here failed while its link was down
/// (it restarted, say), which a client may already rely on, and pushes from here to it work
/// again only once this link is up.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct PullNow;

/// Stop the link (the peer left the cluster).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Stop;

/// What a peer link needs of its node: one recipient per message it sends there. A peer link
/// holds these rather than the node actor's address, so it does not depend on the node actor.
#[derive(Clone)]
pub struct NodeSide {
    pub digest: Recipient<LocalDigest>,
    pub wanted: Recipient<Wanted>,
    pub apply: Recipient<ApplyPulled>,
    pub link_state: Recipient<LinkState>,
    pub caught_up: Recipient<CaughtUp>,
}

impl std::fmt::Debug for NodeSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSide").finish_non_exhaustive()
    }
}

impl NodeSide {
    /// The recipients of an actor that handles every message a peer link sends.
    pub fn of<A>(addr: &Addr<A>) -> Self
    where
        A: Actor<Context = Context<A>>
            + Handler<LocalDigest>
            + Handler<Wanted>
            + Handler<ApplyPulled>
            + Handler<LinkState>
            + Handler<CaughtUp>,
    {
        Self {
            digest: addr.clone().recipient(),
            wanted: addr.clone().recipient(),
            apply: addr.clone().recipient(),
            link_state: addr.clone().recipient(),
            caught_up: addr.clone().recipient(),
        }
    }
}
