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
//!
//! `negotiate` connects and negotiates, `request` sends requests on one connection and
//! reads their replies; this module keeps the pool of connections and the deadlines.

use std::io::{self, BufReader, Write};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::proto::*;
use super::stream::{transfer_deadline, Stream};
use super::uri::NbdUri;
use crate::image::Storage;

mod negotiate;
mod request;

use negotiate::handshake;

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

fn be32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(d.get(at..at + 4)?.try_into().ok()?))
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
