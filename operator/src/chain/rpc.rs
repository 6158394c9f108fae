//! Several JSON-RPC endpoints behind one call: per-call timeouts, failover to the next endpoint on a
//! transient error, and jittered exponential backoff after each full round over the endpoints.
//!
//! URLs are used verbatim (near-jsonrpc-client POSTs to the exact string), so API keys in the query
//! (`?apiKey=…`) or the path keep working, and reqwest turns `https://user:key@host` into basic auth.
//! Because of that a URL is a secret: logs and errors only ever show `rpc#<i> <scheme>://<host>:<port>`.

use std::fmt::{Debug, Display};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use near_jsonrpc_client::errors::{
    JsonRpcError, JsonRpcServerError, JsonRpcServerResponseStatusError, JsonRpcTransportSendError,
    RpcTransportError,
};
use near_jsonrpc_client::{JsonRpcClient, methods::RpcMethod};
use near_jsonrpc_primitives::types::blocks::RpcBlockError;
use near_jsonrpc_primitives::types::query::RpcQueryError;
use near_jsonrpc_primitives::types::transactions::RpcTransactionError;

use super::errors::{ChainError, error_chain};

/// How often and how patiently a call is retried.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in total over all endpoints (≥ 1).
    pub max_attempts: u32,
    /// Backoff before the second round; doubles per round.
    pub base_delay: Duration,
    /// Cap on one backoff.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The delays before each retry round: exponential from `base_delay`, doubling, capped at
    /// `max_delay`, with "equal jitter" — half the exponential delay plus a random part of the other
    /// half, so clients that failed together do not retry together, yet never retry at once. backon
    /// adds a random part of up to the current delay on top of it, so its exponential runs at half
    /// of ours. Never ends; the caller stops at `max_attempts`.
    pub fn backoff(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        ExponentialBuilder::new()
            .with_min_delay(self.base_delay / 2)
            .with_max_delay(self.max_delay / 2)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    }
}

/// Whether a node's own error answer (not a transport failure) will pass if asked again.
pub(crate) trait HandlerError: Display + Debug {
    fn is_transient(&self) -> bool;
}

impl HandlerError for RpcQueryError {
    fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::NoSyncedBlocks | Self::UnavailableShard { .. } | Self::InternalError { .. }
        )
    }
}

impl HandlerError for RpcBlockError {
    fn is_transient(&self) -> bool {
        matches!(self, Self::NotSyncedYet | Self::InternalError { .. })
    }
}

impl HandlerError for RpcTransactionError {
    fn is_transient(&self) -> bool {
        // A routed or timed-out transaction is in flight: asking again (by hash) tells its fate.
        matches!(
            self,
            Self::DoesNotTrackShard
                | Self::RequestRouted { .. }
                | Self::InternalError { .. }
                | Self::TimeoutError(_)
        )
    }
}

/// The result of one call that did not succeed.
#[derive(Debug)]
pub(crate) enum CallError<E> {
    /// The node answered with a permanent error of the method's own type.
    Handler { error: E, endpoint: String },
    /// Anything else: a permanent transport/protocol error, or retries exhausted.
    Chain(ChainError),
}

/// The result of one attempt that did not succeed.
#[derive(Debug)]
pub(crate) enum AttemptError<E> {
    Transient(ChainError),
    Handler { error: E, endpoint: String },
    Permanent(ChainError),
}

struct Endpoint {
    client: JsonRpcClient,
    /// What logs and errors show instead of the URL.
    label: String,
    /// The URL as given and as reqwest prints it; scrubbed from every message.
    secrets: Vec<String>,
}

impl Endpoint {
    fn scrub(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in &self.secrets {
            if !secret.is_empty() {
                text = text.replace(secret.as_str(), &self.label);
            }
        }
        text
    }
}

pub(crate) struct RpcPool {
    endpoints: Vec<Endpoint>,
    preferred: AtomicUsize,
    retry: RetryPolicy,
}

