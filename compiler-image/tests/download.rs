//! `fetch-url` against a local HTTPS mirror (no cluster): the module is published by its hash, a
//! second fetch of the same hash downloads nothing, and each refusal says why.

use std::time::Duration;

use e2e_cluster::https_mirror::{HttpsMirror, Route};
use outlayer_compiler::Error;
use outlayer_compiler::download::{AddressPolicy, DownloadConfig, fetch_module};
use sha2::{Digest, Sha256};

const MAX_MODULE: u64 = 64 * 1024 * 1024;

fn module() -> Vec<u8> {
    wat::parse_str(
        r#"(module
            (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
            (memory (export "memory") 1)
            (func (export "_start")))"#,
    )
    .unwrap()
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn config(mirror: &HttpsMirror, max_bytes: u64) -> DownloadConfig {
    DownloadConfig {
        policy: AddressPolicy::new(&["127.0.0.1/32".to_string(), "::1/128".to_string()]).unwrap(),
        max_bytes,
        timeout: Duration::from_secs(20),
        extra_roots_pem: Some(mirror.ca_pem().as_bytes().to_vec()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_module_by_url_is_published_by_its_hash_and_fetched_once() {
    let mirror = HttpsMirror::start().await.unwrap();
    let bytes = module();
    let hash = sha(&bytes);
    mirror.route(
        "/m.wasm",
        Route::Body {
            bytes: bytes.clone(),
            content_length: true,
        },
    );
    mirror.route("/moved", Route::Redirect(mirror.url("/m.wasm")));
    let cache = tempfile::tempdir().unwrap();
    let config = config(&mirror, 1024 * 1024);

    let fetched = fetch_module(
        &mirror.url("/moved"),
        &hash,
        cache.path(),
        &config,
        MAX_MODULE,
    )
    .await
    .unwrap();
    assert_eq!(fetched.sha256, hash);
    assert!(!fetched.published.already_present);
    let stored = std::fs::read(cache.path().join("wasm").join(format!("{hash}.wasm"))).unwrap();
    assert_eq!(stored, bytes);
    assert_eq!((mirror.hits("/moved"), mirror.hits("/m.wasm")), (1, 1));

    // The same hash under any URL is a cache hit: nothing is downloaded.
    let again = fetch_module(
        &mirror.url("/elsewhere.wasm"),
        &hash,
        cache.path(),
        &config,
        MAX_MODULE,
    )
    .await
    .unwrap();
    assert!(again.published.already_present);
    assert_eq!(mirror.hits("/elsewhere.wasm"), 0);
    assert_eq!(mirror.hits("/m.wasm"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_say_why_and_publish_nothing() {
    let mirror = HttpsMirror::start().await.unwrap();
    let bytes = module();
    let hash = sha(&bytes);
    let big = vec![7u8; 300 * 1024];
    mirror.route(
        "/m.wasm",
        Route::Body {
            bytes: bytes.clone(),
            content_length: true,
        },
    );
    mirror.route(
        "/big-streamed",
        Route::Body {
            bytes: big.clone(),
            content_length: false,
        },
    );
    mirror.route(
        "/big-declared",
        Route::Body {
            bytes: big.clone(),
            content_length: true,
        },
    );
    mirror.route(
        "/to-private",
        Route::Redirect("https://10.1.2.3/m.wasm".to_string()),
    );
    mirror.route(
        "/to-metadata",
        Route::Redirect("https://169.254.169.254/latest/meta-data".to_string()),
    );
    mirror.route(
        "/to-http",
        Route::Redirect(format!(
            "http://localhost:{}/m.wasm",
            mirror.address().port()
        )),
    );
    mirror.route("/loop", Route::Redirect(mirror.url("/loop")));
    let cache = tempfile::tempdir().unwrap();
    let config = config(&mirror, 100 * 1024);
    let wrong = "0".repeat(64);

    let cases: Vec<(String, &str, &str, &str)> = vec![
        (
            mirror.url("/m.wasm"),
            wrong.as_str(),
            "hashMismatch",
            "not the requested",
        ),
        (
            mirror.url("/big-streamed"),
            hash.as_str(),
            "downloadTooLarge",
            "102400-byte",
        ),
        (
            mirror.url("/big-declared"),
            hash.as_str(),
            "downloadTooLarge",
            "102400-byte",
        ),
        (
            mirror.url("/to-private"),
            hash.as_str(),
            "urlRefused",
            "10.1.2.3, a private address",
        ),
        (
            mirror.url("/to-metadata"),
            hash.as_str(),
            "urlRefused",
            "link-local",
        ),
        (
            mirror.url("/to-http"),
            hash.as_str(),
            "urlRefused",
            "only https",
        ),
        (mirror.url("/loop"), hash.as_str(), "download", "redirects"),
        (
            format!("http://localhost:{}/m.wasm", mirror.address().port()),
            hash.as_str(),
            "urlRefused",
            "only https",
        ),
    ];
    for (url, want_hash, kind, words) in cases {
        let error = fetch_module(&url, want_hash, cache.path(), &config, MAX_MODULE)
            .await
            .expect_err(&url);
        assert_eq!(error.kind(), kind, "{url}: {error}");
        assert!(error.to_string().contains(words), "{url}: {error}");
        assert!(
            error.to_string().contains(&url),
            "{url}: names the URL: {error}"
        );
    }
    // The streamed body was cut at the cap, not read whole: nothing reached the cache.
    assert!(
        std::fs::read_dir(cache.path().join("wasm"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0
    );

    // Without the allow-list the mirror itself (loopback, found by DNS) is refused.
    let strict = DownloadConfig {
        policy: AddressPolicy::default(),
        ..config.clone()
    };
    let error = fetch_module(
        &mirror.url("/m.wasm"),
        &hash,
        cache.path(),
        &strict,
        MAX_MODULE,
    )
    .await
    .unwrap_err();
    assert!(matches!(error, Error::UrlRefused { .. }), "{error}");
    assert!(error.to_string().contains("loopback"), "{error}");
    // Without the mirror's CA its certificate is not trusted.
    let untrusted = DownloadConfig {
        extra_roots_pem: None,
        ..config
    };
    let error = fetch_module(
        &mirror.url("/m.wasm"),
        &hash,
        cache.path(),
        &untrusted,
        MAX_MODULE,
    )
    .await
    .unwrap_err();
    assert_eq!(error.kind(), "download", "{error}");
}
