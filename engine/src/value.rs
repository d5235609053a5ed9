//! Values that flow between nodes.
//!
//! A value is a typed bundle of named tensors plus JSON metadata: a table is
//! its feature and target tensors plus column and label names; a model is its
//! weights plus its architecture; metrics are metadata only. This one shape
//! lets the engine hash, cache and move any value without knowing what it
//! means; node kinds give typed views over it. Values are immutable and shared
//! (`Arc`), never copied per consumer.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use candle_core::{Device, Tensor};
use serde_json::Value as Json;

use crate::error::NodeError;
use crate::types::ValueType;

/// Metadata key under which a value's type and JSON travel in a safetensors file.
const META_KEY: &str = "kiln";

/// Why bytes are not a value kiln wrote.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not a safetensors file.
    #[error("not a safetensors file: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),
    /// A safetensors file, but not one kiln wrote.
    #[error("a safetensors file without kiln's header")]
    NoHeader,
    /// kiln's header is damaged.
    #[error("kiln's header is not JSON: {0}")]
    Header(#[from] serde_json::Error),
    /// A type this kiln does not know.
    #[error("an unknown value type {0}")]
    UnknownType(String),
    /// A tensor that candle cannot hold.
    #[error("a tensor cannot be read: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// An immutable value: a type, named tensors and JSON metadata. Cloning
/// one is cheap (the tensors and metadata are shared), so a served
/// pipeline hands its fixed values (a model) to every batch as they are.
#[derive(Clone, Debug)]
pub struct Value {
    ty: ValueType,
    tensors: Arc<BTreeMap<String, Tensor>>,
    meta: Arc<Json>,
    encoded: Arc<OnceLock<Encoded>>,
}

#[derive(Debug)]
struct Encoded {
    bytes: Result<Vec<u8>, String>,
    hash: String,
}

impl Value {
    /// A value of type `ty` from tensors and metadata.
    pub fn new(ty: ValueType, tensors: BTreeMap<String, Tensor>, meta: Json) -> Self {
        Value {
            ty,
            tensors: Arc::new(tensors),
            meta: Arc::new(meta),
            encoded: Arc::default(),
        }
    }

    /// A value made of metadata only (metrics, reports).
    pub fn from_json(ty: ValueType, meta: Json) -> Self {
        Value::new(ty, BTreeMap::new(), meta)
    }

    /// The value's type.
    pub fn ty(&self) -> ValueType {
        self.ty
    }

    /// Its metadata.
    pub fn meta(&self) -> &Json {
        &self.meta
    }

    /// Its tensors by name.
    pub fn tensors(&self) -> &BTreeMap<String, Tensor> {
        &self.tensors
    }

    /// One tensor, or an error naming what is missing.
    pub fn tensor(&self, name: &str) -> Result<&Tensor, NodeError> {
        self.tensors
            .get(name)
            .ok_or_else(|| NodeError::new(format!("the {} value has no tensor `{name}`", self.ty)))
    }

    /// The same value with its tensors on `device`.
    pub fn to_device(&self, device: &Device) -> Result<Value, NodeError> {
        if self
            .tensors
            .values()
            .all(|t| t.device().same_device(device))
        {
            return Ok(self.clone());
        }
        let tensors = self
            .tensors
            .iter()
            .map(|(k, t)| Ok((k.clone(), t.to_device(device)?)))
            .collect::<Result<_, NodeError>>()?;
        Ok(Value {
            ty: self.ty,
            tensors: Arc::new(tensors),
            meta: self.meta.clone(),
            encoded: Default::default(),
        })
    }

    fn encoded(&self) -> &Encoded {
        self.encoded.get_or_init(|| {
            let bytes = self.serialize();
            let hash = match &bytes {
                Ok(b) => blake3::hash(b).to_hex().to_string(),
                Err(e) => blake3::hash(e.as_bytes()).to_hex().to_string(),
            };
            Encoded { bytes, hash }
        })
    }

    fn serialize(&self) -> Result<Vec<u8>, String> {
        let header = serde_json::json!({ "type": self.ty.name(), "meta": *self.meta });
        let info = HashMap::from([(META_KEY.to_string(), header.to_string())]);
        // Tensors are made contiguous on the CPU first: `View::data` copies.
        let tensors: Vec<(String, Tensor)> = self
            .tensors
            .iter()
            .map(|(k, t)| Ok((k.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
            .collect::<Result<_, candle_core::Error>>()
            .map_err(|e| e.to_string())?;
        safetensors::serialize(tensors, Some(info)).map_err(|e| e.to_string())
    }

    /// The content hash (blake3, hex) of the value's encoding: equal values
    /// have equal hashes whatever produced them.
    pub fn content_hash(&self) -> &str {
        &self.encoded().hash
    }

    /// The safetensors encoding (type and metadata in the header).
    pub fn to_bytes(&self) -> Result<&[u8], NodeError> {
        match &self.encoded().bytes {
            Ok(b) => Ok(b),
            Err(e) => Err(NodeError::new(format!(
                "cannot encode the {} value: {e}",
                self.ty
            ))),
        }
    }

    /// Decodes a value written by [`Value::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Value, DecodeError> {
        let st = safetensors::SafeTensors::deserialize(bytes)?;
        let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes)?;
        let header = metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or(DecodeError::NoHeader)?;
        let header: Json = serde_json::from_str(header)?;
        let ty = header["type"]
            .as_str()
            .and_then(ValueType::from_name)
            .ok_or_else(|| DecodeError::UnknownType(header["type"].to_string()))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let dtype = candle_core::DType::try_from(view.dtype())?;
            let t = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)?;
            tensors.insert(name, t);
        }
        let value = Value::new(ty, tensors, header["meta"].clone());
        let _ = value.encoded.set(Encoded {
            bytes: Ok(bytes.to_vec()),
            hash: blake3::hash(bytes).to_hex().to_string(),
        });
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_bit_exactly_and_hashes_by_content() {
        let t = Tensor::new(&[[1.0f32, 2.5], [3.0, -4.0]], &Device::Cpu).unwrap();
        let v = Value::new(
            ValueType::Table,
            BTreeMap::from([("features".to_string(), t)]),
            serde_json::json!({"columns": ["a", "b"]}),
        );
        let bytes = v.to_bytes().unwrap().to_vec();
        let back = Value::from_bytes(&bytes).unwrap();
        assert_eq!(back.ty(), ValueType::Table);
        assert_eq!(back.meta()["columns"][1], "b");
        let got: Vec<Vec<f32>> = back.tensor("features").unwrap().to_vec2().unwrap();
        assert_eq!(got, vec![vec![1.0, 2.5], vec![3.0, -4.0]]);
        assert_eq!(back.content_hash(), v.content_hash());

        let other = Value::from_json(ValueType::Metrics, serde_json::json!({"accuracy": 1.0}));
        assert_ne!(other.content_hash(), v.content_hash());
    }

    #[test]
    fn garbage_bytes_are_an_error() {
        assert!(Value::from_bytes(b"not a safetensors file").is_err());
        assert!(Value::from_bytes(&[]).is_err());
    }
}
