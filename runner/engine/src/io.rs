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
    }
}
