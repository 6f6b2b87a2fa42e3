//! Measurements of representations and models that several stages share: linear and kNN
//! probes, out-of-distribution scores, the corruption suite and the collapse monitor. Pure
//! computation over embeddings and datasets: nothing here reads or writes store entries.

pub mod collapse;
pub mod corruptions;
pub mod ood;
pub mod probes;

/// Each row of a row-major `(n, d)` matrix divided by its L2 norm (in f32; rows of norm
/// below 1e-12 are divided by 1e-12): the cosine geometry the kNN probe and score use.
pub fn unit_rows(x: &[f32], d: usize) -> Vec<f32> {
    x.chunks(d)
        .flat_map(|r| {
            let n = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            r.iter().map(move |v| v / n)
        })
        .collect()
}
