//! Option haggling: from the greeting to `NBD_OPT_GO` (or `NBD_OPT_EXPORT_NAME`).
//!
//! Runs under the connection's handshake deadline (set on its [`Stream`] by the caller), so a
//! client that dribbles its options cannot hold the connection past it.
//!
//! [`Stream`]: super::super::stream::Stream

use std::io::{self, Read, Write};

use super::super::proto::*;
use super::{proto_err, Export, Session, BASE_ALLOCATION_ID, MAX_REQUEST};

/// Longest option payload accepted during negotiation.
const MAX_OPTION_LEN: u32 = 64 * 1024;
/// Options accepted on one connection before it is dropped (a client looping forever).
const MAX_OPTIONS: usize = 1024;

/// Option haggling. `Ok(None)`: the client aborted.
pub(super) fn negotiate(
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
                // Each known type answered once (a bit per type: a 64 KiB option holds 32K
                // requests, which a list searched for each would make 500M comparisons).
                let mut sent = 0u8;
                for req in requests {
                    if req > INFO_BLOCK_SIZE || sent & (1 << req) != 0 {
                        continue;
                    }
                    sent |= 1 << req;
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
