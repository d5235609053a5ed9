//! The one module that names a YAML crate.
//!
//! It turns pipeline text into a [`Doc`]: a tree of plain values where every
//! node keeps the line and column it came from, mapping entries keep their
//! order, and duplicate keys are kept (validation reports them instead of the
//! parser silently keeping one). Nothing outside this module knows which YAML
//! parser is used, so it can be swapped here alone.
//!
//! serde_yaml (and its continuation yaml_serde) is not used: it reports a
//! position only for the first error and none for values it accepted, while
//! kiln reports every problem with its `line:col`. yaml-rust2's marked event
//! stream gives both.

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Deepest nesting accepted; deeper documents are refused as malformed.
const MAX_DEPTH: usize = 128;
/// Most values a document may expand to (guards against alias bombs).
const MAX_VALUES: usize = 2_000_000;

/// A position in the source text: 1-based line and column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    /// Line, counted from 1.
    pub line: usize,
    /// Column, counted from 1.
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        Pos {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

/// A YAML value with the position where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Doc {
    /// Where the value starts in the source.
    pub pos: Pos,
    /// The value itself.
    pub data: Data,
}

/// The shape of a [`Doc`] value.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// `~`, `null` or an empty value.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// Any other scalar, including every quoted one.
    Str(String),
    /// A sequence.
    Seq(Vec<Doc>),
    /// A mapping, in source order, duplicates kept.
    Map(Vec<(Doc, Doc)>),
}

/// A document that is not well-formed YAML.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where the parser gave up.
    pub pos: Pos,
    /// What it found wrong, in the parser's words.
    pub message: String,
}

impl Doc {
    /// A short word for the value's type, as users would say it.
    pub fn type_name(&self) -> &'static str {
        match self.data {
            Data::Null => "null",
            Data::Bool(_) => "a boolean",
            Data::Int(_) => "an integer",
            Data::Float(_) => "a number",
            Data::Str(_) => "a string",
            Data::Seq(_) => "a list",
            Data::Map(_) => "a mapping",
        }
    }

    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match &self.data {
            Data::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Plain JSON of the value. Mapping keys become strings; a later
    /// duplicate key wins (validation has reported it already).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.data {
            Data::Null => J::Null,
            Data::Bool(b) => J::Bool(*b),
            Data::Int(i) => J::from(*i),
            Data::Float(x) => serde_json::Number::from_f64(*x).map_or(J::Null, J::Number),
            Data::Str(s) => J::String(s.clone()),
            Data::Seq(items) => J::Array(items.iter().map(Doc::to_json).collect()),
            Data::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.key_text(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// The text of a mapping key (non-string keys are shown as YAML would).
    pub fn key_text(&self) -> String {
        match &self.data {
            Data::Str(s) => s.clone(),
            Data::Null => "null".into(),
            Data::Bool(b) => b.to_string(),
            Data::Int(i) => i.to_string(),
            Data::Float(x) => x.to_string(),
            Data::Seq(_) | Data::Map(_) => self.to_json().to_string(),
        }
    }
}

/// Parses one YAML document. An empty text is a `Null` document.
pub fn parse(text: &str) -> Result<Doc, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, true) {
        return Err(SyntaxError {
            pos: (*e.marker()).into(),
            message: e.info().to_string(),
        });
    }
    if let Some(err) = builder.error {
        return Err(err);
    }
    match builder.docs.len() {
        0 => Ok(Doc {
            pos: Pos { line: 1, col: 1 },
            data: Data::Null,
        }),
        1 => Ok(builder.docs.remove(0)),
        _ => Err(SyntaxError {
            pos: builder.second_doc.unwrap_or_default(),
            message: "the file holds several YAML documents (separated by `---`); a pipeline is one document".into(),
        }),
    }
}

/// Parses one scalar as YAML would type it (`0.1` a number, `true` a boolean,
/// `[1, 2]` a list); used for `--set params.NAME=VALUE`.
pub fn parse_value(text: &str) -> Result<Doc, SyntaxError> {
    parse(text)
}

/// Renders a JSON value as a single-line YAML flow value for messages.
pub fn show(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    docs: Vec<Doc>,
    anchors: HashMap<usize, Doc>,
    n_values: usize,
    second_doc: Option<Pos>,
    error: Option<SyntaxError>,
}

enum Frame {
    Seq(Pos, usize, Vec<Doc>),
    Map(Pos, usize, Vec<(Doc, Doc)>, Option<Doc>),
}

impl Builder {
    fn fail(&mut self, pos: Pos, message: &str) {
        if self.error.is_none() {
            self.error = Some(SyntaxError {
                pos,
                message: message.to_string(),
            });
        }
    }

