//! The guest's stdout and stderr: in-memory, bounded, and readable by the executor afterwards.

use std::any::Any;
use std::io::IoSlice;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use wasmi_wasi::wasi_common::file::{FdFlags, FileType};
use wasmi_wasi::wasi_common::{Error, WasiFile};

/// The stderr tail kept as error text; the whole result message must fit in 4096 bytes.
pub const STDERR_TAIL_BYTES: usize = 4096;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a byte buffer inconsistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    overflowed: bool,
}

/// Stdout capped at the output limit. Writing past the limit traps the guest at once: an errno
/// would let a guest that ignores write errors keep spinning until fuel or time runs out.
#[derive(Debug, Clone)]
pub struct CappedStdout {
    captured: Arc<Mutex<Captured>>,
    limit: u64,
}

impl CappedStdout {
    pub fn new(limit: u64) -> Self {
        Self {
            captured: Arc::default(),
            limit,
        }
    }

    /// Whether the guest tried to write past the limit.
    pub fn overflowed(&self) -> bool {
        lock(&self.captured).overflowed
    }

    /// Everything written so far, leaving the buffer empty.
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut lock(&self.captured).bytes)
    }
}

#[async_trait::async_trait]
impl WasiFile for CappedStdout {
    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn get_filetype(&self) -> Result<FileType, Error> {
        Ok(FileType::Pipe)
    }

    async fn get_fdflags(&self) -> Result<FdFlags, Error> {
        Ok(FdFlags::APPEND)
    }

    async fn write_vectored<'a>(&self, bufs: &[IoSlice<'a>]) -> Result<u64, Error> {
        let mut captured = lock(&self.captured);
        let len: u64 = bufs.iter().map(|buf| buf.len() as u64).sum();
        if captured.bytes.len() as u64 + len > self.limit {
            captured.overflowed = true;
            return Err(Error::trap(anyhow::anyhow!(
                "output limit of {} bytes exceeded",
                self.limit
            )));
        }
        for buf in bufs {
            captured.bytes.extend_from_slice(buf);
        }
        Ok(len)
    }
}

/// Stderr keeping only its last [`STDERR_TAIL_BYTES`]: the end of a log says why a guest failed.
#[derive(Debug, Clone, Default)]
pub struct StderrTail {
    tail: Arc<Mutex<Vec<u8>>>,
}

impl StderrTail {
    pub fn new() -> Self {
        Self::default()
    }

    /// The kept tail.
    pub fn contents(&self) -> Vec<u8> {
        lock(&self.tail).clone()
    }
}

#[async_trait::async_trait]
impl WasiFile for StderrTail {
    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn get_filetype(&self) -> Result<FileType, Error> {
        Ok(FileType::Pipe)
    }

    async fn get_fdflags(&self) -> Result<FdFlags, Error> {
        Ok(FdFlags::APPEND)
    }

    async fn write_vectored<'a>(&self, bufs: &[IoSlice<'a>]) -> Result<u64, Error> {
        let mut tail = lock(&self.tail);
        let mut len = 0u64;
        for buf in bufs {
            len += buf.len() as u64;
            let keep = &buf[buf.len().saturating_sub(STDERR_TAIL_BYTES)..];
            tail.extend_from_slice(keep);
        }
        let excess = tail.len().saturating_sub(STDERR_TAIL_BYTES);
        tail.drain(..excess);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        // The futures here never suspend, so one poll with a no-op waker completes them.
        let mut future = std::pin::pin!(future);
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(output) => output,
            std::task::Poll::Pending => panic!("in-memory write suspended"),
        }
    }

    #[test]
    fn stdout_traps_past_the_limit_and_keeps_what_fit() {
        let stdout = CappedStdout::new(5);
        assert_eq!(
            block_on(stdout.write_vectored(&[IoSlice::new(b"abc")])).unwrap(),
            3
        );
        assert!(!stdout.overflowed());
        let error = block_on(stdout.write_vectored(&[IoSlice::new(b"def")])).unwrap_err();
        assert!(error.to_string().contains("output limit of 5 bytes"));
        assert!(stdout.overflowed());
        assert_eq!(stdout.take(), b"abc");
    }

    #[test]
    fn stderr_keeps_only_the_tail() {
        let stderr = StderrTail::new();
        let big = vec![b'a'; STDERR_TAIL_BYTES + 10];
        block_on(stderr.write_vectored(&[IoSlice::new(&big)])).unwrap();
        block_on(stderr.write_vectored(&[IoSlice::new(b"END")])).unwrap();
        let kept = stderr.contents();
        assert_eq!(kept.len(), STDERR_TAIL_BYTES);
        assert!(kept.ends_with(b"aEND"));
    }
}
