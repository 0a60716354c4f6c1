//! `wa-sim`: runs the WhatsApp simulator until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use wa_sim::{SimConfig, Simulator};

/// A WhatsApp Web multi-device server for tests, benchmarks and the sandbox.
///
/// Serves the chat WebSocket (/ws/chat), the admin API (/admin/...) and the
/// media host (/mms/...) on one port. Writes DIR/sim.json with
/// {"wsUrl","adminUrl","caFile","noiseRootKey"} once it is listening.
#[derive(Parser, Debug)]
#[command(name = "wa-sim", version)]
struct Args {
    /// Address and port to listen on (port 0 picks a free one).
    #[arg(long, env = "WA_SIM_LISTEN", default_value = "127.0.0.1:7780")]
    listen: SocketAddr,

    /// Directory for state (accounts, keys, queues), media blobs, the CA and sim.json.
    #[arg(long, env = "WA_SIM_DATA_DIR", default_value = "./wa-sim-data")]
    data_dir: PathBuf,

    /// Serve plain ws:// and http:// instead of TLS.
    #[arg(long, env = "WA_SIM_PLAIN")]
    plain: bool,

    /// Fold the journal into the base once it is larger than this many MiB (and than the
    /// base).
    #[arg(long, env = "WA_SIM_COMPACT_AFTER_MIB", default_value_t = wa_sim::COMPACT_AFTER >> 20)]
    compact_after_mib: u64,

    /// Delay every frame to a client by this many milliseconds (a realistic network; off
    /// by default, as benchmarks want it). Also settable with POST /admin/network.
    #[arg(long, env = "WA_SIM_LATENCY_MS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=i64::from(wa_sim::network::MAX_MS)))]
    latency_ms: u32,

    /// Add a random 0..=N milliseconds to each frame's delay (frames keep their order).
    #[arg(long, env = "WA_SIM_JITTER_MS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=i64::from(wa_sim::network::MAX_MS)))]
    jitter_ms: u32,

    /// Log filter, e.g. "info" or "wa_sim=debug".
    #[arg(long, env = "WA_SIM_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .init();
    let sim = Simulator::start(SimConfig {
        listen: args.listen,
        data_dir: args.data_dir.clone(),
        tls: !args.plain,
        compact_after: args.compact_after_mib.saturating_mul(1 << 20),
    })
    .await?;
    sim.set_network(wa_sim::network::Network {
        latency_ms: args.latency_ms,
        jitter_ms: args.jitter_ms,
    });
    println!("WebSocket: {}", sim.ws_url());
    println!("Admin API: {}", sim.admin_url());
    if !args.plain {
        println!("CA file:   {}", sim.ca_file().display());
    }
    println!("State:     {}", args.data_dir.join("sim.json").display());
    wait_for_stop().await?;
    println!("shutting down");
    sim.shutdown().await;
    Ok(())
}

/// Ctrl-C or SIGTERM (what service managers send) both stop cleanly, so the
/// state is written before exit.
async fn wait_for_stop() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
