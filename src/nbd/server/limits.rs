//! How many connections, and who makes room when there are too many.
//!
//! A plain cap (refuse the newcomer when full) is what let 128 idle clients, 130 slowloris
//! clients or 1,000 bare TCP connections lock every real client out. Here a connection is
//! admitted while its client address (IPv4 address, IPv6 /64, or Unix-socket uid) has fewer
//! than `max_clients_per_address` and the server fewer than `max_clients`; otherwise room is
//! made by closing the connection that is worth least — from the newcomer's own address when
//! that address is at its limit, else from the address holding the most connections — in this
//! order:
//!
//! 1. one still negotiating, oldest first: a real client finishes its handshake in
//!    milliseconds, so one that has not after a while is the likeliest attacker;
//! 2. one whose reply write has been blocked for over [`STALL_GRACE`] (a client that does not
//!    read its replies), longest first;
//! 3. one idle (no request in flight) for over [`IDLE_GRACE`], longest first.
//!
//! Connections busy with requests are never closed to make room; when all are, the newcomer
//! is refused. So one address can never hold more than its share, a flood from one address
//! only displaces its own connections, and a real client is let in even while an attacker on
//! the same address holds its limit.
//! Limitation: a client on the same address that reconnects faster than a real client can
//! negotiate (more than `max_clients_per_address` connections during that client's
//! handshake, typically a millisecond on a LAN) can still displace it.

use std::collections::HashMap;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::super::stream::{Peer, Stream};
use super::budget::Floor;
use super::lock;

/// A reply write blocked this long marks its client as not reading its replies.
pub const STALL_GRACE: Duration = Duration::from_secs(1);
/// A connection idle this long may be closed to make room.
pub const IDLE_GRACE: Duration = Duration::from_secs(1);

fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64 + 1
}

fn since(us: u64) -> Duration {
    Duration::from_micros(now_us().saturating_sub(us))
}

/// What a connection is doing, as its threads report it.
pub(super) struct Activity {
    pub started: Instant,
    started_us: u64,
    negotiated: AtomicBool,
    in_flight: AtomicUsize,
    /// Last request received or reply finished (µs clock).
    last_active: AtomicU64,
    /// Start of the reply write in progress (0: none).
    writing_since: AtomicU64,
    /// Closed by the server (to make room, or stopping).
    closing: AtomicBool,
    /// This connection's share of the reply memory.
    pub floor: Floor,
}

