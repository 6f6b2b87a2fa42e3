//! Every objective plugin, called through the host library as pretraining calls it, against
//! an independent f64 implementation of its paper's loss, plus a gradient check of the plugin
//! against central finite differences of itself.

use std::collections::HashMap;

use pretext::engine::{Engine, Tensor};
use pretext::plugins::{ObjectiveInstance, Registry, SearchPath, StepInputs};

use crate::support::{dylib_name, profile_dir};

const N: usize = 4;
const D: usize = 3;

/// Two views' worth of fixed, non-degenerate values (row-major `N x D`).
fn data(seed: u64) -> Vec<f64> {
    let mut rng = pretext_plugin::Rng::new(seed);
    (0..N * D).map(|_| rng.normal()).collect()
}

fn objective(lib: &str, name: &str, params: serde_json::Value) -> ObjectiveInstance {
    let path = profile_dir().join(dylib_name(lib));
    assert!(
        path.is_file(),
        "{} does not exist: run `cargo build --workspace` first",
        path.display()
    );
    let reg = Registry::discover(&SearchPath {
        files: vec![path],
        ..SearchPath::default()
    })
    .expect("load the library");
    let found = reg
        .objectives
        .get(name)
        .unwrap_or_else(|| panic!("the library provides `{name}`"));
    ObjectiveInstance::create(found, name, params.as_object().unwrap())
        .expect("create the objective")
}

/// Which input of the step a slot fills.
#[derive(Clone, Copy, PartialEq)]
enum Slot {
    Projections,
    Predictions,
    Targets,
    Inputs,
    Decoded,
    Originals,
}

/// Runs one loss call with the given per-slot values; returns the loss and the gradient with
/// respect to `wrt` (slot, view).
struct Harness {
    engine: Engine,
    obj: ObjectiveInstance,
    state: HashMap<String, Tensor>,
}

impl Harness {
    fn new(obj: ObjectiveInstance) -> Harness {
        Harness {
            engine: Engine::cpu(),
            obj,
            state: HashMap::new(),
        }
    }

    fn t(&self, v: &[f64]) -> Tensor {
        self.engine
            .tensor(v.iter().map(|&x| x as f32).collect(), N, D)
            .unwrap()
    }

    fn call(
        &mut self,
        slots: &[(Slot, Vec<Vec<f64>>)],
        wrt: Option<(Slot, usize)>,
    ) -> (f64, Option<Vec<f32>>) {
        let get = |s: Slot| -> Option<Vec<Tensor>> {
            slots
                .iter()
                .find(|(k, _)| *k == s)
                .map(|(_, vs)| vs.iter().map(|v| self.t(v)).collect())
        };
        let (proj, pred, targ, inp, dec, orig) = (
            get(Slot::Projections),
            get(Slot::Predictions),
            get(Slot::Targets),
            get(Slot::Inputs),
            get(Slot::Decoded),
            get(Slot::Originals),
        );
        let views = [&proj, &pred, &targ, &inp, &dec]
            .iter()
            .find_map(|s| s.as_ref().map(|v| v.len()))
            .unwrap_or(1);
        let emb: Vec<Tensor> = (0..views).map(|_| self.engine.zeros(N, D)).collect();
        let mut g = self.engine.graph(true);
        let inputs = StepInputs {
            projections: proj.as_deref(),
            predictions: pred.as_deref(),
            targets: targ.as_deref(),
            view_inputs: inp.as_deref(),
            originals: orig.as_ref().map(|o| &o[0]),
            decoded: dec.as_deref(),
            ..StepInputs::bare(&emb)
        };
        let out = self
            .obj
            .loss(&self.engine, &mut g, &inputs, &mut self.state)
            .expect("loss");
        let value = out.loss.scalar() as f64;
        let grad = wrt.map(|(slot, view)| {
            let t = match slot {
                Slot::Projections => proj.as_ref(),
                Slot::Predictions => pred.as_ref(),
                Slot::Targets => targ.as_ref(),
                Slot::Inputs => inp.as_ref(),
                Slot::Decoded => dec.as_ref(),
                Slot::Originals => orig.as_ref(),
            }
            .expect("the slot is filled")[view]
                .clone();
            g.backward(&out.loss).expect("backward").get(&t).to_vec()
        });
        (value, grad)
    }

