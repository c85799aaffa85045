//! Maps a path inside the config (`vrrp[1].vrid`) back to a line and column of the file text.

use toml::de::{DeTable, DeValue};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub col: usize,
}

impl Location {
    /// 1-based line and column (in characters) of a byte offset.
    pub fn of_offset(text: &str, offset: usize) -> Location {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location { line, col: before[line_start..].chars().count() + 1 }
    }
}

/// One step of a path into the config document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(&'static str),
    Index(usize),
}

/// The location of the deepest element of `path` present in `text` (a missing key points at
/// its table), or None if not even the first step is there.
pub fn locate(text: &str, path: &[Step]) -> Option<Location> {
    let root = DeTable::parse(text).ok()?;
    let mut found: Option<usize> = None;
    let mut current: Option<&DeValue> = None;
    let root_table = root.get_ref();
    for (depth, step) in path.iter().enumerate() {
        let next = match (step, depth, current) {
            (Step::Key(key), 0, _) => root_table.iter().find(|(k, _)| k.get_ref() == key).map(|(_, v)| v),
            (Step::Key(key), _, Some(value)) => value.get(*key),
            (Step::Index(index), _, Some(value)) => value.get(*index),
            _ => None,
        };
        match next {
            Some(spanned) => {
                found = Some(spanned.span().start);
                current = Some(spanned.get_ref());
            }
            None => break,
        }
    }
    found.map(|offset| Location::of_offset(text, offset))
}

/// One step of a path found in the text (owned: the keys are the file's, not the schema's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoundStep {
    Key(String),
    Index(usize),
}

/// The reverse of [`locate`]: the path of the deepest key or value at byte `offset` (a table
/// header gives the table's path), or empty if the text does not parse or nothing is there.
pub fn path_at(text: &str, offset: usize) -> Vec<FoundStep> {
    let Ok(root) = DeTable::parse(text) else { return Vec::new() };
    let mut best = Vec::new();
    let mut path = Vec::new();
    for (key, value) in root.get_ref().iter() {
        path.push(FoundStep::Key(key.get_ref().to_string()));
        deepest(value, key.span().contains(&offset), offset, &mut path, &mut best);
        path.pop();
    }
    best
}

/// Depth-first: `path` leads to `value`; the longest path at `offset` ends up in `best`.
fn deepest(
    value: &toml::Spanned<DeValue>,
    key_here: bool,
    offset: usize,
    path: &mut Vec<FoundStep>,
    best: &mut Vec<FoundStep>,
) {
    let span = value.span();
    let here = key_here || span.contains(&offset) || (span.is_empty() && span.start == offset);
    if here && path.len() > best.len() {
        *best = path.clone();
    }
    match value.get_ref() {
        DeValue::Table(table) => {
            for (key, child) in table.iter() {
                path.push(FoundStep::Key(key.get_ref().to_string()));
                deepest(child, key.span().contains(&offset), offset, path, best);
                path.pop();
            }
        }
        DeValue::Array(array) => {
            for (index, child) in array.iter().enumerate() {
                path.push(FoundStep::Index(index));
                deepest(child, false, offset, path, best);
                path.pop();
            }
        }
        _ => {}
    }
}
