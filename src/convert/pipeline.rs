//! The parallel pipeline shared by every writer.
//!
//! 1. [`plan`] walks the source's allocation map (in bounded windows) and cuts the data extents,
//!    widened to the target's allocation unit (cluster, grain, block), into chunks of at most
//!    `chunk` bytes that never cross a `chunk`-aligned boundary. Holes are never read.
//! 2. [`run_ordered`] / [`run_unordered`] start `jobs` workers on a rayon pool. Each worker takes
//!    the next chunk index from an atomic counter, reads the chunk into its own buffer and does
//!    the CPU work (zero detection, compression) in parallel with the others.
//! 3. Ordered runs then take a *turn*: chunk `i` waits until chunks `0..i` have had theirs, and
//!    under one lock assigns output offsets and updates the format's tables (a few
//!    microseconds). Because offsets are assigned in guest order, the output is byte-identical
//!    whatever the number of threads.
//! 4. Outside the lock, the worker writes its data with positional writes at the assigned
//!    offsets, so writes also run in parallel.
//!
//! This is a bounded in-order pipeline without a separate writer thread or channel: memory is
//! `jobs × (chunk + compressed chunk)` whatever the image size, and a worker can be at most one
//! chunk ahead of the turn. The first error (or a cancel request, see [`super::CANCEL`]) stops
//! all workers; waiting workers are woken.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use super::deflate::Deflater;
use crate::error::{Error, Result};
use crate::image::{BlockDevice, ExtentKind};

/// Default chunk: big reads for bandwidth, small enough that 16 workers stay far below 256 MiB.
pub const CHUNK: u64 = 2 * 1024 * 1024;

/// One unit of work: `[offset, offset+len)` of the guest disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub offset: u64,
    pub len: u64,
}

impl Chunk {
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// Guest space of the map walked per `map` call.
const MAP_WINDOW: u64 = 1 << 34;

/// Cut the data extents of `src` into chunks. Extents are widened to multiples of `align`
/// (clipped to `limit`, the end of the guest space the target covers, at least `src.size()`),
/// and split at multiples of `chunk` (a multiple of `align`).
pub fn plan(src: &dyn BlockDevice, align: u64, chunk: u64, limit: u64) -> Result<Vec<Chunk>> {
    debug_assert!(align > 0 && chunk >= align && chunk % align == 0);
    let size = src.size();
    let mut out: Vec<Chunk> = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let wlen = MAP_WINDOW.min(size - pos);
        for e in src.map(pos, wlen)? {
            if e.kind != ExtentKind::Data || e.length == 0 {
                continue;
            }
            let mut a = e.offset / align * align;
            let b = (e.offset + e.length)
                .div_ceil(align)
                .saturating_mul(align)
                .min(limit);
            while a < b {
                let stop = ((a / chunk + 1) * chunk).min(b);
                match out.last_mut() {
                    Some(last) if last.offset / chunk == a / chunk && last.end() >= a => {
                        let end = last.end().max(stop);
                        last.len = end - last.offset;
                    }
                    _ => out.push(Chunk {
                        offset: a,
                        len: stop - a,
                    }),
                }
                a = stop;
            }
        }
        pos += wlen;
    }
    Ok(out)
}

/// Fill `buf` with the guest bytes at `offset`; the part past the end of the source reads as
/// zeros (targets round sizes up to sectors, clusters or CHS geometry).
pub fn read_padded(src: &dyn BlockDevice, buf: &mut [u8], offset: u64) -> Result<()> {
    let size = src.size();
    let avail = size.saturating_sub(offset).min(buf.len() as u64) as usize;
    if avail > 0 {
        src.read_at(&mut buf[..avail], offset)?;
    }
    buf[avail..].fill(0);
    Ok(())
}

