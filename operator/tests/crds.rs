//! The CRDs in `crds/` are what the code generates, and the real kube-apiserver accepts them and
//! enforces their schema and CEL rules.

mod common;

use std::path::PathBuf;

use e2e_cluster::Cluster;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::ObjectMeta;
use outlayer_operator::crd::{
    self, CodeRef, CompileJob, CompileJobSpec, CompileSource, ExecutionRequest,
    ExecutionRequestSpec, Limits, Pricing, PricingSpec, ResponseFormat,
};

fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds")
}

#[test]
fn crds_on_disk_match_the_code() {
    for definition in crd::all() {
        let path = crds_dir().join(crd::file_name(&definition));
        let on_disk = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} unreadable ({e})", path.display()));
        let generated = crd::to_yaml(&definition).unwrap();
        assert!(
            on_disk == generated,
            "{} is out of date: run `cargo run -p outlayer-operator --bin crdgen`",
            path.display()
        );
    }
}

fn limits() -> Limits {
    Limits {
        max_instructions: 1_000_000,
        max_memory_mb: 64,
        max_execution_seconds: 5,
    }
}

fn execution(name: &str, code: CodeRef, limits: Limits) -> ExecutionRequest {
    ExecutionRequest {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        spec: ExecutionRequestSpec {
            code,
            input: "hi".to_string(),
            limits,
            response_format: ResponseFormat::Text,
            secrets_ref: None,
            compile_only: false,
            deterministic: None,
            on_chain: None,
        },
        status: None,
    }
}

