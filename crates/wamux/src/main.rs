//! The `wamux` command: parses the configuration and runs the server.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use wamux::config::{Config, Overrides};

/// WhatsApp multi-session HTTP API.
///
/// Every setting can be given as a flag, a WAMUX_* environment variable, or a key in a TOML
/// config file (the flag name with `_` instead of `-`, e.g. `data_dir = "/var/lib/wamux"`).
/// Precedence: flag > environment > file > default.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    /// TOML config file
    #[arg(long, short = 'c', env = "WAMUX_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Overrides,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the HTTP API server (the default)
    Serve,
    /// Run the server together with an in-process WhatsApp simulator and two ready
    /// virtual phones, to try everything without a real phone. Writes
    /// <data dir>/sandbox.json with the simulator's admin URL and CA file.
    #[cfg(feature = "sandbox")]
    Sandbox,
    /// Webhook tools: `wamux webhook test --url URL [--secret whsec_...]`
    #[command(subcommand)]
    Webhook(wamux::webhook::test_command::WebhookCmd),
    /// Print the OpenAPI 3.1 document of the HTTP API (the one served at /api/openapi.json
    /// and shown at /docs)
    Openapi,
    /// Database tools: `wamux db copy --from <url> --to <url>`
    #[command(subcommand)]
    Db(DbCmd),
    /// Write a consistent copy of the data dir (safe while the server runs); on PostgreSQL
    /// the database is written into it as SQLite files that `wamux db copy` moves back
    Backup {
        /// Directory to create for the copy (must not exist, or be empty)
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum DbCmd {
    /// Copy a whole installation (sessions, history, webhooks, pending deliveries and every
    /// device's keys) between SQLite and PostgreSQL, into an empty target. Stop the server
    /// first.
    Copy {
        /// Source: postgres://... or a SQLite data directory (or its wamux.db)
        #[arg(long)]
        from: String,
        /// Target: postgres://... or a new SQLite data directory
        #[arg(long)]
        to: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Needs no configuration, so it works anywhere, e.g. to regenerate docs/openapi.json.
    if let Some(Cmd::Openapi) = cli.command {
        print!("{}", wamux::api::openapi::document_text());
        return Ok(());
    }
    let config = match Config::load(cli.config.as_deref(), cli.settings) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wamux: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = wamux::telemetry::init_logging(&config) {
        eprintln!("wamux: cannot write logs to WAMUX_LOG_DIR: {e}");
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command.unwrap_or(Cmd::Serve) {
            Cmd::Serve => serve(config).await,
            #[cfg(feature = "sandbox")]
            Cmd::Sandbox => sandbox::run(config, shutdown_signal()).await,
            Cmd::Openapi => unreachable!("handled before the configuration is loaded"),
            Cmd::Webhook(cmd) => wamux::webhook::test_command::run_cli(cmd, &config).await,
            Cmd::Db(DbCmd::Copy { from, to }) => {
                use wamux::store::copy::Place;
                let parse = |what: &str, s: &str| {
                    Place::parse(s).map_err(|e| anyhow::anyhow!("--{what}: {e}"))
                };
                let (from, to) = (parse("from", &from)?, parse("to", &to)?);
                if let Place::Sqlite { ours, .. } = &to
                    && let Some(dir) = ours.parent()
                {
                    std::fs::create_dir_all(dir)?;
                }
                let report = wamux::store::copy::copy(&from, &to).await?;
                println!("copied {} to {}: {report}", from.display(), to.display());
                Ok(())
            }
            Cmd::Backup { out } => {
                let report = wamux::backup::run(&config.data_dir, &config.database(), &out).await?;
                println!("{report}");
                Ok(())
            }
        }
    })
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let addr = format!("{}:{}", config.host, config.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (WAMUX_HOST/WAMUX_PORT): {e}"))?;
    wamux::run(config, listener, shutdown_signal()).await
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for ctrl-c: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}

#[cfg(feature = "sandbox")]
mod sandbox {
    use std::net::SocketAddr;

    use anyhow::Context as _;
    use wamux::Config;

    /// The virtual phones every sandbox has.
    const PHONES: [(&str, &str); 2] = [("15550000001", "Alice"), ("15550000002", "Bob")];

    pub async fn run(
        mut config: Config,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let sim_dir = config.data_dir.join("sandbox");
        let listen = SocketAddr::from(([127, 0, 0, 1], config.sim_port));
        let sim = wa_sim::Simulator::start(wa_sim::SimConfig {
            listen,
            data_dir: sim_dir,
            tls: true,
            compact_after: wa_sim::COMPACT_AFTER,
        })
        .await
        .context("cannot start the simulator (WAMUX_SIM_PORT)")?;
        config.wa_url = Some(sim.ws_url());
        config.wa_ca_file = Some(sim.ca_file().to_owned());

        let admin = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(sim.ca_pem().as_bytes())?)
            .build()?;
        for (phone, name) in PHONES {
            let r = admin
                .post(format!("{}/phones", sim.admin_url()))
                .json(&serde_json::json!({"phone": phone, "name": name}))
                .send()
                .await
                .context("cannot reach the simulator's admin API")?;
            // 409: the phone exists from an earlier run, which is what we want.
            if !r.status().is_success() && r.status() != reqwest::StatusCode::CONFLICT {
                anyhow::bail!("cannot create virtual phone {phone}: {}", r.text().await?);
            }
        }
        std::fs::create_dir_all(&config.data_dir)?;
        let info = serde_json::json!({
            "adminUrl": sim.admin_url(),
            "wsUrl": sim.ws_url(),
            "caFile": sim.ca_file(),
            "noiseRootKey": sim.noise_root_key(),
            "phones": PHONES.iter().map(|(p, n)| serde_json::json!({"phone": p, "name": n})).collect::<Vec<_>>(),
        });
        let path = config.data_dir.join("sandbox.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&info)?)
            .with_context(|| format!("cannot write {}", path.display()))?;

        let addr = format!("{}:{}", config.host, config.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (WAMUX_HOST/WAMUX_PORT): {e}"))?;
        println!("wamux sandbox: API on http://{}", listener.local_addr()?);
        println!(
            "  simulator admin API: {} (CA: {})",
            sim.admin_url(),
            sim.ca_file().display()
        );
        println!(
            "  virtual phones: {} (Alice), {} (Bob)",
            PHONES[0].0, PHONES[1].0
        );
        println!(
            "  scan a QR: curl --cacert <CA> -X POST {}/phones/15550000001/scan -H 'Content-Type: application/json' -d '{{\"qr\":\"<qr from GET /api/qr/ID>\"}}'",
            sim.admin_url()
        );
        println!("  details in {}", path.display());
        let result = wamux::run(config, listener, shutdown).await;
        sim.shutdown().await;
        result
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap checks argument ids only when the parser is built, i.e. at startup: a clash
    /// between two flattened settings structs would otherwise panic the real binary.
    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
