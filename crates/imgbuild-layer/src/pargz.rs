//! gzip on every core, with bytes that do not depend on how many there are.
//!
//! A single-stream gzip encoder runs on one core, and one pytorch or CUDA layer is gigabytes:
//! the whole build would wait on it. Like `pigz --independent`, the input is cut into fixed
//! [`BLOCK`]-byte blocks, each deflated on its own (raw deflate, sync flush, no dictionary
//! shared with the previous block) on the rayon pool, and the pieces are concatenated between
//! one gzip header and one trailer. Block boundaries depend only on byte offsets, so the output
//! is the same on 1 core or 64, and any gzip reader sees a single ordinary member.
//!
//! The cost of independence is a slightly worse ratio (each block starts with an empty
//! window): about 0.1% at 1 MiB blocks on compressible data. Blocks that look random (see
//! [`STORE_ENTROPY`]) are stored instead of deflated, which is where most of the time of a
//! CUDA/pytorch layer would otherwise go for no gain.
//! flate2/zlib-rs has no block-parallel mode and the pigz-like crates either spawn their own
//! threads per stream (oversubscribing when layers are also written in parallel) or let the
//! output depend on the thread count, hence this small module.

use std::io::{self, Write};

use flate2::{Compress, Compression, FlushCompress};
use rayon::prelude::*;

/// Bytes of input per independently deflated block.
pub const BLOCK: usize = 1 << 20;

/// gzip header: magic, deflate, no flags, mtime 0, no extra flags, OS 255 ("unknown") — no
/// host state in the bytes.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// A final, empty, fixed-Huffman deflate block: ends the stream after the sync-flushed blocks.
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// A gzip writer that deflates blocks of its input in parallel.
pub struct ParallelGzEncoder<W: Write> {
    inner: W,
    level: Compression,
    /// Full blocks waiting to be compressed as one parallel batch.
    pending: Vec<Vec<u8>>,
    current: Vec<u8>,
    crc: crc32fast::Hasher,
    total: u64,
    batch: usize,
}

impl<W: Write> ParallelGzEncoder<W> {
    pub fn new(mut inner: W, level: Compression) -> io::Result<Self> {
        inner.write_all(&HEADER)?;
        Ok(Self {
            inner,
            level,
            pending: Vec::new(),
            current: Vec::with_capacity(BLOCK),
            crc: crc32fast::Hasher::new(),
            total: 0,
            // Enough blocks in flight to keep every worker busy; memory stays at a few MiB
            // per worker.
            batch: (rayon::current_num_threads() * 2).max(2),
        })
    }

    fn compress_pending(&mut self) -> io::Result<()> {
        let level = self.level;
        let outputs: Vec<io::Result<Vec<u8>>> = self
            .pending
            .par_iter()
            .map(|block| deflate_block(block, level))
            .collect();
        for out in outputs {
            self.inner.write_all(&out?)?;
        }
        self.pending.clear();
        Ok(())
    }

    /// Compresses what is left, writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.current.is_empty() {
            let last = std::mem::take(&mut self.current);
            self.pending.push(last);
        }
        self.compress_pending()?;
        self.inner.write_all(&FINAL_BLOCK)?;
        self.inner
            .write_all(&self.crc.clone().finalize().to_le_bytes())?;
        // ISIZE is the input length modulo 2^32 (RFC 1952).
        self.inner.write_all(&(self.total as u32).to_le_bytes())?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ParallelGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK - self.current.len());
        self.current.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        self.total += n as u64;
        if self.current.len() == BLOCK {
            let full = std::mem::replace(&mut self.current, Vec::with_capacity(BLOCK));
            self.pending.push(full);
            if self.pending.len() >= self.batch {
                self.compress_pending()?;
            }
        }
        Ok(n)
    }

    /// Blocks are only complete at [`BLOCK`] boundaries, so flushing passes on what is already
    /// compressed and nothing else: flushing must not change the bytes.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Blocks whose bytes look random (order-0 entropy above this, in bits per byte) are stored,
/// not deflated: compressed or encrypted data, random weights. Deflate would spend most of
/// its time on them to save nothing; the decision depends only on the block's bytes.
const STORE_ENTROPY: f64 = 7.95;

/// Raw deflate of one block, ending byte-aligned (sync flush) and without the final bit, so
/// blocks can be concatenated.
fn deflate_block(data: &[u8], level: Compression) -> io::Result<Vec<u8>> {
    if entropy(data) > STORE_ENTROPY {
        return Ok(stored(data));
    }
    let mut c = Compress::new(level, false);
    let mut out = Vec::with_capacity(data.len() + data.len() / 16 + 64);
    loop {
        if out.len() == out.capacity() {
            out.reserve(64 * 1024);
        }
        let consumed = c.total_in() as usize;
        c.compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
            .map_err(io::Error::other)?;
        // zlib's rule: a sync flush is complete when all input is taken and output space is left.
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            return Ok(out);
        }
    }
}

/// Shannon entropy of the byte histogram, in bits per byte.
fn entropy(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut counts = [0u64; 256];
    for &b in data {
        counts[b as usize] += 1;
    }
    let n = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// `data` as non-final stored deflate blocks (RFC 1951 §3.2.4), each at most 65535 bytes;
/// the stream is byte-aligned before and after.
fn stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 65_535 * 5 + 5);
    for chunk in data.chunks(65_535) {
        let len = chunk.len() as u16;
        out.push(0); // BFINAL = 0, BTYPE = 00 (stored)
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
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
        pool.install(|| {
            let mut enc = ParallelGzEncoder::new(Vec::new(), Compression::new(6)).unwrap();
            // Odd write sizes, so blocks straddle writes.
            for chunk in data.chunks(77_777) {
                enc.write_all(chunk).unwrap();
            }
            enc.finish().unwrap()
        })
    }

    fn sample(len: usize) -> Vec<u8> {
        // Half text-like (compressible), half pseudo-random (not).
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
            flate2::read::GzDecoder::new(&one[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "len {len}: round trip");
        }
    }

    #[test]
    fn random_blocks_are_stored_and_text_blocks_deflated() {
        let data = sample(2 * BLOCK);
        let random = &data[300_000..600_000];
        let text = &data[..300_000];
        assert!(entropy(random) > STORE_ENTROPY);
        assert!(entropy(text) < STORE_ENTROPY);
        let gz = gzip(random, 1);
        // Stored: the input plus 5 bytes per 64 KiB, the gzip header and trailer.
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