impl RpcPool {
    pub(crate) fn new(
        urls: &[String],
        connect_timeout: Duration,
        retry: RetryPolicy,
    ) -> Result<Self, ChainError> {
        if urls.is_empty() {
            return Err(ChainError::NoEndpoints);
        }
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static("application/json"),
        );
        // Per-call deadlines are enforced around each call (waiting transactions need longer than
        // views); the client itself only bounds connecting.
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(connect_timeout)
            .build()
            .map_err(|e| ChainError::InvalidEndpoint {
                index: 0,
                reason: format!("cannot build the HTTP client: {}", error_chain(&e)),
            })?;
        let connector = JsonRpcClient::with(http);
        let mut endpoints = Vec::with_capacity(urls.len());
        for (index, raw) in urls.iter().enumerate() {
            let raw = raw.trim();
            let url = reqwest::Url::parse(raw).map_err(|e| ChainError::InvalidEndpoint {
                index,
                reason: e.to_string(),
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(ChainError::InvalidEndpoint {
                    index,
                    reason: format!("scheme {:?} with no host is not http(s)", url.scheme()),
                });
            }
            let host = url.host_str().unwrap_or_default();
            let label = match url.port() {
                Some(port) => format!("rpc#{index} {}://{host}:{port}", url.scheme()),
                None => format!("rpc#{index} {}://{host}", url.scheme()),
            };
            endpoints.push(Endpoint {
                client: connector.connect(raw),
                label,
                secrets: vec![raw.to_string(), url.to_string()],
            });
        }
        Ok(Self {
            endpoints,
            preferred: AtomicUsize::new(0),
            retry,
        })
    }

