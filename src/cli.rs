//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// kiln: a declarative ML pipeline engine. One YAML file from raw data to a
/// trained, compressed, served model.
#[derive(Parser)]
#[command(name = "kiln", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand)]
pub enum Command {
    /// Validate a pipeline, then run it (cached nodes are reused).
    Run(RunArgs),
    /// Run, then re-run what each change to the file or its data affects (Ctrl-C stops).
    Watch(WatchArgs),
    /// Serve pipelines over HTTP: run them (or take them from the cache), then answer requests.
    Serve(ServeArgs),
    /// Check pipeline files without running them; every problem is reported.
    Validate {
        /// Pipeline files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Override a param: `--set params.NAME=VALUE` (VALUE is read as YAML).
        #[arg(long = "set", value_name = "params.NAME=VALUE")]
        set: Vec<String>,
    },
    /// Draw a pipeline's graph.
    Graph {
        /// The pipeline file.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
        /// Override a param: `--set params.NAME=VALUE`.
        #[arg(long = "set", value_name = "params.NAME=VALUE")]
        set: Vec<String>,
    },
    /// List node kinds, or show one with its ports and settings.
    Nodes {
        /// A kind, e.g. `preprocess.split`.
        kind: Option<String>,
    },
    /// Print the JSON Schema of the pipeline format (for editor completion).
    Schema,
    /// Run every trial of the file's `sweep:` block (shared nodes once) and rank them.
    Sweep(SweepArgs),
    /// Translate a pipeline for another engine to run.
    #[command(subcommand)]
    Export(Export),
}

impl Command {
    /// Whether the command only prints (no run, no server, no files).
    pub fn only_prints(&self) -> bool {
        matches!(
            self,
            Command::Validate { .. }
                | Command::Graph { .. }
                | Command::Nodes { .. }
                | Command::Schema
        )
    }
}

/// `kiln sweep` arguments.
#[derive(Args)]
pub struct SweepArgs {
    /// The pipeline file, with a `sweep:` block.
    pub file: PathBuf,
    /// Threads per trial (default: the cores shared among the trials running at once).
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub jobs: Option<u16>,
    /// Trials at once (default: the block's `parallel:`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub parallel: Option<u16>,
    /// Where results are cached: a folder or a store URL (see `kiln run --help`).
    #[arg(long, value_name = "URL")]
    pub cache: Option<String>,
    /// Where the results table, the plots and each trial's results go
    /// (default: `runs/<pipeline>/sweep/` beside the file).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Override a param for every trial: `--set params.NAME=VALUE`.
    #[arg(long = "set", value_name = "params.NAME=VALUE")]
    pub set: Vec<String>,
}

/// `kiln export` targets.
#[derive(Subcommand)]
pub enum Export {
    /// Print an Argo Workflows manifest: one pod per node, values passed
    /// through the `--cache` store (the pipeline and its files are uploaded
    /// there by content).
    Argo(ArgoArgs),
}

/// `kiln export argo` arguments.
#[derive(Args)]
pub struct ArgoArgs {
    /// The pipeline file.
    pub file: PathBuf,
    /// The kiln image the pods run (see the repository's Dockerfile).
    #[arg(long, value_name = "IMAGE")]
    pub image: String,
    /// The store every pod reads and writes: `s3://bucket/prefix`, `gs://…`, `az://…`.
    #[arg(long, value_name = "URL")]
    pub cache: String,
    /// Where sinks' files go (default: `<cache>/runs/<pipeline>`).
    #[arg(long, value_name = "URL")]
    pub out: Option<String>,
    /// Tasks running at once (`spec.parallelism`; default: no limit).
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub jobs: Option<u16>,
    /// Override a param, baked into every pod: `--set params.NAME=VALUE`.
    #[arg(long = "set", value_name = "params.NAME=VALUE")]
    pub set: Vec<String>,
    /// Leave out every node whose result is already in the store.
    #[arg(long)]
    pub skip_cached: bool,
    /// Retries of a failed pod.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub retries: u32,
    /// Emit a `WorkflowTemplate` (named after the pipeline) instead of a `Workflow`.
    #[arg(long)]
    pub workflow_template: bool,
    /// A cluster profile (YAML): namespace, service account, store secret, GPU placement.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// The secret whose keys become every pod's environment (the store's credentials).
    #[arg(long, value_name = "NAME")]
    pub secret: Option<String>,
    /// The namespace to create the workflow in.
    #[arg(long, value_name = "NAME")]
    pub namespace: Option<String>,
    /// Where GPU pods may run: `KEY=VALUE` (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub gpu_node_selector: Vec<String>,
    /// A taint GPU pods tolerate: `KEY[=VALUE][:EFFECT]` (repeatable).
    #[arg(long, value_name = "TOLERATION")]
    pub gpu_toleration: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ManifestFormat::Yaml)]
    pub format: ManifestFormat,
}

