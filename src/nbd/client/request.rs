//! Requests on one negotiated connection: reads (simple and structured replies) and block
//! status, each reply read whole before the request's deadline.

use std::io::{self, Read, Write};
use std::time::Instant;

use super::super::proto::*;
use super::*;

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
    pub(super) fn read(
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
    pub(super) fn block_status(
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
                    // Another context's chunk is skipped (its DONE flag still ends the reply).
                    if ctx == id {
                        let descs: Vec<(u32, u32)> = d
                            .chunks_exact(8)
                            .map(|c| (be32(c, 0).unwrap(), be32(c, 4).unwrap()))
                            .collect();
                        if descs.iter().any(|d| d.0 == 0) {
                            return Err(proto_err("zero-length block status descriptor"));
                        }
                        out = Some(descs);
                    }
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
