//! The emulator's clock: the machine's time plus an offset that users move forward (never
//! back) through the control API, so a 30-day waiting period can pass in a CI run. The offset is
//! persisted, so a restart keeps the emulated date.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hsmkms_common::clock::Clock;

use crate::store::{Table, Write};

/// Key of the offset in the store's meta table.
pub const OFFSET_KEY: &str = "clock_offset_millis";

/// Wall-clock time plus an offset.
#[derive(Debug)]
pub struct EmulatorClock {
    base: Arc<dyn Clock>,
    offset_millis: AtomicU64,
}

impl EmulatorClock {
    pub fn new(base: Arc<dyn Clock>, offset_millis: u64) -> Self {
        Self {
            base,
            offset_millis: AtomicU64::new(offset_millis),
        }
    }

    pub fn offset_millis(&self) -> u64 {
        self.offset_millis.load(Ordering::SeqCst)
    }

    /// The offset `by_millis` further on and the write that persists it; the clock moves only
    /// once that is durable ([`EmulatorClock::set_offset`]).
    pub fn advanced(&self, by_millis: u64) -> (u64, Write) {
        let new = self.offset_millis().saturating_add(by_millis);
        (new, Write::put(Table::Meta, OFFSET_KEY, &new))
    }

    /// The write that puts the offset back to zero (the reset of the control API); the clock
    /// moves back once it is durable ([`EmulatorClock::reset_offset`]).
    pub fn reset_write(&self) -> Write {
        Write::put(Table::Meta, OFFSET_KEY, &0u64)
    }

    /// Puts the offset back to zero: only the reset does, with every key gone.
    pub fn reset_offset(&self) {
        self.offset_millis.store(0, Ordering::SeqCst);
    }

    /// Sets the offset (never backwards).
    pub fn set_offset(&self, offset_millis: u64) {
        self.offset_millis
            .fetch_max(offset_millis, Ordering::SeqCst);
    }
}

impl Clock for EmulatorClock {
    fn now_millis(&self) -> u64 {
        self.base.now_millis().saturating_add(self.offset_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hsmkms_common::clock::ManualClock;

    #[test]
    fn advancing_moves_now_and_persists_the_total_offset() {
        let base = Arc::new(ManualClock::new(1_000));
        let clock = EmulatorClock::new(base.clone(), 500);
        assert_eq!(clock.now_millis(), 1_500);
        let (offset, write) = clock.advanced(2_000);
        assert_eq!(
            clock.now_millis(),
            1_500,
            "nothing moves before the write is durable"
        );
        clock.set_offset(offset);
        assert_eq!(clock.now_millis(), 3_500);
        base.advance_millis(10);
        assert_eq!(clock.now_millis(), 3_510);
        match write {
            Write::Put { table, key, value } => {
                assert_eq!(table, Table::Meta);
                assert_eq!(key, OFFSET_KEY);
                assert_eq!(postcard::from_bytes::<u64>(&value).ok(), Some(2_500));
            }
            other => panic!("unexpected write {other:?}"),
        }
    }
}
