//! A fault link between the service and one of its dependencies (the broker, the database): an
//! in-process TCP proxy the grader can cut or stall.
//!
//! The service is handed the link's address, never the dependency's, so the grader can make the
//! dependency fail for the service alone (its own connections go to it directly) and come back,
//! without stopping it and losing what it holds.
//!
//! - **Cut** (a restart, a failover, a dropped network): every open connection is closed at once
//!   with a reset, and every new one is accepted and reset at once. The listener stays bound, so
//!   restoring can never fail on a port somebody else took in between (closing and binding again
//!   would give a true "connection refused", at that risk); to a client both are the same failed
//!   connection attempt.
//! - **Stall** (a frozen server, packets dropped): connections stay open and new ones are
//!   accepted, but no byte is forwarded either way until the link is restored; then what waited
//!   flows on, as after `SIGCONT`. A client sees exactly what a hung server shows: nothing, for
//!   as long as it is willing to wait.
//! - **No byte crosses after a cut or a stall**: a forwarding write and the fault take the same
//!   lock, and the write is a non-blocking `try_write` done under it, so once [`FaultLink::cut`]
//!   or [`FaultLink::stall`] has returned nothing more is written either way.
//! - **Bounded**: a fixed buffer per direction per connection, at most [`MAX_CONNECTIONS`] at a
//!   time, and a connect timeout towards the dependency.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// Bytes read at a time per direction of a connection.
const BUFFER: usize = 16 * 1024;
/// A service needs a few connections; a leak of thousands is reset rather than forwarded.
pub(crate) const MAX_CONNECTIONS: usize = 256;
/// The dependency is on loopback (or a mapped port on it): a connect that takes this long is
/// broken.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle on the link between the service and a dependency. Cheap to clone; every clone
/// controls the same link. After the run's teardown the link is closed and these calls change
/// nothing.
#[derive(Clone)]
pub struct FaultLink {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Bumped on every cut and on close: each connection watches it and ends when it moves.
    generation: watch::Sender<u64>,
    /// Bumped when a stall ends: forwarders waiting on it write again.
    resumed: watch::Sender<u64>,
    listen: SocketAddr,
    target: SocketAddr,
}

#[derive(Default)]
struct State {
    cut: bool,
    stalled: bool,
    closed: bool,
}

impl std::fmt::Debug for FaultLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("FaultLink")
            .field("listen", &self.shared.listen)
            .field("target", &self.shared.target)
            .field("cut", &state.cut)
            .field("stalled", &state.stalled)
            .finish()
    }
}

