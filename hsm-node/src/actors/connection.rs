//! The node's listener and its connection actors. Each accepted connection completes a mutual
//! TLS handshake (a certificate from the cluster CA is required; the certificate tells a peer
//! from a client), then becomes a [`Connection`] actor that decodes frames into calls on the
//! node actor and writes the answers back. Anything malformed closes the connection; nothing a
//! connection sends can panic the node or change its state before it is understood.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use futures::SinkExt;
use hsmkms_common::clock::Clock;
use hsmkms_common::frame;
use hsmkms_common::tls::is_peer_certificate;
use hsmkms_common::wire::{ErrorCode, Request, Response, WireError};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::actors::messages::{Call, ConnClosed};
use crate::actors::node::NodeActor;
use crate::actors::stall::{after_stall, freeze_while_stalled};
use crate::core::ConnId;
use crate::options::{NodeOptions, ANSWER_GRACE, MAX_CALL_WAIT};
use crate::stall::StallGate;

/// TLS handshakes that may be in progress at once. A connection past them closes the oldest
/// handshake still in progress rather than being refused: connections that never send a
/// byte (an idle flood, renewed as each times out) then cannot keep a real client out, whose
/// handshake takes milliseconds.
pub const MAX_HANDSHAKES: usize = 256;

/// Calls one connection may have in flight; more get an error answer at once.
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 1_024;

// The byte bound of a connection, where callers have looked for the connection's bounds.
pub use crate::options::MAX_HELD_BYTES_PER_CONNECTION;

/// The deadline a call is run under: the caller's, but never more than [`MAX_CALL_WAIT`] from
/// its arrival; 0 (the wire's "none") is that far too, so no caller opts out of a deadline.
/// Never 0 itself, so nothing past the edge needs to read 0 as "none".
pub fn effective_deadline(deadline_unix_millis: u64, now_millis: u64) -> u64 {
    let latest = now_millis.saturating_add(MAX_CALL_WAIT.as_millis() as u64);
    if deadline_unix_millis == 0 {
        latest
    } else {
        deadline_unix_millis.min(latest)
    }
}

/// Accepts connections until the node stops.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    node: Addr<NodeActor>,
    options: NodeOptions,
    gate: StallGate,
    clock: Arc<dyn Clock>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let permits = Arc::new(Semaphore::new(options.max_connections));
    // Handshakes in progress are bounded apart: a connection counts against the cap only once
    // it has proved it holds a certificate of the cluster, so a flood of idle or TLS-less
    // connections cannot take the sessions of real clients.
    let handshakes = Handshakes::default();
    let mut next_conn: ConnId = 1;
    loop {
        // A stalled node accepts nothing: connections wait in the kernel's backlog.
        gate.clone().running().await;
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let conn = next_conn;
        next_conn += 1;
        if let Some(oldest) = handshakes.make_room() {
            tracing::warn!(%remote, oldest, "too many TLS handshakes in progress; closing the oldest");
        }
        let handshaking = handshakes.slot(conn);
        let _ = tcp.set_nodelay(true);
        let permits = permits.clone();
        let acceptor = acceptor.clone();
        let node = node.clone();
        let handshake_timeout = options.handshake_timeout;
        let gate = gate.clone();
        let clock = clock.clone();
        let task = actix::spawn(async move {
            // Nor does it finish handshakes it had not begun.
            gate.clone().running().await;
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::warn!(%remote, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            drop(handshaking);
            let Ok(permit) = permits.try_acquire_owned() else {
                tracing::warn!(%remote, "connection limit reached; refusing connection");
                return;
            };
            let peer = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .is_some_and(is_peer_certificate);
            tracing::debug!(%remote, conn, peer, "connection accepted");
            let (read, write) = tokio::io::split(stream);
            let (out, mut outgoing) = mpsc::channel::<Outgoing>(MAX_IN_FLIGHT_PER_CONNECTION);
            let held = Held::default();
            let written_out = held.clone();
            actix::spawn(async move {
                let mut sink = FramedWrite::new(write, frame::codec());
                // An answer and whatever others are ready go out in one flush.
                'writing: while let Some(answer) = outgoing.recv().await {
                    let mut next = Some(answer);
                    let mut written = 0;
                    // Only what was counted is given back: a refusal, never counted, that
                    // gave back its length would free room for calls the bound never saw.
                    let mut batch_counted = 0;
                    while let Some(answer) = next.take() {
                        batch_counted += answer.counted;
                        if sink.feed(answer.frame).await.is_err() {
                            break 'writing;
                        }
                        written += 1;
                        if written < frame::MAX_BATCH {
                            next = outgoing.try_recv().ok();
                        }
                    }
                    if SinkExt::<Bytes>::flush(&mut sink).await.is_err() {
                        break;
                    }
                    written_out.release(batch_counted);
                }
            });
            Connection::create(move |ctx| {
                ctx.add_stream(FramedRead::new(read, frame::codec()));
                Connection {
                    conn,
                    peer,
                    node,
                    out,
                    in_flight: 0,
                    held,
                    max_held: options.max_held_bytes_per_connection,
                    gate,
                    clock,
                    _permit: permit,
                }
            });
        });
        handshakes.started(conn, task.abort_handle());
    }
}

