//! An HSM node of an hsmkms cluster, modelled on a CloudHSM HSM: users (crypto officers and
//! crypto users such as `kmsuser`) with sessions and lockout, non-extractable AES-256 key
//! objects, and replication of both to every other node of the cluster.
//!
//! # Layout
//!
//! - [`backup`]: cluster backups: reading every object of an HSM, sealing, restoring.
//! - [`core`]: the sans-IO node core: objects, versions, digests, sessions, every decision.
//! - [`material`]: wrapping objects for the wire (sync key) and for the disk (storage key).
//! - [`password`]: argon2 password hashing.
//! - [`store`]: the redb store behind a group-committing storage thread.
//! - [`config`]: the node directory: configuration, certificates, keys; provisioning.
//! - [`options`]: the node's tunables: deadlines, intervals, bounds.
//! - [`messages`]: what the actors say to each other; a peer link reaches its node through
//!   recipients ([`messages::NodeSide`]), so the node and peer actors never import each other.
//! - [`node`]: the node actor, the shell that does the core's I/O.
//! - [`peer`]: one actor per peer: pushes, reconnects, anti-entropy pulls.
//! - [`connection`]: the TLS listener and one actor per client or peer connection.
//! - [`handle`]: starting and stopping a node on a thread of its own.
//! - [`cli`]: the `hsm-node` command.

pub mod backup;
pub mod cli;
pub mod config;
pub mod connection;
pub mod core;
pub mod handle;
pub mod material;
pub mod messages;
pub mod node;
pub mod options;
pub mod password;
pub mod peer;
pub mod store;

pub use handle::NodeHandle;
pub use options::NodeOptions;