    /// The analytic gradient of the slot against central differences of the plugin itself.
    /// Persistent state (a MoCo queue) is restored before every call, so all calls see the
    /// same state.
    fn check_gradient(&mut self, slots: Vec<(Slot, Vec<Vec<f64>>)>, wrt: (Slot, usize)) {
        let state = self.state.clone();
        let (_, grad) = self.call(&slots, Some(wrt));
        let grad = grad.unwrap();
        let h = 1e-3;
        for i in 0..N * D {
            let shifted = |delta: f64| {
                let mut s = slots.clone();
                let slot = s.iter_mut().find(|(k, _)| *k == wrt.0).unwrap();
                slot.1[wrt.1][i] += delta;
                s
            };
            self.state = state.clone();
            let plus = self.call(&shifted(h), None).0;
            self.state = state.clone();
            let minus = self.call(&shifted(-h), None).0;
            let fd = (plus - minus) / (2.0 * h);
            assert!(
                (fd - grad[i] as f64).abs() < 2e-2 * (1.0 + fd.abs()),
                "element {i}: finite difference {fd} vs gradient {}",
                grad[i]
            );
        }
        self.state = state;
    }
}

fn rows(v: &[f64]) -> Vec<&[f64]> {
    v.chunks(D).collect()
}
fn norm(r: &[f64]) -> Vec<f64> {
    let n = r.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-8);
    r.iter().map(|x| x / n).collect()
}
fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
fn cos(a: &[f64], b: &[f64]) -> f64 {
    dot(&norm(a), &norm(b))
}
fn close(a: f64, b: f64) {
    assert!(
        (a - b).abs() < 1e-4 * (1.0 + b.abs()),
        "plugin {a} vs reference {b}"
    );
}

#[test]
fn byol_matches_normalised_mse_to_the_other_views_target() {
    let (p0, p1, t0, t1) = (data(1), data(2), data(3), data(4));
    let reference = |p: &[f64], t: &[f64]| {
        rows(p)
            .iter()
            .zip(rows(t))
            .map(|(a, b)| 2.0 - 2.0 * cos(a, b))
            .sum::<f64>()
            / N as f64
    };
    let want = reference(&p0, &t1) + reference(&p1, &t0);
    let mut h = Harness::new(objective(
        "pretext_noncontrastive",
        "byol",
        serde_json::json!({}),
    ));
    let slots = vec![
        (Slot::Projections, vec![data(5), data(6)]),
        (Slot::Predictions, vec![p0, p1]),
        (Slot::Targets, vec![t0, t1]),
    ];
    close(h.call(&slots, None).0, want);
    h.check_gradient(slots.clone(), (Slot::Predictions, 0));
    // The target is behind a stop-gradient.
    let (_, g) = h.call(&slots, Some((Slot::Targets, 1)));
    assert!(g.unwrap().iter().all(|v| *v == 0.0));
}

#[test]
fn simsiam_matches_symmetrised_negative_cosine() {
    let (z0, z1, p0, p1) = (data(7), data(8), data(9), data(10));
    let d = |p: &[f64], z: &[f64]| {
        -rows(p)
            .iter()
            .zip(rows(z))
            .map(|(a, b)| cos(a, b))
            .sum::<f64>()
            / N as f64
    };
    let want = 0.5 * d(&p0, &z1) + 0.5 * d(&p1, &z0);
    let mut h = Harness::new(objective(
        "pretext_noncontrastive",
        "simsiam",
        serde_json::json!({}),
    ));
    let slots = vec![
        (Slot::Projections, vec![z0, z1]),
        (Slot::Predictions, vec![p0, p1]),
    ];
    close(h.call(&slots, None).0, want);
    h.check_gradient(slots.clone(), (Slot::Predictions, 1));
    let (_, g) = h.call(&slots, Some((Slot::Projections, 0)));
    assert!(
        g.unwrap().iter().all(|v| *v == 0.0),
        "projections are behind a stop-gradient"
    );
}

