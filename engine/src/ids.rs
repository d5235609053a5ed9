//! Names that carry meaning: node ids, port names, pipeline names and
//! references between nodes. Each is checked when it is built, so the rest of
//! the engine never sees a malformed one.

use std::fmt;
use std::str::FromStr;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a valid {what}: use {rule}")]
pub struct BadName {
    /// The rejected text.
    pub text: String,
    /// What it was meant to be ("node id", "port name", …).
    pub what: &'static str,
    /// The rule it breaks, in words.
    pub rule: &'static str,
}

fn check(text: &str, what: &'static str, rule: &'static str, extra: char) -> Result<(), BadName> {
    let ok = !text.is_empty()
        && text.len() <= 128
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == extra);
    if ok {
        Ok(())
    } else {
        Err(BadName {
            text: text.to_string(),
            what,
            rule,
        })
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $rule:literal, $extra:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The name as written.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = BadName;
            fn from_str(text: &str) -> Result<Self, BadName> {
                check(text, $what, $rule, $extra)?;
                Ok($name(text.to_string()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = BadName;
            fn try_from(text: String) -> Result<Self, BadName> {
                check(&text, $what, $rule, $extra)?;
                Ok($name(text))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A node's id as the user wrote it in `nodes:` (`[a-z0-9_]+`).
    NodeId, "node id", "lowercase letters, digits and `_`", '_'
);
name_type!(
    /// A port name declared by a node kind (`[a-z0-9_]+`).
    PortName, "port name", "lowercase letters, digits and `_`", '_'
);
name_type!(
    /// A pipeline's name (`[a-z0-9_-]+`).
    PipelineName, "pipeline name", "lowercase letters, digits, `_` and `-`", '-'
);

impl PortName {
    /// A port name known to be valid (for kinds' static declarations).
    ///
    /// Kind authors use this in `spec()`; a bad static name is a bug in the
    /// kind, caught by the registry test, so it falls back to the raw text.
    pub fn new_static(text: &'static str) -> Self {
        PortName(text.to_string())
    }
}

/// A reference to another node's output as written in `inputs:`: `node`
/// (its default output) or `node.port`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PortRef {
    /// The producing node.
    pub node: NodeId,
    /// The port, or `None` for the node's default (first) output.
    pub port: Option<PortName>,
}

impl FromStr for PortRef {
    type Err = BadName;
    fn from_str(text: &str) -> Result<Self, BadName> {
        let bad = || BadName {
            text: text.to_string(),
            what: "reference",
            rule: "`node` or `node.port`",
        };
        let mut parts = text.splitn(2, '.');
        let node = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let port = match parts.next() {
            Some(p) => Some(p.parse().map_err(|_| bad())?),
            None => None,
        };
        Ok(PortRef { node, port })
    }
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.port {
            Some(port) => write!(f, "{}.{}", self.node, port),
            None => write!(f, "{}", self.node),
        }
    }
}

/// Suggests the closest of `candidates` to a misspelt `word`, if one is close.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= (word.len().max(c.len()) / 3).max(1) && *d > 0)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_rules() {
        assert!("split_1".parse::<NodeId>().is_ok());
        assert!("Split".parse::<NodeId>().is_err());
        assert!("a-b".parse::<NodeId>().is_err());
        assert!("iris-mlp".parse::<PipelineName>().is_ok());
        assert!("".parse::<NodeId>().is_err());
    }

    #[test]
    fn references_split_node_and_port() {
        let r: PortRef = "scale.fit".parse().unwrap();
        assert_eq!(r.node.as_str(), "scale");
        assert_eq!(r.port.unwrap().as_str(), "fit");
        assert!("a.b.c".parse::<PortRef>().is_err());
        assert!(".x".parse::<PortRef>().is_err());
    }

    #[test]
    fn suggestions_are_close_matches_only() {
        assert_eq!(did_you_mean("fitt", ["fit", "apply"]), Some("fit"));
        assert_eq!(did_you_mean("zzzzz", ["fit", "apply"]), None);
    }
}
