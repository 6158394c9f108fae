//! The build Job: compiles the fetched workspace offline for wasm32-wasip1, validates the module
//! and publishes it to the cache under its sha256.
//!
//! This runs the repository's build scripts and proc macros, i.e. arbitrary code, which is why the
//! pod has no network and a read-only root; here we add the offline flags, a clean environment, a
//! deadline and a size cap. Unlike the fetch, cargo runs in the checkout so the repository's own
//! `.cargo/config.toml` applies (on top of the vendoring config one directory up).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::BUILD_TARGET;
use crate::error::{Error, Result};
use crate::fetch::millis;
use crate::log::Log;
use crate::module::validate_module;
use crate::publish::{Published, publish, read_regular_file, sha256_hex, write_fresh};
use crate::report::{BuildReport, Failure, FetchReport, REPORT_VERSION, encode};
use crate::reproducible::{COMPILER_VERSION, toolchain_identity};
use crate::runner::{self, Limits, describe_status};
use crate::toolenv::Tools;
use crate::workspace::Workspace;

/// Where a built module goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Published straight into `<cache>/wasm` (running by hand; the operator's Jobs never do this,
    /// since the build runs the repository's code).
    Cache(PathBuf),
    /// Staged as `<dir>/module.wasm` with the report as `<dir>/build.json`, for `publish` (a step
    /// that runs no user code) to validate and publish.
    Staged(PathBuf),
}

/// The staged module in an [`Output::Staged`] directory.
pub const STAGED_MODULE: &str = "module.wasm";
/// The build's report in an [`Output::Staged`] directory.
pub const STAGED_REPORT: &str = "build.json";

#[derive(Debug, Clone)]
pub struct BuildConfig {
    pub workspace: PathBuf,
    pub output: Output,
    /// The binary target to build; required only when the crate has several.
    pub bin: Option<String>,
    /// The commit the operator expects the workspace to hold (the fetch report's `resolvedCommit`).
    pub expect_commit: Option<String>,
    pub timeout: Duration,
    pub max_workspace_bytes: u64,
    pub max_module_bytes: u64,
    /// `cargo build -j`; cargo's default (all CPUs) when absent.
    pub jobs: Option<u32>,
    pub tools: Tools,
    /// An address this pod reaches only while its NetworkPolicy is not in force: nothing of the
    /// repository runs before a connection to it fails ([`crate::isolation`]).
    pub isolation_probe: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub sha256: String,
    pub size_bytes: u64,
    pub compile_time_ms: u64,
    pub resolved_commit: String,
    pub bin: String,
    /// `rustc -vV`'s first line.
    pub toolchain: String,
    /// Where the module went: `None` when staged for `publish`.
    pub published: Option<Published>,
}

/// Runs the build and returns its report (trimmed to fit), also saved as `<workspace>/build.json`.
pub fn run_build(config: &BuildConfig, log: &Arc<Log>) -> (BuildReport, String) {
    let started = Instant::now();
    let mut compile_time_ms = None;
    let outcome = build(config, log, &mut compile_time_ms);
    let mut report = BuildReport {
        v: REPORT_VERSION,
        compile_time_ms,
        ..Default::default()
    };
    match outcome {
        Ok(built) => {
            report.ok = true;
            report.sha256 = Some(built.sha256);
            report.size_bytes = Some(built.size_bytes);
            report.resolved_commit = Some(built.resolved_commit);
            report.bin = Some(built.bin);
            report.toolchain = Some(built.toolchain);
            report.compiler = Some(COMPILER_VERSION.to_string());
        }
        Err(error) => {
            tracing::warn!(error = %error, kind = error.kind(), "build failed");
            log.step(&format!("build failed: {error}"));
            report.failure = Failure::new(&error, log.tail());
        }
    }
    report.time_ms = millis(started.elapsed());
    let mut json = encode(&mut report);
    if let Output::Staged(dir) = &config.output
        && let Err(error) = write_fresh(&dir.join(STAGED_REPORT), json.as_bytes())
    {
        report.ok = false;
        report.sha256 = None;
        report.failure = Failure::new(&error, log.tail());
        json = encode(&mut report);
    }
    if let Ok(workspace) = Workspace::new(&config.workspace) {
        // A convenience copy for people inspecting the volume; the result path is authoritative.
        let _ = write_fresh(&workspace.build_record(), json.as_bytes());
    }
    (report, json)
}