/// The apiserver's rejection message for creating `object`.
async fn rejection(api: &Api<ExecutionRequest>, object: &ExecutionRequest) -> String {
    match api.create(&PostParams::default(), object).await {
        Ok(_) => panic!("{:?} was accepted", object.metadata.name),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn apiserver_accepts_the_crds_and_enforces_their_rules() {
    let cluster = Cluster::start().await.unwrap();
    common::install_crds(&cluster).await;
    let client = cluster.client();
    let executions: Api<ExecutionRequest> = Api::namespaced(client.clone(), "default");

    let valid = execution(
        "valid",
        CodeRef::from_repo("https://github.com/alice/echo", "main"),
        limits(),
    );
    executions
        .create(&PostParams::default(), &valid)
        .await
        .expect("a valid ExecutionRequest is accepted");
    let by_module = execution(
        "by-module",
        CodeRef {
            module_url: None,
            source: None,
            wasm_sha256: Some("a".repeat(64)),
        },
        limits(),
    );
    executions
        .create(&PostParams::default(), &by_module)
        .await
        .expect("a request for a cached module is accepted");

    let both = CodeRef {
        module_url: None,
        wasm_sha256: Some("a".repeat(64)),
        ..CodeRef::from_repo("https://github.com/alice/echo", "main")
    };
    let message = rejection(&executions, &execution("both", both, limits())).await;
    assert!(
        message.contains("exactly one of: repo and commit, url and sha256, or wasmSha256"),
        "{message}"
    );

    // A module by URL: url and sha256 together, and nothing else.
    let by_url = CodeRef::from_url("https://modules.example/echo.wasm", "b".repeat(64));
    executions
        .create(
            &PostParams::default(),
            &execution("by-url", by_url.clone(), limits()),
        )
        .await
        .expect("a module by URL is accepted");
    let url_and_repo = CodeRef {
        module_url: by_url.module_url.clone(),
        ..CodeRef::from_repo("https://github.com/alice/echo", "main")
    };
    let message = rejection(&executions, &execution("url-repo", url_and_repo, limits())).await;
    assert!(message.contains("exactly one of"), "{message}");
    let mut bad_hash = by_url.clone();
    bad_hash.module_url.as_mut().unwrap().sha256 = "B".repeat(64);
    let message = rejection(&executions, &execution("url-hash", bad_hash, limits())).await;
    assert!(message.contains("spec.code.sha256"), "{message}");

    let neither = CodeRef {
        module_url: None,
        source: None,
        wasm_sha256: None,
    };
    let message = rejection(&executions, &execution("neither", neither, limits())).await;
    assert!(message.contains("exactly one of"), "{message}");

    let option_commit = CodeRef::from_repo("https://github.com/alice/echo", "--upload-pack=x");
    let message = rejection(&executions, &execution("opt", option_commit, limits())).await;
    assert!(message.contains("spec.code.commit"), "{message}");

    // Only the owner's code: refs outside refs/heads/ and refs/tags/ (a pull request's head) are
    // refused with the reason; full branch and tag refs pass.
    for (name, commit) in [
        ("pr-head", "refs/pull/7/head"),
        ("pr-merge", "refs/pull/7/merge"),
    ] {
        let code = CodeRef::from_repo("https://github.com/alice/echo", commit);
        let message = rejection(&executions, &execution(name, code, limits())).await;
        assert!(
            message.contains("refs/pull/* hold code"),
            "{commit}: {message}"
        );
    }
    for (name, commit) in [
        ("dot-lock", "main.lock"),
        ("empty-seg", "a//b"),
        ("dot-seg", "a/.b"),
    ] {
        let code = CodeRef::from_repo("https://github.com/alice/echo", commit);
        let message = rejection(&executions, &execution(name, code, limits())).await;
        assert!(
            message.contains("not a valid git ref name"),
            "{commit}: {message}"
        );
    }
    for (name, commit) in [
        ("full-branch", "refs/heads/main"),
        ("full-tag", "refs/tags/v1.0"),
    ] {
        let code = CodeRef::from_repo("https://github.com/alice/echo", commit);
        executions
            .create(&PostParams::default(), &execution(name, code, limits()))
            .await
            .unwrap_or_else(|e| panic!("{commit} is refused: {e}"));
    }

    let dotdot = CodeRef::from_repo("https://github.com/alice/../etc", "main");
    let message = rejection(&executions, &execution("dotdot", dotdot, limits())).await;
    assert!(message.contains("repo must not contain '..'"), "{message}");

    let credentials = CodeRef::from_repo("https://user:pw@github.com/alice/echo", "main");
    let message = rejection(&executions, &execution("creds", credentials, limits())).await;
    assert!(message.contains("spec.code.repo"), "{message}");

    let mut wasip2 = CodeRef::from_repo("https://github.com/alice/echo", "main");
    wasip2.source.as_mut().unwrap().build_target = "wasm32-wasip2".to_string();
    let message = rejection(&executions, &execution("wasip2", wasip2, limits())).await;
    assert!(message.contains("only supported build target"), "{message}");

    let mut too_big = limits();
    too_big.max_memory_mb = 4097;
    let code = CodeRef::from_repo("https://github.com/alice/echo", "main");
    let message = rejection(&executions, &execution("big", code.clone(), too_big)).await;
    assert!(message.contains("spec.limits.maxMemoryMb"), "{message}");
    let mut zero = limits();
    zero.max_execution_seconds = 0;
    let message = rejection(&executions, &execution("zero", code, zero)).await;
    assert!(
        message.contains("spec.limits.maxExecutionSeconds"),
        "{message}"
    );

    // Specs are immutable.
    let mut changed = executions.get("valid").await.unwrap();
    changed.spec.input = "changed".to_string();
    let error = executions
        .replace("valid", &PostParams::default(), &changed)
        .await
        .expect_err("spec changes are rejected");
    assert!(error.to_string().contains("spec is immutable"), "{error}");

    // CompileJob: the same source rules, named deterministically.
    let compile_jobs: Api<CompileJob> = Api::namespaced(client.clone(), "default");
    let source = CompileSource {
        repo: "https://github.com/alice/echo".to_string(),
        commit: "0123456789abcdef0123456789abcdef01234567".to_string(),
        build_target: crd::BUILD_TARGET_WASIP1.to_string(),
    };
    let job = CompileJob::new(
        &source.compile_job_name(),
        CompileJobSpec::git(source.clone()),
    );
    compile_jobs
        .create(&PostParams::default(), &job)
        .await
        .expect("a valid CompileJob is accepted");
    let module_url = crd::ModuleUrl {
        url: "https://modules.example/echo.wasm".to_string(),
        sha256: "c".repeat(64),
    };
    compile_jobs
        .create(
            &PostParams::default(),
            &CompileJob::new(
                &module_url.compile_job_name(),
                CompileJobSpec::url(module_url.clone()),
            ),
        )
        .await
        .expect("a CompileJob for a module by URL is accepted");
    let both = CompileJobSpec {
        source: Some(source),
        module_url: Some(module_url),
    };
    let error = compile_jobs
        .create(&PostParams::default(), &CompileJob::new("cj-both", both))
        .await
        .expect_err("a CompileJob with a repo and a URL is rejected");
    assert!(error.to_string().contains("not both"), "{error}");

    // Pricing is a cluster-scoped singleton with decimal-string fees.
    let pricings: Api<Pricing> = Api::all(client);
    let spec = PricingSpec {
        base_fee: "1000000000000000000000".to_string(),
        per_million_instructions_fee: "100000000000000".to_string(),
        per_ms_fee: "100000000000000000".to_string(),
        per_compile_ms_fee: "0".to_string(),
    };
    pricings
        .create(
            &PostParams::default(),
            &Pricing::new("default", spec.clone()),
        )
        .await
        .expect("the default Pricing is accepted");
    let error = pricings
        .create(&PostParams::default(), &Pricing::new("other", spec.clone()))
        .await
        .expect_err("a second Pricing is rejected");
    assert!(
        error.to_string().contains("singleton named 'default'"),
        "{error}"
    );
    let mut negative = spec;
    negative.per_ms_fee = "-1".to_string();
    let error = pricings
        .patch(
            "default",
            &PatchParams::apply("outlayer-crd-test").force(),
            &Patch::Apply(&Pricing::new("default", negative)),
        )
        .await
        .expect_err("a negative fee is rejected");
    assert!(error.to_string().contains("spec.perMsFee"), "{error}");
}
