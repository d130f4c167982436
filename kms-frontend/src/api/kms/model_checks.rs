//! The constraints KMS's model puts on each operation's top-level request members (required,
//! length, range, enum, pattern), checked before anything else looks at the request, in AWS's
//! words: one message per violated constraint, `1 validation error detected: ...` or
//! `N validation errors detected: ...; ...`. The tables are in [`super::model_rules`],
//! generated from botocore's model; this file says how each constraint is checked and worded.
//!
//! A valid request costs a few comparisons per member and no allocation: text only becomes a
//! message once a constraint fails.

use std::sync::OnceLock;

use hsmkms_common::secret::SecretString;
use serde::de::DeserializeOwned;

use super::checks::Violations;
use crate::service::error::KmsError;

/// A request member as the checks see it.
#[derive(Debug, Clone, Copy)]
pub enum Member<'a> {
    Absent,
    /// A string, or a blob as its base64 text.
    Text(&'a str),
    Number(i64),
    /// A list of strings, shown as Java shows a list (`[a, b]`).
    Strings(&'a [String]),
    /// Any other list: only its length is checked.
    Items(usize),
}

/// How a member's value reads in a message and how its length is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string: its value is shown; its length is in UTF-16 units, as Java counts.
    Text,
    /// A blob: base64 on the wire, its length is the decoded one; AWS shows the value as the
    /// Java buffer it holds.
    Blob,
    /// A sensitive member (a password, plaintext): AWS shows no value (`Value at 'plaintext'`,
    /// recorded in `plaintext_size_for_encrypt`).
    Sensitive,
    /// A sensitive blob.
    SensitiveBlob,
    Number,
    List,
}

/// A model pattern: the text AWS quotes, and the same pattern for `regex_lite`, matched
/// against the whole value as Java's `matches` does.
#[derive(Debug)]
pub struct Pattern {
    pub text: &'static str,
    regex: &'static str,
    compiled: OnceLock<Option<regex_lite::Regex>>,
}

impl Pattern {
    pub const fn new(text: &'static str, regex: &'static str) -> Self {
        Self {
            text,
            regex,
            compiled: OnceLock::new(),
        }
    }

    fn matches(&self, value: &str) -> bool {
        // A pattern that does not compile (a bug, caught by the unit test) checks nothing.
        self.compiled
            .get_or_init(|| regex_lite::Regex::new(self.regex).ok())
            .as_ref()
            .is_none_or(|r| r.is_match(value))
    }
}

/// One member's constraints in an operation's request `T`.
#[derive(Debug)]
pub struct Rule<T: 'static> {
    /// The member's path in messages (lowerCamelCase).
    pub path: &'static str,
    pub get: fn(&T) -> Member<'_>,
    pub kind: Kind,
    pub required: bool,
    pub min: Option<i64>,
    pub max: Option<i64>,
    /// The enum's names, in the order AWS lists them; empty when not an enum.
    pub values: &'static [&'static str],
    pub pattern: Option<&'static Pattern>,
}

/// Field access the rule tables use: each field type as a [`Member`].
pub trait AsMember {
    fn member(&self) -> Member<'_>;
}

impl AsMember for Option<String> {
    fn member(&self) -> Member<'_> {
        self.as_deref().map_or(Member::Absent, Member::Text)
    }
}

impl AsMember for Option<SecretString> {
    fn member(&self) -> Member<'_> {
        self.as_ref()
            .map_or(Member::Absent, |s| Member::Text(s.expose()))
    }
}

impl AsMember for Option<i64> {
    fn member(&self) -> Member<'_> {
        self.map_or(Member::Absent, Member::Number)
    }
}

impl AsMember for Option<Vec<String>> {
    fn member(&self) -> Member<'_> {
        self.as_deref().map_or(Member::Absent, Member::Strings)
    }
}

impl AsMember for Option<Vec<crate::api::types::Tag>> {
    fn member(&self) -> Member<'_> {
        self.as_ref()
            .map_or(Member::Absent, |v| Member::Items(v.len()))
    }
}

