//! `karmyq-sync-server`: the sync relay as a program. Everything but
//! flags, logging and signals is in the library ([`karmyq_sync_server::run`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use karmyq_core::sync::ServerLimits;
use karmyq_sync_server::{Config, DEFAULT_PUSH_INTERVAL_MS, run};

/// Log line format.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Karmyq's sync server: validates, isolates communities, pushes live.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "KARMYQ_BIND", default_value = "127.0.0.1:8787")]
    bind: SocketAddr,
    /// Directory for the server's identity and community files.
    #[arg(long, env = "KARMYQ_DATA_DIR", default_value = "./karmyq-data")]
    data_dir: PathBuf,
    /// Log format.
    #[arg(long, env = "KARMYQ_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Largest frame accepted, in bytes.
    #[arg(long, env = "KARMYQ_MAX_FRAME", default_value_t = 4 * 1024 * 1024)]
    max_frame: usize,
    /// Most ops plus changes in one uploaded bundle.
    #[arg(long, env = "KARMYQ_MAX_CHANGES", default_value_t = 10_000)]
    max_changes: usize,
    /// Most open sync connections.
    #[arg(long, env = "KARMYQ_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// Frames a member may send in a burst.
    #[arg(long, env = "KARMYQ_RATE_BURST", default_value_t = 200)]
    rate_burst: u32,
    /// Frames per second a member may send on average.
    #[arg(long, env = "KARMYQ_RATE_PER_SECOND", default_value_t = 50)]
    rate_per_second: u32,
    /// Seconds shutdown waits for connections to close.
    #[arg(long, env = "KARMYQ_DRAIN_SECONDS", default_value_t = 10)]
    drain_seconds: u64,
    /// Seconds a connection may stay without logging in.
    #[arg(long, env = "KARMYQ_LOGIN_SECONDS", default_value_t = 10)]
    login_seconds: u64,
    /// Shortest interval between two live pushes to a subscriber, in
    /// milliseconds: changes within it go out merged in one frame.
    #[arg(long, env = "KARMYQ_PUSH_INTERVAL_MS", default_value_t = DEFAULT_PUSH_INTERVAL_MS)]
    push_interval_ms: u64,
}

async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
    }
    let config = Config {
        data_dir: args.data_dir,
        limits: ServerLimits {
            max_frame: args.max_frame,
            max_changes: args.max_changes,
        },
        max_connections: args.max_connections,
        rate_burst: args.rate_burst,
        rate_per_second: args.rate_per_second,
        drain_timeout: Duration::from_secs(args.drain_seconds),
        login_timeout: Duration::from_secs(args.login_seconds),
        push_interval: Duration::from_millis(args.push_interval_ms),
    };
    let listener = tokio::net::TcpListener::bind(args.bind).await?;
    run(listener, config, signal()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent_and_default_as_documented() -> Result<(), clap::Error> {
        Args::command().debug_assert();
        let args = Args::try_parse_from(["karmyq-sync-server"])?;
        assert_eq!(args.bind.to_string(), "127.0.0.1:8787");
        assert_eq!(args.data_dir, PathBuf::from("./karmyq-data"));
        assert!(matches!(args.log_format, LogFormat::Text));
        let args = Args::try_parse_from([
            "karmyq-sync-server",
            "--bind",
            "0.0.0.0:9000",
            "--log-format",
            "json",
            "--max-frame",
            "1024",
        ])?;
        assert_eq!(args.bind.port(), 9000);
        assert!(matches!(args.log_format, LogFormat::Json));
        assert_eq!(args.max_frame, 1024);
        assert!(Args::try_parse_from(["karmyq-sync-server", "--log-format", "xml"]).is_err());
        Ok(())
    }
}
