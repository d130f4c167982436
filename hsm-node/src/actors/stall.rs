//! How an actor obeys the stall switch ([`crate::stall`]): while the node is stalled, the
//! actor's context waits, so it takes nothing from its mailbox or its streams and none of its
//! futures or timers runs, as in a stopped process.

use actix::prelude::*;

use crate::stall::StallGate;

/// Makes the actor of `ctx` freeze each time the gate closes, until it opens again.
pub fn freeze_while_stalled<A>(gate: StallGate, ctx: &mut Context<A>)
where
    A: Actor<Context = Context<A>>,
{
    let watch = gate.clone();
    ctx.spawn(
        fut::wrap_future::<_, A>(watch.stalled()).map(move |(), _, ctx: &mut Context<A>| {
            let until = gate.clone();
            ctx.wait(
                fut::wrap_future::<_, A>(until.running())
                    .map(move |(), _, ctx: &mut Context<A>| freeze_while_stalled(gate, ctx)),
            );
        }),
    );
}

/// Freezes the actor at once (not only once its watcher notices the switch) and runs `then`
/// first thing when the node runs again, before anything that queued meanwhile. For what an
/// actor finds stalled when it is about to act: a frame read, a call, a push.
pub fn after_stall<A>(
    gate: &StallGate,
    ctx: &mut Context<A>,
    then: impl FnOnce(&mut A, &mut Context<A>) + 'static,
) where
    A: Actor<Context = Context<A>>,
{
    ctx.wait(
        fut::wrap_future::<_, A>(gate.clone().running())
            .map(move |(), act, ctx: &mut Context<A>| then(act, ctx)),
    );
}
