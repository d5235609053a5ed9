//! Preprocessing kinds: splitting, scaling, combining.

mod apply;
mod concat;
mod fitted;
mod graph_features;
mod graph_split;
mod impute;
mod normalize;
mod onehot;
mod reshape;
mod split;
mod standardize;
mod tfidf;
mod tokenize;

/// Registers every preprocessing kind.
pub fn register_all(reg: &mut kiln_engine::Registry) {
    reg.register(split::Split);
    reg.register(standardize::Standardize);
    reg.register(concat::Concat);
    reg.register(reshape::Reshape);
    reg.register(normalize::Normalize);
    reg.register(onehot::OneHot);
    reg.register(impute::Impute);
    reg.register(apply::Apply);
    reg.register(graph_split::GraphSplit);
    reg.register(graph_features::GraphFeatures);
    reg.register(tokenize::Tokenize);
    reg.register(tfidf::Tfidf);
}
