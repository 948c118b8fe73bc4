//! A bounded, thread-safe least-recently-used cache keyed by host offset, used for L2 tables and
//! for decompressed clusters. It is split into shards, each behind its own mutex, so rayon
//! threads reading different parts of an image rarely contend; a lock is held only for a map
//! lookup or insert, never across I/O.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

struct Shard<V> {
    map: HashMap<u64, (V, u64)>,
    tick: u64,
}

/// Sharded LRU cache of at most `capacity` values (rounded up to a whole number per shard).
pub struct Lru<V: Clone> {
    shards: Box<[Mutex<Shard<V>>]>,
    per_shard: usize,
}

impl<V: Clone> Lru<V> {
    /// A cache holding about `capacity` values (at least one per shard).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        // Enough shards that rayon threads rarely meet on one lock and that the eviction scan
        // of a shard stays short (at most a few hundred entries for the 64K-entry L2 cache of
        // a 512-byte-cluster image).
        let nshards = (capacity / 256).clamp(4, 256).min(capacity);
        let per_shard = capacity.div_ceil(nshards);
        let shards = (0..nshards)
            .map(|_| {
                Mutex::new(Shard {
                    map: HashMap::with_capacity(per_shard.min(1024)),
                    tick: 0,
                })
            })
            .collect();
        Lru { shards, per_shard }
    }

    fn shard(&self, key: u64) -> MutexGuard<'_, Shard<V>> {
        // Keys are host offsets (multiples of 512 or of the cluster size): mix the bits so
        // neighbouring tables land in different shards.
        let h = (key >> 9).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let i = ((h >> 32) as usize) % self.shards.len();
        // A panic while holding the lock cannot leave the map inconsistent (no I/O or user
        // code runs under it), so a poisoned lock is still usable.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached value for `key`, marking it recently used.
    pub fn get(&self, key: u64) -> Option<V> {
        let mut s = self.shard(key);
        s.tick += 1;
        let tick = s.tick;
        let (v, used) = s.map.get_mut(&key)?;
        *used = tick;
        Some(v.clone())
    }

    /// Insert `value` under `key`, evicting the least recently used value of the shard when
    /// it is full.
    pub fn insert(&self, key: u64, value: V) {
        let mut s = self.shard(key);
        s.tick += 1;
        let tick = s.tick;
        if !s.map.contains_key(&key) && s.map.len() >= self.per_shard {
            if let Some(&victim) = s
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k)
            {
                s.map.remove(&victim);
            }
        }
        s.map.insert(key, (value, tick));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_and_stays_bounded() {
        let c: Lru<u32> = Lru::new(1);
        c.insert(512, 1);
        c.insert(1024, 2);
        assert_eq!(c.get(512), None);
        assert_eq!(c.get(1024), Some(2));

        let c: Lru<u64> = Lru::new(64);
        for k in 0..10_000u64 {
            c.insert(k << 16, k);
        }
        let held: usize = c.shards.iter().map(|s| s.lock().unwrap().map.len()).sum();
        assert!(held <= 64, "{held}");
        assert_eq!(c.get(9_999 << 16), Some(9_999));
    }
}
