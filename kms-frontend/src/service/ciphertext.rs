//! The emulator's own ciphertext blob, and the canonical encoding of an encryption context.
//!
//! AWS does not document its blob (reference §7); this one keeps the properties that matter:
//! it names its key so Decrypt needs no KeyId, it is at most 6144 bytes, and tampering with any
//! byte or supplying another encryption context makes decryption fail.
//!
//! ```text
//! offset  size  field
//!  0       4    magic  b"HKMS"
//!  4       1    version 1
//!  5      16    key id (the KMS key's UUID, raw bytes)
//! 21      12    AES-256-GCM nonce  \
//! 33       n    ciphertext          > the sealed body, as `Sealer::seal` or an HSM's Encrypt
//! 33+n    16    GCM tag            /  returns it
//! ```
//!
//! A blob under rotated material (EnableKeyRotation, RotateKeyOnDemand) has version 2, whose
//! header adds the material's version (u32 BE, 1 for the first rotation) after the key id:
//! 25 bytes. The key's original material keeps writing version 1, so blobs of keys that never
//! rotated are as they always were.
//!
//! The body is sealed with associated data `header || encode_context(ctx)`, so
//! the header (and with it the key id) and the encryption context are both authenticated.
//! A blob is `21 + 12 + n + 16` bytes: a 4096-byte plaintext gives 4145 bytes.

use std::collections::BTreeMap;

use hsmkms_common::aead::OVERHEAD;
use uuid::Uuid;

use super::error::KmsError;

/// Start of every blob, so a stray byte string is rejected before any key lookup.
pub const MAGIC: [u8; 4] = *b"HKMS";
/// The layout of a blob under a key's original material; a new layout gets a new number so
/// old blobs stay readable.
pub const VERSION: u8 = 1;
/// The layout of a blob under rotated material: the header also names the material.
pub const VERSION_ROTATED: u8 = 2;
/// Magic, version and key id.
pub const HEADER_LEN: usize = MAGIC.len() + 1 + 16;
/// A version 2 header: the material's version after the key id.
pub const HEADER_LEN_ROTATED: usize = HEADER_LEN + 4;
/// A header and an empty sealed body (nonce and tag only).
pub const MIN_BLOB_LEN: usize = HEADER_LEN + OVERHEAD;
/// KMS's limit on `CiphertextBlob`.
pub const MAX_BLOB_LEN: usize = 6144;

/// The clear part of a blob: which KMS key sealed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The KMS key id (the UUID in its ARN).
    pub key_id: Uuid,
    /// Which of the key's materials sealed it: 0 for the original, n for the n-th rotation.
    pub material: u32,
}

impl Header {
    /// The header's length in bytes.
    pub fn encoded_len(&self) -> usize {
        if self.material == 0 {
            HEADER_LEN
        } else {
            HEADER_LEN_ROTATED
        }
    }

    /// Appends the header's bytes, as they start the blob and the associated data.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        if self.material == 0 {
            out.push(VERSION);
            out.extend_from_slice(self.key_id.as_bytes());
        } else {
            out.push(VERSION_ROTATED);
            out.extend_from_slice(self.key_id.as_bytes());
            out.extend_from_slice(&self.material.to_be_bytes());
        }
    }
}

/// The encryption context as bytes for the associated data. Canonical, because a BTreeMap
/// iterates in key order (so the order the caller sent pairs in does not matter), and
/// unambiguous, because every string is length-prefixed (so `{"ab":"c"}` and `{"a":"bc"}`
/// differ): u32 BE pair count, then per pair u32 BE key length, key, u32 BE value length, value.
pub fn encode_context(ctx: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = Vec::with_capacity(context_len(ctx));
    write_context(&mut out, ctx);
    out
}

fn context_len(ctx: &BTreeMap<String, String>) -> usize {
    4 + ctx
        .iter()
        .map(|(k, v)| 8 + k.len() + v.len())
        .sum::<usize>()
}

fn write_context(out: &mut Vec<u8>, ctx: &BTreeMap<String, String>) {
    out.extend_from_slice(&len_u32(ctx.len()));
    for (key, value) in ctx {
        out.extend_from_slice(&len_u32(key.len()));
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&len_u32(value.len()));
        out.extend_from_slice(value.as_bytes());
    }
}

