"""The cases of tests/kms_validation.rs, from botocore's KMS model: for every operation and
every top-level input member with constraints, a request that violates one constraint (the
others members valid or absent) and the ValidationException message AWS's validation gives
for it. Prints JSON: {"single": [case...], "double": [case...]}.

Where a value cannot break one constraint alone (an empty string also fails a `+` pattern),
the expected message has every constraint the value breaks, in AWS's order for a member:
length lower bound, upper bound, enum, pattern.
"""
import base64
import json
import re

import botocore.session

# A value each pattern accepts (the test's own check below proves each one does).
PATTERN_EXAMPLES = {
    "cluster-[2-7a-zA-Z]{11,16}": "cluster-abcdefghijk",
    "^https://[a-zA-Z0-9.-]+$": "https://xks.example.com",
    "^(/[a-zA-Z0-9\\/_-]+/kms/xks/v\\d{1,2})$|^(/kms/xks/v\\d{1,2})$": "/kms/xks/v1",
    "^(com|eu)\\.amazonaws\\.vpce\\.([a-z]+-){2,3}\\d+\\.vpce-svc-[0-9a-z]+$":
        "com.amazonaws.vpce.us-east-1.vpce-svc-0abc",
    "[0-9]{12}": "111122223333",
    "^([A-Za-z0-9\\-]+)\\.([A-Za-z0-9\\-]+)(\\.[A-Za-z0-9\\-]+)+$": "service.amazonaws.com",
    "^([a-z]+-){2,3}\\d+$": "us-west-2",
    "^[a-f0-9]+$": "a" * 64,
}
# Java's \w, \s, \d are ASCII; so are Python's under re.ASCII.
def java_matches(pattern, value):
    return re.fullmatch(pattern, value, re.ASCII) is not None


def valid_string(member):
    md = member.metadata
    lo, hi = md.get("min", 0), md.get("max", 64)
    if getattr(member, "enum", None):
        return member.enum[0]
    pattern = md.get("pattern")
    if pattern in PATTERN_EXAMPLES:
        value = PATTERN_EXAMPLES[pattern]
    else:
        value = "a" * max(lo, 1)
    assert lo <= len(value) <= hi, (member.name, value)
    assert pattern is None or java_matches(pattern, value), (pattern, value)
    return value


def resize(member, n):
    """A string of length n, matching the member's pattern if some padding does."""
    pattern = member.metadata.get("pattern")
    base = valid_string(member)
    candidates = [(base + c * n)[:n] for c in "a1"] + [c * n for c in "a1"]
    for candidate in candidates:
        if pattern is None or java_matches(pattern, candidate):
            return candidate
    return candidates[0]


def valid_value(member):
    md = member.metadata
    t = member.type_name
    if t == "string":
        return valid_string(member)
    if t == "blob":
        return base64.b64encode(b"\0" * max(md.get("min", 1), 1)).decode()
    if t == "integer":
        return md.get("min", 1)
    if t == "list":
        if member.member.type_name == "string":
            return [valid_string(member.member)][: max(md.get("min", 0), 1)]
        return []
    if t == "boolean":
        return False
    raise AssertionError((member.name, t))


def shown(member, value):
    """How AWS shows a value in a message: ` 'value'`, or nothing."""
    if member.metadata.get("sensitive"):
        return ""
    t = member.type_name
    if t == "blob":
        n = len(base64.b64decode(value))
        return f" 'java.nio.HeapByteBuffer[pos=0 lim={n} cap={n}]'"
    if t == "list":
        return " '[" + ", ".join(value) + "]'"
    return f" '{value}'"