pub fn build(
    config: &BuildConfig,
    log: &Arc<Log>,
    compile_time_ms: &mut Option<u64>,
) -> Result<Built> {
    if let Some(probe) = config.isolation_probe {
        crate::isolation::wait_until_isolated(
            probe,
            crate::isolation::ISOLATION_WAIT.min(config.timeout),
            log,
        )?;
    }
    let workspace = Workspace::new(&config.workspace)?;
    let resolved_commit = read_fetch_record(&workspace, config.expect_commit.as_deref())?;
    workspace.ensure_scratch_dirs()?;
    let limits = Limits::new(
        config.timeout,
        Some((workspace.root().to_path_buf(), config.max_workspace_bytes)),
    );

    let (package, bin) = select_binary(config, &workspace, log, &limits)?;
    let toolchain = toolchain(config, &workspace, log, &limits)?;
    log.step(&format!(
        "building {package} (bin {bin}) at {resolved_commit} for {BUILD_TARGET}, offline, with {toolchain}"
    ));
    // This binary is cargo's RUSTC_WRAPPER: it adds the path remapping to every compilation.
    let wrapper = std::env::current_exe().map_err(|e| {
        Error::io(
            "finding this program (the rustc wrapper)",
            "/proc/self/exe",
            e,
        )
    })?;
    let mut command = config.tools.cargo_build(&workspace, &wrapper);
    command
        .current_dir(workspace.src())
        .args([
            "build",
            "--offline",
            "--locked",
            "--release",
            "--target",
            BUILD_TARGET,
        ])
        .arg("--manifest-path")
        .arg(workspace.manifest())
        .args(["--package", &package, "--bin", &bin]);
    if let Some(jobs) = config.jobs {
        command.arg("--jobs").arg(jobs.to_string());
    }
    let started = Instant::now();
    let outcome = runner::run("cargo build", command, log, &limits, false);
    *compile_time_ms = Some(millis(started.elapsed()));
    let outcome = outcome?;
    if !outcome.status.success() {
        return Err(Error::Compile(format!(
            "{} building {package} (bin {bin}); the compiler's output ends the log tail",
            describe_status(&outcome.status)
        )));
    }
    limits.check_size("cargo build")?;

    let artifact = artifact_path(&workspace, &bin);
    let bytes = read_module(&artifact, config.max_module_bytes)?;
    let summary = validate_module(&bytes, config.max_module_bytes)?;
    let sha256 = sha256_hex(&bytes);
    let published = match &config.output {
        Output::Cache(cache) => {
            let published = publish(cache, &sha256, &bytes)?;
            log.step(&format!(
                "published {} ({} bytes, {} imports, {} exports{})",
                published.path.display(),
                bytes.len(),
                summary.imports,
                summary.exports,
                if published.already_present {
                    ", already in the cache"
                } else {
                    ""
                }
            ));
            Some(published)
        }
        Output::Staged(dir) => {
            let staged = dir.join(STAGED_MODULE);
            write_fresh(&staged, &bytes)?;
            log.step(&format!(
                "staged {sha256} ({} bytes, {} imports, {} exports) for publishing",
                bytes.len(),
                summary.imports,
                summary.exports
            ));
            None
        }
    };
    Ok(Built {
        sha256,
        size_bytes: bytes.len() as u64,
        compile_time_ms: compile_time_ms.unwrap_or_default(),
        resolved_commit,
        bin,
        toolchain,
        published,
    })
}

