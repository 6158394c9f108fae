//! The warm pod's handoff: the one message that gives a waiting executor (`serve-once`) its
//! assignment, and the one answer it sends back.
//!
//! Wire format, over one TCP connection: the operator sends one JSON [`HandoffRequest`] followed by
//! a newline (at most [`MAX_REQUEST_BYTES`]); the executor answers one JSON [`HandoffReply`] and a
//! newline, then closes. Only a request carrying the pod's one-time token (a Secret the operator
//! created for this pod, mounted as a file) is accepted, and only once: after that the executor stops
//! listening, runs the assignment and writes its result exactly as a cold run does (termination
//! message, output directory).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Deterministic, Limits, ResponseFormat, SystemEnv};

/// Version of the wire format; a request of another version is refused.
pub const HANDOFF_VERSION: u32 = 1;
/// The largest request: a 256 KiB input, secrets and the rest fit with room to spare.
pub const MAX_REQUEST_BYTES: u64 = 4 * 1024 * 1024;

/// What one execution needs; everything a cold pod gets from its command line, input file and env
/// file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Assignment {
    /// sha256 of the module (64 lowercase hex): the executor reads `<module dir>/<sha256>.wasm` and
    /// verifies the checksum before anything parses it. No path travels: the name is the hash.
    pub module_sha256: String,
    /// The guest's stdin.
    pub input: String,
    pub max_instructions: u64,
    pub max_memory_mb: u32,
    pub max_execution_seconds: u64,
    pub max_output_bytes: u64,
    /// `text`, `json` or `bytes`.
    pub response_format: String,
    /// Seeded `random_get` and frozen clocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deterministic: Option<DeterministicAssignment>,
    #[serde(default)]
    pub sender_id: String,
    #[serde(default)]
    pub request_id: String,
    #[serde(default)]
    pub contract_id: String,
    #[serde(default)]
    pub block_height: String,
    /// The unsealed secrets: the guest's extra environment.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
}

/// Deterministic mode of an assignment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeterministicAssignment {
    pub seed: String,
    #[serde(default)]
    pub fixed_unix_time_ns: u64,
}

impl Assignment {
    pub fn limits(&self) -> Limits {
        Limits {
            max_instructions: self.max_instructions,
            max_memory_mb: self.max_memory_mb,
            max_execution_seconds: self.max_execution_seconds,
            max_output_bytes: self.max_output_bytes,
            ..Limits::default()
        }
    }

    pub fn response_format(&self) -> Result<ResponseFormat, String> {
        self.response_format.parse()
    }

    pub fn system(&self) -> SystemEnv {
        SystemEnv {
            sender_id: self.sender_id.clone(),
            request_id: self.request_id.clone(),
            contract_id: self.contract_id.clone(),
            block_height: self.block_height.clone(),
        }
    }

    pub fn deterministic(&self) -> Option<Deterministic> {
        self.deterministic.as_ref().map(|d| Deterministic {
            seed: d.seed.clone().into_bytes(),
            unix_time_nanos: d.fixed_unix_time_ns,
        })
    }
}

/// The operator's one message to a warm pod.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HandoffRequest {
    pub v: u32,
    /// The pod's one-time token.
    pub token: String,
    pub assignment: Assignment,
}

/// The executor's answer: accepted (it now runs the assignment), or why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandoffReply {
    pub accepted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl HandoffReply {
    pub fn accepted() -> Self {
        Self {
            accepted: true,
            error: None,
        }
    }

    pub fn refused(error: impl Into<String>) -> Self {
        Self {
            accepted: false,
            error: Some(error.into()),
        }
    }
}

/// Why a handoff attempt was refused; the executor keeps waiting for the real one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// A connection that sent nothing (e.g. the kubelet's readiness probe).
    #[error("empty request")]
    Empty,
    #[error("reading the request: {0}")]
    Read(String),
    #[error("the request is larger than {MAX_REQUEST_BYTES} bytes")]
    TooLarge,
    #[error("the request is not a handoff: {0}")]
    Malformed(String),
    #[error("handoff version {0}, this executor speaks version {HANDOFF_VERSION}")]
    Version(u32),
    #[error("wrong token")]
    Token,
    #[error("invalid assignment: {0}")]
    Assignment(String),
}