/// An answer on its way to the writer, with the bytes of it counted in [`Held`]: what the
/// writer gives back once it is written. A refusal of a call past the bounds is not counted
/// (it is small, and the channel bounds how many wait), so it gives back nothing.
#[derive(Debug)]
struct Outgoing {
    frame: Bytes,
    counted: usize,
}

/// Bytes a connection holds (see [`MAX_HELD_BYTES_PER_CONNECTION`]); the connection and its
/// writer run on one thread.
#[derive(Debug, Default, Clone)]
struct Held(Rc<std::cell::Cell<usize>>);

impl Held {
    fn get(&self) -> usize {
        self.0.get()
    }

    fn take(&self, bytes: usize) {
        self.0.set(self.0.get().saturating_add(bytes));
    }

    fn release(&self, bytes: usize) {
        self.0.set(self.0.get().saturating_sub(bytes));
    }
}

/// The TLS handshakes in progress, oldest first, each with the means to end it.
#[derive(Debug, Default, Clone)]
struct Handshakes(Rc<RefCell<BTreeMap<ConnId, Option<AbortHandle>>>>);

impl Handshakes {
    /// If every handshake slot is taken, ends the oldest handshake in progress; returns its
    /// connection.
    fn make_room(&self) -> Option<ConnId> {
        let oldest = {
            let mut in_progress = self.0.try_borrow_mut().ok()?;
            if in_progress.len() < MAX_HANDSHAKES {
                return None;
            }
            in_progress.pop_first()?
        };
        // Aborted outside the borrow: the task's slot leaves the map when it is dropped.
        if let (_, Some(abort)) = &oldest {
            abort.abort();
        }
        Some(oldest.0)
    }

    /// Takes a slot for connection `conn`; it is given back when the returned guard drops
    /// (the handshake ended, or its task was aborted).
    fn slot(&self, conn: ConnId) -> HandshakeSlot {
        if let Ok(mut in_progress) = self.0.try_borrow_mut() {
            in_progress.insert(conn, None);
        }
        HandshakeSlot {
            conn,
            handshakes: self.clone(),
        }
    }

    /// Records how to end the handshake of `conn`, if it is still in progress.
    fn started(&self, conn: ConnId, abort: AbortHandle) {
        if let Ok(mut in_progress) = self.0.try_borrow_mut() {
            if let Some(slot) = in_progress.get_mut(&conn) {
                *slot = Some(abort);
            }
        }
    }
}

/// One handshake's place among those in progress.
struct HandshakeSlot {
    conn: ConnId,
    handshakes: Handshakes,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        if let Ok(mut in_progress) = self.handshakes.0.try_borrow_mut() {
            in_progress.remove(&self.conn);
        }
    }
}

/// One client or peer connection.
pub struct Connection {
    conn: ConnId,
    peer: bool,
    node: Addr<NodeActor>,
    out: mpsc::Sender<Outgoing>,
    in_flight: usize,
    /// Bytes of calls in flight and of answers not yet written, shared with the writer.
    held: Held,
    /// Most bytes it may hold ([`NodeOptions::max_held_bytes_per_connection`]).
    max_held: usize,
    /// The node's stall switch: a stalled node reads no frame and answers nothing.
    gate: StallGate,
    /// The node's clock, against which calls' deadlines are read.
    clock: Arc<dyn Clock>,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("conn", &self.conn)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        freeze_while_stalled(self.gate.clone(), ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // A notification that needs no answer: the session of this connection ends.
        self.node.do_send(ConnClosed(self.conn));
    }
}

