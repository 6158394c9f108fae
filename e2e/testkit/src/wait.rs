//! Polling waits: a condition decides, the limit only bounds a hung test.

use std::future::Future;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(200);

/// Polls `probe` until it yields a value; panics after `limit` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_until(what, limit, || {
        let attempt = probe();
        async move { attempt.await.ok_or_else(String::new) }
    })
    .await
}

/// Polls `probe` until it returns `Ok`; panics after `limit` naming `what` and the last observation
/// (the `Err` it returned).
pub async fn wait_until<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let last = match probe().await {
            Ok(value) => return value,
            Err(observed) => observed,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}{}",
            if last.is_empty() {
                String::new()
            } else {
                format!("; last: {last}")
            }
        );
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_value_the_probe_yields() {
        let mut calls = 0;
        let value = wait_for("the third call", Duration::from_secs(10), || {
            calls += 1;
            let now = calls;
            async move { (now == 3).then_some(now) }
        })
        .await;
        assert_eq!(value, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for nothing; last: still no")]
    async fn fails_naming_what_and_the_last_observation() {
        wait_until::<(), _, _>("nothing", Duration::from_millis(1), || async {
            Err("still no".to_string())
        })
        .await;
    }
}
