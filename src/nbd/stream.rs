//! A connected byte stream (TCP or Unix-domain socket) with deadlines.
//!
//! A socket timeout (`SO_RCVTIMEO`) bounds one `read` call, so a peer that sends one byte just
//! before each timeout keeps a blocking reader waiting forever. A [`Stream`] therefore also
//! carries a *deadline*: an instant after which every read and write fails with
//! [`io::ErrorKind::TimedOut`], however the bytes trickle in. Before each system call the socket
//! timeout is lowered to the time left. The client sets one deadline for the whole negotiation
//! and one per request; the server one for the handshake.
//!
//! `&Stream` implements `Read` and `Write` (as `&TcpStream` does), so one socket — one file
//! descriptor — serves a connection's reader, its reply writers and the handle that shuts it
//! down.

use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, Shutdown, TcpStream};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[derive(Debug)]
enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// A TCP or Unix-domain connection.
#[derive(Debug)]
pub struct Stream {
    sock: Sock,
    /// Read and write deadlines in microseconds since [`epoch`] (0: none).
    read_deadline: AtomicU64,
    write_deadline: AtomicU64,
    /// Socket timeouts asked for with `set_{read,write}_timeout`, in µs (0: none), and the
    /// ones last given to the kernel (so that an unchanged timeout costs no system call).
    read_timeout: AtomicU64,
    write_timeout: AtomicU64,
    applied_read: AtomicU64,
    applied_write: AtomicU64,
}

/// Who is on the other end, for per-client limits and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A TCP client's address (IPv6: its /64 prefix, which one host usually controls).
    Ip(IpAddr),
    /// A Unix-socket client's user id (`SO_PEERCRED`), when known.
    Uid(Option<u32>),
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Ip(IpAddr::V6(a)) => write!(f, "{a}/64"),
            Peer::Ip(a) => write!(f, "{a}"),
            Peer::Uid(Some(u)) => write!(f, "unix-socket clients of uid {u}"),
            Peer::Uid(None) => write!(f, "unix-socket clients"),
        }
    }
}

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn to_us(at: Option<Instant>) -> u64 {
    at.map_or(0, |a| micros(a.saturating_duration_since(epoch())))
}

fn micros(d: Duration) -> u64 {
    d.as_micros().clamp(1, u64::MAX as u128) as u64
}

/// When a transfer of `len` bytes started now must be complete: `base`, plus one second per
/// 256 KiB (a link slower than that is treated as dead), so that a large request over a slow
/// link is not cut while a peer dripping bytes still is.
pub fn transfer_deadline(base: Duration, len: u64) -> Instant {
    Instant::now() + base + Duration::from_millis(len / 256)
}

/// The error of a passed deadline.
pub fn deadline_passed() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "deadline passed")
}

impl Stream {
    fn new(sock: Sock) -> Stream {
        Stream {
            sock,
            read_deadline: AtomicU64::new(0),
            write_deadline: AtomicU64::new(0),
            read_timeout: AtomicU64::new(0),
            write_timeout: AtomicU64::new(0),
            applied_read: AtomicU64::new(0),
            applied_write: AtomicU64::new(0),
        }
    }
    pub fn tcp(s: TcpStream) -> Stream {
        Stream::new(Sock::Tcp(s))
    }
    pub fn unix(s: UnixStream) -> Stream {
        Stream::new(Sock::Unix(s))
    }

