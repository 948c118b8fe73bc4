//! NBD client: an export as a [`Storage`], so any image format can be read from it.
//!
//! Negotiation: fixed newstyle, structured replies and `base:allocation` when the server
//! offers them, `NBD_OPT_GO` (falling back to `NBD_OPT_EXPORT_NAME` for servers without it).
//! Reads are `NBD_CMD_READ` (holes arrive as `OFFSET_HOLE` chunks, nothing sent for them);
//! [`Storage::data_ranges`] is answered by `NBD_CMD_BLOCK_STATUS`. Several threads can read at
//! once: each takes a connection from a small pool (more than one connection only when the
//! server advertises `NBD_FLAG_CAN_MULTI_CONN`).
//!
//! Deadlines, not just socket timeouts: a socket timeout bounds one read, so a server that
//! drips a byte before each timeout would keep a client waiting forever. The whole
//! negotiation (connect, greeting, options) must finish within [`Timeouts::negotiation`], and
//! each request's whole reply within [`Timeouts::request`] plus a second per 256 KiB. After a
//! request has timed out the export is considered dead: every later request fails at once
//! with the same error instead of waiting out its own deadline.

use std::io::{self, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::proto::*;
use super::stream::{transfer_deadline, Stream};
use super::uri::{Address, NbdUri};
use crate::image::Storage;

/// How long an NBD server may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For connecting and the whole negotiation (default 10 s: a server answers the handshake
    /// at once; qemu-nbd gives its clients 10 s as well).
    pub negotiation: Duration,
    /// For each request's whole reply, plus a second per 256 KiB of data asked for (default
    /// 30 s, the Linux NBD client's default request timeout).
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            negotiation: Duration::from_secs(10),
            request: Duration::from_secs(30),
        }
    }
}

/// Negotiation deadline for extra pool connections (a server that serves one client at a time
/// accepts the TCP connection but never answers; we then stay with one connection).
const EXTRA_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections per export when the server allows several.
const MAX_CONNECTIONS: usize = 4;
/// Largest request we send.
const MAX_REQUEST: u32 = 32 * 1024 * 1024;
/// Largest option reply we accept during negotiation.
const MAX_OPT_REPLY: u32 = 64 * 1024;
/// Option replies accepted for one option (a server sending replies forever).
const MAX_OPT_REPLIES: usize = 256;
/// Most chunks accepted in one structured reply.
const MAX_CHUNKS: usize = 1 << 20;
/// Largest block-status request (the reply may cover less).
const BLOCK_STATUS_SPAN: u64 = 1 << 30;
/// Most data ranges returned by one `data_ranges` call; the rest is reported as data.
const MAX_RANGES: usize = 1 << 20;

fn proto_err(msg: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("NBD protocol error: {}", msg.into()),
    )
}

/// What negotiation told us about the export.
#[derive(Debug, Clone, Copy)]
pub struct ExportInfo {
    pub size: u64,
    pub flags: u16,
    pub structured: bool,
    /// Context id of `base:allocation`, when selected.
    pub allocation_id: Option<u32>,
    pub min_block: u32,
    pub preferred_block: u32,
    /// Largest request we send (server maximum, capped).
    pub max_request: u32,
}

/// One connection; requests are written to the same socket the reader reads from.
struct Conn {
    r: BufReader<Stream>,
    cookie: u64,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Soft disconnect, best effort, without waiting on a stuck server.
        let req = Request {
            flags: 0,
            typ: CMD_DISC,
            cookie: self.cookie.wrapping_add(1),
            offset: 0,
            length: 0,
        };
        let s = self.r.get_ref();
        s.set_deadline(Some(Instant::now() + Duration::from_millis(100)));
        let _ = (&mut &*s).write_all(&req.encode());
    }
}

struct PoolState {
    idle: Vec<Conn>,
    open: usize,
    can_grow: bool,
}

/// An NBD export, read through one or more connections.
pub struct NbdStorage {
    name: String,
    uri: NbdUri,
    info: ExportInfo,
    timeouts: Timeouts,
    max_conns: usize,
    pool: Mutex<PoolState>,
    cv: Condvar,
    /// Set when a request timed out: the server is dead or stuck, later requests fail at once.
    dead: Mutex<Option<String>>,
}

