//! An HSM node of an hsmkms cluster, modelled on a CloudHSM HSM: users (crypto officers and
//! crypto users such as `kmsuser`) with sessions and lockout, non-extractable AES-256 key
//! objects, and replication of both to every other node of the cluster.
//!
//! # Layout
//!
//! The sans-IO core and what it needs, no actix:
//!
//! - [`core`]: the node core: objects, versions, digests, sessions, every decision.
//! - [`store`]: the redb store behind a group-committing storage thread (and its fault hook).
//! - [`material`]: wrapping objects for the wire (sync key) and for the disk (storage key).
//! - [`password`]: argon2 password hashing.
//! - [`backup`]: cluster backups: reading every object of an HSM, sealing, restoring.
//! - [`config`]: the node directory: configuration, certificates, keys; provisioning.
//! - [`options`]: the node's tunables: deadlines, intervals, bounds.
//! - [`rebuild`]: when a node rebuilding its store from its peers may serve again.
//! - [`seeds`]: the addresses a node links to beyond its membership, bounded and pruned.
//! - [`stall`]: the stall switch of fault injection (a node that behaves as if SIGSTOPped).
//!
//! The actix shells, under [`actors`] (each also at its old path, `hsm_node::node` and so on):
//!
//! - [`actors::node`]: the node actor, the shell that does the core's I/O.
//! - [`actors::peer`]: one actor per peer: pushes, reconnects, anti-entropy pulls.
//! - [`actors::connection`]: the TLS listener and one actor per client or peer connection.
//! - [`actors::messages`]: what the actors say to each other.
//! - [`actors::stall`]: how each actor obeys the stall switch.
//!
//! Running it:
//!
//! - [`handle`]: starting and stopping a node on a thread of its own.
//! - [`cli`]: the `hsm-node` command.

pub mod actors;
pub mod backup;
pub mod cli;
pub mod config;
pub mod core;
pub mod handle;
pub mod material;
pub mod options;
pub mod password;
pub mod rebuild;
pub mod seeds;
pub mod stall;
pub mod store;

// The actors at the paths other crates have used (`hsm_node::node::LocalDigest`, ...).
pub use actors::{connection, messages, node, peer};

pub use handle::NodeHandle;
pub use options::NodeOptions;
