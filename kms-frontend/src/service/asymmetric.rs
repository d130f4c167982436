//! The crypto of asymmetric and HMAC keys, through aws-lc-rs (AWS's own libcrypto): key
//! generation, public keys (DER SubjectPublicKeyInfo, as GetPublicKey returns them), signing
//! and verification, RSAES-OAEP, HMAC and ECDH. A key's material is its private key as a
//! PKCS#8 v1 document (an HMAC key: its bytes); it is parsed for each call, never kept parsed.
//!
//! Every function takes material this frontend made (or imported and checked), so a parse
//! failure is an internal error, never the caller's.

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, KeyPair as _};
use aws_lc_rs::{agreement, digest, hmac, kem, rsa};
use hsmkms_common::entropy::Entropy;
use hsmkms_common::secret::SecretBytes;

use super::error::KmsError;
use super::key_spec::KeySpec;

/// How Sign and Verify take the message (`MessageType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Raw,
    Digest,
    ExternalMu,
}

impl MessageType {
    pub fn parse(name: Option<&str>) -> Result<Self, KmsError> {
        match name {
            None | Some("RAW") => Ok(MessageType::Raw),
            Some("DIGEST") => Ok(MessageType::Digest),
            Some("EXTERNAL_MU") => Ok(MessageType::ExternalMu),
            Some(other) => Err(KmsError::not_in_enum(
                "messageType",
                other,
                &["RAW", "DIGEST", "EXTERNAL_MU"],
            )),
        }
    }
}

fn internal(what: &str) -> KmsError {
    KmsError::KmsInternal(format!("The key material could not be used ({what})."))
}

fn ecdsa_signing(spec: KeySpec) -> Option<&'static signature::EcdsaSigningAlgorithm> {
    Some(match spec {
        KeySpec::EccNistP256 => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        KeySpec::EccNistP384 => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        KeySpec::EccNistP521 => &signature::ECDSA_P521_SHA512_ASN1_SIGNING,
        KeySpec::EccSecgP256k1 => &signature::ECDSA_P256K1_SHA256_ASN1_SIGNING,
        _ => return None,
    })
}

fn ecdsa_verification(spec: KeySpec) -> Option<&'static signature::EcdsaVerificationAlgorithm> {
    Some(match spec {
        KeySpec::EccNistP256 => &signature::ECDSA_P256_SHA256_ASN1,
        KeySpec::EccNistP384 => &signature::ECDSA_P384_SHA384_ASN1,
        KeySpec::EccNistP521 => &signature::ECDSA_P521_SHA512_ASN1,
        KeySpec::EccSecgP256k1 => &signature::ECDSA_P256K1_SHA256_ASN1,
        _ => return None,
    })
}

fn ml_dsa(spec: KeySpec) -> Option<&'static signature::PqdsaSigningAlgorithm> {
    Some(match spec {
        KeySpec::MlDsa44 => &signature::ML_DSA_44_SIGNING,
        KeySpec::MlDsa65 => &signature::ML_DSA_65_SIGNING,
        KeySpec::MlDsa87 => &signature::ML_DSA_87_SIGNING,
        _ => return None,
    })
}

fn ml_dsa_verification(spec: KeySpec) -> Option<&'static signature::PqdsaVerificationAlgorithm> {
    Some(match spec {
        KeySpec::MlDsa44 => &signature::ML_DSA_44,
        KeySpec::MlDsa65 => &signature::ML_DSA_65,
        KeySpec::MlDsa87 => &signature::ML_DSA_87,
        _ => return None,
    })
}

fn ecdh(spec: KeySpec) -> Option<&'static agreement::Algorithm> {
    Some(match spec {
        KeySpec::EccNistP256 => &agreement::ECDH_P256,
        KeySpec::EccNistP384 => &agreement::ECDH_P384,
        KeySpec::EccNistP521 => &agreement::ECDH_P521,
        _ => return None,
    })
}

fn hmac_algorithm(spec: KeySpec) -> Option<(hmac::Algorithm, usize)> {
    Some(match spec {
        KeySpec::Hmac224 => (hmac::HMAC_SHA224, 28),
        KeySpec::Hmac256 => (hmac::HMAC_SHA256, 32),
        KeySpec::Hmac384 => (hmac::HMAC_SHA384, 48),
        KeySpec::Hmac512 => (hmac::HMAC_SHA512, 64),
        _ => return None,
    })
}

/// An ML-KEM parameter set: aws-lc-rs's algorithm, the OID of its public keys
/// (id-alg-ml-kem-*), and FIPS 203's k.
struct MlKem {
    alg: &'static kem::Algorithm<kem::AlgorithmId>,
    oid: &'static str,
    k: usize,
}

fn ml_kem(spec: KeySpec) -> Option<MlKem> {
    let (alg, oid, k) = match spec {
        KeySpec::MlKem512 => (&kem::ML_KEM_512, "2.16.840.1.101.3.4.4.1", 2),
        KeySpec::MlKem768 => (&kem::ML_KEM_768, "2.16.840.1.101.3.4.4.2", 3),
        KeySpec::MlKem1024 => (&kem::ML_KEM_1024, "2.16.840.1.101.3.4.4.3", 4),
        _ => return None,
    };
    Some(MlKem { alg, oid, k })
}

