//! Key specs and key usages (CreateKey's `KeySpec` and `KeyUsage`): which usage each spec
//! allows, and the algorithms a key of each spec and usage reports and accepts. No crypto here
//! (see [`super::asymmetric`]).

use serde::{Deserialize, Serialize};

use super::error::KmsError;

/// A key's spec. Stored in key records (postcard numbers variants in order): new specs go at
/// the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeySpec {
    SymmetricDefault,
    Rsa2048,
    Rsa3072,
    Rsa4096,
    EccNistP256,
    EccNistP384,
    EccNistP521,
    EccSecgP256k1,
    EccNistEdwards25519,
    MlDsa44,
    MlDsa65,
    MlDsa87,
    Hmac224,
    Hmac256,
    Hmac384,
    Hmac512,
    Sm2,
    MlKem512,
    MlKem768,
    MlKem1024,
}

/// A key's usage. Stored in key records: new usages go at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyUsage {
    EncryptDecrypt,
    SignVerify,
    GenerateVerifyMac,
    KeyAgreement,
    EncapsulateDecapsulate,
}

/// Every key spec, in the order of KMS's model (its `KeySpec` enum).
pub const KEY_SPECS: [KeySpec; 20] = [
    KeySpec::Rsa2048,
    KeySpec::Rsa3072,
    KeySpec::Rsa4096,
    KeySpec::EccNistP256,
    KeySpec::EccNistP384,
    KeySpec::EccNistP521,
    KeySpec::EccSecgP256k1,
    KeySpec::SymmetricDefault,
    KeySpec::Hmac224,
    KeySpec::Hmac256,
    KeySpec::Hmac384,
    KeySpec::Hmac512,
    KeySpec::Sm2,
    KeySpec::MlDsa44,
    KeySpec::MlDsa65,
    KeySpec::MlDsa87,
    KeySpec::EccNistEdwards25519,
    KeySpec::MlKem512,
    KeySpec::MlKem768,
    KeySpec::MlKem1024,
];

/// `KeySpec`'s names in the order AWS lists them in its enum error: the twelve AWS listed when
/// its answer was recorded (`[RSA_2048, ECC_NIST_P384, ..., HMAC_512]`, not the model's
/// order), then the specs added since, in the model's order.
pub(crate) const KEY_SPEC_ENUM: [&str; 20] = [
    "RSA_2048",
    "ECC_NIST_P384",
    "ECC_NIST_P256",
    "ECC_NIST_P521",
    "HMAC_384",
    "RSA_3072",
    "ECC_SECG_P256K1",
    "RSA_4096",
    "SYMMETRIC_DEFAULT",
    "HMAC_256",
    "HMAC_224",
    "HMAC_512",
    "SM2",
    "ML_DSA_44",
    "ML_DSA_65",
    "ML_DSA_87",
    "ECC_NIST_EDWARDS25519",
    "ML_KEM_512",
    "ML_KEM_768",
    "ML_KEM_1024",
];

/// `KeyUsageType`'s names in the order AWS lists them in its enum error: the three recorded
/// (`[ENCRYPT_DECRYPT, SIGN_VERIFY, GENERATE_VERIFY_MAC]`), then those added since.
pub(crate) const KEY_USAGE_ENUM: [&str; 5] = [
    "ENCRYPT_DECRYPT",
    "SIGN_VERIFY",
    "GENERATE_VERIFY_MAC",
    "KEY_AGREEMENT",
    "ENCAPSULATE_DECAPSULATE",
];

/// Every key usage, in the order of KMS's model.
pub const KEY_USAGES: [KeyUsage; 5] = [
    KeyUsage::SignVerify,
    KeyUsage::EncryptDecrypt,
    KeyUsage::GenerateVerifyMac,
    KeyUsage::KeyAgreement,
    KeyUsage::EncapsulateDecapsulate,
];

/// Every signing algorithm of KMS's model.
pub const SIGNING_ALGORITHMS: [&str; 13] = [
    "RSASSA_PSS_SHA_256",
    "RSASSA_PSS_SHA_384",
    "RSASSA_PSS_SHA_512",
    "RSASSA_PKCS1_V1_5_SHA_256",
    "RSASSA_PKCS1_V1_5_SHA_384",
    "RSASSA_PKCS1_V1_5_SHA_512",
    "ECDSA_SHA_256",
    "ECDSA_SHA_384",
    "ECDSA_SHA_512",
    "SM2DSA",
    "ML_DSA_SHAKE_256",
    "ED25519_SHA_512",
    "ED25519_PH_SHA_512",
];

