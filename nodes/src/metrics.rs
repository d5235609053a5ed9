//! Scores of predictions against targets: classification (accuracy,
//! precision/recall/F1 per class and macro, confusion matrix) and regression
//! (MSE, MAE, R²). Shared by training (validation) and `postprocess.metrics`.

use serde_json::{json, Map, Value as Json};

/// Classification scores; `labels` name the classes by index.
pub fn classification(pred: &[u32], truth: &[u32], labels: &[String]) -> Json {
    let k = labels.len().max(
        pred.iter()
            .chain(truth)
            .map(|&c| c as usize + 1)
            .max()
            .unwrap_or(0),
    );
    let mut confusion = vec![vec![0u64; k]; k];
    for (&p, &t) in pred.iter().zip(truth) {
        confusion[t as usize][p as usize] += 1;
    }
    let n = truth.len().max(1) as f64;
    let correct: u64 = (0..k).map(|c| confusion[c][c]).sum();
    let mut per_class = Map::new();
    let (mut sum_p, mut sum_r, mut sum_f, mut present) = (0.0, 0.0, 0.0, 0usize);
    for (c, row) in confusion.iter().enumerate() {
        let tp = row[c] as f64;
        let predicted: u64 = confusion.iter().map(|r| r[c]).sum();
        let support: u64 = row.iter().sum();
        let precision = if predicted > 0 {
            tp / predicted as f64
        } else {
            0.0
        };
        let recall = if support > 0 {
            tp / support as f64
        } else {
            0.0
        };
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        if support > 0 {
            sum_p += precision;
            sum_r += recall;
            sum_f += f1;
            present += 1;
        }
        let name = labels.get(c).cloned().unwrap_or_else(|| c.to_string());
        per_class.insert(
            name,
            json!({ "precision": precision, "recall": recall, "f1": f1, "support": support }),
        );
    }
    let m = present.max(1) as f64;
    json!({
        "accuracy": correct as f64 / n,
        "precision_macro": sum_p / m,
        "recall_macro": sum_r / m,
        "f1_macro": sum_f / m,
        "examples": truth.len(),
        "per_class": per_class,
        "labels": (0..k).map(|c| labels.get(c).cloned().unwrap_or_else(|| c.to_string())).collect::<Vec<_>>(),
        "confusion": confusion,
    })
}

/// Regression scores.
pub fn regression(pred: &[f32], truth: &[f32]) -> Json {
    let n = truth.len().max(1) as f64;
    let mean = truth.iter().map(|&t| t as f64).sum::<f64>() / n;
    let (mut se, mut ae, mut tot) = (0.0, 0.0, 0.0);
    for (&p, &t) in pred.iter().zip(truth) {
        let (p, t) = (p as f64, t as f64);
        se += (p - t).powi(2);
        ae += (p - t).abs();
        tot += (t - mean).powi(2);
    }
    json!({
        "mse": se / n,
        "mae": ae / n,
        "r2": if tot > 0.0 { 1.0 - se / tot } else { 0.0 },
        "examples": truth.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_scores_match_a_hand_count() {
        let labels = vec!["a".to_string(), "b".to_string()];
        let m = classification(&[0, 0, 1, 1], &[0, 1, 1, 1], &labels);
        assert_eq!(m["accuracy"], 0.75);
        assert_eq!(m["confusion"], json!([[1, 0], [1, 2]]));
        assert_eq!(m["per_class"]["a"]["precision"], 0.5);
        assert_eq!(m["per_class"]["b"]["recall"], 2.0 / 3.0);
        assert_eq!(m["per_class"]["b"]["precision"], 1.0);
    }

    #[test]
    fn regression_scores_match_a_hand_count() {
        let m = regression(&[1.0, 2.0, 3.0], &[1.0, 2.0, 5.0]);
        assert!((m["mse"].as_f64().unwrap() - 4.0 / 3.0).abs() < 1e-9);
        assert!((m["mae"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
        // mean 8/3; total sum of squares = (5/3)² + (2/3)² + (7/3)² = 78/9
        assert!((m["r2"].as_f64().unwrap() - (1.0 - 4.0 / (78.0 / 9.0))).abs() < 1e-9);
    }
}
