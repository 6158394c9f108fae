//! The secrets bundle before sealing and after opening: a JSON object of string → string whose names
//! become environment variables of the guest. Validation happens on both sides (a ciphertext sealed by
//! another tool must still pass), and no error or `Debug` output ever contains a value.
//!
//! Name rules: `[A-Za-z_][A-Za-z0-9_]*`, at most [`MAX_NAME_LEN`] bytes, case-sensitive — exactly what
//! the executor accepts, so nothing sealed here is refused later. Reserved names ([`RESERVED_ENV_NAMES`], the
//! executor's `SYSTEM_ENV_NAMES`,
//! [`RESERVED_ENV_PREFIXES`]) are compared case-insensitively: `path` is refused as well as `PATH`, since
//! some consumers fold case. Values may be empty but may not contain NUL (environment strings cannot).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use zeroize::{Zeroize, Zeroizing};

/// The contract stores at most 96 KiB of base64 ciphertext (`MAX_ENCRYPTED_SECRETS_LEN`): 64 KiB of
/// plaintext plus the envelope fits with room to spare.
pub const MAX_PLAINTEXT_BYTES: usize = 64 * 1024;
pub const MAX_NAME_LEN: usize = 128;

/// Names the pod's environment or common runtimes give meaning to: a secret must not shadow them. The
/// executor's own guest variables (`outlayer_executor::config::SYSTEM_ENV_NAMES`, `NEAR_SENDER_ID`…) are
/// reserved too, one by one rather than as a `NEAR_` prefix, so users keep names like `NEAR_PRIVATE_KEY`.
pub const RESERVED_ENV_NAMES: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "SHELL",
    "PWD",
    "HOSTNAME",
    "TERM",
    "TMPDIR",
    "LANG",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// Prefixes of variables the platform sets: the executor's flags (`OUTLAYER_*`), Kubernetes service
/// links (`KUBERNETES_*`) and locale settings (`LC_*`).
pub const RESERVED_ENV_PREFIXES: &[&str] = &["OUTLAYER_", "KUBERNETES_", "LC_"];

/// What is wrong with a bundle. Names are echoed (they are not secret); values never are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaintextError {
    #[error("secrets are {size} bytes; at most {MAX_PLAINTEXT_BYTES} are allowed")]
    TooLarge { size: usize },
    #[error("secrets are not valid JSON ({category} at line {line}, column {column})")]
    Json {
        category: &'static str,
        line: usize,
        column: usize,
    },
    #[error("secrets must be a JSON object of string values; the top level is {found}")]
    NotAnObject { found: &'static str },
    #[error("the value of secret {name} is {found}, not a string")]
    NotAString { name: String, found: &'static str },
    #[error("secret {name} appears more than once")]
    Duplicate { name: String },
    #[error(
        "secret name {name:?} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*, \
         at most {MAX_NAME_LEN} bytes)"
    )]
    InvalidName { name: String },
    #[error("secret name {name} collides with a variable the platform sets")]
    Reserved { name: String },
    #[error(
        "the value of secret {name} contains a NUL byte, which environment variables cannot hold"
    )]
    NulInValue { name: String },
}

/// A validated bundle. Values are wiped from memory when it drops; `Debug` shows names only.
#[derive(Clone, PartialEq, Eq)]
pub struct Plaintext {
    entries: BTreeMap<String, Zeroizing<String>>,
}

impl Plaintext {
    /// Parses and validates JSON bytes (the size bound is checked before anything is parsed).
    pub fn from_json(bytes: &[u8]) -> Result<Self, PlaintextError> {
        if bytes.len() > MAX_PLAINTEXT_BYTES {
            return Err(PlaintextError::TooLarge { size: bytes.len() });
        }
        // The visitor reports our own errors through this cell: serde's messages can quote input.
        let failure = RefCell::new(None);
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let parsed = deserializer
            .deserialize_any(BundleVisitor { failure: &failure })
            .and_then(|entries| deserializer.end().map(|()| entries));
        match parsed {
            Ok(entries) => {
                let plaintext = Self { entries };
                plaintext.validate()?;
                Ok(plaintext)
            }
            Err(e) => Err(failure.into_inner().unwrap_or(PlaintextError::Json {
                category: match e.classify() {
                    serde_json::error::Category::Eof => "unexpected end of input",
                    serde_json::error::Category::Syntax => "syntax error",
                    serde_json::error::Category::Data => "invalid data",
                    serde_json::error::Category::Io => "read error",
                },
                line: e.line(),
                column: e.column(),
            })),
        }
    }