/// Whether a buffer is all zeros (vectorisable: ORs 128-byte blocks).
pub fn is_zero(buf: &[u8]) -> bool {
    let mut blocks = buf.chunks_exact(128);
    for b in &mut blocks {
        let mut acc = 0u64;
        for w in b.chunks_exact(8) {
            acc |= u64::from_ne_bytes(w.try_into().unwrap());
        }
        if acc != 0 {
            return false;
        }
    }
    blocks.remainder().iter().all(|&b| b == 0)
}

/// Runs of non-zero `gran`-byte pieces of `buf`, as `(start, len)` within `buf`.
pub fn nonzero_runs(buf: &[u8], gran: usize) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let end = (pos + gran).min(buf.len());
        if !is_zero(&buf[pos..end]) {
            match runs.last_mut() {
                Some(last) if last.0 + last.1 == pos => last.1 += end - pos,
                _ => runs.push((pos, end - pos)),
            }
        }
        pos = end;
    }
    runs
}

/// Progress credit for chunk `i`: the guest bytes from the end of chunk `i-1` to the end of
/// chunk `i` (holes before a chunk are credited with it). The tail after the last chunk is
/// credited by [`credit_tail`].
fn credit(chunks: &[Chunk], i: usize) -> u64 {
    let prev = if i == 0 { 0 } else { chunks[i - 1].end() };
    chunks[i].end().saturating_sub(prev)
}

/// Credit the guest bytes after the last chunk (up to `size`).
pub fn credit_tail(chunks: &[Chunk], size: u64, progress: &(dyn Fn(u64) + Sync)) {
    let done = chunks.last().map(|c| c.end()).unwrap_or(0);
    if size > done {
        progress(size - done);
    }
}

/// Shared stop machinery: the first error wins, the others stop quietly.
struct Stop {
    abort: AtomicBool,
    first: Mutex<Option<Error>>,
}

