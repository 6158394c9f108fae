//! How many requests the API server served during a step, by verb and resource, read from its own
//! `apiserver_request_total` counter on `/metrics`. It counts every client (the operator, the node's
//! kubelet or agent, the controller-manager, the scheduler, the bench's watches), so a step's figure
//! divided by its requests is what one on-chain request costs the API server.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Context as _;

/// The counter's name in the API server's metrics.
const METRIC: &str = "apiserver_request_total";

/// Requests served, by (verb, resource or resource/subresource).
#[derive(Debug, Default, PartialEq)]
pub struct RequestCounts(BTreeMap<(String, String), u64>);

impl RequestCounts {
    /// Reads the API server's counters now (the client needs `get` on the `/metrics` URL).
    pub async fn take(client: &kube::Client) -> anyhow::Result<Self> {
        let request = http::Request::get("/metrics")
            .body(Vec::new())
            .context("build the GET /metrics request")?;
        let text = client
            .request_text(request)
            .await
            .context("read the API server's /metrics")?;
        Ok(parse(&text))
    }

    /// What was served between `before` and `self`.
    pub fn since(&self, before: &Self) -> Self {
        Self(
            self.0
                .iter()
                .map(|(key, &after)| {
                    let earlier = before.0.get(key).copied().unwrap_or(0);
                    (key.clone(), after.saturating_sub(earlier))
                })
                .filter(|&(_, served)| served > 0)
                .collect(),
        )
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// One line: the total per request, then the `top` largest kinds per request.
    pub fn per_request(&self, requests: usize, top: usize) -> String {
        let per = |count: u64| count as f64 / requests.max(1) as f64;
        let mut kinds: Vec<_> = self.0.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        let mut line = format!(
            "API server: {} requests served = {:.1} per on-chain request",
            self.total(),
            per(self.total())
        );
        for ((verb, resource), &count) in kinds.into_iter().take(top) {
            let _ = write!(line, "; {verb} {resource} {:.2}", per(count));
        }
        line
    }
}

/// The `apiserver_request_total` samples of a Prometheus text exposition, summed over the labels
/// other than verb, resource and subresource (codes, groups, versions, scopes).
pub fn parse(text: &str) -> RequestCounts {
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(METRIC) else {
            continue;
        };
        let Some(rest) = rest.strip_prefix('{') else {
            continue;
        };
        let Some((labels, value)) = split_labels(rest) else {
            continue;
        };
        // A sample is `value [timestamp]`; counters are printed as floats.
        let Some(value) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        let label = |name: &str| {
            labels
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
                .unwrap_or("")
        };
        let resource = match (label("resource"), label("subresource")) {
            ("", _) => "(non-resource)".to_string(),
            (resource, "") => resource.to_string(),
            (resource, sub) => format!("{resource}/{sub}"),
        };
        *counts
            .entry((label("verb").to_string(), resource))
            .or_insert(0) += value as u64;
    }
    RequestCounts(counts)
}

/// Splits `key="value",…} rest` into its labels (quotes unescaped) and what follows the `}`.
fn split_labels(text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after_key) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after_key.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        rest = &after_key[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(entries: &[(&str, &str, u64)]) -> RequestCounts {
        RequestCounts(
            entries
                .iter()
                .map(|&(verb, resource, n)| ((verb.to_string(), resource.to_string()), n))
                .collect(),
        )
    }

    #[test]
    fn samples_are_summed_by_verb_and_resource() {
        let text = r#"# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="status",verb="PATCH",version="v1"} 12
apiserver_request_total{code="409",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="status",verb="PATCH",version="v1"} 3
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="POST",version="v1"} 4
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="",scope="",subresource="",verb="GET",version=""} 7
apiserver_request_total{code="200",component="",dry_run="",group="a\"b",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 1e+01
apiserver_request_duration_seconds_count{resource="pods",verb="GET"} 99
apiserver_request_total_other{resource="pods",verb="GET"} 5
"#;
        assert_eq!(
            parse(text),
            counts(&[
                ("PATCH", "pods/status", 15),
                ("POST", "pods", 4),
                ("GET", "(non-resource)", 7),
                ("PUT", "leases", 10),
            ])
        );
    }

    #[test]
    fn malformed_lines_are_skipped() {
        for text in [
            "apiserver_request_total 5",
            "apiserver_request_total{verb=\"GET\"",
            "apiserver_request_total{verb=\"GET} 5",
            "apiserver_request_total{verb=\"GET\"} five",
        ] {
            assert_eq!(parse(text), RequestCounts::default(), "{text}");
        }
    }

    #[test]
    fn a_step_counts_what_grew() {
        let before = counts(&[("GET", "pods", 5), ("PUT", "leases", 2)]);
        let after = counts(&[
            ("GET", "pods", 9),
            ("PUT", "leases", 2),
            ("POST", "events", 3),
        ]);
        let step = after.since(&before);
        assert_eq!(step, counts(&[("GET", "pods", 4), ("POST", "events", 3)]));
        assert_eq!(step.total(), 7);
        assert_eq!(
            step.per_request(2, 1),
            "API server: 7 requests served = 3.5 per on-chain request; GET pods 2.00"
        );
    }
}
