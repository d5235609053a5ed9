//! A value and where it was written, and the problems reported about one:
//! what every part of the format's reading shares.

use crate::diagnostic::Diagnostic;
use crate::ids::did_you_mean;
use crate::yaml::{Data, Doc, Pos};

/// A value and where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Where it starts.
    pub pos: Pos,
}

/// `what should be expected, but it is …`.
pub fn type_error(doc: &Doc, what: &str, expected: &str) -> Diagnostic {
    let found = match &doc.data {
        Data::Seq(_) | Data::Map(_) | Data::Null => doc.type_name().to_string(),
        Data::Str(s) => format!("the string `{s}`"),
        _ => format!("`{}`", doc.key_text()),
    };
    Diagnostic::at(
        doc.pos,
        format!("{what} should be {expected}, but it is {found}"),
    )
}

/// An unknown key, with the nearest known one or the list.
pub fn unknown_key(pos: Pos, key: &str, what: &str, known: &[&str]) -> Diagnostic {
    let hint = match did_you_mean(key, known.iter().copied()) {
        Some(m) => format!(" (did you mean `{m}`?)"),
        None => format!(" (expected one of: {})", known.join(", ")),
    };
    Diagnostic::at(pos, format!("unknown {what} `{key}`{hint}"))
}
