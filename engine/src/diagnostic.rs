//! Problems found in a pipeline, each with its place, and their rendering.
//!
//! A diagnostic renders as one line in the user's words:
//! ``file:line:col: error: node `fit`: input `train` refers to `scale.fitt`, which does not exist (did you mean `scale.fit`?)``

use std::fmt;

use crate::yaml::Pos;

/// Problems printed at most; the count of the rest follows.
const MAX_SHOWN: usize = 200;

/// One problem in a pipeline file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Diagnostic {
    /// Where it is, if known.
    pub pos: Option<Pos>,
    /// The node it concerns, if any.
    pub node: Option<String>,
    /// What is wrong, as a sentence fragment (lowercase, no trailing period).
    pub message: String,
}

impl Diagnostic {
    /// A problem at `pos`.
    pub fn at(pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            pos: Some(pos),
            node: None,
            message: message.into(),
        }
    }

    /// Attributes the problem to a node.
    pub fn in_node(mut self, node: impl Into<String>) -> Self {
        self.node = Some(node.into());
        self
    }
}

/// Every problem found in one file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics {
    /// The file as the user named it.
    pub file: String,
    /// The problems, in file order.
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// An empty list for `file`.
    pub fn new(file: impl Into<String>) -> Self {
        Diagnostics {
            file: file.into(),
            items: Vec::new(),
        }
    }

    /// Adds a problem.
    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    /// Whether no problem was found.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Sorts problems by position (those without one last), keeping the
    /// order of equal ones, and drops repeats.
    pub fn sort(&mut self) {
        let mut seen = std::collections::HashSet::new();
        self.items.retain(|d| seen.insert(d.clone()));
        self.items
            .sort_by_key(|d| d.pos.map_or((usize::MAX, usize::MAX), |p| (p.line, p.col)));
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in self.items.iter().take(MAX_SHOWN) {
            match d.pos {
                Some(pos) => write!(f, "{}:{}: error: ", self.file, pos)?,
                None => write!(f, "{}: error: ", self.file)?,
            }
            if let Some(node) = &d.node {
                write!(f, "node `{node}`: ")?;
            }
            writeln!(f, "{}", d.message)?;
        }
        let n = self.items.len();
        if n > MAX_SHOWN {
            writeln!(f, "… and {} more", n - MAX_SHOWN)?;
        }
        write!(
            f,
            "{} invalid: {n} problem{} found",
            self.file,
            if n == 1 { "" } else { "s" }
        )
    }
}
