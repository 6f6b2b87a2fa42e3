//! safetensors save/load of a [`ParamStore`] (every entry by name, f32, 2-D).

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

use super::nn::ParamStore;
use super::{Engine, EngineError, Result};

/// The one `__metadata__` key pretext writes: a JSON object of string values.
const META_KEY: &str = "pretext";

/// Write every tensor of `ps` to `path`, with `metadata` in the file header.
pub fn save(ps: &ParamStore, metadata: BTreeMap<String, String>, path: &Path) -> Result<()> {
    let data: Vec<(String, Vec<u8>, Vec<usize>)> = ps
        .entries
        .iter()
        .map(|e| {
            let (r, c) = e.value.shape();
            let bytes: Vec<u8> = e
                .value
                .to_vec()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            (e.name.clone(), bytes, vec![r, c])
        })
        .collect();
    let views: Vec<(String, TensorView)> = data
        .iter()
        .map(|(n, b, s)| {
            Ok((
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b)
                    .map_err(|e| EngineError::Other(e.to_string()))?,
            ))
        })
        .collect::<Result<_>>()?;
    // One metadata key holding JSON: safetensors takes a HashMap, whose order is random, and
    // the file must be byte-reproducible (its digest goes into pretext.lock).
    let json = serde_json::to_string(&metadata).map_err(|e| EngineError::Other(e.to_string()))?;
    let meta: std::collections::HashMap<String, String> =
        [(META_KEY.to_string(), json)].into_iter().collect();
    // Serialised in memory, then written with std's I/O, so a full disk or a permission
    // problem arrives as an `io::Error` the caller can explain (not safetensors' debug form).
    let bytes = safetensors::serialize(views, &Some(meta))
        .map_err(|e| EngineError::Other(format!("serialising {}: {e}", path.display())))?;
    std::fs::write(path, bytes).map_err(|source| EngineError::Io {
        what: "cannot write",
        path: path.to_path_buf(),
        source,
    })
}

/// Load tensors from `path` into `ps` by name. Every entry of `ps` must be present with the
/// same shape. Returns the file's metadata.
pub fn load(e: &Engine, ps: &mut ParamStore, path: &Path) -> Result<BTreeMap<String, String>> {
    let bytes = std::fs::read(path)
        .map_err(|err| EngineError::Other(format!("reading {}: {err}", path.display())))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|err| {
        EngineError::Other(format!("{}: not a safetensors file: {err}", path.display()))
    })?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|err| {
        EngineError::Other(format!("{}: not a safetensors file: {err}", path.display()))
    })?;
    for entry in &mut ps.entries {
        let view = st.tensor(&entry.name).map_err(|_| {
            EngineError::Other(format!(
                "{}: tensor `{}` is missing",
                path.display(),
                entry.name
            ))
        })?;
        let (r, c) = entry.value.shape();
        if view.dtype() != Dtype::F32 || view.shape() != [r, c] {
            return Err(EngineError::Other(format!(
                "{}: tensor `{}` is {:?} {:?}, expected F32 [{r}, {c}]",
                path.display(),
                entry.name,
                view.dtype(),
                view.shape()
            )));
        }
        let vals: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        entry.value = e.tensor(vals, r, c)?;
    }
    let json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY).cloned());
    Ok(json
        .and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default())
}

/// One tensor of a safetensors file as stored: its dtype's name (`F32`, `F16`, `I64`, …),
/// shape and, for `F32` tensors, the values.
#[derive(Debug, Clone, PartialEq)]
pub struct FileTensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    /// The values, row-major, when `dtype` is `F32`.
    pub values: Option<Vec<f32>>,
}

/// Every tensor of the safetensors file at `path` (sorted by name) and pretext's metadata
/// (empty for files pretext did not write). A file that cannot be read or is not a
/// safetensors file is an error naming it.
pub fn read_all(path: &Path) -> Result<(Vec<FileTensor>, BTreeMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|source| EngineError::Io {
        what: "cannot read",
        path: path.to_path_buf(),
        source,
    })?;
    let not_safetensors = |err: safetensors::SafeTensorError| {
        EngineError::Other(format!(
            "{}: not a readable safetensors file ({err}); write it with safetensors' `save_file` (PyTorch: `safetensors.torch.save_file(state_dict, path)`)",
            path.display()
        ))
    };
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(not_safetensors)?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(not_safetensors)?;
    let mut out: Vec<FileTensor> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| FileTensor {
            values: (view.dtype() == Dtype::F32).then(|| {
                view.data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            }),
            dtype: format!("{:?}", view.dtype()),
            shape: view.shape().to_vec(),
            name,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    let json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY).cloned());
    let meta = json
        .and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default();
    Ok((out, meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Init, Mlp};

    #[test]
    fn save_load_round_trip() {
        let e = Engine::cpu();
        let mut a = ParamStore::default();
        Mlp::new(&e, &mut a, &mut Init::new(3), "m", &[4, 5, 2], true);
        let mut b = ParamStore::default();
        Mlp::new(&e, &mut b, &mut Init::new(4), "m", &[4, 5, 2], true);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let meta = BTreeMap::from([("arch".to_string(), "mlp".to_string())]);
        save(&a, meta.clone(), &path).unwrap();
        let got = load(&e, &mut b, &path).unwrap();
        assert_eq!(got, meta);
        for (x, y) in a.entries.iter().zip(&b.entries) {
            assert_eq!(x.value.to_vec(), y.value.to_vec(), "{}", x.name);
        }
        let mut wrong = ParamStore::default();
        Mlp::new(&e, &mut wrong, &mut Init::new(4), "m", &[4, 6, 2], true);
        assert!(load(&e, &mut wrong, &path).is_err());
        // read_all gives every tensor by name with its shape and values, and the metadata.
        let (tensors, got) = read_all(&path).unwrap();
        assert_eq!(got, meta);
        assert_eq!(tensors.len(), a.entries.len());
        let w = tensors.iter().find(|t| t.name == "m.0.weight").unwrap();
        assert_eq!((w.dtype.as_str(), w.shape.clone()), ("F32", vec![4, 5]));
        assert_eq!(w.values.as_deref(), Some(&a.entries[0].value.to_vec()[..]));
        std::fs::write(&path, b"not a safetensors file").unwrap();
        let err = read_all(&path).unwrap_err().to_string();
        assert!(
            err.contains("m.safetensors") && err.contains("not a readable safetensors file"),
            "{err}"
        );
    }
}
