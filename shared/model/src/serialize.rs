//! Weights as safetensors, written straight from the tensors in blocks of rows, so that even
//! tables of millions of rows never sit in memory twice.

use crate::ModelError;
use std::collections::BTreeMap;
use std::io::Write;
use tch::{Device, Kind, Tensor};

pub type NamedTensor<'a> = (&'a str, &'a Tensor);

const ROWS_PER_BLOCK: i64 = 1 << 15;

/// Writes a network's tensors as safetensors with the metadata a reader needs to score with them
/// (`variant`, `output_scale`) plus `extra` entries.
pub fn write_network(
    network: &crate::Network,
    extra: &[(&str, String)],
    out: &mut impl Write,
) -> Result<u64, ModelError> {
    let mut metadata = BTreeMap::from([
        (
            "variant".to_owned(),
            network.config().variant.as_str().to_owned(),
        ),
        (
            "output_scale".to_owned(),
            network.config().output_scale.to_string(),
        ),
    ]);
    if network.config().variant == crate::Variant::ContentMlp {
        metadata.insert(
            "features".to_owned(),
            oleg_features::FEATURES_VERSION.to_owned(),
        );
    }
    metadata.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let derived = network.derived_tensors();
    let named: Vec<NamedTensor<'_>> = network
        .named_tensors()
        .iter()
        .chain(&derived)
        .map(|(n, t)| (*n, t))
        .collect();
    write_safetensors(&named, &metadata, out)
}

/// Writes float tensors and string metadata in the safetensors format (little-endian F32).
pub fn write_safetensors(
    tensors: &[NamedTensor<'_>],
    metadata: &BTreeMap<String, String>,
    out: &mut impl Write,
) -> Result<u64, ModelError> {
    let mut header = serde_json_header(tensors, metadata);
    // The format recommends padding the header to 8 bytes with spaces.
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    out.write_all(&(header.len() as u64).to_le_bytes())?;
    out.write_all(header.as_bytes())?;
    let mut written = 8 + header.len() as u64;
    let mut block: Vec<f32> = Vec::new();
    let mut bytes: Vec<u8> = Vec::new();
    for (_, tensor) in tensors {
        let tensor = tensor.detach().to_kind(Kind::Float);
        let rows = if tensor.dim() == 0 {
            1
        } else {
            tensor.size()[0]
        };
        let flat = tensor.reshape([rows, -1]);
        let mut start = 0;
        while start < rows {
            let count = ROWS_PER_BLOCK.min(rows - start);
            let part = flat
                .narrow(0, start, count)
                .to_device(Device::Cpu)
                .contiguous();
            let numel = part.numel();
            block.resize(numel, 0.0);
            part.f_copy_data(&mut block, numel)?;
            bytes.clear();
            bytes.extend(block.iter().flat_map(|v| v.to_le_bytes()));
            out.write_all(&bytes)?;
            written += bytes.len() as u64;
            start += count;
        }
    }
    Ok(written)
}

fn serde_json_header(tensors: &[NamedTensor<'_>], metadata: &BTreeMap<String, String>) -> String {
    fn quote(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }
    let mut entries = Vec::new();
    if !metadata.is_empty() {
        let fields: Vec<String> = metadata
            .iter()
            .map(|(k, v)| format!("{}:{}", quote(k), quote(v)))
            .collect();
        entries.push(format!("\"__metadata__\":{{{}}}", fields.join(",")));
    }
    let mut offset = 0u64;
    for (name, tensor) in tensors {
        let shape = tensor.size();
        let bytes = 4 * shape
            .iter()
            .product::<i64>()
            .max(if shape.is_empty() { 1 } else { 0 }) as u64;
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        entries.push(format!(
            "{}:{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            quote(name),
            dims.join(","),
            offset,
            offset + bytes
        ));
        offset += bytes;
    }
    format!("{{{}}}", entries.join(","))
}

/// Named tensors and the string metadata of a safetensors file.
pub type Weights = (Vec<(String, Tensor)>, BTreeMap<String, String>);

/// Reads every tensor of a safetensors buffer, with the metadata.
pub fn read_tensors(buffer: &[u8]) -> Result<Weights, ModelError> {
    let parsed = safetensors::SafeTensors::deserialize(buffer)
        .map_err(|e| ModelError::Weights(e.to_string()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(buffer)
        .map_err(|e| ModelError::Weights(e.to_string()))?;
    let metadata = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut tensors = Vec::new();
    for (name, view) in parsed.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(ModelError::Weights(format!(
                "{name} is {:?}, expected F32",
                view.dtype()
            )));
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        tensors.push((name, Tensor::from_slice(&values).reshape(&shape)));
    }
    Ok((tensors, metadata))
}