    /// Builds a bundle from pairs, validating it like a parsed one.
    pub fn from_pairs<N, V>(pairs: impl IntoIterator<Item = (N, V)>) -> Result<Self, PlaintextError>
    where
        N: Into<String>,
        V: Into<String>,
    {
        let mut entries = BTreeMap::new();
        for (name, value) in pairs {
            let name = name.into();
            if entries.contains_key(&name) {
                return Err(PlaintextError::Duplicate { name });
            }
            entries.insert(name, Zeroizing::new(value.into()));
        }
        let plaintext = Self { entries };
        plaintext.validate()?;
        let size = plaintext.to_json().len();
        if size > MAX_PLAINTEXT_BYTES {
            return Err(PlaintextError::TooLarge { size });
        }
        Ok(plaintext)
    }

    fn validate(&self) -> Result<(), PlaintextError> {
        for (name, value) in &self.entries {
            validate_name(name)?;
            if value.contains('\0') {
                return Err(PlaintextError::NulInValue { name: name.clone() });
            }
        }
        Ok(())
    }

    /// The canonical JSON (names sorted): what is sealed, and the env file the executor reads.
    pub fn to_json(&self) -> Zeroizing<Vec<u8>> {
        let view: BTreeMap<&str, &str> = self
            .entries
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        // Serializing a map of strings cannot fail.
        Zeroizing::new(serde_json::to_vec(&view).unwrap_or_default())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries.get(name).map(|value| value.as_str())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.keys().map(|name| (name, "<redacted>")))
            .finish()
    }
}

/// Checks one name against the syntax and the reserved lists.
pub fn validate_name(name: &str) -> Result<(), PlaintextError> {
    let mut bytes = name.bytes();
    let valid = name.len() <= MAX_NAME_LEN
        && bytes
            .next()
            .is_some_and(|b| b == b'_' || b.is_ascii_alphabetic())
        && bytes.all(|b| b == b'_' || b.is_ascii_alphanumeric());
    if !valid {
        return Err(PlaintextError::InvalidName {
            name: name.to_string(),
        });
    }
    let upper = name.to_ascii_uppercase();
    let reserved = RESERVED_ENV_NAMES.contains(&upper.as_str())
        || outlayer_executor::config::SYSTEM_ENV_NAMES.contains(&upper.as_str())
        || RESERVED_ENV_PREFIXES.iter().any(|p| upper.starts_with(p));
    if reserved {
        return Err(PlaintextError::Reserved {
            name: name.to_string(),
        });
    }
    Ok(())
}

type Entries = BTreeMap<String, Zeroizing<String>>;

struct BundleVisitor<'a> {
    failure: &'a RefCell<Option<PlaintextError>>,
}

impl BundleVisitor<'_> {
    fn fail<T, E: de::Error>(&self, error: PlaintextError) -> Result<T, E> {
        *self.failure.borrow_mut() = Some(error);
        Err(E::custom("rejected"))
    }

    fn not_an_object<T, E: de::Error>(&self, found: &'static str) -> Result<T, E> {
        self.fail(PlaintextError::NotAnObject { found })
    }
}

