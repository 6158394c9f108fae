//! `e2e-node-agent --kubeconfig node.kubeconfig --config agent.yaml`: the node agent as a process,
//! for the demo and for clusters started outside the Rust harness.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use e2e_node_agent::{AgentConfig, NodeAgent};
use kube::config::{KubeConfigOptions, Kubeconfig};

#[derive(Parser)]
#[command(about = "Test-only kubelet stand-in: runs pods bound to its Node in bwrap sandboxes")]
struct Args {
    /// Kubeconfig with the node's identity (system:node:<name>).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// YAML config: nodeName, stateDir, images.
    #[arg(long)]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let config = AgentConfig::load(&args.config)?;
    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("read kubeconfig {}", args.kubeconfig.display()))?;
    let client_config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .with_context(|| format!("load kubeconfig {}", args.kubeconfig.display()))?;
    let client = kube::Client::try_from(client_config).context("build the Kubernetes client")?;
    let agent = NodeAgent::start(client, config).await?;
    tracing::info!(node = agent.node_name(), "serving pods; Ctrl-C to stop");
    tokio::signal::ctrl_c().await.context("wait for Ctrl-C")?;
    drop(agent);
    Ok(())
}
