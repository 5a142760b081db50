//! Connecting to a Redis instance, and the socket options both sides share.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// Why an instance could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connection timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Connects to `addr` within `timeout`, with the proxy's socket options.
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    keepalive: Option<Duration>,
) -> Result<TcpStream, ConnectError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout(timeout))??;
    tune(&stream, keepalive)?;
    Ok(stream)
}

/// No Nagle delay (requests are small and latency-bound) and keepalive to
/// notice peers that vanished without a FIN.
pub fn tune(stream: &TcpStream, keepalive: Option<Duration>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    if let Some(idle) = keepalive {
        let interval = (idle / 3).max(Duration::from_secs(1));
        SockRef::from(stream)
            .set_tcp_keepalive(&TcpKeepalive::new().with_time(idle).with_interval(interval))?;
    }
    Ok(())
}