/// VICReg with its default weights (λ = μ = 25, ν = 1).
fn vicreg_reference(a: &[f64], b: &[f64]) -> f64 {
    let inv = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / (N * D) as f64;
    let stats = |z: &[f64]| -> (f64, f64) {
        let mean: Vec<f64> = (0..D)
            .map(|j| (0..N).map(|i| z[i * D + j]).sum::<f64>() / N as f64)
            .collect();
        let cov = |j: usize, k: usize| {
            (0..N)
                .map(|i| (z[i * D + j] - mean[j]) * (z[i * D + k] - mean[k]))
                .sum::<f64>()
                / (N - 1) as f64
        };
        let var = (0..D)
            .map(|j| (1.0 - (cov(j, j) + 1e-4).sqrt()).max(0.0))
            .sum::<f64>()
            / D as f64;
        let off = (0..D)
            .flat_map(|j| (0..D).map(move |k| (j, k)))
            .filter(|(j, k)| j != k)
            .map(|(j, k)| cov(j, k).powi(2))
            .sum::<f64>()
            / D as f64;
        (var, off)
    };
    let (va, ca) = stats(a);
    let (vb, cb) = stats(b);
    25.0 * inv + 25.0 * (va + vb) + (ca + cb)
}

#[test]
fn vicreg_matches_variance_invariance_covariance() {
    // Small values so the variance hinge is active (std < 1) in some dimensions.
    let a: Vec<f64> = data(11).iter().map(|v| v * 0.6).collect();
    let b: Vec<f64> = data(12).iter().map(|v| v * 0.6).collect();
    let mut h = Harness::new(objective(
        "pretext_noncontrastive",
        "vicreg",
        serde_json::json!({}),
    ));
    let slots = vec![(Slot::Projections, vec![a.clone(), b.clone()])];
    close(h.call(&slots, None).0, vicreg_reference(&a, &b));
    h.check_gradient(slots, (Slot::Projections, 0));
}

#[test]
fn barlow_twins_matches_cross_correlation_to_identity() {
    let (a, b) = (data(13), data(14));
    let lambda = 0.05;
    let standardise = |z: &[f64]| -> Vec<f64> {
        let mut out = z.to_vec();
        for j in 0..D {
            let mean = (0..N).map(|i| z[i * D + j]).sum::<f64>() / N as f64;
            let std = ((0..N).map(|i| (z[i * D + j] - mean).powi(2)).sum::<f64>() / N as f64
                + 1e-5)
                .sqrt();
            for i in 0..N {
                out[i * D + j] = (z[i * D + j] - mean) / std;
            }
        }
        out
    };
    let (sa, sb) = (standardise(&a), standardise(&b));
    let c =
        |j: usize, k: usize| (0..N).map(|i| sa[i * D + j] * sb[i * D + k]).sum::<f64>() / N as f64;
    let on: f64 = (0..D).map(|j| (1.0 - c(j, j)).powi(2)).sum();
    let off: f64 = (0..D)
        .flat_map(|j| (0..D).map(move |k| (j, k)))
        .filter(|(j, k)| j != k)
        .map(|(j, k)| c(j, k).powi(2))
        .sum();
    let mut h = Harness::new(objective(
        "pretext_noncontrastive",
        "barlow_twins",
        serde_json::json!({ "lambda": lambda }),
    ));
    let slots = vec![(Slot::Projections, vec![a, b])];
    close(h.call(&slots, None).0, on + lambda * off);
    h.check_gradient(slots, (Slot::Projections, 1));
}

