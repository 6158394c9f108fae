//! A local HTTPS server that serves modules by URL in tests, the way `git daemon` mirrors serve
//! repositories: a throw-away CA (rcgen) signs a certificate for `localhost` and `127.0.0.1` (and
//! the address it listens on, for the real node's pods); the operator (or `outlayer-compiler
//! fetch-url`) is given the CA's PEM and an allow-list for the mirror's address, since loopback and
//! private addresses are otherwise refused.
//!
//! Each path answers with a [`Route`]; every request is counted per path, so a test can prove a
//! second request for the same module did not download it again. One request per connection
//! (`Connection: close`); a body sent without `Content-Length` ends with the connection, so a
//! client has to enforce its size cap while streaming.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What one path answers.
#[derive(Clone, Debug)]
pub enum Route {
    /// 200 with this body, with a `Content-Length` header or (false) delimited by closing.
    Body {
        bytes: Vec<u8>,
        content_length: bool,
    },
    /// 302 to this location.
    Redirect(String),
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Route>,
    hits: HashMap<String, u64>,
}

pub struct HttpsMirror {
    address: SocketAddr,
    ca_pem: String,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl HttpsMirror {
    /// Listens on 127.0.0.1 (a free port) until dropped.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Listens on `address` (port 0: a free one) until dropped; the certificate also names its IP,
    /// so pods can fetch from `https://<ip>:<port>/…` (see [`HttpsMirror::ip_url`]).
    pub async fn start_at(address: SocketAddr) -> std::io::Result<Self> {
        let (ca_pem, server_config) = tls_config(address.ip()).map_err(std::io::Error::other)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let serving = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let state = serving.clone();
                tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = serve(stream, &state).await;
                    }
                });
            }
        });
        Ok(Self {
            address,
            ca_pem,
            state,
            task,
        })
    }

    /// Serves `route` at `path` (starting with `/`) from now on.
    pub fn route(&self, path: &str, route: Route) {
        if let Ok(mut state) = self.state.lock() {
            state.routes.insert(path.to_string(), route);
        }
    }

    /// `https://localhost:<port><path>`: a name, so the client's DNS check runs.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.address.port())
    }

    /// `https://<ip>:<port><path>`: the address itself, as a pod on another network namespace
    /// reaches it.
    pub fn ip_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.address)
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The CA that signed the mirror's certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// How many requests `path` has had.
    pub fn hits(&self, path: &str) -> u64 {
        self.state
            .lock()
            .map(|s| s.hits.get(path).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for HttpsMirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn tls_config(
    ip: std::net::IpAddr,
) -> Result<(String, rustls::ServerConfig), Box<dyn std::error::Error + Send + Sync>> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "outlayer-test-mirror-ca");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;
    let key = rcgen::KeyPair::generate()?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if !ip.is_loopback() {
        names.push(ip.to_string());
    }
    let mut params = rcgen::CertificateParams::new(names)?;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca)?;
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key_der)?;
    Ok((ca.pem(), config))
}

async fn serve<S>(mut stream: S, state: &Mutex<State>) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let route = {
        let Ok(mut state) = state.lock() else {
            return Ok(());
        };
        *state.hits.entry(path.clone()).or_default() += 1;
        state.routes.get(&path).cloned()
    };
    match route {
        None => {
            stream
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await?;
        }
        Some(Route::Redirect(location)) => {
            let response = format!(
                "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(response.as_bytes()).await?;
        }
        Some(Route::Body {
            bytes,
            content_length,
        }) => {
            let mut response =
                "HTTP/1.1 200 OK\r\nContent-Type: application/wasm\r\nConnection: close\r\n"
                    .to_string();
            if content_length {
                response.push_str(&format!("Content-Length: {}\r\n", bytes.len()));
            }
            response.push_str("\r\n");
            stream.write_all(response.as_bytes()).await?;
            for chunk in bytes.chunks(64 * 1024) {
                stream.write_all(chunk).await?;
            }
        }
    }
    stream.flush().await?;
    stream.shutdown().await
}