def violations(path, member, value):
    """The messages AWS gives for `value` of `member` (without the count prefix)."""
    md = member.metadata
    t = member.type_name
    out = []
    head = f"Value{shown(member, value)} at '{path}' failed to satisfy constraint: Member must "
    if t == "integer":
        if "min" in md and value < md["min"]:
            out.append(head + f"have value greater than or equal to {md['min']}")
        if "max" in md and value > md["max"]:
            out.append(head + f"have value less than or equal to {md['max']}")
        return out
    length = {
        "blob": lambda v: len(base64.b64decode(v)),
        "string": lambda v: len(v.encode("utf-16-le")) // 2,
        "list": len,
    }[t](value)
    if "min" in md and length < md["min"]:
        out.append(head + f"have length greater than or equal to {md['min']}")
    if "max" in md and length > md["max"]:
        out.append(head + f"have length less than or equal to {md['max']}")
    if t == "string":
        enum = getattr(member, "enum", None)
        if enum and value not in enum:
            out.append(head + "satisfy enum value set: [" + ", ".join(enum) + "]")
        if "pattern" in md and not java_matches(md["pattern"], value):
            out.append(head + "satisfy regular expression pattern: " + md["pattern"])
    return out


def breaking_values(member):
    """(constraint, value) for each constraint of the member a value can break."""
    md = member.metadata
    t = member.type_name
    out = []
    if t == "integer":
        if "min" in md:
            out.append(("min", md["min"] - 1))
        if "max" in md:
            out.append(("max", md["max"] + 1))
    elif t == "blob":
        if md.get("min", 0) >= 1:
            out.append(("min", base64.b64encode(b"\0" * (md["min"] - 1)).decode()))
        if "max" in md:
            out.append(("max", base64.b64encode(b"\0" * (md["max"] + 1)).decode()))
    elif t == "list":
        item = valid_string(member.member) if member.member.type_name == "string" else None
        if item is not None:
            if md.get("min", 0) >= 1:
                out.append(("min", [item] * (md["min"] - 1)))
            if "max" in md:
                out.append(("max", [item] * (md["max"] + 1)))
    elif t == "string":
        if md.get("min", 0) >= 1:
            out.append(("min", resize(member, md["min"] - 1)))
        if "max" in md:
            out.append(("max", resize(member, md["max"] + 1)))
        if getattr(member, "enum", None):
            out.append(("enum", "INVALID"))
        if "pattern" in md:
            # U+0100: outside every pattern's classes, one UTF-16 unit long.
            out.append(("pattern", "\u0100" * max(md.get("min", 1), 1)))
    return out


def lower_camel(name):
    return name[0].lower() + name[1:]


model = botocore.session.get_session().get_service_model("kms")
single, double = [], []
for op in sorted(model.operation_names):
    shape = model.operation_model(op).input_shape
    required = list(shape.required_members)
    base = {name: valid_value(shape.members[name]) for name in required}
    per_member = []
    for name, member in shape.members.items():
        path = lower_camel(name)
        cases = []
        if name in required:
            body = {k: v for k, v in base.items() if k != name}
            cases.append(("required", body, [
                f"Value null at '{path}' failed to satisfy constraint: Member must not be null"
            ]))
        for constraint, value in breaking_values(member):
            body = dict(base, **{name: value})
            cases.append((constraint, body, violations(path, member, value)))
        for constraint, body, messages in cases:
            single.append({"op": op, "member": path, "constraint": constraint,
                           "body": body, "messages": messages})
        # One message, the shortest body: what the two-member cases combine.
        breaking = [c for c in cases if c[0] != "required" and len(c[2]) == 1]
        if breaking:
            per_member.append((name, min(breaking, key=lambda c: len(json.dumps(c[1])))))
    # Two members broken at once, in the model's member order.
    if op in ("CreateKey", "Encrypt", "GenerateDataKey", "CreateGrant", "ListKeys") \
            and len(per_member) >= 2:
        size = lambda m: len(json.dumps(m[1][1]))
        pair = sorted(sorted(per_member, key=size)[:2], key=per_member.index)
        (n1, (_, b1, m1)), (n2, (_, b2, m2)) = pair
        body = dict(base, **{n1: b1[n1], n2: b2[n2]})
        double.append({"op": op, "member": lower_camel(n1) + "+" + lower_camel(n2),
                       "constraint": "two", "body": body, "messages": m1 + m2})
print(json.dumps({"single": single, "double": double}))
