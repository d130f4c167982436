//! The deletion scheduler: an actor that, every second of real time, runs the deletions whose
//! waiting period has ended on the emulator clock, and the CloudHSM service's clockwork
//! (backups, retention). The schedule itself is each key's persisted
//! deletion date, so pending deletions survive a restart and run when due.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::frontend::Frontend;

/// How often the scheduler looks for due deletions.
pub const TICK: Duration = Duration::from_secs(1);

/// Runs due deletions now; answers how many keys were deleted.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct RunDue;

/// The scheduler.
#[derive(Debug)]
pub struct DeletionScheduler {
    frontend: Arc<Frontend>,
}

impl DeletionScheduler {
    pub fn new(frontend: Arc<Frontend>) -> Self {
        Self { frontend }
    }
}

impl Actor for DeletionScheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(TICK, |act, ctx| {
            let frontend = act.frontend.clone();
            ctx.spawn(
                async move {
                    frontend.clusters.run_due().await;
                    frontend.run_due_deletions().await;
                }
                .into_actor(act),
            );
        });
    }
}

impl Handler<RunDue> for DeletionScheduler {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, _: RunDue, _: &mut Context<Self>) -> Self::Result {
        let frontend = self.frontend.clone();
        Box::pin(async move { frontend.run_due_deletions().await })
    }
}
