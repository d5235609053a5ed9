//! `preprocess.graph_features`: node features from how each node connects —
//! for graphs whose classes are roles or types rather than communities.

use candle_core::{Device, Tensor};
use kiln_engine::{
    Config, InputSpec, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext,
    Settings, ValueType,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::Deserialize;

use crate::graph::Graph;
use crate::sparse::Csr;

/// Gives nodes structural features.
pub struct GraphFeatures;

const DOC: &str = "Node features from the graph's structure, for graphs whose classes are defined by how nodes connect (cell types in a connectome, roles in a network) rather than by communities:
`spectral`: the adjacency spectral embedding, each node's coordinates on the `dim` leading singular vectors of the (weighted) adjacency matrix scaled by the singular values' square roots (U√S; for a directed graph also V√S, how the node is reached); computed by randomized SVD over the sparse edges (seeded by the node), so it scales with the edges.
`profile`: each node's connection weights to every node (its adjacency row; for a directed graph also its column, the weights it receives) — what logistic regression on the adjacency rows reads.
`degree`: the summed weights of each node's edges (out and in for a directed graph).
With `log_weights`, a weight w counts as ln(1 + w) (synapse counts and traffic span orders of magnitude). With `keep`, the graph's own features come first (given columns, say); else they are replaced.";

kiln_engine::choices! {
    /// A kind of structural feature.
    pub enum Structure {
        /// The adjacency spectral embedding.
        Spectral = "spectral",
        /// The adjacency row (and column, directed).
        Profile = "profile",
        /// Summed edge weights.
        Degree = "degree",
    }
}

/// What `preprocess.graph_features` reads from `with:`.
#[derive(Config, Deserialize)]
struct GraphFeatureSettings {
    /// which features, in order: `spectral`, `profile`, `degree`
    #[setting(default = ["spectral"])]
    features: Vec<Structure>,
    /// `spectral`: singular vectors per side
    #[setting(default = 8, min = 1, max = 256)]
    dim: usize,
    /// count an edge of weight w as ln(1 + w)
    #[setting(default = true)]
    log_weights: bool,
    /// put the graph's own features first, instead of replacing them
    #[setting(default = false)]
    keep: bool,
}

/// `profile` gives 2·n values per node for n nodes: beyond this, too many.
const MAX_PROFILE_NODES: usize = 10_000;
/// Extra directions searched beyond `dim`, and subspace iterations: enough
/// for the leading singular vectors to settle (Halko et al. 2011).
const OVERSAMPLE: usize = 10;
const POWER_ITERATIONS: usize = 8;

impl NodeKind for GraphFeatures {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "preprocess.graph_features",
            version: 1,
            doc: DOC,
            inputs: vec![InputSpec::required("graph", ValueType::Graph, "the graph")],
            outputs: vec![OutputSpec::new(
                "graph",
                ValueType::Graph,
                "the same graph with structural node features",
            )],
            settings: GraphFeatureSettings::specs(),
            side_effects: false,
        }
    }

    fn check(&self, settings: &Settings) -> Vec<(String, String)> {
        match settings.read_checked::<GraphFeatureSettings>() {
            Ok(s) if s.features.is_empty() => vec![(
                "features".into(),
                "list at least one: `spectral`, `profile` or `degree`".into(),
            )],
            Ok(_) => Vec::new(),
            Err(problems) => problems,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let s: GraphFeatureSettings = ctx.settings().read()?;
        let mut graph = Graph::from_value(ctx.input("graph")?)?;
        let n = graph.nodes();
        let adjacency = adjacency(&graph, s.log_weights);
        let mut blocks: Vec<(Vec<f32>, Vec<String>)> = Vec::new();
        if s.keep {
            let own = graph
                .x
                .to_device(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            blocks.push((own, graph.feature_names.clone()));
        }
        for structure in &s.features {
            blocks.push(match structure {
                Structure::Spectral => spectral(&adjacency, s.dim, graph.directed, ctx.seed())?,
                Structure::Profile => profile(&adjacency, graph.directed)?,
                Structure::Degree => degree(&adjacency, graph.directed),
            });
        }
        let width: usize = blocks.iter().map(|(_, names)| names.len()).sum();
        let mut x = vec![0f32; n * width];
        let mut names = Vec::with_capacity(width);
        let mut offset = 0;
        for (values, block_names) in blocks {
            let w = block_names.len();
            for (row, chunk) in values.chunks(w.max(1)).enumerate().take(n) {
                x[row * width + offset..row * width + offset + w].copy_from_slice(chunk);
            }
            offset += w;
            names.extend(block_names);
        }
        graph.x = Tensor::from_vec(x, (n, width), &Device::Cpu)?;
        graph.feature_names = names;
        Ok(vec![(PortName::new_static("graph"), graph.into_value()?)])
    }
}

/// The weighted adjacency matrix, row = source, as sparse rows (an
/// undirected graph's edges are stored both ways already).
fn adjacency(graph: &Graph, log_weights: bool) -> Csr {
    let n = graph.nodes();
    let mut rows: Vec<Vec<(u32, f32)>> = vec![Vec::new(); n];
    for ((&a, &b), &w) in graph.src.iter().zip(&graph.dst).zip(&graph.weight) {
        let w = if log_weights { w.ln_1p() } else { w };
        rows[a as usize].push((b, w));
    }
    Csr::from_rows(n, rows)
}

/// Row sums (out) and, directed, column sums (in).
fn degree(a: &Csr, directed: bool) -> (Vec<f32>, Vec<String>) {
    let n = a.rows();
    let out: Vec<f32> = (0..n).map(|r| a.row(r).1.iter().sum()).collect();
    if !directed {
        return (out, vec!["degree".into()]);
    }
    let mut inward = vec![0f32; n];
    for (&c, &v) in a.indices.iter().zip(&a.values) {
        inward[c as usize] += v;
    }
    let values = out
        .into_iter()
        .zip(inward)
        .flat_map(|(o, i)| [o, i])
        .collect();
    (values, vec!["out_degree".into(), "in_degree".into()])
}

/// Each node's adjacency row, and for a directed graph its column.
fn profile(a: &Csr, directed: bool) -> Result<(Vec<f32>, Vec<String>), NodeError> {
    let n = a.rows();
    if n > MAX_PROFILE_NODES {
        return Err(NodeError::new(format!(
            "`profile` for {n} nodes would take {n}×{} values: use `spectral` (it scales with the edges)",
            if directed { 2 * n } else { n }
        )));
    }
    let width = if directed { 2 * n } else { n };
    let mut x = vec![0f32; n * width];
    for r in 0..n {
        let (cols, vals) = a.row(r);
        for (&c, &v) in cols.iter().zip(vals) {
            x[r * width + c as usize] = v;
            if directed {
                x[c as usize * width + n + r] = v;
            }
        }
    }
    let mut names: Vec<String> = (0..n).map(|i| format!("to_{i}")).collect();
    if directed {
        names.extend((0..n).map(|i| format!("from_{i}")));
    }
    Ok((x, names))
}

/// The adjacency spectral embedding: U√S (and V√S, directed) of the `dim`
/// leading singular triplets, by randomized subspace iteration.
fn spectral(
    a: &Csr,
    dim: usize,
    directed: bool,
    seed: u64,
) -> Result<(Vec<f32>, Vec<String>), NodeError> {
    let n = a.rows();
    let dim = dim.min(n);
    let l = (dim + OVERSAMPLE).min(n);
    let (left, singular, right) = randomized_svd(a, l, seed);
    let sides = if directed { 2 } else { 1 };
    let mut x = vec![0f32; n * dim * sides];
    for j in 0..dim {
        let root = singular[j].max(0.0).sqrt();
        for i in 0..n {
            x[i * dim * sides + j] = (left[j][i] * root) as f32;
            if directed {
                x[i * dim * 2 + dim + j] = (right[j][i] * root) as f32;
            }
        }
    }
    let mut names: Vec<String> = (0..dim).map(|j| format!("spectral_out_{j}")).collect();
    if directed {
        names.extend((0..dim).map(|j| format!("spectral_in_{j}")));
    } else {
        names = (0..dim).map(|j| format!("spectral_{j}")).collect();
    }
    Ok((x, names))
}

/// `l` leading singular triplets of `a` (n × n): left vectors, values,
/// right vectors, largest first, each left vector's largest entry positive.
fn randomized_svd(a: &Csr, l: usize, seed: u64) -> (Vec<Vec<f64>>, Vec<f64>, Vec<Vec<f64>>) {
    let n = a.rows();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5350_4543);
    // Ω as l rows of n (row-major `[l, n]`, as `matmul_t` takes a weight).
    let omega: Vec<f32> = (0..l * n)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    // Q: an orthonormal basis of A·Ω, refined by subspace iteration.
    let mut q = orthonormal(columns(&a.matmul_t(&omega, l), n, l));
    for _ in 0..POWER_ITERATIONS {
        let z = orthonormal(rows(&a.t_matmul(&row_major(&q), l), n));
        q = orthonormal(columns(&a.matmul_t(&flat(&z), l), n, l));
    }
    // B = Qᵀ·A (l × n); B·Bᵀ = W·Σ²·Wᵀ.
    let b = rows(&a.t_matmul(&row_major(&q), l), n);
    let gram: Vec<Vec<f64>> = (0..l)
        .map(|i| (0..l).map(|j| dot(&b[i], &b[j])).collect())
        .collect();
    let (values, vectors) = symmetric_eigen(gram);
    let mut order: Vec<usize> = (0..l).collect();
    order.sort_by(|&i, &j| values[j].total_cmp(&values[i]));
    let mut left = Vec::with_capacity(l);
    let mut singular = Vec::with_capacity(l);
    let mut right = Vec::with_capacity(l);
    for &k in &order {
        let w: Vec<f64> = (0..l).map(|r| vectors[r][k]).collect();
        let s = values[k].max(0.0).sqrt();
        let mut u = vec![0.0; n];
        let mut v = vec![0.0; n];
        for (r, &wr) in w.iter().enumerate() {
            for i in 0..n {
                u[i] += q[r][i] * wr;
                v[i] += b[r][i] * wr;
            }
        }
        if s > 0.0 {
            v.iter_mut().for_each(|x| *x /= s);
        }
        // A fixed sign: the largest entry of u is positive.
        let largest = u
            .iter()
            .cloned()
            .fold(0.0f64, |m, x| if x.abs() > m.abs() { x } else { m });
        if largest < 0.0 {
            u.iter_mut().for_each(|x| *x = -*x);
            v.iter_mut().for_each(|x| *x = -*x);
        }
        left.push(u);
        singular.push(s);
        right.push(v);
    }
    (left, singular, right)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `[n, l]` row-major f32 as l columns of n.
fn columns(m: &[f32], n: usize, l: usize) -> Vec<Vec<f64>> {
    (0..l)
        .map(|j| (0..n).map(|i| m[i * l + j] as f64).collect())
        .collect()
}

/// `[l, n]` row-major f32 as l rows of n.
fn rows(m: &[f32], n: usize) -> Vec<Vec<f64>> {
    m.chunks(n.max(1))
        .map(|r| r.iter().map(|&x| x as f64).collect())
        .collect()
}

/// l columns of n as `[n, l]` row-major f32.
fn row_major(cols: &[Vec<f64>]) -> Vec<f32> {
    let (l, n) = (cols.len(), cols.first().map_or(0, Vec::len));
    let mut m = vec![0f32; n * l];
    for (j, c) in cols.iter().enumerate() {
        for (i, &x) in c.iter().enumerate() {
            m[i * l + j] = x as f32;
        }
    }
    m
}

/// l rows of n as `[l, n]` row-major f32.
fn flat(rows: &[Vec<f64>]) -> Vec<f32> {
    rows.iter().flatten().map(|&x| x as f32).collect()
}

/// Gram–Schmidt, twice (numerically orthonormal); a vector that vanishes
/// stays zero.
fn orthonormal(mut vs: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
    for i in 0..vs.len() {
        for _ in 0..2 {
            for j in 0..i {
                let p = dot(&vs[i], &vs[j]);
                let (head, tail) = vs.split_at_mut(i);
                for (x, y) in tail[0].iter_mut().zip(&head[j]) {
                    *x -= p * y;
                }
            }
        }
        let norm = dot(&vs[i], &vs[i]).sqrt();
        if norm > 1e-12 {
            vs[i].iter_mut().for_each(|x| *x /= norm);
        } else {
            vs[i].iter_mut().for_each(|x| *x = 0.0);
        }
    }
    vs
}

/// Eigenvalues and eigenvectors (columns) of a small symmetric matrix, by
/// cyclic Jacobi rotations.
fn symmetric_eigen(mut m: Vec<Vec<f64>>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let l = m.len();
    let mut v: Vec<Vec<f64>> = (0..l)
        .map(|i| (0..l).map(|j| f64::from(i == j)).collect())
        .collect();
    for _sweep in 0..100 {
        let off: f64 = (0..l)
            .flat_map(|i| (0..l).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i][j] * m[i][j])
            .sum();
        let scale: f64 = (0..l).map(|i| m[i][i] * m[i][i]).sum::<f64>().max(1e-300);
        if off <= 1e-24 * scale {
            break;
        }
        for p in 0..l {
            for q in p + 1..l {
                if m[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (m[q][q] - m[p][p]) / (2.0 * m[p][q]);
                // The smaller root of t² + 2θt − 1 = 0 (θ = 0 gives t = 1).
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // M ← Jᵀ·M·J (columns, then rows), V ← V·J.
                for row in m.iter_mut().chain(v.iter_mut()) {
                    let (xp, xq) = (row[p], row[q]);
                    row[p] = c * xp - s * xq;
                    row[q] = s * xp + c * xq;
                }
                let (top, bottom) = m.split_at_mut(q);
                for (a, b) in top[p].iter_mut().zip(bottom[0].iter_mut()) {
                    let (xp, xq) = (*a, *b);
                    *a = c * xp - s * xq;
                    *b = s * xp + c * xq;
                }
            }
        }
    }
    ((0..l).map(|i| m[i][i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_diagonalises_a_symmetric_matrix() {
        let m = vec![
            vec![4.0, 1.0, 2.0],
            vec![1.0, 3.0, 0.5],
            vec![2.0, 0.5, 5.0],
        ];
        let (values, vectors) = symmetric_eigen(m.clone());
        for k in 0..3 {
            for i in 0..3 {
                let mv: f64 = (0..3).map(|j| m[i][j] * vectors[j][k]).sum();
                assert!((mv - values[k] * vectors[i][k]).abs() < 1e-9);
            }
        }
        let trace: f64 = values.iter().sum();
        assert!((trace - 12.0).abs() < 1e-9);
    }

    #[test]
    fn the_embedding_recovers_the_leading_singular_vectors() {
        // Two blocks that link to each other only (a bipartite, disassortative
        // pattern): the leading singular value is the block degree, 3.
        let mut rows = vec![Vec::new(); 6];
        for a in 0..3u32 {
            for b in 3..6u32 {
                rows[a as usize].push((b, 1.0));
                rows[b as usize].push((a, 1.0));
            }
        }
        let a = Csr::from_rows(6, rows);
        let (left, singular, right) = randomized_svd(&a, 4, 1);
        assert!((singular[0] - 3.0).abs() < 1e-6 && (singular[1] - 3.0).abs() < 1e-6);
        assert!(singular[2].abs() < 1e-6, "{singular:?}");
        // A·v = s·u for the leading pair.
        let v: Vec<f32> = right[0].iter().map(|&x| x as f32).collect();
        let av = a.matmul_t(&v, 1);
        for i in 0..6 {
            assert!((av[i] as f64 - 3.0 * left[0][i]).abs() < 1e-5);
        }
        // The same seed gives the same bits.
        assert_eq!(randomized_svd(&a, 4, 1).0, left);
    }

    #[test]
    fn profiles_and_degrees_read_both_directions_of_a_directed_graph() {
        // 0 → 1 (weight 2), 1 → 2 (weight 1).
        let a = Csr::from_rows(3, vec![vec![(1, 2.0)], vec![(2, 1.0)], vec![]]);
        let (x, names) = profile(&a, true).unwrap();
        assert_eq!(names.len(), 6);
        assert_eq!(&x[..6], [0.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(&x[6..12], [0.0, 0.0, 1.0, 2.0, 0.0, 0.0]);
        assert_eq!(&x[12..], [0.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        let (d, names) = degree(&a, true);
        assert_eq!(names, ["out_degree", "in_degree"]);
        assert_eq!(d, [2.0, 0.0, 1.0, 2.0, 0.0, 1.0]);
        let (x, _) = profile(&a, false).unwrap();
        assert_eq!(x.len(), 9);
    }
}
