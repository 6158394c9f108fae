//! Modules by URL (`outlayer-compiler fetch-url`, issue 16): a prebuilt module is downloaded, checked
//! against the sha256 the request named and published into the cache by that hash. Nothing is built.
//!
//! What a URL may reach is decided here, in the pod that downloads, because only here are the
//! addresses known:
//! - `https` only, no credentials in the URL, at most [`MAX_URL_BYTES`];
//! - every host is resolved by us and **every** address it resolves to must be public (not loopback,
//!   private, link-local, unique-local, CGNAT, multicast, documentation or reserved) unless the
//!   operator's allow-list (`--allow-cidr`, a test mirror) admits it; the connection then goes to
//!   exactly the addresses checked (no second lookup a rebinding DNS server could answer otherwise);
//! - redirects are followed by hand, at most [`MAX_REDIRECTS`] hops, each hop checked as the first;
//! - the body is counted while it streams and the download stops at the size cap;
//! - the sha256 is compared before anything else reads the bytes; then the module is validated and
//!   published by write-to-temp + rename, like a built one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use reqwest::Url;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::module::validate_module;
use crate::publish::{Published, publish};

/// The size cap's default: far above any guest we build (a few hundred KiB), far below what would
/// strain the cache volume.
pub const DEFAULT_MAX_DOWNLOAD_BYTES: u64 = 32 * 1024 * 1024;
/// Redirect hops followed before giving up (browsers allow 20; a module host needs one or two).
pub const MAX_REDIRECTS: usize = 5;
/// The contract's `validate_wasm_url` bound.
pub const MAX_URL_BYTES: usize = 2048;

/// Addresses the operator admits although they are not public (its `--url-fetch-allow-cidr`,
/// empty by default): a mirror inside the cluster, or a test's server on loopback.
#[derive(Clone, Debug, Default)]
pub struct AddressPolicy {
    allowed: Vec<IpNet>,
}

impl AddressPolicy {
    pub fn new(cidrs: &[String]) -> Result<Self> {
        let allowed = cidrs
            .iter()
            .filter(|c| !c.trim().is_empty())
            .map(|cidr| {
                let cidr = cidr.trim();
                cidr.parse::<IpNet>()
                    .or_else(|_| cidr.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| Error::InvalidConfig(format!("{cidr:?} is not a CIDR")))
            })
            .collect::<Result<_>>()?;
        Ok(Self { allowed })
    }

    /// `None` when `ip` may be connected to, else why not.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        if self.allowed.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        non_public(ip)
    }
}

/// What kind of non-public address `ip` is (`None`: public). IPv4 inside IPv6 (mapped, NAT64,
/// 6to4) is judged by its IPv4 address.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "an unspecified (\"this network\") address",
        (127, _, _) => "a loopback address",
        (10, _, _) => "a private address",
        (172, 16..=31, _) => "a private address",
        (192, 168, _) => "a private address",
        (169, 254, _) => "a link-local address",
        (100, 64..=127, _) => "a shared (CGNAT) address",
        (192, 0, 0) => "an IETF protocol assignment",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation address",
        (198, 18..=19, _) => "a benchmarking address",
        (224..=239, _, _) => "a multicast address",
        (240..=255, _, _) => "a reserved or broadcast address",
        _ => return None,
    })
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return non_public_v4(v4);
    }
    let segments = ip.segments();
    if ip.is_unspecified() {
        return Some("an unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address a gateway would reach.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let v4 = Ipv4Addr::from(((segments[6] as u32) << 16) | segments[7] as u32);
        return non_public_v4(v4);
    }
    if segments[0] == 0x2002 {
        let v4 = Ipv4Addr::from(((segments[1] as u32) << 16) | segments[2] as u32);
        return non_public_v4(v4);
    }
    Some(match segments[0] {
        s if s & 0xfe00 == 0xfc00 => "a unique-local address",
        s if s & 0xffc0 == 0xfe80 => "a link-local address",
        s if s & 0xffc0 == 0xfec0 => "a site-local address",
        s if s & 0xff00 == 0xff00 => "a multicast address",
        0x2001 if segments[1] == 0x0db8 => "a documentation address",
        0x0100 if segments[1..4] == [0, 0, 0] => "a discard-only address",
        // IPv4-compatible (::a.b.c.d, deprecated) and the rest of ::/8.
        0 => "a reserved address",
        _ => return None,
    })
}