/// The associated data a blob's body is sealed with: the header, then the encryption context.
pub fn aad(header: &Header, ctx: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.encoded_len() + context_len(ctx));
    header.write(&mut out);
    write_context(&mut out, ctx);
    out
}

/// The blob: `header || sealed`, where `sealed` is nonce || ciphertext || tag.
pub fn assemble(header: &Header, sealed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.encoded_len() + sealed.len());
    header.write(&mut out);
    out.extend_from_slice(sealed);
    out
}

/// Splits a blob into its header and sealed body, checking its size, magic and version. The
/// body is not authenticated here: the caller opens it with [`aad`] of the returned header.
pub fn parse(blob: &[u8]) -> Result<(Header, &[u8]), KmsError> {
    if !(MIN_BLOB_LEN..=MAX_BLOB_LEN).contains(&blob.len()) {
        return Err(KmsError::invalid_ciphertext());
    }
    let Some((magic, rest)) = blob.split_first_chunk::<4>() else {
        return Err(KmsError::invalid_ciphertext());
    };
    let Some((version, rest)) = rest.split_first() else {
        return Err(KmsError::invalid_ciphertext());
    };
    let Some((key_id, rest)) = rest.split_first_chunk::<16>() else {
        return Err(KmsError::invalid_ciphertext());
    };
    if *magic != MAGIC {
        return Err(KmsError::invalid_ciphertext());
    }
    let (material, sealed) = match *version {
        VERSION => (0, rest),
        VERSION_ROTATED => match rest.split_first_chunk::<4>() {
            // Version 0 is the original material, which writes version 1 blobs only.
            Some((m, sealed)) if u32::from_be_bytes(*m) != 0 && sealed.len() >= OVERHEAD => {
                (u32::from_be_bytes(*m), sealed)
            }
            _ => return Err(KmsError::invalid_ciphertext()),
        },
        _ => return Err(KmsError::invalid_ciphertext()),
    };
    let header = Header {
        key_id: Uuid::from_bytes(*key_id),
        material,
    };
    Ok((header, sealed))
}

