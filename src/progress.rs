//! Progress on a terminal (indicatif); silence otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_engine::{NodeId, NodeReport, Observer, Progress};

/// Draws a spinner or bar per running node when stderr is a terminal.
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    enabled: bool,
}

impl Bars {
    /// Bars on stderr if it is a terminal, else nothing is drawn.
    pub fn for_stderr() -> Self {
        let enabled = std::io::stderr().is_terminal();
        let target = if enabled {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Bars {
            multi: MultiProgress::with_draw_target(target),
            bars: Mutex::new(HashMap::new()),
            enabled,
        }
    }
}

impl Observer for Bars {
    fn node_started(&self, node: &NodeId, kind: &str) {
        if !self.enabled {
            return;
        }
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(format!("{node} ({kind})"));
        bar.enable_steady_tick(Duration::from_millis(120));
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(node.to_string(), bar);
        }
    }

    fn progress(&self, node: &NodeId, p: &Progress) {
        if !self.enabled {
            return;
        }
        let Ok(bars) = self.bars.lock() else { return };
        if let Some(bar) = bars.get(node.as_str()) {
            if p.total > 0 && bar.length() != Some(p.total) {
                bar.set_length(p.total);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:.bold} [{bar:30}] {pos}/{len} {wide_msg} {elapsed}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
            }
            bar.set_position(p.done);
            bar.set_message(p.message.clone());
        }
    }

    fn node_finished(&self, report: &NodeReport) {
        if !self.enabled {
            return;
        }
        if let Ok(mut bars) = self.bars.lock() {
            if let Some(bar) = bars.remove(&report.id) {
                bar.finish_and_clear();
                self.multi.remove(&bar);
            }
        }
    }
}
