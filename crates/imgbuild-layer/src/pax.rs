//! Tar entries in POSIX form: a ustar header, preceded by a PAX extended header only when a
//! value does not fit in it.
//!
//! The `tar` crate falls back to GNU `././@LongLink` entries for long names; the OCI spec
//! and most readers prefer PAX (POSIX.1-2001), which is also the only portable way to say that a
//! file is 8 GiB or more (ustar's size field is 11 octal digits). So every header is built
//! here: paths that fit go into ustar's `prefix`/`name` split, the rest into `path=` records;
//! long link targets into `linkpath=`; sizes ≥ 8 GiB into `size=` (the header also carries the
//! size in GNU base-256 for readers that skip PAX). Paths that are not UTF-8 are written as
//! their raw bytes, marked `hdrcharset=BINARY` as POSIX says.

use std::io::{self, Read, Write};

/// The largest size ustar's 12-byte octal field holds.
const USTAR_MAX_SIZE: u64 = (1 << 33) - 1;

/// One entry to append.
pub struct Entry<'a> {
    pub kind: tar::EntryType,
    pub path: &'a [u8],
    pub link: Option<&'a [u8]>,
    pub mode: u32,
    pub size: u64,
    pub mtime: u64,
}

/// Appends `entry` with `data` (exactly `entry.size` bytes) to `tar`.
pub fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    entry: &Entry<'_>,
    data: impl Read,
) -> io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(entry.kind);
    h.set_mode(entry.mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(entry.mtime);
    h.set_size(entry.size);

    let mut records = Vec::new();
    if !set_ustar_path(&mut h, entry.path) {
        records.push(record("path", entry.path));
        // What a reader without PAX support sees: the end of the name, truncated.
        let tail = &entry.path[entry.path.len().saturating_sub(100)..];
        h.as_ustar_mut().expect("ustar header").name[..tail.len()].copy_from_slice(tail);
    }
    if let Some(link) = entry.link {
        let field = &mut h.as_old_mut().linkname;
        let room = field.len();
        if link.len() <= room {
            field[..link.len()].copy_from_slice(link);
        } else {
            records.push(record("linkpath", link));
            field.copy_from_slice(&link[..room]);
        }
    }
    if entry.size > USTAR_MAX_SIZE {
        records.push(record("size", entry.size.to_string().as_bytes()));
    }
    if !records.is_empty() {
        let binary = std::str::from_utf8(entry.path).is_err()
            || entry.link.is_some_and(|l| std::str::from_utf8(l).is_err());
        if binary {
            // Must come before the records it applies to.
            records.insert(0, record("hdrcharset", b"BINARY"));
        }
        let body = records.concat();
        let mut x = tar::Header::new_ustar();
        x.set_entry_type(tar::EntryType::XHeader);
        x.set_mode(0o644);
        x.set_uid(0);
        x.set_gid(0);
        x.set_mtime(entry.mtime);
        x.set_size(body.len() as u64);
        // GNU tar's name for these entries, without its pid: fixed bytes for fixed input.
        set_ustar_path(&mut x, b"././@PaxHeader");
        x.set_cksum();
        tar.append(&x, &body[..])?;
    }
    h.set_cksum();
    let out = tar.get_mut();
    out.write_all(h.as_bytes())?;
    copy_data(data, out, entry.size)?;
    // Entries are padded to 512-byte records.
    let pad = ((512 - entry.size % 512) % 512) as usize;
    out.write_all(&[0u8; 512][..pad])
}

/// Bytes moved per read while copying file data into a layer: big reads keep the syscall count
/// (and its share of the build) low; the buffer is per thread and reused across files, so it
/// costs no allocation or page faults per file.
const COPY_BUFFER: usize = 1 << 20;