    pub(crate) fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    pub(crate) fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    /// After a transient failure on `index`, later calls start at the next endpoint. Only the first
    /// of several concurrent failures on the same endpoint moves the preference.
    fn fail_over(&self, index: usize) {
        let next = (index + 1) % self.endpoints.len();
        let _ = self
            .preferred
            .compare_exchange(index, next, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// One attempt on the preferred endpoint.
    pub(crate) async fn attempt<M>(
        &self,
        method: &'static str,
        request: M,
        timeout: Duration,
    ) -> Result<M::Response, AttemptError<M::Error>>
    where
        M: RpcMethod,
        M::Error: HandlerError,
    {
        let index = self.preferred.load(Ordering::SeqCst) % self.endpoints.len();
        let endpoint = &self.endpoints[index];
        let result = tokio::time::timeout(timeout, endpoint.client.call(request)).await;
        let error = match result {
            Ok(Ok(response)) => return Ok(response),
            Ok(Err(error)) => error,
            Err(_) => {
                self.fail_over(index);
                return Err(AttemptError::Transient(ChainError::Timeout {
                    method,
                    endpoint: endpoint.label.clone(),
                    after: timeout,
                }));
            }
        };
        let classified = classify(method, endpoint, error);
        if matches!(classified, AttemptError::Transient(_)) {
            self.fail_over(index);
        }
        if let AttemptError::Transient(error) = &classified {
            tracing::debug!(method, endpoint = %endpoint.label, %error, "transient RPC failure");
        }
        Err(classified)
    }

    /// Attempts until success, a permanent error or `max_attempts`. `make` builds the request anew
    /// for each attempt; `input` names it in errors.
    pub(crate) async fn call<M>(
        &self,
        method: &'static str,
        input: &str,
        timeout: Duration,
        make: impl Fn() -> M,
    ) -> Result<M::Response, CallError<M::Error>>
    where
        M: RpcMethod,
        M::Error: HandlerError,
    {
        let max_attempts = self.retry.max_attempts.max(1);
        let mut attempt = 0u32;
        let mut backoff = self.retry.backoff();
        loop {
            match self.attempt(method, make(), timeout).await {
                Ok(response) => return Ok(response),
                Err(AttemptError::Handler { error, endpoint }) => {
                    return Err(CallError::Handler { error, endpoint });
                }
                Err(AttemptError::Permanent(error)) => return Err(CallError::Chain(error)),
                Err(AttemptError::Transient(error)) => {
                    attempt += 1;
                    if attempt >= max_attempts {
                        return Err(CallError::Chain(ChainError::Exhausted {
                            method,
                            input: input.to_string(),
                            attempts: attempt,
                            last: Box::new(error),
                        }));
                    }
                    self.pause_before(attempt, &mut backoff).await;
                }
            }
        }
    }

    /// Failing over to the next endpoint is immediate; after a whole round failed, back off by the
    /// next delay of `backoff` (one [`RetryPolicy::backoff`] per call).
    pub(crate) async fn pause_before(
        &self,
        attempt: u32,
        backoff: &mut (impl Iterator<Item = Duration> + Send),
    ) {
        let endpoints = self.endpoints.len() as u32;
        if attempt.is_multiple_of(endpoints) {
            let delay = backoff.next().unwrap_or(self.retry.max_delay);
            tokio::time::sleep(delay).await;
        }
    }
}

fn classify<E: HandlerError>(
    method: &'static str,
    endpoint: &Endpoint,
    error: JsonRpcError<E>,
) -> AttemptError<E> {
    let label = || endpoint.label.clone();
    let transport = |message: String| {
        AttemptError::Transient(ChainError::Transport {
            method,
            endpoint: label(),
            message: endpoint.scrub(&message),
        })
    };
    let status = |status: u16| {
        AttemptError::Transient(ChainError::HttpStatus {
            method,
            endpoint: label(),
            status,
        })
    };
    let permanent = |message: String| {
        AttemptError::Permanent(ChainError::Rpc {
            method,
            input: String::new(),
            endpoint: label(),
            message: endpoint.scrub(&message),
        })
    };
    match error {
        JsonRpcError::ServerError(JsonRpcServerError::HandlerError(error)) => {
            if error.is_transient() {
                AttemptError::Transient(ChainError::NodeBusy {
                    method,
                    endpoint: label(),
                    message: endpoint.scrub(&error.to_string()),
                })
            } else {
                AttemptError::Handler {
                    error,
                    endpoint: label(),
                }
            }
        }
        JsonRpcError::ServerError(JsonRpcServerError::ResponseStatusError(response)) => {
            match response {
                JsonRpcServerResponseStatusError::TooManyRequests => status(429),
                JsonRpcServerResponseStatusError::ServiceUnavailable => status(503),
                JsonRpcServerResponseStatusError::TimeoutError => status(408),
                JsonRpcServerResponseStatusError::Unexpected { status: code }
                    if code.is_server_error() =>
                {
                    status(code.as_u16())
                }
                // 401/400/other 4xx: the same request on the same key will not pass.
                other => permanent(format!("HTTP error: {other}")),
            }
        }
        // The client maps HTTP 500 here; nearcore also reports its own internal failures this way.
        JsonRpcError::ServerError(JsonRpcServerError::InternalError { info }) => {
            AttemptError::Transient(ChainError::NodeBusy {
                method,
                endpoint: label(),
                message: endpoint.scrub(info.as_deref().unwrap_or("internal error")),
            })
        }
        JsonRpcError::ServerError(other) => permanent(other.to_string()),
        JsonRpcError::TransportError(RpcTransportError::SendError(
            JsonRpcTransportSendError::PayloadSendError(error),
        )) => transport(error_chain(&error.without_url())),
        JsonRpcError::TransportError(RpcTransportError::SendError(
            JsonRpcTransportSendError::PayloadSerializeError(error),
        )) => AttemptError::Permanent(ChainError::EncodeArgs {
            method: method.to_string(),
            reason: error.to_string(),
        }),
        // A cut-off body or a proxy's error page: another attempt or endpoint may do better.
        JsonRpcError::TransportError(RpcTransportError::RecvError(error)) => {
            transport(error_chain(&error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        // backon computes in f32 seconds: a microsecond covers its rounding, nothing more.
        let slack = Duration::from_micros(1);
        for (round, delay) in policy.backoff().take(12).enumerate() {
            let full = (Duration::from_millis(100) * (1 << round.min(20))).min(policy.max_delay);
            assert!(
                delay + slack >= full / 2 && delay <= full + slack,
                "round {round}: {delay:?} not in [{:?}, {full:?}]",
                full / 2
            );
        }
        let samples: std::collections::BTreeSet<Duration> =
            (0..20).filter_map(|_| policy.backoff().nth(3)).collect();
        assert!(samples.len() > 1, "jitter varies: {samples:?}");
        assert!(
            policy.backoff().nth(1000).is_some(),
            "the delays never run out; max_attempts ends the retries"
        );
    }

    #[test]
    fn labels_hide_keys_in_urls_and_invalid_urls_are_named_by_index() {
        let pool = RpcPool::new(
            &[
                "https://user:s3cret@rpc.example.org/v1/KEYINPATH?apikey=KEYINQUERY".to_string(),
                "http://127.0.0.1:3030".to_string(),
            ],
            Duration::from_secs(1),
            RetryPolicy::default(),
        )
        .unwrap();
        assert_eq!(pool.endpoints[0].label, "rpc#0 https://rpc.example.org");
        assert_eq!(pool.endpoints[1].label, "rpc#1 http://127.0.0.1:3030");
        let scrubbed = pool.endpoints[0].scrub(
            "error sending request for url (https://user:s3cret@rpc.example.org/v1/KEYINPATH?apikey=KEYINQUERY)",
        );
        assert!(
            !scrubbed.contains("KEYIN") && !scrubbed.contains("s3cret"),
            "{scrubbed}"
        );

        let error = RpcPool::new(
            &["http://ok.example".to_string(), "not a url".to_string()],
            Duration::from_secs(1),
            RetryPolicy::default(),
        )
        .err()
        .unwrap();
        assert!(
            matches!(error, ChainError::InvalidEndpoint { index: 1, .. }),
            "{error}"
        );
        assert!(matches!(
            RpcPool::new(&[], Duration::from_secs(1), RetryPolicy::default()),
            Err(ChainError::NoEndpoints)
        ));
    }
}