impl MlKem {
    /// The encapsulation (public) key inside a decapsulation key: FIPS 203's expanded
    /// decapsulation key is `dk_PKE (384k bytes) ‖ ek (384k + 32) ‖ H(ek) (32) ‖ z (32)`.
    /// (aws-lc-rs cannot give it for a key restored from its bytes.)
    fn public(&self, material: &[u8]) -> Result<kem::EncapsulationKey<kem::AlgorithmId>, KmsError> {
        let (dk_pke, ek) = (384 * self.k, 384 * self.k + 32);
        if material.len() != dk_pke + ek + 64 {
            return Err(internal("ML-KEM key"));
        }
        kem::EncapsulationKey::new(self.alg, &material[dk_pke..dk_pke + ek])
            .map_err(|_| internal("ML-KEM key"))
    }

    /// Whether an expanded decapsulation key holds together (imported material): its `H(ek)`
    /// slot is SHA3-256 of its `ek` (FIPS 203's decapsulation key check), and what `ek`
    /// encapsulates `dk_PKE` decapsulates to the same secret, so `dk_PKE` belongs to `ek`
    /// (a wrong one would answer implicit rejection's pseudorandom secret).
    fn consistent(&self, material: &[u8]) -> bool {
        let Ok(public) = self.public(material) else {
            return false;
        };
        let (dk_pke, ek) = (384 * self.k, 384 * self.k + 32);
        let h = &material[dk_pke + ek..dk_pke + ek + 32];
        let hashed = digest::digest(&digest::SHA3_256, &material[dk_pke..dk_pke + ek]);
        if hashed.as_ref() != h {
            return false;
        }
        let Ok(private) = kem::DecapsulationKey::new(self.alg, material) else {
            return false;
        };
        let Ok((ciphertext, secret)) = public.encapsulate() else {
            return false;
        };
        private
            .decapsulate(ciphertext.as_ref().into())
            .is_ok_and(|back| back.as_ref() == secret.as_ref())
    }
}

fn rsa_size(spec: KeySpec) -> Option<rsa::KeySize> {
    Some(match spec {
        KeySpec::Rsa2048 => rsa::KeySize::Rsa2048,
        KeySpec::Rsa3072 => rsa::KeySize::Rsa3072,
        KeySpec::Rsa4096 => rsa::KeySize::Rsa4096,
        _ => return None,
    })
}

fn pkcs8(
    doc: Result<Pkcs8V1Der<'static>, aws_lc_rs::error::Unspecified>,
) -> Result<SecretBytes, KmsError> {
    doc.map(|d| SecretBytes::new(d.as_ref().to_vec()))
        .map_err(|_| internal("encoding"))
}

/// New material for a key of `spec` (not SYMMETRIC_DEFAULT, not SM2). HMAC keys take their
/// bytes from `entropy`; key pairs come from aws-lc's own generator.
pub fn generate(spec: KeySpec, entropy: &dyn Entropy) -> Result<SecretBytes, KmsError> {
    if let Some((_, len)) = hmac_algorithm(spec) {
        return Ok(SecretBytes::new(hsmkms_common::entropy::bytes(
            entropy, len,
        )));
    }
    if let Some(size) = rsa_size(spec) {
        let pair = rsa::KeyPair::generate(size).map_err(|_| internal("generation"))?;
        return pkcs8(pair.as_der());
    }
    if let Some(alg) = ecdsa_signing(spec) {
        let doc = signature::EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new())
            .map_err(|_| internal("generation"))?;
        return Ok(SecretBytes::new(doc.as_ref().to_vec()));
    }
    if spec == KeySpec::EccNistEdwards25519 {
        let doc = signature::Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new())
            .map_err(|_| internal("generation"))?;
        return Ok(SecretBytes::new(doc.as_ref().to_vec()));
    }
    if let Some(MlKem { alg, .. }) = ml_kem(spec) {
        // An ML-KEM key's material is its decapsulation key (FIPS 203's expanded form).
        let key = kem::DecapsulationKey::generate(alg).map_err(|_| internal("generation"))?;
        let bytes = key.key_bytes().map_err(|_| internal("encoding"))?;
        return Ok(SecretBytes::new(bytes.as_ref().to_vec()));
    }
    if let Some(alg) = ml_dsa(spec) {
        let pair = signature::PqdsaKeyPair::generate(alg).map_err(|_| internal("generation"))?;
        let doc = pair.to_pkcs8v1().map_err(|_| internal("encoding"))?;
        return Ok(SecretBytes::new(doc.as_ref().to_vec()));
    }
    Err(KmsError::UnsupportedOperation(format!(
        "hsmkms cannot generate key material for KeySpec {}.",
        spec.as_str()
    )))
}

/// Checks that `material` is a private key of `spec` (imported material, data key pairs).
pub fn check_private_key(spec: KeySpec, material: &[u8]) -> bool {
    public_key(spec, material).is_ok()
}

fn spki(
    der: Result<PublicKeyX509Der<'static>, aws_lc_rs::error::Unspecified>,
) -> Result<Vec<u8>, KmsError> {
    der.map(|d| d.as_ref().to_vec())
        .map_err(|_| internal("public key"))
}