thread_local! {
    static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Copies exactly `size` bytes of `data` into `out`; fewer is an error (the tar would be corrupt).
fn copy_data(mut data: impl Read, out: &mut impl Write, size: u64) -> io::Result<()> {
    if size == 0 {
        return Ok(());
    }
    BUFFER.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < COPY_BUFFER {
            buf.resize(COPY_BUFFER, 0);
        }
        let mut left = size;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = match data.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "file shrank while it was being written into the layer \
                             ({left} bytes short of the size in its tar header)"
                        ),
                    ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            out.write_all(&buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    })
}

/// Puts `path` into ustar's `name` (100 bytes) or `prefix` (155) + `/` + `name`; false if it
/// cannot fit.
fn set_ustar_path(h: &mut tar::Header, path: &[u8]) -> bool {
    let ustar = h.as_ustar_mut().expect("ustar header");
    if path.len() <= ustar.name.len() {
        ustar.name[..path.len()].copy_from_slice(path);
        return true;
    }
    // Split at the last '/' that leaves a name of at most 100 bytes and a prefix of at most 155.
    let split = path.iter().enumerate().rev().find(|&(i, &b)| {
        b == b'/' && i <= ustar.prefix.len() && path.len() - i - 1 <= ustar.name.len() && i > 0
    });
    match split {
        Some((i, _)) if path.len() - i - 1 > 0 => {
            ustar.prefix[..i].copy_from_slice(&path[..i]);
            ustar.name[..path.len() - i - 1].copy_from_slice(&path[i + 1..]);
            true
        }
        _ => false,
    }
}

/// One PAX record: `"<len> <key>=<value>\n"`, where `<len>` counts the whole record, itself
/// included.
fn record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len.to_string().len() + rest != len {
        len = len.to_string().len() + rest;
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_back(entries: &[Entry<'_>]) -> Vec<(Vec<u8>, Option<Vec<u8>>, u64)> {
        let mut tar = tar::Builder::new(Vec::new());
        for e in entries {
            append(&mut tar, e, io::repeat(b'x').take(e.size)).unwrap();
        }
        let bytes = tar.into_inner().unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path_bytes().into_owned(),
                    e.link_name_bytes().map(|l| l.into_owned()),
                    e.header().entry_size().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn record_lengths_count_themselves() {
        assert_eq!(record("path", b"abc"), b"12 path=abc\n");
        // 98 bytes without the length: two digits would make 100, which needs three: 101.
        let r = record("path", &[b'a'; 91]);
        assert_eq!(r.len(), 101);
        assert!(r.starts_with(b"101 path=aaa"));
    }

    #[test]
    fn long_and_binary_names_round_trip() {
        let long_dir = "d".repeat(150);
        let split = format!("{long_dir}/file.txt");
        let unsplittable = "n".repeat(300);
        let binary: Vec<u8> = [b"opt/conda/".as_slice(), &[0xff; 120]].concat();
        let long_link = "t".repeat(200);
        let entries = [
            Entry {
                kind: tar::EntryType::Regular,
                path: split.as_bytes(),
                link: None,
                mode: 0o644,
                size: 3,
                mtime: 0,
            },
            Entry {
                kind: tar::EntryType::Regular,
                path: unsplittable.as_bytes(),
                link: None,
                mode: 0o644,
                size: 0,
                mtime: 0,
            },
            Entry {
                kind: tar::EntryType::Regular,
                path: &binary,
                link: None,
                mode: 0o644,
                size: 1,
                mtime: 0,
            },
            Entry {
                kind: tar::EntryType::Symlink,
                path: b"l",
                link: Some(long_link.as_bytes()),
                mode: 0o777,
                size: 0,
                mtime: 0,
            },
        ];
        let back = read_back(&entries);
        assert_eq!(back[0].0, split.as_bytes());
        assert_eq!(back[1].0, unsplittable.as_bytes());
        assert_eq!(back[2].0, binary);
        assert_eq!(back[3].1.as_deref(), Some(long_link.as_bytes()));
    }
}