/// Connect to `address`, within the time left before `deadline`.
fn connect(address: &Address, deadline: Instant) -> io::Result<Stream> {
    let left = || {
        let t = deadline.saturating_duration_since(Instant::now());
        if t.is_zero() {
            Err(super::stream::deadline_passed())
        } else {
            Ok(t)
        }
    };
    let stream = match address {
        Address::Tcp { host, port } => {
            let addrs = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {host}: {e}")))?;
            let mut last = None;
            let mut found = None;
            for a in addrs {
                match TcpStream::connect_timeout(&a, left()?) {
                    Ok(s) => {
                        found = Some(s);
                        break;
                    }
                    Err(e) => {
                        last = Some(io::Error::new(
                            e.kind(),
                            format!("cannot connect to {a}: {e}"),
                        ))
                    }
                }
            }
            match found {
                Some(s) => Stream::tcp(s),
                None => {
                    return Err(last.unwrap_or_else(|| {
                        io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"))
                    }))
                }
            }
        }
        Address::Unix(p) => Stream::unix(UnixStream::connect(p).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot connect to {}: {e}", p.display()))
        })?),
    };
    stream.set_nodelay()?;
    stream.set_deadline(Some(deadline));
    Ok(stream)
}

fn send_option(w: &mut impl Write, opt: u32, data: &[u8]) -> io::Result<()> {
    let mut b = Vec::with_capacity(16 + data.len());
    b.extend_from_slice(&IHAVEOPT.to_be_bytes());
    b.extend_from_slice(&opt.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    w.write_all(&b)
}

fn read_opt_reply(r: &mut impl Read, opt: u32) -> io::Result<(u32, Vec<u8>)> {
    if read_u64(r)? != REPLY_MAGIC {
        return Err(proto_err("bad option reply magic"));
    }
    let o = read_u32(r)?;
    if o != opt {
        return Err(proto_err(format!(
            "reply to {} while waiting for {}",
            opt_name(o),
            opt_name(opt)
        )));
    }
    let typ = read_u32(r)?;
    let len = read_u32(r)?;
    if len > MAX_OPT_REPLY {
        return Err(proto_err(format!("option reply of {len} bytes")));
    }
    let mut d = vec![0u8; len as usize];
    r.read_exact(&mut d)?;
    Ok((typ, d))
}

fn err_text(typ: u32, data: &[u8]) -> String {
    let what = match typ {
        REP_ERR_UNSUP => "unsupported",
        REP_ERR_POLICY => "refused by policy",
        REP_ERR_INVALID => "invalid",
        REP_ERR_UNKNOWN => "unknown export",
        REP_ERR_SHUTDOWN => "server shutting down",
        REP_ERR_TOO_BIG => "too big",
        _ => "error",
    };
    let msg = String::from_utf8_lossy(&data[..data.len().min(MAX_STRING)]);
    if msg.is_empty() {
        format!("{what} ({typ:#x})")
    } else {
        format!("{what}: {msg}")
    }
}

fn be32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

/// Connect and negotiate, all before `deadline`. On failure the client ends the session
/// politely (`NBD_OPT_ABORT`) before closing it.
fn handshake(address: &Address, export: &str, deadline: Instant) -> io::Result<(Conn, ExportInfo)> {
    let stream = connect(address, deadline)?;
    let mut w = stream.try_clone()?;
    w.set_deadline(Some(deadline));
    let mut r = BufReader::with_capacity(256 * 1024, stream);
    match negotiate(&mut r, &mut w, export) {
        Ok(info) => {
            r.get_ref().set_deadline(None);
            Ok((Conn { r, cookie: 0 }, info))
        }
        Err((e, in_options)) => {
            if in_options {
                let _ = send_option(&mut w, OPT_ABORT, &[]);
            }
            Err(e)
        }
    }
}

/// The handshake proper; an error says whether option haggling had started (so that an
/// `NBD_OPT_ABORT` is in order).
fn negotiate(
    r: &mut BufReader<Stream>,
    w: &mut Stream,
    export: &str,
) -> Result<ExportInfo, (io::Error, bool)> {
    let early = |e: io::Error| (e, false);
    let (fixed, no_zeroes) = greeting(r, w).map_err(early)?;
    options(r, w, export, fixed, no_zeroes).map_err(|e| (e, fixed))
}

fn greeting(r: &mut BufReader<Stream>, w: &mut Stream) -> io::Result<(bool, bool)> {
    if read_u64(r)? != NBDMAGIC {
        return Err(proto_err(
            "the server did not greet with NBDMAGIC (not an NBD server?)",
        ));
    }
    let second = read_u64(r)?;
    if second == CLISERV_MAGIC {
        return Err(proto_err("oldstyle NBD servers are not supported"));
    }
    if second != IHAVEOPT {
        return Err(proto_err("unknown handshake magic"));
    }
    let hflags = read_u16(r)?;
    let fixed = hflags & FLAG_FIXED_NEWSTYLE != 0;
    let no_zeroes = hflags & FLAG_NO_ZEROES != 0;
    let mut cflags = 0u32;
    if fixed {
        cflags |= FLAG_C_FIXED_NEWSTYLE;
    }
    if no_zeroes {
        cflags |= FLAG_C_NO_ZEROES;
    }
    w.write_all(&cflags.to_be_bytes())?;
    Ok((fixed, no_zeroes))
}

fn options(
    r: &mut BufReader<Stream>,
    w: &mut Stream,
    export: &str,
    fixed: bool,
    no_zeroes: bool,
) -> io::Result<ExportInfo> {
    let mut info = ExportInfo {
        size: 0,
        flags: 0,
        structured: false,
        allocation_id: None,
        min_block: 1,
        preferred_block: 4096,
        max_request: MAX_REQUEST,
    };
    let name = export.as_bytes();
    let mut go_ok = false;
    if fixed {
        send_option(w, OPT_STRUCTURED_REPLY, &[])?;
        let (typ, _) = read_opt_reply(r, OPT_STRUCTURED_REPLY)?;
        info.structured = typ == REP_ACK;
        if info.structured {
            let mut d = Vec::new();
            d.extend_from_slice(&(name.len() as u32).to_be_bytes());
            d.extend_from_slice(name);
            d.extend_from_slice(&1u32.to_be_bytes());
            d.extend_from_slice(&(BASE_ALLOCATION.len() as u32).to_be_bytes());
            d.extend_from_slice(BASE_ALLOCATION.as_bytes());
            send_option(w, OPT_SET_META_CONTEXT, &d)?;
            for i in 0.. {
                if i == MAX_OPT_REPLIES {
                    return Err(proto_err("too many NBD_OPT_SET_META_CONTEXT replies"));
                }
                let (typ, d) = read_opt_reply(r, OPT_SET_META_CONTEXT)?;
                match typ {
                    REP_META_CONTEXT => {
                        if let Some(id) = be32(&d, 0) {
                            if &d[4..] == BASE_ALLOCATION.as_bytes() {
                                info.allocation_id = Some(id);
                            }
                        }
                    }
                    REP_ACK => break,
                    t if t & REP_FLAG_ERROR != 0 => {
                        if t == REP_ERR_UNKNOWN {
                            return Err(no_such_export(export, t, &d));
                        }
                        info.allocation_id = None;
                        break;
                    }
                    _ => {}
                }
            }
        }
        let mut d = Vec::new();
        d.extend_from_slice(&(name.len() as u32).to_be_bytes());
        d.extend_from_slice(name);
        d.extend_from_slice(&1u16.to_be_bytes());
        d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        send_option(w, OPT_GO, &d)?;
        let mut got_export = false;
        for i in 0.. {
            if i == MAX_OPT_REPLIES {
                return Err(proto_err("too many NBD_OPT_GO replies"));
            }
            let (typ, d) = read_opt_reply(r, OPT_GO)?;
            match typ {
                REP_INFO => match d.get(0..2).map(|b| u16::from_be_bytes([b[0], b[1]])) {
                    Some(INFO_EXPORT) if d.len() >= 12 => {
                        info.size = u64::from_be_bytes(d[2..10].try_into().unwrap());
                        info.flags = u16::from_be_bytes([d[10], d[11]]);
                        got_export = true;
                    }
                    Some(INFO_BLOCK_SIZE) if d.len() >= 14 => {
                        info.min_block = be32(&d, 2).unwrap_or(1);
                        info.preferred_block = be32(&d, 6).unwrap_or(4096);
                        let max = be32(&d, 10).unwrap_or(MAX_REQUEST);
                        info.max_request = max.min(MAX_REQUEST);
                    }
                    Some(INFO_EXPORT) | Some(INFO_BLOCK_SIZE) => {
                        return Err(proto_err("truncated NBD_REP_INFO"))
                    }
                    _ => {}
                },
                REP_ACK => {
                    if !got_export {
                        return Err(proto_err("NBD_OPT_GO acknowledged without NBD_INFO_EXPORT"));
                    }
                    go_ok = true;
                    break;
                }
                REP_ERR_UNSUP => break, // an older server: use NBD_OPT_EXPORT_NAME
                REP_ERR_UNKNOWN => return Err(no_such_export(export, typ, &d)),
                t if t & REP_FLAG_ERROR != 0 => {
                    return Err(io::Error::other(format!(
                        "the server refused export \"{export}\": {}",
                        err_text(t, &d)
                    )))
                }
                _ => {}
            }
        }
    }
    if !go_ok {
        send_option(w, OPT_EXPORT_NAME, name)?;
        let size = read_u64(r).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "the server closed the connection: it has no export named \"{export}\""
                    ),
                )
            } else {
                e
            }
        })?;
        info.size = size;
        info.flags = read_u16(r)?;
        if !no_zeroes {
            discard(r, 124)?;
        }
    }
    if info.flags & FLAG_HAS_FLAGS == 0 {
        info.flags = FLAG_HAS_FLAGS;
    }
    if !info.structured {
        info.allocation_id = None;
    }
    if info.min_block == 0 || !info.min_block.is_power_of_two() || info.min_block > 64 * 1024 {
        return Err(proto_err(format!(
            "invalid minimum block size {}",
            info.min_block
        )));
    }
    // Requests are whole minimum blocks.
    info.max_request = (info.max_request / info.min_block * info.min_block).max(info.min_block);
    Ok(info)
}

