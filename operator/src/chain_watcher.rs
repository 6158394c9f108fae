//! The chain watcher (leader only): polls the contract's `get_pending_requests` and turns each pending
//! request into an `ExecutionRequest` named `req-<id>` with `spec.onChain`. Creating is idempotent
//! (409 = already there), so a restart may safely see a request again.
//!
//! The cursor is the next request id not yet turned into an ExecutionRequest; it lives in the
//! ConfigMap `outlayer-watcher` so a new leader continues where the last one stopped. Ids are
//! allocated in order and a view sees every request up to its block, so advancing past an id that
//! was created never skips one. A restart (or a new leader) first rescans everything still pending
//! from id 0 — the pending set is bounded by the 200-block yield window — so a request whose
//! ExecutionRequest was deleted while it was still pending is picked up again.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use tracing::{debug, info, warn};

use crate::chain::{ChainClient, ChainError, ExecutionResponse, PendingRequest, ResourceMetrics};
use crate::context::{Context, FIELD_MANAGER, Note};
use crate::crd::{
    BUILD_TARGET_WASIP1, CodeRef, CompileSource, ExecutionRequest, ExecutionRequestSpec, Limits,
    ModuleUrl, OnChain, Reason, ResponseFormat, SecretsRef,
};
use crate::metrics::ControllerKind;
use crate::{Error, Result};

/// The ConfigMap holding the cursor, in the operator's namespace.
pub const CURSOR_CONFIG_MAP: &str = "outlayer-watcher";
const CURSOR_KEY: &str = "nextRequestId";
/// The contract the cursor counts the requests of: another contract's ids start over.
const CONTRACT_KEY: &str = "contractId";
/// The contract's page cap.
const PAGE: u32 = 100;
/// ExecutionRequests created at once while turning a page into objects.
const CONCURRENT_CREATES: usize = 16;
/// Labels on ExecutionRequests from the chain, for `kubectl get exr -l outlayer.dev/source=chain`.
pub const SOURCE_LABEL: &str = "outlayer.dev/source";
pub const REQUEST_ID_LABEL: &str = "outlayer.dev/request-id";

/// `req-<id>`: the ExecutionRequest of on-chain request `id`.
pub fn execution_name(request_id: u64) -> String {
    format!("req-{request_id}")
}

