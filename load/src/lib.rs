//! `hsmkms-load`: the load tool of hsmkms, kept apart from the emulator so the emulator's binary
//! carries only what it serves with (no HTTP client, SigV4 signer, plotting or progress bars).
//!
//! # Layout
//!
//! - [`bench`]: `hsmkms-load bench`, the load run: options, connections, results.
//! - [`client`]: one keep-alive connection sending SigV4-signed AWS JSON 1.1 requests.
//! - [`ops`]: what each operation sends, how its answer is checked, and the set-up before a run.
//! - [`echo`]: `hsmkms-load echo`, the comparison's reference handlers (parse and answer,
//!   inline AES-GCM, AES-GCM in an actor on another arbiter).
//! - [`wrk`]: `hsmkms-load wrk-script`, the same set-up as a script for the external load
//!   generator `wrk`.
//! - [`report`]: `hsmkms-load report`, which turns comparison results into `BENCHMARKS.md`
//!   and an SVG chart.

pub mod bench;
pub mod client;
pub mod echo;
pub mod ops;
pub mod report;
pub mod wrk;
