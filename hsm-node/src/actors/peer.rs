//! A peer link: one actor per peer node. It keeps a connection to the peer (reconnecting when
//! it breaks), pushes new objects to it, and regularly pulls what it is missing by comparing
//! digests (anti-entropy): bucket digests first, then the entries of differing buckets, then
//! only the objects whose copy on the peer would win here.

use std::sync::Arc;

use actix::prelude::*;
use hsmkms_common::client::{ClientError, NodeClient};
use hsmkms_common::wire::{MemberRecord, Request, Response, DIGEST_BUCKETS, MAX_OBJECTS_PER_CALL};
use rustls::ClientConfig;

use crate::actors::messages::{
    ApplyPulled, CaughtUp, LinkState, LocalDigest, NodeSide, PullNow, Push, Stop, Wanted,
    NOT_CONNECTED,
};
use crate::actors::stall::{after_stall, freeze_while_stalled};
use crate::options::{NodeOptions, MAILBOX_CAPACITY};
use crate::stall::StallGate;

/// Buckets asked for in one `ListEntries` call.
const BUCKETS_PER_CALL: usize = 32;

/// The link to one peer.
pub struct PeerLink {
    address: String,
    node: NodeSide,
    me: MemberRecord,
    cluster_id: String,
    tls: Arc<ClientConfig>,
    options: NodeOptions,
    client: Option<Arc<NodeClient>>,
    connecting: bool,
    syncing: bool,
    failures: u32,
    /// The node's stall switch: a stalled node does no replication work.
    gate: StallGate,
}

impl std::fmt::Debug for PeerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerLink")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl PeerLink {
    pub fn new(
        address: String,
        node: NodeSide,
        me: MemberRecord,
        cluster_id: String,
        tls: Arc<ClientConfig>,
        options: NodeOptions,
        gate: StallGate,
    ) -> Self {
        Self {
            address,
            node,
            me,
            cluster_id,
            tls,
            options,
            client: None,
            connecting: false,
            syncing: false,
            failures: 0,
            gate,
        }
    }

    fn live_client(&mut self) -> Option<Arc<NodeClient>> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
            self.node.link_state.do_send(LinkState {
                address: self.address.clone(),
                hsm_id: None,
            });
        }
        self.client.clone()
    }

    fn ensure_connected(&mut self, ctx: &mut Context<Self>) {
        if self.connecting || self.live_client().is_some() {
            return;
        }
        self.connecting = true;
        let address = self.address.clone();
        let tls = self.tls.clone();
        let me = self.me.clone();
        let cluster_id = self.cluster_id.clone();
        let deadline = self.options.call_deadline;
        let connect = async move {
            let client = NodeClient::connect(&address, tls, deadline).await?;
            let hello = Request::Hello {
                member: me,
                cluster_id: cluster_id.clone(),
            };
            match client.call(hello, deadline).await? {
                Response::Hello {
                    member,
                    cluster_id: theirs,
                } if theirs == cluster_id => Ok((client, member)),
                Response::Hello {
                    cluster_id: theirs, ..
                } => Err(ClientError::Connect {
                    addr: address,
                    reason: format!("the node there belongs to cluster {theirs}"),
                }),
                other => Err(ClientError::Connect {
                    addr: address,
                    reason: format!("unexpected answer to Hello: {other:?}"),
                }),
            }
        };
        ctx.spawn(connect.into_actor(self).map(|result, act, ctx| {
            act.connecting = false;
            match result {
                Ok((client, member)) => {
                    act.failures = 0;
                    act.client = Some(Arc::new(client));
                    act.node.link_state.do_send(LinkState {
                        address: act.address.clone(),
                        hsm_id: Some(member.hsm_id),
                    });
                    // Catch up at once: this is how a node that was down rejoins.
                    act.sync(ctx);
                }
                Err(e) => {
                    act.failures = act.failures.saturating_add(1);
                    if act.failures == 1 {
                        tracing::warn!(peer = %act.address, error = %e, "cannot reach peer; retrying");
                    }
                }
            }
        }));
    }

    fn sync(&mut self, ctx: &mut Context<Self>) {
        if self.syncing {
            return;
        }
        let Some(client) = self.live_client() else {
            return;
        };
        self.syncing = true;
        let node = self.node.clone();
        let deadline = self.options.call_deadline;
        ctx.spawn(pull(client, node, deadline).into_actor(self).map(|result, act, _| {
            act.syncing = false;
            if result.is_ok() {
                act.node.caught_up.do_send(CaughtUp {
                    address: act.address.clone(),
                });
            }
            match result {
                Ok(0) => {}
                Ok(n) => tracing::info!(peer = %act.address, objects = n, "caught up from peer"),
                Err(e) => tracing::debug!(peer = %act.address, error = %e, "anti-entropy round failed"),
            }
        }));
    }
}