/// The public key of an asymmetric key, DER-encoded SubjectPublicKeyInfo.
pub fn public_key(spec: KeySpec, material: &[u8]) -> Result<Vec<u8>, KmsError> {
    if spec.is_rsa() {
        let pair = rsa::KeyPair::from_pkcs8(material).map_err(|_| internal("RSA key"))?;
        return spki(pair.public_key().as_der());
    }
    if let Some(alg) = ecdsa_signing(spec) {
        let pair =
            signature::EcdsaKeyPair::from_pkcs8(alg, material).map_err(|_| internal("EC key"))?;
        return spki(pair.public_key().as_der());
    }
    if spec == KeySpec::EccNistEdwards25519 {
        let pair =
            signature::Ed25519KeyPair::from_pkcs8(material).map_err(|_| internal("Ed25519 key"))?;
        return spki(pair.public_key().as_der());
    }
    if let Some(alg) = ml_dsa(spec) {
        let pair = signature::PqdsaKeyPair::from_pkcs8(alg, material)
            .map_err(|_| internal("ML-DSA key"))?;
        return spki(pair.public_key().as_der());
    }
    if let Some(params) = ml_kem(spec) {
        let public = params.public(material)?;
        let raw = public.key_bytes().map_err(|_| internal("ML-KEM key"))?;
        return ml_kem_spki(params.oid, raw.as_ref());
    }
    Err(internal("no public key"))
}

/// An ML-KEM public key as DER SubjectPublicKeyInfo (RFC 9935: the OID, no parameters, the
/// raw encapsulation key).
fn ml_kem_spki(oid: &str, raw: &[u8]) -> Result<Vec<u8>, KmsError> {
    use spki::der::asn1::BitStringRef;
    use spki::der::Encode;
    let oid = spki::ObjectIdentifier::new(oid).map_err(|_| internal("ML-KEM OID"))?;
    let info = spki::SubjectPublicKeyInfoRef {
        algorithm: spki::AlgorithmIdentifierRef {
            oid,
            parameters: None,
        },
        subject_public_key: BitStringRef::from_bytes(raw).map_err(|_| internal("ML-KEM key"))?,
    };
    info.to_der().map_err(|_| internal("ML-KEM key"))
}

/// A key pair's private key as PKCS#8 DER, as GenerateDataKeyPair returns it: the material
/// itself, but for ML-KEM, whose material is the raw expanded decapsulation key, wrapped as
/// FIPS 203's `expandedKey` choice of ML-KEM-PrivateKey (an OCTET STRING) in a
/// PrivateKeyInfo with the parameter set's OID.
pub fn private_key_pkcs8(spec: KeySpec, material: &SecretBytes) -> Result<SecretBytes, KmsError> {
    let Some(params) = ml_kem(spec) else {
        return Ok(SecretBytes::new(material.expose().to_vec()));
    };
    use spki::der::asn1::OctetStringRef;
    use spki::der::Encode;
    let inner = zeroize::Zeroizing::new(
        OctetStringRef::new(material.expose())
            .and_then(|o| o.to_der())
            .map_err(|_| internal("ML-KEM key"))?,
    );
    let oid = spki::ObjectIdentifier::new(params.oid).map_err(|_| internal("ML-KEM OID"))?;
    let info = pkcs8::PrivateKeyInfo {
        algorithm: spki::AlgorithmIdentifierRef {
            oid,
            parameters: None,
        },
        private_key: &inner,
        public_key: None,
    };
    info.to_der()
        .map(SecretBytes::new)
        .map_err(|_| internal("ML-KEM key"))
}

/// Encapsulate: a new shared secret and its ciphertext under an ML-KEM key's public key.
pub fn encapsulate(spec: KeySpec, material: &[u8]) -> Result<(Vec<u8>, SecretBytes), KmsError> {
    let params = ml_kem(spec).ok_or_else(|| internal("not an ML-KEM key"))?;
    let public = params.public(material)?;
    let (ciphertext, secret) = public
        .encapsulate()
        .map_err(|_| internal("encapsulation"))?;
    Ok((
        ciphertext.as_ref().to_vec(),
        SecretBytes::new(secret.as_ref().to_vec()),
    ))
}

/// Decapsulate; `None` for a ciphertext of the wrong size. (A well-sized but wrong ciphertext
/// gives a pseudorandom secret, as ML-KEM's implicit rejection specifies.)
pub fn decapsulate(
    spec: KeySpec,
    material: &[u8],
    ciphertext: &[u8],
) -> Result<Option<SecretBytes>, KmsError> {
    let params = ml_kem(spec).ok_or_else(|| internal("not an ML-KEM key"))?;
    let key =
        kem::DecapsulationKey::new(params.alg, material).map_err(|_| internal("ML-KEM key"))?;
    Ok(key
        .decapsulate(ciphertext.into())
        .ok()
        .map(|s| SecretBytes::new(s.as_ref().to_vec())))
}

/// The digest a signing algorithm hashes with, and the RSA encodings it uses.
struct SigningScheme {
    digest: Option<&'static digest::Algorithm>,
    rsa_signing: Option<&'static dyn signature::RsaEncoding>,
    rsa_verification: Option<&'static signature::RsaParameters>,
}

