//! The ciphertext blob and the encryption-context encoding, the per-request framing around
//! every Encrypt and Decrypt: building a blob from a sealed body, parsing one back, and
//! encoding the associated data for contexts of 0, 1 and 8 pairs. Also the whole frontend-side
//! AWS_KMS encrypt and decrypt of a 32-byte plaintext (AAD, seal, assemble; parse, AAD, open),
//! to show what the blob costs beside the cipher.

// A benchmark panics on a broken setup by design: there is no caller to hand an error to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hsmkms_common::aead::Sealer;
use hsmkms_common::secret::KeyMaterial;
use kms_frontend::service::ciphertext::{aad, assemble, encode_context, parse, Header};
use uuid::Uuid;

/// Encryption contexts as applications send them: none, one pair, eight pairs.
fn contexts() -> Vec<(&'static str, BTreeMap<String, String>)> {
    let pairs = |n: usize| -> BTreeMap<String, String> {
        (0..n)
            .map(|i| {
                (
                    format!("context-key-{i}"),
                    format!("context-value-{i}-abcdef"),
                )
            })
            .collect()
    };
    vec![
        ("0_pairs", pairs(0)),
        ("1_pair", pairs(1)),
        ("8_pairs", pairs(8)),
    ]
}

fn blob(c: &mut Criterion) {
    let header = Header {
        key_id: Uuid::new_v4(),
        material: 0,
    };
    let sealer = Sealer::new(&KeyMaterial::generate());
    let ctx = BTreeMap::from([("app".to_string(), "bench".to_string())]);
    let plaintext = [0x5a_u8; 32];

    let mut group = c.benchmark_group("ciphertext");
    for (name, ctx) in contexts() {
        group.bench_with_input(BenchmarkId::new("encode_context", name), &ctx, |b, ctx| {
            b.iter(|| encode_context(black_box(ctx)))
        });
    }
    let sealed = sealer.seal(&plaintext, &aad(&header, &ctx));
    group.bench_function("assemble_32B", |b| {
        b.iter(|| assemble(black_box(&header), black_box(&sealed)))
    });
    let blob = assemble(&header, &sealed);
    group.bench_function("parse_32B", |b| b.iter(|| parse(black_box(&blob)).unwrap()));

    group.bench_function("aws_kms_encrypt_32B", |b| {
        b.iter(|| {
            let sealed = sealer.seal(black_box(&plaintext), &aad(&header, black_box(&ctx)));
            assemble(&header, &sealed)
        })
    });
    group.bench_function("aws_kms_decrypt_32B", |b| {
        b.iter(|| {
            let (header, sealed) = parse(black_box(&blob)).unwrap();
            sealer.open(sealed, &aad(&header, black_box(&ctx))).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, blob);
criterion_main!(benches);
