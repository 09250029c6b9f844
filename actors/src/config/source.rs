//! Where each key of a config file is: the line and column of every mapping key and sequence
//! item, by its path (`workers[2].health_check.interval`), so that problems found after
//! parsing (a duplicate id, a dependency cycle, a missing program) point into the file as
//! serde's own errors do. Built by an event parser (`yaml-rust2`), whose first pass also
//! bounds the nesting depth before the real parse: deeply nested YAML costs libyaml quadratic
//! time.
//!
//! The first pass, on every load, keeps only the depth and the keys under `master:` (what
//! path resolution asks about). The positions of everything else are needed only when
//! something is wrong, so they are found then, by a second pass over the kept text: with
//! 1,000 workers the full map costs about as much as the parse itself, on the way to the
//! first child's exec.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// The deepest nesting a config may have (a real one needs fewer than 10 levels).
pub const MAX_DEPTH: usize = 64;

type Positions = HashMap<String, (usize, usize)>;

/// Line and column (1-based) of each key path of a file.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    /// The text, to find the positions in when one is asked for.
    text: Option<Arc<str>>,
    /// The keys under `master:`, found by the first pass.
    master: Positions,
    /// Every key, found at the first question about one outside `master:`.
    all: OnceLock<Positions>,
}

/// Two configs are equal by their contents, wherever they were written.
impl PartialEq for SourceMap {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Why a file was refused before its shape was looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

fn too_deep(line: usize, column: usize) -> SourceError {
    SourceError {
        line,
        column,
        message: format!("nested more than {MAX_DEPTH} levels deep; a config never needs that"),
    }
}

/// One pass over `text`: positions of every key (`all`) or only of those under `master:`.
fn walk(text: &str, all: bool) -> Result<Positions, SourceError> {
    let mut walker = Walker {
        all,
        ..Walker::default()
    };
    let mut parser = Parser::new_from_str(text);
    let loaded = parser.load(&mut walker, false);
    if let Some(error) = walker.too_deep {
        return Err(error);
    }
    // The scanner's own bound on `[`/`{` nesting (255 levels) is the same refusal.
    if let Err(e) = loaded {
        if e.info().contains("recursion limit") {
            return Err(too_deep(e.marker().line(), e.marker().col() + 1));
        }
    }
    Ok(walker.positions)
}

impl SourceMap {
    /// Maps `text`. A syntax error gives an empty map (serde reports it); nesting deeper than
    /// [`MAX_DEPTH`] is an error.
    ///
    /// # Errors
    /// The depth bound, with the position where it was passed.
    pub fn of(text: &str) -> Result<Self, SourceError> {
        Self::of_shared(text.into())
    }

    /// [`Self::of`] for text already shared.
    ///
    /// # Errors
    /// As [`Self::of`].
    pub fn of_shared(text: Arc<str>) -> Result<Self, SourceError> {
        Ok(Self {
            master: walk(&text, false)?,
            text: Some(text),
            all: OnceLock::new(),
        })
    }

    fn all(&self) -> &Positions {
        self.all.get_or_init(|| {
            self.text
                .as_deref()
                .and_then(|text| walk(text, true).ok())
                .unwrap_or_default()
        })
    }

    fn get(&self, path: &str) -> Option<(usize, usize)> {
        if path == "master" || path.starts_with("master.") {
            return self.master.get(path).copied();
        }
        self.all().get(path).copied()
    }

    /// Whether the file writes exactly the key `path` (`master.run_directory`).
    pub fn has(&self, path: &str) -> bool {
        self.get(path).is_some()
    }

    /// The position of `path`, or of the nearest enclosing key that is in the file (a
    /// required key that is missing points at its worker).
    pub fn find(&self, path: &str) -> Option<(usize, usize)> {
        let mut path = path;
        loop {
            // A worker is where its `id` is.
            if path.ends_with(']') {
                if let Some(p) = self.get(&format!("{path}.id")) {
                    return Some(p);
                }
            }
            if let Some(p) = self.get(path) {
                return Some(p);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

enum Frame {
    Map { key: Option<String> },
    Seq { index: usize },
}

#[derive(Default)]
struct Walker {
    /// Every key, or only those under the top-level `master:`.
    all: bool,
    stack: Vec<Frame>,
    positions: Positions,
    too_deep: Option<SourceError>,
}

impl Walker {
    /// The path of the node about to be read.
    fn path(&self) -> String {
        let mut out = String::new();
        for frame in &self.stack {
            match frame {
                Frame::Map { key: Some(k) } => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Frame::Map { key: None } => {}
                Frame::Seq { index } => {
                    out.push_str(&format!("[{index}]"));
                }
            }
        }
        out
    }

    fn record(&mut self, mark: Marker) {
        if !self.all {
            let under_master = match self.stack.first() {
                Some(Frame::Map { key: Some(k) }) => k == "master",
                _ => false,
            };
            if !under_master {
                return;
            }
        }
        let path = self.path();
        self.positions
            .entry(path)
            .or_insert((mark.line(), mark.col() + 1));
    }

    /// A value (scalar or collection) of the current frame is complete.
    fn value_done(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key }) => *key = None,
            Some(Frame::Seq { index }) => *index += 1,
            None => {}
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.too_deep.is_some() {
            return;
        }
        match event {
            Event::Scalar(value, ..) => {
                if let Some(Frame::Map { key: key @ None }) = self.stack.last_mut() {
                    *key = Some(value);
                    self.record(mark);
                } else {
                    self.record(mark);
                    self.value_done();
                }
            }
            Event::Alias(_) => {
                self.record(mark);
                self.value_done();
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                if matches!(self.stack.last(), Some(Frame::Map { key: None })) {
                    // A collection as a key: not a config's shape; serde says so.
                    self.stack.push(Frame::Map {
                        key: Some("?".into()),
                    });
                }
                self.record(mark);
                if self.stack.len() >= MAX_DEPTH {
                    self.too_deep = Some(too_deep(mark.line(), mark.col() + 1));
                    return;
                }
                self.stack
                    .push(if matches!(event, Event::MappingStart(..)) {
                        Frame::Map { key: None }
                    } else {
                        Frame::Seq { index: 0 }
                    });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.value_done();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_items_have_their_positions() {
        let text = "master:\n  stop_timeout: 5s\nworkers:\n  - id: a\n    type: module\n  - {id: b, health_check: {interval: 1s}}\n";
        let map = SourceMap::of(text).unwrap();
        assert_eq!(map.find("master.stop_timeout"), Some((2, 3)));
        assert_eq!(map.find("workers[0].type"), Some((5, 5)));
        assert_eq!(map.find("workers[1].health_check.interval"), Some((6, 28)));
        // A key that is not there: the nearest one that is.
        assert_eq!(map.find("workers[1].module_name"), Some((6, 6)));
        assert_eq!(map.find("workers[0].restart.policy"), Some((4, 5)));
    }

    #[test]
    fn deep_nesting_is_refused_at_once() {
        let text = format!("{}1{}", "[".repeat(20_000), "]".repeat(20_000));
        let e = SourceMap::of(&text).unwrap_err();
        assert!(e.message.contains("nested more than 64"), "{e:?}");
        assert_eq!(e.line, 1);
        // Block nesting is bounded by the walker itself.
        let mut text = String::new();
        for depth in 0..100 {
            text.push_str(&format!("{}k{depth}:\n", "  ".repeat(depth)));
        }
        let e = SourceMap::of(&text).unwrap_err();
        assert!((MAX_DEPTH..=MAX_DEPTH + 1).contains(&e.line), "{e:?}");
    }
}