/// Runs until `shutdown` resolves. Without a chain client there is nothing to watch.
pub async fn run(ctx: Arc<Context>, namespace: String, shutdown: impl Future<Output = ()>) {
    let Some(chain) = ctx.chain.clone() else {
        return;
    };
    let mut watcher = Watcher {
        executions: Api::namespaced(ctx.client.clone(), &namespace),
        cursors: Api::namespaced(ctx.client.clone(), &namespace),
        ctx,
        chain,
        cursor: 0,
        saved_cursor: None,
    };
    tokio::pin!(shutdown);
    let interval = watcher.ctx.config.on_chain.poll_interval;
    // Until the stored cursor is read, nothing is created: a blind start from 0 would still be
    // correct, but reading first keeps the cursor monotonic across leaders.
    loop {
        match watcher.load_cursor().await {
            Ok(()) => break,
            Err(error) => warn!(%error, "reading the watcher cursor failed; retrying"),
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
    info!(
        cursor = watcher.cursor,
        "watching the contract for requests"
    );
    let mut rescan = true;
    loop {
        let from = if rescan { 0 } else { watcher.cursor };
        match watcher.poll(from).await {
            Ok(()) => rescan = false,
            Err(error) => {
                watcher
                    .ctx
                    .metrics
                    .reconcile_error(ControllerKind::Watcher, &error);
                warn!(%error, from, "polling the contract failed; retrying");
            }
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

struct Watcher {
    ctx: Arc<Context>,
    chain: Arc<ChainClient>,
    executions: Api<ExecutionRequest>,
    cursors: Api<ConfigMap>,
    cursor: u64,
    saved_cursor: Option<u64>,
}

impl Watcher {
    async fn load_cursor(&mut self) -> Result<()> {
        let stored = self
            .cursors
            .get_opt(CURSOR_CONFIG_MAP)
            .await
            .map_err(Error::api("reading ConfigMap", CURSOR_CONFIG_MAP))?;
        let data = stored.as_ref().and_then(|cm| cm.data.as_ref());
        let value = data.and_then(|data| data.get(CURSOR_KEY));
        let stored_cursor = match value {
            Some(text) => Some(text.parse().map_err(|_| {
                Error::InvalidSpec(format!(
                    "ConfigMap {CURSOR_CONFIG_MAP} has {CURSOR_KEY} {text:?}, not a request id"
                ))
            })?),
            None => None,
        };
        let stored_contract = data.and_then(|data| data.get(CONTRACT_KEY));
        let contract = self.chain.contract_id().to_string();
        self.cursor = cursor_to_resume(
            stored_cursor,
            stored_contract.map(String::as_str),
            &contract,
        );
        if stored_cursor.is_some() && self.cursor == 0 {
            info!(
                previous = ?stored_contract,
                %contract,
                "the cursor counted another contract's requests; starting over from request 0"
            );
        }
        // Saved again (with the contract) unless it is exactly what is stored.
        self.saved_cursor = (stored_cursor == Some(self.cursor)
            && stored_contract.map(String::as_str) == Some(contract.as_str()))
        .then_some(self.cursor);
        Ok(())
    }

    /// One pass over the pending requests from id `from`; the cursor is saved even when the pass
    /// stops early, so progress is never lost and never overstated.
    async fn poll(&mut self, from: u64) -> Result<()> {
        let scanned = self.scan(from).await;
        let saved = self.save_cursor().await;
        scanned.and(saved)
    }

    async fn scan(&mut self, mut from: u64) -> Result<()> {
        loop {
            let page = self
                .chain
                .get_pending_requests(from, PAGE)
                .await
                .map_err(chain_error("reading the pending requests"))?;
            // A burst of requests is one page: create a few at a time, but take the results in id order,
            // so the cursor never passes a request whose create failed.
            for chunk in page.chunks(CONCURRENT_CREATES) {
                let created =
                    futures::future::join_all(chunk.iter().map(|request| self.create(request)))
                        .await;
                for (request, result) in chunk.iter().zip(created) {
                    result?;
                    self.cursor = self.cursor.max(request.request_id + 1);
                }
            }
            match page.last() {
                Some(last) if page.len() == PAGE as usize => from = last.request_id + 1,
                _ => return Ok(()),
            }
        }
    }

    async fn save_cursor(&mut self) -> Result<()> {
        if self.saved_cursor == Some(self.cursor) {
            return Ok(());
        }
        let config_map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(CURSOR_CONFIG_MAP.to_string()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                (CURSOR_KEY.to_string(), self.cursor.to_string()),
                (
                    CONTRACT_KEY.to_string(),
                    self.chain.contract_id().to_string(),
                ),
            ])),
            ..Default::default()
        };
        let mut patch = serde_json::to_value(&config_map).map_err(|e| {
            Error::InvalidSpec(format!("encoding ConfigMap {CURSOR_CONFIG_MAP}: {e}"))
        })?;
        patch["apiVersion"] = "v1".into();
        patch["kind"] = "ConfigMap".into();
        self.cursors
            .patch(
                CURSOR_CONFIG_MAP,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(Error::api("writing ConfigMap", CURSOR_CONFIG_MAP))?;
        debug!(cursor = self.cursor, "watcher cursor saved");
        self.saved_cursor = Some(self.cursor);
        Ok(())
    }

    /// Creates `req-<id>`; an existing one is fine. A request the API server refuses (it breaks a
    /// schema rule the contract does not have) is answered on chain at once with the reason, rather
    /// than left to block the cursor and time out.
    async fn create(&self, request: &PendingRequest) -> Result<()> {
        let id = request.request_id;
        let name = execution_name(id);
        let input = match (&request.input_data, request.input_omitted) {
            (Some(input), false) => input.clone(),
            _ => match self
                .chain
                .get_request(id)
                .await
                .map_err(chain_error("reading a large input"))?
            {
                Some(full) => full.input_data,
                // Settled since the page was read.
                None => return Ok(()),
            },
        };
        let execution = execution_request(
            request,
            input,
            self.ctx.config.on_chain.yield_timeout_blocks,
        );
        match self
            .executions
            .create(&PostParams::default(), &execution)
            .await
        {
            Ok(_) => {
                info!(request_id = id, execution = %name, sender = %request.sender_id, "on-chain request accepted");
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 409 => self.check_existing(&execution).await,
            Err(kube::Error::Api(e)) if e.code == 422 => self.refuse(id, &e.message).await,
            Err(e) => Err(Error::api("creating ExecutionRequest", &name)(e)),
        }
    }

    /// `req-<id>` exists: fine when it asks for exactly what the chain holds (an earlier pass, or
    /// another leader, made it). Anything else was written by someone who may create ExecutionRequests,
    /// not from the chain: it is announced (Warning Event, metric), deleted, and the cursor waits so the
    /// next poll creates the real one. Admission should have refused it; this holds without admission.
    async fn check_existing(&self, wanted: &ExecutionRequest) -> Result<()> {
        let name = wanted.name_any();
        let Some(existing) = self
            .executions
            .get_opt(&name)
            .await
            .map_err(Error::api("reading ExecutionRequest", &name))?
        else {
            return Err(Error::Untrusted {
                kind: "ExecutionRequest",
                name,
                why: "it was deleted while being checked; created on the next poll".to_string(),
            });
        };
        if existing.spec == wanted.spec {
            return Ok(());
        }
        let differences = match &wanted.spec.on_chain {
            Some(on_chain) => {
                let stored = self
                    .chain
                    .get_request(on_chain.request_id)
                    .await
                    .map_err(chain_error("reading a request to check an existing object"))?;
                match crate::controllers::compare_with_chain(
                    &existing.spec,
                    stored.as_ref(),
                    self.ctx.config.on_chain.yield_timeout_blocks,
                ) {
                    crate::controllers::RequestOnChain::Mismatch(differences) => differences,
                    // Settled since the page was read: nothing to make.
                    _ => return Ok(()),
                }
            }
            None => "spec.onChain is missing".to_string(),
        };
        self.ctx.metrics.untrusted_object("ExecutionRequest");
        let message = format!(
            "{name} was not written from the chain ({differences}); it is deleted so that the request runs as the contract holds it"
        );
        warn!(execution = %name, %differences, "an ExecutionRequest under a chain request's name was not written from the chain");
        self.ctx
            .publish(
                &existing,
                Note::Warning(Reason::OnChainMismatch, message.clone()),
            )
            .await;
        let preconditions = kube::api::Preconditions {
            uid: existing.metadata.uid.clone(),
            resource_version: None,
        };
        let params = kube::api::DeleteParams {
            preconditions: Some(preconditions),
            ..kube::api::DeleteParams::background()
        };
        match self.executions.delete(&name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(Error::api("deleting ExecutionRequest", &name)(e)),
        }
        Err(Error::Untrusted {
            kind: "ExecutionRequest",
            name,
            why: message,
        })
    }

    async fn refuse(&self, request_id: u64, reason: &str) -> Result<()> {
        warn!(request_id, %reason, "the cluster refused the request; answering it as failed");
        let response = ExecutionResponse {
            success: false,
            output: None,
            error: Some(format!("the operator cannot run this request: {reason}")),
            resources_used: ResourceMetrics {
                instructions: 0,
                time_ms: 0,
                compile_time_ms: None,
            },
            evidence: None,
        };
        self.chain
            .report_execution(request_id, response)
            .await
            .map(|_| ())
            .map_err(chain_error("answering a refused request"))
    }
}

/// Where the watcher resumes: the stored cursor when it counted this contract's requests (a cursor
/// stored before the contract was recorded is taken as this contract's), else from request 0.
fn cursor_to_resume(stored: Option<u64>, stored_contract: Option<&str>, contract: &str) -> u64 {
    match (stored, stored_contract) {
        (Some(cursor), None) => cursor,
        (Some(cursor), Some(counted)) if counted == contract => cursor,
        _ => 0,
    }
}

fn chain_error(what: &'static str) -> impl FnOnce(ChainError) -> Error {
    move |source| Error::Chain {
        what: what.to_string(),
        source,
    }
}

/// The ExecutionRequest for a pending on-chain request.
pub fn execution_request(
    request: &PendingRequest,
    input: String,
    yield_timeout_blocks: u64,
) -> ExecutionRequest {
    let code = CodeRef {
        source: request.code_source.as_ref().map(|code| CompileSource {
            repo: code.repo.clone(),
            commit: code.commit.clone(),
            build_target: code
                .build_target
                .clone()
                .unwrap_or_else(|| BUILD_TARGET_WASIP1.to_string()),
        }),
        // The contract validated the URL and the hash (64 hex, stored lower case); the CRD and the
        // operator's fetch check them again.
        module_url: request.wasm_url.as_ref().map(|wasm_url| ModuleUrl {
            url: wasm_url.url.clone(),
            sha256: wasm_url.hash.to_ascii_lowercase(),
        }),
        wasm_sha256: None,
    };
    let mut execution = ExecutionRequest::new(
        &execution_name(request.request_id),
        ExecutionRequestSpec {
            code,
            input,
            limits: if request.compile_only && request.resource_limits.max_instructions == 0 {
                // A compile-only request without limits runs nothing; the CRD wants limits anyway.
                Limits::COMPILE_ONLY
            } else {
                Limits {
                    max_instructions: request.resource_limits.max_instructions,
                    max_memory_mb: request.resource_limits.max_memory_mb,
                    max_execution_seconds: request.resource_limits.max_execution_seconds,
                }
            },
            compile_only: request.compile_only,
            response_format: match request.response_format {
                outlayer_contract::ResponseFormat::Text => ResponseFormat::Text,
                outlayer_contract::ResponseFormat::Json => ResponseFormat::Json,
                outlayer_contract::ResponseFormat::Bytes => ResponseFormat::Bytes,
            },
            secrets_ref: request.secrets_ref.as_ref().map(|secrets| SecretsRef {
                account_id: secrets.account_id.to_string(),
                profile: secrets.profile.clone(),
            }),
            // Seeded by the chain (`onChain.seedPublicKey`), never by the spec.
            deterministic: None,
            on_chain: Some(OnChain {
                request_id: request.request_id,
                data_id: request.data_id.clone(),
                sender: request.sender_id.to_string(),
                deposit: request.payment.0.to_string(),
                block_height: request.created_at_block,
                block_timestamp_ns: request.created_at_ns,
                yield_deadline_height: request.created_at_block + yield_timeout_blocks,
                include_stderr: request.include_stderr,
                seed_public_key: request.seed_public_key.as_ref().map(ToString::to_string),
            }),
        },
    );
    execution.metadata.labels = Some(BTreeMap::from([
        (SOURCE_LABEL.to_string(), "chain".to_string()),
        (REQUEST_ID_LABEL.to_string(), request.request_id.to_string()),
    ]));
    execution
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(json: serde_json::Value) -> PendingRequest {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_cursor_resumes_only_for_the_contract_it_counted() {
        let rows = [
            (None, None, 0),
            (Some(42), None, 42),
            (Some(42), Some("outlayer.near"), 42),
            (Some(42), Some("old.near"), 0),
            (None, Some("outlayer.near"), 0),
        ];
        for (stored, counted, expected) in rows {
            assert_eq!(
                cursor_to_resume(stored, counted, "outlayer.near"),
                expected,
                "{stored:?} {counted:?}"
            );
        }
    }

    #[test]
    fn pending_requests_become_execution_requests_with_their_deadline() {
        let request = pending(serde_json::json!({
            "request_id": 42, "data_id": "3xQ", "sender_id": "client.near",
            "code_source": {"repo": "https://github.com/alice/app", "commit": "main"},
            "resource_limits": {"max_instructions": 5_000_000u64, "max_memory_mb": 64,
                                "max_execution_seconds": 7},
            "input_data": "hi", "input_omitted": false,
            "secrets_ref": {"profile": "prod", "account_id": "alice.near"},
            "response_format": "Json", "payment": "1000", "created_at_block": 900,
            "created_at_ns": 1
        }));
        let execution = execution_request(&request, "hi".to_string(), 200);
        assert_eq!(execution.metadata.name.as_deref(), Some("req-42"));
        let spec = &execution.spec;
        let source = spec.code.source.as_ref().unwrap();
        assert_eq!(source.repo, "https://github.com/alice/app");
        assert_eq!(source.commit, "main");
        assert_eq!(source.build_target, BUILD_TARGET_WASIP1);
        assert_eq!(spec.limits.max_execution_seconds, 7);
        assert_eq!(spec.response_format, ResponseFormat::Json);
        assert_eq!(spec.secrets_ref.as_ref().unwrap().account_id, "alice.near");
        let on_chain = spec.on_chain.as_ref().unwrap();
        assert_eq!(on_chain.deposit, "1000");
        assert_eq!(on_chain.yield_deadline_height, 1100);
        assert_eq!(
            execution.metadata.labels.as_ref().unwrap()[REQUEST_ID_LABEL],
            "42"
        );
    }

    #[test]
    fn a_wasm_url_request_becomes_a_module_by_url() {
        let request = pending(serde_json::json!({
            "request_id": 43, "data_id": "3xQ", "sender_id": "client.near",
            "source_kind": "WasmUrl",
            "wasm_url": {"url": "https://modules.example/app.wasm", "hash": "AB".repeat(32),
                         "build_target": "wasm32-wasip1"},
            "resource_limits": {"max_instructions": 5_000_000u64, "max_memory_mb": 64,
                                "max_execution_seconds": 7},
            "input_data": "hi", "input_omitted": false,
            "response_format": "Text", "payment": "1000", "created_at_block": 900,
            "created_at_ns": 1
        }));
        let code = execution_request(&request, "hi".to_string(), 200).spec.code;
        assert_eq!(code.source, None);
        assert_eq!(code.wasm_sha256, None);
        let module_url = code.module_url.unwrap();
        assert_eq!(module_url.url, "https://modules.example/app.wasm");
        assert_eq!(
            module_url.sha256,
            "ab".repeat(32),
            "the CRD wants lower-case hex"
        );
    }
}