impl FaultLink {
    /// Makes the dependency unreachable through the link: open connections are reset, new ones
    /// are reset as soon as they are accepted, and no byte is forwarded once this returns.
    pub fn cut(&self) {
        let mut state = self.shared.lock();
        state.cut = true;
        // Under the lock, so a connection accepted just now sees either the flag or the bump.
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Makes the dependency hang: connections stay open (new ones are accepted) and no byte is
    /// forwarded either way once this returns, until [`FaultLink::restore`].
    pub fn stall(&self) {
        self.shared.lock().stalled = true;
    }

    /// Forwards again: new connections reach the dependency (connections cut stay closed), and
    /// what stalled connections held flows on.
    pub fn restore(&self) {
        let mut state = self.shared.lock();
        state.cut = false;
        state.stalled = false;
        self.shared.resumed.send_modify(|g| *g += 1);
    }

    pub fn is_cut(&self) -> bool {
        self.shared.lock().cut
    }

    pub fn is_stalled(&self) -> bool {
        self.shared.lock().stalled
    }

    /// Where the link listens (what the service's URL names).
    pub fn listen_addr(&self) -> SocketAddr {
        self.shared.listen
    }
}

/// Puts a link in front of the run's PostgreSQL: the link listens on `bind`, forwards to the
/// grader-side port, and `info.service_url` now names it as `host` (how the service reaches
/// `bind`). Err is a sentence: the grader's failure, not the service's.
pub(crate) async fn link_database(
    info: &mut crate::runtime::PostgresInfo,
    bind: std::net::IpAddr,
    host: &str,
) -> Result<LinkServer, String> {
    let target = SocketAddr::from(([127, 0, 0, 1], info.port));
    let server = LinkServer::start(bind, target)
        .await
        .map_err(|e| format!("could not listen on {bind}: {e}"))?;
    let listen = server.link().listen_addr();
    info.service_url = through(&info.service_url, host, listen.port())?;
    info.link = Some(server.link());
    Ok(server)
}

/// What a run's `postgres.log` says about the link, so a reader of the log knows the service's
/// URL names the grader, not the server.
pub(crate) fn database_link_note(server: &LinkServer, host: &str) -> String {
    let link = server.link();
    format!(
        "the service reaches PostgreSQL through the grader's link on {} (as {host}), which forwards to {}",
        link.listen_addr(),
        link.shared.target
    )
}

/// `url` with its host and port replaced by `host` and `port` (a database URL pointed at its
/// link); user, password, path and query stay.
pub(crate) fn through(url: &str, host: &str, port: u16) -> Result<String, String> {
    let mut parsed = url::Url::parse(url).map_err(|e| format!("cannot parse {url}: {e}"))?;
    parsed
        .set_host(Some(host))
        .map_err(|e| format!("cannot set host {host}: {e}"))?;
    parsed
        .set_port(Some(port))
        .map_err(|()| format!("cannot set a port on {url}"))?;
    Ok(parsed.to_string())
}

impl Shared {
    /// A poisoned lock only means a panic elsewhere; the two flags inside are still valid.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The link's listener task; the run owns it and [`LinkServer::close`]s it at teardown.
pub(crate) struct LinkServer {
    link: FaultLink,
    accept: tokio::task::JoinHandle<()>,
}

impl LinkServer {
    /// Binds `bind` (port 0: any free port; the listener is held for the whole run, so the port
    /// stays ours) and forwards what it accepts to `target`. Must run inside a tokio runtime.
    pub(crate) async fn start(
        bind: std::net::IpAddr,
        target: SocketAddr,
    ) -> std::io::Result<LinkServer> {
        let listener = TcpListener::bind((bind, 0)).await?;
        let listen = listener.local_addr()?;
        let (generation, _) = watch::channel(0);
        let (resumed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            generation,
            resumed,
            listen,
            target,
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(LinkServer {
            link: FaultLink { shared },
            accept,
        })
    }

    pub(crate) fn link(&self) -> FaultLink {
        self.link.clone()
    }

    /// Stops listening and closes every connection. Synchronous, so `Drop` can call it.
    pub(crate) fn close(&self) {
        let shared = &self.link.shared;
        let mut state = shared.lock();
        state.closed = true;
        state.cut = true;
        shared.generation.send_modify(|g| *g += 1);
        drop(state);
        // Dropping the task drops the listener: the port is closed.
        self.accept.abort();
    }
}

impl Drop for LinkServer {
    fn drop(&mut self) {
        self.close();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of file descriptors and the like: wait instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = client.set_nodelay(true);
        let cut_now = {
            let state = shared.lock();
            state.cut || state.closed
        };
        let slot = slots.clone().try_acquire_owned();
        let Some(slot) = slot.ok().filter(|_| !cut_now) else {
            reset(client);
            continue;
        };
        // Subscribed before the flag is read again inside, so a cut in between is not missed.
        let generation = shared.generation.subscribe();
        let shared = shared.clone();
        tokio::spawn(async move {
            forward(client, &shared, generation).await;
            drop(slot);
        });
    }
}

/// Connects to the dependency and copies both ways until either side closes, an error, or a cut.
async fn forward(client: TcpStream, shared: &Shared, mut generation: watch::Receiver<u64>) {
    // A cut between accept and subscribe bumped the generation before we saw it; the flag says.
    if shared.lock().cut {
        reset(client);
        return;
    }
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(shared.target));
    let server = tokio::select! {
        connected = connect => match connected {
            Ok(Ok(server)) => server,
            _ => {
                reset(client);
                return;
            }
        },
        _ = generation.changed() => {
            reset(client);
            return;
        }
    };
    let _ = server.set_nodelay(true);
    // EOF either way ends the connection: AMQP closes with a handshake (connection.close and
    // close-ok) before the TCP close, so nothing a client needs travels after a half-close.
    tokio::select! {
        _ = copy(&client, &server, shared) => {}
        _ = copy(&server, &client, shared) => {}
        _ = generation.changed() => {
            reset(client);
            reset(server);
        }
    }
}

/// Copies `from` → `to` through one fixed buffer. Returns at EOF, on an error, or when the link
/// is cut (checked under the lock, right before each write); while the link is stalled it holds
/// what it read and waits.
async fn copy(from: &TcpStream, to: &TcpStream, shared: &Shared) {
    let mut buf = vec![0u8; BUFFER];
    loop {
        if from.readable().await.is_err() {
            return;
        }
        let n = match from.try_read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        };
        let mut sent = 0;
        while sent < n {
            if to.writable().await.is_err() {
                return;
            }
            // Subscribed before the flag is read, so a restore in between is not missed.
            let mut resumed = shared.resumed.subscribe();
            // The write happens under the lock (`None`: stalled, nothing written).
            let written = {
                let state = shared.lock();
                if state.cut {
                    return;
                }
                (!state.stalled).then(|| to.try_write(&buf[sent..n]))
            };
            match written {
                None => {
                    if resumed.changed().await.is_err() {
                        return;
                    }
                }
                Some(Ok(k)) => sent += k,
                Some(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Some(Err(_)) => return,
            }
        }
    }
}

/// Closes with a reset (RST), as a broken network does, rather than an orderly FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An echo server standing in for the dependency.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn echo(stream: &mut TcpStream, text: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(text).await?;
        let mut got = vec![0u8; text.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut got))
            .await
            .map_err(|_| std::io::Error::other("no echo within 5s"))??;
        Ok(got)
    }

    /// Whether the other end closed: a read returns EOF or an error (not data, not a timeout).
    async fn closed(stream: &mut TcpStream) -> bool {
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    /// A link to an echo server, and a connection through it that has echoed `first`.
    async fn linked(first: &[u8]) -> (LinkServer, FaultLink, SocketAddr, TcpStream) {
        let target = echo_server().await;
        let server = LinkServer::start([127, 0, 0, 1].into(), target)
            .await
            .unwrap();
        let link = server.link();
        let addr = link.listen_addr();
        let mut open = TcpStream::connect(addr).await.unwrap();
        assert_eq!(echo(&mut open, first).await.unwrap(), first);
        (server, link, addr, open)
    }

    #[tokio::test]
    async fn forwards_cuts_and_restores() {
        let (server, link, addr, mut open) = linked(b"hello").await;

        link.cut();
        assert!(link.is_cut());
        assert!(
            closed(&mut open).await,
            "an open connection survived the cut"
        );
        let mut fresh = TcpStream::connect(addr).await.unwrap();
        assert!(
            echo(&mut fresh, b"x").await.is_err(),
            "a new connection was forwarded while cut"
        );

        link.restore();
        assert!(!link.is_cut());
        let mut again = TcpStream::connect(addr).await.unwrap();
        assert_eq!(echo(&mut again, b"back").await.unwrap(), b"back");

        server.close();
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "still listening after close"
        );
    }

    #[tokio::test]
    async fn a_stall_holds_every_byte_until_restored() {
        let (_server, link, addr, mut open) = linked(b"before").await;

        link.stall();
        assert!(link.is_stalled() && !link.is_cut());
        open.write_all(b"held").await.unwrap();
        // A new connection is accepted, as by a frozen server's kernel, and answers nothing.
        let mut fresh = TcpStream::connect(addr).await.unwrap();
        fresh.write_all(b"new").await.unwrap();
        let mut buf = [0u8; 8];
        for stream in [&mut open, &mut fresh] {
            let read =
                tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await;
            assert!(read.is_err(), "a byte crossed a stalled link: {read:?}");
        }

        // What waited flows on, on both connections, and they keep working.
        link.restore();
        let mut got = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), open.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, b"held");
        let mut got = [0u8; 3];
        tokio::time::timeout(Duration::from_secs(5), fresh.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, b"new");
        assert_eq!(echo(&mut open, b"after").await.unwrap(), b"after");

        // A cut ends a stall's connections too.
        link.stall();
        link.cut();
        assert!(
            closed(&mut open).await,
            "a stalled connection survived a cut"
        );
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_reset() {
        let target = echo_server().await;
        let server = LinkServer::start([127, 0, 0, 1].into(), target)
            .await
            .unwrap();
        let addr = server.link().listen_addr();
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let mut s = TcpStream::connect(addr).await.unwrap();
            assert_eq!(echo(&mut s, b"k").await.unwrap(), b"k");
            held.push(s);
        }
        let mut over = TcpStream::connect(addr).await.unwrap();
        assert!(echo(&mut over, b"x").await.is_err());
        drop(held.pop());
        // The slot is freed when the forwarder notices the close.
        let mut ok = false;
        for _ in 0..50 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            if echo(&mut s, b"y").await.is_ok() {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ok, "a freed slot was not reused");
    }
}