fn scheme(algorithm: &str) -> SigningScheme {
    use signature::*;
    let (digest, rsa_signing, rsa_verification): (
        Option<&'static digest::Algorithm>,
        Option<&'static dyn signature::RsaEncoding>,
        Option<&'static RsaParameters>,
    ) = match algorithm {
        "RSASSA_PSS_SHA_256" => (
            Some(&digest::SHA256),
            Some(&RSA_PSS_SHA256),
            Some(&RSA_PSS_2048_8192_SHA256),
        ),
        "RSASSA_PSS_SHA_384" => (
            Some(&digest::SHA384),
            Some(&RSA_PSS_SHA384),
            Some(&RSA_PSS_2048_8192_SHA384),
        ),
        "RSASSA_PSS_SHA_512" => (
            Some(&digest::SHA512),
            Some(&RSA_PSS_SHA512),
            Some(&RSA_PSS_2048_8192_SHA512),
        ),
        "RSASSA_PKCS1_V1_5_SHA_256" => (
            Some(&digest::SHA256),
            Some(&RSA_PKCS1_SHA256),
            Some(&RSA_PKCS1_2048_8192_SHA256),
        ),
        "RSASSA_PKCS1_V1_5_SHA_384" => (
            Some(&digest::SHA384),
            Some(&RSA_PKCS1_SHA384),
            Some(&RSA_PKCS1_2048_8192_SHA384),
        ),
        "RSASSA_PKCS1_V1_5_SHA_512" => (
            Some(&digest::SHA512),
            Some(&RSA_PKCS1_SHA512),
            Some(&RSA_PKCS1_2048_8192_SHA512),
        ),
        "ECDSA_SHA_256" => (Some(&digest::SHA256), None, None),
        "ECDSA_SHA_384" => (Some(&digest::SHA384), None, None),
        "ECDSA_SHA_512" => (Some(&digest::SHA512), None, None),
        "ED25519_PH_SHA_512" => (Some(&digest::SHA512), None, None),
        _ => (None, None, None),
    };
    SigningScheme {
        digest,
        rsa_signing,
        rsa_verification,
    }
}

/// What Sign and Verify sign: the message, or a digest the caller computed.
enum Signed<'a> {
    Message(&'a [u8]),
    Digest(digest::Digest),
}

/// Checks the message type against the algorithm (AWS's texts where recorded) and turns a
/// DIGEST message into a digest of the algorithm's hash.
fn signed<'a>(
    spec: KeySpec,
    algorithm: &str,
    message_type: MessageType,
    message: &'a [u8],
) -> Result<Signed<'a>, KmsError> {
    let scheme = scheme(algorithm);
    match message_type {
        MessageType::Raw => {
            if algorithm == "ED25519_PH_SHA_512" {
                return Err(KmsError::Validation(
                    "The ED25519_PH_SHA_512 signing algorithm requires the DIGEST message type."
                        .into(),
                ));
            }
            Ok(Signed::Message(message))
        }
        MessageType::Digest => {
            if algorithm == "ED25519_SHA_512" || algorithm == "ML_DSA_SHAKE_256" {
                return Err(KmsError::Validation(format!(
                    "The {algorithm} signing algorithm does not support the DIGEST message type."
                )));
            }
            let alg = scheme.digest.ok_or_else(|| internal("digest"))?;
            digest::Digest::import_less_safe(message, alg)
                .map(Signed::Digest)
                .map_err(|_| {
                    KmsError::Validation(format!(
                        "Digest is invalid length for algorithm {algorithm}."
                    ))
                })
        }
        MessageType::ExternalMu => {
            if !matches!(spec, KeySpec::MlDsa44 | KeySpec::MlDsa65 | KeySpec::MlDsa87) {
                return Err(KmsError::Validation(format!(
                    "The EXTERNAL_MU message type is only valid for ML-DSA keys, not {}.",
                    spec.as_str()
                )));
            }
            Err(KmsError::UnsupportedOperation(
                "hsmkms does not support the EXTERNAL_MU message type (aws-lc-rs signs ML-DSA messages, not precomputed mu); sign the RAW message.".into(),
            ))
        }
    }
}

/// Checks a Sign or Verify message against the algorithm and message type (AWS's texts where
/// recorded: `Digest is invalid length for algorithm <alg>.`), so the caller can answer a bad
/// request before DryRun, as AWS does.
pub fn check_message(
    spec: KeySpec,
    algorithm: &str,
    message_type: MessageType,
    message: &[u8],
) -> Result<(), KmsError> {
    signed(spec, algorithm, message_type, message).map(|_| ())
}

/// Sign: `algorithm` is one the key's spec allows (the caller checked).
pub fn sign(
    spec: KeySpec,
    material: &[u8],
    algorithm: &str,
    message_type: MessageType,
    message: &[u8],
) -> Result<Vec<u8>, KmsError> {
    let signed = signed(spec, algorithm, message_type, message)?;
    if spec.is_rsa() {
        let pair = rsa::KeyPair::from_pkcs8(material).map_err(|_| internal("RSA key"))?;
        let encoding = scheme(algorithm)
            .rsa_signing
            .ok_or_else(|| internal("algorithm"))?;
        let mut sig = vec![0u8; pair.public_modulus_len()];
        match signed {
            Signed::Message(m) => pair.sign(encoding, &SystemRandom::new(), m, &mut sig),
            Signed::Digest(d) => pair.sign_digest(encoding, &d, &mut sig),
        }
        .map_err(|_| internal("signing"))?;
        return Ok(sig);
    }
    if let Some(alg) = ecdsa_signing(spec) {
        let pair =
            signature::EcdsaKeyPair::from_pkcs8(alg, material).map_err(|_| internal("EC key"))?;
        let sig = match signed {
            Signed::Message(m) => pair.sign(&SystemRandom::new(), m),
            Signed::Digest(d) => pair.sign_digest(&d),
        }
        .map_err(|_| internal("signing"))?;
        return Ok(sig.as_ref().to_vec());
    }
    if spec == KeySpec::EccNistEdwards25519 {
        let Signed::Message(m) = signed else {
            return Err(KmsError::UnsupportedOperation(
                "hsmkms does not support ED25519_PH_SHA_512 (aws-lc-rs has no Ed25519ph); use ED25519_SHA_512.".into(),
            ));
        };
        let pair =
            signature::Ed25519KeyPair::from_pkcs8(material).map_err(|_| internal("Ed25519 key"))?;
        return Ok(pair.sign(m).as_ref().to_vec());
    }
    if let Some(alg) = ml_dsa(spec) {
        let Signed::Message(m) = signed else {
            return Err(internal("ML-DSA digest"));
        };
        let pair = signature::PqdsaKeyPair::from_pkcs8(alg, material)
            .map_err(|_| internal("ML-DSA key"))?;
        let mut sig = vec![0u8; alg.signature_len()];
        let n = pair.sign(m, &mut sig).map_err(|_| internal("signing"))?;
        sig.truncate(n);
        return Ok(sig);
    }
    Err(internal("no signing key"))
}

