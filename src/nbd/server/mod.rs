//! Read-only NBD server over any [`BlockDevice`].
//!
//! One thread accepts connections and decides, under the limits (`limits`), which it serves;
//! each connection gets a thread that negotiates (`negotiate`) under a handshake deadline and
//! then reads requests, and a small pool of worker threads that answer them (`transmit`).
//! All connections share one `Arc<dyn BlockDevice>`, whose reads take `&self`, and one
//! budget (`budget`) of memory for reply data.
//!
//! ## Defaults, and why
//! - `handshake_timeout` 10 s: what qemu-nbd and qemu-storage-daemon allow since CVE-2024-7409
//!   (`--handshake-limit`); a real client negotiates in milliseconds.
//! - `max_clients` 128 (qemu's default since the same fix: 100) and `max_clients_per_address`
//!   32 (nbdcopy opens up to 16 connections, imgcheck's own client 4; several of them on one
//!   host fit). At a limit the server closes a connection that is worth least — negotiating
//!   too long, not reading its replies, or idle — rather than refusing the newcomer; see
//!   `limits`.
//! - `idle_timeout` 1 hour: a connection with nothing in flight for that long is closed. qemu-nbd
//!   and nbdkit have none; a mounted export (`qemu-nbd -c`, a guest booted from the export) may
//!   sit idle for minutes and cannot always reconnect, so the default is long. Idle
//!   connections are the first to go when room is needed anyway.
//! - `send_timeout` 30 s (plus a second per 256 KiB): a reply the client does not take in that
//!   time ends the connection (the Linux NBD client's request timeout is 30 s too).
//! - `reply_memory` 64 MiB shared, plus one 256 KiB piece per connection: qemu-nbd allows 16
//!   requests of up to 32 MiB in flight per client, i.e. 512 MiB each; streaming replies in
//!   pieces makes a few MiB enough for full speed.

mod budget;
mod limits;
mod negotiate;
mod transmit;

use std::io::{self, BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::stream::Stream;
use super::uri::{Address, NbdUri};
use crate::error::{Error, Result};
use crate::image::BlockDevice;
use budget::Budget;
use limits::{Activity, Registry};

pub use budget::PIECE;

/// Largest read or block-status request served (and largest write payload swallowed before
/// refusing it). qemu's client never asks for more than 32 MiB.
pub const MAX_REQUEST: u32 = 32 * 1024 * 1024;
/// Metadata context id of `base:allocation` on this server.
const BASE_ALLOCATION_ID: u32 = 1;

/// What to serve and how; see the module documentation for the defaults.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Export name clients ask for; the empty (default) name is accepted too.
    pub export_name: String,
    /// Free text shown by `NBD_OPT_LIST` and `NBD_INFO_DESCRIPTION`.
    pub description: String,
    /// Worker threads per connection (requests answered in parallel).
    pub workers: usize,
    /// Connections served at once.
    pub max_clients: usize,
    /// Connections served at once from one client address (IPv4 address, IPv6 /64, or the
    /// user id of a Unix-socket client).
    pub max_clients_per_address: usize,
    /// Time a client gets for the whole negotiation, however it trickles its bytes.
    pub handshake_timeout: Duration,
    /// A connection with no request in flight for this long is closed (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Time a client gets to take each reply (plus a second per 256 KiB of it).
    pub send_timeout: Duration,
    /// Bytes of reply data in flight shared by all connections, beyond one [`PIECE`] each.
    pub reply_memory: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            export_name: String::new(),
            description: String::new(),
            workers: 4,
            max_clients: 128,
            max_clients_per_address: 32,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(3600)),
            send_timeout: Duration::from_secs(30),
            reply_memory: 64 * 1024 * 1024,
        }
    }
}

/// Where to listen.
#[derive(Debug, Clone)]
pub enum Listen {
    /// `ADDR:PORT`, `HOST:PORT` or just `PORT` (then on 127.0.0.1).
    Tcp(String),
    /// A Unix-domain socket path.
    Unix(PathBuf),
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

/// A pipe whose read end wakes the accept loop.
struct Waker {
    r: RawFd,
    w: RawFd,
}

impl Waker {
    fn new() -> io::Result<Waker> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Waker {
            r: fds[0],
            w: fds[1],
        })
    }
    fn wake(&self) {
        // SAFETY: writing one byte from a valid buffer to our own pipe (a full pipe is fine).
        unsafe { libc::write(self.w, [1u8].as_ptr().cast(), 1) };
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        // SAFETY: closing the two descriptors this Waker owns, once.
        unsafe {
            libc::close(self.r);
            libc::close(self.w);
        }
    }
}

