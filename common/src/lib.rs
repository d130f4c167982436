//! Shared building blocks of hsmkms: what the KMS frontend, the HSM nodes and the launcher agree
//! on. Nothing here knows about actix or HTTP; everything here is safe to use from any crate.
//!
//! # Layout
//!
//! - [`ids`]: cluster, HSM and backup identifiers in AWS's formats, and how to mint them.
//! - [`keyfile`]: secret files written with mode 0600, and read back into secret types.
//! - [`secret`]: types that hold secrets (key material, passwords) and never reveal them.
//! - [`aead`]: AES-256-GCM sealing, and wrapping of key material under a wrapping key.
//! - [`wire`]: the node protocol: versioned envelopes, requests, responses, object records.
//! - [`group_commit`]: the storage thread that makes batches of writes durable with one fsync.
//! - [`reopen`]: a database handle reopened before the next write after a failed one.
//! - [`store_file`]: opening a store file, damaged told apart from unusable; commit faults.
//! - [`frame`]: length-delimited framing with a size limit, and postcard encoding of envelopes.
//! - [`tls`]: the cluster's certificate authority and the mutual-TLS configurations of nodes
//!   and clients.
//! - [`client`]: an async client for one node connection (pipelined calls, each with a deadline).
//! - [`clock`]: the injected clock, so nothing in core code reads the system time directly.
//! - [`entropy`]: injected randomness (the OS's, or seeded for simulations and tests).
//! - [`quiet`]: a library's panic on a damaged file caught as an error, without a backtrace.

pub mod aead;
pub mod client;
pub mod clock;
pub mod entropy;
pub mod frame;
pub mod group_commit;
pub mod ids;
pub mod keyfile;
pub mod quiet;
pub mod reopen;
pub mod secret;
pub mod store_file;
pub mod tls;
pub mod wire;
