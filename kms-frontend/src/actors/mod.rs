//! The thin actix shells of the frontend: they move messages, run I/O and timers; the decisions
//! are in [`crate::service`].
//!
//! - [`key_store`]: one actor per custom key store, owning its kmsuser sessions.
//! - [`gateway`]: finds a store's actor and sends it each call with a deadline.
//! - [`scheduler`]: the timer that runs due deletions and the CloudHSM clockwork.

pub mod gateway;
pub mod key_store;
pub mod scheduler;

pub use gateway::HsmGateway;
pub use key_store::{KeyStoreActor, HSM_DEADLINE, KMSUSER, OPEN_DEADLINE, RUN_DEADLINE};
