//! The `hsmkms` launcher: one command that starts the emulated CloudHSM clusters and the KMS
//! frontend in front of them, plus the tools around it.
//!
//! # Layout
//!
//! - [`cluster`]: the cluster in the data directory: created once, reopened on every start.
//! - [`provisioner`]: the CloudHSM service's HSMs: created, started, removed, backed up.
//! - [`launcher`]: `hsmkms` itself: start the HSMs, wait until they serve, print `Ready.`.
//! - [`supervisor`]: `--hsm-processes`: HSMs as supervised `hsm-node` processes.
//! - [`reset`]: a cluster reset's files: the new cluster beside the old, the decision, the
//!   switch, and its finish at start.
//! - [`hsm_cli`]: `hsmkms hsm-cli`, the counterpart of the CloudHSM CLI.
//!
//! The load tool (`hsmkms-load`) is a workspace member of its own, `load/`.

pub mod cluster;
pub mod hsm_cli;
pub mod launcher;
pub mod provisioner;
pub mod reset;
pub mod supervisor;