fn no_such_export(export: &str, typ: u32, d: &[u8]) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "the server has no export named \"{export}\" ({})",
            err_text(typ, d)
        ),
    )
}

impl Conn {
    /// Send a request; its whole reply must arrive before `deadline`.
    fn send(
        &mut self,
        typ: u16,
        flags: u16,
        offset: u64,
        length: u32,
        deadline: Instant,
    ) -> io::Result<u64> {
        self.cookie = self.cookie.wrapping_add(1);
        let req = Request {
            flags,
            typ,
            cookie: self.cookie,
            offset,
            length,
        };
        let s = self.r.get_ref();
        s.set_deadline(Some(deadline));
        (&mut &*s).write_all(&req.encode())?;
        Ok(self.cookie)
    }

    /// Read one reply message header; returns (is_structured, flags, type, length) after
    /// checking the magic and cookie. For a simple reply `type` is 0 and `length` the error.
    fn reply_header(&mut self, cookie: u64) -> io::Result<(bool, u16, u16, u32)> {
        let magic = read_u32(&mut self.r)?;
        match magic {
            SIMPLE_REPLY_MAGIC => {
                let err = read_u32(&mut self.r)?;
                let c = read_u64(&mut self.r)?;
                if c != cookie {
                    return Err(proto_err(format!("reply for unknown request {c}")));
                }
                Ok((false, 0, 0, err))
            }
            STRUCTURED_REPLY_MAGIC => {
                let flags = read_u16(&mut self.r)?;
                let typ = read_u16(&mut self.r)?;
                let c = read_u64(&mut self.r)?;
                let len = read_u32(&mut self.r)?;
                if c != cookie {
                    return Err(proto_err(format!("reply for unknown request {c}")));
                }
                Ok((true, flags, typ, len))
            }
            m => Err(proto_err(format!("bad reply magic {m:#x}"))),
        }
    }

