//! AES-256-GCM seal and open with the project's AEAD ([`Sealer`]), beside the same operation with
//! `ring` as a reference, at a small message, a page and a large blob, so a regression in either
//! the per-call overhead or the bulk rate shows. Both sides do the same work: a random nonce, a
//! fresh output buffer, nonce || ciphertext || tag. The project's AEAD is RustCrypto's `aes-gcm`
//! 0.11 (the brief's crate); the ratio measures it, and what the wrapper costs (chiefly wiping
//! each decrypted plaintext on drop), against ring's stitched AES-NI code.
//!
//! After criterion's groups, a short timed run of each pair prints the throughput ratio
//! (project / ring) measured in the same run: `RATIO aead/seal/4KiB 0.93`.

// A benchmark panics on a broken setup by design: there is no caller to hand an error to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use hsmkms_common::aead::{Sealer, NONCE_LEN, OVERHEAD};
use hsmkms_common::secret::KeyMaterial;
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

/// 32 B (a wrapped key), 4 KiB (a KMS Encrypt at its plaintext limit), 1 MiB (bulk rate).
const SIZES: [(usize, &str); 3] = [(32, "32B"), (4 * 1024, "4KiB"), (1024 * 1024, "1MiB")];

/// Associated data as the node binds it: a short context string.
const AAD: &[u8] = b"hsmkms-bench-context";

/// How long each side of a ratio is timed.
const RATIO_WINDOW: Duration = Duration::from_millis(400);

/// 1 MiB takes ~1.5 ms: 100 samples would not fit criterion's 5 s window, 50 do.
fn sample_size(size: usize) -> usize {
    if size >= 1024 * 1024 {
        50
    } else {
        100
    }
}

/// The reference: ring's AES-256-GCM called directly, with the same nonce source and buffers
/// as the project's, so the ratio shows what the project's wrapper costs over the bare cipher.
struct RingSealer {
    key: LessSafeKey,
}

impl RingSealer {
    fn new(key: &[u8; 32]) -> Self {
        Self {
            key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap()),
        }
    }

    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[NONCE_LEN..],
            )
            .unwrap();
        out.extend_from_slice(tag.as_ref());
        out
    }

    fn open(&self, sealed: &[u8], aad: &[u8]) -> Vec<u8> {
        let nonce = Nonce::try_assume_unique_for_key(&sealed[..NONCE_LEN]).unwrap();
        let mut body = sealed[NONCE_LEN..].to_vec();
        let len = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .unwrap()
            .len();
        body.truncate(len);
        body
    }
}

fn keys() -> (Sealer, RingSealer) {
    let raw = [7u8; 32];
    let mut copy = raw;
    let material = KeyMaterial::from_slice(&mut copy).unwrap();
    (Sealer::new(&material), RingSealer::new(&raw))
}

fn seal(c: &mut Criterion) {
    let (sealer, ring) = keys();
    let mut group = c.benchmark_group("aead/seal");
    for (size, name) in SIZES {
        let plaintext = vec![0x5a_u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.sample_size(sample_size(size));
        group.bench_with_input(BenchmarkId::new("hsmkms", name), &plaintext, |b, pt| {
            b.iter(|| sealer.seal(black_box(pt), black_box(AAD)))
        });
        group.bench_with_input(BenchmarkId::new("ring", name), &plaintext, |b, pt| {
            b.iter(|| ring.seal(black_box(pt), black_box(AAD)))
        });
    }
    group.finish();
}

fn open(c: &mut Criterion) {
    let (sealer, ring) = keys();
    let mut group = c.benchmark_group("aead/open");
    for (size, name) in SIZES {
        let plaintext = vec![0x5a_u8; size];
        let sealed = sealer.seal(&plaintext, AAD);
        // Both open what the other seals: the formats are the same, and what is timed succeeds.
        assert_eq!(
            sealer
                .open(&ring.seal(&plaintext, AAD), AAD)
                .unwrap()
                .expose(),
            &plaintext[..]
        );
        assert_eq!(ring.open(&sealed, AAD), plaintext);
        group.throughput(Throughput::Bytes(size as u64));
        group.sample_size(sample_size(size));
        group.bench_with_input(BenchmarkId::new("hsmkms", name), &sealed, |b, sealed| {
            b.iter(|| sealer.open(black_box(sealed), black_box(AAD)).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("ring", name), &sealed, |b, sealed| {
            b.iter(|| ring.open(black_box(sealed), black_box(AAD)))
        });
    }
    group.finish();
}

/// Calls per second of `f` over [`RATIO_WINDOW`].
fn rate(f: &mut dyn FnMut()) -> f64 {
    for _ in 0..100 {
        f();
    }
    let started = Instant::now();
    let mut calls = 0u64;
    while started.elapsed() < RATIO_WINDOW {
        for _ in 0..16 {
            f();
        }
        calls += 16;
    }
    calls as f64 / started.elapsed().as_secs_f64()
}

/// Prints project/ring throughput ratios, interleaving the two sides to share the machine's
/// state (frequency, other load) as far as possible.
fn ratios() {
    let (sealer, ring) = keys();
    for (size, name) in SIZES {
        let plaintext = vec![0x5a_u8; size];
        let sealed = sealer.seal(&plaintext, AAD);
        let mut seal_ratio = Vec::new();
        let mut open_ratio = Vec::new();
        for round in 0..3 {
            // Alternate which side goes first, so neither always gets the warmer machine.
            let pair = |ours: &mut dyn FnMut(), theirs: &mut dyn FnMut()| {
                if round % 2 == 0 {
                    let a = rate(&mut *ours);
                    a / rate(&mut *theirs)
                } else {
                    let b = rate(&mut *theirs);
                    rate(&mut *ours) / b
                }
            };
            seal_ratio.push(pair(
                &mut || drop(black_box(sealer.seal(black_box(&plaintext), AAD))),
                &mut || drop(black_box(ring.seal(black_box(&plaintext), AAD))),
            ));
            open_ratio.push(pair(
                &mut || drop(black_box(sealer.open(black_box(&sealed), AAD))),
                &mut || drop(black_box(ring.open(black_box(&sealed), AAD))),
            ));
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        println!("RATIO aead/seal/{name} {:.2}", median(&mut seal_ratio));
        println!("RATIO aead/open/{name} {:.2}", median(&mut open_ratio));
    }
}

criterion_group!(benches, seal, open);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo bench -- --test` (the CI smoke run) checks that the benches work; no timing.
    if !std::env::args().any(|a| a == "--test" || a == "--list") {
        ratios();
    }
}
