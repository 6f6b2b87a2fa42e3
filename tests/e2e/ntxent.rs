//! The SimCLR plugin's NT-Xent, called through the host library exactly as pretraining calls
//! it, against the formula computed here in plain f64: the loss value, the reported positive
//! cosine, and the gradient (checked against central finite differences).

use std::collections::HashMap;

use pretext::engine::{Engine, Graph, Tensor};
use pretext::plugins::{ObjectiveInstance, Registry, SearchPath, StepInputs};

use crate::support::{dylib_name, profile_dir};

const N: usize = 3;
const D: usize = 2;
const A: [f64; N * D] = [1.0, 2.0, -0.5, 1.5, 2.0, -1.0];
const B: [f64; N * D] = [0.8, 2.2, -1.0, 1.0, 1.5, -0.5];

/// NT-Xent over the 2N rows of `[a; b]`: normalise rows, similarities / τ, drop the
/// self-similarity, cross-entropy with the other view (row i ± N) as the target, mean over 2N.
fn nt_xent(a: &[f64], b: &[f64], tau: f64) -> f64 {
    let rows: Vec<Vec<f64>> = a
        .chunks(D)
        .chain(b.chunks(D))
        .map(|r| {
            let norm = r.iter().map(|v| v * v).sum::<f64>().sqrt();
            r.iter().map(|v| v / norm).collect()
        })
        .collect();
    let m = 2 * N;
    let dot =
        |i: usize, j: usize| -> f64 { rows[i].iter().zip(&rows[j]).map(|(x, y)| x * y).sum() };
    let mut total = 0.0;
    for i in 0..m {
        let pos = (i + N) % m;
        let lse = (0..m)
            .filter(|&j| j != i)
            .map(|j| (dot(i, j) / tau).exp())
            .sum::<f64>()
            .ln();
        total += lse - dot(i, pos) / tau;
    }
    total / m as f64
}

/// Mean cosine similarity of the positive pairs (what the plugin reports).
fn positive_cosine(a: &[f64], b: &[f64]) -> f64 {
    let cos = |x: &[f64], y: &[f64]| {
        let n = |v: &[f64]| v.iter().map(|t| t * t).sum::<f64>().sqrt();
        x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>() / (n(x) * n(y))
    };
    a.chunks(D)
        .zip(b.chunks(D))
        .map(|(x, y)| cos(x, y))
        .sum::<f64>()
        / N as f64
}

fn tensor(engine: &Engine, v: &[f64]) -> Tensor {
    engine
        .tensor(v.iter().map(|&x| x as f32).collect(), N, D)
        .expect("a 3x2 tensor")
}

struct Simclr {
    engine: Engine,
    obj: ObjectiveInstance,
}

impl Simclr {
    fn new(temperature: f64) -> Simclr {
        let lib = profile_dir().join(dylib_name("pretext_contrastive"));
        assert!(
            lib.is_file(),
            "{} does not exist: run `cargo build --workspace` first",
            lib.display()
        );
        let search = SearchPath {
            files: vec![lib],
            ..SearchPath::default()
        };
        let reg = Registry::discover(&search).expect("load libpretext_contrastive");
        let found = reg
            .objectives
            .get("simclr")
            .expect("the library provides `simclr`");
        let params = serde_json::json!({
            "temperature": temperature,
            "projector_hidden": 4,
            "projector_dim": D,
        });
        let obj = ObjectiveInstance::create(found, "simclr", params.as_object().unwrap())
            .expect("create simclr");
        let needs = obj.needs().expect("simclr needs");
        assert_eq!(needs.views, 2);
        assert_eq!(needs.projector.map(|p| p.1), Some(D));
        Simclr {
            engine: Engine::cpu(),
            obj,
        }
    }

