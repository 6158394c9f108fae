//! The HTTP side: JSON-RPC on `POST /` (subject to the fault switch), the admin endpoint for the
//! fault switch on `/admin/fault`, and the block producer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use near_jsonrpc_primitives::errors::{RpcError, RpcErrorKind};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::chain::Chain;
use crate::faults::{Fault, FaultState, FaultSwitch, RequestKind};
use crate::rpc::{Failure, Rpc};

#[derive(Clone)]
pub(crate) struct App {
    pub rpc: Arc<Rpc>,
    pub faults: FaultSwitch,
}

/// nearcore's RPC `json_payload_max_size` default (10 MiB): larger request bodies are refused.
pub(crate) const JSON_PAYLOAD_MAX_SIZE: usize = 10 * 1024 * 1024;

pub(crate) fn router(app: App) -> Router {
    Router::new()
        .route(
            "/",
            post(json_rpc).layer(DefaultBodyLimit::max(JSON_PAYLOAD_MAX_SIZE)),
        )
        .route(
            "/admin/fault",
            get(get_fault).post(set_fault).delete(clear_fault),
        )
        .with_state(app)
}

async fn json_rpc(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            // A client reads JSON-RPC errors, not axum's plain-text 413: a request nearcore cannot
            // read is a parse error (HTTP 400 by nearcore's mapping) in the JSON-RPC envelope.
            let error = RpcError::parse_error(format!(
                "the request body was not read ({}); bodies are limited to {JSON_PAYLOAD_MAX_SIZE} bytes",
                rejection.body_text()
            ));
            return (http_status(&error), Json(envelope(Value::Null, Err(error)))).into_response();
        }
    };
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            let error = RpcError::parse_error(format!("the body is not JSON: {e}"));
            return (
                StatusCode::BAD_REQUEST,
                Json(envelope(Value::Null, Err(error))),
            )
                .into_response();
        }
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let params = request.get("params").cloned().unwrap_or(Value::Null);
    let kind = RequestKind::of(&method);
    let mut drop_transactions = false;
    match app.faults.take(kind) {
        Some(Fault::HttpError { status }) => {
            tracing::info!(%method, status, "fault switch: HTTP error");
            return StatusCode::from_u16(status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                .into_response();
        }
        Some(Fault::NoAnswer) => {
            tracing::info!(%method, "fault switch: never answering");
            std::future::pending::<()>().await;
        }
        Some(Fault::DropTransactions) => drop_transactions = true,
        Some(Fault::LoseAnswers) => {
            tracing::info!(%method, "fault switch: answer lost");
            if kind == RequestKind::Submit {
                // The transaction is included all the same; only its answer never comes.
                let (rpc, method, params) = (app.rpc.clone(), method.clone(), params.clone());
                tokio::spawn(async move { rpc.call(&method, params, false).await });
            }
            std::future::pending::<()>().await;
        }
        None => {}
    }
    match app.rpc.call(&method, params, drop_transactions).await {
        Ok(result) => Json(envelope(id, Ok(result))).into_response(),
        Err(Failure { error, force_ok }) => {
            tracing::debug!(%method, error = %error, "RPC error");
            let status = if force_ok {
                StatusCode::OK
            } else {
                http_status(&error)
            };
            (status, Json(envelope(id, Err(error)))).into_response()
        }
    }
}

/// nearcore's mapping of RPC error kinds to HTTP statuses.
fn http_status(error: &RpcError) -> StatusCode {
    match &error.error_struct {
        Some(RpcErrorKind::RequestValidationError(_)) => StatusCode::BAD_REQUEST,
        Some(RpcErrorKind::HandlerError(cause)) if cause["name"] == "TIMEOUT_ERROR" => {
            StatusCode::REQUEST_TIMEOUT
        }
        Some(RpcErrorKind::InternalError(_)) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::OK,
    }
}

fn envelope(id: Value, result: Result<Value, RpcError>) -> Value {
    match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(error) => json!({"jsonrpc": "2.0", "id": id, "error": error}),
    }
}

#[derive(serde::Deserialize)]
struct SetFault {
    #[serde(flatten)]
    fault: Fault,
    /// Requests it applies to; until cleared when omitted.
    #[serde(default)]
    requests: Option<u64>,
}

async fn get_fault(State(app): State<App>) -> Json<Option<FaultState>> {
    Json(app.faults.current())
}

async fn set_fault(State(app): State<App>, Json(request): Json<SetFault>) -> Response {
    if let Fault::HttpError { status } = request.fault
        && StatusCode::from_u16(status).is_err()
    {
        return (
            StatusCode::BAD_REQUEST,
            format!("{status} is not an HTTP status code"),
        )
            .into_response();
    }
    match request.requests {
        Some(requests) => app.faults.set_for(request.fault, requests),
        None => app.faults.set(request.fault),
    }
    Json(app.faults.current()).into_response()
}

async fn clear_fault(State(app): State<App>) -> StatusCode {
    app.faults.clear();
    StatusCode::NO_CONTENT
}

/// Produces a block every `block_time` on its own thread (blocks run contract code, which must
/// not stall the async runtime), publishing each new height.
pub(crate) fn spawn_block_producer(
    chain: Arc<Mutex<Chain>>,
    block_time: Duration,
    heights: watch::Sender<u64>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("localnet-blocks".to_string())
        .spawn(move || {
            let mut next = Instant::now() + block_time;
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                if now < next {
                    // Short sleeps so a stop request is seen quickly.
                    std::thread::sleep((next - now).min(Duration::from_millis(50)));
                    continue;
                }
                next += block_time;
                if next < now {
                    next = now + block_time;
                }
                let started = Instant::now();
                let height = {
                    let mut chain = chain.lock().unwrap_or_else(PoisonError::into_inner);
                    chain.produce_block(now_ns()).height
                };
                let took = started.elapsed();
                if took > block_time {
                    // RPC calls wait for the chain lock meanwhile; worth knowing in a slow test.
                    tracing::warn!(
                        height,
                        took_ms = took.as_millis(),
                        "block took longer than the block time"
                    );
                }
                heights.send_replace(height);
            }
        })
}

pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

pub(crate) fn bind_error(addr: SocketAddr, source: std::io::Error) -> crate::Error {
    crate::Error::Bind { addr, source }
}
