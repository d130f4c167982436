//! The `hsmkms` launcher: one command that starts a whole emulated CloudHSM cluster (and, from
//! the next milestone, the KMS frontend in front of it), plus the tools around it.
//!
//! # Layout
//!
//! - [`cluster`]: the cluster in the data directory: created once, reopened on every start.
//! - [`directory`]: the cluster as the KMS frontend sees it.
//! - [`launcher`]: `hsmkms` itself: start the HSMs, wait until they serve, print `Ready.`.
//! - [`supervisor`]: `--hsm-processes`: HSMs as supervised `hsm-node` processes.
//! - [`hsm_cli`]: `hsmkms hsm-cli`, the counterpart of the CloudHSM CLI.

pub mod cluster;
pub mod directory;
pub mod hsm_cli;
pub mod launcher;
pub mod supervisor;