    /// Read an error chunk's payload (after its header) into a message.
    fn error_chunk(&mut self, typ: u16, len: u32) -> io::Result<io::Error> {
        if !(6..=MAX_OPT_REPLY).contains(&len) {
            return Err(proto_err(format!("error chunk of {len} bytes")));
        }
        let mut d = vec![0u8; len as usize];
        self.r.read_exact(&mut d)?;
        let err = be32(&d, 0).unwrap_or(0);
        let mlen = u16::from_be_bytes([d[4], d[5]]) as usize;
        if mlen > d.len() - 6 {
            return Err(proto_err("error message longer than its chunk"));
        }
        let msg = String::from_utf8_lossy(&d[6..6 + mlen]);
        let at = if typ == REPLY_TYPE_ERROR_OFFSET && d.len() >= 6 + mlen + 8 {
            format!(
                " at offset {}",
                u64::from_be_bytes(d[6 + mlen..14 + mlen].try_into().unwrap())
            )
        } else {
            String::new()
        };
        Ok(server_error(err, &format!("{msg}{at}")))
    }

    /// Read `buf.len()` bytes at `offset` (the range is inside the export and aligned).
    fn read(
        &mut self,
        info: &ExportInfo,
        buf: &mut [u8],
        offset: u64,
        deadline: Instant,
    ) -> io::Result<()> {
        let len = buf.len() as u64;
        let cookie = self.send(CMD_READ, 0, offset, buf.len() as u32, deadline)?;
        let mut covered: Vec<(u64, u64)> = Vec::new();
        let mut error: Option<io::Error> = None;
        for n in 0.. {
            if n == MAX_CHUNKS {
                return Err(proto_err("too many chunks in one read reply"));
            }
            let (structured, flags, typ, clen) = self.reply_header(cookie)?;
            if !structured {
                if clen != 0 {
                    return Err(server_error(clen, "read failed"));
                }
                if info.structured {
                    return Err(proto_err("simple reply with data to a read"));
                }
                self.r.read_exact(buf)?;
                return Ok(());
            }
            if !info.structured {
                return Err(proto_err("structured reply that was not negotiated"));
            }
            match typ {
                REPLY_TYPE_NONE => {
                    if clen != 0 {
                        return Err(proto_err("NBD_REPLY_TYPE_NONE with a payload"));
                    }
                }
                REPLY_TYPE_OFFSET_DATA => {
                    if clen < 9 {
                        return Err(proto_err("data chunk without data"));
                    }
                    let off = read_u64(&mut self.r)?;
                    let n = (clen - 8) as u64;
                    let rel = off
                        .checked_sub(offset)
                        .filter(|r| r.checked_add(n).is_some_and(|e| e <= len))
                        .ok_or_else(|| {
                            proto_err(format!("data chunk at {off}+{n} outside the request"))
                        })?;
                    self.r
                        .read_exact(&mut buf[rel as usize..(rel + n) as usize])?;
                    covered.push((rel, rel + n));
                }
                REPLY_TYPE_OFFSET_HOLE => {
                    if clen != 12 {
                        return Err(proto_err("hole chunk of wrong length"));
                    }
                    let off = read_u64(&mut self.r)?;
                    let n = read_u32(&mut self.r)? as u64;
                    let rel = off
                        .checked_sub(offset)
                        .filter(|r| n > 0 && r.checked_add(n).is_some_and(|e| e <= len))
                        .ok_or_else(|| {
                            proto_err(format!("hole chunk at {off}+{n} outside the request"))
                        })?;
                    buf[rel as usize..(rel + n) as usize].fill(0);
                    covered.push((rel, rel + n));
                }
                t if t & (1 << 15) != 0 => {
                    let e = self.error_chunk(t, clen)?;
                    error.get_or_insert(e);
                }
                t => {
                    return Err(proto_err(format!(
                        "unexpected chunk type {t} in a read reply"
                    )))
                }
            }
            if flags & REPLY_FLAG_DONE != 0 {
                break;
            }
        }
        if let Some(e) = error {
            return Err(e);
        }
        covered.sort_unstable();
        let mut pos = 0;
        for (s, e) in covered {
            if s != pos {
                return Err(proto_err(if s < pos {
                    "overlapping chunks in a read reply"
                } else {
                    "read reply does not cover the request"
                }));
            }
            pos = e;
        }
        if pos != len {
            return Err(proto_err("read reply does not cover the request"));
        }
        Ok(())
    }