/// Compares a presented token with the pod's token without a data-dependent early exit: both are
/// hashed first, so even the comparison's timing says nothing about the token's bytes.
pub fn token_matches(expected: &str, presented: &str) -> bool {
    let expected = Sha256::digest(expected.trim().as_bytes());
    let presented = Sha256::digest(presented.as_bytes());
    let difference = expected
        .iter()
        .zip(presented.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    difference == 0 && !expected.is_empty()
}

/// Checks a parsed request against the pod's `token` and its memory class (MiB): what the executor
/// would run, or why it refuses.
pub fn check_request(
    request: HandoffRequest,
    token: &str,
    memory_class_mb: Option<u32>,
) -> Result<Assignment, Refusal> {
    if request.v != HANDOFF_VERSION {
        return Err(Refusal::Version(request.v));
    }
    if token.trim().is_empty() || !token_matches(token, &request.token) {
        return Err(Refusal::Token);
    }
    let assignment = request.assignment;
    if crate::module_file::parse_sha256(&assignment.module_sha256).is_err()
        || assignment.module_sha256.len() != 64
        || assignment
            .module_sha256
            .bytes()
            .any(|b| b.is_ascii_uppercase())
    {
        return Err(Refusal::Assignment(format!(
            "moduleSha256 {:?} is not 64 lowercase hex characters",
            assignment.module_sha256
        )));
    }
    assignment.response_format().map_err(Refusal::Assignment)?;
    if let Some(class) = memory_class_mb
        && assignment.max_memory_mb > class
    {
        return Err(Refusal::Assignment(format!(
            "maxMemoryMb {} is above this pod's class of {class} MiB",
            assignment.max_memory_mb
        )));
    }
    Ok(assignment)
}

/// Reads one request line (bounded by [`MAX_REQUEST_BYTES`]) and parses it.
pub fn read_request(stream: impl Read) -> Result<HandoffRequest, Refusal> {
    let mut reader = BufReader::new(stream.take(MAX_REQUEST_BYTES + 1));
    let mut line = Vec::new();
    reader
        .read_until(b'\n', &mut line)
        .map_err(|e| Refusal::Read(e.to_string()))?;
    if line.len() as u64 > MAX_REQUEST_BYTES {
        return Err(Refusal::TooLarge);
    }
    if line.is_empty() {
        return Err(Refusal::Empty);
    }
    serde_json::from_slice(&line).map_err(|e| Refusal::Malformed(e.to_string()))
}

/// Waits on `listener` for the one authenticated assignment: every connection gets one answer, a
/// refused one (wrong token, malformed, another class) leaves the executor waiting. `claim` is asked
/// just before accepting and may say no (the wait's deadline passed meanwhile). Each connection has
/// `read_timeout` to send its request, so a silent peer cannot hold the executor.
pub fn accept_one(
    listener: &std::net::TcpListener,
    token: &str,
    memory_class_mb: Option<u32>,
    read_timeout: std::time::Duration,
    claim: impl Fn() -> bool,
) -> std::io::Result<Assignment> {
    loop {
        let (stream, peer) = listener.accept()?;
        let _ = stream.set_read_timeout(Some(read_timeout));
        let _ = stream.set_write_timeout(Some(read_timeout));
        let _ = stream.set_nodelay(true);
        let checked = read_request(&stream)
            .and_then(|request| check_request(request, token, memory_class_mb));
        match checked {
            Ok(assignment) if claim() => {
                // The assignment is ours whether or not the reply reaches the operator: it runs.
                let _ = write_line(&stream, &HandoffReply::accepted());
                let _ = stream.shutdown(std::net::Shutdown::Both);
                return Ok(assignment);
            }
            Ok(_) => {
                let _ = write_line(&stream, &HandoffReply::refused("the wait is over"));
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the assignment arrived after the deadline",
                ));
            }
            Err(Refusal::Empty) => tracing::debug!(%peer, "connection without a request"),
            Err(refusal) => {
                tracing::warn!(%peer, %refusal, "handoff refused");
                let _ = write_line(&stream, &HandoffReply::refused(refusal.to_string()));
            }
        }
    }
}

/// Writes one message as a JSON line.
pub fn write_line(mut stream: impl Write, message: &impl Serialize) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    stream.write_all(&bytes)?;
    stream.flush()
}

