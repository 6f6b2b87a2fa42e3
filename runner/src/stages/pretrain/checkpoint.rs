//! Checkpoints: the training state written after every healthy epoch into the folder that
//! survives a failed or killed run, and read back to resume.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::artifacts::history::EpochRecord;
use crate::engine::nn::{ParamEntry, ParamKind, ParamStore};
use crate::engine::optim::Optimizer;
use crate::engine::{io, Engine, Tensor};
use crate::stages::{io_err, read_json, write_json, StageError};

/// Per-run training state that a checkpoint must capture to resume bit-for-bit.
pub(super) struct TrainState {
    pub(super) ps: ParamStore,
    pub(super) teacher: Option<ParamStore>,
    pub(super) opt: Optimizer,
    pub(super) objective_state: HashMap<String, Tensor>,
    pub(super) history: Vec<EpochRecord>,
    /// Optimizer steps taken.
    pub(super) step: u64,
}

pub(super) const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

pub(super) const CHECKPOINT_META: &str = "checkpoint.json";

#[derive(Serialize, Deserialize)]
pub(super) struct CheckpointMeta {
    /// Epochs completed.
    pub(super) epochs_done: u64,
    pub(super) step: u64,
    pub(super) optimizer_steps: u64,
    pub(super) state_keys: Vec<(String, (usize, usize))>,
    pub(super) history: Vec<EpochRecord>,
}

/// Write a checkpoint after `epochs_done` epochs (files replaced atomically).
pub(super) fn save_checkpoint(
    e: &Engine,
    dir: &Path,
    st: &TrainState,
    epochs_done: u64,
) -> Result<(), StageError> {
    let mut all = ParamStore::default();
    let mut push = |name: String, t: &Tensor| {
        all.entries.push(ParamEntry {
            name,
            value: t.clone(),
            kind: ParamKind::Buffer,
        });
    };
    for en in &st.ps.entries {
        push(format!("student/{}", en.name), &en.value);
    }
    if let Some(t) = &st.teacher {
        for en in &t.entries {
            push(format!("teacher/{}", en.name), &en.value);
        }
    }
    let (optimizer_steps, opt) = st.opt.export();
    for (name, t) in &opt {
        push(format!("optimizer/{name}"), t);
    }
    let mut keys: Vec<&String> = st.objective_state.keys().collect();
    keys.sort();
    for k in &keys {
        push(format!("state/{k}"), &st.objective_state[*k]);
    }
    let meta = CheckpointMeta {
        epochs_done,
        step: st.step,
        optimizer_steps,
        state_keys: keys
            .iter()
            .map(|k| ((*k).clone(), st.objective_state[*k].shape()))
            .collect(),
        history: st.history.clone(),
    };
    let _ = e;
    // A failed write leaves no partial `.tmp` behind: it would hold the space the next try
    // needs.
    let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
    let wrote = io::save(&all, BTreeMap::new(), &tmp)
        .map_err(crate::error::engine_err)
        .and_then(|()| {
            std::fs::rename(&tmp, dir.join(CHECKPOINT_FILE)).map_err(|err| io_err(dir, err))
        });
    if let Err(err) = wrote {
        let _ = std::fs::remove_file(&tmp);
        return Err(err);
    }
    let tmp = dir.join(format!("{CHECKPOINT_META}.tmp"));
    let wrote = write_json(&tmp, &meta).and_then(|()| {
        std::fs::rename(&tmp, dir.join(CHECKPOINT_META)).map_err(|err| io_err(dir, err))
    });
    if let Err(err) = wrote {
        let _ = std::fs::remove_file(&tmp);
        return Err(err);
    }
    Ok(())
}

/// Restore a checkpoint into `st`; returns the number of epochs it completed.
pub(super) fn load_checkpoint(
    e: &Engine,
    dir: &Path,
    st: &mut TrainState,
) -> Result<Option<u64>, StageError> {
    let meta_path = dir.join(CHECKPOINT_META);
    if !meta_path.exists() || !dir.join(CHECKPOINT_FILE).exists() {
        return Ok(None);
    }
    let meta: CheckpointMeta = read_json(&meta_path)?;
    // A template with every tensor the checkpoint must hold, filled by name.
    let mut template = ParamStore::default();
    let mut push = |name: String, shape: (usize, usize)| {
        template.entries.push(ParamEntry {
            name,
            value: e.zeros(shape.0, shape.1),
            kind: ParamKind::Buffer,
        });
    };
    for en in &st.ps.entries {
        push(format!("student/{}", en.name), en.value.shape());
    }
    if let Some(t) = &st.teacher {
        for en in &t.entries {
            push(format!("teacher/{}", en.name), en.value.shape());
        }
    }
    for (name, t) in st.opt.export().1 {
        push(format!("optimizer/{name}"), t.shape());
    }
    for (k, shape) in &meta.state_keys {
        push(format!("state/{k}"), *shape);
    }
    io::load(e, &mut template, &dir.join(CHECKPOINT_FILE)).map_err(|err| {
        StageError::Failed(format!(
            "cannot resume from the checkpoint in {}: {err}",
            dir.display()
        ))
    })?;
    let by_name: HashMap<String, Tensor> = template
        .entries
        .into_iter()
        .map(|en| (en.name, en.value))
        .collect();
    for en in &mut st.ps.entries {
        en.value = by_name[&format!("student/{}", en.name)].clone();
    }
    if let Some(t) = &mut st.teacher {
        for en in &mut t.entries {
            en.value = by_name[&format!("teacher/{}", en.name)].clone();
        }
    }
    let opt: HashMap<String, Tensor> = by_name
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("optimizer/")
                .map(|n| (n.to_string(), v.clone()))
        })
        .collect();
    st.opt
        .import(meta.optimizer_steps, &opt)
        .map_err(StageError::Failed)?;
    st.objective_state = meta
        .state_keys
        .iter()
        .map(|(k, _)| (k.clone(), by_name[&format!("state/{k}")].clone()))
        .collect();
    st.history = meta.history;
    st.step = meta.step;
    Ok(Some(meta.epochs_done))
}