    /// Block status of `[offset, offset+len)`: descriptors (length, flags) from `offset`.
    fn block_status(
        &mut self,
        id: u32,
        offset: u64,
        len: u32,
        deadline: Instant,
    ) -> io::Result<Vec<(u32, u32)>> {
        let cookie = self.send(CMD_BLOCK_STATUS, 0, offset, len, deadline)?;
        let mut out = None;
        let mut error = None;
        for n in 0.. {
            if n == MAX_CHUNKS {
                return Err(proto_err("too many chunks in one block status reply"));
            }
            let (structured, flags, typ, clen) = self.reply_header(cookie)?;
            if !structured {
                return Err(if clen != 0 {
                    server_error(clen, "block status failed")
                } else {
                    proto_err("simple reply to block status")
                });
            }
            match typ {
                REPLY_TYPE_NONE if clen == 0 => {}
                REPLY_TYPE_BLOCK_STATUS => {
                    if clen < 12 || (clen - 4) % 8 != 0 || clen as usize > 4 + 8 * MAX_RANGES {
                        return Err(proto_err(format!("block status chunk of {clen} bytes")));
                    }
                    let ctx = read_u32(&mut self.r)?;
                    let mut d = vec![0u8; clen as usize - 4];
                    self.r.read_exact(&mut d)?;
                    if ctx != id {
                        continue; // another context
                    }
                    let descs: Vec<(u32, u32)> = d
                        .chunks_exact(8)
                        .map(|c| (be32(c, 0).unwrap(), be32(c, 4).unwrap()))
                        .collect();
                    if descs.iter().any(|d| d.0 == 0) {
                        return Err(proto_err("zero-length block status descriptor"));
                    }
                    out = Some(descs);
                }
                t if t & (1 << 15) != 0 => {
                    let e = self.error_chunk(t, clen)?;
                    error.get_or_insert(e);
                }
                t => {
                    return Err(proto_err(format!(
                        "unexpected chunk type {t} in a block status reply"
                    )))
                }
            }
            if flags & REPLY_FLAG_DONE != 0 {
                break;
            }
        }
        if let Some(e) = error {
            return Err(e);
        }
        out.ok_or_else(|| proto_err("block status reply without base:allocation"))
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A passed deadline reads "deadline passed" (or "Resource temporarily unavailable"); say
/// what did not happen in time.
fn explain_timeout(e: io::Error, what: &str, within: Duration) -> io::Error {
    if is_timeout(&e) {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the NBD server did not {what} within {:.1} s (dead, stuck or deliberately \
                 slow server?)",
                within.as_secs_f64()
            ),
        )
    } else {
        e
    }
}

