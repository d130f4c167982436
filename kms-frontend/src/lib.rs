//! The KMS frontend of hsmkms: AWS KMS's JSON API (with CloudHSM key stores and the whole
//! deletion lifecycle), the CloudHSMv2 API (JSON and RPCv2 CBOR) and the emulator's control API, served
//! over HTTP in front of the HSM cluster, which it reaches only through the node protocol.
//!
//! # Layout
//!
//! - [`api`]: actix-web routes, AWS's JSON shapes, one dispatcher per service, `/_hsmkms/`
//!   and its dashboard (`/_hsmkms/ui`, askama templates in `templates/`), and the SigV4 check
//!   of `--auth strict` (`api::auth`).
//! - [`access_keys`]: the access keys strict mode accepts, from a credentials file or a list.
//! - [`service`]: the domain: key states, key store connection states, the ciphertext format,
//!   the registry of keys, aliases and key stores, the emulator clock, errors.
//! - [`frontend`]: the shared state of the handlers and the deletion flow.
//! - [`key_stores`]: the flows of a custom key store beyond one request: the connect
//!   protocol, recovery on start, keys created in a store.
//! - [`actors`]: the thin actix shells: one actor per custom key store holding its kmsuser
//!   sessions and the gateway to them, and the deletion scheduler.
//! - [`cluster`]: what KMS sees of clusters, and the provisioner trait the launcher implements.
//! - [`cloudhsm`]: the CloudHSM service: clusters, HSMs, backups, on the provisioner.
//! - [`store`]: the redb store with group commit.
//! - [`faults`]: the faults in force (`/_hsmkms/faults`) and the emulated network they act
//!   on: subnets, KMS's reach to each HSM.
//! - [`locks`]: locks on keys and aliases, so changes to one resource take turns.
//! - [`audit`]: the CloudTrail-like audit trail, metrics and events.

pub mod access_keys;
pub mod actors;
pub mod api;
pub mod audit;
pub mod cloudhsm;
pub mod cluster;
pub mod faults;
pub mod frontend;
pub mod key_stores;
pub mod locks;
pub mod service;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::middleware::{from_fn, Condition};
use actix_web::{web, App, HttpServer};

pub use frontend::{Frontend, FrontendOptions};

/// Starts the HTTP server on `bind`, authenticating requests as `auth` says. Run it on an
/// actix system; it stops when dropped or stopped through its handle.
pub fn serve(
    frontend: Arc<Frontend>,
    bind: SocketAddr,
    workers: usize,
    auth: api::auth::Auth,
) -> std::io::Result<actix_web::dev::Server> {
    let data = web::Data::new(frontend);
    // The one place requests are authenticated. In `--auth any` the middleware is never
    // instantiated: `Condition` passes each request straight on, one branch.
    let strict = auth.is_strict();
    let auth = web::Data::new(auth);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(auth.clone())
            .wrap(Condition::new(strict, from_fn(api::auth::gate)))
            .configure(api::configure)
    })
    .workers(workers)
    .disable_signals()
    .bind(bind)?
    .run())
}
