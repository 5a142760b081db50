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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connected_sockets_have_nodelay_and_keepalive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = connect(addr, Duration::from_secs(5), Some(Duration::from_secs(60)))
            .await
            .unwrap();
        let sock = SockRef::from(&stream);
        assert!(sock.tcp_nodelay().unwrap());
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(60));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(20)
        );
    }

    #[tokio::test]
    async fn connect_gives_up_after_the_timeout() {
        // A listener whose accept queue is full drops new SYNs, so a connect
        // to it hangs until our timeout fires.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        socket.listen(0).unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        let mut fillers = Vec::new();
        let result = loop {
            match connect(addr, Duration::from_millis(300), None).await {
                Ok(stream) => fillers.push(stream),
                Err(e) => break e,
            }
            assert!(fillers.len() < 64, "the accept queue never filled up");
        };
        assert!(
            matches!(result, ConnectError::Timeout(d) if d == Duration::from_millis(300)),
            "{result}"
        );
    }

    #[tokio::test]
    async fn refused_connections_report_the_os_error() {
        let (_held, addr) = crate::test_support::refusing_addr();
        let e = connect(addr, Duration::from_secs(5), None)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("refused"), "{e}");
    }
}
