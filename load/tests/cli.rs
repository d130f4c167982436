//! The load tool's command line: its bounds are refused before anything is sent, so every load
//! loop stops by itself. (The runs against a real emulator are in the root package's
//! `tests/bench_tool.rs`, which uses this crate's binary.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn load(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hsmkms-load"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn runs_past_their_bounds_are_refused_before_anything_is_sent() {
    // Nothing listens on port 9 of 127.0.0.1 (discard): a refusal must come before any call.
    for args in [
        &[
            "bench",
            "--duration",
            "121",
            "--endpoint",
            "http://127.0.0.1:9",
        ][..],
        &[
            "bench",
            "--connections",
            "1025",
            "--endpoint",
            "http://127.0.0.1:9",
        ][..],
        &[
            "bench",
            "--plaintext-bytes",
            "4097",
            "--endpoint",
            "http://127.0.0.1:9",
        ][..],
    ] {
        let out = load(args);
        assert!(!out.status.success(), "{args:?} is refused");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["bench", "echo", "report"] {
        let out = load(&[sub, "--help"]);
        assert!(out.status.success(), "{sub} --help");
        assert!(!out.stdout.is_empty());
    }
}
