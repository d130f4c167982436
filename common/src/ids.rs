//! Identifiers in the formats AWS uses, so that users see the ids they expect.

use rand::Rng;

/// The alphabet of CloudHSM ids after their prefix (`cluster-`, `hsm-`, `backup-`): base32.
const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";

/// How many characters follow the prefix: CloudHSM ids carry 11 to 16, real ones 11.
const ID_LEN: usize = 11;

fn random_suffix(rng: &mut impl Rng) -> String {
    (0..ID_LEN)
        .map(|_| ID_ALPHABET[rng.gen_range(0..ID_ALPHABET.len())] as char)
        .collect()
}

/// A new cluster id, `cluster-` followed by 11 base32 characters.
pub fn new_cluster_id(rng: &mut impl Rng) -> String {
    format!("cluster-{}", random_suffix(rng))
}

/// A new HSM id, `hsm-` followed by 11 base32 characters.
pub fn new_hsm_id(rng: &mut impl Rng) -> String {
    format!("hsm-{}", random_suffix(rng))
}

/// A new backup id, `backup-` followed by 11 base32 characters.
pub fn new_backup_id(rng: &mut impl Rng) -> String {
    format!("backup-{}", random_suffix(rng))
}

/// Whether `id` is `prefix` followed by 11 to 16 characters of `[2-7a-zA-Z]`, as CloudHSM's
/// models require of cluster, HSM and backup ids.
pub fn is_valid_id(prefix: &str, id: &str) -> bool {
    match id.strip_prefix(prefix) {
        Some(rest) => {
            (11..=16).contains(&rest.len())
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphabetic() || (b'2'..=b'7').contains(&b))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_ids_match_the_aws_patterns() {
        let mut rng = rand::thread_rng();
        for _ in 0..100 {
            assert!(is_valid_id("cluster-", &new_cluster_id(&mut rng)));
            assert!(is_valid_id("hsm-", &new_hsm_id(&mut rng)));
            assert!(is_valid_id("backup-", &new_backup_id(&mut rng)));
        }
    }

    #[test]
    fn malformed_ids_are_rejected() {
        assert!(!is_valid_id("cluster-", "cluster-abc"));
        assert!(!is_valid_id("cluster-", "cluster-abcdefghij01"));
        assert!(!is_valid_id("cluster-", "hsm-abcdefghijk"));
        assert!(is_valid_id("cluster-", "cluster-jxhlf7644ne"));
    }
}
