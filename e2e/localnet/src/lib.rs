//! A test-only NEAR JSON-RPC chain on 127.0.0.1.
//!
//! It answers the JSON-RPC methods the operator and tests use (`status`, `health`, `block`, `query`,
//! `gas_price`, `send_tx`, `broadcast_tx_async`, `broadcast_tx_commit`, `tx`, `tx_status`,
//! `EXPERIMENTAL_tx_status`) with nearcore's own request, view and error types, so the JSON is the
//! real wire format. Accounts, keys, balances and contract state live in memory; transactions are
//! checked as nearcore checks them (signature, nonce, block hash, balance); contracts run in
//! nearcore's VM ([`e2e_contract_vm`]); receipts, yields, resumes, timeouts and refunds are played
//! block by block on a timer. A [`FaultSwitch`] makes the RPC misbehave on purpose.
//!
//! It is one of the two stand-ins the project allows and exists for tests only: the surface is
//! what our flows need, and everything outside it is refused with a clear error.

pub mod chain;
pub mod config;
pub mod faults;
mod rpc;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use near_crypto::PublicKey;
use near_primitives::types::AccountId;
use tokio::sync::watch;

pub use chain::Chain;
pub use config::{GenesisAccount, GenesisContract, InitCall, LocalnetConfig};
pub use faults::{Fault, FaultState, FaultSwitch, RequestKind};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid localnet config: {source}")]
    Config {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("genesis lists account {0} twice")]
    DuplicateAccount(AccountId),
    #[error(
        "genesis key {key} of {account_id} is not ed25519, the only key type the localnet takes"
    )]
    KeyType {
        account_id: AccountId,
        key: PublicKey,
    },
    #[error("deploying {path} on {account_id}: {source}")]
    Contract {
        account_id: AccountId,
        path: PathBuf,
        source: Box<e2e_contract_vm::Error>,
    },
    #[error("the genesis init call {account_id}.{method} failed: {reason}")]
    InitCall {
        account_id: AccountId,
        method: String,
        reason: String,
    },
    #[error("binding the RPC server to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the genesis task failed: {0}")]
    GenesisTask(String),
    #[error("starting the block producer thread: {0}")]
    Thread(std::io::Error),
}

/// A running localnet: the RPC server task and the block producer. Dropping it stops both.
pub struct Localnet {
    addr: SocketAddr,
    chain: Arc<Mutex<Chain>>,
    faults: FaultSwitch,
    heights: watch::Receiver<u64>,
    stop: Arc<AtomicBool>,
    server: tokio::task::JoinHandle<()>,
    producer: Option<std::thread::JoinHandle<()>>,
}

impl Localnet {
    /// Builds genesis and serves it on 127.0.0.1 at a free port.
    pub async fn start(config: LocalnetConfig) -> Result<Self, Error> {
        Self::start_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(config: LocalnetConfig, addr: SocketAddr) -> Result<Self, Error> {
        let genesis_config = config.clone();
        // Compiling contracts with wasmtime is CPU work; keep it off the async workers.
        let chain =
            tokio::task::spawn_blocking(move || Chain::genesis(&genesis_config, server::now_ns()))
                .await
                .map_err(|e| Error::GenesisTask(e.to_string()))??;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| server::bind_error(addr, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| server::bind_error(addr, e))?;
        let head = chain.head().height;
        let chain = Arc::new(Mutex::new(chain));
        let (height_tx, heights) = watch::channel(head);
        let faults = FaultSwitch::default();
        let rpc = rpc::Rpc {
            chain: Arc::clone(&chain),
            heights: heights.clone(),
            tx_wait_timeout: config.tx_wait_timeout(),
            started: Instant::now(),
            rpc_addr: addr.to_string(),
        };
        let app = server::App {
            rpc: Arc::new(rpc),
            faults: faults.clone(),
        };
        let router = server::router(app);
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%error, "the localnet RPC server stopped");
            }
        });
        let stop = Arc::new(AtomicBool::new(false));
        let producer = server::spawn_block_producer(
            Arc::clone(&chain),
            config.block_time(),
            height_tx,
            Arc::clone(&stop),
        )
        .map_err(Error::Thread)?;
        tracing::info!(
            %addr,
            chain_id = %config.chain_id,
            block_time_ms = config.block_time_ms,
            accounts = config.accounts.len(),
            "localnet started"
        );
        Ok(Self {
            addr,
            chain,
            faults,
            heights,
            stop,
            server,
            producer: Some(producer),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, what an RPC client connects to.
    pub fn rpc_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn faults(&self) -> &FaultSwitch {
        &self.faults
    }

    pub fn head_height(&self) -> u64 {
        *self.heights.borrow()
    }

    /// Waits until the chain reaches `height`.
    pub async fn wait_for_height(&self, height: u64) {
        let mut heights = self.heights.clone();
        // The producer only stops when this handle is dropped, so the channel stays open.
        let _ = heights.wait_for(|&head| head >= height).await;
    }

    /// Direct access to the chain state, for assertions that RPC does not expose.
    pub fn with_chain<T>(&self, f: impl FnOnce(&Chain) -> T) -> T {
        f(&self.chain.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.server.abort();
        if let Some(producer) = self.producer.take()
            && producer.join().is_err()
        {
            tracing::error!("the block producer thread panicked");
        }
    }
}

impl Drop for Localnet {
    fn drop(&mut self) {
        self.stop_all();
    }
}
