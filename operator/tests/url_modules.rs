//! Modules by URL on the real control plane: an HTTPS mirror in the test (its CA handed to the
//! operator, its loopback address admitted by `--url-fetch-allow-cidr`, as `--git-mirror` serves
//! repositories) serves a prebuilt module; the fetch Job downloads it, checks its sha256 and
//! publishes it by hash, no build Job runs, and the module runs. The same hash under another URL is
//! a cache hit with no download; a wrong hash, an http URL, a redirect to a private address and an
//! oversized body each fail with a reason that names the URL as the request did. On the localnet, the
//! same from OutLayer's `source: {"WasmUrl": …}`, with the failure's on-chain error naming the URL.

mod common;

use common::chain::{ChainEnv, event, returned};
use common::{
    NAMESPACE, OperatorEnv, artifact, finished, operator_config, repositories_dir, start_operator,
    test_context,
};
use e2e_cluster::https_mirror::{HttpsMirror, Route};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, PostParams};
use outlayer_operator::crd::{self, CodeRef, CompileJob, ExecutionRequest, HasConditions, Phase};
use serde_json::json;
use sha2::{Digest, Sha256};

const MAX_BYTES: u64 = 1024 * 1024;

fn by_url(name: &str, url: &str, sha256: &str, input: &str) -> ExecutionRequest {
    common::request_for(name, CodeRef::from_url(url, sha256), input, 32)
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The `Succeeded` condition's reason and the status message of a finished request.
fn failure(status: &crd::ExecutionRequestStatus) -> (String, String) {
    assert_eq!(status.phase, Some(Phase::Failed), "{:?}", status.message);
    let reason = status
        .find_condition(crd::ConditionType::Succeeded)
        .map(|c| c.reason.clone())
        .unwrap_or_default();
    (reason, status.message.clone().unwrap_or_default())
}

#[tokio::test]
async fn modules_by_url_are_fetched_once_by_hash_and_refusals_say_why() {
    let echo = std::fs::read(artifact(
        "wasm32-wasip1/release/example-echo.wasm",
        "scripts/build-wasm",
    ))
    .unwrap();
    let echo_sha = sha(&echo);
    let big = vec![0u8; 2 * MAX_BYTES as usize];
    let mirror = HttpsMirror::start().await.unwrap();
    mirror.route(
        "/echo.wasm",
        Route::Body {
            bytes: echo.clone(),
            content_length: true,
        },
    );
    mirror.route(
        "/copy/echo.wasm",
        Route::Body {
            bytes: echo.clone(),
            content_length: true,
        },
    );
    // No Content-Length: the cap must hold while the body streams.
    mirror.route(
        "/big.wasm",
        Route::Body {
            bytes: big.clone(),
            content_length: false,
        },
    );
    mirror.route(
        "/to-private",
        Route::Redirect("https://10.1.2.3/echo.wasm".to_string()),
    );

    let env = OperatorEnv::start().await;
    let client = env.cluster.client();
    let repos = repositories_dir();
    let mut config = operator_config(repos.path());
    config.compiler.url_fetch_allow_cidrs = vec!["127.0.0.1/32".to_string(), "::1/128".to_string()];
    config.compiler.url_fetch_ca_pem = Some(mirror.ca_pem().to_string());
    config.compiler.url_fetch_max_bytes = MAX_BYTES;
    let operator = start_operator(test_context(client.clone(), config));
    let executions: Api<ExecutionRequest> = Api::namespaced(client.clone(), NAMESPACE);
    let compile_jobs: Api<CompileJob> = Api::namespaced(client.clone(), NAMESPACE);
    let jobs: Api<Job> = Api::namespaced(client.clone(), NAMESPACE);
    let post = PostParams::default();

    // A served module runs.
    let echo_url = mirror.url("/echo.wasm");
    executions
        .create(
            &post,
            &by_url("first", &echo_url, &echo_sha, "fetched by URL"),
        )
        .await
        .unwrap();
    let first = finished(&executions, "first").await;
    assert_eq!(first.phase, Some(Phase::Succeeded), "{:?}", first.message);
    assert_eq!(first.output.as_deref(), Some("fetched by URL"));
    assert_eq!(first.wasm_sha256.as_deref(), Some(echo_sha.as_str()));
    assert_eq!(first.cache_hit, Some(false));
    assert_eq!(first.resolved_commit, None);
    assert_eq!(mirror.hits("/echo.wasm"), 1);
    assert!(
        env.cache
            .path()
            .join("wasm")
            .join(format!("{echo_sha}.wasm"))
            .exists()
    );
    let compile_job_name = first.compile_job.clone().unwrap();
    let compile_job = compile_jobs.get(&compile_job_name).await.unwrap();
    let compile_status = compile_job.status.unwrap();
    assert_eq!(
        compile_status.wasm_sha256.as_deref(),
        Some(echo_sha.as_str())
    );
    assert_eq!(compile_status.size_bytes, Some(echo.len() as u64));
    assert!(
        jobs.get_opt(&format!("{compile_job_name}-fetch"))
            .await
            .unwrap()
            .is_some(),
        "the fetch Job downloaded it"
    );
    assert!(
        jobs.get_opt(&format!("{compile_job_name}-build"))
            .await
            .unwrap()
            .is_none(),
        "nothing is built for a module by URL"
    );

    // The same hash under another URL: a cache hit, nothing downloaded.
    let copy_url = mirror.url("/copy/echo.wasm");
    executions
        .create(
            &post,
            &by_url("same-hash", &copy_url, &echo_sha, "from the cache"),
        )
        .await
        .unwrap();
    let again = finished(&executions, "same-hash").await;
    assert_eq!(again.phase, Some(Phase::Succeeded), "{:?}", again.message);
    assert_eq!(again.output.as_deref(), Some("from the cache"));
    assert_eq!(again.cache_hit, Some(true));
    assert_eq!(
        again.compile_job.as_deref(),
        Some(compile_job_name.as_str())
    );
    assert_eq!(mirror.hits("/copy/echo.wasm"), 0);
    assert_eq!(mirror.hits("/echo.wasm"), 1);

    // Refusals, all at once.
    let wrong = "0".repeat(64);
    let http_url = format!("http://localhost:{}/echo.wasm", mirror.address().port());
    let private_url = mirror.url("/to-private");
    let big_url = mirror.url("/big.wasm");
    let cases = [
        ("wrong-hash", echo_url.clone(), wrong.clone()),
        ("plain-http", http_url.clone(), echo_sha.clone()),
        ("to-private", private_url.clone(), sha(b"anything")),
        ("oversized", big_url.clone(), sha(&big)),
    ];
    for (name, url, hash) in &cases {
        executions
            .create(&post, &by_url(name, url, hash, "never runs"))
            .await
            .unwrap();
    }
    let (reason, message) = failure(&finished(&executions, "wrong-hash").await);
    assert_eq!(reason, "CompileFailed", "{message}");
    assert!(
        message.contains(&format!(
            "the module at {echo_url} has sha256 {echo_sha}, not the requested {wrong}"
        )),
        "{message}"
    );
    let (reason, message) = failure(&finished(&executions, "plain-http").await);
    assert_eq!(reason, "SpecRefused", "{message}");
    assert!(
        message.contains(&format!(
            "{http_url} is refused: only https URLs are fetched"
        )),
        "{message}"
    );
    let (reason, message) = failure(&finished(&executions, "to-private").await);
    assert_eq!(reason, "CompileFailed", "{message}");
    assert!(
        message.contains(&format!(
            "https://10.1.2.3/echo.wasm (redirected from {private_url}) is refused: its host is 10.1.2.3, a private address"
        )),
        "{message}"
    );
    let (reason, message) = failure(&finished(&executions, "oversized").await);
    assert_eq!(reason, "CompileFailed", "{message}");
    assert!(
        message.contains(&format!(
            "{big_url} is larger than the {MAX_BYTES}-byte download limit"
        )),
        "{message}"
    );
    // The refused ones published nothing; the good one is all the cache holds.
    let cached: Vec<_> = std::fs::read_dir(env.cache.path().join("wasm"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(cached, [format!("{echo_sha}.wasm")]);

    operator.stop().await;
}

/// The same on chain: OutLayer's `source: {"WasmUrl": …}` is stored, announced and run; a compile-only
/// request warms the cache for the hash (another URL then downloads nothing); a wrong hash is answered
/// at once as a failure whose public error names the URL as the request did.
#[tokio::test]
async fn a_wasm_url_request_on_chain_is_warmed_runs_and_a_wrong_hash_names_the_url() {
    let echo = std::fs::read(artifact(
        "wasm32-wasip1/release/example-echo.wasm",
        "scripts/build-wasm",
    ))
    .unwrap();
    let echo_sha = sha(&echo);
    let mirror = HttpsMirror::start().await.unwrap();
    for path in ["/echo.wasm", "/warm/echo.wasm"] {
        mirror.route(
            path,
            Route::Body {
                bytes: echo.clone(),
                content_length: true,
            },
        );
    }
    let url = mirror.url("/echo.wasm");
    let warm_url = mirror.url("/warm/echo.wasm");
    let net = ChainEnv::start(std::time::Duration::from_millis(500)).await;
    let mut config = net.config();
    config.compiler.url_fetch_allow_cidrs = vec!["127.0.0.1/32".to_string(), "::1/128".to_string()];
    config.compiler.url_fetch_ca_pem = Some(mirror.ca_pem().to_string());
    let operator = net.start_operator(config);
    let args = |hash: &str, input: &str| {
        json!({
            "source": {"WasmUrl": {"url": url, "hash": hash, "build_target": "wasm32-wasip1"}},
            "resource_limits": {"max_instructions": 1_000_000_000u64, "max_memory_mb": 64,
                                "max_execution_seconds": 10},
            "input_data": input,
            "response_format": "Text"
        })
    };

    // Compile-only warms the cache: the module is downloaded (nothing is compiled) and named.
    let warm = net
        .request_args(json!({
            "source": {"WasmUrl": {"url": warm_url, "hash": echo_sha, "build_target": "wasm32-wasip1"}},
            "params": {"compile_only": true}
        }))
        .await
        .unwrap();
    let answer = returned(&warm);
    assert_eq!(answer["wasm_sha256"], echo_sha.as_str(), "{answer}");
    assert_eq!(answer["size_bytes"], echo.len() as u64, "{answer}");
    assert_eq!(answer["cached"], false, "{answer}");
    assert_eq!(mirror.hits("/warm/echo.wasm"), 1);

    // Upper-case hex as a client may send it: stored (and so fetched) in lower case. Another URL,
    // the same hash: a cache hit, nothing downloaded.
    let outcome = net
        .request_args(args(&echo_sha.to_uppercase(), "a module by URL, on chain"))
        .await
        .unwrap();
    assert_eq!(returned(&outcome), "a module by URL, on chain");
    let requested = event(&outcome, "execution_requested");
    assert_eq!(requested["source_kind"], "WasmUrl");
    assert_eq!(requested["wasm_url"]["url"], url.as_str());
    assert_eq!(requested["wasm_url"]["hash"], echo_sha.as_str());
    let status = common::chain::finished(&net.executions(), "req-1").await;
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(status.wasm_sha256.as_deref(), Some(echo_sha.as_str()));
    assert_eq!(status.cache_hit, Some(true));
    let completed = event(&outcome, "execution_completed");
    assert_eq!(completed["success"], true);
    assert_eq!(completed["evidence"]["wasm_sha256"], echo_sha.as_str());
    assert_eq!(mirror.hits("/echo.wasm"), 0);

    let wrong = "0".repeat(64);
    let outcome = net.request_args(args(&wrong, "never runs")).await.unwrap();
    assert_eq!(returned(&outcome), serde_json::Value::Null);
    let completed = event(&outcome, "execution_completed");
    assert_eq!(completed["success"], false);
    let error = completed["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("the module at {url} has sha256 {echo_sha}")),
        "{error}"
    );
    assert!(
        !error.contains("/cache") && !error.contains("wasm/"),
        "{error}"
    );

    operator.stop().await;
}
