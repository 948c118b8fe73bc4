//! Read-only NBD server over any [`BlockDevice`].
//!
//! One thread accepts connections; each connection gets a thread that negotiates and then reads
//! requests, and a small pool of worker threads that answer them (replies may go out of order,
//! as the protocol allows; each reply is written whole under the connection's write lock). All
//! connections share one `Arc<dyn BlockDevice>`, whose reads take `&self`.

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, ToSocketAddrs};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::proto::*;
use super::stream::Stream;
use super::uri::{Address, NbdUri};
use crate::error::{Error, Result};
use crate::image::{BlockDevice, ExtentKind};

/// Largest read or block-status request served (and largest write payload swallowed before
/// refusing it). qemu's client never asks for more than 32 MiB.
pub const MAX_REQUEST: u32 = 32 * 1024 * 1024;
/// Longest option payload accepted during negotiation.
const MAX_OPTION_LEN: u32 = 64 * 1024;
/// Options accepted on one connection before it is dropped (a client looping forever).
const MAX_OPTIONS: usize = 1024;
/// Most descriptors in one block-status reply (the protocol lets a server return fewer).
const MAX_DESCRIPTORS: usize = 64 * 1024;
/// Time a client gets to negotiate, and any single socket write may block.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Metadata context id of `base:allocation` on this server.
const BASE_ALLOCATION_ID: u32 = 1;

/// What to serve and how.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Export name clients ask for; the empty (default) name is accepted too.
    pub export_name: String,
    /// Free text shown by `NBD_OPT_LIST` and `NBD_INFO_DESCRIPTION`.
    pub description: String,
    /// Worker threads per connection (requests answered in parallel).
    pub workers: usize,
    /// Connections served at once; more are closed at once.
    pub max_clients: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            export_name: String::new(),
            description: String::new(),
            workers: 4,
            max_clients: 128,
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

struct Shared {
    stop: AtomicBool,
    next_id: AtomicU64,
    /// A handle on every live connection, to shut their read sides down on stop.
    conns: Mutex<HashMap<u64, Stream>>,
}

/// Stops a running [`Server`] from another thread (a signal handler thread, a test).
#[derive(Clone)]
pub struct ShutdownHandle(Arc<Shared>);

impl ShutdownHandle {
    /// Stop accepting, and end every connection after its in-flight requests are answered.
    pub fn shutdown(&self) {
        self.0.stop.store(true, Ordering::SeqCst);
        for s in lock(&self.0.conns).values() {
            let _ = s.shutdown(Shutdown::Read);
        }
    }
}

/// A bound, not yet running, NBD server.
pub struct Server {
    listener: Listener,
    dev: Arc<dyn BlockDevice>,
    export: Arc<Export>,
    shared: Arc<Shared>,
}