/// Verify: whether `sig` is a valid signature; a signature of the wrong size is just invalid.
pub fn verify(
    spec: KeySpec,
    material: &[u8],
    algorithm: &str,
    message_type: MessageType,
    message: &[u8],
    sig: &[u8],
) -> Result<bool, KmsError> {
    let signed = signed(spec, algorithm, message_type, message)?;
    let check = |alg: &'static dyn signature::VerificationAlgorithm, public: &[u8]| {
        let key = signature::UnparsedPublicKey::new(alg, public);
        match &signed {
            Signed::Message(m) => key.verify(m, sig).is_ok(),
            Signed::Digest(d) => key.verify_digest(d, sig).is_ok(),
        }
    };
    if spec.is_rsa() {
        let pair = rsa::KeyPair::from_pkcs8(material).map_err(|_| internal("RSA key"))?;
        let params = scheme(algorithm)
            .rsa_verification
            .ok_or_else(|| internal("algorithm"))?;
        return Ok(check(params, pair.public_key().as_ref()));
    }
    if let (Some(alg), Some(verification)) = (ecdsa_signing(spec), ecdsa_verification(spec)) {
        let pair =
            signature::EcdsaKeyPair::from_pkcs8(alg, material).map_err(|_| internal("EC key"))?;
        return Ok(check(verification, pair.public_key().as_ref()));
    }
    if spec == KeySpec::EccNistEdwards25519 {
        if matches!(signed, Signed::Digest(_)) {
            return Err(KmsError::UnsupportedOperation(
                "hsmkms does not support ED25519_PH_SHA_512 (aws-lc-rs has no Ed25519ph); use ED25519_SHA_512.".into(),
            ));
        }
        let pair =
            signature::Ed25519KeyPair::from_pkcs8(material).map_err(|_| internal("Ed25519 key"))?;
        return Ok(check(&signature::ED25519, pair.public_key().as_ref()));
    }
    if let (Some(alg), Some(verification)) = (ml_dsa(spec), ml_dsa_verification(spec)) {
        let pair = signature::PqdsaKeyPair::from_pkcs8(alg, material)
            .map_err(|_| internal("ML-DSA key"))?;
        return Ok(check(verification, pair.public_key().as_ref()));
    }
    Err(internal("no verification key"))
}

fn oaep(algorithm: &str) -> Option<&'static rsa::OaepAlgorithm> {
    match algorithm {
        "RSAES_OAEP_SHA_1" => Some(&rsa::OAEP_SHA1_MGF1SHA1),
        "RSAES_OAEP_SHA_256" => Some(&rsa::OAEP_SHA256_MGF1SHA256),
        _ => None,
    }
}

/// The modulus of an RSA key of `spec`, in bytes.
fn rsa_modulus_bytes(spec: KeySpec) -> Option<usize> {
    Some(match spec {
        KeySpec::Rsa2048 => 256,
        KeySpec::Rsa3072 => 384,
        KeySpec::Rsa4096 => 512,
        _ => return None,
    })
}

/// The largest plaintext an RSA key of `spec` encrypts with `algorithm` (OAEP's bound: the
/// modulus less twice the hash and two bytes; AWS's figures, recorded).
pub fn max_rsa_plaintext(spec: KeySpec, algorithm: &str) -> usize {
    let modulus = rsa_modulus_bytes(spec).unwrap_or(512);
    let hash = if algorithm == "RSAES_OAEP_SHA_1" {
        20
    } else {
        32
    };
    modulus - 2 * hash - 2
}

