//! A sync server for the durability test, run as its own process so the
//! test can kill it: `sync-test-server <data-dir>` listens on a free port
//! of 127.0.0.1 and prints `listening <addr>` once ready.

use std::io::Write;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: sync-test-server <data-dir>")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut out = std::io::stdout();
    writeln!(out, "listening {addr}")?;
    out.flush()?;
    let config = karmyq_sync_server::Config::new(dir);
    karmyq_sync_server::run(listener, config, std::future::pending()).await?;
    Ok(())
}
