//! Smithy RPCv2 CBOR, the protocol newer AWS SDKs speak to CloudHSMv2: request bodies are CBOR
//! maps, converted here to the JSON values the operations take, and answers converted back.
//! Timestamps travel as CBOR tag 1 (epoch seconds), blobs as byte strings.

use base64::Engine;
use ciborium::Value as Cbor;
use serde_json::{Map, Number, Value as Json};

/// Most nesting a request may have; deeper is refused rather than recursed into.
const MAX_DEPTH: usize = 32;

/// Decodes a CBOR request body (empty means no input) into JSON.
pub fn decode(body: &[u8]) -> Result<Json, String> {
    if body.is_empty() {
        return Ok(Json::Object(Map::new()));
    }
    let value: Cbor = ciborium::de::from_reader_with_recursion_limit(body, MAX_DEPTH)
        .map_err(|e| format!("the body is not valid CBOR: {e}"))?;
    let json = to_json(value, 0)?;
    if !json.is_object() {
        return Err("the body must be a CBOR map".into());
    }
    Ok(json)
}

fn to_json(value: Cbor, depth: usize) -> Result<Json, String> {
    if depth > MAX_DEPTH {
        return Err("the body is nested too deeply".into());
    }
    Ok(match value {
        Cbor::Null => Json::Null,
        Cbor::Bool(b) => Json::Bool(b),
        Cbor::Integer(i) => {
            let i = i128::from(i);
            match (i64::try_from(i), u64::try_from(i)) {
                (Ok(v), _) => Json::from(v),
                (_, Ok(v)) => Json::from(v),
                _ => return Err("an integer is out of range".into()),
            }
        }
        Cbor::Float(f) => Number::from_f64(f)
            .map(Json::Number)
            .ok_or("a number is not finite")?,
        Cbor::Text(s) => Json::String(s),
        Cbor::Bytes(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Cbor::Array(items) => Json::Array(
            items
                .into_iter()
                .map(|v| to_json(v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Cbor::Map(entries) => {
            let mut map = Map::new();
            for (k, v) in entries {
                let Cbor::Text(k) = k else {
                    return Err("map keys must be text".into());
                };
                map.insert(k, to_json(v, depth + 1)?);
            }
            Json::Object(map)
        }
        // Tag 1 is an epoch timestamp; other tags carry their value through.
        Cbor::Tag(_, inner) => to_json(*inner, depth + 1)?,
        _ => return Err("unsupported CBOR value".into()),
    })
}

/// Encodes an answer (JSON) as CBOR; members named `...Timestamp` become tag-1 timestamps.
pub fn encode(value: &Json) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = ciborium::ser::into_writer(&to_cbor(value, false), &mut out);
    out
}

fn to_cbor(value: &Json, timestamp: bool) -> Cbor {
    match value {
        Json::Null => Cbor::Null,
        Json::Bool(b) => Cbor::Bool(*b),
        Json::Number(n) if timestamp => {
            Cbor::Tag(1, Box::new(Cbor::Float(n.as_f64().unwrap_or(0.0))))
        }
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Cbor::Integer(i.into()),
            (_, Some(u)) => Cbor::Integer(u.into()),
            _ => Cbor::Float(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => Cbor::Text(s.clone()),
        Json::Array(items) => Cbor::Array(items.iter().map(|v| to_cbor(v, false)).collect()),
        Json::Object(map) => Cbor::Map(
            map.iter()
                .map(|(k, v)| (Cbor::Text(k.clone()), to_cbor(v, k.ends_with("Timestamp"))))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn answers_round_trip_with_timestamps_as_tag_one() {
        let answer = json!({"Backup": {"BackupId": "backup-abc", "CreateTimestamp": 1700000000.5,
            "NeverExpires": false, "TagList": [{"Key": "k", "Value": "v"}]}});
        let bytes = encode(&answer);
        let raw: Cbor = ciborium::de::from_reader(bytes.as_slice()).unwrap_or(Cbor::Null);
        let backup = raw
            .as_map()
            .and_then(|m| m[0].1.as_map())
            .cloned()
            .unwrap_or_default();
        let ts = backup
            .iter()
            .find(|(k, _)| k.as_text() == Some("CreateTimestamp"));
        assert!(matches!(ts, Some((_, Cbor::Tag(1, _)))));
        assert_eq!(decode(&bytes), Ok(answer));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        assert!(decode(&[0xff, 0x00]).is_err());
        assert!(decode(&encode(&json!([1, 2]))).is_err());
        // A map with an integer key.
        let mut bad = Vec::new();
        let _ = ciborium::ser::into_writer(
            &Cbor::Map(vec![(Cbor::Integer(1.into()), Cbor::Null)]),
            &mut bad,
        );
        assert!(decode(&bad).is_err());
        // Deeply nested arrays stop at the limit instead of recursing.
        let mut deep = vec![0x81u8; 10_000];
        deep.push(0x00);
        assert!(decode(&deep).is_err());
        assert_eq!(decode(&[]), Ok(json!({})));
    }
}