impl Activity {
    pub fn new() -> Activity {
        let us = now_us();
        Activity {
            started: Instant::now(),
            started_us: us,
            negotiated: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_active: AtomicU64::new(us),
            writing_since: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            floor: Floor::default(),
        }
    }
    pub fn negotiated(&self) {
        self.last_active.store(now_us(), Ordering::SeqCst);
        self.negotiated.store(true, Ordering::SeqCst);
    }
    pub fn negotiated_yet(&self) -> bool {
        self.negotiated.load(Ordering::SeqCst)
    }
    pub fn request_received(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.last_active.store(now_us(), Ordering::SeqCst);
    }
    pub fn request_done(&self) {
        self.last_active.store(now_us(), Ordering::SeqCst);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
    /// Time since the last request or reply.
    pub fn idle_for(&self) -> Duration {
        since(self.last_active.load(Ordering::SeqCst))
    }
    pub fn writing(&self, on: bool) {
        let v = if on { now_us() } else { 0 };
        self.writing_since.store(v, Ordering::SeqCst);
    }
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// How readily this connection is closed to make room: `(rank, how long)`, lower rank
    /// first, longer first; `None` when it is busy and must be kept.
    fn expendable(&self) -> Option<(u8, Duration)> {
        if !self.negotiated.load(Ordering::SeqCst) {
            return Some((0, since(self.started_us)));
        }
        let w = self.writing_since.load(Ordering::SeqCst);
        if w != 0 && since(w) >= STALL_GRACE {
            return Some((1, since(w)));
        }
        let idle = self.idle_for();
        (self.in_flight() == 0 && idle >= IDLE_GRACE).then_some((2, idle))
    }
}

struct Entry {
    peer: Peer,
    stream: Arc<Stream>,
    activity: Arc<Activity>,
}

/// Every live connection.
pub(super) struct Registry {
    max_clients: usize,
    per_address: usize,
    next_id: AtomicU64,
    table: Mutex<HashMap<u64, Entry>>,
}

/// A connection let in.
pub(super) struct Admitted {
    pub id: u64,
    pub activity: Arc<Activity>,
    /// What was closed to make room for it.
    pub displaced: Option<String>,
}

impl Registry {
    pub fn new(max_clients: usize, per_address: usize) -> Registry {
        Registry {
            max_clients: max_clients.max(1),
            per_address: per_address.max(1),
            next_id: AtomicU64::new(0),
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Let a new connection in, closing another to make room if needed; `Err` says why it is
    /// refused.
    pub fn admit(&self, peer: Peer, stream: Arc<Stream>) -> Result<Admitted, String> {
        let mut t = lock(&self.table);
        let same = t.values().filter(|e| e.peer == peer).count();
        let victim = if same >= self.per_address {
            let v = Self::most_expendable(&t, peer).ok_or_else(|| {
                format!(
                    "{peer} already has {same} connections (at most {} per client address), \
                     all busy",
                    self.per_address
                )
            })?;
            Some((
                v,
                format!("at most {} per client address", self.per_address),
            ))
        } else if t.len() >= self.max_clients {
            let mut counts: HashMap<Peer, usize> = HashMap::new();
            for e in t.values() {
                *counts.entry(e.peer).or_default() += 1;
            }
            let mut peers: Vec<(Peer, usize)> = counts.into_iter().collect();
            peers.sort_by_key(|p| std::cmp::Reverse(p.1));
            let v = peers
                .iter()
                .find_map(|(p, _)| Self::most_expendable(&t, *p))
                .ok_or_else(|| {
                    format!(
                        "already serving {} clients (the most allowed), all busy",
                        t.len()
                    )
                })?;
            Some((v, format!("at most {} clients in all", self.max_clients)))
        } else {
            None
        };
        let displaced = victim.map(|(id, why)| {
            let e = t.remove(&id).expect("the victim is in the table");
            e.activity.closing.store(true, Ordering::SeqCst);
            let _ = e.stream.shutdown(Shutdown::Both);
            let what = match e.activity.expendable() {
                Some((0, d)) => format!("still negotiating after {:.1} s", d.as_secs_f64()),
                Some((1, d)) => format!("not reading its replies for {:.1} s", d.as_secs_f64()),
                Some((_, d)) => format!("idle for {:.1} s", d.as_secs_f64()),
                None => "busy".into(),
            };
            format!(
                "closed a connection of {} ({what}) to make room: {why}",
                e.peer
            )
        });
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let activity = Arc::new(Activity::new());
        t.insert(
            id,
            Entry {
                peer,
                stream,
                activity: activity.clone(),
            },
        );
        Ok(Admitted {
            id,
            activity,
            displaced,
        })
    }

    fn most_expendable(t: &HashMap<u64, Entry>, peer: Peer) -> Option<u64> {
        t.iter()
            .filter(|(_, e)| e.peer == peer)
            .filter_map(|(id, e)| e.activity.expendable().map(|(r, d)| (r, d, *id)))
            .min_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
            .map(|(_, _, id)| id)
    }

    /// Forget a connection that has ended.
    pub fn remove(&self, id: u64) {
        lock(&self.table).remove(&id);
    }

    /// Shut down the read side of every connection (the server is stopping: each ends once
    /// its in-flight requests are answered).
    pub fn stop_all(&self) {
        for e in lock(&self.table).values() {
            e.activity.closing.store(true, Ordering::SeqCst);
            let _ = e.stream.shutdown(Shutdown::Read);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::os::unix::net::UnixStream;

    fn conn() -> (Arc<Stream>, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (Arc::new(Stream::unix(a)), b)
    }

    fn ip(last: u8) -> Peer {
        Peer::Ip(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn a_full_address_makes_room_from_its_own_oldest_handshake() {
        let r = Registry::new(100, 2);
        let mut keep = Vec::new();
        let (s, c) = conn();
        let first = r.admit(ip(1), s).unwrap();
        keep.push(c);
        let (s, c) = conn();
        let second = r.admit(ip(1), s).unwrap();
        keep.push(c);
        let (s, c) = conn();
        let other = r.admit(ip(2), s).unwrap();
        keep.push(c);
        let (s, c) = conn();
        let third = r.admit(ip(1), s).unwrap();
        keep.push(c);
        assert!(third.displaced.unwrap().contains("still negotiating"));
        assert!(first.activity.closing());
        assert!(!second.activity.closing() && !other.activity.closing());
        // Busy connections are kept: then the newcomer is refused.
        for a in [&second.activity, &third.activity] {
            a.negotiated();
            a.request_received();
        }
        let (s, _c) = conn();
        let e = r.admit(ip(1), s).err().unwrap();
        assert!(e.contains("all busy"), "{e}");
    }

    #[test]
    fn a_full_server_takes_room_from_the_busiest_address() {
        let r = Registry::new(3, 10);
        let mut keep = Vec::new();
        let mut acts = Vec::new();
        for p in [ip(1), ip(1), ip(2)] {
            let (s, c) = conn();
            let a = r.admit(p, s).unwrap();
            a.activity.negotiated();
            acts.push(a.activity);
            keep.push(c);
        }
        // Nothing idle long enough yet: refused.
        let (s, _c) = conn();
        assert!(r.admit(ip(3), s).is_err());
        std::thread::sleep(IDLE_GRACE + Duration::from_millis(50));
        acts[1].request_received(); // busy: kept
        let (s, _c) = conn();
        let a = r.admit(ip(3), s).unwrap();
        assert!(a.displaced.unwrap().contains("10.0.0.1 (idle"));
        assert!(acts[0].closing() && !acts[1].closing() && !acts[2].closing());
    }
}
