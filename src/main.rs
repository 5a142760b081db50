//! The `sentinel-proxy` command: parse arguments, load the configuration,
//! set up logging, bind, and hand over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use sentinel_proxy::config::Config;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Exit code for a configuration that cannot be used.
const EXIT_CONFIG: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "sentinel-proxy",
    version,
    about = "A Redis high-availability sidecar that does Redis Sentinel's job"
)]
struct Cli {
    /// Path of the configuration file.
    #[arg(long, short, env = "SENTINEL_PROXY_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Log line format; filter with RUST_LOG (default "info").
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the configuration and exit: 0 if usable, 2 if not.
    Check,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// mimalloc: read buffers and request bookkeeping are allocated and freed
/// on the data path; glibc's malloc/free of them took about 10% of the
/// proxy's CPU in a `perf` profile, mimalloc's per-thread free lists less
/// (see README's instruction counts).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let Some(path) = cli.config else {
        eprintln!(
            "sentinel-proxy: no configuration: pass --config PATH or set SENTINEL_PROXY_CONFIG"
        );
        return ExitCode::from(EXIT_CONFIG);
    };
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("sentinel-proxy: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if matches!(cli.command, Some(Command::Check)) {
        println!(
            "{}: ok ({} service(s))",
            path.display(),
            config.services.len()
        );
        return ExitCode::SUCCESS;
    }
    // This thread runs the control plane and is the first session thread;
    // `[proxy] worker_threads` adds more (see proxy::workers).
    let mut builder = tokio::runtime::Builder::new_current_thread();
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sentinel-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> ExitCode {
    // Handlers go in before the ports open: a supervisor that sees the port
    // and sends SIGTERM at once must get a graceful stop, not the default kill.
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("sentinel-proxy: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listeners = match sentinel_proxy::Listeners::bind(&config).await {
        Ok(listeners) => listeners,
        Err(e) => {
            eprintln!("sentinel-proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(signals.stop_on_signal(shutdown.clone()));
    match sentinel_proxy::run(config, listeners, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sentinel-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM and SIGINT, which start a graceful shutdown.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn stop_on_signal(mut self, shutdown: CancellationToken) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM received"),
            _ = self.int.recv() => tracing::info!("SIGINT received"),
        }
        shutdown.cancel();
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
