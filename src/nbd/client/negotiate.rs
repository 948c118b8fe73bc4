//! Connecting and negotiating, all before one deadline: fixed newstyle, structured replies
//! and `base:allocation` when offered, `NBD_OPT_GO` (or `NBD_OPT_EXPORT_NAME` for servers
//! without it).

use std::io::{self, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use super::super::proto::*;
use super::super::stream::Stream;
use super::super::uri::Address;
use super::*;

/// Connect to `address`, within the time left before `deadline`.
fn connect(address: &Address, deadline: Instant) -> io::Result<Stream> {
    let left = || {
        let t = deadline.saturating_duration_since(Instant::now());
        if t.is_zero() {
            Err(super::super::stream::deadline_passed())
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

/// Connect and negotiate, all before `deadline`. On failure the client ends the session
/// politely (`NBD_OPT_ABORT`) before closing it.
pub(super) fn handshake(
    address: &Address,
    export: &str,
    deadline: Instant,
) -> io::Result<(Conn, ExportInfo)> {
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
