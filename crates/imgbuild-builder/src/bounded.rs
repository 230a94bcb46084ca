//! Bounds on a YAML file before a parser sees it: its size, and how deeply it nests.
//!
//! serde_yaml's parser takes time quadratic in the nesting of flow collections (100 000 `[`
//! took 42 s) and reads any size it is given. Real environment files are a few KiB and nest
//! three or four levels; lock files are up to a few MiB. Reading stops at the size limit, and
//! one linear scan counts the nesting (flow brackets, block indentation and `- ` items), so a
//! hostile file fails at once with what limit it broke and where.

use std::io::Read as _;
use std::path::Path;

/// How much a kind of file may be.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_bytes: u64,
    pub max_depth: usize,
}

/// Environment files (`environment.yml`): conda's own exports of 500 packages are ~20 KiB.
pub(crate) const SPEC: Limits = Limits {
    max_bytes: 4 << 20,
    max_depth: 64,
};

/// Lock files: a conda-lock file of 750 packages on three platforms is 320 KiB.
pub(crate) const LOCK: Limits = Limits {
    max_bytes: 256 << 20,
    max_depth: 64,
};

/// Why a file was not parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TooMuch {
    Bytes { max: u64 },
    Depth { line: usize, max: usize },
}

impl std::fmt::Display for TooMuch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes { max } => write!(
                f,
                "larger than {} MiB, more than any real file of its kind; not read",
                max >> 20
            ),
            Self::Depth { line, max } => write!(
                f,
                "line {line} nests more than {max} levels deep; not parsed"
            ),
        }
    }
}

/// Reads `path` as text, refusing a file past `limits.max_bytes` without reading all of it, or
/// one that nests too deeply.
pub(crate) fn read(path: &Path, limits: Limits) -> std::io::Result<Result<String, TooMuch>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limits.max_bytes + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limits.max_bytes {
        return Ok(Err(TooMuch::Bytes {
            max: limits.max_bytes,
        }));
    }
    let text = String::from_utf8(bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    Ok(check_depth(&text, limits.max_depth).map(|()| text))
}

/// Fails if `text` nests deeper than `max` (linear time, see the module docs). Quoted strings
/// and comments are skipped; block nesting is the stack of indentations of open lines, where
/// each leading `- ` opens one more.
pub(crate) fn check_depth(text: &str, max: usize) -> Result<(), TooMuch> {
    let mut flow = 0usize;
    let mut indents: Vec<usize> = Vec::new();
    // Inside a quoted scalar that runs over lines: the quote.
    let mut quote: Option<u8> = None;
    for (n, line) in text.lines().enumerate() {
        let bytes = line.as_bytes();
        let mut i = 0;
        if quote.is_none() && flow == 0 {
            // Block structure: indentation, then `- ` markers, each a level.
            let indent = bytes.iter().take_while(|&&b| b == b' ').count();
            let rest = &bytes[indent..];
            if rest.is_empty() || rest[0] == b'#' {
                continue;
            }
            while indents.last().is_some_and(|&top| top >= indent) {
                indents.pop();
            }
            indents.push(indent);
            i = indent;
            while bytes.get(i) == Some(&b'-') && matches!(bytes.get(i + 1), Some(b' ')) {
                i += 2;
                while bytes.get(i) == Some(&b' ') {
                    i += 1;
                }
                indents.push(i);
            }
        }
        let too_deep = |depth: usize| (depth > max).then_some(TooMuch::Depth { line: n + 1, max });
        if let Some(e) = too_deep(indents.len() + flow) {
            return Err(e);
        }
        while i < bytes.len() {
            let b = bytes[i];
            match quote {
                Some(q) => {
                    if b == b'\\' && q == b'"' {
                        i += 1;
                    } else if b == q {
                        quote = None;
                    }
                }
                None => match b {
                    b'"' | b'\'' => quote = Some(b),
                    b'#' if i == 0 || bytes[i - 1] == b' ' => break,
                    b'[' | b'{' => {
                        flow += 1;
                        if let Some(e) = too_deep(indents.len() + flow) {
                            return Err(e);
                        }
                    }
                    b']' | b'}' => flow = flow.saturating_sub(1),
                    _ => {}
                },
            }
            i += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_files_pass_and_deep_ones_fail() {
        let real = "name: x\nchannels:\n  - conda-forge\ndependencies:\n  - python=3.10\n  - pip:\n      - \"torch==2.0\"  # [a]\n      - {name: x}\n";
        check_depth(real, 64).unwrap();
        let deep = "[".repeat(100_000);
        assert_eq!(
            check_depth(&deep, 64),
            Err(TooMuch::Depth { line: 1, max: 64 })
        );
        let dashes = format!("a:\n{}x\n", "- ".repeat(100));
        assert!(matches!(
            check_depth(&dashes, 64),
            Err(TooMuch::Depth { line: 2, .. })
        ));
        let indented: String = (0..100)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert!(check_depth(&indented, 64).is_err());
        // Brackets in quotes and comments do not count.
        check_depth(
            &format!("a: \"{}\"  # {}\n", "[".repeat(100), "{".repeat(100)),
            64,
        )
        .unwrap();
    }
}