/// RSAES-OAEP encryption under an RSA key's public key.
pub fn rsa_encrypt(
    material: &[u8],
    algorithm: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>, KmsError> {
    let alg = oaep(algorithm).ok_or_else(|| internal("algorithm"))?;
    let private =
        rsa::PrivateDecryptingKey::from_pkcs8(material).map_err(|_| internal("RSA key"))?;
    let public =
        rsa::OaepPublicEncryptingKey::new(private.public_key()).map_err(|_| internal("RSA key"))?;
    let mut out = vec![0u8; public.ciphertext_size()];
    let n = public
        .encrypt(alg, plaintext, &mut out, None)
        .map_err(|_| internal("encryption"))?
        .len();
    out.truncate(n);
    Ok(out)
}

/// RSAES-OAEP decryption; `None` when the ciphertext does not decrypt.
pub fn rsa_decrypt(
    material: &[u8],
    algorithm: &str,
    ciphertext: &[u8],
) -> Result<Option<SecretBytes>, KmsError> {
    let alg = oaep(algorithm).ok_or_else(|| internal("algorithm"))?;
    let private =
        rsa::PrivateDecryptingKey::from_pkcs8(material).map_err(|_| internal("RSA key"))?;
    let private = rsa::OaepPrivateDecryptingKey::new(private).map_err(|_| internal("RSA key"))?;
    // Wiped when dropped, on every path: a failed decryption may have left bytes in it.
    let mut out = zeroize::Zeroizing::new(vec![0u8; private.min_output_size()]);
    Ok(private
        .decrypt(alg, ciphertext, &mut out, None)
        .ok()
        .map(|p| SecretBytes::new(p.to_vec())))
}

/// Unwraps key material encrypted for ImportKeyMaterial under the wrapping key `wrapping`
/// (an RSA private key, PKCS#8): RSAES-OAEP directly, or RSA-AES key wrap (an AES-256 key
/// under RSAES-OAEP, then the material under that key with AES key wrap with padding, RFC
/// 5649). `None` when it does not decrypt.
pub fn unwrap_import(
    wrapping: &[u8],
    algorithm: &str,
    encrypted: &[u8],
) -> Result<Option<SecretBytes>, KmsError> {
    use aws_lc_rs::key_wrap::{KeyEncryptionKey, KeyWrapPadded, AES_256};
    let (oaep_alg, key_wrap) = match algorithm {
        "RSAES_OAEP_SHA_1" => ("RSAES_OAEP_SHA_1", false),
        "RSAES_OAEP_SHA_256" => ("RSAES_OAEP_SHA_256", false),
        "RSA_AES_KEY_WRAP_SHA_1" => ("RSAES_OAEP_SHA_1", true),
        "RSA_AES_KEY_WRAP_SHA_256" => ("RSAES_OAEP_SHA_256", true),
        _ => return Err(internal("wrapping algorithm")),
    };
    if !key_wrap {
        return rsa_decrypt(wrapping, oaep_alg, encrypted);
    }
    let modulus = rsa::PrivateDecryptingKey::from_pkcs8(wrapping)
        .map_err(|_| internal("wrapping key"))?
        .key_size_bytes();
    if encrypted.len() <= modulus {
        return Ok(None);
    }
    let (wrapped_key, wrapped_material) = encrypted.split_at(modulus);
    let Some(aes_key) = rsa_decrypt(wrapping, oaep_alg, wrapped_key)? else {
        return Ok(None);
    };
    let Ok(kek) = KeyEncryptionKey::new(&AES_256, aes_key.expose()) else {
        return Ok(None);
    };
    // Wiped when dropped, on every path: a failed unwrap may have left bytes in it.
    let mut out = zeroize::Zeroizing::new(vec![0u8; wrapped_material.len()]);
    Ok(kek
        .unwrap_with_padding(wrapped_material, &mut out)
        .ok()
        .map(|m| SecretBytes::new(m.to_vec())))
}

/// Whether `material` is key material a key of `spec` can take (ImportKeyMaterial): 32 bytes
/// for a symmetric key, an HMAC key of the lengths KMS accepts, a PKCS#8 private key of the
/// spec (an RSA key of the spec's modulus: RSA_2048 is not a 3072-bit key), or an ML-KEM
/// expanded decapsulation key that holds together.
pub fn valid_material(spec: KeySpec, material: &[u8]) -> bool {
    match spec {
        KeySpec::SymmetricDefault => material.len() == 32,
        KeySpec::Hmac224 => (28..=64).contains(&material.len()),
        KeySpec::Hmac256 => (32..=64).contains(&material.len()),
        KeySpec::Hmac384 => (48..=128).contains(&material.len()),
        KeySpec::Hmac512 => (64..=128).contains(&material.len()),
        rsa if rsa.is_rsa() => rsa::KeyPair::from_pkcs8(material)
            .is_ok_and(|pair| Some(pair.public_modulus_len()) == rsa_modulus_bytes(rsa)),
        other => match ml_kem(other) {
            Some(params) => params.consistent(material),
            None => check_private_key(other, material),
        },
    }
}

/// GenerateMac.
pub fn mac(spec: KeySpec, material: &[u8], message: &[u8]) -> Result<Vec<u8>, KmsError> {
    let (alg, _) = hmac_algorithm(spec).ok_or_else(|| internal("not an HMAC key"))?;
    let key = hmac::Key::new(alg, material);
    Ok(hmac::sign(&key, message).as_ref().to_vec())
}

/// VerifyMac, in constant time.
pub fn verify_mac(
    spec: KeySpec,
    material: &[u8],
    message: &[u8],
    tag: &[u8],
) -> Result<bool, KmsError> {
    let (alg, _) = hmac_algorithm(spec).ok_or_else(|| internal("not an HMAC key"))?;
    let key = hmac::Key::new(alg, material);
    Ok(hmac::verify(&key, message, tag).is_ok())
}

/// DeriveSharedSecret: ECDH with the peer's public key (DER SubjectPublicKeyInfo, on the
/// key's curve); `None` when the peer's key is not one.
pub fn derive_shared_secret(
    spec: KeySpec,
    material: &[u8],
    peer_spki: &[u8],
) -> Result<Option<SecretBytes>, KmsError> {
    let alg = ecdh(spec).ok_or_else(|| internal("not an ECDH key"))?;
    let private = agreement::PrivateKey::from_private_key_der(alg, material)
        .map_err(|_| internal("EC key"))?;
    // Only an X.509 SubjectPublicKeyInfo is accepted, as KMS documents; aws-lc-rs would also
    // take a bare point.
    if peer_spki.first() != Some(&0x30) {
        return Ok(None);
    }
    let peer = agreement::UnparsedPublicKey::new(alg, peer_spki);
    Ok(agreement::agree(&private, peer, (), |secret| {
        Ok(SecretBytes::new(secret.to_vec()))
    })
    .ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hsmkms_common::entropy::SeededEntropy;

    const SIGNING: [KeySpec; 10] = [
        KeySpec::Rsa2048,
        KeySpec::EccNistP256,
        KeySpec::EccNistP384,
        KeySpec::EccNistP521,
        KeySpec::EccSecgP256k1,
        KeySpec::EccNistEdwards25519,
        KeySpec::MlDsa44,
        KeySpec::MlDsa65,
        KeySpec::MlDsa87,
        KeySpec::Rsa3072,
    ];

    #[test]
    fn every_signing_spec_signs_and_verifies_and_rejects_a_changed_message() {
        let entropy = SeededEntropy::new(1);
        for spec in SIGNING {
            let material = generate(spec, &entropy).unwrap();
            assert!(public_key(spec, material.expose())
                .unwrap()
                .starts_with(&[0x30]));
            for alg in spec.signing_algorithms() {
                if *alg == "ED25519_PH_SHA_512" {
                    continue;
                }
                let sig = sign(spec, material.expose(), alg, MessageType::Raw, b"message").unwrap();
                let ok = |m: &[u8]| {
                    verify(spec, material.expose(), alg, MessageType::Raw, m, &sig).unwrap()
                };
                assert!(ok(b"message"), "{spec:?} {alg}");
                assert!(!ok(b"messagf"), "{spec:?} {alg}");
            }
        }
    }

    #[test]
    fn a_digest_signature_verifies_as_the_raw_message_it_hashes() {
        let entropy = SeededEntropy::new(2);
        for (spec, alg, hash) in [
            (KeySpec::Rsa2048, "RSASSA_PSS_SHA_384", &digest::SHA384),
            (
                KeySpec::Rsa2048,
                "RSASSA_PKCS1_V1_5_SHA_256",
                &digest::SHA256,
            ),
            (KeySpec::EccNistP256, "ECDSA_SHA_256", &digest::SHA256),
            (KeySpec::EccNistP521, "ECDSA_SHA_512", &digest::SHA512),
        ] {
            let material = generate(spec, &entropy).unwrap();
            let d = digest::digest(hash, b"hello");
            let sig = sign(
                spec,
                material.expose(),
                alg,
                MessageType::Digest,
                d.as_ref(),
            )
            .unwrap();
            assert!(verify(
                spec,
                material.expose(),
                alg,
                MessageType::Raw,
                b"hello",
                &sig
            )
            .unwrap());
            let short = sign(
                spec,
                material.expose(),
                alg,
                MessageType::Digest,
                &d.as_ref()[1..],
            );
            assert_eq!(
                short.unwrap_err().message(),
                format!("Digest is invalid length for algorithm {alg}.")
            );
        }
    }

    #[test]
    fn rsa_oaep_round_trips_and_a_wrong_ciphertext_does_not_decrypt() {
        let material = generate(KeySpec::Rsa2048, &SeededEntropy::new(3)).unwrap();
        for alg in ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"] {
            let max = max_rsa_plaintext(KeySpec::Rsa2048, alg);
            let ct = rsa_encrypt(material.expose(), alg, &vec![7u8; max]).unwrap();
            let pt = rsa_decrypt(material.expose(), alg, &ct).unwrap().unwrap();
            assert_eq!(pt.expose(), vec![7u8; max].as_slice());
            let mut bad = ct.clone();
            bad[10] ^= 1;
            assert!(rsa_decrypt(material.expose(), alg, &bad).unwrap().is_none());
        }
        assert_eq!(
            max_rsa_plaintext(KeySpec::Rsa4096, "RSAES_OAEP_SHA_256"),
            446
        );
    }

    #[test]
    fn imported_material_unwraps_from_both_wrapping_schemes() {
        use aws_lc_rs::key_wrap::{KeyEncryptionKey, KeyWrapPadded, AES_256};
        let wrapping = generate(KeySpec::Rsa3072, &SeededEntropy::new(5)).unwrap();
        let material = [9u8; 32];
        let direct = rsa_encrypt(wrapping.expose(), "RSAES_OAEP_SHA_256", &material).unwrap();
        let got = unwrap_import(wrapping.expose(), "RSAES_OAEP_SHA_256", &direct).unwrap();
        assert_eq!(got.unwrap().expose(), &material);
        // RSA-AES: an AES key under OAEP, the material (here an EC private key) under KWP.
        let ec = generate(KeySpec::EccNistP384, &SeededEntropy::new(6)).unwrap();
        let aes = [3u8; 32];
        let mut wrapped = rsa_encrypt(wrapping.expose(), "RSAES_OAEP_SHA_1", &aes).unwrap();
        let mut out = vec![0u8; ec.len() + 16];
        let kek = KeyEncryptionKey::new(&AES_256, &aes).unwrap();
        wrapped.extend_from_slice(kek.wrap_with_padding(ec.expose(), &mut out).unwrap());
        let got = unwrap_import(wrapping.expose(), "RSA_AES_KEY_WRAP_SHA_1", &wrapped).unwrap();
        let got = got.unwrap();
        assert_eq!(got.expose(), ec.expose());
        assert!(valid_material(KeySpec::EccNistP384, got.expose()));
        assert!(!valid_material(KeySpec::EccNistP256, got.expose()));
        // The wrong scheme, a cut blob, and a changed byte do not unwrap.
        assert!(
            unwrap_import(wrapping.expose(), "RSA_AES_KEY_WRAP_SHA_256", &wrapped)
                .unwrap()
                .is_none()
        );
        assert!(
            unwrap_import(wrapping.expose(), "RSA_AES_KEY_WRAP_SHA_1", &wrapped[..300])
                .unwrap()
                .is_none()
        );
        let mut bad = wrapped.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(
            unwrap_import(wrapping.expose(), "RSA_AES_KEY_WRAP_SHA_1", &bad)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn ml_kem_encapsulates_to_what_decapsulation_recovers() {
        let entropy = SeededEntropy::new(7);
        for spec in [KeySpec::MlKem512, KeySpec::MlKem768, KeySpec::MlKem1024] {
            let material = generate(spec, &entropy).unwrap();
            let spki = public_key(spec, material.expose()).unwrap();
            assert_eq!(spki[0], 0x30);
            let (ct, secret) = encapsulate(spec, material.expose()).unwrap();
            let back = decapsulate(spec, material.expose(), &ct).unwrap().unwrap();
            assert_eq!(back.expose(), secret.expose());
            assert_eq!(secret.len(), 32);
            assert!(decapsulate(spec, material.expose(), &ct[1..])
                .unwrap()
                .is_none());
        }
    }

    #[test]
    fn imported_rsa_material_must_have_the_modulus_of_the_key_spec() {
        let entropy = SeededEntropy::new(8);
        let rsa_3072 = generate(KeySpec::Rsa3072, &entropy).unwrap();
        assert!(valid_material(KeySpec::Rsa3072, rsa_3072.expose()));
        // A well-formed RSA key of another size is not material of this spec.
        assert!(!valid_material(KeySpec::Rsa2048, rsa_3072.expose()));
        assert!(!valid_material(KeySpec::Rsa4096, rsa_3072.expose()));
        let rsa_2048 = generate(KeySpec::Rsa2048, &entropy).unwrap();
        assert!(valid_material(KeySpec::Rsa2048, rsa_2048.expose()));
        assert!(!valid_material(KeySpec::Rsa3072, rsa_2048.expose()));
    }

    #[test]
    fn imported_ml_kem_material_must_hold_together() {
        let entropy = SeededEntropy::new(9);
        for (spec, k) in [
            (KeySpec::MlKem512, 2),
            (KeySpec::MlKem768, 3),
            (KeySpec::MlKem1024, 4),
        ] {
            let material = generate(spec, &entropy).unwrap();
            assert!(valid_material(spec, material.expose()), "{spec:?}");
            let (dk_pke, ek) = (384 * k, 384 * k + 32);
            // H(ek) that is not SHA3-256 of ek.
            let mut bad_hash = material.expose().to_vec();
            bad_hash[dk_pke + ek] ^= 1;
            assert!(!valid_material(spec, &bad_hash), "{spec:?}");
            // A dk_PKE that is not ek's: ek and H(ek) still agree, decapsulation does not.
            let mut bad_private = material.expose().to_vec();
            bad_private[5] ^= 0x10;
            assert!(!valid_material(spec, &bad_private), "{spec:?}");
            // Another key's ek and H(ek) under this dk_PKE.
            let other = generate(spec, &entropy).unwrap();
            let mut mixed = material.expose().to_vec();
            mixed[dk_pke..dk_pke + ek + 32]
                .copy_from_slice(&other.expose()[dk_pke..dk_pke + ek + 32]);
            assert!(!valid_material(spec, &mixed), "{spec:?}");
        }
    }

    #[test]
    fn hmac_and_ecdh_work_and_refuse_what_they_should() {
        let entropy = SeededEntropy::new(4);
        let key = generate(KeySpec::Hmac384, &entropy).unwrap();
        assert_eq!(key.len(), 48);
        let tag = mac(KeySpec::Hmac384, key.expose(), b"m").unwrap();
        assert_eq!(tag.len(), 48);
        assert!(verify_mac(KeySpec::Hmac384, key.expose(), b"m", &tag).unwrap());
        assert!(!verify_mac(KeySpec::Hmac384, key.expose(), b"n", &tag).unwrap());

        let a = generate(KeySpec::EccNistP256, &entropy).unwrap();
        let b = generate(KeySpec::EccNistP256, &entropy).unwrap();
        let a_pub = public_key(KeySpec::EccNistP256, a.expose()).unwrap();
        let b_pub = public_key(KeySpec::EccNistP256, b.expose()).unwrap();
        let ab = derive_shared_secret(KeySpec::EccNistP256, a.expose(), &b_pub)
            .unwrap()
            .unwrap();
        let ba = derive_shared_secret(KeySpec::EccNistP256, b.expose(), &a_pub)
            .unwrap()
            .unwrap();
        assert_eq!(ab.expose(), ba.expose());
        assert_eq!(ab.len(), 32);
        // Another curve's key, garbage and a bare point are not a peer key.
        let other = generate(KeySpec::EccNistP384, &entropy).unwrap();
        let other_pub = public_key(KeySpec::EccNistP384, other.expose()).unwrap();
        assert!(
            derive_shared_secret(KeySpec::EccNistP256, a.expose(), &other_pub)
                .unwrap()
                .is_none()
        );
        assert!(
            derive_shared_secret(KeySpec::EccNistP256, a.expose(), b"\x30garbage")
                .unwrap()
                .is_none()
        );
        assert!(
            derive_shared_secret(KeySpec::EccNistP256, a.expose(), &b_pub[26..])
                .unwrap()
                .is_none()
        );
    }
}