#[test]
fn moco_matches_info_nce_against_the_queue_of_earlier_keys() {
    let tau = 0.2;
    // A queue of exactly one step's keys: after step 1 it holds [k0; k1] of step 1.
    let mut h = Harness::new(objective(
        "pretext_contrastive",
        "moco",
        serde_json::json!({ "temperature": tau, "queue_size": 2 * N, "projector_dim": D }),
    ));
    let (k0, k1) = (data(15), data(16));
    h.call(
        &[
            (Slot::Projections, vec![data(17), data(18)]),
            (Slot::Targets, vec![k0.clone(), k1.clone()]),
        ],
        None,
    );
    let queue: Vec<Vec<f64>> = rows(&k0).into_iter().chain(rows(&k1)).map(norm).collect();
    let (q0, q1, t0, t1) = (data(19), data(20), data(21), data(22));
    let info_nce = |q: &[f64], k: &[f64]| -> f64 {
        rows(q)
            .iter()
            .zip(rows(k))
            .map(|(qi, ki)| {
                let qn = norm(qi);
                let pos = dot(&qn, &norm(ki)) / tau;
                let negs: Vec<f64> = queue.iter().map(|n| dot(&qn, n) / tau).collect();
                let lse = (pos.exp() + negs.iter().map(|v| v.exp()).sum::<f64>()).ln();
                lse - pos
            })
            .sum::<f64>()
            / N as f64
    };
    let want = 0.5 * (info_nce(&q0, &t1) + info_nce(&q1, &t0));
    let slots = vec![
        (Slot::Projections, vec![q0, q1]),
        (Slot::Targets, vec![t0, t1]),
    ];
    let state = h.state.clone();
    close(h.call(&slots, None).0, want);
    h.state = state;
    h.check_gradient(slots, (Slot::Projections, 0));
}

#[test]
fn autoencoders_match_pixel_mse() {
    let (x, y, o) = (data(23), data(24), data(25));
    let mse = |a: &[f64], b: &[f64]| {
        a.iter().zip(b).map(|(p, q)| (p - q).powi(2)).sum::<f64>() / (N * D) as f64
    };
    let mut ae = Harness::new(objective(
        "pretext_generative",
        "autoencoder",
        serde_json::json!({}),
    ));
    let slots = vec![
        (Slot::Inputs, vec![x.clone()]),
        (Slot::Decoded, vec![y.clone()]),
    ];
    close(ae.call(&slots, None).0, mse(&y, &x));
    ae.check_gradient(slots, (Slot::Decoded, 0));
    let mut dae = Harness::new(objective(
        "pretext_generative",
        "denoising_autoencoder",
        serde_json::json!({}),
    ));
    let slots = vec![
        (Slot::Inputs, vec![x]),
        (Slot::Decoded, vec![y.clone()]),
        (Slot::Originals, vec![o.clone()]),
    ];
    close(dae.call(&slots, None).0, mse(&y, &o));
    dae.check_gradient(slots, (Slot::Decoded, 0));
}

