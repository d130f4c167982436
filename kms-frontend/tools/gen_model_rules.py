"""Writes kms-frontend/src/api/kms/model_rules.rs: the constraints of KMS's model on each
operation's top-level request members, from botocore's model (the venv tests/kms_model.rs
makes). Run from the workspace root:

    target/model-venv/bin/python3 kms-frontend/tools/gen_model_rules.py
"""
import re
import botocore
import botocore.session

# The request type each operation's handler parses.
REQUEST = {
    "CancelKeyDeletion": "KeyIdRequest", "ConnectCustomKeyStore": "CustomKeyStoreIdRequest",
    "CreateAlias": "AliasRequest", "CreateCustomKeyStore": "CreateCustomKeyStoreRequest",
    "CreateGrant": "CreateGrantRequest", "CreateKey": "CreateKeyRequest",
    "Decapsulate": "EncapsulateRequest", "Decrypt": "DecryptRequest",
    "DeleteAlias": "AliasRequest", "DeleteCustomKeyStore": "CustomKeyStoreIdRequest",
    "DeleteImportedKeyMaterial": "DeleteImportedKeyMaterialRequest",
    "DeriveSharedSecret": "DeriveSharedSecretRequest",
    "DescribeCustomKeyStores": "DescribeCustomKeyStoresRequest", "DescribeKey": "KeyIdRequest",
    "DisableKey": "KeyIdRequest", "DisableKeyRotation": "KeyIdRequest",
    "DisconnectCustomKeyStore": "CustomKeyStoreIdRequest", "EnableKey": "KeyIdRequest",
    "EnableKeyRotation": "EnableKeyRotationRequest", "Encapsulate": "EncapsulateRequest",
    "Encrypt": "EncryptRequest", "GenerateDataKey": "GenerateDataKeyRequest",
    "GenerateDataKeyPair": "GenerateDataKeyPairRequest",
    "GenerateDataKeyPairWithoutPlaintext": "GenerateDataKeyPairRequest",
    "GenerateDataKeyWithoutPlaintext": "GenerateDataKeyRequest", "GenerateMac": "MacRequest",
    "GenerateRandom": "GenerateRandomRequest", "GetKeyLastUsage": "KeyIdRequest",
    "GetKeyPolicy": "KeyPolicyRequest", "GetKeyRotationStatus": "KeyIdRequest",
    "GetParametersForImport": "GetParametersForImportRequest", "GetPublicKey": "KeyIdRequest",
    "ImportKeyMaterial": "ImportKeyMaterialRequest", "ListAliases": "ListRequest",
    "ListGrants": "ListGrantsRequest", "ListKeyPolicies": "ListRequest",
    "ListKeyRotations": "ListKeyRotationsRequest", "ListKeys": "ListRequest",
    "ListResourceTags": "ListRequest", "ListRetirableGrants": "ListGrantsRequest",
    "PutKeyPolicy": "KeyPolicyRequest", "ReEncrypt": "ReEncryptRequest",
    "ReplicateKey": "ReplicateKeyRequest", "RetireGrant": "RetireGrantRequest",
    "RevokeGrant": "RetireGrantRequest", "RotateKeyOnDemand": "KeyIdRequest",
    "ScheduleKeyDeletion": "ScheduleKeyDeletionRequest", "Sign": "SignRequest",
    "TagResource": "TagResourceRequest", "UntagResource": "UntagResourceRequest",
    "UpdateAlias": "AliasRequest", "UpdateCustomKeyStore": "UpdateCustomKeyStoreRequest",
    "UpdateKeyDescription": "UpdateKeyDescriptionRequest",
    "UpdatePrimaryRegion": "UpdatePrimaryRegionRequest", "Verify": "SignRequest",
    "VerifyMac": "MacRequest",
}

