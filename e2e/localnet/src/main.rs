//! `e2e-localnet --config localnet.json [--port N] [--block-time-ms N]`: serves a test-only NEAR
//! JSON-RPC chain on 127.0.0.1 until interrupted. The fault switch is at `/admin/fault`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use e2e_localnet::{Localnet, LocalnetConfig};

#[derive(Parser)]
#[command(about = "Test-only NEAR JSON-RPC chain running contracts in nearcore's VM")]
struct Args {
    /// JSON genesis config (accounts, keys, contracts, block time, gas price).
    #[arg(long, env = "LOCALNET_CONFIG")]
    config: PathBuf,
    /// Port on 127.0.0.1; 0 picks a free one (printed on start).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Overrides the config's block time.
    #[arg(long)]
    block_time_ms: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs go to stderr: stdout carries only the RPC URL.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let mut config = LocalnetConfig::from_file(&args.config)
        .with_context(|| format!("loading {}", args.config.display()))?;
    if let Some(block_time_ms) = args.block_time_ms {
        config.block_time_ms = block_time_ms;
    }
    let localnet = Localnet::start_on(config, SocketAddr::from(([127, 0, 0, 1], args.port)))
        .await
        .context("starting the localnet")?;
    // Scripts read the URL from the first line of stdout.
    println!("{}", localnet.rpc_url());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    localnet.shutdown();
    Ok(())
}
