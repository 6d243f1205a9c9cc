//! The listening socket, and what the process may hold open.

use std::net::{SocketAddr, TcpListener};

/// Connections the kernel holds for the server before it accepts them (capped by
/// `net.core.somaxconn`). The standard library's 128 overflows in a burst of new
/// connections, and each connection dropped then waits a second or more to retry its SYN.
const BACKLOG: i32 = 4096;

/// A listening socket on `address`, as `TcpListener::bind` makes it but for its backlog.
/// The first call also raises the process's limit of open files to its hard limit, so that
/// the connections [`super::MAX_CONNECTIONS`] allows cannot leave the database, SMTP and
/// Stripe without sockets.
pub fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    raise_open_files();
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

fn raise_open_files() {
    static RAISED: std::sync::Once = std::sync::Once::new();
    // A server worker a core, each holding up to MAX_CONNECTIONS.
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let wanted = 4 * (workers * super::MAX_CONNECTIONS) as u64;
    RAISED.call_once(|| match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < wanted => tracing::warn!(
            open_files = limit,
            "the limit of open files is low for the connections allowed; raise `ulimit -n`"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(error = %error, "could not raise the limit of open files"),
    });
}
