//! One keep-alive HTTP/1.1 connection that sends AWS JSON 1.1 requests signed with SigV4, as
//! the AWS SDKs send them: `POST /`, `X-Amz-Target`, `Content-Type: application/x-amz-json-1.1`,
//! an `Authorization` header over the canonical request and the SHA-256 of the body.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context, Result};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Deadline on connecting, and on each request: far above any answer the emulator gives, so a
/// request that takes longer is counted as an error rather than stalling the run.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// Where requests go and how they are signed.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `host[:port]`, as the Host header and the signature carry it.
    pub host: String,
    pub region: String,
    identity: Identity,
}

impl Endpoint {
    /// `http://host:port` (no path; HTTPS is not offered by the emulator).
    pub fn parse(url: &str, region: &str, access_key: &str, secret_key: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("the endpoint must be http://host:port, not {url}"))?;
        let host = rest.trim_end_matches('/').to_string();
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&host)
            .with_context(|| format!("resolving {host}"))?
            .next()
            .ok_or_else(|| anyhow!("{host} resolves to no address"))?;
        let identity = Credentials::new(access_key, secret_key, None, None, "hsmkms-bench").into();
        Ok(Self {
            addr,
            host,
            region: region.to_string(),
            identity,
        })
    }

    /// The headers of one signed request (SigV4, signed now).
    pub fn signed_headers(
        &self,
        service: &str,
        target: &str,
        body: &[u8],
    ) -> Result<Vec<(String, String)>> {
        let mut headers = vec![
            ("host".to_string(), self.host.clone()),
            (
                "content-type".to_string(),
                "application/x-amz-json-1.1".to_string(),
            ),
            ("x-amz-target".to_string(), target.to_string()),
        ];
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name(service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .context("signing parameters")?
            .into();
        let url = format!("http://{}/", self.host);
        let signable = SignableRequest::new(
            "POST",
            &url,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(body),
        )
        .context("signable request")?;
        let (instructions, _signature) = sign(signable, &params)
            .context("signing the request")?
            .into_parts();
        let signed: Vec<(String, String)> = instructions
            .headers()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        headers.extend(signed);
        Ok(headers)
    }
}

/// An answer: the HTTP status and the body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Answer {
    /// The AWS error type and message of a failed answer, for reports.
    pub fn error_summary(&self) -> String {
        let parsed: Option<serde_json::Value> = serde_json::from_slice(&self.body).ok();
        let field = |name: &str| {
            parsed
                .as_ref()
                .and_then(|v| v.get(name))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let kind = field("__type").unwrap_or_else(|| "no __type".into());
        let message = field("message")
            .or_else(|| field("Message"))
            .unwrap_or_default();
        format!("HTTP {} {kind}: {message}", self.status)
    }
}

/// One connection; requests on it go one after another, as on one SDK connection.
#[derive(Debug)]
pub struct Connection {
    endpoint: Endpoint,
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    /// Connects, within [`REQUEST_DEADLINE`].
    pub async fn open(endpoint: &Endpoint) -> Result<Self> {
        let connect = async {
            let stream = TcpStream::connect(endpoint.addr)
                .await
                .with_context(|| format!("connecting to {}", endpoint.addr))?;
            stream.set_nodelay(true)?;
            hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .context("HTTP handshake")
        };
        let (sender, connection) = tokio::time::timeout(REQUEST_DEADLINE, connect)
            .await
            .map_err(|_| anyhow!("connecting to {} timed out", endpoint.addr))??;
        // The connection's I/O runs beside the requests; it ends when the sender is dropped.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self {
            endpoint: endpoint.clone(),
            sender,
        })
    }

    /// Sends one signed request (`service` is the SigV4 signing name: `kms`, `cloudhsm`).
    pub async fn call(&mut self, service: &str, target: &str, body: Vec<u8>) -> Result<Answer> {
        let headers = self.endpoint.signed_headers(service, target, &body)?;
        let mut request = hyper::Request::post("/");
        for (name, value) in &headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .header(
                "user-agent",
                concat!("hsmkms-bench/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body)))
            .context("building the request")?;
        // One deadline over everything the request waits for: a reconnect, the connection
        // becoming ready, the answer.
        let exchange = async {
            // A server that closes connections after each answer (HTTP/1.0 style, as moto's
            // does) costs a reconnect per request, as it would cost an SDK client.
            if self.sender.is_closed() || self.sender.ready().await.is_err() {
                self.sender = Self::open(&self.endpoint).await?.sender;
            }
            self.sender.ready().await.context("connection closed")?;
            let response = self
                .sender
                .send_request(request)
                .await
                .context("sending the request")?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .context("reading the answer")?
                .to_bytes();
            Ok::<_, anyhow::Error>(Answer { status, body })
        };
        tokio::time::timeout(REQUEST_DEADLINE, exchange)
            .await
            .map_err(|_| anyhow!("no answer within {REQUEST_DEADLINE:?}"))?
    }

    /// A KMS call (`TrentService.<op>`) that must succeed; returns its JSON answer.
    pub async fn kms(&mut self, op: &str, body: serde_json::Value) -> Result<serde_json::Value> {
        self.json("kms", &format!("TrentService.{op}"), body).await
    }

    /// A call that must succeed; returns its JSON answer.
    pub async fn json(
        &mut self,
        service: &str,
        target: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value> {
        let answer = self
            .call(service, target, serde_json::to_vec(&body)?)
            .await?;
        if answer.status != 200 {
            return Err(anyhow!("{target} failed: {}", answer.error_summary()));
        }
        serde_json::from_slice(&answer.body)
            .with_context(|| format!("{target}: answer is not JSON"))
    }
}
