//! Free TCP ports on 127.0.0.1.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

use crate::{Error, Result};

/// Ports already handed out in this process: the OS may offer a port again as soon as our probe
/// listener closes, and clusters of parallel tests must not collide with each other.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A port that was free a moment ago and is not used by another cluster of this process. Another
/// process can still take it before our component binds; start-up then fails with a clear log.
pub fn free_port() -> Result<u16> {
    for _ in 0..100 {
        let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(|source| Error::Io {
            what: "bind 127.0.0.1:0 to find a free port".into(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| Error::Io {
                what: "read the address of a probe listener".into(),
                source,
            })?
            .port();
        let mut guard = HANDED_OUT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    Err(Error::NoFreePort)
}
