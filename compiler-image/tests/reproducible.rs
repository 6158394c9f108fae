//! Reproducible builds, for real: every example guest, fetched and built by the binary in two
//! workspaces at different paths (different depth and length), gives the same module bytes; so
//! does a guest whose build script generates code into `OUT_DIR` (an absolute path under the
//! workspace that rustc writes into panic locations — without the path remapping the two
//! modules differ). Guests are std-only: no network.

mod common;

use std::path::{Path, PathBuf};

use common::compiler;
/// git for the fixtures with a fixed identity and dates, so commits are reproducible.
use outlayer_testkit::reproducible_git as git;
use serde_json::Value;

/// A repository's files: path → content.
type Files = Vec<(PathBuf, Vec<u8>)>;

const EXAMPLES: &[&str] = &[
    "echo",
    "env-reader",
    "json-transform",
    "random",
    "sha256-loop",
];

/// A repository at `<root>/repos/<name>` with `files` (path → content), committed on `main`.
fn make_repo(root: &Path, name: &str, files: &Files) -> String {
    let repo = root.join("repos").join(name);
    for (path, content) in files {
        let path = repo.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", name]);
    format!("file://{}", repo.display())
}

/// An example's sources with a standalone manifest (the example's own inherits from our workspace).
fn example_files(name: &str) -> Files {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
        .join("src");
    let mut files = vec![(
        PathBuf::from("Cargo.toml"),
        format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[dependencies]\n")
            .into_bytes(),
    )];
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        files.push((
            Path::new("src").join(entry.file_name()),
            std::fs::read(entry.path()).unwrap(),
        ));
    }
    files
}

/// A guest whose build script writes code into OUT_DIR: the module then names that file in a
/// panic location (`expect` is `#[track_caller]`).
fn generated_code_files() -> Files {
    vec![
        (
            PathBuf::from("Cargo.toml"),
            b"[package]\nname = \"generated\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[dependencies]\n".to_vec(),
        ),
        (
            PathBuf::from("build.rs"),
            br#"fn main() {
    let out = std::env::var("OUT_DIR").unwrap();
    std::fs::write(
        format!("{out}/generated.rs"),
        "pub fn first(bytes: &[u8]) -> u8 { *bytes.first().expect(\"empty input\") }\n",
    )
    .unwrap();
}
"#
            .to_vec(),
        ),
        (
            PathBuf::from("src/main.rs"),
            br#"include!(concat!(env!("OUT_DIR"), "/generated.rs"));
fn main() {
    let mut input = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut input).unwrap();
    println!("{}", first(&input));
}
"#
            .to_vec(),
        ),
    ]
}

/// Runs the binary, which must succeed; its report.
fn run(args: &[&str], result: &Path) -> Value {
    let (code, report) = compiler(args, result);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    report
}

/// Fetches and builds `repo` in `workspace`; returns the build report and the module's bytes.
fn fetch_and_build(root: &Path, repo: &str, workspace: &Path) -> (Value, Vec<u8>) {
    let allow = format!("file://{}/", root.join("repos").display());
    run(
        &[
            "fetch",
            "--repo",
            repo,
            "--commit",
            "main",
            "--workspace",
            workspace.to_str().unwrap(),
            "--allow-repo-prefix",
            &allow,
        ],
        &workspace.with_extension("fetch.json"),
    );
    let cache = workspace.with_extension("cache");
    let report = run(
        &[
            "build",
            "--workspace",
            workspace.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
        ],
        &workspace.with_extension("build.json"),
    );
    let sha256 = report["sha256"].as_str().unwrap();
    let module = std::fs::read(cache.join("wasm").join(format!("{sha256}.wasm"))).unwrap();
    (report, module)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn every_example_guest_builds_to_the_same_bytes_in_two_workspaces() {
    let root = tempfile::tempdir().unwrap();
    let mut guests: Vec<(&str, Files)> = EXAMPLES
        .iter()
        .map(|name| (*name, example_files(name)))
        .collect();
    guests.push(("generated", generated_code_files()));
    for (name, files) in guests {
        let repo = make_repo(root.path(), name, &files);
        let first_ws = root.path().join("a").join(name);
        let second_ws = root
            .path()
            .join("a-much-longer-directory/and/deeper")
            .join(name);
        let (first, first_module) = fetch_and_build(root.path(), &repo, &first_ws);
        let (second, second_module) = fetch_and_build(root.path(), &repo, &second_ws);
        assert_eq!(
            first["sha256"], second["sha256"],
            "{name} is not reproducible: {first} vs {second}"
        );
        assert_eq!(first_module, second_module, "{name}");
        // The build identity: the toolchain and the compiler's version.
        assert!(
            first["toolchain"]
                .as_str()
                .is_some_and(|t| t.starts_with("rustc ")),
            "{first}"
        );
        assert_eq!(
            first["compiler"],
            concat!("outlayer-compiler ", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(first["toolchain"], second["toolchain"]);
        // No trace of either workspace's location.
        for workspace in [&first_ws, &second_ws] {
            assert!(
                !contains(&first_module, workspace.to_str().unwrap().as_bytes()),
                "{name} names {}",
                workspace.display()
            );
        }
        if name == "generated" {
            assert!(
                contains(
                    &first_module,
                    b"/outlayer/target/wasm32-wasip1/release/build/"
                ),
                "the generated file's path is remapped under /outlayer"
            );
        }
    }
}
