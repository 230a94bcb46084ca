//! gzip on every core, with bytes that do not depend on how many there are.
//!
//! A single-stream gzip encoder runs on one core, and one pytorch or CUDA layer is gigabytes:
//! the whole build would wait on it. So the input is cut into fixed [`BLOCK`]-byte blocks and
//! each becomes a complete gzip *member* of its own, compressed on the rayon pool; the layer is
//! the members one after the other. RFC 1952 defines a gzip file as a series of members, every
//! gzip reader used for images (Go's `compress/gzip` in containerd, Docker, podman, skopeo,
//! umoci; GNU gzip/tar; zlib's `gzread`) reads them as one stream, and eStargz layers are
//! built the same way. Block boundaries depend only on byte offsets, so the output is the same
//! on 1 core or 64.
//!
//! Members are compressed with libdeflate (whole-buffer, which independent blocks allow) at
//! [`LEVEL`] (text-like blocks: ~3x faster than zlib level 6, and smaller) or [`BINARY_LEVEL`]
//! (blocks that look like machine code: shared libraries and CUDA kernels, most of a real ML
//! image), chosen from the block's bytes alone (see docs/benchmarks.md). Blocks that look random (see [`STORE_ENTROPY`]) are stored, not
//! compressed, which is where most of the time of a CUDA/pytorch layer would otherwise go for
//! no gain. flate2/zlib-rs has no block-parallel mode, and pigz-like crates either spawn
//! their own threads per stream (oversubscribing when layers are also written in parallel) or
//! let the output depend on the thread count, hence this small module.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc;

use libdeflater::{CompressionLvl, Compressor};
use rayon::prelude::*;

/// Bytes of input per gzip member.
pub const BLOCK: usize = 1 << 20;

/// libdeflate's level for text-like blocks. On the synthetic benchmark's 1 GiB environment, 2
/// (greedy parsing, shallow search) makes a 707.2 MiB image for 0.12 s less CPU than 3
/// (706.6 MiB) and 0.3 s less than 4 (706.5 MiB); Go's default gzip in umoci makes 710.8 MiB.
/// 1 would grow it past the peers' (717.8 MiB): on text, level 1 loses several percent.
pub const LEVEL: i32 = 2;

/// libdeflate's level for blocks that look like machine code and packed data (order-0
/// entropy above [`BINARY_ENTROPY`]): shared libraries, CUDA fatbins. There level 1 (the
/// "fastest" hash-table matcher) loses about one percent of size and is ~1.5x faster. Measured
/// on the real llm-env's 4.7 GB of torch and CUDA wheels (1 MiB blocks, one core): level 2
/// for all blocks 2390 MiB in 46.0 s; level 1 for all 2436 MiB in 32.8 s; level 1 above
/// entropy 6.0 and 2 below 2422 MiB in 35.1 s (5.5: 2427 MiB / 34.4 s; 6.5: 2408 / 39.3 s).
pub const BINARY_LEVEL: i32 = 1;

/// Above this order-0 entropy (bits per byte) a block is compressed at [`BINARY_LEVEL`]:
/// source code, JSON and text sit below 5.5, ELF sections mostly above 6.
const BINARY_ENTROPY: f64 = 6.0;

/// Blocks whose bytes look random (order-0 entropy above this, in bits per byte) are stored:
/// compressed archives, random weights. The decision depends only on the block's bytes.
const STORE_ENTROPY: f64 = 7.95;

/// gzip member header: magic, deflate, no flags, mtime 0, no extra flags, OS 255 ("unknown")
/// — what libdeflate writes too: no host state in the bytes.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

thread_local! {
    /// A compressor at [`LEVEL`] and one at [`BINARY_LEVEL`], made on first use.
    static COMPRESSORS: RefCell<[Option<Compressor>; 2]> = const { RefCell::new([None, None]) };
}

/// Batches being compressed while the writer fills the next: enough to keep the pool busy,
/// few enough to bound memory (batch size × this × 1 MiB per layer).
const IN_FLIGHT: usize = 2;

/// The pool layers are compressed on: one thread per core, apart from rayon's global pool.
/// rattler links packages on the global pool, and each link job ends in an `fsync` of the
/// package's conda-meta record; compression queued behind those jobs would stall while big
/// layers are written beside the install (see `early.rs`).
fn compression_pool() -> std::sync::Arc<rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<std::sync::Arc<rayon::ThreadPool>> =
        std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::sync::Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("gzip-{i}"))
                .build()
                .expect("a thread pool can be started"),
        )
    })
    .clone()
}

