//! The `outlayer-compiler` binary end to end on local git repositories: fetch (by branch, tag and
//! SHA), offline build, validation, publication, and the published module running in the
//! executor. Guest crates are std-only, so nothing here needs the network. Nested wasm builds
//! take seconds each, so one built workspace serves many assertions.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::compiler;
use outlayer_executor::{Executor, Job, Limits, SystemEnv};
/// git for the fixtures with a fixed identity and dates, so commits are reproducible.
use outlayer_testkit::reproducible_git as git;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A standalone manifest: the example's own uses workspace inheritance.
fn manifest(name: &str) -> String {
    format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[dependencies]\n"
    )
}

fn echo_source() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/echo/src/main.rs");
    std::fs::read_to_string(&path).unwrap()
}

/// A repository whose `main` holds the echo example (tagged `v1`, annotated) and whose `broken`
/// branch holds a crate that does not compile. Returns (file:// URL, main's SHA, broken's SHA).
fn make_repo(root: &Path) -> (String, String, String) {
    let repo = root.join("repos").join("echo");
    std::fs::create_dir_all(repo.join("src")).unwrap();
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(repo.join("Cargo.toml"), manifest("echo")).unwrap();
    std::fs::write(repo.join("src/main.rs"), echo_source()).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "echo"]);
    git(&repo, &["tag", "-a", "v1", "-m", "first release"]);
    let main = git(&repo, &["rev-parse", "HEAD"]);

    git(&repo, &["checkout", "--quiet", "-b", "broken"]);
    std::fs::write(
        repo.join("src/main.rs"),
        "fn main() {\n    let answer: u32 = \"forty-two\";\n    println!(\"{answer}\");\n}\n",
    )
    .unwrap();
    git(&repo, &["commit", "--quiet", "-am", "broken"]);
    let broken = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["checkout", "--quiet", "main"]);
    (format!("file://{}", repo.display()), main, broken)
}

fn allow_prefix(root: &Path) -> String {
    format!("file://{}/", root.join("repos").display())
}

fn fetch(root: &Path, repo: &str, commit: &str, workspace: &Path) -> Value {
    let result = workspace.with_extension("fetch.json");
    let (code, report) = compiler(
        &[
            "fetch",
            "--repo",
            repo,
            "--commit",
            commit,
            "--workspace",
            workspace.to_str().unwrap(),
            "--allow-repo-prefix",
            &allow_prefix(root),
        ],
        &result,
    );
    assert_eq!(code, 0, "{report}");
    report
}

