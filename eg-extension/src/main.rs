use std::net::SocketAddr;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Envoy Gateway extension server: sets allow_on_headers_stop_iteration on the semantic
/// router's Wasm filter in the listeners Envoy Gateway generates.
#[derive(Parser, Debug)]
#[command(name = "eg-extension", version)]
struct Args {
    /// Address of the gRPC server (the extension service and gRPC health).
    #[arg(long, env = "EG_EXTENSION_LISTEN", default_value = "0.0.0.0:5005")]
    listen: SocketAddr,
    /// Plugin root id of a Wasm filter that needs the flag (repeat, or separate with commas, for several).
    #[arg(long = "root-id", env = "EG_EXTENSION_ROOT_IDS", value_delimiter = ',', default_value = eg_extension::DEFAULT_ROOT_ID)]
    root_ids: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Plain text when the output is not a terminal (container logs).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi).init();
    anyhow::ensure!(args.root_ids.iter().all(|r| !r.is_empty()), "--root-id must not be empty");
    let opts = eg_extension::Options { root_ids: args.root_ids };
    eg_extension::serve(args.listen, opts, eg_extension::shutdown_signal()).await
}