/// One anti-entropy round: pull from the peer everything that would win here.
async fn pull(
    client: Arc<NodeClient>,
    node: NodeSide,
    deadline: std::time::Duration,
) -> Result<usize, String> {
    let theirs = match client
        .call(Request::Digest, deadline)
        .await
        .map_err(|e| e.to_string())?
    {
        Response::Digest { buckets } if buckets.len() == DIGEST_BUCKETS => buckets,
        other => return Err(format!("unexpected answer to Digest: {other:?}")),
    };
    let ours = node
        .digest
        .send(LocalDigest)
        .timeout(deadline)
        .await
        .map_err(|e| unanswered("LocalDigest", deadline, e))?;
    let differing: Vec<u16> = (0..DIGEST_BUCKETS)
        .filter(|&i| ours.get(i) != theirs.get(i))
        .map(|i| i as u16)
        .collect();
    let mut pulled = 0;
    for buckets in differing.chunks(BUCKETS_PER_CALL) {
        let entries = match client
            .call(
                Request::ListEntries {
                    buckets: buckets.to_vec(),
                },
                deadline,
            )
            .await
            .map_err(|e| e.to_string())?
        {
            Response::Entries(entries) => entries,
            other => return Err(format!("unexpected answer to ListEntries: {other:?}")),
        };
        let wanted = node
            .wanted
            .send(Wanted(entries))
            .timeout(deadline)
            .await
            .map_err(|e| unanswered("Wanted", deadline, e))?;
        for ids in wanted.chunks(MAX_OBJECTS_PER_CALL) {
            let objects = match client
                .call(Request::Fetch { ids: ids.to_vec() }, deadline)
                .await
                .map_err(|e| e.to_string())?
            {
                Response::Objects(objects) => objects,
                other => return Err(format!("unexpected answer to Fetch: {other:?}")),
            };
            pulled += node
                .apply
                .send(ApplyPulled(objects))
                .timeout(deadline)
                .await
                .map_err(|e| unanswered("ApplyPulled", deadline, e))?
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(pulled)
}

/// Why a question to the node actor went unanswered: it did not answer within the deadline
/// every send to it has, or it has stopped.
fn unanswered(what: &str, deadline: std::time::Duration, e: MailboxError) -> String {
    match e {
        MailboxError::Timeout => format!("the node did not answer {what} within {deadline:?}"),
        MailboxError::Closed => format!("the node stopped before it answered {what}"),
    }
}

impl Actor for PeerLink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        freeze_while_stalled(self.gate.clone(), ctx);
        self.ensure_connected(ctx);
        ctx.run_interval(self.options.reconnect_interval, |act, ctx| {
            act.ensure_connected(ctx)
        });
        ctx.run_interval(self.options.anti_entropy_interval, |act, ctx| act.sync(ctx));
    }
}

impl Handler<Push> for PeerLink {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, msg: Push, ctx: &mut Context<Self>) -> Self::Result {
        if self.gate.is_stalled() {
            // Held until the node runs again, as the node's own calls are.
            let (answer, answered) = tokio::sync::oneshot::channel();
            after_stall(&self.gate, ctx, move |act, ctx| {
                let push = <PeerLink as Handler<Push>>::handle(act, msg, ctx);
                actix::spawn(async move {
                    let _ = answer.send(push.await);
                });
            });
            return Box::pin(async move {
                answered
                    .await
                    .unwrap_or_else(|_| Err("peer link stopped".to_string()))
            });
        }
        let Some(client) = self.live_client() else {
            return Box::pin(async { Err(NOT_CONNECTED.to_string()) });
        };
        let deadline = self.options.call_deadline;
        Box::pin(async move {
            match client
                .call(Request::Replicate { objects: msg.0 }, deadline)
                .await
            {
                Ok(Response::Applied { .. }) => Ok(()),
                Ok(other) => Err(format!("unexpected answer to Replicate: {other:?}")),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

impl Handler<PullNow> for PeerLink {
    type Result = ();

    fn handle(&mut self, _: PullNow, ctx: &mut Context<Self>) {
        // Not connected yet: connecting pulls at once anyway.
        self.ensure_connected(ctx);
        self.sync(ctx);
    }
}

impl Handler<Stop> for PeerLink {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
