//! What an HSM does at start with a store file it cannot use. Only a file that is really
//! empty or damaged is moved aside and rebuilt from the peers; a file that merely could not be
//! opened (an I/O or permission error, something that is not a file) may hold changes only
//! this HSM has, so the start stops with an error naming it and leaves it where it is.

mod support;

use std::path::Path;

use hsm_node::config::{self, STORE_FILE};
use hsm_node::NodeOptions;

/// Files in `dir` whose name starts with `node.redb.damaged`.
fn moved_aside(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|name| name.starts_with("node.redb.damaged"))
        .collect()
}

#[actix_rt::test]
async fn a_store_that_cannot_be_opened_stops_the_start_and_only_a_damaged_one_is_rebuilt() {
    let mut nodes = support::cluster(2, NodeOptions::default()).await;
    let second = nodes.pop().unwrap();
    let first = nodes.pop().unwrap();
    // The second HSM knows its peer, so a damaged store of its own would be rebuilt.
    let stopped = second.stop();
    config::add_join(&stopped.node_dir, &[first.node.address().to_string()]).unwrap();
    let store = stopped.node_dir.join(STORE_FILE);
    let whole = std::fs::read(&store).unwrap();

    // Something that is not a file where the store should be: a clear error naming it; the
    // thing is left in place, nothing is moved aside.
    std::fs::rename(&store, stopped.node_dir.join("kept.redb")).unwrap();
    std::fs::create_dir(&store).unwrap();
    match stopped.start(NodeOptions::default()) {
        Ok(node) => panic!(
            "started on a store it could not open; moved aside: {:?}",
            moved_aside(&node.node_dir)
        ),
        Err(e) => {
            let message = format!("{e:#}");
            assert!(message.contains("node.redb"), "{message}");
            assert!(!message.contains("panicked"), "{message}");
        }
    }
    assert!(store.is_dir(), "the store path was moved");
    assert!(moved_aside(&stopped.node_dir).is_empty());

    // A file that cannot even be looked at (a symbolic link that loops): the same.
    std::fs::remove_dir(&store).unwrap();
    std::os::unix::fs::symlink(&store, &store).unwrap();
    match stopped.start(NodeOptions::default()) {
        Ok(_) => panic!("started on a store it could not look at"),
        Err(e) => assert!(format!("{e:#}").contains("node.redb"), "{e:#}"),
    }
    assert!(store.is_symlink(), "the store path was moved");
    assert!(moved_aside(&stopped.node_dir).is_empty());

    // A damaged file is moved aside and the store rebuilt from the peer.
    std::fs::remove_file(&store).unwrap();
    let mut damaged = whole.clone();
    damaged.truncate(100);
    std::fs::write(&store, &damaged).unwrap();
    let rebuilt = stopped
        .start(NodeOptions::default())
        .unwrap_or_else(|e| panic!("a damaged store is rebuilt, not refused: {e:#}"));
    assert_eq!(moved_aside(&rebuilt.node_dir).len(), 1);
    drop(rebuilt);
    drop(first);
}
