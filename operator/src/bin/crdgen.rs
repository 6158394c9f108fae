//! Writes the CRDs to a directory (default `crds/`), one `<plural>.<group>.yaml` each; with `--check`,
//! fails when the files differ from what the code generates (CI runs it through a test).

use std::path::PathBuf;
use std::process::ExitCode;

use outlayer_operator::crd;

fn main() -> ExitCode {
    let mut check = false;
    let mut dir = PathBuf::from("crds");
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("usage: crdgen [--check] [DIR]  (DIR defaults to crds/)");
                return ExitCode::SUCCESS;
            }
            other => dir = PathBuf::from(other),
        }
    }
    match run(&dir, check) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("crdgen: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(dir: &std::path::Path, check: bool) -> Result<(), String> {
    if !check {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let mut stale = Vec::new();
    for definition in crd::all() {
        let path = dir.join(crd::file_name(&definition));
        let yaml = crd::to_yaml(&definition)
            .map_err(|e| format!("serializing {}: {e}", path.display()))?;
        if check {
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current != yaml {
                stale.push(path.display().to_string());
            }
        } else {
            std::fs::write(&path, yaml).map_err(|e| format!("writing {}: {e}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    if stale.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "out of date: {}; run `cargo run -p outlayer-operator --bin crdgen`",
            stale.join(", ")
        ))
    }
}
