//! The transmission phase: one reader takes requests off the socket, a few workers answer them
//! (out of order, as the protocol allows), each reply written under the connection's write
//! lock.
//!
//! Bounds, whatever the client sends:
//! - memory: reply data is read in pieces of at most [`PIECE`] bytes granted by the shared
//!   [`Budget`]; block-status replies take one piece too and say at most as many descriptors as
//!   fit in it, mapping the device a window at a time (the protocol lets a server answer a
//!   shorter range than asked; clients ask again from where the reply stopped);
//! - back-pressure: the request queue holds two requests per worker; while the workers wait for
//!   their replies to be read (or for memory), the reader stops reading requests;
//! - time: each piece of a reply must be taken by the client within `send_timeout` (plus a
//!   second per 256 KiB), and the whole reply within `send_timeout` plus a second per 256 KiB
//!   of all of it, or the connection is closed; a connection with nothing in flight for
//!   `idle_timeout` is closed.

use std::io::{self, BufRead, IoSlice};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::super::proto::*;
use super::super::stream::{transfer_deadline, Stream};
use super::budget::{Budget, Grant, PIECE};
use super::limits::Activity;
use super::{
    is_disconnect, lock, log, proto_err, Export, Session, BASE_ALLOCATION_ID, MAX_REQUEST,
};
use crate::image::{BlockDevice, ExtentKind};

/// Extents per device `map` call when building a reply (bounds the map's own memory).
const MAP_EXTENTS: u64 = 8192;

/// Why the server closed a connection in the transmission phase.
#[derive(Debug)]
pub(super) struct Idle(pub Duration);

impl std::fmt::Display for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "closed: no request for {} s", self.0.as_secs())
    }
}
impl std::error::Error for Idle {}

/// State shared by a connection's reader and workers.
struct Conn<'a> {
    dev: &'a dyn BlockDevice,
    size: u64,
    session: Session,
    stream: &'a Stream,
    export: &'a Export,
    activity: &'a Activity,
    budget: &'a Budget,
    /// Held while a reply (or a chunk of one) is written.
    out: Mutex<()>,
    /// Set when a reply could not be written: the connection is finished.
    broken: AtomicBool,
}

/// Serve requests until the client disconnects, the connection is closed by the server, or
/// it breaks.
pub(super) fn transmission(
    r: &mut impl BufRead,
    stream: &Stream,
    dev: &dyn BlockDevice,
    export: &Export,
    session: Session,
    activity: &Activity,
    budget: &Budget,
) -> io::Result<()> {
    stream.set_write_timeout(Some(export.send_timeout))?;
    let conn = Conn {
        size: dev.size(),
        dev,
        session,
        stream,
        export,
        activity,
        budget,
        out: Mutex::new(()),
        broken: AtomicBool::new(false),
    };
    let (tx, rx) = sync_channel::<Request>(2 * export.workers);
    let rx = Mutex::new(rx);
    thread::scope(|sc| {
        for _ in 0..export.workers {
            sc.spawn(|| worker(&conn, &rx));
        }
        let result = conn.read_requests(r, |req| tx.send(req).is_ok());
        drop(tx); // the workers finish what is queued, then stop
        result
    })
}

/// Answer requests until the reader stops. A worker whose reply failed marks the connection
/// broken and shuts it down, but it and every other worker keep taking (and dropping) what is
/// queued until the reader is gone: a reader blocked on a full queue must be let go, or the
/// connection's threads would wait on each other for ever.
fn worker(conn: &Conn, rx: &Mutex<Receiver<Request>>) {
    loop {
        let req = match lock(rx).recv() {
            Ok(r) => r,
            Err(_) => return,
        };
        if conn.broken.load(Ordering::SeqCst) {
            conn.activity.request_done();
            continue;
        }
        let r = conn.answer(req);
        conn.activity.request_done();
        if let Err(e) = r {
            if !is_disconnect(&e) && !conn.activity.closing() {
                let peer = conn.stream.peer();
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) {
                    log(|| {
                        format!(
                            "{peer}: closed: the client did not read its replies for {} s",
                            conn.export.send_timeout.as_secs()
                        )
                    });
                } else {
                    log(|| format!("{peer}: {e}"));
                }
            }
            conn.broken.store(true, Ordering::SeqCst);
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
    }
}

