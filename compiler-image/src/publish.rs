//! Publishing a module into the cache: `<cache>/wasm/<sha256>.wasm`, written to a temporary file in
//! the same directory, fsynced, then renamed into place, so a reader (an executor pod) sees either
//! no file or the whole module, never a prefix — even if this pod dies mid-write.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
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
    match read_regular_file(&path, u64::MAX) {
        Ok(existing) if sha256_hex(&existing) == sha256 => {
            return Ok(Published {
                path,
                already_present: true,
            });
        }
        // A torn or tampered copy is replaced by the rename below; a directory would block it.
        Ok(_) => {}
        Err(_) => {
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                std::fs::remove_dir_all(&path)
                    .map_err(|e| Error::io("removing a directory in place of", &path, e))?;
            }
        }
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

/// Reads `path` only if it is a regular file of at most `max_bytes`: never through a symlink, never
/// blocking on a FIFO or device (`O_NOFOLLOW | O_NONBLOCK`, then `fstat`). What the build step left
/// for the publish step, and what sits in the shared cache, are read this way.
pub fn read_regular_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io("opening", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io("reading the metadata of", path, e))?;
    if !meta.file_type().is_file() {
        return Err(Error::InvalidModule(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if meta.len() > max_bytes {
        return Err(Error::ModuleTooLarge {
            size: meta.len(),
            limit: max_bytes,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    (&mut file)
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("reading", path, e))?;
    if bytes.len() as u64 > max_bytes {
        return Err(Error::ModuleTooLarge {
            size: bytes.len() as u64,
            limit: max_bytes,
        });
    }
    Ok(bytes)
}

/// Replaces whatever is at `path` (a file, a link, a FIFO, a directory someone planted) with a new
/// regular file holding `bytes`, created exclusively so nothing can be aimed elsewhere.
pub fn write_fresh(path: &Path, bytes: &[u8]) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    }
    .map_err(|e| Error::io("clearing", path, e))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| Error::io("creating", path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("writing", path, e))
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

    fn mkfifo(path: &Path) {
        let status = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[test]
    fn only_regular_files_are_read_and_planted_entries_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = b"\0asm\x01\0\0\0";
        let sha = sha256_hex(bytes);
        let wasm = dir.path().join("wasm");
        std::fs::create_dir_all(&wasm).unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"secret").unwrap();
        // A symlink is not followed.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(read_regular_file(&link, 1024).is_err());
        // A FIFO is refused at once instead of blocking.
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        assert!(read_regular_file(&fifo, 1024).is_err());
        assert!(read_regular_file(&dir.path().join("wasm"), 1024).is_err());
        assert!(matches!(
            read_regular_file(&target, 3),
            Err(Error::ModuleTooLarge { .. })
        ));
        assert_eq!(read_regular_file(&target, 6).unwrap(), b"secret");

        // A FIFO, a link or a directory where the module goes is replaced, the link's target untouched.
        for plant in ["fifo", "link", "dir"] {
            let path = module_path(dir.path(), &sha);
            match plant {
                "fifo" => mkfifo(&path),
                "link" => std::os::unix::fs::symlink(&target, &path).unwrap(),
                _ => std::fs::create_dir_all(path.join("x")).unwrap(),
            }
            let published = publish(dir.path(), &sha, bytes).unwrap();
            assert_eq!(
                read_regular_file(&published.path, 1024).unwrap(),
                bytes,
                "{plant}"
            );
            assert_eq!(std::fs::read(&target).unwrap(), b"secret");
            std::fs::remove_file(&published.path).unwrap();
        }
        let staged = dir.path().join("staged");
        std::os::unix::fs::symlink(&target, &staged).unwrap();
        write_fresh(&staged, bytes).unwrap();
        assert_eq!(read_regular_file(&staged, 1024).unwrap(), bytes);
        assert_eq!(std::fs::read(&target).unwrap(), b"secret");
    }
}