/// Every MAC algorithm of KMS's model.
pub const MAC_ALGORITHMS: [&str; 4] = [
    "HMAC_SHA_224",
    "HMAC_SHA_256",
    "HMAC_SHA_384",
    "HMAC_SHA_512",
];

/// Every encryption algorithm of KMS's model.
pub const ENCRYPTION_ALGORITHMS: [&str; 4] = [
    "SYMMETRIC_DEFAULT",
    "RSAES_OAEP_SHA_1",
    "RSAES_OAEP_SHA_256",
    "SM2PKE",
];

impl KeySpec {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySpec::SymmetricDefault => "SYMMETRIC_DEFAULT",
            KeySpec::Rsa2048 => "RSA_2048",
            KeySpec::Rsa3072 => "RSA_3072",
            KeySpec::Rsa4096 => "RSA_4096",
            KeySpec::EccNistP256 => "ECC_NIST_P256",
            KeySpec::EccNistP384 => "ECC_NIST_P384",
            KeySpec::EccNistP521 => "ECC_NIST_P521",
            KeySpec::EccSecgP256k1 => "ECC_SECG_P256K1",
            KeySpec::EccNistEdwards25519 => "ECC_NIST_EDWARDS25519",
            KeySpec::MlDsa44 => "ML_DSA_44",
            KeySpec::MlDsa65 => "ML_DSA_65",
            KeySpec::MlDsa87 => "ML_DSA_87",
            KeySpec::Hmac224 => "HMAC_224",
            KeySpec::Hmac256 => "HMAC_256",
            KeySpec::Hmac384 => "HMAC_384",
            KeySpec::Hmac512 => "HMAC_512",
            KeySpec::Sm2 => "SM2",
            KeySpec::MlKem512 => "ML_KEM_512",
            KeySpec::MlKem768 => "ML_KEM_768",
            KeySpec::MlKem1024 => "ML_KEM_1024",
        }
    }

    /// The spec a request names, or KMS's enum error for `member`.
    pub fn parse(name: &str, member: &str) -> Result<Self, KmsError> {
        KEY_SPECS
            .iter()
            .copied()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| KmsError::not_in_enum(member, name, &KEY_SPEC_ENUM))
    }

    /// The deprecated `CustomerMasterKeySpec` KMS still reports: the same name, for the specs
    /// its enum has.
    pub fn customer_master_key_spec(self) -> Option<&'static str> {
        match self {
            KeySpec::EccNistEdwards25519
            | KeySpec::MlDsa44
            | KeySpec::MlDsa65
            | KeySpec::MlDsa87
            | KeySpec::MlKem512
            | KeySpec::MlKem768
            | KeySpec::MlKem1024 => None,
            other => Some(other.as_str()),
        }
    }

    pub fn is_rsa(self) -> bool {
        matches!(self, KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096)
    }

    pub fn is_hmac(self) -> bool {
        matches!(
            self,
            KeySpec::Hmac224 | KeySpec::Hmac256 | KeySpec::Hmac384 | KeySpec::Hmac512
        )
    }

    /// An asymmetric spec: it has a public key.
    pub fn is_asymmetric(self) -> bool {
        !self.is_hmac() && self != KeySpec::SymmetricDefault
    }

    /// The usages a key of this spec may have (the KMS Developer Guide's key spec tables).
    pub fn usages(self) -> &'static [KeyUsage] {
        match self {
            KeySpec::SymmetricDefault => &[KeyUsage::EncryptDecrypt],
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                &[KeyUsage::EncryptDecrypt, KeyUsage::SignVerify]
            }
            KeySpec::EccNistP256 | KeySpec::EccNistP384 | KeySpec::EccNistP521 => {
                &[KeyUsage::SignVerify, KeyUsage::KeyAgreement]
            }
            KeySpec::EccSecgP256k1
            | KeySpec::EccNistEdwards25519
            | KeySpec::MlDsa44
            | KeySpec::MlDsa65
            | KeySpec::MlDsa87 => &[KeyUsage::SignVerify],
            KeySpec::Hmac224 | KeySpec::Hmac256 | KeySpec::Hmac384 | KeySpec::Hmac512 => {
                &[KeyUsage::GenerateVerifyMac]
            }
            KeySpec::MlKem512 | KeySpec::MlKem768 | KeySpec::MlKem1024 => {
                &[KeyUsage::EncapsulateDecapsulate]
            }
            KeySpec::Sm2 => &[
                KeyUsage::EncryptDecrypt,
                KeyUsage::SignVerify,
                KeyUsage::KeyAgreement,
            ],
        }
    }

    /// The signing algorithms of a SIGN_VERIFY key of this spec.
    pub fn signing_algorithms(self) -> &'static [&'static str] {
        match self {
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => &SIGNING_ALGORITHMS[..6],
            KeySpec::EccNistP256 | KeySpec::EccSecgP256k1 => &["ECDSA_SHA_256"],
            KeySpec::EccNistP384 => &["ECDSA_SHA_384"],
            KeySpec::EccNistP521 => &["ECDSA_SHA_512"],
            KeySpec::EccNistEdwards25519 => &["ED25519_SHA_512", "ED25519_PH_SHA_512"],
            KeySpec::MlDsa44 | KeySpec::MlDsa65 | KeySpec::MlDsa87 => &["ML_DSA_SHAKE_256"],
            KeySpec::Sm2 => &["SM2DSA"],
            _ => &[],
        }
    }

    /// The MAC algorithm of an HMAC key of this spec.
    pub fn mac_algorithm(self) -> Option<&'static str> {
        match self {
            KeySpec::Hmac224 => Some("HMAC_SHA_224"),
            KeySpec::Hmac256 => Some("HMAC_SHA_256"),
            KeySpec::Hmac384 => Some("HMAC_SHA_384"),
            KeySpec::Hmac512 => Some("HMAC_SHA_512"),
            _ => None,
        }
    }

    /// The encryption algorithms of an ENCRYPT_DECRYPT key of this spec.
    pub fn encryption_algorithms(self) -> &'static [&'static str] {
        match self {
            KeySpec::SymmetricDefault => &["SYMMETRIC_DEFAULT"],
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                &["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
            }
            KeySpec::Sm2 => &["SM2PKE"],
            _ => &[],
        }
    }
}