/// The toolchain's identity (`rustc -vV`), asked in the checkout so a `rust-toolchain.toml` there
/// selects the same toolchain cargo will use.
fn toolchain(
    config: &BuildConfig,
    workspace: &Workspace,
    log: &Arc<Log>,
    limits: &Limits,
) -> Result<String> {
    let mut command = config.tools.rustc(workspace);
    command.current_dir(workspace.src()).arg("-vV");
    let outcome = runner::run("rustc -vV", command, log, limits, true)?;
    let text = String::from_utf8_lossy(&outcome.stdout);
    match (outcome.status.success(), toolchain_identity(&text)) {
        (true, Some(identity)) => Ok(identity),
        _ => Err(Error::InvalidConfig(format!(
            "rustc -vV did not name a toolchain ({}); the log has its output",
            describe_status(&outcome.status)
        ))),
    }
}

/// The fetch's record is the only evidence that `src/` holds a complete checkout with its
/// dependencies vendored; without it (or for another commit than expected) nothing is built.
fn read_fetch_record(workspace: &Workspace, expect_commit: Option<&str>) -> Result<String> {
    let not_fetched = |reason: String| Error::NotFetched {
        workspace: workspace.root().to_path_buf(),
        reason,
    };
    let path = workspace.fetch_record();
    let text = std::fs::read_to_string(&path)
        .map_err(|e| not_fetched(format!("reading {}: {e}", path.display())))?;
    let record: FetchReport = serde_json::from_str(&text)
        .map_err(|e| not_fetched(format!("{} is not a fetch report: {e}", path.display())))?;
    let commit = match (record.ok, record.resolved_commit) {
        (true, Some(commit)) => commit,
        _ => return Err(not_fetched("the fetch did not succeed".to_string())),
    };
    if let Some(expected) = expect_commit
        && !expected.eq_ignore_ascii_case(&commit)
    {
        return Err(not_fetched(format!(
            "it holds commit {commit}, not the expected {expected}"
        )));
    }
    Ok(commit)
}

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
}
#[derive(Deserialize)]
struct Package {
    name: String,
    manifest_path: PathBuf,
    targets: Vec<Target>,
}
#[derive(Deserialize)]
struct Target {
    name: String,
    kind: Vec<String>,
}

/// (package, bin): `--bin` names it; otherwise the root package (or, in a virtual workspace, the
/// whole workspace) must have exactly one binary target.
fn select_binary(
    config: &BuildConfig,
    workspace: &Workspace,
    log: &Arc<Log>,
    limits: &Limits,
) -> Result<(String, String)> {
    let mut command = config.tools.cargo(workspace, true);
    command
        .current_dir(workspace.src())
        .args([
            "metadata",
            "--offline",
            "--no-deps",
            "--format-version",
            "1",
        ])
        .arg("--manifest-path")
        .arg(workspace.manifest());
    let outcome = runner::run("cargo metadata", command, log, limits, true)?;
    if !outcome.status.success() {
        return Err(Error::Metadata(format!(
            "{}; the end of its output is in the log",
            describe_status(&outcome.status)
        )));
    }
    let metadata: Metadata = serde_json::from_slice(&outcome.stdout)
        .map_err(|e| Error::Metadata(format!("unreadable output: {e}")))?;
    let root_manifest = canonical(&workspace.manifest());
    let bins = |package: &Package| -> Vec<(String, String)> {
        package
            .targets
            .iter()
            .filter(|t| t.kind.iter().any(|k| k == "bin"))
            .map(|t| (package.name.clone(), t.name.clone()))
            .collect()
    };
    let all: Vec<(String, String)> = metadata.packages.iter().flat_map(bins).collect();
    let describe = |list: &[(String, String)]| {
        list.iter()
            .map(|(p, b)| format!("{b} (package {p})"))
            .collect::<Vec<_>>()
            .join(", ")
    };

    if let Some(wanted) = &config.bin {
        let matching: Vec<_> = all.iter().filter(|(_, b)| b == wanted).cloned().collect();
        return match matching.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Error::Binary(format!(
                "no binary target named {wanted:?}; the crate has: {}",
                if all.is_empty() {
                    "none".to_string()
                } else {
                    describe(&all)
                }
            ))),
            _ => Err(Error::Binary(format!(
                "several packages have a binary named {wanted:?}: {}",
                describe(&matching)
            ))),
        };
    }
    let root = metadata
        .packages
        .iter()
        .find(|p| canonical(&p.manifest_path) == root_manifest);
    let candidates = match root {
        Some(package) => bins(package),
        None => all.clone(),
    };
    match candidates.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::Binary(
            "no binary target to build (a guest is a `fn main` binary, not a library)".to_string(),
        )),
        _ => Err(Error::Binary(format!(
            "several binary targets ({}); name one with --bin",
            describe(&candidates)
        ))),
    }
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Where cargo leaves a bin target built with `--target wasm32-wasip1 --release`.
fn artifact_path(workspace: &Workspace, bin: &str) -> PathBuf {
    workspace
        .target()
        .join(BUILD_TARGET)
        .join("release")
        .join(format!("{bin}.wasm"))
}

