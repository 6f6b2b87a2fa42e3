//! The op suite: values and finite-difference gradients of the engine's training ops, on every
//! device this build can open: the CPU's fast path, the CPU running the device-generic path
//! (the code a GPU runs), and CUDA devices where they open; plus parity of every composed op
//! of the generic path with the fast path.
//!
//! Each case builds a scalar `loss = Σ r ⊙ op(inputs)` with fixed random `r` (so every output
//! element matters), takes the engine's gradient of every input and compares it with central
//! differences of the same function evaluated without a tape.

use super::conv::{ConvSpec, Geometry};
use super::graph::Axis2;
use super::nn::{BatchNorm, ParamStore};
use super::{DeviceKind, Engine, Graph, Tensor};

/// The devices to run the suite on: the CPU (fast and generic paths) always; CUDA devices
/// when they open.
fn devices() -> Vec<Engine> {
    let mut out = vec![
        Engine::cpu(),
        Engine::open(DeviceKind::CpuGeneric).expect("the CPU always opens"),
    ];
    for n in 0..2 {
        if let Ok(e) = Engine::open(DeviceKind::Cuda(n)) {
            out.push(e);
        }
    }
    out
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

type Op = dyn Fn(&mut Graph, &[Tensor]) -> Tensor;

/// Check `op`'s forward against `reference` (host values, if given) and its gradient with
/// respect to each input against central finite differences.
fn check(e: &Engine, name: &str, shapes: &[(usize, usize)], op: &Op, tol: f64) {
    let inputs: Vec<Vec<f32>> = shapes
        .iter()
        .enumerate()
        .map(|(i, (r, c))| values(r * c, 17 + i as u64))
        .collect();
    let make = |vals: &[Vec<f32>]| -> Vec<Tensor> {
        vals.iter()
            .zip(shapes)
            .map(|(v, (r, c))| e.tensor(v.clone(), *r, *c).unwrap())
            .collect()
    };
    let ts = make(&inputs);
    let mut g = e.graph(true);
    let y = op(&mut g, &ts);
    let (yr, yc) = y.shape();
    let rv = values(yr * yc, 99);
    let r = e.tensor(rv.clone(), yr, yc).unwrap();
    let weighted = g.mul(&y, &r).unwrap();
    let loss = g.sum(&weighted, Axis2::All).unwrap();
    let mut grads = g.backward(&loss).unwrap();
    let f = |vals: &[Vec<f32>]| -> f64 {
        let ts = make(vals);
        let mut g = e.graph(false);
        let y = op(&mut g, &ts).to_vec();
        y.iter().zip(&rv).map(|(a, b)| *a as f64 * *b as f64).sum()
    };
    for (k, t) in ts.iter().enumerate() {
        let grad = grads.get(t).to_vec();
        assert_eq!(
            grad.len(),
            inputs[k].len(),
            "{name}: gradient size of input {k}"
        );
        // Up to 24 probed elements per input, spread over the tensor.
        let n = inputs[k].len();
        let step = (n / 24).max(1);
        for i in (0..n).step_by(step) {
            let h = 1e-2f32;
            let mut p = inputs.to_vec();
            p[k][i] += h;
            let mut m = inputs.to_vec();
            m[k][i] -= h;
            let fd = (f(&p) - f(&m)) / (2.0 * h as f64);
            let got = grad[i] as f64;
            assert!(
                (fd - got).abs() <= tol * (1.0 + fd.abs()),
                "{name}: d/d input{k}[{i}]: finite difference {fd}, engine {got}"
            );
        }
    }
}

fn close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

#[test]
fn matmul_linear_and_elementwise_gradients() {
    for e in devices() {
        check(
            &e,
            "matmul",
            &[(5, 7), (7, 3)],
            &|g, t| g.matmul(&t[0], &t[1]).unwrap(),
            2e-2,
        );
        check(
            &e,
            "linear",
            &[(6, 4), (4, 5), (1, 5)],
            &|g, t| g.linear(&t[0], &t[1], &t[2]).unwrap(),
            2e-2,
        );
        check(&e, "relu", &[(4, 9)], &|g, t| g.relu(&t[0]).unwrap(), 2e-2);
        check(
            &e,
            "cross_entropy",
            &[(5, 7)],
            &|g, t| g.cross_entropy(&t[0], &[0, 6, 3, 3, 1]).unwrap(),
            2e-2,
        );
        check(&e, "gelu", &[(4, 9)], &|g, t| g.gelu(&t[0]).unwrap(), 2e-2);
        check(
            &e,
            "add",
            &[(3, 5), (3, 5)],
            &|g, t| g.add(&t[0], &t[1]).unwrap(),
            2e-2,
        );
        // Broadcasting each way, for each binary op.
        for (sa, sb) in [
            ((3, 5), (1, 5)),
            ((3, 5), (3, 1)),
            ((1, 1), (3, 5)),
            ((1, 5), (3, 1)),
        ] {
            check(
                &e,
                "add bcast",
                &[sa, sb],
                &|g, t| g.add(&t[0], &t[1]).unwrap(),
                2e-2,
            );
            check(
                &e,
                "sub bcast",
                &[sa, sb],
                &|g, t| g.sub(&t[0], &t[1]).unwrap(),
                2e-2,
            );
            check(
                &e,
                "mul bcast",
                &[sa, sb],
                &|g, t| g.mul(&t[0], &t[1]).unwrap(),
                2e-2,
            );
            // Keep divisors away from zero: 2 + b².
            check(
                &e,
                "div bcast",
                &[sa, sb],
                &|g, t| {
                    let b2 = g.square(&t[1]).unwrap();
                    let d = g.add_scalar(&b2, 2.0).unwrap();
                    g.div(&t[0], &d).unwrap()
                },
                2e-2,
            );
        }
        check(
            &e,
            "l2_normalize rows",
            &[(4, 6)],
            &|g, t| g.l2_normalize(&t[0], Axis2::Cols, 1e-8).unwrap(),
            2e-2,
        );
        check(
            &e,
            "l2_normalize columns",
            &[(4, 6)],
            &|g, t| g.l2_normalize(&t[0], Axis2::Rows, 1e-8).unwrap(),
            2e-2,
        );
        // The same tensor twice in one op shares one gradient buffer.
        check(
            &e,
            "x + x",
            &[(3, 5)],
            &|g, t| g.add(&t[0], &t[0]).unwrap(),
            2e-2,
        );
        check(
            &e,
            "x · x",
            &[(4, 4)],
            &|g, t| g.matmul(&t[0], &t[0]).unwrap(),
            2e-2,
        );
    }
}

#[test]
fn linear_matches_matmul_plus_bias() {
    for e in devices() {
        let x = e.tensor(values(12 * 9, 1), 12, 9).unwrap();
        let w = e.tensor(values(9 * 4, 2), 9, 4).unwrap();
        let b = e.tensor(values(4, 3), 1, 4).unwrap();
        let mut g = e.graph(false);
        let fused = g.linear(&x, &w, &b).unwrap().to_vec();
        let (xv, wv, bv) = (x.to_vec(), w.to_vec(), b.to_vec());
        let mut direct = vec![0f32; 12 * 4];
        for i in 0..12 {
            for j in 0..4 {
                direct[i * 4 + j] =
                    bv[j] + (0..9).map(|k| xv[i * 9 + k] * wv[k * 4 + j]).sum::<f32>();
            }
        }
        close(&fused, &direct, 1e-5, "linear");
    }
}

fn geometries() -> Vec<(Geometry, ConvSpec)> {
    let geo = |batch, height, width, channels| Geometry {
        batch,
        height,
        width,
        channels,
    };
    let spec = |kernel, stride, padding| ConvSpec {
        kernel,
        stride,
        padding,
    };
    vec![
        (geo(2, 5, 4, 3), spec(3, 1, 1)),
        (geo(3, 6, 6, 2), spec(3, 2, 1)),
        (geo(2, 4, 4, 3), spec(1, 2, 0)),
        (geo(1, 4, 4, 2), spec(2, 2, 0)),
    ]
}

#[test]
fn conv2d_matches_im2col_then_linear_and_its_gradient_holds() {
    for e in devices() {
        for (geo, s) in geometries() {
            let kk = s.kernel * s.kernel * geo.channels;
            let rows = geo.batch * geo.height * geo.width;
            let co = 3;
            let x = e
                .tensor(values(rows * geo.channels, 5), rows, geo.channels)
                .unwrap();
            let w = e.tensor(values(kk * co, 6), kk, co).unwrap();
            let b = e.tensor(values(co, 7), 1, co).unwrap();
            let mut g = e.graph(false);
            let fused = g.conv2d(&x, &w, &b, geo, s).unwrap().to_vec();
            let cols = g.im2col(&x, geo, s).unwrap();
            let via = g.linear(&cols, &w, &b).unwrap().to_vec();
            close(&fused, &via, 1e-5, "conv2d");
            check(
                &e,
                &format!("conv2d {geo:?} {s:?}"),
                &[(rows, geo.channels), (kk, co), (1, co)],
                &move |g, t| g.conv2d(&t[0], &t[1], &t[2], geo, s).unwrap(),
                2e-2,
            );
        }
    }
}

#[test]
fn batch_norm_train_eval_and_relu_gradients() {
    for e in devices() {
        for relu in [false, true] {
            for train in [true, false] {
                let name = format!("batch_norm relu={relu} train={train}");
                let dev = e.clone();
                check(
                    &e,
                    &name,
                    &[(7, 3), (1, 3), (1, 3)],
                    &move |g, t| {
                        let mut ps = ParamStore::default();
                        let bn = BatchNorm::new(&dev, &mut ps, "bn", 3);
                        for p in ps.entries.iter_mut() {
                            match p.name.as_str() {
                                "bn.gamma" => p.value = t[1].clone(),
                                "bn.beta" => p.value = t[2].clone(),
                                _ => {}
                            }
                        }
                        bn.forward_act(&mut ps, g, &t[0], train, relu).unwrap()
                    },
                    3e-2,
                );
            }
        }
    }
}

#[test]
fn batch_norm_values_and_running_statistics() {
    for e in devices() {
        let xv = values(8 * 2, 11);
        let x = e.tensor(xv.clone(), 8, 2).unwrap();
        let mut ps = ParamStore::default();
        let bn = BatchNorm::new(&e, &mut ps, "bn", 2);
        let mut g = e.graph(false);
        let y = bn.forward(&mut ps, &mut g, &x, true).unwrap().to_vec();
        for j in 0..2 {
            let col: Vec<f32> = (0..8).map(|i| xv[i * 2 + j]).collect();
            let mean = col.iter().sum::<f32>() / 8.0;
            let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 8.0;
            for i in 0..8 {
                let want = (col[i] - mean) / (var + 1e-5).sqrt();
                assert!((y[i * 2 + j] - want).abs() < 1e-5);
            }
            let rm = ps
                .entries
                .iter()
                .find(|p| p.name == "bn.running_mean")
                .unwrap();
            let rv = ps
                .entries
                .iter()
                .find(|p| p.name == "bn.running_var")
                .unwrap();
            assert!((rm.value.to_vec()[j] - 0.1 * mean).abs() < 1e-6);
            assert!((rv.value.to_vec()[j] - (0.9 + 0.1 * var * 8.0 / 7.0)).abs() < 1e-5);
        }
    }
}

#[test]
fn layer_norm_gradient_and_values() {
    for e in devices() {
        check(
            &e,
            "layer_norm",
            &[(5, 6), (1, 6), (1, 6)],
            &|g, t| g.layer_norm(&t[0], &t[1], &t[2], 1e-6).unwrap(),
            3e-2,
        );
        let x = e.tensor(values(4 * 6, 3), 4, 6).unwrap();
        let (one, zero) = (e.full(1.0, 1, 6), e.zeros(1, 6));
        let mut g = e.graph(false);
        let fused = g.layer_norm(&x, &one, &zero, 1e-6).unwrap().to_vec();
        let composed = g.layer_norm_rows(&x, 1e-6).unwrap().to_vec();
        close(&fused, &composed, 1e-4, "layer_norm");
    }
}

#[test]
fn inputs_marked_as_data_get_no_gradient_and_change_nothing_else() {
    let e = Engine::cpu();
    let x = e.tensor(values(6 * 4, 1), 6, 4).unwrap();
    let w = e.tensor(values(4 * 3, 2), 4, 3).unwrap();
    let b = e.zeros(1, 3);
    let grad_w = |x: &Tensor| {
        let mut g = e.graph(true);
        let y = g.linear(x, &w, &b).unwrap();
        let y = g.square(&y).unwrap();
        let loss = g.sum(&y, Axis2::All).unwrap();
        let mut gr = g.backward(&loss).unwrap();
        (gr.get(&w).to_vec(), gr.get(x).to_vec())
    };
    let (gw, gx) = grad_w(&x);
    let (gw_c, gx_c) = grad_w(&x.clone().as_input());
    assert_eq!(gw, gw_c);
    assert!(gx.iter().any(|v| *v != 0.0));
    assert!(gx_c.iter().all(|v| *v == 0.0));
}

/// Gradients through conv, batch norm, linear, layer norm, GELU and attention are bitwise the
/// same on one thread and on four (the kernels' reductions use fixed chunks, not threads).
#[test]
fn results_do_not_depend_on_the_thread_count() {
    let run = |threads: usize| -> Vec<Vec<f32>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let e = Engine::cpu();
            let geo = Geometry {
                batch: 8,
                height: 12,
                width: 12,
                channels: 3,
            };
            let s = ConvSpec {
                kernel: 3,
                stride: 1,
                padding: 1,
            };
            let rows = 8 * 144;
            let x = e.tensor(values(rows * 3, 1), rows, 3).unwrap();
            let w = e.tensor(values(27 * 16, 2), 27, 16).unwrap();
            let b = e.tensor(values(16, 3), 1, 16).unwrap();
            let w2 = e.tensor(values(16 * 24, 4), 16, 24).unwrap();
            let b2 = e.zeros(1, 24);
            let mut ps = ParamStore::default();
            let bn = BatchNorm::new(&e, &mut ps, "bn", 16);
            let mut g = e.graph(true);
            let h = g.conv2d(&x, &w, &b, geo, s).unwrap();
            let h = bn.forward_act(&mut ps, &mut g, &h, true, true).unwrap();
            let h = g.linear(&h, &w2, &b2).unwrap();
            let (one, zero) = (e.full(1.0, 1, 24), e.zeros(1, 24));
            let h = g.layer_norm(&h, &one, &zero, 1e-6).unwrap();
            let h = g.gelu(&h).unwrap();
            let shape = super::attention::AttnShape {
                batch: 8,
                tokens: 144,
                heads: 2,
            };
            let h = g.attention(&h, &h, &h, shape).unwrap();
            let sq = g.square(&h).unwrap();
            let loss = g.sum(&sq, Axis2::All).unwrap();
            let mut gr = g.backward(&loss).unwrap();
            vec![
                loss.to_vec(),
                gr.get(&x).to_vec(),
                gr.get(&w).to_vec(),
                gr.get(&b).to_vec(),
                gr.get(&w2).to_vec(),
            ]
        })
    };
    let one = run(1);
    assert_eq!(one, run(4));
    assert_eq!(one, run(2));
}