fn build(workspace: &Path, cache: &Path, extra: &[&str]) -> Value {
    let result = workspace.with_extension("build.json");
    let mut args = vec![
        "build",
        "--workspace",
        workspace.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (code, report) = compiler(&args, &result);
    assert_eq!(code, 0, "{report}");
    report
}

fn run_in_executor(wasm: &[u8], input: &[u8]) -> Vec<u8> {
    let executor = Executor::new().unwrap();
    let secrets = Default::default();
    let system = SystemEnv::default();
    let execution = executor.run(&Job {
        wasm,
        input,
        secrets: &secrets,
        system: &system,
        limits: Limits::default(),
        deterministic: None,
    });
    match execution.outcome {
        Ok(stdout) => stdout,
        Err(fault) => panic!(
            "guest failed: {fault}; stderr: {}",
            String::from_utf8_lossy(&execution.stderr)
        ),
    }
}

#[test]
fn echo_is_fetched_by_branch_tag_and_sha_built_offline_published_and_runs() {
    let root = tempfile::tempdir().unwrap();
    let (repo, main_sha, _) = make_repo(root.path());
    let cache = root.path().join("cache");

    // By branch: resolves to main's full SHA.
    let by_branch = root.path().join("work/by-branch");
    let report = fetch(root.path(), &repo, "main", &by_branch);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["resolvedCommit"], main_sha.as_str());
    assert_eq!(report["lockfileGenerated"], true);
    assert_eq!(report["vendoredCrates"], 0);
    assert!(by_branch.join("src/Cargo.lock").is_file());
    assert!(by_branch.join(".cargo/config.toml").is_file());
    assert!(by_branch.join("logs/fetch.log").is_file());

    // By annotated tag (peeled to the commit) and by SHA (upper case accepted, reported lower).
    let by_tag = root.path().join("work/by-tag");
    let report = fetch(root.path(), &repo, "v1", &by_tag);
    assert_eq!(report["resolvedCommit"], main_sha.as_str(), "{report}");
    let by_sha = root.path().join("work/by-sha");
    let report = fetch(root.path(), &repo, &main_sha.to_uppercase(), &by_sha);
    assert_eq!(report["resolvedCommit"], main_sha.as_str(), "{report}");
    assert_eq!(
        std::fs::read(by_sha.join("src/src/main.rs")).unwrap(),
        echo_source().as_bytes()
    );

    // Build: the module lands in the cache under its sha256.
    let report = build(&by_branch, &cache, &["--commit", &main_sha]);
    assert_eq!(report["ok"], true, "{report}");
    let sha256 = report["sha256"].as_str().unwrap().to_string();
    let module = cache.join("wasm").join(format!("{sha256}.wasm"));
    let wasm = std::fs::read(&module).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&wasm)), sha256);
    assert_eq!(report["sizeBytes"], wasm.len() as u64);
    assert_eq!(report["resolvedCommit"], main_sha.as_str());
    assert_eq!(report["bin"], "echo");
    assert!(report["compileTimeMs"].as_u64().unwrap() > 0);
    assert!(
        by_branch
            .join("target/wasm32-wasip1/release/echo.wasm")
            .is_file()
    );
    assert!(by_branch.join("logs/build.log").is_file());

    // The executor runs the published module.
    assert_eq!(
        run_in_executor(&wasm, b"hello, compiler\n"),
        b"hello, compiler\n"
    );

    // A rebuild of the same workspace publishes the same module again without rewriting it.
    let modified = std::fs::metadata(&module).unwrap().modified().unwrap();
    let again = build(&by_branch, &cache, &[]);
    assert_eq!(again["ok"], true, "{again}");
    assert_eq!(again["sha256"], sha256.as_str());
    assert_eq!(
        std::fs::metadata(&module).unwrap().modified().unwrap(),
        modified
    );
    let entries = std::fs::read_dir(cache.join("wasm")).unwrap().count();
    assert_eq!(entries, 1, "temporary files left in the cache");

    // As the operator's build Job runs it: the build (user code) stages into a directory of its
    // own, `publish` (no user code) validates and publishes what it finds there.
    let out = root.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let staged_cache = root.path().join("staged-cache");
    let staged = compiler(
        &[
            "build",
            "--workspace",
            by_branch.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &root.path().join("staged.json"),
    )
    .1;
    assert_eq!(staged["ok"], true, "{staged}");
    assert_eq!(staged["sha256"], sha256.as_str());
    assert!(!staged_cache.exists(), "the build step publishes nothing");
    assert_eq!(std::fs::read(out.join("module.wasm")).unwrap(), wasm);
    let publish = |from: &Path| {
        compiler(
            &[
                "publish",
                "--from",
                from.to_str().unwrap(),
                "--cache",
                staged_cache.to_str().unwrap(),
                "--workspace",
                root.path().join("publish").to_str().unwrap(),
            ],
            &root.path().join("publish.json"),
        )
        .1
    };
    let published = publish(&out);
    assert_eq!(published["ok"], true, "{published}");
    assert_eq!(published["sha256"], sha256.as_str());
    assert_eq!(published["compileTimeMs"], staged["compileTimeMs"]);
    assert_eq!(
        std::fs::read(staged_cache.join("wasm").join(format!("{sha256}.wasm"))).unwrap(),
        wasm
    );
    // What a build script could leave in its place is refused, not followed or waited on.
    let other = staged_cache.join("wasm").join(format!("{sha256}.wasm"));
    std::fs::remove_file(out.join("module.wasm")).unwrap();
    std::os::unix::fs::symlink(&other, out.join("module.wasm")).unwrap();
    let refused = publish(&out);
    assert_eq!(refused["ok"], false, "{refused}");
    std::fs::remove_file(out.join("module.wasm")).unwrap();
    let fifo = Command::new("mkfifo")
        .arg(out.join("module.wasm"))
        .status()
        .unwrap();
    assert!(fifo.success());
    let refused = publish(&out);
    assert_eq!(refused["ok"], false, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("not a regular file"),
        "{refused}"
    );
    std::fs::remove_file(out.join("module.wasm")).unwrap();
    std::fs::write(out.join("module.wasm"), b"\0asm\x01\0\0\0 tampered").unwrap();
    let refused = publish(&out);
    assert_eq!(refused["ok"], false, "{refused}");
    // A failed build's report is passed on as it is.
    std::fs::write(
        out.join("build.json"),
        r#"{"v":1,"ok":false,"error":"cargo build failed: x","errorKind":"compile","compileTimeMs":5,"timeMs":6}"#,
    )
    .unwrap();
    let passed_on = publish(&out);
    assert_eq!(passed_on["errorKind"], "compile", "{passed_on}");
    assert_eq!(passed_on["compileTimeMs"], 5);

    // Guards of the build: another commit than expected, a binary that does not exist, a
    // workspace that was never fetched, an unsupported target.
    let report = build(&by_branch, &cache, &["--commit", &"0".repeat(40)]);
    assert_eq!(report["errorKind"], "notFetched", "{report}");
    let report = build(&by_branch, &cache, &["--bin", "nope"]);
    assert_eq!(report["errorKind"], "binary", "{report}");
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("echo (package echo)"),
        "{report}"
    );
    let report = build(&root.path().join("work/never-fetched"), &cache, &[]);
    assert_eq!(report["errorKind"], "notFetched", "{report}");
    let report = build(&by_branch, &cache, &["--target", "wasm32-unknown-unknown"]);
    assert_eq!(report["errorKind"], "invalidConfig", "{report}");
}

