//! Key material never leaves an HSM in the clear: not in any file of the data directory (the
//! stores, the configuration, the keys files), and not in any log line, even at trace level.
//! The material is read in-process through the node library's test-only accessor.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;
use hsmkms_common::secret::SecretBytes;
use hsmkms_common::wire::{Request, Response};

/// Every log line of every node in this test binary, at trace level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_material_is_in_no_file_and_no_log_line() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    // Three in-process nodes; keys generated, used, replicated, and one deleted.
    let mut cluster = TestCluster::create(3).await;
    for i in 0..3 {
        cluster.start_in_process(i).await;
    }
    cluster.wait_linked().await;
    let c = cluster.kmsuser(0).await;
    let mut handles = Vec::new();
    for n in 0..8 {
        let (key, _) = generate(&c, &format!("secret-{n}")).await.unwrap();
        handles.push(key.handle);
    }
    let sealed = match c
        .call(
            Request::Encrypt {
                handle: handles[0],
                plaintext: SecretBytes::new(b"hello".to_vec()),
                aad: vec![],
            },
            DEADLINE,
        )
        .await
        .unwrap()
    {
        Response::Ciphertext(ct) => ct,
        other => panic!("unexpected {other:?}"),
    };
    assert!(matches!(
        c.call(Request::Decrypt { handle: handles[0], ciphertext: sealed, aad: vec![] }, DEADLINE).await.unwrap(),
        Response::Plaintext(p) if p.expose() == b"hello"
    ));
    for i in 0..3 {
        eventually("all keys on every node", DEADLINE, || async {
            labels(&cluster.kmsuser(i).await).await.len() == 8
        })
        .await;
    }

    let mut materials = Vec::new();
    for &h in &handles {
        for i in 0..3 {
            let m = cluster
                .in_process(i)
                .material_for_test(h)
                .await
                .expect("material readable in-process");
            materials.push(m);
        }
    }
    // Every node holds the same material for a key (it is one key, replicated).
    assert!(materials.chunks(3).all(|c| c[0] == c[1] && c[1] == c[2]));

    // Stop the nodes so every store is flushed and closed, then search every file.
    for i in 0..3 {
        cluster.stop_in_process(i);
    }
    let mut files = Vec::new();
    files_under(cluster.tmp.path(), &mut files);
    assert!(files.iter().any(|f| f.ends_with("node.redb")));
    for file in &files {
        let content = std::fs::read(file).unwrap();
        let text = String::from_utf8_lossy(&content).to_lowercase();
        for m in &materials {
            assert!(
                memchr::memmem::find(&content, m).is_none(),
                "raw material in {}",
                file.display()
            );
            assert!(
                !text.contains(&hex(m)),
                "hex material in {}",
                file.display()
            );
        }
    }

    // And no log line shows it, in hex or as a byte list.
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("HSM node started"), "logs were captured");
    for m in &materials {
        assert!(!logs.to_lowercase().contains(&hex(m)));
        assert!(!logs.contains(&format!("{:?}", &m[..8]).trim_end_matches(']').to_string()));
    }
}
