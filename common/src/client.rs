//! A client for one node connection: mutual TLS, pipelined calls matched by id, a deadline on
//! every call. One connection is one HSM session, so a login belongs to one `NodeClient`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rustls::ClientConfig;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsConnector;
use tokio_util::codec::Framed;

use crate::frame::{self, FrameError};
use crate::tls::node_server_name;
use crate::wire::{Request, Response, WireError};

/// Calls that may be in flight on one connection before `call` waits for room.
pub const MAX_IN_FLIGHT: usize = 1_024;

/// Why a call did not get an answer, or got an error answer.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("no answer from {addr} within {deadline:?}")]
    Timeout { addr: String, deadline: Duration },
    #[error("connection to {addr} is closed")]
    Closed { addr: String },
    #[error("cannot encode request: {0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Remote(WireError),
}

type Reply = oneshot::Sender<Result<Response, ClientError>>;

struct Outgoing {
    id: u64,
    frame: Bytes,
    reply: Reply,
}

/// An open connection (and session) to one HSM node.
#[derive(Debug)]
pub struct NodeClient {
    addr: String,
    tx: mpsc::Sender<Outgoing>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl NodeClient {
    /// Connects and completes the TLS handshake within `deadline`.
    pub async fn connect(
        addr: &str,
        tls: Arc<ClientConfig>,
        deadline: Duration,
    ) -> Result<Self, ClientError> {
        let connect_err = |reason: String| ClientError::Connect {
            addr: addr.to_string(),
            reason,
        };
        let handshake = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| connect_err(e.to_string()))?;
            tcp.set_nodelay(true)
                .map_err(|e| connect_err(e.to_string()))?;
            TlsConnector::from(tls)
                .connect(node_server_name(), tcp)
                .await
                .map_err(|e| connect_err(format!("TLS handshake failed: {e}")))
        };
        let stream = tokio::time::timeout(deadline, handshake)
            .await
            .map_err(|_| connect_err(format!("timed out after {deadline:?}")))??;
        let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
        tokio::spawn(run_connection(Framed::new(stream, frame::codec()), rx));
        Ok(Self {
            addr: addr.to_string(),
            tx,
            next_id: AtomicU64::new(1),
        })
    }

    /// The address this client is connected to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the connection has closed; a closed client only returns `Closed`.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Sends `request` and waits at most `deadline` for its answer. An error answer from the
    /// node comes back as [`ClientError::Remote`].
    pub async fn call(
        &self,
        request: Request,
        deadline: Duration,
    ) -> Result<Response, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = frame::encode_call(id, deadline_after(deadline), &request)?;
        drop(request);
        let (reply, answer) = oneshot::channel();
        let closed = || ClientError::Closed {
            addr: self.addr.clone(),
        };
        let exchange = async {
            self.tx
                .send(Outgoing { id, frame, reply })
                .await
                .map_err(|_| closed())?;
            answer.await.map_err(|_| closed())?
        };
        match tokio::time::timeout(deadline, exchange).await {
            Err(_) => Err(ClientError::Timeout {
                addr: self.addr.clone(),
                deadline,
            }),
            Ok(Ok(Response::Error(e))) => Err(ClientError::Remote(e)),
            Ok(other) => other,
        }
    }
}

/// The wall-clock time `deadline` from now, in Unix milliseconds, as calls carry it.
fn deadline_after(deadline: Duration) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (now + deadline).as_millis().min(u128::from(u64::MAX)) as u64
}

async fn run_connection<S>(
    mut framed: Framed<S, tokio_util::codec::LengthDelimitedCodec>,
    mut rx: mpsc::Receiver<Outgoing>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut pending: HashMap<u64, Reply> = HashMap::new();
    loop {
        tokio::select! {
            outgoing = rx.recv() => {
                let Some(out) = outgoing else { break };
                // This call and whatever else is queued go out in one flush.
                let mut next = Some(out);
                let mut written = 0;
                let mut failed = false;
                while let Some(out) = next.take() {
                    if pending.len() >= MAX_IN_FLIGHT {
                        // Callers that timed out dropped their receivers; forget them.
                        pending.retain(|_, reply| !reply.is_closed());
                    }
                    pending.insert(out.id, out.reply);
                    if framed.feed(out.frame).await.is_err() {
                        failed = true;
                        break;
                    }
                    written += 1;
                    if written < frame::MAX_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                if failed || SinkExt::<Bytes>::flush(&mut framed).await.is_err() {
                    break;
                }
            }
            incoming = framed.next() => {
                let Some(Ok(payload)) = incoming else { break };
                match frame::decode::<Response>(&payload) {
                    Ok(envelope) => {
                        if let Some(reply) = pending.remove(&envelope.id) {
                            let _ = reply.send(Ok(envelope.body));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "malformed frame from node; closing connection");
                        break;
                    }
                }
            }
        }
    }
    // Wake every caller still waiting; they see `Closed`. Then hang up cleanly (TLS
    // close_notify), so the node sees an orderly close.
    drop(pending);
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        SinkExt::<Bytes>::close(&mut framed),
    )
    .await;
}