fn server_error(err: u32, msg: &str) -> io::Error {
    let kind = match err {
        EPERM => io::ErrorKind::PermissionDenied,
        EINVAL => io::ErrorKind::InvalidInput,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(
        kind,
        format!("the NBD server answered {}: {msg}", errno_name(err)),
    )
}

impl NbdStorage {
    /// Connect to the export named by `uri` and negotiate, with the default [`Timeouts`].
    pub fn connect(name: &str, uri: &NbdUri) -> io::Result<NbdStorage> {
        Self::connect_with(name, uri, Timeouts::default())
    }

    /// [`NbdStorage::connect`] with `timeout` for the negotiation and for each request.
    pub fn connect_with_timeout(
        name: &str,
        uri: &NbdUri,
        timeout: Duration,
    ) -> io::Result<NbdStorage> {
        let t = Timeouts {
            negotiation: timeout,
            request: timeout,
        };
        Self::connect_with(name, uri, t)
    }

    /// [`NbdStorage::connect`] with other [`Timeouts`].
    pub fn connect_with(name: &str, uri: &NbdUri, timeouts: Timeouts) -> io::Result<NbdStorage> {
        let deadline = Instant::now() + timeouts.negotiation;
        let (conn, info) = handshake(&uri.address, &uri.export, deadline)
            .map_err(|e| explain_timeout(e, "complete the handshake", timeouts.negotiation))?;
        let max_conns = if info.flags & FLAG_CAN_MULTI_CONN != 0 {
            MAX_CONNECTIONS
        } else {
            1
        };
        Ok(NbdStorage {
            name: name.to_string(),
            uri: uri.clone(),
            info,
            timeouts,
            max_conns,
            pool: Mutex::new(PoolState {
                idle: vec![conn],
                open: 1,
                can_grow: true,
            }),
            cv: Condvar::new(),
            dead: Mutex::new(None),
        })
    }

    pub fn info(&self) -> &ExportInfo {
        &self.info
    }

    fn state(&self) -> MutexGuard<'_, PoolState> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take a connection: an idle one, a new one when allowed, or wait for one.
    fn take(&self) -> io::Result<Conn> {
        let mut st = self.state();
        loop {
            if let Some(c) = st.idle.pop() {
                return Ok(c);
            }
            // With no connection left at all (the last one failed), open a new one.
            let first = st.open == 0;
            if first || (st.can_grow && st.open < self.max_conns) {
                st.open += 1;
                drop(st);
                let t = self.timeouts.negotiation;
                let t = if first { t } else { EXTRA_TIMEOUT.min(t) };
                let made = handshake(&self.uri.address, &self.uri.export, Instant::now() + t)
                    .map(|(c, _)| c)
                    .map_err(|e| explain_timeout(e, "complete the handshake", t));
                st = self.state();
                match made {
                    Ok(c) => return Ok(c),
                    Err(e) => {
                        st.open -= 1;
                        if first {
                            return Err(e);
                        }
                        st.can_grow = false;
                        continue;
                    }
                }
            }
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn give_back(&self, c: Option<Conn>) {
        let mut st = self.state();
        match c {
            Some(c) => st.idle.push(c),
            None => st.open -= 1, // a failed connection is dropped: its stream state is unknown
        }
        drop(st);
        self.cv.notify_one();
    }

    /// Run one request of `len` bytes (`what` names it in a timeout error) on a pooled
    /// connection, with its deadline.
    fn with_conn<T>(
        &self,
        what: impl FnOnce() -> String,
        len: u64,
        f: impl FnOnce(&mut Conn, Instant) -> io::Result<T>,
    ) -> io::Result<T> {
        if let Some(e) = self.dead.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, e.clone()));
        }
        let mut c = self.take()?;
        let start = Instant::now();
        let deadline = transfer_deadline(self.timeouts.request, len);
        let r = f(&mut c, deadline);
        self.give_back(if r.is_ok() { Some(c) } else { None });
        r.map_err(|e| {
            if !is_timeout(&e) {
                return e;
            }
            let e = explain_timeout(e, &what(), deadline - start);
            *self.dead.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
            e
        })
    }
}

