//! The command's full log: everything our steps and their child processes print goes to one file,
//! capped so a chatty or hostile build cannot fill the volume, while the last bytes stay in memory
//! for the report's `logTail`.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use crate::error::{Error, Result};

/// How much of the log's end is kept in memory: more than the report can carry, so the tail is
/// still whole after the report trims it to fit.
const TAIL_BYTES: usize = 16 * 1024;

pub struct Log {
    inner: Mutex<Inner>,
}

struct Inner {
    file: Option<File>,
    written: u64,
    cap: u64,
    truncated: bool,
    tail: VecDeque<u8>,
}

impl Log {
    /// Creates (truncates) the log file, with its parent directories.
    pub fn create(path: &Path, cap: u64) -> Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io("creating the log directory", parent, e))?;
        }
        // Whatever an earlier (hostile) build left at this path, a FIFO or a link, is replaced, never
        // opened: the workspace is writable by the repository's build scripts.
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
            Ok(_) => std::fs::remove_file(path),
            Err(_) => Ok(()),
        }
        .map_err(|e| Error::io("clearing the log file", path, e))?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| Error::io("creating the log file", path, e))?;
        Ok(Self::with_file(Some(file), cap))
    }

    /// A log kept only in memory (its tail); for tests and callers without a file.
    pub fn in_memory() -> Self {
        Self::with_file(None, 0)
    }

    fn with_file(file: Option<File>, cap: u64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                file,
                written: 0,
                cap,
                truncated: false,
                tail: VecDeque::with_capacity(TAIL_BYTES),
            }),
        }
    }

    /// A line of our own ("==> step"), so the log reads as a narrative of what ran.
    pub fn step(&self, message: &str) {
        tracing::info!(step = message, "compiler step");
        self.append(format!("==> {message}\n").as_bytes());
    }

    /// Raw bytes from a child process.
    pub fn append(&self, bytes: &[u8]) {
        // A poisoned lock only means another writer panicked mid-append; the log is still usable.
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.push_tail(bytes);
        let room = inner.cap.saturating_sub(inner.written);
        let take = usize::try_from(room).unwrap_or(usize::MAX).min(bytes.len());
        let cap = inner.cap;
        let mut truncated_now = false;
        if let Some(file) = inner.file.as_mut() {
            // A log write failure must not fail the build; the tail still reaches the report.
            let _ = file.write_all(&bytes[..take]);
            if take < bytes.len() {
                truncated_now = true;
            }
        }
        inner.written += take as u64;
        if truncated_now && !inner.truncated {
            inner.truncated = true;
            if let Some(file) = inner.file.as_mut() {
                let _ = writeln!(
                    file,
                    "\n[log truncated at {cap} bytes; the end is in the report]"
                );
            }
        }
    }

    /// The last bytes of the log as text (lossy: a cut may split a UTF-8 sequence).
    pub fn tail(&self) -> String {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (a, b) = inner.tail.as_slices();
        let mut bytes = Vec::with_capacity(a.len() + b.len());
        bytes.extend_from_slice(a);
        bytes.extend_from_slice(b);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn flush(&self) {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(file) = inner.file.as_mut() {
            let _ = file.flush();
            let _ = file.sync_all();
        }
    }
}

impl Inner {
    fn push_tail(&mut self, bytes: &[u8]) {
        let keep = &bytes[bytes.len().saturating_sub(TAIL_BYTES)..];
        let overflow = (self.tail.len() + keep.len()).saturating_sub(TAIL_BYTES);
        self.tail.drain(..overflow);
        self.tail.extend(keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_capped_and_the_tail_keeps_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/x.log");
        let log = Log::create(&path, 100).unwrap();
        for i in 0..10_000 {
            log.append(format!("line {i}\n").as_bytes());
        }
        log.flush();
        let file = std::fs::read_to_string(&path).unwrap();
        assert!(file.starts_with("line 0\n"));
        assert!(file.contains("[log truncated at 100 bytes"));
        assert!(file.len() < 200, "{}", file.len());
        let tail = log.tail();
        assert!(tail.ends_with("line 9999\n"));
        assert!(tail.len() <= TAIL_BYTES);
    }
}
