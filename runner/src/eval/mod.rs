//! Measurements of representations and models that several stages share: linear and kNN
//! probes, out-of-distribution scores, the corruption suite and the collapse monitor. Pure
//! computation over embeddings and datasets: nothing here reads or writes store entries.

pub mod collapse;
pub mod corruptions;
pub mod ood;
pub mod probes;
