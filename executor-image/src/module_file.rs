//! Reads the module file and verifies its sha256 before anything parses it.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::PlatformError;

/// A module file whose checksum matched.
#[derive(Debug)]
pub enum VerifiedModule {
    /// The module bytes, within the size limit.
    Bytes(Vec<u8>),
    /// The file matched its checksum but is over the size limit; its bytes were hashed as a
    /// stream and never held in memory.
    TooLarge { size: u64 },
}

/// Parses an expected checksum: 64 hex characters, any case.
pub fn parse_sha256(text: &str) -> Result<[u8; 32], PlatformError> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut digest)
        .map_err(|_| PlatformError::InvalidChecksum(text.to_string()))?;
    Ok(digest)
}

/// Reads `path`, failing with [`PlatformError::ChecksumMismatch`] unless its sha256 is
/// `expected`. Files over `max_bytes` are hashed in chunks and reported as
/// [`VerifiedModule::TooLarge`], so a huge file costs time but not memory.
pub fn load_verified(
    path: &Path,
    expected: &[u8; 32],
    max_bytes: u64,
) -> Result<VerifiedModule, PlatformError> {
    let read_error = |source| PlatformError::Read {
        what: "module",
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(read_error)?;
    let size = file.metadata().map_err(read_error)?.len();
    let mut hasher = Sha256::new();
    let module = if size > max_bytes {
        let mut chunk = vec![0u8; 1024 * 1024];
        let mut total = 0u64;
        loop {
            let n = file.read(&mut chunk).map_err(read_error)?;
            if n == 0 {
                break;
            }
            total += n as u64;
            hasher.update(&chunk[..n]);
        }
        VerifiedModule::TooLarge { size: total }
    } else {
        // `take` guards against a file that grows between `metadata` and the read.
        let mut bytes = Vec::with_capacity(size as usize);
        file.take(max_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        hasher.update(&bytes);
        if bytes.len() as u64 > max_bytes {
            VerifiedModule::TooLarge {
                size: bytes.len() as u64,
            }
        } else {
            VerifiedModule::Bytes(bytes)
        }
    };
    let actual: [u8; 32] = hasher.finalize().into();
    if &actual != expected {
        return Err(PlatformError::ChecksumMismatch {
            path: path.to_path_buf(),
            expected: hex::encode(expected),
            actual: hex::encode(actual),
        });
    }
    Ok(module)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(bytes).into()
    }

    #[test]
    fn accepts_matching_and_rejects_other_checksums() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.wasm");
        std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
        match load_verified(&path, &sha(b"\0asm\x01\0\0\0"), 100).unwrap() {
            VerifiedModule::Bytes(bytes) => assert_eq!(bytes, b"\0asm\x01\0\0\0"),
            other => panic!("unexpected {other:?}"),
        }
        let error = load_verified(&path, &sha(b"other"), 100).unwrap_err();
        assert!(matches!(error, PlatformError::ChecksumMismatch { .. }));
        assert_eq!(error.exit_code(), 4);
    }

    #[test]
    fn oversized_files_are_verified_but_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.wasm");
        let content = vec![7u8; 3 * 1024 * 1024 + 5];
        std::fs::write(&path, &content).unwrap();
        match load_verified(&path, &sha(&content), 1024).unwrap() {
            VerifiedModule::TooLarge { size } => assert_eq!(size, content.len() as u64),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            load_verified(&path, &sha(b"x"), 1024).unwrap_err(),
            PlatformError::ChecksumMismatch { .. }
        ));
    }

    #[test]
    fn checksum_text_must_be_64_hex_chars() {
        assert!(parse_sha256(&"Ab".repeat(32)).is_ok());
        assert!(parse_sha256("abc").is_err());
        assert!(parse_sha256(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let error = load_verified(Path::new("/nonexistent/m.wasm"), &[0; 32], 10).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/m.wasm"));
        assert_eq!(error.exit_code(), 3);
    }
}