impl KeyUsage {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyUsage::EncryptDecrypt => "ENCRYPT_DECRYPT",
            KeyUsage::SignVerify => "SIGN_VERIFY",
            KeyUsage::GenerateVerifyMac => "GENERATE_VERIFY_MAC",
            KeyUsage::KeyAgreement => "KEY_AGREEMENT",
            KeyUsage::EncapsulateDecapsulate => "ENCAPSULATE_DECAPSULATE",
        }
    }

    /// The usage a request names, or KMS's enum error.
    pub fn parse(name: &str) -> Result<Self, KmsError> {
        KEY_USAGES
            .iter()
            .copied()
            .find(|u| u.as_str() == name)
            .ok_or_else(|| KmsError::not_in_enum("keyUsage", name, &KEY_USAGE_ENUM))
    }
}

/// The algorithm lists a key of `spec` and `usage` reports (KeyMetadata, GetPublicKey).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Algorithms {
    pub encryption: Vec<&'static str>,
    pub signing: Vec<&'static str>,
    pub mac: Vec<&'static str>,
    pub key_agreement: Vec<&'static str>,
    pub encapsulation: Vec<&'static str>,
}

pub fn algorithms(spec: KeySpec, usage: KeyUsage) -> Algorithms {
    let mut out = Algorithms::default();
    match usage {
        KeyUsage::EncryptDecrypt => out.encryption = spec.encryption_algorithms().to_vec(),
        KeyUsage::SignVerify => out.signing = spec.signing_algorithms().to_vec(),
        KeyUsage::GenerateVerifyMac => out.mac = spec.mac_algorithm().into_iter().collect(),
        KeyUsage::KeyAgreement => out.key_agreement = vec!["ECDH"],
        KeyUsage::EncapsulateDecapsulate => out.encapsulation = vec!["ML_KEM"],
    }
    out
}