/// One structured-reply chunk being built: header, then its fixed fields.
fn chunk(flags: u16, typ: u16, cookie: u64, fields: &[u8], payload: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + fields.len());
    b.extend_from_slice(&chunk_header(
        flags,
        typ,
        cookie,
        (fields.len() + payload) as u32,
    ));
    b.extend_from_slice(fields);
    b
}

impl Conn<'_> {
    /// Read request headers and hand them to `dispatch` (false: stop); write requests are
    /// refused here (their payload must be read off the socket in order anyway).
    fn read_requests(
        &self,
        r: &mut impl BufRead,
        mut dispatch: impl FnMut(Request) -> bool,
    ) -> io::Result<()> {
        loop {
            let mut hdr = [0u8; Request::SIZE];
            if !self.read_header(r, &mut hdr)? {
                return Ok(()); // the client went away between requests, or we are stopping
            }
            let req = Request::decode(&hdr).ok_or_else(|| proto_err("bad request magic"))?;
            match req.typ {
                CMD_DISC => return Ok(()),
                CMD_WRITE => self.refuse_write(r, req)?,
                _ => {
                    self.activity.request_received();
                    if !dispatch(req) {
                        return Ok(());
                    }
                }
            }
            if self.broken.load(Ordering::SeqCst) {
                return Ok(());
            }
        }
    }

    /// Read one request header, enforcing the idle deadline. `Ok(false)`: end of stream
    /// before the first byte.
    fn read_header(&self, r: &mut impl BufRead, hdr: &mut [u8]) -> io::Result<bool> {
        let idle = self.export.idle_timeout;
        let mut got = 0;
        while got < hdr.len() {
            // Wake up when the idle deadline would pass (whole seconds: fewer system calls).
            let wait = idle.map(|t| {
                if self.activity.in_flight() > 0 {
                    t
                } else {
                    let left = t.saturating_sub(self.activity.idle_for());
                    Duration::from_secs(left.as_secs_f64().ceil().max(1.0) as u64)
                }
            });
            self.stream.set_read_timeout(wait)?;
            match r.read(&mut hdr[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed in the middle of a request",
                    ))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if let Some(t) = idle {
                        if self.activity.in_flight() == 0 && self.activity.idle_for() >= t {
                            return Err(io::Error::new(io::ErrorKind::TimedOut, Idle(t)));
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Swallow a write request's payload and refuse it. The request counts as received (the
    /// connection as busy) only once its payload is in: a payload dripped slowly must not make
    /// a connection look busy, which would keep it from being closed to make room.
    fn refuse_write(&self, r: &mut impl BufRead, req: Request) -> io::Result<()> {
        if req.length > MAX_REQUEST {
            return Err(proto_err(format!(
                "write of {} bytes (refused, and too long to skip)",
                req.length
            )));
        }
        self.stream.set_read_timeout(None)?;
        self.stream.set_read_deadline(Some(transfer_deadline(
            self.export.send_timeout,
            req.length as u64,
        )));
        let skipped = discard(r, req.length as u64);
        self.stream.set_read_deadline(None);
        skipped?;
        self.activity.request_received();
        let refused = self.error(req.cookie, EPERM, "the export is read-only");
        self.activity.request_done();
        refused
    }

    /// When a reply of `len` bytes started now must have been taken by the client: the send
    /// timeout plus a second per 256 KiB. This holds for the whole reply, however many pieces
    /// it is written in, so a client taking each piece just before its own deadline cannot
    /// stretch a 32 MiB reply to an hour.
    fn reply_deadline(&self, len: u64) -> Instant {
        transfer_deadline(self.export.send_timeout, len)
    }

    /// Write `bufs` (a message, or part of one), under the write lock already held: within the
    /// send timeout (plus a second per 256 KiB) of now, so that a client that stops reading is
    /// let go after about that long, and before `until`, the deadline of the whole reply.
    fn send_locked(
        &self,
        _held: &MutexGuard<'_, ()>,
        bufs: &mut [IoSlice<'_>],
        until: Instant,
    ) -> io::Result<()> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        let piece = self.reply_deadline(len as u64);
        self.stream.set_write_deadline(Some(piece.min(until)));
        self.activity.writing(true);
        let r = self.stream.write_all_vectored(bufs);
        self.activity.writing(false);
        r
    }

    /// Write `bufs` as one whole reply (its own deadline).
    fn send(&self, bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        self.send_until(bufs, self.reply_deadline(len as u64))
    }

    /// Write `bufs` as one message before `until` (the deadline of the reply it is part of).
    fn send_until(&self, bufs: &mut [IoSlice<'_>], until: Instant) -> io::Result<()> {
        let held = lock(&self.out);
        self.send_locked(&held, bufs, until)
    }

    fn ok(&self, cookie: u64) -> io::Result<()> {
        if self.session.structured {
            let h = chunk_header(REPLY_FLAG_DONE, REPLY_TYPE_NONE, cookie, 0);
            self.send(&mut [IoSlice::new(&h)])
        } else {
            self.send(&mut [IoSlice::new(&simple_reply(0, cookie))])
        }
    }

    fn error(&self, cookie: u64, err: u32, msg: &str) -> io::Result<()> {
        if !self.session.structured {
            return self.send(&mut [IoSlice::new(&simple_reply(err, cookie))]);
        }
        let mut m = msg;
        while m.len() > MAX_STRING {
            let mut cut = MAX_STRING;
            while !m.is_char_boundary(cut) {
                cut -= 1;
            }
            m = &m[..cut];
        }
        let mut fields = err.to_be_bytes().to_vec();
        fields.extend_from_slice(&(m.len() as u16).to_be_bytes());
        let h = chunk(REPLY_FLAG_DONE, REPLY_TYPE_ERROR, cookie, &fields, m.len());
        self.send(&mut [IoSlice::new(&h), IoSlice::new(m.as_bytes())])
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

    fn answer(&self, req: Request) -> io::Result<()> {
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
                self.read(req)
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

    /// Memory for `len` bytes of a reply; an error when the connection is being closed.
    fn grant(&self, len: usize) -> io::Result<Grant<'_>> {
        self.budget
            .grant(&self.activity.floor, len, || {
                self.broken.load(Ordering::SeqCst) || self.activity.closing()
            })
            .ok_or_else(|| io::Error::new(io::ErrorKind::ConnectionAborted, "closing"))
    }

    /// Device bytes spanned by one `map` call.
    fn map_window(&self) -> u64 {
        (self.dev.granularity().max(512) * MAP_EXTENTS).clamp(4 << 20, 1 << 30)
    }

    fn read(&self, req: Request) -> io::Result<()> {
        if req.length == 0 {
            return self.ok(req.cookie);
        }
        if !self.session.structured {
            return self.read_contiguous(req, &simple_reply(0, req.cookie));
        }
        let (offset, len) = (req.offset, req.length as u64);
        if req.flags & CMD_FLAG_DF != 0 {
            // One content chunk: a hole when the whole range reads as zeros, else data.
            if self.all_zero(offset, len) {
                return self.send(&mut [IoSlice::new(&hole_chunk(
                    REPLY_FLAG_DONE,
                    req.cookie,
                    offset,
                    len,
                ))]);
            }
            let h = chunk(
                REPLY_FLAG_DONE,
                REPLY_TYPE_OFFSET_DATA,
                req.cookie,
                &offset.to_be_bytes(),
                len as usize,
            );
            return self.read_contiguous(req, &h);
        }
        let mut reply = ReadReply {
            conn: self,
            cookie: req.cookie,
            end: offset + len,
            hole: None,
            until: self.reply_deadline(len),
        };
        let window = self.map_window();
        let mut pos = offset;
        while pos < offset + len {
            let wlen = window.min(offset + len - pos);
            for (o, l, hole) in self.pieces(pos, wlen) {
                if hole {
                    reply.hole(o, l)?;
                } else if !reply.data(o, l)? {
                    return Ok(()); // a read error, reported as the reply's last chunk
                }
            }
            pos += wlen;
        }
        reply.finish()
    }

    /// Whether `[offset, offset+len)` reads as zeros according to the device's map.
    fn all_zero(&self, offset: u64, len: u64) -> bool {
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let wlen = self.map_window().min(end - pos);
            match self.dev.map(pos, wlen) {
                Ok(m) if tiles(&m, pos, wlen) && m.iter().all(|e| e.kind.reads_as_zero()) => {}
                _ => return false,
            }
            pos += wlen;
        }
        true
    }

    /// Split `[offset, offset+len)` into data and hole runs from the device's map. A map that
    /// fails or does not tile the range exactly makes it one data run: holes are an
    /// optimisation, never a guess.
    fn pieces(&self, offset: u64, len: u64) -> Vec<(u64, u64, bool)> {
        let map = match self.dev.map(offset, len) {
            Ok(m) if tiles(&m, offset, len) => m,
            _ => return vec![(offset, len, false)],
        };
        let mut out: Vec<(u64, u64, bool)> = Vec::new();
        for e in &map {
            let hole = e.kind.reads_as_zero();
            match out.last_mut() {
                Some(last) if last.2 == hole => last.1 += e.length,
                _ => out.push((e.offset, e.length, hole)),
            }
        }
        out
    }

    /// A reply whose data goes out as one message: a simple reply (header, then the data) or
    /// a don't-fragment structured chunk. The first piece is read before anything is sent, so
    /// an error there is a proper error reply; an error after the header went out can only be
    /// reported by closing the connection, as the protocol requires.
    fn read_contiguous(&self, req: Request, header: &[u8]) -> io::Result<()> {
        let total = req.length as usize;
        let mut g = self.grant(total)?;
        let first = g.buf.len();
        if let Err(e) = self.dev.read_at(&mut g.buf[..first], req.offset) {
            return self.error(req.cookie, EIO, &e.to_string());
        }
        let until = self.reply_deadline((header.len() + total) as u64);
        let held = lock(&self.out);
        self.send_locked(
            &held,
            &mut [IoSlice::new(header), IoSlice::new(&g.buf)],
            until,
        )?;
        let mut done = first;
        while done < total {
            let n = (total - done).min(first);
            let at = req.offset + done as u64;
            if let Err(e) = self.dev.read_at(&mut g.buf[..n], at) {
                return Err(io::Error::other(format!(
                    "reading {n} bytes at offset {at} failed after the reply was started \
                     ({e}); closing the connection, as the protocol requires"
                )));
            }
            self.send_locked(&held, &mut [IoSlice::new(&g.buf[..n])], until)?;
            done += n;
        }
        Ok(())
    }

    fn block_status(&self, req: Request) -> io::Result<()> {
        let mut g = self.grant(PIECE)?;
        let limit = if req.flags & CMD_FLAG_REQ_ONE != 0 {
            1
        } else {
            (PIECE - 24) / 8
        };
        let end = req.offset + req.length as u64;
        let mut descs: Vec<(u32, u32)> = Vec::new();
        let mut pos = req.offset;
        'windows: while pos < end {
            let wlen = self.map_window().min(end - pos);
            let map = match self.dev.map(pos, wlen) {
                Ok(m) => m,
                Err(e) if descs.is_empty() => return self.error(req.cookie, EIO, &e.to_string()),
                Err(_) => break, // report what is known; the client asks again from there
            };
            let wend = pos + wlen;
            for e in &map {
                if e.offset != pos || e.length == 0 || pos >= wend {
                    break 'windows; // a map that does not tile the range: report what is certain
                }
                let status = match e.kind {
                    ExtentKind::Data => 0,
                    ExtentKind::Zero => STATE_ZERO,
                    ExtentKind::Unallocated => STATE_HOLE | STATE_ZERO,
                };
                let length = e.length.min(wend - pos) as u32;
                match descs.last_mut() {
                    Some(last) if last.1 == status => last.0 += length,
                    _ => {
                        if descs.len() == limit {
                            break 'windows;
                        }
                        descs.push((length, status));
                    }
                }
                pos += length as u64;
            }
            if pos < wend {
                break; // the map stopped short
            }
        }
        if descs.is_empty() {
            descs.push((req.length, 0)); // status 0 ("data, contents unknown") is always safe
        }
        let b = &mut g.buf;
        b.clear();
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
        self.send(&mut [IoSlice::new(b)])
    }
}

/// Whether `map` covers `[offset, offset+len)` exactly, in order.
fn tiles(map: &[crate::image::Extent], offset: u64, len: u64) -> bool {
    let mut pos = offset;
    for e in map {
        if e.offset != pos || e.length == 0 || e.offset + e.length > offset + len {
            return false;
        }
        pos += e.length;
    }
    pos == offset + len
}

fn hole_chunk(flags: u16, cookie: u64, offset: u64, len: u64) -> Vec<u8> {
    let mut fields = offset.to_be_bytes().to_vec();
    fields.extend_from_slice(&(len as u32).to_be_bytes());
    chunk(flags, REPLY_TYPE_OFFSET_HOLE, cookie, &fields, 0)
}

/// A structured read reply sent as it is read: data in pieces of at most [`PIECE`] bytes,
/// adjacent holes merged into one chunk; the last chunk carries `NBD_REPLY_FLAG_DONE`.
struct ReadReply<'c, 'a> {
    conn: &'c Conn<'a>,
    cookie: u64,
    end: u64,
    /// A hole not sent yet (it may grow).
    hole: Option<(u64, u64)>,
    /// When the whole reply must have been taken.
    until: Instant,
}

impl ReadReply<'_, '_> {
    fn hole(&mut self, offset: u64, len: u64) -> io::Result<()> {
        match &mut self.hole {
            Some((o, l)) if *o + *l == offset && *l + len <= u32::MAX as u64 => *l += len,
            _ => {
                self.flush_hole(false)?;
                self.hole = Some((offset, len));
            }
        }
        Ok(())
    }

    fn flush_hole(&mut self, last: bool) -> io::Result<()> {
        if let Some((o, l)) = self.hole.take() {
            let flags = if last { REPLY_FLAG_DONE } else { 0 };
            let h = hole_chunk(flags, self.cookie, o, l);
            self.conn.send_until(&mut [IoSlice::new(&h)], self.until)?;
        }
        Ok(())
    }

    /// Send `[offset, offset+len)` as data chunks. `Ok(false)`: a read failed and the reply
    /// was ended with an error chunk.
    fn data(&mut self, offset: u64, len: u64) -> io::Result<bool> {
        self.flush_hole(false)?;
        let c = self.conn;
        let mut pos = offset;
        while pos < offset + len {
            let n = (offset + len - pos).min(PIECE as u64) as usize;
            let mut g = c.grant(n)?;
            if let Err(e) = c.dev.read_at(&mut g.buf, pos) {
                let mut fields = EIO.to_be_bytes().to_vec();
                let m = e.to_string();
                let m = &m.as_bytes()[..m.len().min(MAX_STRING)];
                fields.extend_from_slice(&(m.len() as u16).to_be_bytes());
                let mut h = chunk(
                    REPLY_FLAG_DONE,
                    REPLY_TYPE_ERROR_OFFSET,
                    self.cookie,
                    &fields,
                    m.len() + 8,
                );
                h.extend_from_slice(m);
                h.extend_from_slice(&pos.to_be_bytes());
                c.send_until(&mut [IoSlice::new(&h)], self.until)?;
                return Ok(false);
            }
            let flags = if pos + n as u64 == self.end {
                REPLY_FLAG_DONE
            } else {
                0
            };
            let h = chunk(
                flags,
                REPLY_TYPE_OFFSET_DATA,
                self.cookie,
                &pos.to_be_bytes(),
                n,
            );
            c.send_until(&mut [IoSlice::new(&h), IoSlice::new(&g.buf)], self.until)?;
            pos += n as u64;
        }
        Ok(true)
    }

    fn finish(mut self) -> io::Result<()> {
        self.flush_hole(true)
    }
}