# Enums whose AWS message lists the names in an order other than the model's: the order a
# recorded answer shows (aws-recorded-errors.md), then names added since.
ENUM_ORDER = {
    "KeySpec": "&crate::service::key_spec::KEY_SPEC_ENUM",  # create-hmac-key-invalid-spec
    "KeyUsage": "&crate::service::key_spec::KEY_USAGE_ENUM",  # create-hmac-key-invalid-key-usage
    # invalid_generate_mac[HMAC_256-INVALID], invalid_verify_mac[HMAC_256-INVALID-...]
    "MacAlgorithm": '&["HMAC_SHA_384", "HMAC_SHA_256", "HMAC_SHA_224", "HMAC_SHA_512"]',
}


def snake(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def lower_camel(name):
    return name[0].lower() + name[1:]


def rust_regex(java):
    """A Java pattern as regex_lite reads it, matched against the whole value."""
    r = re.sub(r"\\u([0-9A-Fa-f]{4})", r"\\x{\1}", java)
    r = r.replace("0-9-_", "0-9\\-_").replace("\\/", "/")
    return "^(?:" + r + ")$"


def rust_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


model = botocore.session.get_session().get_service_model("kms")
patterns = {}
out = []
for op in sorted(model.operation_names):
    shape = model.operation_model(op).input_shape
    required = set(shape.required_members)
    rules = []
    for name, member in shape.members.items():
        md = member.metadata
        enum = getattr(member, "enum", None) or []
        if not (name in required or "min" in md or "max" in md or enum or "pattern" in md):
            continue
        sensitive = md.get("sensitive", False)
        kind = {
            ("string", False): "Text", ("string", True): "Sensitive",
            ("blob", False): "Blob", ("blob", True): "SensitiveBlob",
            ("integer", False): "Number", ("list", False): "List",
        }[(member.type_name, sensitive)]
        if enum:
            # GenerateDataKey's KeySpec is another enum of the same member name.
            ordered = name in ENUM_ORDER and not (name == "KeySpec" and op != "CreateKey")
            values = ENUM_ORDER[name] if ordered else "&[" + ", ".join(rust_str(v) for v in enum) + "]"
        else:
            values = "&[]"
        pattern = "None"
        if "pattern" in md:
            p = md["pattern"]
            if p not in patterns:
                patterns[p] = "PATTERN_%d" % len(patterns)
            pattern = "Some(&%s)" % patterns[p]
        opt = lambda k: "Some(%d)" % md[k] if k in md else "None"
        rules.append(
            "    Rule {\n"
            f"        path: \"{lower_camel(name)}\",\n"
            f"        get: |r| r.{snake(name)}.member(),\n"
            f"        kind: Kind::{kind},\n"
            f"        required: {'true' if name in required else 'false'},\n"
            f"        min: {opt('min')},\n"
            f"        max: {opt('max')},\n"
            f"        values: {values},\n"
            f"        pattern: {pattern},\n"
            "    },\n"
        )
    const = snake(op).upper()
    out.append(
        f"pub(super) static {const}: [Rule<{REQUEST[op]}>; {len(rules)}] = [\n"
        + "".join(rules) + "];\n"
    )

head = f"""//! Generated by `kms-frontend/tools/gen_model_rules.py` from botocore {botocore.__version__}'s
//! KMS model: do not edit. The constraints on each operation's top-level request members,
//! checked by [`super::model_checks`].

use super::model_checks::{{AsMember as _, Kind, Pattern, Rule}};
use crate::api::types::*;

"""
pats = "".join(
    f"static {const}: Pattern = Pattern::new({rust_str(p)}, {rust_str(rust_regex(p))});\n"
    for p, const in patterns.items()
)
pats += "\n/// Every pattern above (their unit test compiles each).\n"
pats += f"#[cfg(test)]\npub(super) static PATTERNS: [&Pattern; {len(patterns)}] = [" + ", ".join(
    "&" + c for c in patterns.values()) + "];\n\n"
open("kms-frontend/src/api/kms/model_rules.rs", "w").write(head + pats + "\n".join(out))