/// The URL's form: `https://host[:port]/…`, no user or password, at most [`MAX_URL_BYTES`]. The
/// addresses are checked when the host is resolved ([`AddressPolicy`]).
pub fn check_url(raw: &str) -> Result<Url> {
    let refuse = |reason: String| Error::UrlRefused {
        url: raw.to_string(),
        reason,
    };
    if raw.len() > MAX_URL_BYTES {
        return Err(refuse(format!("longer than {MAX_URL_BYTES} bytes")));
    }
    let url = Url::parse(raw).map_err(|e| refuse(format!("not a URL ({e})")))?;
    if url.scheme() != "https" {
        return Err(refuse(format!(
            "only https URLs are fetched, not {}",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse("credentials in the URL are not allowed".to_string()));
    }
    if url.host().is_none() {
        return Err(refuse("no host".to_string()));
    }
    Ok(url)
}

/// The addresses `url`'s host may be reached at: an IP literal itself, else every address DNS gives
/// — all of them public (or allowed), or none is used.
async fn checked_addresses(url: &Url, policy: &AddressPolicy) -> Result<Vec<SocketAddr>> {
    let port = url.port_or_known_default().unwrap_or(443);
    let refuse = |reason: String| Error::UrlRefused {
        url: url.to_string(),
        reason,
    };
    let addresses: Vec<SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        Some(url::Host::Domain(host)) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Error::Download {
                url: url.to_string(),
                detail: format!("resolving {host}: {e}"),
            })?
            .collect(),
        None => return Err(refuse("no host".to_string())),
    };
    if addresses.is_empty() {
        return Err(Error::Download {
            url: url.to_string(),
            detail: "the host has no address".to_string(),
        });
    }
    let literal = !matches!(url.host(), Some(url::Host::Domain(_)));
    for address in &addresses {
        if let Some(kind) = policy.refusal(address.ip()) {
            let how = if literal {
                "its host is"
            } else {
                "its host resolves to"
            };
            return Err(refuse(format!("{how} {}, {kind}", address.ip())));
        }
    }
    Ok(addresses)
}

/// How the download is bounded and whom it trusts.
#[derive(Clone, Debug)]
pub struct DownloadConfig {
    pub policy: AddressPolicy,
    pub max_bytes: u64,
    /// The whole download, every hop together.
    pub timeout: Duration,
    /// Extra roots (PEM) besides the built-in public ones: a mirror's own CA.
    pub extra_roots_pem: Option<Vec<u8>>,
}

/// What a finished download produced.
#[derive(Clone, Debug)]
pub struct Downloaded {
    pub bytes: Vec<u8>,
    /// The URL the body came from (after redirects).
    pub final_url: String,
}

