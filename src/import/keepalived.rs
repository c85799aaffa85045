//! keepalived.conf syntax: a tokenizer and parser into a small tree of statements with their
//! file and line, read the way keepalived's own parser (lib/parser.c) reads it.
//!
//! What keepalived does, and this parser with it:
//! - `!` and `#` start a comment anywhere outside double quotes (`\#`, `\!` escape them);
//! - a line is split at every `{` and `}` outside quotes, so `vrrp_instance VI_1 { state MASTER }`
//!   is four lines: `vrrp_instance VI_1`, `{`, `state MASTER`, `}`;
//! - words are separated by blanks; a word that starts with `"` runs to the next `"`;
//! - `include PATTERN` (also `includer`, `includem`, ... variants) is replaced by the text of
//!   every file the glob matches, sorted, relative to the directory of the including file; it
//!   works at any depth, even inside a block.
//!
//! The tree records the block each statement opens, as the operator wrote it. Where keepalived
//! would read it differently (an unknown keyword's block), the mapping says so.
//! No I/O here: included files come from a [`Loader`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a statement is: the file (as given, or as the include resolved it) and the 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    pub file: Arc<Path>,
    pub line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One keyword line with its words, and the block it opens if a `{` follows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stmt {
    pub loc: Loc,
    /// The keyword and its arguments, quotes removed.
    pub words: Vec<String>,
    pub block: Option<Block>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub stmts: Vec<Stmt>,
    /// Where the closing `}` is (None: the file ended first).
    pub close: Option<Loc>,
}

impl Stmt {
    pub fn keyword(&self) -> &str {
        &self.words[0]
    }
    pub fn args(&self) -> &[String] {
        &self.words[1..]
    }
    /// The first argument, if any.
    pub fn arg(&self) -> Option<&str> {
        self.words.get(1).map(String::as_str)
    }
    /// The statements of the block (none without a block).
    pub fn children(&self) -> &[Stmt] {
        self.block.as_ref().map_or(&[], |b| &b.stmts)
    }
}

/// A problem the syntax itself has (unbalanced braces, quotes, includes that match nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxWarning {
    pub loc: Loc,
    pub message: String,
}

/// Reads files and expands include globs; the only I/O the parser needs.
pub trait Loader {
    fn read(&mut self, path: &Path) -> std::io::Result<String>;
    /// The files an absolute glob pattern matches, sorted (as glob(3) sorts them).
    fn glob(&mut self, pattern: &str) -> Result<Vec<PathBuf>, String>;
}

#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub stmts: Vec<Stmt>,
    pub warnings: Vec<SyntaxWarning>,
    /// Every file read, the root first.
    pub files: Vec<PathBuf>,
}

/// Includes nested deeper than this are cut off (a file including itself).
const MAX_INCLUDE_DEPTH: usize = 16;

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Words(Vec<String>),
    Open,
    Close,
}

/// Parses the root file (read through `loader`) and everything it includes.
pub fn parse(root: &Path, loader: &mut dyn Loader) -> std::io::Result<Parsed> {
    let text = loader.read(root)?;
    let mut lexer = Lexer { loader, pieces: Vec::new(), warnings: Vec::new(), files: vec![root.to_path_buf()] };
    lexer.file(root, &text, 0);
    let Lexer { pieces, mut warnings, files, .. } = lexer;
    let mut at = 0;
    let stmts = build(&pieces, &mut at, None, &mut warnings).stmts;
    Ok(Parsed { stmts, warnings, files })
}

/// Parses one text with no includes possible beyond what `loader` holds (for tests and tools).
pub fn parse_text(path: &Path, text: &str) -> Parsed {
    struct Nothing(String);
    impl Loader for Nothing {
        fn read(&mut self, _: &Path) -> std::io::Result<String> {
            Ok(std::mem::take(&mut self.0))
        }
        fn glob(&mut self, _: &str) -> Result<Vec<PathBuf>, String> {
            Ok(Vec::new())
        }
    }
    parse(path, &mut Nothing(text.to_string())).expect("in-memory text")
}

struct Lexer<'a> {
    loader: &'a mut dyn Loader,
    pieces: Vec<(Piece, Loc)>,
    warnings: Vec<SyntaxWarning>,
    files: Vec<PathBuf>,
}