/// Manifest formats.
#[derive(Clone, Copy, ValueEnum)]
pub enum ManifestFormat {
    /// YAML, as `kubectl` and `argo submit` take it.
    Yaml,
    /// JSON.
    Json,
}

/// `kiln run` arguments.
#[derive(Args)]
pub struct RunArgs {
    /// The pipeline file, or the content hash of one `kiln export` uploaded
    /// to the `--cache` store (what a pod runs).
    pub file: PathBuf,
    /// Where results are cached: a folder, `file:///path`, `s3://bucket/prefix`,
    /// `gs://…` or `az://…` (default: `.kiln/` beside the pipeline file).
    #[arg(long, value_name = "URL")]
    pub cache: Option<String>,
    /// Nodes running at once (default: all cores).
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub jobs: Option<u16>,
    /// Run every node instead of reusing cached results (new results are still cached).
    #[arg(long)]
    pub no_cache: bool,
    /// Also serve a live view in the browser (default address 127.0.0.1:8700),
    /// kept up after the run until Ctrl-C.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = crate::ui::DEFAULT_ADDR, conflicts_with = "input")]
    pub ui: Option<String>,
    /// Where results go: a folder or a store URL (default: `runs/<pipeline>/`
    /// beside the pipeline file).
    #[arg(long, value_name = "DIR|URL")]
    pub out: Option<String>,
    /// Override a param: `--set params.NAME=VALUE` (VALUE is read as YAML).
    #[arg(long = "set", value_name = "params.NAME=VALUE")]
    pub set: Vec<String>,
    /// Run this node alone, taking its inputs from the cache.
    #[arg(long, value_name = "NODE", conflicts_with = "until")]
    pub only: Option<String>,
    /// Run this node and what it depends on.
    #[arg(long, value_name = "NODE")]
    pub until: Option<String>,
    /// Answer these rows as `kiln serve` would: FILE holds a request body,
    /// `{"inputs": {"<request node>": [rows]}}`. Runs what the serve path needs.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["only", "until"])]
    pub input: Option<std::path::PathBuf>,
}

/// `kiln watch` arguments.
#[derive(Args)]
pub struct WatchArgs {
    /// The pipeline file.
    pub file: PathBuf,
    /// Nodes running at once (default: all cores).
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub jobs: Option<u16>,
    /// Where results are cached: a folder or a store URL (see `kiln run --help`).
    #[arg(long, value_name = "URL")]
    pub cache: Option<String>,
    /// Where results go (default: `runs/<pipeline>/` beside the pipeline file).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Override a param: `--set params.NAME=VALUE`.
    #[arg(long = "set", value_name = "params.NAME=VALUE")]
    pub set: Vec<String>,
    /// Milliseconds for file events to settle before a re-run.
    #[arg(long, default_value_t = 50, value_name = "MS")]
    pub debounce_ms: u64,
    /// Also serve a live view in the browser (default address 127.0.0.1:8700).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = crate::ui::DEFAULT_ADDR)]
    pub ui: Option<String>,
}

/// `kiln serve` arguments.
#[derive(Args)]
pub struct ServeArgs {
    /// Pipeline files, each with a `serve:` block; one service answers for all.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Address to listen on (port 0 picks a free one and prints it).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "HOST:PORT")]
    pub addr: String,
    /// Rebuild a pipeline when its file or data changes and swap it in.
    #[arg(long)]
    pub watch: bool,
    /// Where results are cached: a folder or a store URL; serving from the
    /// store a cluster trained into runs no training here.
    #[arg(long, value_name = "URL")]
    pub cache: Option<String>,
    /// Nodes running at once while a pipeline is (re)built (default: all cores).
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub jobs: Option<u16>,
    /// Override a param: `--set params.NAME=VALUE`.
    #[arg(long = "set", value_name = "params.NAME=VALUE")]
    pub set: Vec<String>,
    /// Require `Authorization: Bearer KEY` on the /v1 routes (repeatable; also
    /// `--api-keys-file` and the `KILN_API_KEYS` environment variable).
    #[arg(long = "api-key", value_name = "KEY")]
    pub api_keys: Vec<String>,
    /// A file of API keys, one per line (`#` starts a comment).
    #[arg(long, value_name = "FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// Require a key on `/metrics` too (it is open by default, as `/healthz` is).
    #[arg(long)]
    pub protect_metrics: bool,
    /// Connections open at once; more are closed as soon as they are accepted.
    #[arg(long, default_value_t = 1024, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Milliseconds a client may take to send a request's head before its
    /// connection is closed, and then its body (408 past it).
    #[arg(long, default_value_t = 10_000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_ms: u64,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs `--tls-key`.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `--tls-cert`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Graph output formats.
#[derive(Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    /// Graphviz DOT.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
    /// JSON nodes and edges.
    Json,
}