#[test]
fn a_commit_that_does_not_compile_reports_the_compiler_error() {
    let root = tempfile::tempdir().unwrap();
    let (repo, _, broken_sha) = make_repo(root.path());
    let workspace = root.path().join("work/broken");
    let report = fetch(root.path(), &repo, "broken", &workspace);
    assert_eq!(report["resolvedCommit"], broken_sha.as_str(), "{report}");

    let report = build(&workspace, &root.path().join("cache"), &[]);
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["errorKind"], "compile");
    let tail = report["logTail"].as_str().unwrap();
    assert!(tail.contains("error[E0308]: mismatched types"), "{tail}");
    assert!(tail.contains("forty-two"), "{tail}");
    assert!(report.get("sha256").is_none());
    assert!(
        !root.path().join("cache/wasm").exists()
            || std::fs::read_dir(root.path().join("cache/wasm"))
                .unwrap()
                .count()
                == 0
    );
}

#[test]
fn missing_refs_are_reported_after_asking_the_repository() {
    let root = tempfile::tempdir().unwrap();
    let (repo, _, _) = make_repo(root.path());
    let report = fetch(
        root.path(),
        &repo,
        "no-such-branch",
        &root.path().join("work/a"),
    );
    assert_eq!(report["errorKind"], "refNotFound", "{report}");
    let report = fetch(
        root.path(),
        &repo,
        &"ab".repeat(20),
        &root.path().join("work/b"),
    );
    assert_eq!(report["errorKind"], "refNotFound", "{report}");
    assert!(!root.path().join("work/b/fetch.json").exists());
    // The same repository, outside the allow-list.
    let report = fetch(
        &root.path().join("elsewhere"),
        &repo,
        "main",
        &root.path().join("work/c"),
    );
    assert_eq!(report["errorKind"], "repoNotAllowed", "{report}");
}

/// A fetch of `https://github.com/alice/<name>` served from `root/repos/` by a mirror, as the operator
/// runs it in clusters without egress; returns the report.
fn fetch_via_mirror(root: &Path, name: &str, commit: &str, workspace: &Path) -> Value {
    let mirror = format!(
        "https://github.com/alice/=file://{}/",
        root.join("repos").display()
    );
    let result = workspace.with_extension("fetch.json");
    let (code, report) = compiler(
        &[
            "fetch",
            "--repo",
            &format!("https://github.com/alice/{name}"),
            "--commit",
            commit,
            "--workspace",
            workspace.to_str().unwrap(),
            "--allow-repo-prefix",
            "https://github.com/",
            "--git-mirror",
            &mirror,
        ],
        &result,
    );
    assert_eq!(code, 0, "{report}");
    report
}

