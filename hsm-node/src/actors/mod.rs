//! The actix shells around the sans-IO core: they move messages, run I/O and timers, and
//! decide nothing themselves.
//!
//! - [`node`]: the node actor, the shell that does the core's I/O.
//! - [`peer`]: one actor per peer: pushes, reconnects, anti-entropy pulls.
//! - [`connection`]: the TLS listener and one actor per client or peer connection.
//! - [`messages`]: what they say to each other; a peer link reaches its node through
//!   recipients ([`messages::NodeSide`]), so the node and peer actors never import each other.
//! - [`stall`]: how each of them obeys the stall switch ([`crate::stall`]).

pub mod connection;
pub mod messages;
pub mod node;
pub mod peer;
pub mod stall;