    /// The loss (and reports) on `graph` for projections `a`, `b`.
    fn loss(&mut self, graph: &mut Graph, a: &Tensor, b: &Tensor) -> (Tensor, Vec<(String, f32)>) {
        let embeddings = [self.engine.zeros(N, 4), self.engine.zeros(N, 4)];
        let projections = [a.clone(), b.clone()];
        let inputs = StepInputs {
            projections: Some(&projections),
            ..StepInputs::bare(&embeddings)
        };
        let mut state = HashMap::new();
        let out = self
            .obj
            .loss(&self.engine, graph, &inputs, &mut state)
            .expect("simclr loss");
        assert!(state.is_empty(), "simclr keeps no state");
        let reports = out
            .reports
            .into_iter()
            .map(|(k, v)| (k, v.scalar()))
            .collect();
        (out.loss, reports)
    }

    fn value(&mut self, a: &[f64], b: &[f64]) -> f64 {
        let (ta, tb) = (tensor(&self.engine, a), tensor(&self.engine, b));
        let mut g = self.engine.graph(false);
        let (loss, _) = self.loss(&mut g, &ta, &tb);
        assert_eq!(loss.shape(), (1, 1));
        loss.scalar() as f64
    }
}

#[test]
fn simclr_nt_xent_matches_the_formula() {
    for tau in [0.5, 0.1] {
        let mut s = Simclr::new(tau);
        let got = s.value(&A, &B);
        let want = nt_xent(&A, &B, tau);
        assert!(
            (got - want).abs() < 1e-4,
            "τ = {tau}: plugin loss {got}, formula {want}"
        );

        // Identical views of orthogonal rows: the positive is the best logit but not certain.
        let got = s.value(&A, &A);
        let want = nt_xent(&A, &A, tau);
        assert!(
            (got - want).abs() < 1e-4,
            "τ = {tau}, a = b: plugin {got}, formula {want}"
        );
    }
}

#[test]
fn simclr_gradient_matches_finite_differences() {
    let tau = 0.5;
    let mut s = Simclr::new(tau);
    let (ta, tb) = (tensor(&s.engine, &A), tensor(&s.engine, &B));
    let mut g = s.engine.graph(true);
    let (loss, reports) = s.loss(&mut g, &ta, &tb);
    let value = loss.scalar() as f64;
    assert!((value - nt_xent(&A, &B, tau)).abs() < 1e-4);
    let reported: HashMap<String, f32> = reports.into_iter().collect();
    let cos = reported
        .get("positive_cosine")
        .copied()
        .expect("simclr reports positive_cosine");
    assert!(
        (cos as f64 - positive_cosine(&A, &B)).abs() < 1e-5,
        "positive_cosine {cos}"
    );

    let mut grads = g.backward(&loss).expect("backward");
    let grad_a = grads.get(&ta).to_vec();
    let grad_b = grads.get(&tb).to_vec();
    assert_eq!((grad_a.len(), grad_b.len()), (N * D, N * D));

    for k in 0..N * D {
        // Through the plugin (f32), and on the f64 formula (tight).
        let h = 5e-3;
        let (mut plus, mut minus) = (A, A);
        plus[k] += h;
        minus[k] -= h;
        let fd_plugin = (s.value(&plus, &B) - s.value(&minus, &B)) / (2.0 * h);
        let h = 1e-6;
        let (mut plus, mut minus) = (A, A);
        plus[k] += h;
        minus[k] -= h;
        let fd_formula = (nt_xent(&plus, &B, tau) - nt_xent(&minus, &B, tau)) / (2.0 * h);
        let analytic = grad_a[k] as f64;
        assert!(
            (analytic - fd_formula).abs() < 1e-4,
            "d loss / d a[{k}]: backward {analytic}, finite differences of the formula {fd_formula}"
        );
        assert!(
            (analytic - fd_plugin).abs() < 2e-3,
            "d loss / d a[{k}]: backward {analytic}, finite differences of the plugin {fd_plugin}"
        );
    }
    // The gradient is not trivially zero, and the second view gets one too.
    assert!(grad_a.iter().any(|g| g.abs() > 1e-3), "{grad_a:?}");
    assert!(grad_b.iter().any(|g| g.abs() > 1e-3), "{grad_b:?}");
}
