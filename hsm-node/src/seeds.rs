//! Seeds: addresses a node links to that its membership does not (yet) name. Join targets
//! (from `node.json`) and peers that introduced themselves with a Hello before their member
//! record reached this node. Bounded, and pruned as the membership catches up: a peer's seed
//! goes once its member record names the same address (the membership covers it), once the
//! peer is removed from the cluster, or when it says Hello again from another address (it
//! moved), so no seed keeps a link dialling an address nobody serves.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hsmkms_common::wire::MemberRecord;

/// Most peers kept as seeds from their Hello: well above the 28 HSMs a cluster may have.
pub const MAX_HELLO_SEEDS: usize = 64;

/// A node's seeds.
#[derive(Debug, Clone, Default)]
pub struct Seeds {
    /// Join targets, by address.
    join: BTreeSet<String>,
    /// The address each peer last said Hello from, by HSM id.
    hello: BTreeMap<String, String>,
}

impl Seeds {
    /// Seeds starting from the join targets.
    pub fn new(join: impl IntoIterator<Item = String>) -> Self {
        Self {
            join: join.into_iter().collect(),
            hello: BTreeMap::new(),
        }
    }

    /// A peer said Hello from `address`. Returns whether the seeds changed; a new peer past
    /// [`MAX_HELLO_SEEDS`] is not kept.
    pub fn hello(&mut self, hsm_id: &str, address: &str) -> bool {
        if self.hello.get(hsm_id).is_some_and(|a| a == address) {
            return false;
        }
        if !self.hello.contains_key(hsm_id) && self.hello.len() >= MAX_HELLO_SEEDS {
            return false;
        }
        self.hello.insert(hsm_id.to_string(), address.to_string());
        true
    }

    /// Drops the seeds the membership covers or that lead to removed HSMs. `linked` tells
    /// which HSM answers at an address, for join targets (known only by address).
    pub fn prune(
        &mut self,
        members: &[MemberRecord],
        is_forgotten: impl Fn(&str) -> bool,
        linked: &HashMap<String, String>,
    ) {
        self.hello.retain(|hsm_id, address| {
            !is_forgotten(hsm_id)
                && !members
                    .iter()
                    .any(|m| m.hsm_id == *hsm_id && m.address == *address)
        });
        self.join.retain(|address| {
            !linked
                .get(address)
                .is_some_and(|hsm_id| is_forgotten(hsm_id))
        });
    }

    /// Every seed address.
    pub fn addresses(&self) -> impl Iterator<Item = &String> {
        self.join.iter().chain(self.hello.values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(hsm_id: &str, address: &str) -> MemberRecord {
        MemberRecord {
            hsm_id: hsm_id.into(),
            availability_zone: "us-east-1a".into(),
            address: address.into(),
            node_number: 1,
        }
    }

    fn addresses(seeds: &Seeds) -> Vec<&str> {
        let mut all: Vec<&str> = seeds.addresses().map(String::as_str).collect();
        all.sort();
        all
    }

    #[test]
    fn seeds_go_once_the_membership_covers_them_or_their_hsm_is_removed() {
        let mut seeds = Seeds::new(["j:1".to_string()]);
        assert!(seeds.hello("hsm-b", "b:1"));
        assert!(
            !seeds.hello("hsm-b", "b:1"),
            "the same Hello changes nothing"
        );
        assert!(seeds.hello("hsm-c", "c:1"));
        assert_eq!(addresses(&seeds), ["b:1", "c:1", "j:1"]);
        // B moved: its new Hello replaces its old address.
        assert!(seeds.hello("hsm-b", "b:2"));
        assert_eq!(addresses(&seeds), ["b:2", "c:1", "j:1"]);
        // B's member record arrives, at an older address: its seed stays until it catches up.
        let no_links = HashMap::new();
        seeds.prune(&[member("hsm-b", "b:1")], |_| false, &no_links);
        assert_eq!(addresses(&seeds), ["b:2", "c:1", "j:1"]);
        seeds.prune(&[member("hsm-b", "b:2")], |_| false, &no_links);
        assert_eq!(addresses(&seeds), ["c:1", "j:1"]);
        // C is removed from the cluster; so is the HSM at the join target.
        let linked = HashMap::from([("j:1".to_string(), "hsm-j".to_string())]);
        seeds.prune(&[], |id| id == "hsm-c" || id == "hsm-j", &linked);
        assert!(addresses(&seeds).is_empty());
    }

    #[test]
    fn hello_seeds_are_bounded() {
        let mut seeds = Seeds::default();
        for i in 0..MAX_HELLO_SEEDS {
            assert!(seeds.hello(&format!("hsm-{i}"), &format!("h:{i}")));
        }
        assert!(!seeds.hello("hsm-one-more", "h:x"));
        // A known peer that moved is still followed.
        assert!(seeds.hello("hsm-0", "h:moved"));
        assert_eq!(seeds.addresses().count(), MAX_HELLO_SEEDS);
    }
}