/// A length as the u32 BE prefix. Request bodies are bounded far below 4 GiB, so saturating
/// can never make two contexts collide in practice.
fn len_u32(len: usize) -> [u8; 4] {
    u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use hsmkms_common::aead::Sealer;
    use hsmkms_common::secret::KeyMaterial;

    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Encrypts as the service will: seal under the key with the blob's AAD, then assemble.
    fn encrypt(
        sealer: &Sealer,
        key_id: Uuid,
        plaintext: &[u8],
        context: &BTreeMap<String, String>,
    ) -> Vec<u8> {
        let header = Header {
            key_id,
            material: 0,
        };
        assemble(&header, &sealer.seal(plaintext, &aad(&header, context)))
    }

    /// Decrypts as the service will: parse, recompute the AAD from the parsed header, open.
    fn decrypt(
        sealer: &Sealer,
        blob: &[u8],
        context: &BTreeMap<String, String>,
    ) -> Result<(Uuid, Vec<u8>), KmsError> {
        let (header, sealed) = parse(blob)?;
        let plain = sealer
            .open(sealed, &aad(&header, context))
            .map_err(|_| KmsError::invalid_ciphertext())?;
        Ok((header.key_id, plain.expose().to_vec()))
    }

    #[test]
    fn a_blob_round_trips_and_names_its_key() {
        let sealer = Sealer::new(&KeyMaterial::generate());
        let key_id = Uuid::new_v4();
        let context = ctx(&[("purpose", "test"), ("department", "10103.0")]);
        let blob = encrypt(&sealer, key_id, b"attack at dawn", &context);
        assert_eq!(blob.len(), HEADER_LEN + 12 + 14 + 16);
        assert_eq!(
            parse(&blob).unwrap().0,
            Header {
                key_id,
                material: 0
            }
        );
        assert_eq!(
            decrypt(&sealer, &blob, &context).unwrap(),
            (key_id, b"attack at dawn".to_vec())
        );
    }

    #[test]
    fn a_maximum_plaintext_fits_under_the_kms_limit() {
        let sealer = Sealer::new(&KeyMaterial::generate());
        let plaintext = vec![7u8; 4096];
        let blob = encrypt(&sealer, Uuid::new_v4(), &plaintext, &BTreeMap::new());
        assert_eq!(blob.len(), 4145);
        assert_eq!(
            decrypt(&sealer, &blob, &BTreeMap::new()).unwrap().1,
            plaintext
        );
    }

    #[test]
    fn the_header_layout_is_magic_version_key_id() {
        let key_id = Uuid::new_v4();
        let header = Header {
            key_id,
            material: 0,
        };
        let mut bytes = Vec::new();
        header.write(&mut bytes);
        assert_eq!(bytes.len(), HEADER_LEN);
        assert_eq!(&bytes[..4], b"HKMS");
        assert_eq!(bytes[4], 1);
        assert_eq!(&bytes[5..], key_id.as_bytes());
        let context = ctx(&[("a", "b")]);
        let aad = aad(&header, &context);
        assert_eq!(&aad[..HEADER_LEN], &bytes);
        assert_eq!(&aad[HEADER_LEN..], encode_context(&context).as_slice());
    }

    /// Rotated material writes version 2, which names the material; it round-trips, and a
    /// version 2 header naming material 0 (which only writes version 1) is refused.
    #[test]
    fn a_rotated_blob_names_its_material() {
        let sealer = Sealer::new(&KeyMaterial::generate());
        let key_id = Uuid::new_v4();
        let header = Header {
            key_id,
            material: 3,
        };
        let context = ctx(&[("a", "b")]);
        let blob = assemble(&header, &sealer.seal(b"x", &aad(&header, &context)));
        assert_eq!(blob[4], 2);
        assert_eq!(&blob[21..25], &3u32.to_be_bytes());
        assert_eq!(blob.len(), HEADER_LEN_ROTATED + 12 + 1 + 16);
        assert_eq!(parse(&blob).unwrap().0, header);
        assert_eq!(decrypt(&sealer, &blob, &context).unwrap().1, b"x");
        let mut zero = blob.clone();
        zero[21..25].copy_from_slice(&0u32.to_be_bytes());
        assert!(parse(&zero).is_err());
        // The header is authenticated: another material number does not open.
        let mut other = blob.clone();
        other[24] = 4;
        assert!(decrypt(&sealer, &other, &context).is_err());
    }

    #[test]
    fn the_context_encoding_is_canonical_and_unambiguous() {
        assert_eq!(encode_context(&BTreeMap::new()), [0, 0, 0, 0]);
        assert_eq!(
            encode_context(&ctx(&[("a", "bc")])),
            [0, 0, 0, 1, 0, 0, 0, 1, b'a', 0, 0, 0, 2, b'b', b'c']
        );
        // The caller's pair order must not matter: KMS accepts the pairs in any order.
        let mut forward = BTreeMap::new();
        forward.insert("x".to_string(), "1".to_string());
        forward.insert("y".to_string(), "2".to_string());
        let mut backward = BTreeMap::new();
        backward.insert("y".to_string(), "2".to_string());
        backward.insert("x".to_string(), "1".to_string());
        assert_eq!(encode_context(&forward), encode_context(&backward));
        // Moving bytes between a key and its value is a different context.
        assert_ne!(
            encode_context(&ctx(&[("ab", "c")])),
            encode_context(&ctx(&[("a", "bc")]))
        );
        assert_ne!(
            encode_context(&ctx(&[("a", "b"), ("c", "d")])),
            encode_context(&ctx(&[("a", "b\0\0\0\x01\0\0\0\x01c\0\0\0\x01d")]))
        );
    }

    #[test]
    fn only_the_exact_context_decrypts() {
        let sealer = Sealer::new(&KeyMaterial::generate());
        let key_id = Uuid::new_v4();
        let context = ctx(&[("ab", "c")]);
        let blob = encrypt(&sealer, key_id, b"secret", &context);
        assert!(decrypt(&sealer, &blob, &context).is_ok());
        for wrong in [
            ctx(&[("a", "bc")]),
            ctx(&[("ab", "C")]),
            ctx(&[("AB", "c")]),
            ctx(&[("ab", "c"), ("extra", "")]),
            BTreeMap::new(),
        ] {
            assert_eq!(
                decrypt(&sealer, &blob, &wrong).unwrap_err(),
                KmsError::invalid_ciphertext(),
                "{wrong:?}"
            );
        }
        // Pairs supplied in another order are the same context.
        let two = ctx(&[("k1", "v1"), ("k2", "v2")]);
        let blob = encrypt(&sealer, key_id, b"secret", &two);
        let mut swapped = BTreeMap::new();
        swapped.insert("k2".to_string(), "v2".to_string());
        swapped.insert("k1".to_string(), "v1".to_string());
        assert!(decrypt(&sealer, &blob, &swapped).is_ok());
    }

    #[test]
    fn tampering_with_any_byte_is_detected() {
        let sealer = Sealer::new(&KeyMaterial::generate());
        let context = ctx(&[("purpose", "test")]);
        let blob = encrypt(&sealer, Uuid::new_v4(), b"attack at dawn", &context);
        for i in 0..blob.len() {
            for bit in [0x01, 0x80] {
                let mut tampered = blob.clone();
                tampered[i] ^= bit;
                assert_eq!(
                    decrypt(&sealer, &tampered, &context).unwrap_err(),
                    KmsError::invalid_ciphertext(),
                    "byte {i} bit {bit:#x}"
                );
            }
        }
    }

    #[test]
    fn blobs_are_not_interchangeable_between_keys() {
        // Same key material, different KMS key: the key id in the AAD keeps them apart.
        let sealer = Sealer::new(&KeyMaterial::generate());
        let blob = encrypt(&sealer, Uuid::new_v4(), b"secret", &BTreeMap::new());
        let mut relabelled = blob.clone();
        relabelled[5..HEADER_LEN].copy_from_slice(Uuid::new_v4().as_bytes());
        assert!(decrypt(&sealer, &relabelled, &BTreeMap::new()).is_err());
        let other = Sealer::new(&KeyMaterial::generate());
        assert!(decrypt(&other, &blob, &BTreeMap::new()).is_err());
    }

    #[test]
    fn malformed_blobs_are_invalid_ciphertext() {
        let key_id = Uuid::new_v4();
        let header = Header {
            key_id,
            material: 0,
        };
        let good = assemble(&header, &[0u8; OVERHEAD]);
        assert!(parse(&good).is_ok());

        let mut cases: Vec<Vec<u8>> = (0..MIN_BLOB_LEN).map(|n| good[..n].to_vec()).collect();
        cases.push(assemble(&header, &vec![0u8; MAX_BLOB_LEN - HEADER_LEN + 1]));
        let mut wrong_magic = good.clone();
        wrong_magic[..4].copy_from_slice(b"AKMS");
        cases.push(wrong_magic);
        for version in [0, 2, 0xff] {
            let mut wrong_version = good.clone();
            wrong_version[4] = version;
            cases.push(wrong_version);
        }
        for case in cases {
            let err = parse(&case).unwrap_err();
            assert_eq!(err.type_name(), "InvalidCiphertextException");
            assert_eq!(err.message(), "", "AWS sends no message");
            assert!(!err.message().contains(&key_id.to_string()));
        }

        let largest = assemble(&header, &vec![0u8; MAX_BLOB_LEN - HEADER_LEN]);
        assert_eq!(largest.len(), MAX_BLOB_LEN);
        assert_eq!(parse(&largest).unwrap().1.len(), MAX_BLOB_LEN - HEADER_LEN);
    }

    #[test]
    fn a_truncated_body_fails_to_open() {
        let sealer = Sealer::new(&KeyMaterial::generate());
        let blob = encrypt(&sealer, Uuid::new_v4(), b"attack at dawn", &BTreeMap::new());
        for cut in 1..=blob.len() {
            let truncated = &blob[..blob.len() - cut];
            assert!(decrypt(&sealer, truncated, &BTreeMap::new()).is_err());
        }
    }
}