#[test]
fn mae_matches_masked_patch_mse() {
    let engine = Engine::cpu();
    let (pred, target) = (data(26), data(27));
    // Patches 1 and 3 are hidden from the encoder.
    let mask: [f32; N] = [0.0, 1.0, 0.0, 1.0];
    let reference = |norm_pix: bool| -> f64 {
        let rows_t: Vec<Vec<f64>> = rows(&target)
            .iter()
            .map(|r| {
                if !norm_pix {
                    return r.to_vec();
                }
                let m = r.iter().sum::<f64>() / D as f64;
                let var = r.iter().map(|x| (x - m).powi(2)).sum::<f64>() / D as f64;
                r.iter().map(|x| (x - m) / (var + 1e-6).sqrt()).collect()
            })
            .collect();
        let per: Vec<f64> = rows(&pred)
            .iter()
            .zip(&rows_t)
            .map(|(p, t)| p.iter().zip(t).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / D as f64)
            .collect();
        per.iter().zip(mask).map(|(l, m)| l * m as f64).sum::<f64>() / 2.0
    };
    for norm_pix in [false, true] {
        let obj = objective(
            "pretext_masked",
            "mae",
            serde_json::json!({ "mask_ratio": 0.5, "norm_pix": norm_pix }),
        );
        assert_eq!(obj.needs().unwrap().mask_ratio, Some(0.5));
        let mut obj = obj;
        let run = |obj: &mut ObjectiveInstance, pred: &[f64]| -> (f64, Vec<f32>) {
            let p = engine
                .tensor(pred.iter().map(|&x| x as f32).collect(), N, D)
                .unwrap();
            let t = engine
                .tensor(target.iter().map(|&x| x as f32).collect(), N, D)
                .unwrap();
            let m = engine.tensor(mask.to_vec(), N, 1).unwrap();
            let emb = [engine.zeros(N, D)];
            let mut g = engine.graph(true);
            let inputs = StepInputs {
                masked_patches: Some((&p, &t, &m)),
                ..StepInputs::bare(&emb)
            };
            let out = obj
                .loss(&engine, &mut g, &inputs, &mut HashMap::new())
                .expect("mae loss");
            let value = out.loss.scalar() as f64;
            (value, g.backward(&out.loss).unwrap().get(&p).to_vec())
        };
        let (value, grad) = run(&mut obj, &pred);
        close(value, reference(norm_pix));
        for i in 0..N * D {
            let h = 1e-3;
            let (mut plus, mut minus) = (pred.clone(), pred.clone());
            plus[i] += h;
            minus[i] -= h;
            let fd = (run(&mut obj, &plus).0 - run(&mut obj, &minus).0) / (2.0 * h);
            assert!(
                (fd - grad[i] as f64).abs() < 2e-2 * (1.0 + fd.abs()),
                "element {i}: {fd} vs {}",
                grad[i]
            );
            if mask[i / D] == 0.0 {
                assert_eq!(grad[i], 0.0, "visible patches carry no loss");
            }
        }
    }
}

