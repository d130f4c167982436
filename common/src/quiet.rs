//! Running code that may panic on bad input from a file (a storage library's assertions on a
//! damaged file) without the panic taking the process down or printing a backtrace: the panic
//! becomes an error the caller turns into a clear message. Panics on other threads meanwhile
//! are reported as usual.

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

/// Serialises installs of the quiet hook, so nested or concurrent callers restore the right one.
static HOOK: Mutex<()> = Mutex::new(());

/// Runs `f`; a panic in it (on this thread) is caught, not printed, and returned as `Err` with
/// its message.
pub fn catch_quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let _installing = HOOK.lock().unwrap_or_else(|e| e.into_inner());
    let this = std::thread::current().id();
    let previous = Arc::new(panic::take_hook());
    let forward = previous.clone();
    panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() != this {
            forward(info);
        }
    }));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    // Put the previous hook back (the quiet one holds the only other reference to it).
    let _ = panic::take_hook();
    match Arc::try_unwrap(previous) {
        Ok(hook) => panic::set_hook(hook),
        Err(shared) => panic::set_hook(Box::new(move |info| shared(info))),
    }
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_and_the_hook_comes_back() {
        assert_eq!(catch_quietly(|| 7), Ok(7));
        let caught = catch_quietly(|| -> u32 { panic!("damaged header") });
        assert_eq!(caught, Err("damaged header".to_string()));
        // The default hook is back: a later panic elsewhere is still caught by catch_unwind.
        assert!(std::panic::catch_unwind(|| panic!("later")).is_err());
    }
}
