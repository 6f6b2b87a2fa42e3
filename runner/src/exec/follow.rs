//! A data-parallel run as the ranks other than 0 see it. Rank 0 runs [`super::run`] as a
//! single process would (the store's locks, every stage, commits, `pretext.lock`, the run log);
//! a follower plans the same pipeline against the same store, trains every pretrain stage
//! that runs alongside rank 0 (its share of each batch, the collectives in the step) and
//! writes nothing to the store: its copy of the stage's output goes to a scratch folder that
//! is removed, and it reads rank 0's committed entries as the next stages' inputs.
//!
//! The ranks meet at barriers: after rank 0 has joined the store and planned (then the
//! followers plan), once every rank has planned (so rank 0 commits nothing before), and after
//! each stage that runs (its entry committed). Before each stage the plan did not find, rank
//! 0 tells them whether it runs it (it holds the entry lock) or found it committed meanwhile
//! by another run on the store. Any rank's error ends all of them
//! (`launch::exit`), so a follower never waits for a rank that is gone.

use std::collections::HashMap;
use std::path::PathBuf;

use super::{
    checkpoint_dir, group_engine, plan, registry, selected, stage_input_error, stage_inputs,
    sync_ranks, Options,
};
use crate::engine::Engine;
use crate::error::AppError;
use crate::pipeline::{Pipeline, StageKind};
use crate::stages::{self, StageCtx};
use crate::store::{Entry, Store};

/// Follow rank 0 through `p` (see the module's documentation).
pub fn follow(p: &Pipeline, opts: &Options) -> Result<(), AppError> {
    let engine = Engine::open(opts.device).map_err(|e| AppError::Input(e.to_string()))?;
    let reg = registry(Some(p), &opts.plugin_dirs)?;
    // Rank 0 has opened (or made) the store, holds the writer lock and has planned.
    sync_ranks();
    let store = Store::existing(&p.store_dir).ok_or_else(|| {
        AppError::Failed(format!(
            "rank 0's store {} is not visible from this rank: data-parallel ranks need one shared store (a shared file system on a cluster)",
            p.store_dir.display()
        ))
    })?;
    let planned = plan(p, &reg, Some(&store), opts.device)?;
    let only = selected(p, &opts.only, &planned)?;
    sync_ranks();
    let scratch = std::env::temp_dir().join(format!(
        "pretext-rank{}-{}",
        crate::launch::rank(),
        std::process::id()
    ));
    let quiet = super::progress::Reporter::new(false);
    let mut entries: HashMap<String, PathBuf> = HashMap::new();
    let mut by_stage: HashMap<String, Entry> = HashMap::new();
    let result = (|| -> Result<(), AppError> {
        for pl in &planned {
            let stage = pl.stage;
            let chosen = only
                .as_ref()
                .is_none_or(|o| o.contains(stage.name.as_str()));
            if let Some(e) = &pl.cached {
                entries.insert(e.meta.key.to_hex(), e.path.clone());
                by_stage.insert(stage.name.clone(), e.clone());
                continue;
            }
            if !chosen {
                continue;
            }
            // Rank 0 says whether it runs the stage or found it committed by another run.
            let runs = super::agree_ranks(false);
            if runs && stage.kind == StageKind::Pretrain {
                let out = scratch.join(&stage.name);
                std::fs::create_dir_all(&out)
                    .map_err(|e| AppError::Failed(format!("{}: {e}", out.display())))?;
                let ckpt = checkpoint_dir(&store, pl);
                let grouped = group_engine(stage, &engine)?;
                let ctx = StageCtx {
                    // Read to resume as rank 0 does; only rank 0 writes checkpoints.
                    checkpoint_dir: Some(&ckpt),
                    engine: grouped.as_ref().unwrap_or(&engine),
                    registry: &reg,
                    seed: p.seed,
                    out_dir: &out,
                    inputs: stage_inputs(stage, &by_stage),
                    entries: &entries,
                    progress: &quiet,
                };
                stages::run(stage, &ctx).map_err(|e| stage_input_error(stage, e))?;
            }
            if runs {
                // Rank 0 has committed the stage's entry.
                sync_ranks();
            }
            let entry = store.lookup(stage.kind.as_str(), &pl.key).ok_or_else(|| {
                AppError::Failed(format!(
                    "stage `{}`: rank 0 committed no entry {} in {}; was the store changed by another process during the run?",
                    stage.name,
                    pl.key.to_hex(),
                    store.root().display()
                ))
            })?;
            entries.insert(entry.meta.key.to_hex(), entry.path.clone());
            by_stage.insert(stage.name.clone(), entry);
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}