/// A gzip writer that compresses blocks of its input in parallel, one member per block.
///
/// Batches of blocks go to the rayon pool as tasks of their own and the writer goes on
/// filling the next batch, so reading, tar and hashing overlap with compression. Call it from
/// outside the pool (see `write_layers`): a rayon worker blocked on a batch could otherwise
/// steal and run a whole other layer first.
pub struct ParallelGzEncoder<W: Write> {
    inner: W,
    /// Full blocks waiting to be sent off as one batch.
    pending: Vec<Vec<u8>>,
    current: Vec<u8>,
    /// Batches sent off, oldest first; each yields its members, concatenated.
    in_flight: VecDeque<mpsc::Receiver<io::Result<Vec<Vec<u8>>>>>,
    /// Whether any block was sent off (an empty input still gets one, empty, member).
    sent: bool,
    batch: usize,
    /// Where batches run: the global rayon pool unless given.
    pool: Option<std::sync::Arc<rayon::ThreadPool>>,
}

impl<W: Write> ParallelGzEncoder<W> {
    pub fn new(inner: W) -> io::Result<Self> {
        Self::with_pool(inner, Some(compression_pool()))
    }

    /// Like [`new`](Self::new), with batches compressed on `pool` instead of the global pool.
    pub fn with_pool(
        inner: W,
        pool: Option<std::sync::Arc<rayon::ThreadPool>>,
    ) -> io::Result<Self> {
        let threads = pool
            .as_ref()
            .map_or_else(rayon::current_num_threads, |p| p.current_num_threads());
        Ok(Self {
            pool,
            inner,
            pending: Vec::new(),
            current: Vec::with_capacity(BLOCK),
            in_flight: VecDeque::new(),
            sent: false,
            // A block per worker and batch, with IN_FLIGHT batches queued behind the one being
            // filled, keeps the pool busy even for a layer written alone; twice that held 60 MiB
            // more in the benchmark's full build (7 layers at once), for no speed.
            batch: threads.max(2),
        })
    }

    /// Sends the pending blocks off as one batch; writes out the oldest batches beyond
    /// [`IN_FLIGHT`].
    fn send_pending(&mut self) -> io::Result<()> {
        let blocks = std::mem::take(&mut self.pending);
        let (tx, rx) = mpsc::sync_channel(1);
        let job = move || {
            let members: io::Result<Vec<Vec<u8>>> =
                blocks.par_iter().map(|b| gzip_member(b)).collect();
            // The receiver is gone only if the writer was dropped mid-layer.
            let _ = tx.send(members);
        };
        match &self.pool {
            Some(pool) => pool.spawn(job),
            // Already on a worker of the global pool: waiting there for a spawned task could
            // deadlock a small pool, so compress in place (still in parallel).
            None if rayon::current_thread_index().is_some() => job(),
            None => rayon::spawn(job),
        }
        self.in_flight.push_back(rx);
        self.sent = true;
        while self.in_flight.len() > IN_FLIGHT {
            self.write_oldest()?;
        }
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(rx) = self.in_flight.pop_front() {
            let members = rx
                .recv()
                .map_err(|_| io::Error::other("a gzip compression task died"))??;
            for member in members {
                self.inner.write_all(&member)?;
            }
        }
        Ok(())
    }

    /// Compresses what is left and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.current.is_empty() || (!self.sent && self.pending.is_empty()) {
            let last = std::mem::take(&mut self.current);
            self.pending.push(last);
        }
        if !self.pending.is_empty() {
            self.send_pending()?;
        }
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ParallelGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK - self.current.len());
        self.current.extend_from_slice(&buf[..n]);
        if self.current.len() == BLOCK {
            let full = std::mem::replace(&mut self.current, Vec::with_capacity(BLOCK));
            self.pending.push(full);
            if self.pending.len() >= self.batch {
                self.send_pending()?;
            }
        }
        Ok(n)
    }

    /// Members are only complete at [`BLOCK`] boundaries, so flushing passes on what is already
    /// compressed and nothing else: flushing must not change the bytes.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// One complete gzip member holding `data`.
fn gzip_member(data: &[u8]) -> io::Result<Vec<u8>> {
    let entropy = entropy(data);
    if entropy > STORE_ENTROPY {
        return Ok(stored_member(data));
    }
    let (slot, level) = if entropy > BINARY_ENTROPY {
        (1, BINARY_LEVEL)
    } else {
        (0, LEVEL)
    };
    COMPRESSORS.with(|cell| {
        let mut slots = cell.borrow_mut();
        let compressor = slots[slot].get_or_insert_with(|| {
            Compressor::new(CompressionLvl::new(level).expect("valid libdeflate level"))
        });
        let mut out = vec![0; compressor.gzip_compress_bound(data.len())];
        let n = compressor
            .gzip_compress(data, &mut out)
            .map_err(|e| io::Error::other(format!("libdeflate: {e:?}")))?;
        out.truncate(n);
        Ok(out)
    })
}

