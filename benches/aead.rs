//! AES-256-GCM seal and open with the project's AEAD ([`Sealer`]), at a small message, a page
//! and a large blob, so a regression in either the per-call overhead or the bulk rate shows.

// A benchmark panics on a broken setup by design: there is no caller to hand an error to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hsmkms_common::aead::Sealer;
use hsmkms_common::secret::KeyMaterial;

/// 32 B (a wrapped key), 4 KiB (a KMS Encrypt at its plaintext limit), 1 MiB (bulk rate).
const SIZES: [(usize, &str); 3] = [(32, "32B"), (4 * 1024, "4KiB"), (1024 * 1024, "1MiB")];

/// Associated data as the node binds it: a short context string.
const AAD: &[u8] = b"hsmkms-bench-context";

/// 1 MiB takes ~1.5 ms: 100 samples would not fit criterion's 5 s window, 50 do.
fn sample_size(size: usize) -> usize {
    if size >= 1024 * 1024 {
        50
    } else {
        100
    }
}

fn seal(c: &mut Criterion) {
    let sealer = Sealer::new(&KeyMaterial::generate());
    let mut group = c.benchmark_group("aead/seal");
    for (size, name) in SIZES {
        let plaintext = vec![0x5a_u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.sample_size(sample_size(size));
        group.bench_with_input(BenchmarkId::from_parameter(name), &plaintext, |b, pt| {
            b.iter(|| sealer.seal(black_box(pt), black_box(AAD)))
        });
    }
    group.finish();
}

fn open(c: &mut Criterion) {
    let sealer = Sealer::new(&KeyMaterial::generate());
    let mut group = c.benchmark_group("aead/open");
    for (size, name) in SIZES {
        let plaintext = vec![0x5a_u8; size];
        let sealed = sealer.seal(&plaintext, AAD);
        // Check once, outside the loop, that what we time is a successful open.
        assert_eq!(sealer.open(&sealed, AAD).unwrap().expose(), &plaintext[..]);
        group.throughput(Throughput::Bytes(size as u64));
        group.sample_size(sample_size(size));
        group.bench_with_input(BenchmarkId::from_parameter(name), &sealed, |b, sealed| {
            b.iter(|| sealer.open(black_box(sealed), black_box(AAD)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, seal, open);
criterion_main!(benches);
