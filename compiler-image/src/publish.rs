//! Publishing a module into the cache: `<cache>/wasm/<sha256>.wasm`, written to a temporary file in
//! the same directory, fsynced, then renamed into place, so a reader (an executor pod) sees either
//! no file or the whole module, never a prefix — even if this pod dies mid-write.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn module_path(cache: &Path, sha256: &str) -> PathBuf {
    cache.join("wasm").join(format!("{sha256}.wasm"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub path: PathBuf,
    /// The same module was already in the cache (another build of the same code); nothing was written.
    pub already_present: bool,
}

/// Publishes `bytes` (whose sha256 is `sha256`). Idempotent: an existing file with the same
/// content is left alone; a file with other content (a torn or tampered copy) is replaced.
pub fn publish(cache: &Path, sha256: &str, bytes: &[u8]) -> Result<Published> {
    let dir = cache.join("wasm");
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io("creating the cache directory", &dir, e))?;
    let path = module_path(cache, sha256);
    if let Ok(existing) = std::fs::read(&path)
        && sha256_hex(&existing) == sha256
    {
        return Ok(Published {
            path,
            already_present: true,
        });
    }
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{sha256}."))
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(|e| Error::io("creating a temporary file in", &dir, e))?;
    temp.write_all(bytes)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|e| Error::io("writing the module to", temp.path().to_path_buf(), e))?;
    // Executor pods only read the module.
    set_mode(temp.path(), 0o644)?;
    temp.persist(&path)
        .map_err(|e| Error::io("renaming the module into", &path, e.error))?;
    // The rename is durable only once the directory entry is.
    if let Ok(directory) = std::fs::File::open(&dir) {
        let _ = directory.sync_all();
    }
    Ok(Published {
        path,
        already_present: false,
    })
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("setting the module's permissions", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishing_is_idempotent_and_repairs_a_corrupt_copy() {
        let cache = tempfile::tempdir().unwrap();
        let bytes = b"\0asm\x01\0\0\0";
        let sha = sha256_hex(bytes);
        let first = publish(cache.path(), &sha, bytes).unwrap();
        assert!(!first.already_present);
        assert_eq!(
            first.path,
            cache.path().join("wasm").join(format!("{sha}.wasm"))
        );
        assert_eq!(std::fs::read(&first.path).unwrap(), bytes);
        let second = publish(cache.path(), &sha, bytes).unwrap();
        assert!(second.already_present);

        std::fs::write(&first.path, b"torn").unwrap();
        let third = publish(cache.path(), &sha, bytes).unwrap();
        assert!(!third.already_present);
        assert_eq!(std::fs::read(&third.path).unwrap(), bytes);
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(cache.path().join("wasm"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
