//! What a built artifact must be before it enters the cache: a valid core wasm module, no larger
//! than the limit, importing only WASI preview 1 and exporting the `_start` command entry point —
//! exactly what the executor can link and run.

use wasmparser::{Encoding, ExternalKind, Parser, Payload, Validator, WasmFeatures};

use crate::error::{Error, Result};

pub const WASI_MODULE: &str = "wasi_snapshot_preview1";
pub const ENTRY_POINT: &str = "_start";
/// The executor's default `--max-module-bytes`.
pub const DEFAULT_MAX_MODULE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSummary {
    pub imports: usize,
    pub exports: usize,
}

pub fn validate_module(bytes: &[u8], max_bytes: u64) -> Result<ModuleSummary> {
    let size = bytes.len() as u64;
    if size > max_bytes {
        return Err(Error::ModuleTooLarge {
            size,
            limit: max_bytes,
        });
    }
    Validator::new_with_features(WasmFeatures::default())
        .validate_all(bytes)
        .map_err(|e| Error::InvalidModule(format!("not a valid wasm module: {e}")))?;

    let mut summary = ModuleSummary {
        imports: 0,
        exports: 0,
    };
    let mut foreign = Vec::new();
    let mut has_start = false;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| Error::InvalidModule(e.to_string()))?;
        match payload {
            Payload::Version { encoding, .. } if encoding != Encoding::Module => {
                return Err(Error::InvalidModule(
                    "a component, not a core module; build for wasm32-wasip1".to_string(),
                ));
            }
            Payload::ImportSection(reader) => {
                for import in reader {
                    let import = import.map_err(|e| Error::InvalidModule(e.to_string()))?;
                    summary.imports += 1;
                    if import.module != WASI_MODULE {
                        foreign.push(format!("{}::{}", import.module, import.name));
                    }
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(|e| Error::InvalidModule(e.to_string()))?;
                    summary.exports += 1;
                    has_start |= export.name == ENTRY_POINT && export.kind == ExternalKind::Func;
                }
            }
            _ => {}
        }
    }
    if !foreign.is_empty() {
        let shown: Vec<&str> = foreign.iter().take(8).map(String::as_str).collect();
        return Err(Error::InvalidModule(format!(
            "imports from modules other than {WASI_MODULE}: {}{}",
            shown.join(", "),
            if foreign.len() > shown.len() {
                ", …"
            } else {
                ""
            }
        )));
    }
    if !has_start {
        return Err(Error::InvalidModule(format!(
            "no exported function {ENTRY_POINT:?}: build a binary (fn main), not a library"
        )));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(text: &str) -> Vec<u8> {
        wat::parse_str(text).unwrap()
    }

    const WASI_COMMAND: &str = r#"(module
        (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
        (memory (export "memory") 1)
        (func (export "_start")))"#;

    #[test]
    fn a_wasi_command_passes() {
        let summary = validate_module(&module(WASI_COMMAND), DEFAULT_MAX_MODULE_BYTES).unwrap();
        assert_eq!(
            summary,
            ModuleSummary {
                imports: 1,
                exports: 2
            }
        );
    }

    #[test]
    fn imports_from_other_modules_are_rejected_and_named() {
        let bytes = module(
            r#"(module
                (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
                (import "env" "host_secret" (func))
                (func (export "_start")))"#,
        );
        let err = validate_module(&bytes, DEFAULT_MAX_MODULE_BYTES).unwrap_err();
        assert_eq!(err.kind(), "invalidModule");
        assert!(err.to_string().contains("env::host_secret"), "{err}");
    }

    #[test]
    fn a_module_without_start_is_rejected() {
        let bytes = module(r#"(module (func (export "main")))"#);
        let err = validate_module(&bytes, DEFAULT_MAX_MODULE_BYTES).unwrap_err();
        assert!(err.to_string().contains("_start"), "{err}");
        let bytes = module(r#"(module (global (export "_start") i32 (i32.const 0)))"#);
        assert!(validate_module(&bytes, DEFAULT_MAX_MODULE_BYTES).is_err());
    }

    #[test]
    fn size_and_garbage_are_rejected() {
        let bytes = module(WASI_COMMAND);
        let err = validate_module(&bytes, bytes.len() as u64 - 1).unwrap_err();
        assert_eq!(err.kind(), "moduleTooLarge");
        let err = validate_module(b"\0asm\x01\0\0\0garbage", DEFAULT_MAX_MODULE_BYTES).unwrap_err();
        assert_eq!(err.kind(), "invalidModule");
        let err = validate_module(b"#!/bin/sh\n", DEFAULT_MAX_MODULE_BYTES).unwrap_err();
        assert_eq!(err.kind(), "invalidModule");
    }

    #[test]
    fn an_invalid_body_is_rejected_by_validation() {
        // Well-formed binary, ill-typed function: only a validator catches it.
        let bytes = module(r#"(module (func (export "_start") (result i32) (i64.const 1)))"#);
        let err = validate_module(&bytes, DEFAULT_MAX_MODULE_BYTES);
        assert!(err.is_err());
    }
}