impl Stop {
    fn new() -> Self {
        Stop {
            abort: AtomicBool::new(false),
            first: Mutex::new(None),
        }
    }
    fn fail(&self, e: Error) {
        let mut g = lock(&self.first);
        if g.is_none() {
            *g = Some(e);
        }
        self.abort.store(true, Ordering::SeqCst);
    }
    fn stopped(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
    }
    fn into_result(self) -> Result<()> {
        match self.first.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn pool(jobs: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .thread_name(|i| format!("imgcheck-convert-{i}"))
        .build()
        .map_err(|e| Error::Other(format!("cannot start worker threads: {e}")))
}

fn interrupted() -> Error {
    Error::Other("conversion interrupted".into())
}

/// Run `work` on every chunk in parallel, in any order (raw, fixed VHD: the output offset is
/// the guest offset). `init` makes one worker's scratch state (its buffers).
pub fn run_unordered<L>(
    jobs: usize,
    chunks: &[Chunk],
    init: impl Fn() -> L + Sync,
    work: impl Fn(&mut L, Chunk) -> Result<()> + Sync,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<()> {
    let stop = Stop::new();
    let next = AtomicUsize::new(0);
    let workers = jobs.max(1).min(chunks.len().max(1));
    pool(workers)?.scope(|s| {
        for _ in 0..workers {
            s.spawn(|_| {
                let mut local = init();
                loop {
                    if stop.stopped() {
                        break;
                    }
                    if super::cancelled() {
                        stop.fail(interrupted());
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= chunks.len() {
                        break;
                    }
                    if let Err(e) = work(&mut local, chunks[i]) {
                        stop.fail(e);
                        break;
                    }
                    progress(credit(chunks, i));
                }
            });
        }
    });
    if super::cancelled() {
        stop.fail(interrupted());
    }
    stop.into_result()
}

/// Run the three steps of an ordered conversion over every chunk and return the final state:
/// `work` (parallel: read, detect zeros, compress into the worker's scratch `L`), `assign`
/// (in guest order, under the lock: give output offsets, update tables in `S`, return the
/// write plan `A`), `write` (parallel: positional writes of `A` from `L`).
#[allow(clippy::too_many_arguments)]
pub fn run_ordered<L, S, A>(
    jobs: usize,
    chunks: &[Chunk],
    state: S,
    init: impl Fn() -> L + Sync,
    work: impl Fn(&mut L, Chunk) -> Result<()> + Sync,
    assign: impl Fn(&mut S, &L, Chunk) -> Result<A> + Sync,
    write: impl Fn(&L, A) -> Result<()> + Sync,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<S>
where
    S: Send,
{
    let stop = Stop::new();
    let next = AtomicUsize::new(0);
    let turn: Mutex<(usize, S)> = Mutex::new((0, state));
    let cv = Condvar::new();
    let workers = jobs.max(1).min(chunks.len().max(1));
    pool(workers)?.scope(|s| {
        for _ in 0..workers {
            s.spawn(|_| {
                let mut local = init();
                loop {
                    if stop.stopped() {
                        break;
                    }
                    if super::cancelled() {
                        stop.fail(interrupted());
                        cv.notify_all();
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= chunks.len() {
                        break;
                    }
                    let c = chunks[i];
                    let step = (|| -> Result<Option<()>> {
                        work(&mut local, c)?;
                        let plan = {
                            let mut g = lock(&turn);
                            while g.0 != i {
                                if stop.stopped() {
                                    return Ok(None);
                                }
                                g = cv.wait(g).unwrap_or_else(|p| p.into_inner());
                            }
                            let r = assign(&mut g.1, &local, c);
                            g.0 += 1;
                            drop(g);
                            cv.notify_all();
                            r?
                        };
                        write(&local, plan)?;
                        Ok(Some(()))
                    })();
                    match step {
                        Ok(Some(())) => progress(credit(chunks, i)),
                        Ok(None) => break,
                        Err(e) => {
                            stop.fail(e);
                            // Wake workers waiting for a turn that will never come.
                            let _g = lock(&turn);
                            cv.notify_all();
                            break;
                        }
                    }
                }
            });
        }
    });
    if super::cancelled() {
        stop.fail(interrupted());
    }
    stop.into_result()?;
    Ok(turn.into_inner().unwrap_or_else(|p| p.into_inner()).1)
}

/// One worker's scratch space in a writer: the chunk as read, its compressed output, what each
/// cluster or grain of the chunk became (`K`, the writer's own kind type), and the compressor.
pub struct Scratch<K> {
    pub buf: Vec<u8>,
    pub comp: Vec<u8>,
    pub kinds: Vec<K>,
    pub deflater: Option<Deflater>,
}

/// Which of a worker's buffers a planned write takes its bytes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Src {
    /// The chunk as read from the source.
    Read,
    /// The worker's compressed output.
    Comp,
}

/// The writes of one chunk: planned in guest order under the layout lock, carried out by the
/// worker afterwards without it.
#[derive(Default)]
pub struct WritePlan {
    /// (file offset, buffer, start, length); contiguous runs are merged.
    pub data: Vec<(u64, Src, usize, usize)>,
    /// Metadata (tables) to write: (file offset, bytes).
    pub meta: Vec<(u64, Vec<u8>)>,
}

impl WritePlan {
    /// Plan `len` bytes from `src[start..]` at file offset `off`.
    pub fn push(&mut self, off: u64, src: Src, start: usize, len: usize) {
        if let Some(l) = self.data.last_mut() {
            if l.1 == src && l.0 + l.3 as u64 == off && l.2 + l.3 == start {
                l.3 += len;
                return;
            }
        }
        self.data.push((off, src, start, len));
    }

    /// Carry out the plan: data from the worker's `read` and `comp` buffers, then metadata.
    pub fn execute(self, out: &super::output::Output, read: &[u8], comp: &[u8]) -> Result<()> {
        for (off, src, start, len) in self.data {
            let b = match src {
                Src::Read => &read[start..start + len],
                Src::Comp => &comp[start..start + len],
            };
            out.write_at(b, off)?;
        }
        for (off, bytes) in self.meta {
            out.write_at(&bytes, off)?;
        }
        Ok(())
    }
}
