//! The registry of node kinds. Kinds are registered explicitly, one line
//! each, by the `nodes` crate; the engine only looks them up by name.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::kind::{KindRef, KindSpec, NodeKind};

/// A registered kind: the implementation and its spec, read once.
#[derive(Clone)]
pub struct Registered {
    /// The implementation.
    pub kind: KindRef,
    /// What it declares.
    pub spec: Arc<KindSpec>,
}

/// Every node kind a build knows, by `category.name`.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Registered>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Registers a kind under its spec's name; a later registration of the same name replaces it.
    pub fn register(&mut self, kind: impl NodeKind + 'static) {
        let spec = Arc::new(kind.spec());
        self.kinds.insert(
            spec.name,
            Registered {
                kind: Arc::new(kind),
                spec,
            },
        );
    }

    /// The kind of that name.
    pub fn get(&self, name: &str) -> Option<&Registered> {
        self.kinds.get(name)
    }

    /// All kinds, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Registered> {
        self.kinds.values()
    }

    /// All kind names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }

    /// How many kinds are registered.
    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }
}
