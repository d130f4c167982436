//! The domain: plain Rust, no actix or serde-JSON types in the logic.

pub mod asymmetric;
pub mod change;
pub mod ciphertext;
pub mod clock;
pub mod cloudhsm;
pub mod connect;
pub mod connection_state;
pub mod error;
pub mod key_ref;
pub mod key_spec;
pub mod key_state;
pub mod model;
pub mod registry;
pub mod seed;