/// The error reaches the chain: it names the repository as the request did, never the mirror's URL
/// or a path on the platform's volumes.
#[test]
fn fetch_errors_name_the_requested_repository_not_the_mirror_or_paths() {
    let root = tempfile::tempdir().unwrap();
    make_repo(root.path());
    let no_manifest = root.path().join("repos").join("docs");
    std::fs::create_dir_all(&no_manifest).unwrap();
    git(&no_manifest, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(no_manifest.join("README.md"), "no crate here\n").unwrap();
    git(&no_manifest, &["add", "-A"]);
    git(&no_manifest, &["commit", "--quiet", "-m", "docs"]);

    let root_path = root.path().display().to_string();
    for (name, commit, kind) in [
        ("echo", "no-such-branch", "refNotFound"),
        ("echo", "ab".repeat(20).as_str(), "refNotFound"),
        ("docs", "main", "noManifest"),
    ] {
        let workspace = root
            .path()
            .join("work")
            .join(format!("{name}-{kind}-{}", commit.len()));
        let report = fetch_via_mirror(root.path(), name, commit, &workspace);
        assert_eq!(report["errorKind"], kind, "{report}");
        let error = report["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("https://github.com/alice/{name}")),
            "{error}"
        );
        assert!(!error.contains("file://"), "mirror URL leaked: {error}");
        assert!(!error.contains(&root_path), "internal path leaked: {error}");
        assert!(
            !error.contains("/workspace"),
            "internal path leaked: {error}"
        );
    }
}

/// A `git` that records being run: proves hostile input is refused before git starts.
fn tripwire_git(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let marker = dir.join("git-ran");
    let script = dir.join("git");
    std::fs::write(
        &script,
        format!("#!/bin/sh\ntouch '{}'\nexit 1\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, marker)
}

#[test]
fn hostile_repos_and_refs_are_rejected_before_git_runs() {
    let root = tempfile::tempdir().unwrap();
    let (fake_git, marker) = tripwire_git(root.path());
    let injected = root.path().join("injected");
    let upload_pack = format!("--upload-pack=touch {}", injected.display());
    let cases: Vec<(String, String, &str)> = vec![
        (
            "https://github.com/near/echo".into(),
            upload_pack.clone(),
            "invalidRef",
        ),
        (
            "https://github.com/near/echo".into(),
            "-c".into(),
            "invalidRef",
        ),
        (
            "https://github.com/near/echo".into(),
            "main..HEAD".into(),
            "invalidRef",
        ),
        (
            "https://github.com/near/echo".into(),
            "+refs/heads/x:refs/heads/y".into(),
            "invalidRef",
        ),
        (
            "https://github.com/near/../echo".into(),
            "main".into(),
            "invalidRepo",
        ),
        (
            "https://user:token@github.com/near/echo".into(),
            "main".into(),
            "invalidRepo",
        ),
        (
            "https://token@github.com/near/echo".into(),
            "main".into(),
            "invalidRepo",
        ),
        (upload_pack.clone(), "main".into(), "invalidRepo"),
        (
            "ext::sh -c touch% /tmp/x".into(),
            "main".into(),
            "invalidRepo",
        ),
        (
            "https://gitlab.com/near/echo".into(),
            "main".into(),
            "repoNotAllowed",
        ),
        (
            "https://github.com.evil.org/near/echo".into(),
            "main".into(),
            "repoNotAllowed",
        ),
        ("file:///etc".into(), "main".into(), "repoNotAllowed"),
    ];
    for (i, (repo, commit, kind)) in cases.iter().enumerate() {
        let workspace = root.path().join(format!("work/{i}"));
        let result = root.path().join(format!("result-{i}.json"));
        // `=` form: clap must not read a value that starts with '-' as a flag.
        let (code, report) = compiler(
            &[
                "fetch",
                &format!("--repo={repo}"),
                &format!("--commit={commit}"),
                "--workspace",
                workspace.to_str().unwrap(),
                "--git",
                fake_git.to_str().unwrap(),
                "--cargo",
                fake_git.to_str().unwrap(),
            ],
            &result,
        );
        assert_eq!(code, 0, "{repo} {commit}: {report}");
        assert_eq!(report["ok"], false, "{repo} {commit}: {report}");
        assert_eq!(report["errorKind"], *kind, "{repo} {commit}: {report}");
        assert!(!marker.exists(), "git ran for {repo} {commit}");
        assert!(!injected.exists());
        assert!(
            !workspace.join("src").exists(),
            "{repo} {commit}: workspace touched"
        );
    }
    // The tripwire does fire when input is valid, so its silence above means something.
    let (code, report) = compiler(
        &[
            "fetch",
            "--repo=https://github.com/near/echo",
            "--commit=main",
            "--workspace",
            root.path().join("work/valid").to_str().unwrap(),
            "--git",
            fake_git.to_str().unwrap(),
        ],
        &root.path().join("result-valid.json"),
    );
    assert_eq!(code, 0);
    assert_eq!(report["errorKind"], "git", "{report}");
    assert!(marker.exists());
}

#[test]
fn a_module_importing_beyond_wasi_is_refused_by_validation() {
    let wasm = wat::parse_str(
        r#"(module
            (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
            (import "near" "storage_write" (func (param i64 i64)))
            (func (export "_start")))"#,
    )
    .unwrap();
    let err = outlayer_compiler::module::validate_module(&wasm, 1 << 20).unwrap_err();
    assert_eq!(err.kind(), "invalidModule");
    assert!(err.to_string().contains("near::storage_write"), "{err}");
}

/// Where a commit is reachable from, as the fetch reports it: a branch's tip, inside a branch's
/// history, a tag, and a commit only a pull-request ref holds (on no branch: the operator must not
/// treat it as any branch's code).
#[test]
fn the_fetch_reports_which_branch_or_tag_holds_a_commit() {
    let root = tempfile::tempdir().unwrap();
    let (repo, main_sha, broken_sha) = make_repo(root.path());
    let repo_dir = root.path().join("repos/echo");
    // main gets two more commits, so its second is in the history but at no tip.
    std::fs::write(repo_dir.join("README"), "second\n").unwrap();
    git(&repo_dir, &["add", "README"]);
    git(&repo_dir, &["commit", "--quiet", "-m", "second"]);
    let inside = git(&repo_dir, &["rev-parse", "HEAD"]);
    std::fs::write(repo_dir.join("README"), "third\n").unwrap();
    git(&repo_dir, &["commit", "--quiet", "-am", "third"]);
    let tip = git(&repo_dir, &["rev-parse", "HEAD"]);
    // A commit that only refs/pull/1/head holds, as a fork's pull request leaves on GitHub (which
    // serves any commit it holds by SHA).
    git(&repo_dir, &["checkout", "--quiet", "-b", "fork"]);
    std::fs::write(repo_dir.join("README"), "from a fork\n").unwrap();
    git(&repo_dir, &["commit", "--quiet", "-am", "fork"]);
    let pull = git(&repo_dir, &["rev-parse", "HEAD"]);
    git(&repo_dir, &["update-ref", "refs/pull/1/head", &pull]);
    git(&repo_dir, &["checkout", "--quiet", "main"]);
    git(&repo_dir, &["branch", "--quiet", "-D", "fork"]);
    git(
        &repo_dir,
        &["config", "uploadpack.allowAnySHA1InWant", "true"],
    );

    let work = root.path().join("work");
    let rows = [
        ("main", tip.as_str(), Some("refs/heads/main")),
        ("v1", main_sha.as_str(), Some("refs/tags/v1")),
        (tip.as_str(), tip.as_str(), Some("refs/heads/main")),
        // The tip of tag v1 (and deep in main): a tip is found without fetching every branch.
        (main_sha.as_str(), main_sha.as_str(), Some("refs/tags/v1")),
        (inside.as_str(), inside.as_str(), Some("refs/heads/main")),
        (
            broken_sha.as_str(),
            broken_sha.as_str(),
            Some("refs/heads/broken"),
        ),
        (pull.as_str(), pull.as_str(), None),
    ];
    for (index, (reference, commit, reachable_from)) in rows.into_iter().enumerate() {
        let report = fetch(root.path(), &repo, reference, &work.join(index.to_string()));
        assert_eq!(report["ok"], true, "{reference}: {report}");
        assert_eq!(report["resolvedCommit"], commit, "{reference}: {report}");
        assert_eq!(
            report["reachable"],
            reachable_from.is_some(),
            "{reference}: {report}"
        );
        assert_eq!(
            report.get("reachableFrom").and_then(Value::as_str),
            reachable_from,
            "{reference}: {report}"
        );
    }
}

/// `resolve` says where a name points now without fetching: a pushed commit is seen at once.
#[test]
fn resolve_follows_a_moving_branch_and_peels_tags() {
    let root = tempfile::tempdir().unwrap();
    let (repo, main_sha, _) = make_repo(root.path());
    let resolve = |reference: &str| {
        compiler(
            &[
                "resolve",
                "--repo",
                &repo,
                "--commit",
                reference,
                "--workspace",
                root.path().join("resolve").to_str().unwrap(),
                "--allow-repo-prefix",
                &allow_prefix(root.path()),
            ],
            &root.path().join("resolve.json"),
        )
        .1
    };
    let report = resolve("main");
    assert_eq!(report["resolvedCommit"], main_sha.as_str(), "{report}");
    assert_eq!(report["reachableFrom"], "refs/heads/main", "{report}");
    assert_eq!(resolve("v1")["resolvedCommit"], main_sha.as_str());
    let repo_dir = root.path().join("repos/echo");
    std::fs::write(repo_dir.join("README"), "a fix\n").unwrap();
    git(&repo_dir, &["add", "README"]);
    git(&repo_dir, &["commit", "--quiet", "-m", "fix"]);
    let fixed = git(&repo_dir, &["rev-parse", "HEAD"]);
    assert_ne!(fixed, main_sha);
    assert_eq!(resolve("main")["resolvedCommit"], fixed.as_str());
    assert_eq!(resolve("no-such-branch")["errorKind"], "refNotFound");
    assert_eq!(resolve("a..b")["errorKind"], "invalidRef");
    assert!(
        !root.path().join("resolve/src/.git").exists(),
        "resolve fetched nothing"
    );
}