/// DINO in plain f64: cosine logits against column-normalised prototypes; per global view g
/// the teacher's softmax((logits - centre) / τ_t), per view v ≠ g the student's log-softmax
/// (logits / τ_s); the mean cross-entropy over those pairs. Returns the loss and the centre
/// after the step.
fn dino_reference(
    student: &[Vec<f64>],
    teacher: &[Vec<f64>],
    w_s: &[f64],
    w_t: &[f64],
    k: usize,
    centre: &[f64],
    (tau_s, tau_t, m): (f64, f64, f64),
) -> (f64, Vec<f64>) {
    let logits = |x: &[f64], w: &[f64]| -> Vec<Vec<f64>> {
        let cols: Vec<Vec<f64>> = (0..k)
            .map(|j| norm(&(0..D).map(|i| w[i * k + j]).collect::<Vec<_>>()))
            .collect();
        rows(x)
            .iter()
            .map(|r| cols.iter().map(|c| dot(&norm(r), c)).collect())
            .collect()
    };
    let softmax = |r: &[f64]| -> Vec<f64> {
        let mx = r.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = r.iter().map(|v| (v - mx).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    };
    let t_logits: Vec<Vec<Vec<f64>>> = teacher.iter().map(|t| logits(t, w_t)).collect();
    let mut total = 0.0;
    let mut pairs = 0;
    for (g, tl) in t_logits.iter().enumerate() {
        for (v, s) in student.iter().enumerate() {
            if v == g {
                continue;
            }
            let sl = logits(s, w_s);
            let mut ce = 0.0;
            for (trow, srow) in tl.iter().zip(&sl) {
                let p = softmax(
                    &trow
                        .iter()
                        .zip(centre)
                        .map(|(a, c)| (a - c) / tau_t)
                        .collect::<Vec<_>>(),
                );
                let q = softmax(&srow.iter().map(|a| a / tau_s).collect::<Vec<_>>());
                ce -= p.iter().zip(&q).map(|(a, b)| a * b.ln()).sum::<f64>();
            }
            total += ce / N as f64;
            pairs += 1;
        }
    }
    let rows_all: Vec<&Vec<f64>> = t_logits.iter().flatten().collect();
    let next = (0..k)
        .map(|j| {
            let mean = rows_all.iter().map(|r| r[j]).sum::<f64>() / rows_all.len() as f64;
            m * centre[j] + (1.0 - m) * mean
        })
        .collect();
    (total / pairs as f64, next)
}

#[test]
fn dino_matches_centred_sharpened_self_distillation_over_multi_crop_views() {
    const K: usize = 5;
    let obj = objective(
        "pretext_noncontrastive",
        "dino",
        serde_json::json!({ "out_dim": K, "projector_dim": D, "teacher_temp": 0.5,
                            "student_temp": 0.3, "centre_momentum": 0.8 }),
    );
    let needs = obj.needs().expect("needs");
    assert_eq!(
        (needs.views, needs.more_views, needs.teacher_views),
        (2, true, Some(2))
    );
    assert_eq!(needs.params.len(), 1);
    assert_eq!(
        (
            needs.params[0].name.as_str(),
            needs.params[0].rows,
            needs.params[0].cols
        ),
        ("prototypes", D, K)
    );
    let mut h = Harness::new(obj);
    let mut rng = pretext_plugin::Rng::new(11);
    let w_s: Vec<f64> = (0..D * K).map(|_| rng.normal()).collect();
    let w_t: Vec<f64> = (0..D * K).map(|_| rng.normal()).collect();
    // Two global views and one local view for the student; the teacher sees the global two.
    let student = vec![data(21), data(22), data(23)];
    let teacher = vec![data(24), data(25)];
    let e = &h.engine;
    let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let ws = e.tensor(f32s(&w_s), D, K).unwrap();
    let wt = e.tensor(f32s(&w_t), D, K).unwrap();
    let s_t: Vec<Tensor> = student.iter().map(|v| h.t(v)).collect();
    let t_t: Vec<Tensor> = teacher.iter().map(|v| h.t(v)).collect();
    let emb: Vec<Tensor> = (0..3).map(|_| e.zeros(N, D)).collect();
    let params = [("prototypes".to_string(), ws.clone())];
    let teacher_params = [("prototypes".to_string(), wt.clone())];
    let mut centre = vec![0.0; K];
    for step in 0..2 {
        let mut g = h.engine.graph(true);
        let inputs = StepInputs {
            projections: Some(&s_t),
            targets: Some(&t_t),
            step,
            total_steps: 2,
            params: &params,
            teacher_params: &teacher_params,
            ..StepInputs::bare(&emb)
        };
        let out = h
            .obj
            .loss(&h.engine, &mut g, &inputs, &mut h.state)
            .expect("loss");
        let (want, next) =
            dino_reference(&student, &teacher, &w_s, &w_t, K, &centre, (0.3, 0.5, 0.8));
        close(out.loss.scalar() as f64, want);
        // The centre the plugin kept is the reference's EMA of the teacher logits.
        let kept = h.state.get("centre").expect("the centre is state").to_vec();
        for (a, b) in kept.iter().zip(&next) {
            close(*a as f64, *b);
        }
        centre = next;
        // Gradients reach the student's prototypes and views, never the teacher's.
        let mut grads = g.backward(&out.loss).expect("backward");
        assert!(grads.get(&ws).to_vec().iter().any(|v| *v != 0.0));
        assert!(grads.get(&s_t[2]).to_vec().iter().any(|v| *v != 0.0));
        assert!(grads.get(&wt).to_vec().iter().all(|v| *v == 0.0));
        assert!(grads.get(&t_t[0]).to_vec().iter().all(|v| *v == 0.0));
    }
    assert!(
        centre.iter().any(|c| *c != 0.0),
        "the second step saw a centre"
    );
}

#[test]
fn dino_refuses_bad_parameters_with_their_names() {
    let reg_err = |params: serde_json::Value| {
        let path = profile_dir().join(dylib_name("pretext_noncontrastive"));
        let reg = Registry::discover(&SearchPath {
            files: vec![path],
            ..SearchPath::default()
        })
        .unwrap();
        let found = reg.objectives.get("dino").unwrap();
        ObjectiveInstance::create(found, "dino", params.as_object().unwrap())
            .err()
            .expect("refused")
            .to_string()
    };
    assert!(reg_err(serde_json::json!({ "teacher_temp": 0.0 })).contains("teacher_temp"));
    assert!(reg_err(serde_json::json!({ "out_dim": 1 })).contains("out_dim"));
    assert!(reg_err(serde_json::json!({ "centre_momentum": 1.0 })).contains("centre_momentum"));
}

/// I-JEPA's loss in f64: the mean over every value of smooth L1 (β = 1) or the squared
/// difference between predictions and layer-normalised (eps 1e-6) targets.
fn ijepa_reference(pred: &[f64], target: &[f64], cols: usize, smooth_l1: bool) -> f64 {
    let mut total = 0.0;
    for (p, t) in pred.chunks(cols).zip(target.chunks(cols)) {
        let mean = t.iter().sum::<f64>() / cols as f64;
        let var = t.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / cols as f64;
        for (a, b) in p.iter().zip(t) {
            let d = (a - (b - mean) / (var + 1e-6).sqrt()).abs();
            total += match smooth_l1 {
                true if d < 1.0 => 0.5 * d * d,
                true => d - 0.5,
                false => d * d,
            };
        }
    }
    total / pred.len() as f64
}

#[test]
fn ijepa_matches_the_distance_to_layer_normalised_teacher_embeddings() {
    for (loss, smooth) in [("smooth_l1", true), ("mse", false)] {
        let obj = objective(
            "pretext_masked",
            "ijepa",
            serde_json::json!({ "loss": loss, "blocks": 2 }),
        );
        let needs = obj.needs().expect("needs");
        assert_eq!(needs.views, 1);
        assert!(needs.ema_teacher.is_some());
        assert_eq!(needs.latent.map(|l| l.blocks), Some(2));
        let mut h = Harness::new(obj);
        // Predictions far enough from the targets that both branches of smooth L1 are taken.
        let (rows, cols) = (6, 5);
        let mut rng = pretext_plugin::Rng::new(31);
        let pred: Vec<f64> = (0..rows * cols).map(|_| 2.0 * rng.normal()).collect();
        let target: Vec<f64> = (0..rows * cols).map(|_| 3.0 + rng.normal()).collect();
        let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let p = h.engine.tensor(f32s(&pred), rows, cols).unwrap();
        let t = h.engine.tensor(f32s(&target), rows, cols).unwrap();
        let emb = [h.engine.zeros(N, D)];
        let mut g = h.engine.graph(true);
        let inputs = StepInputs {
            latent: Some((&p, &t)),
            ..StepInputs::bare(&emb)
        };
        let out = h
            .obj
            .loss(&h.engine, &mut g, &inputs, &mut h.state)
            .expect("loss");
        close(
            out.loss.scalar() as f64,
            ijepa_reference(&pred, &target, cols, smooth),
        );
        let reported: Vec<&str> = out.reports.iter().map(|(k, _)| k.as_str()).collect();
        assert!(reported.contains(&"pred_std") && reported.contains(&"target_std"));
        // The predictions learn; the teacher's embeddings are a fixed target.
        let mut grads = g.backward(&out.loss).expect("backward");
        assert!(grads.get(&p).to_vec().iter().any(|v| *v != 0.0));
        assert!(grads.get(&t).to_vec().iter().all(|v| *v == 0.0));
    }
}
