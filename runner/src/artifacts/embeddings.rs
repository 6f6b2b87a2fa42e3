//! The embeddings artifact of a probe stage: `embeddings.parquet`, one row per sample (id,
//! split, label, the encoder's embedding), for users' own analyses.

pub const EMBEDDINGS_FILE: &str = "embeddings.parquet";