impl<'de> Visitor<'de> for BundleVisitor<'_> {
    type Value = Entries;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of string values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
        let mut entries = Entries::new();
        while let Some(name) = map.next_key::<String>()? {
            let value = map.next_value::<serde_json::Value>()?;
            let value = match value {
                serde_json::Value::String(value) => Zeroizing::new(value),
                mut other => {
                    let found = kind_of(&other);
                    wipe(&mut other);
                    return self.fail(PlaintextError::NotAString { name, found });
                }
            };
            if entries.contains_key(&name) {
                return self.fail(PlaintextError::Duplicate { name });
            }
            entries.insert(name, value);
        }
        Ok(entries)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Entries, E> {
        self.not_an_object("a boolean")
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Entries, E> {
        self.not_an_object("a number")
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Entries, E> {
        self.not_an_object("a number")
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Entries, E> {
        self.not_an_object("a number")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Entries, E> {
        self.not_an_object("a string")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Entries, E> {
        self.not_an_object("null")
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Entries, A::Error> {
        self.not_an_object("an array")
    }
}

fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Best effort: a rejected nested value may still hold secret text.
fn wipe(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(items) => items.iter_mut().for_each(wipe),
        serde_json::Value::Object(map) => map.values_mut().for_each(wipe),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-value-never-shown";

    fn err(json: &str) -> PlaintextError {
        Plaintext::from_json(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn a_valid_bundle_round_trips_canonically() {
        let p =
            Plaintext::from_json(br#" {"B_KEY":"2","API_KEY":"s\u00e9cret","_x1":""} "#).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p.get("API_KEY"), Some("sécret"));
        assert_eq!(
            std::str::from_utf8(&p.to_json()).unwrap(),
            r#"{"API_KEY":"sécret","B_KEY":"2","_x1":""}"#
        );
        assert_eq!(Plaintext::from_json(&p.to_json()).unwrap(), p);
        assert!(Plaintext::from_json(b"{}").unwrap().is_empty());
    }

    #[test]
    fn errors_and_debug_never_show_values() {
        let cases = [
            format!(r#"{{"A":"{SECRET}","A":"{SECRET}"}}"#),
            format!(r#"{{"A":["{SECRET}"]}}"#),
            format!(r#"{{"A":{{"x":"{SECRET}"}}}}"#),
            format!(r#""{SECRET}""#),
            format!(r#"["{SECRET}"]"#),
            format!(r#"{{"A":"{SECRET}" "#),
            format!(r#"{{"A":"{SECRET}"}} trailing"#),
            format!(r#"{{"PATH":"{SECRET}"}}"#),
            format!(r#"{{"bad name":"{SECRET}"}}"#),
            format!(r#"{{"A":"{SECRET}\u0000"}}"#),
            format!(r#"{{"A":"{SECRET}\x"}}"#),
        ];
        for case in &cases {
            let error = err(case);
            let shown = format!("{error} {error:?}");
            assert!(!shown.contains(SECRET), "{case} -> {shown}");
        }
        let p = Plaintext::from_pairs([("API_KEY", SECRET)]).unwrap();
        let debug = format!("{p:?}");
        assert!(
            debug.contains("API_KEY") && !debug.contains(SECRET),
            "{debug}"
        );
    }

    #[test]
    fn each_error_says_what_is_wrong() {
        assert_eq!(
            err(r#"{"A":"1","A":"2"}"#),
            PlaintextError::Duplicate { name: "A".into() }
        );
        assert_eq!(
            err(r#"{"A":1}"#),
            PlaintextError::NotAString {
                name: "A".into(),
                found: "a number"
            }
        );
        assert_eq!(
            err(r#"[1]"#),
            PlaintextError::NotAnObject { found: "an array" }
        );
        assert_eq!(err("null"), PlaintextError::NotAnObject { found: "null" });
        assert!(matches!(err(r#"{"A":"#), PlaintextError::Json { .. }));
        assert!(matches!(err(""), PlaintextError::Json { .. }));
        assert_eq!(
            err(r#"{"A":"a\u0000b"}"#),
            PlaintextError::NulInValue { name: "A".into() }
        );
        let big = format!(r#"{{"A":"{}"}}"#, "x".repeat(MAX_PLAINTEXT_BYTES));
        assert!(matches!(err(&big), PlaintextError::TooLarge { .. }));
        let big_pairs = Plaintext::from_pairs([("A", "x".repeat(MAX_PLAINTEXT_BYTES))]);
        assert!(matches!(big_pairs, Err(PlaintextError::TooLarge { .. })));
    }

    #[test]
    fn names_follow_env_var_rules_and_avoid_the_platforms() {
        for good in [
            "A",
            "_",
            "api_key",
            "Api_Key_2",
            "NEAR_PRIVATE_KEY",
            "PATHS",
        ] {
            validate_name(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        let too_long = "A".repeat(MAX_NAME_LEN + 1);
        for bad in ["", "1A", "A-B", "A B", "É", "A=B", too_long.as_str()] {
            assert!(
                matches!(validate_name(bad), Err(PlaintextError::InvalidName { .. })),
                "{bad}"
            );
        }
        for reserved in [
            "PATH",
            "path",
            "HOME",
            "OUTLAYER_ENV_FILE",
            "outlayer_x",
            "KUBERNETES_SERVICE_HOST",
            "LC_ALL",
            "NEAR_SENDER_ID",
        ] {
            assert!(
                matches!(
                    validate_name(reserved),
                    Err(PlaintextError::Reserved { .. })
                ),
                "{reserved}"
            );
        }
    }

    #[test]
    fn every_variable_the_executor_sets_is_reserved() {
        for name in outlayer_executor::config::SYSTEM_ENV_NAMES {
            assert!(
                matches!(validate_name(name), Err(PlaintextError::Reserved { .. })),
                "{name}"
            );
        }
    }
}
