//! NBD URIs as libnbd and qemu write them:
//! `nbd://HOST[:PORT]/EXPORT` (also `nbd+tcp://`) and `nbd+unix:///EXPORT?socket=PATH`.
//! The export name and socket path are percent-decoded.

use std::path::PathBuf;

use super::proto::DEFAULT_PORT;
use crate::error::{Error, Result};

/// Where an NBD server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// Host name or address (IPv6 without brackets) and port.
    Tcp { host: String, port: u16 },
    /// A Unix-domain socket.
    Unix(PathBuf),
}

/// A parsed NBD URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdUri {
    pub address: Address,
    pub export: String,
}

/// Parse an NBD URI; errors name the URI and say what is wrong.
pub fn parse(uri: &str) -> Result<NbdUri> {
    let bad = |msg: &str| Error::Other(format!("{uri}: not a valid NBD URI: {msg}"));
    let (scheme, rest) = uri.split_once("://").ok_or_else(|| {
        bad("expected nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH")
    })?;
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    if rest.contains('#') || query.is_some_and(|q| q.contains('#')) {
        return Err(bad("fragments (#...) are not allowed"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let export =
        percent_decode(path).ok_or_else(|| bad("bad percent-encoding in the export name"))?;
    if export.len() > super::proto::MAX_STRING {
        return Err(bad("the export name is longer than 4096 bytes"));
    }
    let mut socket = None;
    if let Some(q) = query {
        for kv in q.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match k {
                "socket" => {
                    socket = Some(
                        percent_decode(v).ok_or_else(|| bad("bad percent-encoding in socket="))?,
                    )
                }
                _ => return Err(bad(&format!("unsupported query parameter \"{k}\""))),
            }
        }
    }
    match scheme {
        "nbd" | "nbd+tcp" => {
            if socket.is_some() {
                return Err(bad("socket= is only for nbd+unix:// URIs"));
            }
            if authority.contains('@') {
                return Err(bad("user names are not supported"));
            }
            let (host, port) = split_host_port(authority).ok_or_else(|| bad("bad HOST[:PORT]"))?;
            if host.is_empty() {
                return Err(bad("no host name"));
            }
            Ok(NbdUri {
                address: Address::Tcp { host, port },
                export,
            })
        }
        "nbd+unix" => {
            if !authority.is_empty() {
                return Err(bad(
                    "nbd+unix:// URIs have no host (write nbd+unix:///EXPORT?socket=PATH)",
                ));
            }
            let socket = socket.filter(|s| !s.is_empty()).ok_or_else(|| {
                bad("nbd+unix:// needs ?socket=PATH naming the server's Unix socket")
            })?;
            Ok(NbdUri {
                address: Address::Unix(PathBuf::from(socket)),
                export,
            })
        }
        "nbds" | "nbds+tcp" | "nbds+unix" => Err(Error::unsupported(
            uri,
            "NBD over TLS (nbds://) is not supported",
        )),
        _ => Err(bad(&format!("unknown scheme \"{scheme}\""))),
    }
}

fn split_host_port(a: &str) -> Option<(String, u16)> {
    if let Some(rest) = a.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => DEFAULT_PORT,
            p => p.strip_prefix(':')?.parse().ok()?,
        };
        return Some((host.to_string(), port));
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_string(), p.parse().ok()?)),
        Some(_) => None, // bare IPv6 needs brackets
        None => Some((a.to_string(), DEFAULT_PORT)),
    }
}

/// Decode %XX escapes; `None` for a malformed escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).ok()?;
    (!s.contains('\0')).then_some(s)
}

/// Percent-encode an export name or path for use in a URI.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || b"-._~/".contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

impl NbdUri {
    /// The URI that names this address and export.
    pub fn to_uri(&self) -> String {
        match &self.address {
            Address::Tcp { host, port } => {
                let h = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                format!("nbd://{h}:{port}/{}", percent_encode(&self.export))
            }
            Address::Unix(p) => format!(
                "nbd+unix:///{}?socket={}",
                percent_encode(&self.export),
                percent_encode(&p.display().to_string())
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16, export: &str) -> NbdUri {
        NbdUri {
            address: Address::Tcp {
                host: host.into(),
                port,
            },
            export: export.into(),
        }
    }

    #[test]
    fn parses_tcp_forms() {
        assert_eq!(
            parse("nbd://127.0.0.1:1234/disk").unwrap(),
            tcp("127.0.0.1", 1234, "disk")
        );
        assert_eq!(parse("nbd://host").unwrap(), tcp("host", 10809, ""));
        assert_eq!(parse("nbd://host/").unwrap(), tcp("host", 10809, ""));
        assert_eq!(
            parse("nbd+tcp://[::1]:99/a%20b/c").unwrap(),
            tcp("::1", 99, "a b/c")
        );
        assert_eq!(parse("nbd://[::1]/x").unwrap(), tcp("::1", 10809, "x"));
    }

    #[test]
    fn parses_unix_form() {
        let u = parse("nbd+unix:///disk?socket=/tmp/s%20ock").unwrap();
        assert_eq!(u.address, Address::Unix("/tmp/s ock".into()));
        assert_eq!(u.export, "disk");
        assert_eq!(parse(&u.to_uri()).unwrap(), u);
    }

    #[test]
    fn rejects_bad_uris_with_reason() {
        for (u, why) in [
            ("nbd+unix:///disk", "socket"),
            ("nbd+unix://host/disk?socket=/s", "no host"),
            ("nbd://host:notaport/x", "HOST[:PORT]"),
            ("nbd://host:70000/x", "HOST[:PORT]"),
            ("nbd://:10809/x", "no host"),
            ("nbd://h/x?socket=/s", "only for nbd+unix"),
            ("nbd://h/x?tls=on", "unsupported query"),
            ("nbd://h/%zz", "percent"),
            ("nbd://h/a%00b", "percent"),
            ("nbds://h/x", "TLS"),
            ("ftp://h/x", "unknown scheme"),
            ("nbd://::1/x", "HOST[:PORT]"),
        ] {
            let e = parse(u).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(u), "{u}: {e}");
        }
    }

    #[test]
    fn tcp_uri_round_trips() {
        let u = tcp("::1", 5, "we ird/name");
        assert_eq!(parse(&u.to_uri()).unwrap(), u);
    }
}
