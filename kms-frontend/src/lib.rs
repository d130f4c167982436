//! The KMS frontend of hsmkms: AWS KMS's JSON API (with CloudHSM key stores and the whole
//! deletion lifecycle), the CloudHSMv2 API and the emulator's control API, served over HTTP in
//! front of the HSM cluster.
//!
//! # Layout
//!
//! Empty for now: the next milestone fills it with `api/` (actix-web routes and AWS's JSON
//! shapes), `service/` (the domain logic: key registry, key states, key store connections,
//! deletion schedule) and `actors/` (one per key store connection, the deletion scheduler).
//! It meets the HSM nodes only through the node protocol and client in `hsmkms-common`.