/// Reads the executor's answer line.
pub fn read_reply(stream: impl Read) -> std::io::Result<HandoffReply> {
    let mut reader = BufReader::new(stream.take(64 * 1024));
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    serde_json::from_slice(&line).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "3f0c2a9b3f0c2a9b3f0c2a9b3f0c2a9b3f0c2a9b3f0c2a9b3f0c2a9b3f0c2a9b";

    fn assignment() -> Assignment {
        Assignment {
            module_sha256: SHA.to_string(),
            input: "hi".to_string(),
            max_instructions: 10,
            max_memory_mb: 64,
            max_execution_seconds: 1,
            max_output_bytes: 100,
            response_format: "Text".to_string(),
            deterministic: None,
            sender_id: String::new(),
            request_id: String::new(),
            contract_id: String::new(),
            block_height: String::new(),
            secrets: BTreeMap::new(),
        }
    }

    fn request(token: &str, assignment: Assignment) -> HandoffRequest {
        HandoffRequest {
            v: HANDOFF_VERSION,
            token: token.to_string(),
            assignment,
        }
    }

    #[test]
    fn only_the_pods_token_is_accepted() {
        assert!(token_matches("abc\n", "abc"));
        assert!(!token_matches("abc", "abd"));
        assert!(!token_matches("abc", ""));
        assert_eq!(
            check_request(request("abc", assignment()), "abc", Some(64)),
            Ok(assignment())
        );
        assert_eq!(
            check_request(request("abd", assignment()), "abc", Some(64)),
            Err(Refusal::Token)
        );
        // A pod whose token file is empty accepts nothing, not the empty token.
        assert_eq!(
            check_request(request("", assignment()), "", None),
            Err(Refusal::Token)
        );
    }

    #[test]
    fn assignments_outside_the_pods_class_or_malformed_are_refused() {
        let mut big = assignment();
        big.max_memory_mb = 65;
        assert!(matches!(
            check_request(request("t", big), "t", Some(64)),
            Err(Refusal::Assignment(_))
        ));
        let mut path = assignment();
        path.module_sha256 = "../../etc/passwd".to_string();
        assert!(matches!(
            check_request(request("t", path), "t", None),
            Err(Refusal::Assignment(_))
        ));
        let mut upper = assignment();
        upper.module_sha256 = SHA.to_uppercase();
        assert!(matches!(
            check_request(request("t", upper), "t", None),
            Err(Refusal::Assignment(_))
        ));
        let mut format = assignment();
        format.response_format = "xml".to_string();
        assert!(matches!(
            check_request(request("t", format), "t", None),
            Err(Refusal::Assignment(_))
        ));
        let mut old = request("t", assignment());
        old.v = 0;
        assert_eq!(check_request(old, "t", None), Err(Refusal::Version(0)));
    }

    #[test]
    fn a_listener_refuses_strangers_and_accepts_the_token_once() {
        use std::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let send = move |token: &str| {
            let stream = TcpStream::connect(address).unwrap();
            write_line(&stream, &request(token, assignment())).unwrap();
            read_reply(&stream).unwrap()
        };
        let server = std::thread::spawn(move || {
            accept_one(
                &listener,
                "secret",
                Some(64),
                std::time::Duration::from_secs(5),
                || true,
            )
        });
        let refused = send("guess");
        assert_eq!(refused, HandoffReply::refused("wrong token"));
        assert_eq!(send("secret"), HandoffReply::accepted());
        assert_eq!(server.join().unwrap().unwrap(), assignment());
    }

    #[test]
    fn requests_round_trip_and_oversized_ones_are_refused() {
        let mut wire = Vec::new();
        write_line(&mut wire, &request("t", assignment())).unwrap();
        let parsed = read_request(wire.as_slice()).unwrap();
        assert_eq!(parsed.assignment, assignment());
        assert!(matches!(
            read_request(&b"not json\n"[..]),
            Err(Refusal::Malformed(_))
        ));
        let huge = vec![b'x'; MAX_REQUEST_BYTES as usize + 10];
        assert_eq!(
            read_request(huge.as_slice()).unwrap_err(),
            Refusal::TooLarge
        );
        let mut reply = Vec::new();
        write_line(&mut reply, &HandoffReply::refused("wrong token")).unwrap();
        assert_eq!(
            read_reply(reply.as_slice()).unwrap(),
            HandoffReply::refused("wrong token")
        );
    }
}
