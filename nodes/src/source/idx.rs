//! `source.idx`: images and labels in the IDX format (MNIST and friends).

use std::io::Read;
use std::path::Path;

use candle_core::{Device, Tensor};
use kiln_engine::{
    Config, InputPath, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext,
    ValueType,
};
use serde::Deserialize;

use crate::data::{Dataset, Target};

/// Reads IDX files (gzip or not) into a dataset.
pub struct IdxSource;

/// What `source.idx` reads from `with:`.
#[derive(Config, Deserialize)]
struct IdxSettings {
    /// the IDX file of examples, e.g. train-images.idx3-ubyte.gz
    images: InputPath,
    /// the IDX file of labels, one per example
    labels: Option<InputPath>,
    /// read only the first N examples
    #[setting(min = 1)]
    limit: Option<usize>,
}

impl NodeKind for IdxSource {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "source.idx",
            version: 1,
            doc: "Reads examples (and optionally labels) in the IDX format of MNIST, gzip or not.
Features keep the file's shape per example (28×28 for MNIST) as raw values (0–255 for bytes); labels become classes named by their value.",
            inputs: vec![],
            outputs: vec![OutputSpec::new("data", ValueType::Dataset, "the examples, with labels as the target")],
            settings: IdxSettings::specs(),
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let s: IdxSettings = ctx.settings().read()?;
        let limit = s.limit;
        let images = read_idx(&s.images, limit)?;
        if images.dims.len() < 2 {
            return Err(NodeError::new(format!(
                "`{}` holds a 1-D array: that is a labels file; give it as `labels`",
                s.images.display()
            )));
        }
        let n = images.dims[0];
        let features = Tensor::from_vec(images.values, images.dims.clone(), &Device::Cpu)?;
        let target = match &s.labels {
            Some(path) => {
                let labels = read_idx(path, limit)?;
                if labels.dims != [n] {
                    return Err(NodeError::new(format!(
                        "`{}` holds labels of shape {:?}, but there are {n} examples",
                        path.display(),
                        labels.dims
                    )));
                }
                let values: Vec<u32> = labels.values.iter().map(|&v| v as u32).collect();
                let k = values.iter().copied().max().map_or(0, |m| m as usize + 1);
                Some(Target {
                    name: "label".into(),
                    values: Tensor::from_vec(values, n, &Device::Cpu)?,
                    labels: Some((0..k).map(|i| i.to_string()).collect()),
                })
            }
            None => None,
        };
        let data = Dataset {
            features: features.into(),
            columns: None,
            target,
            categories: Default::default(),
        };
        Ok(vec![(PortName::new_static("data"), data.into_value())])
    }
}

/// An IDX array: its shape and values as `f32`.
#[derive(Debug)]
struct Idx {
    dims: Vec<usize>,
    values: Vec<f32>,
}

fn read_idx(path: &Path, limit: Option<usize>) -> Result<Idx, NodeError> {
    let shown = path.display();
    let raw =
        std::fs::read(path).map_err(|e| NodeError::new(format!("cannot read `{shown}`: {e}")))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| NodeError::new(format!("`{shown}` is not a valid gzip file: {e}")))?;
        out
    } else {
        raw
    };
    let bad = |why: &str| NodeError::new(format!("`{shown}` is not an IDX file: {why}"));
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("it does not start with the IDX magic number"));
    }
    let (code, ndims) = (bytes[2], bytes[3] as usize);
    let size = match code {
        0x08 | 0x09 => 1,
        0x0B => 2,
        0x0C | 0x0D => 4,
        0x0E => 8,
        _ => return Err(bad(&format!("unknown element type 0x{code:02x}"))),
    };
    let header = 4 + 4 * ndims;
    if ndims == 0 || bytes.len() < header {
        return Err(bad("its header is truncated"));
    }
    let mut dims: Vec<usize> = (0..ndims)
        .map(|i| {
            u32::from_be_bytes([
                bytes[4 + 4 * i],
                bytes[5 + 4 * i],
                bytes[6 + 4 * i],
                bytes[7 + 4 * i],
            ]) as usize
        })
        .collect();
    let per_item: usize = dims[1..].iter().product();
    let expected = dims[0]
        .checked_mul(per_item)
        .and_then(|n| n.checked_mul(size));
    if expected != Some(bytes.len() - header) {
        return Err(bad(&format!(
            "the header says {dims:?} but the file holds {} bytes of data",
            bytes.len() - header
        )));
    }
    if let Some(limit) = limit {
        dims[0] = dims[0].min(limit);
    }
    let data = &bytes[header..header + dims[0] * per_item * size];
    let values = match code {
        0x08 => data.iter().map(|&b| b as f32).collect(),
        0x09 => data.iter().map(|&b| b as i8 as f32).collect(),
        0x0B => data
            .chunks_exact(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]) as f32)
            .collect(),
        0x0C => data
            .chunks_exact(4)
            .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]) as f32)
            .collect(),
        0x0D => data
            .chunks_exact(4)
            .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        _ => data
            .chunks_exact(8)
            .map(|c| f64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
    };
    Ok(Idx { dims, values })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(bytes: &[u8]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), bytes).unwrap();
        f
    }

    #[test]
    fn reads_a_small_idx_file() {
        // Two 2×3 byte images.
        let mut bytes = vec![0, 0, 0x08, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3];
        bytes.extend(0u8..12);
        let idx = read_idx(write(&bytes).path(), None).unwrap();
        assert_eq!(idx.dims, vec![2, 2, 3]);
        assert_eq!(idx.values[11], 11.0);
        let first = read_idx(write(&bytes).path(), Some(1)).unwrap();
        assert_eq!((first.dims[0], first.values.len()), (1, 6));
    }

    #[test]
    fn truncated_or_foreign_files_are_refused() {
        let e = read_idx(write(&[0, 0, 0x08, 1, 0, 0, 0, 5, 1, 2]).path(), None).unwrap_err();
        assert!(e.message().contains("holds 2 bytes"), "{e}");
        let e = read_idx(write(b"PK\x03\x04zip").path(), None).unwrap_err();
        assert!(e.message().contains("magic number"), "{e}");
    }

    #[test]
    fn reads_the_real_mnist_test_labels() {
        let path = crate::test_data(&["mnist"]).join("mnist/t10k-labels.idx1-ubyte");
        let idx = read_idx(&path, None).unwrap();
        assert_eq!(idx.dims, vec![10_000]);
        // The first test digits are 7, 2, 1, 0, 4.
        assert_eq!(&idx.values[..5], &[7.0, 2.0, 1.0, 0.0, 4.0]);
    }
}