/// Downloads `raw_url` under `config`: checked form, checked addresses on every hop, at most
/// `max_bytes` read.
pub async fn download(raw_url: &str, config: &DownloadConfig) -> Result<Downloaded> {
    let started = Instant::now();
    let mut url = check_url(raw_url)?;
    let extra_roots = match &config.extra_roots_pem {
        Some(pem) => reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| Error::InvalidConfig(format!("the CA bundle is unreadable: {e}")))?,
        None => Vec::new(),
    };
    let mut redirected_from: Option<Url> = None;
    for hop in 0..=MAX_REDIRECTS {
        let addresses = match checked_addresses(&url, &config.policy).await {
            Ok(addresses) => addresses,
            Err(error) => {
                return Err(match &redirected_from {
                    Some(from) => redirect_refused(from, error),
                    None => error,
                });
            }
        };
        let left = config.timeout.saturating_sub(started.elapsed());
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .https_only(true)
            .timeout(left)
            .connect_timeout(left.min(Duration::from_secs(30)))
            .user_agent(concat!("outlayer-compiler/", env!("CARGO_PKG_VERSION")));
        if let Some(url::Host::Domain(host)) = url.host() {
            // The connection goes to the addresses just checked, never to a second lookup's.
            builder = builder.resolve_to_addrs(host, &addresses);
        }
        for root in &extra_roots {
            builder = builder.add_root_certificate(root.clone());
        }
        let client = builder.build().map_err(|e| Error::Download {
            url: url.to_string(),
            detail: format!("setting up the HTTP client: {e}"),
        })?;
        let response = client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| Error::Download {
                url: url.to_string(),
                detail: error_chain(&e),
            })?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| Error::Download {
                    url: url.to_string(),
                    detail: format!("HTTP {status} without a usable Location"),
                })?;
            let next = url.join(location).map_err(|e| Error::Download {
                url: url.to_string(),
                detail: format!("redirect to an invalid Location {location:?}: {e}"),
            })?;
            if hop == MAX_REDIRECTS {
                return Err(Error::Download {
                    url: raw_url.to_string(),
                    detail: format!("more than {MAX_REDIRECTS} redirects"),
                });
            }
            let checked = check_url(next.as_str()).map_err(|e| redirect_refused(&url, e))?;
            redirected_from = Some(std::mem::replace(&mut url, checked));
            // The next hop's addresses are checked at the top of the loop.
            continue;
        }
        if !status.is_success() {
            return Err(Error::Download {
                url: url.to_string(),
                detail: format!("HTTP {status}"),
            });
        }
        let bytes = read_capped(response, &url, config.max_bytes).await?;
        return Ok(Downloaded {
            bytes,
            final_url: url.to_string(),
        });
    }
    unreachable!("the loop returns at MAX_REDIRECTS")
}

/// A redirect's target refused: the message names both ends.
fn redirect_refused(from: &Url, error: Error) -> Error {
    match error {
        Error::UrlRefused { url, reason } => Error::UrlRefused {
            url: format!("{url} (redirected from {from})"),
            reason,
        },
        other => other,
    }
}

/// The body, read chunk by chunk and refused as soon as it passes `max_bytes` (a `Content-Length`
/// above it is refused before any of it is read).
async fn read_capped(
    mut response: reqwest::Response,
    url: &Url,
    max_bytes: u64,
) -> Result<Vec<u8>> {
    let too_large = || Error::DownloadTooLarge {
        url: url.to_string(),
        limit: max_bytes,
    };
    if response.content_length().is_some_and(|n| n > max_bytes) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| Error::Download {
        url: url.to_string(),
        detail: error_chain(&e),
    })? {
        if body.len() as u64 + chunk.len() as u64 > max_bytes {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether `bytes` are the module the request named: the first thing done with them.
pub fn check_hash(url: &str, expected: &str, bytes: &[u8]) -> Result<String> {
    let actual = hex::encode(Sha256::digest(bytes));
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(Error::HashMismatch {
            url: url.to_string(),
            expected: expected.to_ascii_lowercase(),
            actual,
        });
    }
    Ok(actual)
}

/// The outcome of `fetch-url`: the module's hash and size in the cache.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub sha256: String,
    pub size_bytes: u64,
    pub published: Published,
}

