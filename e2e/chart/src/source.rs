//! What the operator's source code says the chart must grant and configure, read from the files
//! themselves so the chart cannot silently fall behind the code.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::Result;

/// `operator/src`.
pub fn operator_src() -> PathBuf {
    crate::repo_root().join("operator/src")
}

/// Every `.rs` file under `dir`, sorted.
pub fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| crate::Error::Read {
            path: dir.display().to_string(),
            source,
        })?;
        for entry in entries {
            let path = entry
                .map_err(|source| crate::Error::Read {
                    path: dir.display().to_string(),
                    source,
                })?
                .path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The Kubernetes kinds the code opens an `Api<Kind>` for, with the files that do. Generic
/// parameters (`Api<K>`) are left out: the concrete kinds appear where they are instantiated.
pub fn api_kinds(dir: &Path) -> Result<Vec<(String, Vec<String>)>> {
    let mut kinds: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for file in rust_files(dir)? {
        let text = crate::read(&file)?;
        let shown = file
            .strip_prefix(crate::repo_root())
            .unwrap_or(&file)
            .display()
            .to_string();
        for kind in api_kinds_in(&text) {
            kinds.entry(kind).or_default().insert(shown.clone());
        }
    }
    Ok(kinds
        .into_iter()
        .map(|(kind, files)| (kind, files.into_iter().collect()))
        .collect())
}

/// The `Kind` of each `Api<Kind>` / `Api::<Kind>` in `text`.
pub fn api_kinds_in(text: &str) -> BTreeSet<String> {
    let mut kinds = BTreeSet::new();
    for (at, _) in text.match_indices("Api") {
        // A word of its own: not `SomeApi<…>`.
        if text[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let rest = &text[at + 3..];
        let rest = rest.strip_prefix("::").unwrap_or(rest);
        let Some(rest) = rest.strip_prefix('<') else {
            continue;
        };
        let kind: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let generic = kind.len() <= 1 || kind == "Self";
        if !generic && kind.starts_with(|c: char| c.is_ascii_uppercase()) {
            kinds.insert(kind);
        }
    }
    kinds
}

/// The environment variables the operator's command line reads (`env = "NAME"` in clap attributes)
/// across `dir`.
pub fn declared_env(dir: &Path) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for file in rust_files(dir)? {
        names.extend(declared_env_in(&crate::read(&file)?));
    }
    Ok(names)
}

pub fn declared_env_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("env = \"") {
        let rest = &text[at + "env = \"".len()..];
        if let Some(end) = rest.find('"') {
            names.insert(rest[..end].to_string());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_concrete_api_kinds_only() {
        let text = "let a: Api<Pod> = Api::namespaced(c, ns);\nlet b = Api::<Lease>::all(c);\n\
                    fn f<K>(api: &Api<K>) {}\nstruct X { api: Api<ExecutionRequest> }\n\
                    let y: MyApi<Secret>; impl Foo for Api<Self> {}";
        assert_eq!(
            api_kinds_in(text).into_iter().collect::<Vec<_>>(),
            ["ExecutionRequest", "Lease", "Pod"]
        );
    }

    #[test]
    fn finds_clap_env_names() {
        let text =
            r#"#[arg(long, env = "OUTLAYER_NAMESPACE")] x: String, #[arg(env = "POD_NAME")] y"#;
        assert_eq!(
            declared_env_in(text).into_iter().collect::<Vec<_>>(),
            ["OUTLAYER_NAMESPACE", "POD_NAME"]
        );
    }
}