impl Storage for NbdStorage {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> u64 {
        self.info.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let size = self.info.size;
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(size - offset) as usize;
        let mb = self.info.min_block as u64;
        let max = self.info.max_request as u64;
        let mut done = 0usize;
        while done < n {
            let pos = offset + done as u64;
            let want = ((n - done) as u64).min(max);
            if pos % mb == 0 && (want % mb == 0 || pos + want == size) {
                let slice = &mut buf[done..done + want as usize];
                self.with_conn(
                    || format!("answer a {want}-byte read at offset {pos}"),
                    want,
                    |c, d| c.read(&self.info, slice, pos, d),
                )?;
                done += want as usize;
            } else {
                // Unaligned: read whole minimum blocks around it and copy the part wanted.
                let start = pos - pos % mb;
                let want = want.min(start.saturating_add(max) - pos);
                let end = (pos + want).div_ceil(mb).saturating_mul(mb).min(size);
                let mut tmp = vec![0u8; (end - start) as usize];
                self.with_conn(
                    || format!("answer a {}-byte read at offset {start}", end - start),
                    end - start,
                    |c, d| c.read(&self.info, &mut tmp, start, d),
                )?;
                let rel = (pos - start) as usize;
                buf[done..done + want as usize].copy_from_slice(&tmp[rel..rel + want as usize]);
                done += want as usize;
            }
        }
        Ok(n)
    }

    fn data_ranges(&self, offset: u64, len: u64) -> io::Result<Vec<(u64, u64)>> {
        let size = self.info.size;
        let end = offset.saturating_add(len).min(size);
        if end <= offset {
            return Ok(vec![]);
        }
        let Some(id) = self.info.allocation_id else {
            return Ok(vec![(offset, end - offset)]);
        };
        let mb = self.info.min_block as u64;
        let mut out: Vec<(u64, u64)> = Vec::new();
        let push = |s: u64, e: u64, out: &mut Vec<(u64, u64)>| {
            if e <= s {
                return;
            }
            match out.last_mut() {
                Some(last) if last.0 + last.1 == s => last.1 += e - s,
                _ => out.push((s, e - s)),
            }
        };
        let mut pos = offset;
        while pos < end {
            if out.len() >= MAX_RANGES {
                push(pos, end, &mut out);
                break;
            }
            let start = pos - pos % mb;
            let stop = end
                .min(start.saturating_add(BLOCK_STATUS_SPAN))
                .div_ceil(mb)
                .saturating_mul(mb)
                .min(size);
            let descs = self.with_conn(
                || format!("answer a block status request at offset {start}"),
                0,
                |c, d| c.block_status(id, start, (stop - start) as u32, d),
            )?;
            let mut p = start;
            for (dl, fl) in descs {
                let q = (p + dl as u64).min(stop);
                if fl & STATE_ZERO == 0 {
                    push(p.max(pos), q.min(end), &mut out);
                }
                p = q;
                if p >= stop {
                    break;
                }
            }
            if p <= pos {
                return Err(proto_err("block status made no progress"));
            }
            pos = p;
        }
        Ok(out)
    }
}
