//! A hand-written NBD client's pieces for the attack and deadline tests: connections (from a
//! chosen loopback source address too), options, negotiation, requests.

use super::*;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::io::FromRawFd;

/// Loopback source address `n` (127.0.0.2, 127.0.0.3, ...): Linux delivers all of 127/8 on
/// the loopback interface, so one test can be clients on many addresses, none of them the
/// real clients' 127.0.0.1.
pub(crate) fn source(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (n % 250) as u8)
}

/// A TCP connection to 127.0.0.1:`port` from `src` (any port).
pub(crate) fn connect_from(src: Ipv4Addr, port: u16) -> io::Result<TcpStream> {
    let sa = |a: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a new socket, owned by the TcpStream built from it (closed on error by it too);
    // bind and connect get a valid sockaddr_in and its size.
    let s = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let s = TcpStream::from_raw_fd(fd);
        let local = sa(SocketAddrV4::new(src, 0));
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        let remote = sa(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        s
    };
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

pub(crate) fn connect(port: u16) -> io::Result<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

pub(crate) fn option(opt: u32, data: &[u8]) -> Vec<u8> {
    let mut b = IHAVEOPT.to_be_bytes().to_vec();
    b.extend_from_slice(&opt.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    b
}

/// Read option replies to `opt` up to its final one; its type.
pub(crate) fn final_reply(s: &mut TcpStream) -> io::Result<u32> {
    loop {
        let mut h = [0u8; 20];
        s.read_exact(&mut h)?;
        let typ = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        std::io::copy(&mut (&mut *s).take(len as u64), &mut std::io::sink())?;
        if typ != 4 && typ != 3 {
            return Ok(typ); // not NBD_REP_META_CONTEXT / NBD_REP_INFO
        }
    }
}

/// Negotiate up to transmission with NBD_OPT_GO on export "disk" (structured replies and
/// base:allocation when `structured`).
pub(crate) fn negotiate(s: &mut TcpStream, structured: bool) -> io::Result<()> {
    let mut hello = [0u8; 18];
    s.read_exact(&mut hello)?;
    s.write_all(&3u32.to_be_bytes())?;
    if structured {
        s.write_all(&option(8, &[]))?;
        final_reply(s)?;
        let mut d = name_data("disk");
        d.extend_from_slice(&1u32.to_be_bytes());
        d.extend_from_slice(&(15u32).to_be_bytes());
        d.extend_from_slice(b"base:allocation");
        s.write_all(&option(10, &d))?;
        final_reply(s)?;
    }
    let mut d = name_data("disk");
    d.extend_from_slice(&0u16.to_be_bytes());
    s.write_all(&option(7, &d))?;
    match final_reply(s)? {
        1 => Ok(()),
        t => Err(io::Error::other(format!("NBD_OPT_GO answered {t:#x}"))),
    }
}

pub(crate) fn request(typ: u16, cookie: u64, offset: u64, len: u32) -> Vec<u8> {
    let mut b = 0x2560_9513u32.to_be_bytes().to_vec();
    b.extend_from_slice(&0u16.to_be_bytes());
    b.extend_from_slice(&typ.to_be_bytes());
    b.extend_from_slice(&cookie.to_be_bytes());
    b.extend_from_slice(&offset.to_be_bytes());
    b.extend_from_slice(&len.to_be_bytes());
    b
}