impl Lexer<'_> {
    fn warn(&mut self, loc: &Loc, message: String) {
        self.warnings.push(SyntaxWarning { loc: loc.clone(), message });
    }

    fn file(&mut self, path: &Path, text: &str, depth: usize) {
        let file: Arc<Path> = Arc::from(path);
        for (i, raw) in text.lines().enumerate() {
            let loc = Loc { file: file.clone(), line: i + 1 };
            let (line, unterminated) = decomment(raw);
            if unterminated {
                self.warn(&loc, "unterminated `\"`: keepalived reads the rest of the line as one word".into());
            }
            if line.is_empty() {
                continue;
            }
            if let Some(pattern) = include_pattern(&line) {
                self.include(path, pattern, &loc, depth);
                continue;
            }
            if line.starts_with('@') || line.starts_with('$') || line.starts_with("~SEQ") || line.starts_with("~LST") {
                self.warn(
                    &loc,
                    format!(
                        "`{}`: keepalived's conditional lines, parameters and sequences are not expanded by the importer; this line is skipped: expand it by hand (or convert each node's expanded config, `keepalived -t` ... --config-id)",
                        line.split_whitespace().next().unwrap_or_default()
                    ),
                );
                continue;
            }
            self.split(&line, &loc);
        }
    }

    fn include(&mut self, including: &Path, pattern: &str, loc: &Loc, depth: usize) {
        if depth >= MAX_INCLUDE_DEPTH {
            self.warn(
                loc,
                format!("include `{pattern}` nests deeper than {MAX_INCLUDE_DEPTH} files (a loop?); not followed"),
            );
            return;
        }
        let dir = including.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let absolute =
            normalize(&if Path::new(pattern).is_absolute() { PathBuf::from(pattern) } else { dir.join(pattern) });
        let matches = match self.loader.glob(&absolute.to_string_lossy()) {
            Ok(matches) => matches,
            Err(e) => {
                self.warn(loc, format!("include `{pattern}`: {e}; keepalived skips it"));
                return;
            }
        };
        if matches.is_empty() {
            self.warn(
                loc,
                format!("include `{pattern}` matches no file (looked for {}); keepalived skips it", absolute.display()),
            );
        }
        for path in matches {
            match self.loader.read(&path) {
                Ok(text) => {
                    self.files.push(path.clone());
                    self.file(&path, &text, depth + 1);
                }
                Err(e) => self.warn(
                    loc,
                    format!("include `{pattern}`: cannot read {}: {e}; keepalived skips it", path.display()),
                ),
            }
        }
    }

    /// Splits a decommented line at braces outside quotes and into words.
    fn split(&mut self, line: &str, loc: &Loc) {
        let mut rest = line;
        while !rest.is_empty() {
            let brace = brace_outside_quotes(rest);
            match brace {
                Some(0) => {
                    let piece = if rest.starts_with('{') { Piece::Open } else { Piece::Close };
                    self.pieces.push((piece, loc.clone()));
                    rest = rest[1..].trim_start();
                }
                Some(i) => {
                    self.pieces.push((Piece::Words(words(&rest[..i])), loc.clone()));
                    rest = &rest[i..];
                }
                None => {
                    self.pieces.push((Piece::Words(words(rest)), loc.clone()));
                    rest = "";
                }
            }
        }
    }
}

/// `a/b/../c` as `a/c`, `./x` as `x`: readable names in messages (lexical, like keepalived's
/// messages after its chdir).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `include FILE`, `includer FILE`, ... : the pattern (the rest of the line, which may hold blanks).
fn include_pattern(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("include")?;
    let rest = match rest.chars().next()? {
        c if c.is_whitespace() => rest,
        'r' | 'm' | 'w' | 'b' | 'a' if rest[1..].starts_with(char::is_whitespace) => &rest[1..],
        _ => return None,
    };
    Some(rest.trim())
}

/// keepalived's decomment(): drops comments and leading/trailing blanks; `\#` and `\!` outside
/// quotes become `#` and `!`. Returns the line and whether a quote was left open.
fn decomment(raw: &str) -> (String, bool) {
    let mut out = String::with_capacity(raw.len());
    let mut quote = false;
    let mut chars = raw.trim_start_matches([' ', '\t']).chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quote = !quote;
                out.push(c);
            }
            '\\' if !quote && matches!(chars.peek(), Some('#' | '!')) => out.push(chars.next().unwrap_or_default()),
            '\\' => {
                out.push(c);
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            '!' | '#' if !quote => break,
            _ => out.push(c),
        }
    }
    let trimmed = out.trim_end_matches([' ', '\t', '\r']).to_string();
    (trimmed, quote)
}

fn brace_outside_quotes(text: &str) -> Option<usize> {
    let mut quote = false;
    for (i, c) in text.char_indices() {
        match c {
            '"' => quote = !quote,
            '{' | '}' if !quote => return Some(i),
            _ => {}
        }
    }
    None
}

/// Words separated by blanks; one starting with `"` runs to the next `"` (keepalived's alloc_strvec).
fn words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            words.push(quoted[..end].to_string());
            rest = quoted.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find([' ', '\t', '"']).unwrap_or(rest.len());
            words.push(rest[..end].to_string());
            rest = &rest[end..];
        }
        rest = rest.trim_start();
    }
    words
}

/// Builds the tree from the pieces starting at `at`, up to the `}` that closes `opened`.
fn build(pieces: &[(Piece, Loc)], at: &mut usize, opened: Option<&Loc>, warnings: &mut Vec<SyntaxWarning>) -> Block {
    let mut stmts: Vec<Stmt> = Vec::new();
    // Whether the last statement may still take a block (nothing came between it and a `{`).
    let mut open_for_last = false;
    while *at < pieces.len() {
        let (piece, loc) = &pieces[*at];
        *at += 1;
        match piece {
            Piece::Words(words) if words.is_empty() => {}
            Piece::Words(words) => {
                stmts.push(Stmt { loc: loc.clone(), words: words.clone(), block: None });
                open_for_last = true;
            }
            Piece::Open => {
                if open_for_last && let Some(last) = stmts.last_mut() {
                    last.block = Some(build(pieces, at, Some(loc), warnings));
                    open_for_last = false;
                } else {
                    warnings.push(SyntaxWarning {
                        loc: loc.clone(),
                        message: "`{` follows no keyword; keepalived ignores it and reads what follows at this level"
                            .into(),
                    });
                }
            }
            Piece::Close => {
                if opened.is_some() {
                    return Block { stmts, close: Some(loc.clone()) };
                }
                warnings.push(SyntaxWarning {
                    loc: loc.clone(),
                    message: "extra `}` closes no block; keepalived ignores it".into(),
                });
                open_for_last = false;
            }
        }
    }
    if let Some(opened) = opened {
        warnings.push(SyntaxWarning {
            loc: opened.clone(),
            message: "this `{` is never closed: the file ends inside the block".into(),
        });
    }
    Block { stmts, close: None }
}
