//! The compressor a layer's tar goes through: parallel gzip or zstd.

use std::io::{self, Write};

use imgbuild_oci::Compression;

use crate::pargz::ParallelGzEncoder;

pub(super) enum Encoder<W: Write> {
    Gzip(ParallelGzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    pub(super) fn new(inner: W, compression: Compression) -> io::Result<Self> {
        Ok(match compression {
            // Block-parallel, with bytes independent of the core count (see pargz.rs).
            Compression::Gzip => Encoder::Gzip(ParallelGzEncoder::new(inner)?),
            Compression::Zstd { level } => {
                let mut enc = zstd::stream::write::Encoder::new(inner, i32::from(level))?;
                // zstd's output is the same for any worker count >= 1, so this uses every
                // core without making the bytes depend on the machine.
                let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
                enc.multithread(workers.max(1))?;
                Encoder::Zstd(enc)
            }
        })
    }

    pub(super) fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}
