//! Framing: length-delimited frames with a hard size limit, each one postcard-encoded
//! [`Envelope`]. A frame that is too large, malformed or of another protocol version is an error
//! for the caller to answer by closing the connection.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;
use tokio_util::codec::LengthDelimitedCodec;

use crate::wire::{Envelope, PROTOCOL_VERSION};

/// The largest frame either side accepts: room for a full anti-entropy batch and a 1 MiB
/// crypto call, small enough that a hostile peer cannot make a node buffer much.
pub const MAX_FRAME_LEN: usize = 4 * 1024 * 1024;

/// Why a frame could not be read.
#[derive(Debug, Error)]
pub enum FrameError {
    #[error("frame is not a valid message: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("peer speaks protocol version {0}, this node speaks {PROTOCOL_VERSION}")]
    Version(u16),
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_LEN}")]
    TooLarge(usize),
}

/// The codec for node connections: 4-byte big-endian length prefix, [`MAX_FRAME_LEN`] bound.
/// Most frames a connection's writer coalesces into one flush: what is queued when it writes
/// goes out together (one TLS record and one system call rather than one per frame).
pub const MAX_BATCH: usize = 64;

pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_LEN)
        .new_codec()
}

/// Encodes a body into a frame payload, without a deadline (answers).
pub fn encode<T: Serialize>(id: u64, body: &T) -> Result<Bytes, FrameError> {
    encode_call(id, 0, body)
}

/// Encodes a call into a frame payload, with its deadline (Unix milliseconds).
pub fn encode_call<T: Serialize>(
    id: u64,
    deadline_unix_millis: u64,
    body: &T,
) -> Result<Bytes, FrameError> {
    let envelope = Envelope {
        version: PROTOCOL_VERSION,
        id,
        deadline_unix_millis,
        body,
    };
    // Sized first, so the payload is allocated once (growing it took five reallocations a
    // frame) and an oversized one not at all.
    let len = postcard::experimental::serialized_size(&envelope)?;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len));
    }
    let bytes = postcard::to_io(&envelope, Vec::with_capacity(len))?;
    Ok(Bytes::from(bytes))
}

/// Decodes a frame payload, checking the protocol version before the body.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<Envelope<T>, FrameError> {
    let (version, rest): (u16, &[u8]) = postcard::take_from_bytes(payload)?;
    if version != PROTOCOL_VERSION {
        return Err(FrameError::Version(version));
    }
    let (id, rest): (u64, &[u8]) = postcard::take_from_bytes(rest)?;
    let (deadline_unix_millis, rest): (u64, &[u8]) = postcard::take_from_bytes(rest)?;
    let (body, rest): (T, &[u8]) = postcard::take_from_bytes(rest)?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(
            postcard::Error::DeserializeBadEncoding,
        ));
    }
    Ok(Envelope {
        version,
        id,
        deadline_unix_millis,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Request, Response};

    #[test]
    fn envelopes_round_trip() {
        let bytes = encode(
            42,
            &Request::FindKeys {
                label: Some("a".into()),
                owner: None,
            },
        )
        .map(|b| b.to_vec())
        .unwrap_or_default();
        let env: Envelope<Request> = match decode(&bytes) {
            Ok(e) => e,
            Err(e) => panic!("decode failed: {e}"),
        };
        assert_eq!(env.id, 42);
        assert!(
            matches!(env.body, Request::FindKeys { label: Some(ref l), owner: None } if l == "a")
        );
    }

    #[test]
    fn garbage_other_versions_and_trailing_bytes_are_refused() {
        assert!(decode::<Request>(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode::<Request>(&[]).is_err());
        let mut other = postcard::to_stdvec(&Envelope {
            version: 99u16,
            id: 1u64,
            deadline_unix_millis: 0,
            body: Response::Ok,
        })
        .unwrap_or_default();
        assert!(matches!(
            decode::<Response>(&other),
            Err(FrameError::Version(99))
        ));
        other = encode(1, &Response::Ok)
            .map(|b| b.to_vec())
            .unwrap_or_default();
        other.push(0);
        assert!(decode::<Response>(&other).is_err());
    }
}
