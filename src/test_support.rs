//! Helpers shared by the unit tests.

use std::net::SocketAddr;

use socket2::{Domain, Socket, Type};

/// A loopback address that refuses connections, held for as long as the
/// returned socket lives: it is bound but not listening. (Binding a
/// listener and dropping it frees the port for anything else on this
/// machine, even for the connecting socket itself as its source port,
/// which then connects to itself.)
pub fn refusing_addr() -> (Socket, SocketAddr) {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a TCP socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("an address");
    socket.bind(&any.into()).expect("a free loopback port");
    let addr = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("the bound address");
    (socket, addr)
}
