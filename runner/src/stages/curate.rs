//! `curate`: audits a dataset (work in progress).

use super::{Metrics, StageCtx, StageError};
use crate::pipeline::CurateConfig;

pub fn run(_cfg: &CurateConfig, _ctx: &StageCtx) -> Result<Metrics, StageError> {
    Err(StageError::Input("curate is not implemented yet".into()))
}