/// CreateKey's rules for a spec and usage: a usage is required for every spec but
/// SYMMETRIC_DEFAULT, and must be one the spec allows (AWS's texts, recorded).
pub fn check_spec_and_usage(spec: KeySpec, usage: Option<KeyUsage>) -> Result<KeyUsage, KmsError> {
    let usage = match usage {
        Some(u) => u,
        None if spec == KeySpec::SymmetricDefault => KeyUsage::EncryptDecrypt,
        None => {
            return Err(KmsError::Validation(
                "You must specify a KeyUsage value for all KMS keys except for symmetric encryption keys.".into(),
            ))
        }
    };
    if !spec.usages().contains(&usage) {
        return Err(KmsError::Validation(format!(
            "KeyUsage {} is not compatible with KeySpec {}",
            usage.as_str(),
            spec.as_str()
        )));
    }
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_get_the_enum_error() {
        for spec in KEY_SPECS {
            assert_eq!(KeySpec::parse(spec.as_str(), "keySpec"), Ok(spec));
        }
        for usage in KEY_USAGES {
            assert_eq!(KeyUsage::parse(usage.as_str()), Ok(usage));
        }
        let err = KeySpec::parse("HMAC_random", "keySpec").unwrap_err();
        assert!(err.message().starts_with(
            "1 validation error detected: Value 'HMAC_random' at 'keySpec' failed to satisfy constraint: Member must satisfy enum value set: ["
        ));
    }

    #[test]
    fn enum_errors_list_names_in_the_order_aws_recorded() {
        // Recorded: AWS's order, then the names added since.
        let err = KeySpec::parse("HMAC_random", "keySpec").unwrap_err();
        assert!(
            err.message().contains(
                "[RSA_2048, ECC_NIST_P384, ECC_NIST_P256, ECC_NIST_P521, HMAC_384, RSA_3072, ECC_SECG_P256K1, RSA_4096, SYMMETRIC_DEFAULT, HMAC_256, HMAC_224, HMAC_512, "
            ),
            "{}",
            err.message()
        );
        assert_eq!(
            KeyUsage::parse("RANDOM").unwrap_err().message(),
            "1 validation error detected: Value 'RANDOM' at 'keyUsage' failed to satisfy constraint: Member must satisfy enum value set: [ENCRYPT_DECRYPT, SIGN_VERIFY, GENERATE_VERIFY_MAC, KEY_AGREEMENT, ENCAPSULATE_DECAPSULATE]"
        );
        // Every spec and usage is listed once.
        let mut specs: Vec<&str> = KEY_SPECS.iter().map(|s| s.as_str()).collect();
        let mut listed = KEY_SPEC_ENUM.to_vec();
        specs.sort();
        listed.sort();
        assert_eq!(specs, listed);
        let mut usages: Vec<&str> = KEY_USAGES.iter().map(|u| u.as_str()).collect();
        let mut listed = KEY_USAGE_ENUM.to_vec();
        usages.sort();
        listed.sort();
        assert_eq!(usages, listed);
    }

    #[test]
    fn usages_follow_the_developer_guide() {
        assert_eq!(
            check_spec_and_usage(KeySpec::SymmetricDefault, None),
            Ok(KeyUsage::EncryptDecrypt)
        );
        assert_eq!(
            check_spec_and_usage(KeySpec::Hmac256, None).unwrap_err().message(),
            "You must specify a KeyUsage value for all KMS keys except for symmetric encryption keys."
        );
        assert_eq!(
            check_spec_and_usage(KeySpec::Rsa2048, Some(KeyUsage::KeyAgreement))
                .unwrap_err()
                .message(),
            "KeyUsage KEY_AGREEMENT is not compatible with KeySpec RSA_2048"
        );
        assert!(check_spec_and_usage(KeySpec::EccNistP384, Some(KeyUsage::KeyAgreement)).is_ok());
        assert!(
            check_spec_and_usage(KeySpec::EccSecgP256k1, Some(KeyUsage::KeyAgreement)).is_err()
        );
        assert_eq!(
            algorithms(KeySpec::EccNistP521, KeyUsage::SignVerify).signing,
            ["ECDSA_SHA_512"]
        );
    }
}