struct Shared {
    stop: AtomicBool,
    waker: Waker,
    registry: Registry,
}

/// Stops a running [`Server`] from another thread (a signal handler thread, a test).
#[derive(Clone)]
pub struct ShutdownHandle(Arc<Shared>);

impl ShutdownHandle {
    /// Stop accepting, and end every connection after its in-flight requests are answered.
    pub fn shutdown(&self) {
        self.0.stop.store(true, Ordering::SeqCst);
        self.0.waker.wake();
        self.0.registry.stop_all();
    }
}

/// A bound, not yet running, NBD server.
pub struct Server {
    listener: Listener,
    dev: Arc<dyn BlockDevice>,
    export: Arc<Export>,
    budget: Arc<Budget>,
    shared: Arc<Shared>,
}

/// The export and the per-connection settings, as the connection threads see them.
struct Export {
    name: String,
    description: String,
    size: u64,
    preferred_block: u32,
    workers: usize,
    handshake_timeout: Duration,
    idle_timeout: Option<Duration>,
    send_timeout: Duration,
}

impl Export {
    fn new(dev: &dyn BlockDevice, cfg: &ServeConfig) -> Export {
        let granularity = dev.granularity().clamp(4096, 2 * 1024 * 1024);
        let preferred_block = if granularity.is_power_of_two() {
            granularity
        } else {
            granularity.next_power_of_two() / 2
        } as u32;
        Export {
            name: cfg.export_name.clone(),
            description: cfg.description.clone(),
            size: dev.size(),
            preferred_block,
            workers: cfg.workers.clamp(1, 64),
            handshake_timeout: cfg.handshake_timeout,
            idle_timeout: cfg.idle_timeout.filter(|t| !t.is_zero()),
            send_timeout: cfg.send_timeout.max(Duration::from_millis(1)),
        }
    }
    fn matches(&self, name: &str) -> bool {
        name == self.name || name.is_empty()
    }
    fn flags(&self, structured: bool) -> u16 {
        use super::proto::*;
        let mut f = FLAG_HAS_FLAGS
            | FLAG_READ_ONLY
            | FLAG_SEND_FLUSH
            | FLAG_CAN_MULTI_CONN
            | FLAG_SEND_CACHE;
        if structured {
            f |= FLAG_SEND_DF;
        }
        f
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Print a message about a connection on standard error, at most 10 a second: a flood of
/// connections must not become a flood of log lines. The number left out is told with the
/// next message that gets through.
fn log(msg: impl FnOnce() -> String) {
    static STATE: Mutex<(u64, u32, u64)> = Mutex::new((0, 0, 0)); // second, printed, left out
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut st = lock(&STATE);
    if st.0 != second {
        *st = (second, 0, st.2);
    }
    if st.1 >= 10 {
        st.2 += 1;
        return;
    }
    st.1 += 1;
    let left_out = std::mem::take(&mut st.2);
    drop(st);
    if left_out > 0 {
        eprintln!(
            "imgcheck serve: {} ({left_out} similar messages left out)",
            msg()
        );
    } else {
        eprintln!("imgcheck serve: {}", msg());
    }
}

impl Server {
    /// Bind the listening socket. A TCP address without a host binds 127.0.0.1 (loopback); a
    /// stale Unix socket (one nobody answers on) is replaced, any other existing file refused.
    pub fn bind(listen: &Listen, dev: Arc<dyn BlockDevice>, cfg: &ServeConfig) -> Result<Server> {
        let listener = match listen {
            Listen::Tcp(spec) => Listener::Tcp(bind_tcp(spec)?),
            Listen::Unix(path) => Listener::Unix(bind_unix(path)?, path.clone()),
        };
        // A deep accept queue: a flood of connections must not make the kernel drop a real
        // client's SYN before the accept loop gets to it (std listens with 128).
        // SAFETY: listen() on our own listening socket only changes its backlog.
        unsafe { libc::listen(listener.fd(), 4096) };
        let export = Arc::new(Export::new(dev.as_ref(), cfg));
        let waker = Waker::new().map_err(|e| Error::Other(format!("NBD server: {e}")))?;
        Ok(Server {
            listener,
            dev,
            export,
            budget: Arc::new(Budget::new(cfg.reply_memory)),
            shared: Arc::new(Shared {
                stop: AtomicBool::new(false),
                waker,
                registry: Registry::new(cfg.max_clients, cfg.max_clients_per_address),
            }),
        })
    }

    /// The address actually bound (with the real port when 0 was asked for).
    pub fn local_address(&self) -> Result<Address> {
        match &self.listener {
            Listener::Tcp(l) => {
                let a = l
                    .local_addr()
                    .map_err(|e| Error::Other(format!("listening socket: {e}")))?;
                Ok(Address::Tcp {
                    host: a.ip().to_string(),
                    port: a.port(),
                })
            }
            Listener::Unix(_, p) => Ok(Address::Unix(p.clone())),
        }
    }

    /// The URI clients use to reach the export.
    pub fn uri(&self) -> Result<String> {
        Ok(NbdUri {
            address: self.local_address()?,
            export: self.export.name.clone(),
        }
        .to_uri())
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shared.clone())
    }

    /// Serve until [`ShutdownHandle::shutdown`] is called; then wait for the connections to
    /// finish and remove the Unix socket file.
    pub fn run(self) -> Result<()> {
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        let result = loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                break Ok(());
            }
            threads.retain(|t| !t.is_finished());
            let stream = match self.accept() {
                Ok(Some(s)) => s,
                Ok(None) => continue,
                Err(e) => break Err(e),
            };
            let peer = stream.peer_key();
            let stream = Arc::new(stream);
            let admitted = match self.shared.registry.admit(peer, stream.clone()) {
                Ok(a) => a,
                Err(why) => {
                    log(|| format!("refusing {}: {why}", stream.peer()));
                    continue; // dropping the stream closes it
                }
            };
            if let Some(d) = &admitted.displaced {
                log(|| d.clone());
            }
            let (dev, export, budget, shared) = (
                self.dev.clone(),
                self.export.clone(),
                self.budget.clone(),
                self.shared.clone(),
            );
            let id = admitted.id;
            let spawned = thread::Builder::new()
                .name(format!("nbd-conn-{id}"))
                .spawn(move || {
                    let act = admitted.activity;
                    if let Err(e) = serve_connection(&stream, dev.as_ref(), &export, &act, &budget)
                    {
                        report(&stream.peer(), &e, &act, &export);
                    }
                    shared.registry.remove(id);
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    log(|| format!("cannot start a connection thread: {e}"));
                    self.shared.registry.remove(id);
                }
            }
        };
        // Stop: close the read side of every connection, let in-flight requests finish.
        ShutdownHandle(self.shared.clone()).shutdown();
        for t in threads {
            let _ = t.join();
        }
        if let Listener::Unix(_, path) = &self.listener {
            let _ = std::fs::remove_file(path);
        }
        result
    }

    /// Wait for a connection (or a stop request) and accept it; `Ok(None)`: nothing to do.
    fn accept(&self) -> Result<Option<Stream>> {
        let mut pfd = [
            libc::pollfd {
                fd: self.listener.fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.shared.waker.r,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        let r = unsafe { libc::poll(pfd.as_mut_ptr(), 2, 1000) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(None);
            }
            return Err(Error::Other(format!("waiting for NBD clients: {e}")));
        }
        if pfd[0].revents == 0 {
            return Ok(None);
        }
        let accepted = match &self.listener {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::tcp(s)),
            Listener::Unix(l, _) => l.accept().map(|(s, _)| Stream::unix(s)),
        };
        match accepted {
            Ok(s) => Ok(Some(s)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::ConnectionAborted
                ) =>
            {
                Ok(None)
            }
            Err(e) => {
                // Out of file descriptors and the like: report, back off, keep serving.
                log(|| format!("accepting a connection failed: {e}"));
                thread::sleep(Duration::from_millis(100));
                Ok(None)
            }
        }
    }
}

