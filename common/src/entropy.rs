//! Randomness is injected like time: code that mints ids, key material, passwords or data keys
//! takes an [`Entropy`], so a simulation or a test can run it from a seed and get the same
//! answers twice. The emulator runs on [`OsEntropy`].
//!
//! AEAD nonces are the exception: they always come from the operating system, because a seeded
//! source would repeat a nonce under the same key in the next run with that seed.

use std::fmt;
use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::{CryptoRng, RngCore, SeedableRng};

/// A source of random bytes.
pub trait Entropy: Send + Sync + fmt::Debug {
    /// Fills `dest` with random bytes.
    fn fill(&self, dest: &mut [u8]);
}

/// What the emulator runs on: rand's thread-local CSPRNG (ChaCha12, seeded from the operating
/// system's and reseeded from it every 64 KiB of output), as the AEAD nonces are. Not
/// `OsRng` directly: that is a `getrandom` system call for every data key and id, a cost a
/// GenerateDataKey felt beside an Encrypt.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&self, dest: &mut [u8]) {
        rand::thread_rng().fill_bytes(dest);
    }
}

/// A deterministic source: the same seed gives the same bytes in the same order. For
/// simulations and tests only; its state is never printed.
pub struct SeededEntropy(Mutex<StdRng>);

impl SeededEntropy {
    pub fn new(seed: u64) -> Self {
        Self(Mutex::new(StdRng::seed_from_u64(seed)))
    }
}

impl fmt::Debug for SeededEntropy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SeededEntropy(..)")
    }
}

impl Entropy for SeededEntropy {
    fn fill(&self, dest: &mut [u8]) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fill_bytes(dest);
    }
}

/// An [`Entropy`] as an `rand` generator, for functions that take one (id minting, sampling).
#[derive(Debug)]
pub struct EntropyRng<'a>(pub &'a dyn Entropy);

impl RngCore for EntropyRng<'_> {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.0.fill(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.0.fill(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill(dest);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.0.fill(dest);
        Ok(())
    }
}

/// Every [`Entropy`] the emulator uses is a CSPRNG (the OS's, or ChaCha from a seed).
impl CryptoRng for EntropyRng<'_> {}

/// `n` random bytes.
pub fn bytes(entropy: &dyn Entropy, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    entropy.fill(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_gives_the_same_bytes_and_two_seeds_do_not() {
        let (a, b, c) = (
            SeededEntropy::new(7),
            SeededEntropy::new(7),
            SeededEntropy::new(8),
        );
        assert_eq!(bytes(&a, 32), bytes(&b, 32));
        assert_ne!(bytes(&a, 32), bytes(&c, 32));
        assert_ne!(bytes(&OsEntropy, 32), bytes(&OsEntropy, 32));
    }
}