/// Bytes of each sample window [`entropy`] reads.
const SAMPLE_WINDOW: usize = 4096;

/// Windows [`entropy`] reads per block: 16 × 4 KiB = 64 KiB of a 1 MiB block. Enough to tell
/// random bytes (≈ 7.997 bits on 64 KiB) from anything compressible, at 1/16 of the cost of a
/// full histogram, which was ~5% of a build's CPU.
const SAMPLE_WINDOWS: usize = 16;

/// Shannon entropy of the byte histogram of evenly spaced windows of `data` (all of it when
/// small), in bits per byte. Which bytes are sampled depends only on the length, so the
/// decision it feeds is deterministic.
fn entropy(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    // Four interleaved tables: runs of one byte value do not serialize on one counter.
    let mut counts = [[0u32; 256]; 4];
    let mut count = |bytes: &[u8]| {
        let mut quads = bytes.chunks_exact(4);
        for q in &mut quads {
            counts[0][q[0] as usize] += 1;
            counts[1][q[1] as usize] += 1;
            counts[2][q[2] as usize] += 1;
            counts[3][q[3] as usize] += 1;
        }
        for &b in quads.remainder() {
            counts[0][b as usize] += 1;
        }
    };
    let mut n = 0usize;
    if data.len() <= SAMPLE_WINDOW * SAMPLE_WINDOWS {
        count(data);
        n = data.len();
    } else {
        let stride = data.len() / SAMPLE_WINDOWS;
        for i in 0..SAMPLE_WINDOWS {
            let window = &data[i * stride..i * stride + SAMPLE_WINDOW];
            count(window);
            n += window.len();
        }
    }
    let n = n as f64;
    (0..256)
        .map(|b| counts.iter().map(|t| u64::from(t[b])).sum::<u64>())
        .filter(|&c| c > 0)
        .map(|c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// A gzip member whose deflate stream is stored blocks (RFC 1951 §3.2.4) of at most 65535
/// bytes, the last one final.
fn stored_member(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 65_535 * 5 + 32);
    out.extend_from_slice(&HEADER);
    let chunks: Vec<&[u8]> = data.chunks(65_535).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let len = chunk.len() as u16;
        out.push(u8::from(i + 1 == chunks.len())); // BFINAL on the last, BTYPE = 00 (stored)
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    // ISIZE is the input length modulo 2^32 (RFC 1952).
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gzip(data: &[u8], threads: usize) -> Vec<u8> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        // Called from outside the pool, as write_layers does.
        let mut enc = ParallelGzEncoder::with_pool(Vec::new(), Some(pool.into())).unwrap();
        // Odd write sizes, so blocks straddle writes.
        for chunk in data.chunks(77_777) {
            enc.write_all(chunk).unwrap();
        }
        enc.finish().unwrap()
    }

    fn sample(len: usize) -> Vec<u8> {
        // Alternating text-like (compressible) and pseudo-random (not) stretches.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..len)
            .map(|i| {
                if (i / 300_000) % 2 == 0 {
                    b"tensor weights cuda "[i % 20]
                } else {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                }
            })
            .collect()
    }

    #[test]
    fn round_trips_and_is_independent_of_thread_count() {
        for len in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 12_345] {
            let data = sample(len);
            let one = gzip(&data, 1);
            let four = gzip(&data, 4);
            assert_eq!(one, four, "len {len}: bytes depend on the thread count");
            let mut back = Vec::new();
            flate2::read::MultiGzDecoder::new(&one[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "len {len}: round trip");
        }
    }

    #[test]
    fn random_blocks_are_stored_and_text_blocks_compressed() {
        let data = sample(2 * BLOCK);
        let random = &data[300_000..600_000];
        let text = &data[..300_000];
        assert!(entropy(random) > STORE_ENTROPY);
        assert!(entropy(text) < STORE_ENTROPY);
        let gz = gzip(random, 1);
        // Stored: the input plus 5 bytes per 64 KiB and the member's header and trailer.
        assert!(
            gz.len() < random.len() + 64,
            "{} vs {}",
            gz.len(),
            random.len()
        );
        assert!(gzip(text, 1).len() < text.len() / 10);
    }

    #[test]
    fn gzip_tool_reads_it() {
        let data = sample(2 * BLOCK + 5);
        let gz = gzip(&data, 2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gz");
        std::fs::write(&path, &gz).unwrap();
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(&path)
            .output()
            .expect("gzip is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, data);
    }
}