#[test]
fn cross_entropy_matches_log_softmax_by_hand() {
    let e = Engine::cpu();
    let xv = values(4 * 6, 5);
    let x = e.tensor(xv.clone(), 4, 6).unwrap();
    let labels = [2u32, 0, 5, 2];
    let mut g = e.graph(false);
    let got = g.cross_entropy(&x, &labels).unwrap().scalar() as f64;
    let mut want = 0f64;
    for (i, &l) in labels.iter().enumerate() {
        let row = &xv[i * 6..(i + 1) * 6];
        let lse = row.iter().map(|v| (*v as f64).exp()).sum::<f64>().ln();
        want += (lse - row[l as usize] as f64) / 4.0;
    }
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
}

/// Forward values and input gradients of `op` on engine `e` (loss `Σ r ⊙ op(inputs)`).
fn run_op(e: &Engine, shapes: &[(usize, usize)], op: &Op) -> (Vec<f32>, Vec<Vec<f32>>) {
    let ts: Vec<Tensor> = shapes
        .iter()
        .enumerate()
        .map(|(i, (r, c))| e.tensor(values(r * c, 31 + i as u64), *r, *c).unwrap())
        .collect();
    let mut g = e.graph(true);
    let y = op(&mut g, &ts);
    let (yr, yc) = y.shape();
    let r = e.tensor(values(yr * yc, 7), yr, yc).unwrap();
    let weighted = g.mul(&y, &r).unwrap();
    let loss = g.sum(&weighted, Axis2::All).unwrap();
    let mut grads = g.backward(&loss).unwrap();
    let gs = ts.iter().map(|t| grads.get(t).to_vec()).collect();
    (y.to_vec(), gs)
}