impl Listener {
    fn fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l, _) => l.as_raw_fd(),
        }
    }
}

/// Log why a connection ended, unless the client simply went away or the server closed it.
fn report(peer: &str, e: &io::Error, act: &Activity, export: &Export) {
    if act.closing() || is_disconnect(e) {
        return;
    }
    if let Some(idle) = e.get_ref().and_then(|i| i.downcast_ref::<transmit::Idle>()) {
        log(|| format!("{peer}: {idle}"));
    } else if matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        if act.negotiated_yet() {
            log(|| {
                format!(
                    "{peer}: closed: the client did not take a reply within {} s",
                    export.send_timeout.as_secs()
                )
            });
        } else {
            log(|| {
                format!(
                    "{peer}: closed: no NBD handshake within {} s",
                    export.handshake_timeout.as_secs_f64()
                )
            });
        }
    } else {
        log(|| format!("{peer}: {e}"));
    }
}
fn bind_tcp(spec: &str) -> Result<TcpListener> {
    let bad = |e: &dyn std::fmt::Display| Error::Other(format!("cannot listen on {spec}: {e}"));
    let addrs: Vec<SocketAddr> = if let Ok(port) = spec.parse::<u16>() {
        vec![SocketAddr::from(([127, 0, 0, 1], port))]
    } else {
        spec.to_socket_addrs()
            .map_err(|e| bad(&format!("{e} (expected ADDR:PORT, e.g. 127.0.0.1:10809)")))?
            .collect()
    };
    let mut last = None;
    for a in addrs {
        match TcpListener::bind(a) {
            Ok(l) => {
                l.set_nonblocking(true).map_err(|e| bad(&e))?;
                return Ok(l);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => bad(&e),
        None => bad(&"the name resolves to no address"),
    })
}

fn bind_unix(path: &Path) -> Result<UnixListener> {
    let name = path.display().to_string();
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        let stale = meta.file_type().is_socket() && UnixStream::connect(path).is_err();
        if !stale {
            return Err(Error::Other(format!(
                "{name}: already exists{}; remove it or choose another --unix path",
                if meta.file_type().is_socket() {
                    " and a server is answering on it"
                } else {
                    " and is not a socket"
                }
            )));
        }
        std::fs::remove_file(path).map_err(|e| Error::io(&name, e))?;
    }
    let l = UnixListener::bind(path).map_err(|e| Error::io(&name, e))?;
    l.set_nonblocking(true).map_err(|e| Error::io(&name, e))?;
    Ok(l)
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

fn proto_err(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Serve one already-connected client on `stream` (negotiation, then transmission until the
/// client disconnects), on the calling thread, with the deadlines and memory budget of `cfg`
/// (the connection limits do not apply to one connection). [`Server::run`] does this for
/// every accepted connection; this entry point serves a socket handed over by another
/// program (or a socket pair, as the NBD fuzz target does). A client that disconnects is not
/// an error.
pub fn serve_client(
    stream: UnixStream,
    dev: Arc<dyn BlockDevice>,
    cfg: &ServeConfig,
) -> io::Result<()> {
    let export = Export::new(dev.as_ref(), cfg);
    let budget = Budget::new(cfg.reply_memory);
    let act = Activity::new();
    match serve_connection(&Stream::unix(stream), dev.as_ref(), &export, &act, &budget) {
        Err(e) if is_disconnect(&e) => Ok(()),
        r => r,
    }
}

/// What the client negotiated.
#[derive(Debug, Clone, Copy)]
struct Session {
    structured: bool,
    /// `base:allocation` selected.
    allocation: bool,
}

fn serve_connection(
    stream: &Stream,
    dev: &dyn BlockDevice,
    export: &Export,
    act: &Activity,
    budget: &Budget,
) -> io::Result<()> {
    // Accepted sockets do not inherit the listener's non-blocking mode on Linux, but be sure.
    stream.set_nonblocking(false)?;
    stream.set_nodelay()?;
    // One deadline for the whole handshake, reads and writes alike.
    stream.set_deadline(Some(act.started + export.handshake_timeout));
    let mut r = BufReader::with_capacity(16 * 1024, stream);
    let mut w = BufWriter::with_capacity(16 * 1024, stream);
    let Some(session) = negotiate::negotiate(&mut r, &mut w, export)? else {
        return Ok(());
    };
    w.flush()?;
    drop(w);
    stream.set_deadline(None);
    act.negotiated();
    transmit::transmission(&mut r, stream, dev, export, session, act, budget)
}

/// SIGINT/SIGTERM blocked in this thread (and every thread it starts afterwards), to be
/// received by one waiting thread instead of killing the process.
pub struct TermSignals {
    set: libc::sigset_t,
}

impl TermSignals {
    /// Block SIGINT and SIGTERM. Call before starting any other thread.
    pub fn block() -> io::Result<Self> {
        // SAFETY: sigset_t is plain data initialised by sigemptyset; the calls only touch it
        // and this thread's signal mask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if r != 0 {
                return Err(io::Error::from_raw_os_error(r));
            }
            Ok(TermSignals { set })
        }
    }

    /// Start a thread that calls `f` on the first SIGINT/SIGTERM; a second one exits at once
    /// (status 130).
    pub fn on_signal(self, f: impl FnOnce(i32) + Send + 'static) {
        let set = self.set;
        thread::spawn(move || {
            let mut f = Some(f);
            loop {
                let mut sig = 0;
                // SAFETY: `set` is a valid sigset; `sig` is a valid out-pointer.
                let r = unsafe { libc::sigwait(&set, &mut sig) };
                if r != 0 {
                    continue;
                }
                match f.take() {
                    Some(f) => f(sig),
                    None => std::process::exit(130),
                }
            }
        });
    }
}
