//! What a caller decides about one execution: limits, response format, determinism and the
//! system values the guest sees.

use std::fmt;
use std::str::FromStr;

/// Bytes in a mebibyte; memory limits are given in MiB.
pub const MIB: u64 = 1024 * 1024;

/// Resource limits of one execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// wasmi fuel: roughly one unit per executed instruction.
    pub max_instructions: u64,
    /// Total linear memory (all memories together) the guest may hold.
    pub max_memory_mb: u32,
    /// Wall-clock budget for load, instantiation and execution.
    pub max_execution_seconds: u64,
    /// Largest stdout the guest may produce; more is an error, never a silent truncation.
    pub max_output_bytes: u64,
    /// Largest module accepted; checked before the module is parsed.
    pub max_module_bytes: u64,
}

impl Limits {
    /// Memory limit in bytes.
    pub fn max_memory_bytes(&self) -> u64 {
        u64::from(self.max_memory_mb) * MIB
    }
}

impl Default for Limits {
    /// Defaults for local use; the operator always passes the request's limits explicitly.
    fn default() -> Self {
        Self {
            max_instructions: 1_000_000_000,
            max_memory_mb: 128,
            max_execution_seconds: 60,
            max_output_bytes: 1024 * 1024,
            max_module_bytes: 64 * MIB,
        }
    }
}

/// How the guest's stdout is validated and placed in the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseFormat {
    /// UTF-8 text, embedded as a JSON string.
    #[default]
    Text,
    /// A JSON document, embedded as JSON.
    Json,
    /// Arbitrary bytes, embedded as standard base64.
    Bytes,
}

impl ResponseFormat {
    /// The `outputEncoding` value of the result message.
    pub fn encoding(self) -> &'static str {
        match self {
            ResponseFormat::Text => "text",
            ResponseFormat::Json => "json",
            ResponseFormat::Bytes => "base64",
        }
    }
}

impl fmt::Display for ResponseFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResponseFormat::Text => "text",
            ResponseFormat::Json => "json",
            ResponseFormat::Bytes => "bytes",
        })
    }
}

impl FromStr for ResponseFormat {
    type Err = String;

    /// Accepts the contract's spelling (`Text`, `Json`, `Bytes`) in any case.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "text" => Ok(ResponseFormat::Text),
            "json" => Ok(ResponseFormat::Json),
            "bytes" => Ok(ResponseFormat::Bytes),
            _ => Err(format!(
                "unknown response format {text:?}; expected text, json or bytes"
            )),
        }
    }
}

/// Deterministic mode: the same request replays to the same output and instruction count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deterministic {
    /// Seeds `random_get` (e.g. derived from the request id by the caller).
    pub seed: Vec<u8>,
    /// What the realtime clock reports, in nanoseconds since the Unix epoch; the monotonic clock
    /// stays at zero.
    pub unix_time_nanos: u64,
}

/// Values the platform gives every guest as `NEAR_*` environment variables; empty when the
/// execution is not on chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemEnv {
    pub sender_id: String,
    pub request_id: String,
    pub contract_id: String,
    pub block_height: String,
}

/// Names of the variables the platform sets; secrets may not use them.
pub const SYSTEM_ENV_NAMES: [&str; 7] = [
    "NEAR_SENDER_ID",
    "NEAR_REQUEST_ID",
    "NEAR_CONTRACT_ID",
    "NEAR_BLOCK_HEIGHT",
    "NEAR_MAX_INSTRUCTIONS",
    "NEAR_MAX_MEMORY_MB",
    "NEAR_MAX_EXECUTION_SECONDS",
];

impl SystemEnv {
    /// The system variables in a fixed order, limits included.
    pub fn vars(&self, limits: &Limits) -> [(&'static str, String); 7] {
        let values = [
            self.sender_id.clone(),
            self.request_id.clone(),
            self.contract_id.clone(),
            self.block_height.clone(),
            limits.max_instructions.to_string(),
            limits.max_memory_mb.to_string(),
            limits.max_execution_seconds.to_string(),
        ];
        let mut vars = SYSTEM_ENV_NAMES.map(|name| (name, String::new()));
        for ((_, slot), value) in vars.iter_mut().zip(values) {
            *slot = value;
        }
        vars
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_format_accepts_contract_spelling() {
        assert_eq!("Json".parse::<ResponseFormat>(), Ok(ResponseFormat::Json));
        assert_eq!("bytes".parse::<ResponseFormat>(), Ok(ResponseFormat::Bytes));
        assert!("xml".parse::<ResponseFormat>().is_err());
    }

    #[test]
    fn system_vars_carry_limits() {
        let limits = Limits {
            max_instructions: 7,
            max_memory_mb: 3,
            max_execution_seconds: 2,
            ..Limits::default()
        };
        let env = SystemEnv {
            sender_id: "alice.near".into(),
            ..SystemEnv::default()
        };
        let vars = env.vars(&limits);
        assert_eq!(vars[0], ("NEAR_SENDER_ID", "alice.near".to_string()));
        assert_eq!(vars[1], ("NEAR_REQUEST_ID", String::new()));
        assert_eq!(vars[4], ("NEAR_MAX_INSTRUCTIONS", "7".to_string()));
        assert_eq!(vars[5], ("NEAR_MAX_MEMORY_MB", "3".to_string()));
        assert_eq!(vars[6], ("NEAR_MAX_EXECUTION_SECONDS", "2".to_string()));
    }
}