#[test]
fn composed_ops_of_the_generic_path_match_the_fast_path() {
    use super::attention::AttnShape;
    use super::nn::InputShape;
    let geo = Geometry {
        batch: 2,
        height: 5,
        width: 4,
        channels: 3,
    };
    let conv = ConvSpec {
        kernel: 3,
        stride: 2,
        padding: 1,
    };
    let attn = AttnShape {
        batch: 2,
        tokens: 5,
        heads: 2,
    };
    let mask: Vec<bool> = (0..10).map(|i| i % 5 != 3).collect();
    let img = InputShape {
        channels: 3,
        height: 2,
        width: 4,
    };
    type Case = (&'static str, Vec<(usize, usize)>, Box<Op>);
    let cases: Vec<Case> = vec![
        (
            "im2col",
            vec![(40, 3)],
            Box::new(move |g, t| g.im2col(&t[0], geo, conv).unwrap()),
        ),
        (
            "conv2d",
            vec![(40, 3), (27, 4), (1, 4)],
            Box::new(move |g, t| g.conv2d(&t[0], &t[1], &t[2], geo, conv).unwrap()),
        ),
        (
            "mean_row_groups",
            vec![(12, 3)],
            Box::new(|g, t| g.mean_row_groups(&t[0], 4).unwrap()),
        ),
        (
            "attention",
            vec![(10, 6), (10, 6), (10, 6)],
            Box::new(move |g, t| g.attention(&t[0], &t[1], &t[2], attn).unwrap()),
        ),
        (
            "attention_masked",
            vec![(10, 6), (10, 6), (10, 6)],
            Box::new(move |g, t| {
                g.attention_masked(&t[0], &t[1], &t[2], attn, Some(&mask))
                    .unwrap()
            }),
        ),
        (
            "tile_rows",
            vec![(3, 4)],
            Box::new(|g, t| g.tile_rows(&t[0], 3).unwrap()),
        ),
        (
            "select_rows",
            vec![(6, 4)],
            Box::new(|g, t| g.select_rows(&t[0], &[5, 0, 0, 3]).unwrap()),
        ),
        (
            "chw_to_hwc",
            vec![(2, 24)],
            Box::new(move |g, t| g.chw_to_hwc(&t[0], img).unwrap()),
        ),
        (
            "linear",
            vec![(6, 5), (5, 3), (1, 3)],
            Box::new(|g, t| g.linear(&t[0], &t[1], &t[2]).unwrap()),
        ),
        (
            "layer_norm",
            vec![(6, 5), (1, 5), (1, 5)],
            Box::new(|g, t| g.layer_norm(&t[0], &t[1], &t[2], 1e-5).unwrap()),
        ),
        (
            "l2_normalize",
            vec![(6, 5)],
            Box::new(|g, t| g.l2_normalize(&t[0], Axis2::Cols, 1e-8).unwrap()),
        ),
        (
            "cross_entropy",
            vec![(4, 3)],
            Box::new(|g, t| g.cross_entropy(&t[0], &[2, 0, 1, 2]).unwrap()),
        ),
        (
            "gelu",
            vec![(6, 5)],
            Box::new(|g, t| g.gelu(&t[0]).unwrap()),
        ),
        // Large enough for the fast path's own kernels (16 Ki values and up).
        (
            "mul_scalar (large)",
            vec![(130, 128)],
            Box::new(|g, t| g.mul_scalar(&t[0], -2.5).unwrap()),
        ),
        (
            "add_scalar (large)",
            vec![(130, 128)],
            Box::new(|g, t| g.add_scalar(&t[0], 0.75).unwrap()),
        ),
        (
            "neg (large)",
            vec![(130, 128)],
            Box::new(|g, t| g.neg(&t[0]).unwrap()),
        ),
        (
            "transpose (large)",
            vec![(130, 129)],
            Box::new(|g, t| g.transpose(&t[0]).unwrap()),
        ),
        (
            "transpose then matmul (large)",
            vec![(130, 129)],
            Box::new(|g, t| {
                let tt = g.transpose(&t[0]).unwrap();
                g.matmul(&t[0], &tt).unwrap()
            }),
        ),
    ];
    let fast = Engine::cpu();
    for e in devices().into_iter().skip(1) {
        for (name, shapes, op) in &cases {
            let (want_y, want_g) = run_op(&fast, shapes, op.as_ref());
            let (y, gs) = run_op(&e, shapes, op.as_ref());
            let what = format!("{name} on {:?}", e.kind());
            close(&y, &want_y, 1e-4, &format!("{what}: values"));
            for (k, (a, b)) in gs.iter().zip(&want_g).enumerate() {
                close(a, b, 1e-4, &format!("{what}: gradient of input {k}"));
            }
        }
    }
}