/// Downloads the module at `url`, checks it is `sha256`, validates it and publishes it into
/// `cache`. A module already in the cache under `sha256` (intact) is not downloaded again.
pub async fn fetch_module(
    url: &str,
    sha256: &str,
    cache: &Path,
    config: &DownloadConfig,
    max_module_bytes: u64,
) -> Result<Fetched> {
    let sha256 = sha256.to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidConfig(format!(
            "sha256 {sha256:?} is not 64 hex characters"
        )));
    }
    // Refused forms fail before any cache or network access.
    check_url(url)?;
    let cached = crate::publish::module_path(cache, &sha256);
    if let Ok(bytes) = crate::publish::read_regular_file(&cached, max_module_bytes)
        && hex::encode(Sha256::digest(&bytes)) == sha256
    {
        return Ok(Fetched {
            size_bytes: bytes.len() as u64,
            published: Published {
                path: cached,
                already_present: true,
            },
            sha256,
        });
    }
    let downloaded = download(url, config).await?;
    check_hash(url, &sha256, &downloaded.bytes)?;
    validate_module(&downloaded.bytes, max_module_bytes)?;
    let published = publish(cache, &sha256, &downloaded.bytes)?;
    Ok(Fetched {
        size_bytes: downloaded.bytes.len() as u64,
        sha256,
        published,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls_without_credentials_pass_the_form_check() {
        let cases = [
            ("https://example.com/m.wasm", None),
            ("https://example.com:8443/a/b.wasm?x=1", None),
            ("https://[2606:4700::1]/m.wasm", None),
            ("http://example.com/m.wasm", Some("only https")),
            ("ftp://example.com/m.wasm", Some("only https")),
            ("file:///etc/passwd", Some("only https")),
            ("https://user:pw@example.com/m.wasm", Some("credentials")),
            ("https://user@example.com/m.wasm", Some("credentials")),
            ("not a url", Some("not a URL")),
            ("https://", Some("not a URL")),
        ];
        for (url, want) in cases {
            match (check_url(url), want) {
                (Ok(_), None) => {}
                (Err(Error::UrlRefused { reason, .. }), Some(want)) => {
                    assert!(reason.contains(want), "{url}: {reason}")
                }
                (got, want) => panic!("{url}: got {got:?}, want {want:?}"),
            }
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES));
        assert!(matches!(check_url(&long), Err(Error::UrlRefused { .. })));
    }

    #[test]
    fn non_public_addresses_are_refused_unless_allowed() {
        let refused = [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
            "2001:db8::1",
        ];
        let public = [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "192.169.0.1",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::808:808",
        ];
        let policy = AddressPolicy::default();
        for ip in refused {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(policy.refusal(ip).is_some(), "{ip} should be refused");
        }
        for ip in public {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(policy.refusal(ip), None, "{ip} is public");
        }
        let allowing =
            AddressPolicy::new(&["127.0.0.1/32".to_string(), "fd00::/8".to_string()]).unwrap();
        assert_eq!(allowing.refusal("127.0.0.1".parse().unwrap()), None);
        assert_eq!(allowing.refusal("fd12::1".parse().unwrap()), None);
        assert!(allowing.refusal("127.0.0.2".parse().unwrap()).is_some());
        assert!(allowing.refusal("10.0.0.1".parse().unwrap()).is_some());
        assert!(AddressPolicy::new(&["10.0.0.0/33".to_string()]).is_err());
        assert!(AddressPolicy::new(&["10.0.0.7".to_string()]).is_ok());
    }

    #[tokio::test]
    async fn names_are_judged_by_the_addresses_they_resolve_to() {
        let url = check_url("https://localhost/m.wasm").unwrap();
        let refused = checked_addresses(&url, &AddressPolicy::default()).await;
        match refused {
            Err(Error::UrlRefused { reason, .. }) => {
                assert!(reason.contains("loopback"), "{reason}")
            }
            other => panic!("localhost must be refused after resolution: {other:?}"),
        }
        let allow =
            AddressPolicy::new(&["127.0.0.0/8".to_string(), "::1/128".to_string()]).unwrap();
        let addresses = checked_addresses(&url, &allow).await.unwrap();
        assert!(
            addresses
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 443)
        );
        // An IP literal is checked without DNS.
        let literal = check_url("https://169.254.169.254/latest").unwrap();
        assert!(matches!(
            checked_addresses(&literal, &AddressPolicy::default()).await,
            Err(Error::UrlRefused { .. })
        ));
    }

    #[test]
    fn the_hash_is_checked_before_the_bytes_are_used() {
        let bytes = b"\0asm\x01\0\0\0";
        let good = hex::encode(Sha256::digest(bytes));
        assert_eq!(
            check_hash("https://x/m", &good.to_uppercase(), bytes).unwrap(),
            good
        );
        match check_hash("https://x/m", &"0".repeat(64), bytes) {
            Err(Error::HashMismatch { url, actual, .. }) => {
                assert_eq!(url, "https://x/m");
                assert_eq!(actual, good);
            }
            other => panic!("{other:?}"),
        }
    }
}