/// The export as negotiation sees it.
struct Export {
    name: String,
    description: String,
    size: u64,
    preferred_block: u32,
    workers: usize,
    max_clients: usize,
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
            max_clients: cfg.max_clients.max(1),
        }
    }
    fn matches(&self, name: &str) -> bool {
        name == self.name || name.is_empty()
    }
    fn flags(&self, structured: bool) -> u16 {
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

impl Server {
    /// Bind the listening socket. A TCP address without a host binds 127.0.0.1 (loopback); a
    /// stale Unix socket (one nobody answers on) is replaced, any other existing file refused.
    pub fn bind(listen: &Listen, dev: Arc<dyn BlockDevice>, cfg: &ServeConfig) -> Result<Server> {
        let listener = match listen {
            Listen::Tcp(spec) => Listener::Tcp(bind_tcp(spec)?),
            Listen::Unix(path) => Listener::Unix(bind_unix(path)?, path.clone()),
        };
        let export = Arc::new(Export::new(dev.as_ref(), cfg));
        Ok(Server {
            listener,
            dev,
            export,
            shared: Arc::new(Shared {
                stop: AtomicBool::new(false),
                next_id: AtomicU64::new(0),
                conns: Mutex::new(HashMap::new()),
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
        let fd = match &self.listener {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l, _) => l.as_raw_fd(),
        };
        let live = Arc::new(AtomicUsize::new(0));
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        let result = loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                break Ok(());
            }
            threads.retain(|t| !t.is_finished());
            // Wait for a connection, waking up regularly to notice a stop request.
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, count 1.
            let r = unsafe { libc::poll(&mut pfd, 1, 200) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break Err(Error::Other(format!("waiting for NBD clients: {e}")));
            }
            if r == 0 {
                continue;
            }
            let accepted = match &self.listener {
                Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
                Listener::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
            };
            let stream = match accepted {
                Ok(s) => s,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted
                            | io::ErrorKind::WouldBlock
                            | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    // Out of file descriptors and the like: report, back off, keep serving.
                    eprintln!("imgcheck serve: accepting a connection failed: {e}");
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            if live.load(Ordering::SeqCst) >= self.export.max_clients {
                eprintln!(
                    "imgcheck serve: refusing {}: already serving {} clients",
                    stream.peer(),
                    self.export.max_clients
                );
                continue; // dropping the stream closes it
            }
            let id = self.shared.next_id.fetch_add(1, Ordering::SeqCst);
            match stream.try_clone() {
                Ok(c) => {
                    lock(&self.shared.conns).insert(id, c);
                }
                Err(e) => {
                    eprintln!("imgcheck serve: {}: {e}", stream.peer());
                    continue;
                }
            }
            if self.shared.stop.load(Ordering::SeqCst) {
                lock(&self.shared.conns).remove(&id);
                break Ok(());
            }
            live.fetch_add(1, Ordering::SeqCst);
            let (dev, export, shared, live2) = (
                self.dev.clone(),
                self.export.clone(),
                self.shared.clone(),
                live.clone(),
            );
            let spawned = thread::Builder::new()
                .name(format!("nbd-conn-{id}"))
                .spawn(move || {
                    let peer = stream.peer();
                    if let Err(e) = serve_connection(stream, dev, &export) {
                        if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
                        {
                            eprintln!(
                                "imgcheck serve: {peer}: closed, the client stopped talking for {} s",
                                IO_TIMEOUT.as_secs()
                            );
                        } else if !is_disconnect(&e) {
                            eprintln!("imgcheck serve: {peer}: {e}");
                        }
                    }
                    lock(&shared.conns).remove(&id);
                    live2.fetch_sub(1, Ordering::SeqCst);
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    eprintln!("imgcheck serve: cannot start a connection thread: {e}");
                    lock(&self.shared.conns).remove(&id);
                    live.fetch_sub(1, Ordering::SeqCst);
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
/// client disconnects), on the calling thread. [`Server::run`] does this for every accepted
/// connection; this entry point serves a socket handed over by another program (or a socket
/// pair, as the NBD fuzz target does). A client that disconnects is not an error.
pub fn serve_client(
    stream: UnixStream,
    dev: Arc<dyn BlockDevice>,
    cfg: &ServeConfig,
) -> io::Result<()> {
    let export = Export::new(dev.as_ref(), cfg);
    match serve_connection(Stream::Unix(stream), dev, &export) {
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

fn serve_connection(stream: Stream, dev: Arc<dyn BlockDevice>, export: &Export) -> io::Result<()> {
    // Accepted sockets do not inherit the listener's non-blocking mode on Linux, but be sure.
    if let Stream::Tcp(s) = &stream {
        s.set_nonblocking(false)?;
    }
    if let Stream::Unix(s) = &stream {
        s.set_nonblocking(false)?;
    }
    stream.set_nodelay()?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut r = BufReader::with_capacity(64 * 1024, stream.try_clone()?);
    let mut w = BufWriter::with_capacity(256 * 1024, stream.try_clone()?);
    let Some(session) = negotiate(&mut r, &mut w, export)? else {
        return Ok(());
    };
    // An idle client may keep its connection as long as it likes.
    stream.set_read_timeout(None)?;
    transmission(r, w, stream, dev, export, session)
}

/// Option haggling. `Ok(None)`: the client aborted.
fn negotiate(
    r: &mut impl Read,
    w: &mut impl Write,
    export: &Export,
) -> io::Result<Option<Session>> {
    let mut hello = Vec::with_capacity(18);
    hello.extend_from_slice(&NBDMAGIC.to_be_bytes());
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    w.write_all(&hello)?;
    w.flush()?;
    let cflags = read_u32(r)?;
    if cflags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Err(proto_err(format!("unknown client flags {cflags:#x}")));
    }
    let fixed = cflags & FLAG_C_FIXED_NEWSTYLE != 0;
    let no_zeroes = cflags & FLAG_C_NO_ZEROES != 0;
    let mut s = Session {
        structured: false,
        allocation: false,
    };
    for _ in 0..MAX_OPTIONS {
        if read_u64(r)? != IHAVEOPT {
            return Err(proto_err("bad option magic"));
        }
        let opt = read_u32(r)?;
        let len = read_u32(r)?;
        if !fixed && opt != OPT_EXPORT_NAME {
            return Err(proto_err(format!(
                "{} from a client without fixed newstyle negotiation",
                opt_name(opt)
            )));
        }
        if len > MAX_OPTION_LEN {
            if len > 16 * MAX_OPTION_LEN || opt == OPT_EXPORT_NAME {
                return Err(proto_err(format!("{} of {len} bytes", opt_name(opt))));
            }
            discard(r, len as u64)?;
            reply_err(w, opt, REP_ERR_TOO_BIG, "option data too long")?;
            continue;
        }
        let mut data = vec![0u8; len as usize];
        r.read_exact(&mut data)?;
        match opt {
            OPT_EXPORT_NAME => {
                let name = String::from_utf8_lossy(&data);
                if !export.matches(&name) {
                    // The protocol gives no way to refuse this option but closing.
                    return Err(proto_err(format!(
                        "client asked for export \"{name}\" (this server has \"{}\")",
                        export.name
                    )));
                }
                let mut b = Vec::with_capacity(10 + 124);
                b.extend_from_slice(&export.size.to_be_bytes());
                b.extend_from_slice(&export.flags(s.structured).to_be_bytes());
                if !no_zeroes {
                    b.extend_from_slice(&[0u8; 124]);
                }
                w.write_all(&b)?;
                w.flush()?;
                return Ok(Some(s));
            }
            OPT_ABORT => {
                let _ = write_opt_reply(w, opt, REP_ACK, &[]).and_then(|_| w.flush());
                return Ok(None);
            }
            OPT_LIST => {
                if !data.is_empty() {
                    reply_err(w, opt, REP_ERR_INVALID, "NBD_OPT_LIST takes no data")?;
                    continue;
                }
                let mut d = Vec::new();
                d.extend_from_slice(&(export.name.len() as u32).to_be_bytes());
                d.extend_from_slice(export.name.as_bytes());
                d.extend_from_slice(export.description.as_bytes());
                write_opt_reply(w, opt, REP_SERVER, &d)?;
                write_opt_reply(w, opt, REP_ACK, &[])?;
                w.flush()?;
            }
            OPT_INFO | OPT_GO => {
                let Some((name, requests)) = parse_info_request(&data) else {
                    reply_err(w, opt, REP_ERR_INVALID, "malformed request")?;
                    continue;
                };
                if !export.matches(&name) {
                    reply_err(
                        w,
                        opt,
                        REP_ERR_UNKNOWN,
                        &format!(
                            "no export named \"{name}\" (this server has \"{}\")",
                            export.name
                        ),
                    )?;
                    continue;
                }
                let mut d = Vec::new();
                d.extend_from_slice(&INFO_EXPORT.to_be_bytes());
                d.extend_from_slice(&export.size.to_be_bytes());
                d.extend_from_slice(&export.flags(s.structured).to_be_bytes());
                write_opt_reply(w, opt, REP_INFO, &d)?;
                let mut sent = Vec::new();
                for req in requests {
                    if sent.contains(&req) {
                        continue;
                    }
                    sent.push(req);
                    let mut d = req.to_be_bytes().to_vec();
                    match req {
                        INFO_NAME => d.extend_from_slice(export.name.as_bytes()),
                        INFO_DESCRIPTION => d.extend_from_slice(export.description.as_bytes()),
                        INFO_BLOCK_SIZE => {
                            d.extend_from_slice(&1u32.to_be_bytes());
                            d.extend_from_slice(&export.preferred_block.to_be_bytes());
                            d.extend_from_slice(&MAX_REQUEST.to_be_bytes());
                        }
                        _ => continue, // unknown information types are skipped
                    }
                    write_opt_reply(w, opt, REP_INFO, &d)?;
                }
                write_opt_reply(w, opt, REP_ACK, &[])?;
                w.flush()?;
                if opt == OPT_GO {
                    return Ok(Some(s));
                }
            }
            OPT_STRUCTURED_REPLY => {
                if !data.is_empty() {
                    reply_err(
                        w,
                        opt,
                        REP_ERR_INVALID,
                        "NBD_OPT_STRUCTURED_REPLY takes no data",
                    )?;
                } else if s.structured {
                    reply_err(
                        w,
                        opt,
                        REP_ERR_INVALID,
                        "structured replies already negotiated",
                    )?;
                } else {
                    s.structured = true;
                    write_opt_reply(w, opt, REP_ACK, &[])?;
                    w.flush()?;
                }
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                if !s.structured {
                    reply_err(
                        w,
                        opt,
                        REP_ERR_INVALID,
                        "negotiate NBD_OPT_STRUCTURED_REPLY first",
                    )?;
                    continue;
                }
                let Some((name, queries)) = parse_meta_request(&data) else {
                    reply_err(w, opt, REP_ERR_INVALID, "malformed request")?;
                    continue;
                };
                if !export.matches(&name) {
                    reply_err(
                        w,
                        opt,
                        REP_ERR_UNKNOWN,
                        &format!("no export named \"{name}\""),
                    )?;
                    continue;
                }
                let set = opt == OPT_SET_META_CONTEXT;
                let selected = if set {
                    queries.iter().any(|q| q == BASE_ALLOCATION)
                } else {
                    queries.is_empty()
                        || queries.iter().any(|q| q == BASE_ALLOCATION || q == "base:")
                };
                if set {
                    s.allocation = selected;
                }
                if selected {
                    let id = if set { BASE_ALLOCATION_ID } else { 0 };
                    let mut d = id.to_be_bytes().to_vec();
                    d.extend_from_slice(BASE_ALLOCATION.as_bytes());
                    write_opt_reply(w, opt, REP_META_CONTEXT, &d)?;
                }
                write_opt_reply(w, opt, REP_ACK, &[])?;
                w.flush()?;
            }
            OPT_STARTTLS => reply_err(w, opt, REP_ERR_UNSUP, "TLS is not supported")?,
            _ => reply_err(
                w,
                opt,
                REP_ERR_UNSUP,
                &format!("{} is not supported", opt_name(opt)),
            )?,
        }
    }
    Err(proto_err(format!("more than {MAX_OPTIONS} options")))
}

fn reply_err(w: &mut impl Write, opt: u32, typ: u32, msg: &str) -> io::Result<()> {
    write_opt_reply(w, opt, typ, msg.as_bytes())?;
    w.flush()
}

/// `NBD_OPT_INFO`/`GO` data: export name and the information types requested.
fn parse_info_request(d: &[u8]) -> Option<(String, Vec<u16>)> {
    let nlen = u32::from_be_bytes(d.get(0..4)?.try_into().ok()?) as usize;
    let name = d.get(4..4usize.checked_add(nlen)?)?;
    let rest = &d[4 + nlen..];
    let n = u16::from_be_bytes(rest.get(0..2)?.try_into().ok()?) as usize;
    let list = &rest[2..];
    if list.len() != 2 * n || nlen > MAX_STRING {
        return None;
    }
    let reqs = list
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    Some((String::from_utf8(name.to_vec()).ok()?, reqs))
}

/// `NBD_OPT_{LIST,SET}_META_CONTEXT` data: export name and queries.
fn parse_meta_request(d: &[u8]) -> Option<(String, Vec<String>)> {
    let nlen = u32::from_be_bytes(d.get(0..4)?.try_into().ok()?) as usize;
    if nlen > MAX_STRING {
        return None;
    }
    let name = String::from_utf8(d.get(4..4 + nlen)?.to_vec()).ok()?;
    let mut p = 4 + nlen;
    let n = u32::from_be_bytes(d.get(p..p + 4)?.try_into().ok()?) as usize;
    p += 4;
    let mut queries = Vec::new();
    for _ in 0..n {
        let qlen = u32::from_be_bytes(d.get(p..p + 4)?.try_into().ok()?) as usize;
        p += 4;
        if qlen > MAX_STRING {
            return None;
        }
        queries.push(String::from_utf8(d.get(p..p + qlen)?.to_vec()).ok()?);
        p += qlen;
    }
    (p == d.len()).then_some((name, queries))
}

/// State shared by a connection's reader and workers.
struct Conn {
    dev: Arc<dyn BlockDevice>,
    size: u64,
    session: Session,
    out: Mutex<BufWriter<Stream>>,
    /// Set when a reply could not be written: the connection is finished.
    broken: AtomicBool,
    control: Stream,
}

fn transmission(
    mut r: BufReader<Stream>,
    w: BufWriter<Stream>,
    control: Stream,
    dev: Arc<dyn BlockDevice>,
    export: &Export,
    session: Session,
) -> io::Result<()> {
    let conn = Arc::new(Conn {
        size: dev.size(),
        dev,
        session,
        out: Mutex::new(w),
        broken: AtomicBool::new(false),
        control,
    });
    let (tx, rx) = sync_channel::<Request>(2 * export.workers);
    let rx = Arc::new(Mutex::new(rx));
    let mut workers = Vec::new();
    for _ in 0..export.workers {
        let (conn, rx) = (conn.clone(), rx.clone());
        workers.push(thread::spawn(move || worker(&conn, &rx)));
    }
    let result = (|| -> io::Result<()> {
        loop {
            let mut hdr = [0u8; Request::SIZE];
            match r.read_exact(&mut hdr) {
                Ok(()) => {}
                // The client went away between requests (or the server is stopping).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
            let req = Request::decode(&hdr).ok_or_else(|| proto_err("bad request magic"))?;
            match req.typ {
                CMD_DISC => return Ok(()),
                CMD_WRITE => {
                    if req.length > MAX_REQUEST {
                        return Err(proto_err(format!(
                            "write of {} bytes (refused, and too long to skip)",
                            req.length
                        )));
                    }
                    discard(&mut r, req.length as u64)?;
                    conn.error(req.cookie, EPERM, "the export is read-only")?;
                }
                _ => {
                    if tx.send(req).is_err() {
                        return Ok(());
                    }
                }
            }
            if conn.broken.load(Ordering::SeqCst) {
                return Ok(());
            }
        }
    })();
    drop(tx);
    for t in workers {
        let _ = t.join();
    }
    let _ = lock(&conn.out).flush();
    result
}

fn worker(conn: &Conn, rx: &Mutex<Receiver<Request>>) {
    let mut buf = Vec::new();
    loop {
        let req = match lock(rx).recv() {
            Ok(r) => r,
            Err(_) => return,
        };
        if let Err(e) = conn.answer(req, &mut buf) {
            if !is_disconnect(&e) {
                eprintln!("imgcheck serve: {}: {e}", conn.control.peer());
            }
            conn.broken.store(true, Ordering::SeqCst);
            let _ = conn.control.shutdown(Shutdown::Both);
            return;
        }
        if buf.capacity() > 4 * 1024 * 1024 {
            buf = Vec::new(); // do not keep a 32 MiB buffer per idle worker
        }
    }
}

/// A piece of a structured read reply.
struct Piece {
    offset: u64,
    length: u64,
    hole: bool,
}

impl Conn {
    fn out(&self) -> MutexGuard<'_, BufWriter<Stream>> {
        lock(&self.out)
    }

    fn ok(&self, cookie: u64) -> io::Result<()> {
        let mut w = self.out();
        if self.session.structured {
            w.write_all(&chunk_header(REPLY_FLAG_DONE, REPLY_TYPE_NONE, cookie, 0))?;
        } else {
            w.write_all(&simple_reply(0, cookie))?;
        }
        w.flush()
    }

    fn error(&self, cookie: u64, err: u32, msg: &str) -> io::Result<()> {
        let mut w = self.out();
        if self.session.structured {
            let mut m = msg;
            while m.len() > MAX_STRING {
                let mut cut = MAX_STRING;
                while !m.is_char_boundary(cut) {
                    cut -= 1;
                }
                m = &m[..cut];
            }
            let mut b = Vec::with_capacity(26 + m.len());
            b.extend_from_slice(&chunk_header(
                REPLY_FLAG_DONE,
                REPLY_TYPE_ERROR,
                cookie,
                6 + m.len() as u32,
            ));
            b.extend_from_slice(&err.to_be_bytes());
            b.extend_from_slice(&(m.len() as u16).to_be_bytes());
            b.extend_from_slice(m.as_bytes());
            w.write_all(&b)?;
        } else {
            w.write_all(&simple_reply(err, cookie))?;
        }
        w.flush()
    }

    /// Check a request's range: inside the export and not longer than we serve.
    fn check(&self, req: &Request) -> std::result::Result<(), String> {
        if req.length > MAX_REQUEST {
            return Err(format!(
                "request of {} bytes is longer than the {MAX_REQUEST}-byte maximum",
                req.length
            ));
        }
        match req.offset.checked_add(req.length as u64) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(format!(
                "{} bytes at offset {} lie past the end of the {}-byte export",
                req.length, req.offset, self.size
            )),
        }
    }

    fn answer(&self, req: Request, buf: &mut Vec<u8>) -> io::Result<()> {
        let known =
            CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_DF | CMD_FLAG_REQ_ONE | CMD_FLAG_FAST_ZERO;
        if req.flags & !known != 0 {
            return self.error(req.cookie, EINVAL, "unknown command flags");
        }
        match req.typ {
            CMD_READ => {
                if req.flags & (CMD_FLAG_REQ_ONE | CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO) != 0
                    || (req.flags & CMD_FLAG_DF != 0 && !self.session.structured)
                {
                    return self.error(req.cookie, EINVAL, "flag not valid for NBD_CMD_READ");
                }
                if let Err(m) = self.check(&req) {
                    return self.error(req.cookie, EINVAL, &m);
                }
                self.read(req, buf)
            }
            CMD_BLOCK_STATUS => {
                if !self.session.structured || !self.session.allocation {
                    return self.error(
                        req.cookie,
                        EINVAL,
                        "no metadata context was negotiated (NBD_OPT_SET_META_CONTEXT)",
                    );
                }
                if req.length == 0 {
                    return self.error(req.cookie, EINVAL, "zero-length block status request");
                }
                if req
                    .offset
                    .checked_add(req.length as u64)
                    .is_none_or(|e| e > self.size)
                {
                    return self.error(
                        req.cookie,
                        EINVAL,
                        "block status request past the end of the export",
                    );
                }
                self.block_status(req)
            }
            CMD_FLUSH => self.ok(req.cookie), // nothing is ever written
            CMD_CACHE => match self.check(&req) {
                Ok(()) => self.ok(req.cookie),
                Err(m) => self.error(req.cookie, EINVAL, &m),
            },
            CMD_TRIM | CMD_WRITE_ZEROES | CMD_RESIZE => {
                self.error(req.cookie, EPERM, "the export is read-only")
            }
            other => self.error(req.cookie, EINVAL, &format!("unknown command {other}")),
        }
    }

    fn read(&self, req: Request, buf: &mut Vec<u8>) -> io::Result<()> {
        let len = req.length as usize;
        if !self.session.structured {
            buf.clear();
            buf.resize(len, 0);
            if let Err(e) = self.dev.read_at(&mut buf[..], req.offset) {
                return self.error(req.cookie, EIO, &e.to_string());
            }
            let mut w = self.out();
            w.write_all(&simple_reply(0, req.cookie))?;
            w.write_all(&buf[..])?;
            return w.flush();
        }
        if len == 0 {
            return self.ok(req.cookie);
        }
        let pieces = self.pieces(req.offset, req.length as u64, req.flags & CMD_FLAG_DF != 0);
        buf.clear();
        buf.resize(len, 0);
        for p in pieces.iter().filter(|p| !p.hole) {
            let rel = (p.offset - req.offset) as usize;
            if let Err(e) = self
                .dev
                .read_at(&mut buf[rel..rel + p.length as usize], p.offset)
            {
                return self.error(req.cookie, EIO, &e.to_string());
            }
        }
        let mut w = self.out();
        let n = pieces.len();
        for (i, p) in pieces.iter().enumerate() {
            let flags = if i + 1 == n { REPLY_FLAG_DONE } else { 0 };
            if p.hole {
                let mut b = [0u8; 32];
                b[..20].copy_from_slice(&chunk_header(
                    flags,
                    REPLY_TYPE_OFFSET_HOLE,
                    req.cookie,
                    12,
                ));
                b[20..28].copy_from_slice(&p.offset.to_be_bytes());
                b[28..32].copy_from_slice(&(p.length as u32).to_be_bytes());
                w.write_all(&b)?;
            } else {
                let mut b = [0u8; 28];
                b[..20].copy_from_slice(&chunk_header(
                    flags,
                    REPLY_TYPE_OFFSET_DATA,
                    req.cookie,
                    8 + p.length as u32,
                ));
                b[20..28].copy_from_slice(&p.offset.to_be_bytes());
                w.write_all(&b)?;
                let rel = (p.offset - req.offset) as usize;
                w.write_all(&buf[rel..rel + p.length as usize])?;
            }
        }
        w.flush()
    }

    /// Split a read into data and hole pieces from the device's map. With `df` (don't
    /// fragment) the whole range is one piece. A map that fails or does not tile the range
    /// exactly makes it one data piece: holes are an optimisation, never a guess.
    fn pieces(&self, offset: u64, len: u64, df: bool) -> Vec<Piece> {
        let end = offset + len;
        let map = self.dev.map(offset, len).ok();
        let all_zero = map.as_ref().is_some_and(|m| {
            m.iter().all(|e| e.kind.reads_as_zero())
                && m.first().is_some_and(|e| e.offset == offset)
                && m.last().is_some_and(|e| e.offset + e.length == end)
        });
        let whole = |hole| {
            vec![Piece {
                offset,
                length: len,
                hole,
            }]
        };
        if df {
            return whole(all_zero);
        }
        let Some(map) = map else {
            return whole(false);
        };
        let mut out: Vec<Piece> = Vec::new();
        let mut pos = offset;
        for e in &map {
            if e.offset != pos || e.length == 0 || e.offset + e.length > end {
                return whole(false);
            }
            let hole = e.kind.reads_as_zero();
            match out.last_mut() {
                Some(last) if last.hole == hole => last.length += e.length,
                _ => out.push(Piece {
                    offset: e.offset,
                    length: e.length,
                    hole,
                }),
            }
            pos += e.length;
        }
        if pos != end {
            return whole(false);
        }
        out
    }

    fn block_status(&self, req: Request) -> io::Result<()> {
        let map = match self.dev.map(req.offset, req.length as u64) {
            Ok(m) => m,
            Err(e) => return self.error(req.cookie, EIO, &e.to_string()),
        };
        let limit = if req.flags & CMD_FLAG_REQ_ONE != 0 {
            1
        } else {
            MAX_DESCRIPTORS
        };
        let mut descs: Vec<(u32, u32)> = Vec::new();
        let mut pos = req.offset;
        for e in &map {
            if e.offset != pos || e.length == 0 {
                break; // a map that does not tile the range: report what is certain
            }
            let status = match e.kind {
                ExtentKind::Data => 0,
                ExtentKind::Zero => STATE_ZERO,
                ExtentKind::Unallocated => STATE_HOLE | STATE_ZERO,
            };
            let length = e.length.min(req.offset + req.length as u64 - pos) as u32;
            match descs.last_mut() {
                Some(last) if last.1 == status => last.0 += length,
                _ => {
                    if descs.len() == limit {
                        break;
                    }
                    descs.push((length, status));
                }
            }
            pos += length as u64;
            if pos >= req.offset + req.length as u64 {
                break;
            }
        }
        if descs.is_empty() {
            descs.push((req.length, 0)); // status 0 ("data, contents unknown") is always safe
        }
        let mut b = Vec::with_capacity(24 + 8 * descs.len());
        b.extend_from_slice(&chunk_header(
            REPLY_FLAG_DONE,
            REPLY_TYPE_BLOCK_STATUS,
            req.cookie,
            4 + 8 * descs.len() as u32,
        ));
        b.extend_from_slice(&BASE_ALLOCATION_ID.to_be_bytes());
        for (l, s) in descs {
            b.extend_from_slice(&l.to_be_bytes());
            b.extend_from_slice(&s.to_be_bytes());
        }
        let mut w = self.out();
        w.write_all(&b)?;
        w.flush()
    }
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