    /// Another handle on the same socket (its own deadline and timeouts).
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(Stream::new(match &self.sock {
            Sock::Tcp(s) => Sock::Tcp(s.try_clone()?),
            Sock::Unix(s) => Sock::Unix(s.try_clone()?),
        }))
    }
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match &self.sock {
            Sock::Tcp(s) => s.shutdown(how),
            Sock::Unix(s) => s.shutdown(how),
        }
    }
    /// Timeout of each read call (the deadline, when sooner, wins).
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.read_timeout
            .store(t.map_or(0, micros), Ordering::Relaxed);
        self.apply(false)
    }
    /// Timeout of each write call (the deadline, when sooner, wins).
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.write_timeout
            .store(t.map_or(0, micros), Ordering::Relaxed);
        self.apply(true)
    }
    /// Every read and write after `at` fails with `TimedOut`; `None` removes the deadlines.
    pub fn set_deadline(&self, at: Option<Instant>) {
        self.set_read_deadline(at);
        self.set_write_deadline(at);
    }
    /// Every read after `at` fails with `TimedOut`.
    pub fn set_read_deadline(&self, at: Option<Instant>) {
        self.read_deadline.store(to_us(at), Ordering::Relaxed);
    }
    /// Every write after `at` fails with `TimedOut`.
    pub fn set_write_deadline(&self, at: Option<Instant>) {
        self.write_deadline.store(to_us(at), Ordering::Relaxed);
    }
    fn deadline(&self, write: bool) -> u64 {
        if write {
            self.write_deadline.load(Ordering::Relaxed)
        } else {
            self.read_deadline.load(Ordering::Relaxed)
        }
    }
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match &self.sock {
            Sock::Tcp(s) => s.set_nonblocking(on),
            Sock::Unix(s) => s.set_nonblocking(on),
        }
    }
    /// Disable Nagle's algorithm on TCP (replies are written whole).
    pub fn set_nodelay(&self) -> io::Result<()> {
        match &self.sock {
            Sock::Tcp(s) => s.set_nodelay(true),
            Sock::Unix(_) => Ok(()),
        }
    }
    /// Peer description for log messages.
    pub fn peer(&self) -> String {
        match &self.sock {
            Sock::Tcp(s) => s
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "tcp client".into()),
            Sock::Unix(_) => "unix-socket client".into(),
        }
    }
    /// The peer as per-client limits count it.
    pub fn peer_key(&self) -> Peer {
        match &self.sock {
            Sock::Tcp(s) => match s.peer_addr().map(|a| a.ip()) {
                Ok(IpAddr::V6(a)) if a.to_ipv4_mapped().is_none() => {
                    let mut o = a.octets();
                    o[8..].fill(0);
                    Peer::Ip(IpAddr::from(o))
                }
                Ok(IpAddr::V6(a)) => Peer::Ip(IpAddr::V4(a.to_ipv4_mapped().unwrap())),
                Ok(a) => Peer::Ip(a),
                Err(_) => Peer::Ip(IpAddr::from([0u8; 4])),
            },
            Sock::Unix(s) => Peer::Uid(peer_uid(s)),
        }
    }

    /// Before a system call: fail when the deadline has passed, else make sure the socket
    /// timeout does not outlast it. Returns whether a deadline is set.
    fn arm(&self, write: bool) -> io::Result<bool> {
        let d = self.deadline(write);
        if d == 0 {
            self.apply(write)?;
            return Ok(false);
        }
        let now = micros(epoch().elapsed());
        if now >= d {
            return Err(deadline_passed());
        }
        self.apply_us(write, self.base(write).min(d - now).max(1000))?;
        Ok(true)
    }
    fn base(&self, write: bool) -> u64 {
        let t = if write {
            &self.write_timeout
        } else {
            &self.read_timeout
        };
        match t.load(Ordering::Relaxed) {
            0 => u64::MAX,
            v => v,
        }
    }
    fn apply(&self, write: bool) -> io::Result<()> {
        self.apply_us(write, self.base(write))
    }
    fn apply_us(&self, write: bool, us: u64) -> io::Result<()> {
        let applied = if write {
            &self.applied_write
        } else {
            &self.applied_read
        };
        let v = if us == u64::MAX { 0 } else { us };
        if applied.swap(v, Ordering::Relaxed) == v {
            return Ok(());
        }
        let t = (v != 0).then(|| Duration::from_micros(v));
        let r = match (&self.sock, write) {
            (Sock::Tcp(s), false) => s.set_read_timeout(t),
            (Sock::Tcp(s), true) => s.set_write_timeout(t),
            (Sock::Unix(s), false) => s.set_read_timeout(t),
            (Sock::Unix(s), true) => s.set_write_timeout(t),
        };
        if r.is_err() {
            applied.store(u64::MAX, Ordering::Relaxed); // unknown: set again next time
        }
        r
    }
    /// A timeout that fired with a deadline set and passed is the deadline's error.
    fn check<T>(&self, r: io::Result<T>, armed: bool, write: bool) -> io::Result<T> {
        match r {
            Err(e)
                if armed
                    && matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    )
                    && micros(epoch().elapsed()) >= self.deadline(write) =>
            {
                Err(deadline_passed())
            }
            r => r,
        }
    }

    /// Write all of `bufs` (one system call for a header and its payload in the usual case).
    pub fn write_all_vectored(&self, bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
        let mut bufs = bufs;
        IoSlice::advance_slices(&mut bufs, 0);
        while !bufs.is_empty() {
            match (&mut &*self).write_vectored(bufs) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "failed to write whole buffer",
                    ))
                }
                Ok(n) => IoSlice::advance_slices(&mut bufs, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The user id of a Unix-socket peer.
fn peer_uid(s: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writing and `len` holds the size of `cred`.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(cred.uid)
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let armed = self.arm(false)?;
        let r = match &self.sock {
            Sock::Tcp(s) => (&*s).read(buf),
            Sock::Unix(s) => (&*s).read(buf),
        };
        self.check(r, armed, false)
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let armed = self.arm(true)?;
        let r = match &self.sock {
            Sock::Tcp(s) => (&*s).write(buf),
            Sock::Unix(s) => (&*s).write(buf),
        };
        self.check(r, armed, true)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let armed = self.arm(true)?;
        let r = match &self.sock {
            Sock::Tcp(s) => (&*s).write_vectored(bufs),
            Sock::Unix(s) => (&*s).write_vectored(bufs),
        };
        self.check(r, armed, true)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_bounds_a_dripping_peer_not_each_read() {
        let (a, b) = UnixStream::pair().unwrap();
        let s = Stream::unix(a);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let t = std::thread::spawn(move || {
            let mut b = b;
            for _ in 0..20 {
                if b.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        s.set_deadline(Some(Instant::now() + Duration::from_millis(300)));
        let t0 = Instant::now();
        let mut buf = [0u8; 20];
        let e = (&s).read_exact(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(t0.elapsed() < Duration::from_millis(1000));
        drop(s);
        t.join().unwrap();
    }

    #[test]
    fn without_a_deadline_the_socket_timeout_applies() {
        let (a, _b) = UnixStream::pair().unwrap();
        let s = Stream::unix(a);
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let e = (&s).read(&mut [0u8; 1]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(s.peer_key(), Peer::Uid(Some(unsafe { libc::getuid() })));
    }
}