/// Parses a request and checks it against its operation's rules.
pub(super) fn valid<T: DeserializeOwned>(body: &[u8], rules: &[Rule<T>]) -> Result<T, KmsError> {
    let request = crate::api::parse(body)?;
    check(&request, rules)?;
    Ok(request)
}

/// Every violation of `rules` by `request`, in the model's member order.
pub(super) fn check<T>(request: &T, rules: &[Rule<T>]) -> Result<(), KmsError> {
    let mut v = Violations::default();
    for rule in rules {
        check_member(rule, (rule.get)(request), &mut v);
    }
    v.finish()
}

fn check_member<T>(rule: &Rule<T>, member: Member<'_>, v: &mut Violations) {
    let length = match member {
        Member::Absent => {
            if rule.required {
                v.note(format!(
                    "Value null at '{}' failed to satisfy constraint: Member must not be null",
                    rule.path
                ));
            }
            return;
        }
        Member::Number(n) => {
            if let Some(min) = rule.min.filter(|min| n < *min) {
                note(
                    v,
                    rule,
                    member,
                    &format!("have value greater than or equal to {min}"),
                );
            }
            if let Some(max) = rule.max.filter(|max| n > *max) {
                note(
                    v,
                    rule,
                    member,
                    &format!("have value less than or equal to {max}"),
                );
            }
            return;
        }
        Member::Text(text) => match rule.kind {
            Kind::Blob | Kind::SensitiveBlob => decoded_len(text),
            _ if text.is_ascii() => text.len(),
            _ => text.encode_utf16().count(),
        },
        Member::Strings(items) => items.len(),
        Member::Items(n) => n,
    };
    let length = i64::try_from(length).unwrap_or(i64::MAX);
    if let Some(min) = rule.min.filter(|min| length < *min) {
        note(
            v,
            rule,
            member,
            &format!("have length greater than or equal to {min}"),
        );
    }
    if let Some(max) = rule.max.filter(|max| length > *max) {
        note(
            v,
            rule,
            member,
            &format!("have length less than or equal to {max}"),
        );
    }
    if let Member::Text(text) = member {
        if !rule.values.is_empty() && !rule.values.contains(&text) {
            let set = rule.values.join(", ");
            note(v, rule, member, &format!("satisfy enum value set: [{set}]"));
        }
        if let Some(pattern) = rule.pattern.filter(|p| !p.matches(text)) {
            let text = pattern.text;
            note(
                v,
                rule,
                member,
                &format!("satisfy regular expression pattern: {text}"),
            );
        }
    }
}

/// One violation: `Value '<value>' at '<path>' failed to satisfy constraint: Member must ...`.
fn note<T>(v: &mut Violations, rule: &Rule<T>, member: Member<'_>, must: &str) {
    let path = rule.path;
    let value = match (member, rule.kind) {
        (_, Kind::Sensitive | Kind::SensitiveBlob) => String::new(),
        (Member::Text(text), Kind::Blob) => {
            let n = decoded_len(text);
            format!(" 'java.nio.HeapByteBuffer[pos=0 lim={n} cap={n}]'")
        }
        (Member::Text(text), _) => format!(" '{text}'"),
        (Member::Number(n), _) => format!(" '{n}'"),
        (Member::Strings(items), _) => format!(" '[{}]'", items.join(", ")),
        (Member::Items(_) | Member::Absent, _) => String::new(),
    };
    v.note(format!(
        "Value{value} at '{path}' failed to satisfy constraint: Member must {must}"
    ));
}

/// The length of what base64 `text` decodes to (whether it decodes is checked later, where
/// the blob is decoded).
fn decoded_len(text: &str) -> usize {
    let digits = text.trim_end_matches('=').len();
    digits * 3 / 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_compiles() {
        for pattern in super::super::model_rules::PATTERNS {
            assert!(
                regex_lite::Regex::new(pattern.regex).is_ok(),
                "{}",
                pattern.text
            );
        }
    }

    #[test]
    fn blob_lengths_are_the_decoded_ones() {
        assert_eq!(decoded_len(""), 0);
        assert_eq!(decoded_len("AA=="), 1);
        assert_eq!(decoded_len("AAA="), 2);
        assert_eq!(decoded_len("AAAA"), 3);
    }
}