    /// Adds a finished value; `weight` is how many values it stands for
    /// (1, or the size of an alias's expansion).
    fn push_value(&mut self, value: Doc, anchor: usize, weight: usize) {
        self.n_values += weight;
        if self.n_values > MAX_VALUES {
            self.fail(
                value.pos,
                "the document expands to too many values (an alias bomb?)",
            );
            return;
        }
        if anchor > 0 {
            self.anchors.insert(anchor, value.clone());
        }
        match self.stack.last_mut() {
            None => {
                if !self.docs.is_empty() && self.second_doc.is_none() {
                    self.second_doc = Some(value.pos);
                }
                self.docs.push(value);
            }
            Some(Frame::Seq(_, _, items)) => items.push(value),
            Some(Frame::Map(_, _, entries, key)) => match key.take() {
                None => *key = Some(value),
                Some(k) => entries.push((k, value)),
            },
        }
    }
}

fn count(value: &Doc) -> usize {
    match &value.data {
        Data::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        Data::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| count(k) + count(v))
                .sum::<usize>()
        }
        _ => 1,
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let pos = Pos::from(mark);
        match ev {
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _)
                if self.stack.len() >= MAX_DEPTH =>
            {
                let _ = anchor;
                self.fail(pos, "the document is nested too deeply");
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq(pos, anchor, Vec::new())),
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map(pos, anchor, Vec::new(), None))
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq(pos, anchor, items)) => self.push_value(
                    Doc {
                        pos,
                        data: Data::Seq(items),
                    },
                    anchor,
                    1,
                ),
                Some(Frame::Map(pos, anchor, entries, _)) => self.push_value(
                    Doc {
                        pos,
                        data: Data::Map(entries),
                    },
                    anchor,
                    1,
                ),
                None => self.fail(pos, "unbalanced collection"),
            },
            Event::Scalar(text, style, anchor, tag) => {
                let data = scalar(text, style, tag.as_ref());
                self.push_value(Doc { pos, data }, anchor, 1)
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(mut value) => {
                    value.pos = pos;
                    let weight = count(&value);
                    self.push_value(value, 0, weight)
                }
                None => self.fail(pos, "alias to an unknown anchor"),
            },
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

fn scalar(text: String, style: TScalarStyle, tag: Option<&Tag>) -> Data {
    if style != TScalarStyle::Plain {
        return Data::Str(text);
    }
    if let Some(tag) = tag {
        if tag.handle == "tag:yaml.org,2002:" && tag.suffix == "str" {
            return Data::Str(text);
        }
    }
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Data::Null,
        "true" | "True" | "TRUE" => return Data::Bool(true),
        "false" | "False" | "FALSE" => return Data::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" => return Data::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Data::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Data::Float(f64::NAN),
        _ => {}
    }
    if let Some(i) = parse_int(&text) {
        return Data::Int(i);
    }
    let looks_numeric = text
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-' | '_'));
    if looks_numeric && text.chars().any(|c| c.is_ascii_digit()) {
        if let Ok(x) = text.replace('_', "").parse::<f64>() {
            return Data::Float(x);
        }
    }
    Data::Str(text)
}

fn parse_int(text: &str) -> Option<i64> {
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let value = if let Some(hex) = digits.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = digits.strip_prefix("0o") {
        i64::from_str_radix(oct, 8).ok()?
    } else if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
        digits.parse::<i64>().ok()?
    } else {
        return None;
    };
    Some(sign * value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_are_typed_like_yaml() {
        let doc = parse("a: 1\nb: 0.5\nc: true\nd: hello\ne: '1'\nf: ~\ng: 1e-3\n").unwrap();
        let json = doc.to_json();
        assert_eq!(json["a"], 1);
        assert_eq!(json["b"], 0.5);
        assert_eq!(json["c"], true);
        assert_eq!(json["d"], "hello");
        assert_eq!(json["e"], "1");
        assert!(json["f"].is_null());
        assert_eq!(json["g"], 0.001);
    }

    #[test]
    fn positions_are_one_based() {
        let doc = parse("top:\n  key: value\n").unwrap();
        let Data::Map(entries) = &doc.data else {
            panic!("not a map")
        };
        let Data::Map(inner) = &entries[0].1.data else {
            panic!("not a map")
        };
        assert_eq!(inner[0].0.pos, Pos { line: 2, col: 3 });
        assert_eq!(inner[0].1.pos, Pos { line: 2, col: 8 });
    }

    #[test]
    fn duplicate_keys_are_kept() {
        let doc = parse("a: 1\na: 2\n").unwrap();
        let Data::Map(entries) = &doc.data else {
            panic!("not a map")
        };
        assert_eq!(entries.len(), 2);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for text in [
            "a: [1, 2",
            "a: b: c",
            "- a\nb: c",
            "{{{{{{",
            "a: *nope",
            "a: 1\n---\nb: 2",
        ] {
            assert!(parse(text).is_err(), "{text:?} parsed");
        }
        let deep = "[".repeat(10_000);
        assert!(parse(&deep).is_err());
    }
}
