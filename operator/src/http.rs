//! The operator's HTTP endpoints: `/metrics` (Prometheus), `/healthz` (liveness), `/readyz`
//! (readiness).
//!
//! Readiness: a replica is ready when it is of use — the leader once its controllers can list the
//! resources they watch, a standby once it has read the leader Lease (it is healthy and will take
//! over). Reporting standbys as not ready would look right on a dashboard but stalls every rolling
//! update of a two-replica Deployment (the new standby never becomes ready), and the Service in
//! front only serves `/metrics`, which standbys answer too.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::{self, Metrics};

/// Whether this replica is ready, and if not, why (shown by `/readyz`).
#[derive(Debug)]
pub struct Readiness {
    not_ready: Mutex<Option<String>>,
}

impl Readiness {
    /// Starts not ready, with `reason`.
    pub fn new(reason: &str) -> Self {
        Self {
            not_ready: Mutex::new(Some(reason.to_string())),
        }
    }

    pub fn set_ready(&self) {
        *self.lock() = None;
    }

    pub fn set_not_ready(&self, reason: &str) {
        *self.lock() = Some(reason.to_string());
    }

    /// `Ok` when ready, else the reason.
    pub fn check(&self) -> Result<(), String> {
        match &*self.lock() {
            None => Ok(()),
            Some(reason) => Err(reason.clone()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // A poisoned lock still holds a valid Option: the panicking writer replaced it whole.
        self.not_ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Clone)]
struct Endpoints {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

pub fn router(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Endpoints { metrics, readiness })
}

async fn serve_metrics(State(endpoints): State<Endpoints>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        endpoints.metrics.encode(),
    )
        .into_response()
}

async fn ready(State(endpoints): State<Endpoints>) -> Response {
    match endpoints.readiness.check() {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

/// Binds `addr`; separate from [`serve`] so a bind failure is reported before anything else starts.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, readiness))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A plain HTTP/1.1 GET; returns (status, content-type, body).
    async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
        let content_type = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-type")
                    .then(|| value.trim().to_string())
            })
            .unwrap_or_default();
        (status, content_type, body.to_string())
    }

    #[tokio::test]
    async fn endpoints_answer_over_tcp() {
        let metrics = Arc::new(Metrics::new());
        let readiness = Arc::new(Readiness::new("controllers not started"));
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            metrics.clone(),
            readiness.clone(),
            async move {
                let _ = stopped.await;
            },
        ));

        let (status, _, body) = get(addr, "/healthz").await;
        assert_eq!((status, body.as_str()), (200, "ok\n"));

        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.contains("controllers not started"), "{body}");
        readiness.set_ready();
        let (status, _, _) = get(addr, "/readyz").await;
        assert_eq!(status, 200);
        readiness.set_not_ready("lease lost");
        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.contains("lease lost"), "{body}");

        metrics.set_queue_depth(3);
        let (status, content_type, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        assert!(body.contains("\noutlayer_queue_depth 3\n"), "{body}");

        let (status, _, _) = get(addr, "/nothing").await;
        assert_eq!(status, 404);

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