/// Reads the artifact (a regular file, not a link a build script left there), refusing before
/// reading when it is over the limit.
fn read_module(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    read_regular_file(path, max_bytes)
}

/// What `publish` reads from a staged directory and needs to publish.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// The build's [`Output::Staged`] directory (read only; written by a step that ran user code).
    pub from: PathBuf,
    pub cache: PathBuf,
    pub max_module_bytes: u64,
}

/// The largest build report read from a staged directory.
const MAX_STAGED_REPORT_BYTES: u64 = 64 * 1024;

/// The publish step: runs no user code. Reads the build's report and module from the staged
/// directory (regular files only, never following a link, size-capped), passes a failed build's
/// report on, and otherwise validates the module and publishes it under the sha256 it computes
/// itself. Returns the final report of the build Job.
pub fn run_publish(config: &PublishConfig, log: &Arc<Log>) -> (BuildReport, String) {
    let started = Instant::now();
    let mut report = match read_regular_file(
        &config.from.join(STAGED_REPORT),
        MAX_STAGED_REPORT_BYTES,
    )
    .and_then(|bytes| {
        serde_json::from_slice::<BuildReport>(&bytes)
            .map_err(|e| Error::InvalidModule(format!("the build's report is unreadable: {e}")))
    }) {
        Ok(report) => report,
        Err(error) => {
            log.step(&format!("no usable build report: {error}"));
            let mut report = BuildReport::failed(&Error::Compile(format!(
                "the build step left no usable report ({error})"
            )));
            report.time_ms = millis(started.elapsed());
            let json = encode(&mut report);
            return (report, json);
        }
    };
    if !report.ok {
        let json = encode(&mut report);
        return (report, json);
    }
    // The staged report was written where the build's code could write too: keep only a
    // well-formed toolchain line, and state this step's own version (the same image).
    report.toolchain = report.toolchain.as_deref().and_then(toolchain_identity);
    report.compiler = Some(COMPILER_VERSION.to_string());
    match publish_staged(config, &report, log) {
        Ok((sha256, size)) => {
            report.sha256 = Some(sha256);
            report.size_bytes = Some(size);
        }
        Err(error) => {
            tracing::warn!(error = %error, kind = error.kind(), "publish failed");
            log.step(&format!("publish failed: {error}"));
            report.ok = false;
            report.sha256 = None;
            report.size_bytes = None;
            report.failure = Failure::new(&error, log.tail());
        }
    }
    let json = encode(&mut report);
    (report, json)
}

fn publish_staged(
    config: &PublishConfig,
    report: &BuildReport,
    log: &Arc<Log>,
) -> Result<(String, u64)> {
    let bytes = read_regular_file(&config.from.join(STAGED_MODULE), config.max_module_bytes)?;
    let summary = validate_module(&bytes, config.max_module_bytes)?;
    let sha256 = sha256_hex(&bytes);
    if let Some(built) = &report.sha256
        && !built.eq_ignore_ascii_case(&sha256)
    {
        return Err(Error::InvalidModule(format!(
            "the staged module has sha256 {sha256}, the build reported {built}: it changed after the build"
        )));
    }
    let published = publish(&config.cache, &sha256, &bytes)?;
    log.step(&format!(
        "published {} ({} bytes, {} imports, {} exports{})",
        published.path.display(),
        bytes.len(),
        summary.imports,
        summary.exports,
        if published.already_present {
            ", already in the cache"
        } else {
            ""
        }
    ));
    Ok((sha256, bytes.len() as u64))
}