impl StreamHandler<Result<BytesMut, std::io::Error>> for Connection {
    fn handle(&mut self, item: Result<BytesMut, std::io::Error>, ctx: &mut Context<Self>) {
        if self.gate.is_stalled() {
            // Held, not even decoded, until the node runs again; no later frame is read
            // meanwhile (the context waits), so a connection holds at most this one.
            after_stall(&self.gate.clone(), ctx, move |act, ctx| {
                act.on_frame(item, ctx)
            });
            return;
        }
        self.on_frame(item, ctx);
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Connection {
    /// Decodes one frame and hands its call to the node; the answer is written back when it
    /// comes.
    fn on_frame(&mut self, item: Result<BytesMut, std::io::Error>, ctx: &mut Context<Self>) {
        let payload = match item {
            Ok(payload) => payload,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                // The other side went away without a TLS close_notify: an ordinary hang-up.
                tracing::debug!(conn = self.conn, "connection closed by the other side");
                ctx.stop();
                return;
            }
            Err(e) => {
                tracing::warn!(conn = self.conn, error = %e, "unreadable frame; closing connection");
                ctx.stop();
                return;
            }
        };
        let envelope = match frame::decode::<Request>(&payload) {
            Ok(envelope) => envelope,
            Err(e) => {
                tracing::warn!(conn = self.conn, error = %e, "malformed frame; closing connection");
                ctx.stop();
                return;
            }
        };
        let id = envelope.id;
        let out = self.out.clone();
        let size = payload.len();
        drop(payload);
        let busy = if self.in_flight >= MAX_IN_FLIGHT_PER_CONNECTION {
            Some(format!(
                "more than {MAX_IN_FLIGHT_PER_CONNECTION} calls in flight on one connection"
            ))
        } else if self.held.get().saturating_add(size) > self.max_held {
            Some(format!(
                "more than {} bytes of calls and unread answers on one connection; read the \
                 answers first",
                self.max_held
            ))
        } else {
            None
        };
        if let Some(why) = busy {
            let busy = Response::Error(WireError::new(ErrorCode::InvalidRequest, why));
            if let Ok(frame) = frame::encode(id, &busy) {
                let _ = out.try_send(Outgoing { frame, counted: 0 });
            }
            return;
        }
        self.in_flight += 1;
        self.held.take(size);
        let held = self.held.clone();
        // The call's deadline is capped here, where it comes in, and only here: the node runs
        // it under this one. The send has a deadline too, that one and a grace for the node's
        // own answer, so no call waits on the node for ever.
        let now = self.clock.now_millis();
        let deadline_unix_millis = effective_deadline(envelope.deadline_unix_millis, now);
        let wait = Duration::from_millis(deadline_unix_millis.saturating_sub(now)) + ANSWER_GRACE;
        let name = envelope.body.name();
        let call = self
            .node
            .send(Call {
                conn: self.conn,
                peer: self.peer,
                deadline_unix_millis,
                request: envelope.body,
            })
            .timeout(wait);
        let answer = async move {
            let response = match call.await {
                Ok(response) => response,
                Err(MailboxError::Timeout) => Response::Error(WireError::new(
                    ErrorCode::DeadlineExceeded,
                    format!(
                        "the HSM did not answer {name} within {wait:?}, its deadline; whether it \
                         took effect is unknown"
                    ),
                )),
                Err(MailboxError::Closed) => {
                    Response::Error(WireError::new(ErrorCode::Internal, "the node is stopping"))
                }
            };
            let bytes = frame::encode(id, &response).or_else(|e| {
                frame::encode(
                    id,
                    &Response::Error(WireError::new(
                        ErrorCode::InvalidRequest,
                        format!("the answer does not fit in a frame ({e}); narrow the request"),
                    )),
                )
            });
            // The call is answered: its frame is gone, its answer held until written.
            held.release(size);
            if let Ok(frame) = bytes {
                let counted = frame.len();
                held.take(counted);
                if out.send(Outgoing { frame, counted }).await.is_err() {
                    held.release(counted);
                }
            }
        };
        ctx.spawn(answer.into_actor(self).map(|(), act, _| act.in_flight -= 1));
    }
}
