//! The deletion scheduler: an actor that, every second of real time, runs the deletions whose
//! waiting period has ended on the emulator clock, the CloudHSM service's clockwork (backups,
//! retention), and settles custom key stores that a failed commit left between two states.
//! The schedule itself is each key's persisted deletion date, so pending deletions survive a
//! restart and run when due.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::frontend::Frontend;

/// How often the scheduler looks for due deletions.
pub const TICK: Duration = Duration::from_secs(1);

/// The scheduler.
#[derive(Debug)]
pub struct DeletionScheduler {
    frontend: Arc<Frontend>,
    /// A tick's work is still running: the next ticks skip rather than queue behind it (a
    /// slow run, with an HSM that does not answer, would otherwise pile up one task a second).
    busy: bool,
}

impl DeletionScheduler {
    pub fn new(frontend: Arc<Frontend>) -> Self {
        Self {
            frontend,
            busy: false,
        }
    }
}

impl Actor for DeletionScheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(TICK, |act, ctx| {
            if act.busy {
                return;
            }
            act.busy = true;
            let frontend = act.frontend.clone();
            ctx.spawn(
                async move {
                    frontend.clusters.run_due().await;
                    frontend.run_due_deletions().await;
                    frontend.run_due_rotations().await;
                    frontend.run_due_expirations().await;
                    crate::key_stores::settle(&frontend).await;
                }
                .into_actor(act)
                .map(|(), act, _| act.busy = false),
            );
        });
    }
}
