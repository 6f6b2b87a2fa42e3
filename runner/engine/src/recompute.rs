//! Activation checkpointing (gradient checkpointing): a block of ops whose intermediate
//! activations are not kept for backward, but recomputed from the block's input when backward
//! reaches the block.
//!
//! [`Graph::checkpoint`] runs the block once with recording off, so every intermediate tensor
//! is freed as soon as the next op has read it, and records ONE tape entry holding only the
//! block's input (and the parameters it read, which the model holds anyway). When backward
//! reaches that entry it builds a fresh recording graph (same device, same constants, the
//! random state the block started from, so dropout draws the same masks), replays the block on
//! the saved input, and runs that graph's backward from the gradient of the block's output.
//!
//! The replay starts each input's and parameter's gradient from what the outer backward has
//! accumulated so far and hands the result back, so every addition happens in the order the
//! un-checkpointed backward would make it: on the CPU (both paths) the gradients are
//! bit-for-bit those of the same graph without checkpointing (tested below, per encoder).
//! The moves use dfdx's public API only: `Gradients::get_or_alloc_mut` and swapping
//! buffers between two gradient stores (a `D::Vec` cannot be built or taken out otherwise).

use dfdx::prelude::*;
use rayon::prelude::*;

use super::device::{Consts, CpuDev};
use super::host::par_copy;
use super::nn::{ParamStore, Pid};
use super::{Dev, Dv, EngineError, Result, Store, Tensor, TD};
use crate::Graph;

/// What a replay graph is made of: the outer graph's device and constants, and the random
/// state the block started from.
struct ReplayGraph {
    dev: Dev,
    fast: bool,
    consts: Consts,
    rng: (u64, u64),
    group: Option<crate::dist::Group>,
}

impl ReplayGraph {
    fn graph(&self) -> Graph {
        let tape = on_dev!(self.dev.tag(), D => D::merge(None, OwnedTape::<f32, D>::default()));
        Graph {
            dev: self.dev.clone(),
            fast: self.fast,
            consts: self.consts.clone(),
            tape: Some(tape),
            rng: self.rng,
            host_grads: Default::default(),
            group: self.group.clone(),
        }
    }
}

/// A failure while replaying a block in backward: the block ran on the same values in the
/// forward pass, so this is an engine bug. Backward is panic-guarded (`Graph::backward`), so
/// this becomes an error there, never an abort.
fn replay_failed(e: EngineError) -> ! {
    panic!("replaying a checkpointed block failed: {e}")
}

impl Graph {
    /// Run a block under activation checkpointing.
    ///
    /// `forward` runs the block now, on this graph with recording off, and returns its output;
    /// `params` are the tensors besides `x` the block reads that take gradients (its
    /// parameters). In backward, `replay` is called once on a fresh recording graph with
    /// stand-ins for `x` and `params` (same values and storage) and must compute the same
    /// block from them; its backward gives `x` and `params` their gradients. Without
    /// recording (evaluation, an EMA teacher) this is just `forward`.
    pub fn checkpoint<F, R>(
        &mut self,
        x: &Tensor,
        params: &[Tensor],
        forward: F,
        replay: R,
    ) -> Result<Tensor>
    where
        F: FnOnce(&mut Graph) -> Result<Tensor>,
        R: FnOnce(&mut Graph, &Tensor, &[Tensor]) -> Result<Tensor> + 'static,
    {
        if self.tape.is_none() {
            return forward(self);
        }
        let parts = ReplayGraph {
            dev: self.dev.clone(),
            fast: self.fast,
            consts: self.consts.clone(),
            rng: self.rng,
            group: self.group.clone(),
        };
        let tape = self.tape.take();
        let out = forward(self);
        self.tape = tape;
        let y = out?;
        // Each input once (one gradient buffer per tensor); `order` places each parameter.
        let mut inputs: Vec<Tensor> = vec![x.clone()];
        let mut order = Vec::with_capacity(params.len());
        for p in params {
            match inputs.iter().position(|t| t.id == p.id) {
                Some(i) => order.push(i),
                None => {
                    order.push(inputs.len());
                    inputs.push(p.clone());
                }
            }
        }
        if inputs.iter().any(|t| t.id == y.id) {
            // The block passed an input through: its gradient already reaches that input.
            return Ok(y);
        }
        let block = Block {
            parts,
            order,
            replay,
        };
        let refs: Vec<&Tensor> = inputs.iter().collect();
        if self.fast(&refs) && matches!(y.t, Store::Cpu(_)) {
            return Ok(self.checkpoint_host(inputs, y, block));
        }
        on_dev!(self.dev.tag(), D => {
            let y_key: TD<D> = y.get::<D>()?.clone();
            let keys: Vec<TD<D>> = inputs
                .iter()
                .filter(|t| !t.constant)
                .map(|t| t.get::<D>().cloned())
                .collect::<Result<_>>()?;
            let out_key = y_key.clone();
            let mut tape = OwnedTape::<f32, D>::default();
            tape.add_backward_op(move |grads| {
                // Move the output's gradient and every input's gradient so far out of the
                // outer store (leaving zeros), replay, and move the results back.
                let mut seeds = Gradients::leaky();
                std::mem::swap(grads.get_or_alloc_mut(&out_key)?, seeds.get_or_alloc_mut(&out_key)?);
                for k in &keys {
                    std::mem::swap(grads.get_or_alloc_mut(k)?, seeds.get_or_alloc_mut(k)?);
                }
                let mut sub = block.grads::<D>(&inputs, seeds, out_key, &keys)
                    .unwrap_or_else(|e| replay_failed(e));
                for k in &keys {
                    std::mem::swap(grads.get_or_alloc_mut(k)?, sub.get_or_alloc_mut(k)?);
                }
                Ok(())
            });
            self.tape = Some(D::merge(self.tape.take(), tape));
            Ok(Tensor::new(D::wrap(y_key)))
        })
    }

    /// [`Graph::checkpoint`] on the CPU fast path: the block's output gradient and its inputs'
    /// gradient buffers come through `record_host` (which knows where the fast path keeps
    /// them), are copied into the replay's store, and the results copied back.
    fn checkpoint_host<R>(&mut self, inputs: Vec<Tensor>, y: Tensor, block: Block<R>) -> Tensor
    where
        R: FnOnce(&mut Graph, &Tensor, &[Tensor]) -> Result<Tensor> + 'static,
    {
        let y_key = super::host::cpu_t(&y).clone();
        let ins = inputs.clone();
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let mut out = self.record_host(&refs, y_key.clone(), move |g_out, slots| {
            let run = || -> Result<()> {
                let err = |e: dfdx::tensor::CpuError| EngineError::Device(format!("{e:?}"));
                let mut seeds = Gradients::<f32, CpuDev>::leaky();
                **seeds.get_or_alloc_mut(&y_key).map_err(err)? = par_copy(g_out);
                // The inputs that take a gradient (constants have no slot), with the buffer
                // they have accumulated so far.
                let mut keys = Vec::new();
                for (t, slot) in ins.iter().zip(slots.iter()) {
                    if let Some(buf) = slot.as_deref() {
                        let k = super::host::cpu_t(t).clone();
                        **seeds.get_or_alloc_mut(&k).map_err(err)? = par_copy(buf);
                        keys.push(k);
                    }
                }
                let mut sub = block.grads::<CpuDev>(&ins, seeds, y_key, &keys)?;
                let mut keys = keys.iter();
                for slot in slots.iter_mut() {
                    if let Some(buf) = slot.as_deref_mut() {
                        let k = keys.next().expect("one key per slot");
                        let g = sub.get_or_alloc_mut(k).map_err(err)?;
                        if g.len() != buf.len() {
                            return Err(EngineError::Other(format!(
                                "a gradient of {} values for an input of {}",
                                g.len(),
                                buf.len()
                            )));
                        }
                        buf.par_chunks_mut(1 << 16)
                            .zip(g.par_chunks(1 << 16))
                            .for_each(|(d, s)| d.copy_from_slice(s));
                    }
                }
                Ok(())
            };
            run().unwrap_or_else(|e| replay_failed(e));
        });
        out.host = y.host.clone();
        out
    }
}

#[cfg(test)]
thread_local! {
    /// Blocks replayed on this thread (tests check that checkpointing really ran).
    static REPLAYS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A checkpointed block waiting for backward.
struct Block<R> {
    parts: ReplayGraph,
    /// For each parameter the block was given, its place among the (deduplicated) inputs.
    order: Vec<usize>,
    replay: R,
}

impl<R> Block<R>
where
    R: FnOnce(&mut Graph, &Tensor, &[Tensor]) -> Result<Tensor>,
{
    /// Replay the block on stand-ins of `inputs` (`x`, then its parameters) and run the
    /// replay's backward. `seeds` holds the gradient of the block's output under `out_key`
    /// and, under each of `keys` (the inputs taking gradients), the gradient accumulated so
    /// far; the returned store holds each key's gradient with the block's contributions added.
    fn grads<D: Dv>(
        self,
        inputs: &[Tensor],
        mut seeds: Gradients<f32, D>,
        out_key: TD<D>,
        keys: &[TD<D>],
    ) -> Result<Gradients<f32, D>> {
        #[cfg(test)]
        REPLAYS.with(|n| n.set(n.get() + 1));
        let leaves: Vec<Tensor> = inputs.iter().map(Tensor::leaf).collect();
        let params: Vec<Tensor> = self.order.iter().map(|&i| leaves[i].clone()).collect();
        let mut g = self.parts.graph();
        let y = (self.replay)(&mut g, &leaves[0], &params)?;
        let Some(tape) = g.tape.take().and_then(D::unwrap_tape) else {
            return Err(EngineError::Device(
                "a checkpointed block was replayed on another device".into(),
            ));
        };
        // The fast path keeps an op's output gradient in its own store unless a dfdx op read
        // the tensor: marked, the producer reads it from dfdx's store, where the seed goes.
        super::host::mark_dfdx(&y);
        let y_t: TD<D> = y.get::<D>()?.clone();
        let keys: Vec<TD<D>> = keys.to_vec();
        let mut tape = tape;
        // Added after every op of the replay, so backward runs it first.
        tape.add_backward_op(move |grads| {
            std::mem::swap(
                grads.get_or_alloc_mut(&y_t)?,
                seeds.get_or_alloc_mut(&out_key)?,
            );
            for k in &keys {
                std::mem::swap(grads.get_or_alloc_mut(k)?, seeds.get_or_alloc_mut(k)?);
            }
            Ok(())
        });
        // Backward needs a scalar to start from; this one reaches nothing.
        let start: dfdx::tensor::Tensor<(), f32, D> = D::dev(&self.parts.dev).zeros();
        crate::panic_guard::catch(|| start.put_tape(tape).try_backward())
            .map_err(|m| EngineError::Other(format!("internal engine error in a replay: {m}")))?
            .map_err(|e| EngineError::Device(format!("{e:?}")))
    }
}

/// Run a block of the model under activation checkpointing (the caller checked that the
/// graph records). `pids` are the parameters the block reads, `forward` runs it now, and
/// `block` recomputes it in backward on `snapshot`, a copy of the store taken before
/// `forward` ran, with stand-ins for those parameters: batch norm's running statistics, which
/// `forward` updates once, are not updated again (the replay's updates go to the snapshot,
/// which is dropped).
pub(crate) fn checkpoint_block<F, B>(
    g: &mut Graph,
    mut snapshot: ParamStore,
    pids: &[Pid],
    x: &Tensor,
    forward: F,
    block: B,
) -> Result<Tensor>
where
    F: FnOnce(&mut Graph) -> Result<Tensor>,
    B: FnOnce(&mut ParamStore, &mut Graph, &Tensor) -> Result<Tensor> + 'static,
{
    let params: Vec<Tensor> = pids.iter().map(|&p| snapshot.get(p).clone()).collect();
    let pids = pids.to_vec();
    g.checkpoint(x, &params, forward, move |g, x, leaves| {
        for (&p, t) in pids.iter().zip(leaves) {
            snapshot.entries[p].value = t.clone();
        }
        block(&mut snapshot, g, x)
    })
}

#[cfg(test)]
mod tests {
    use crate::graph::Axis2;
    use crate::nn::{Encoder, EncoderSpec, Init, InputShape, ParamKind, ParamStore};
    use crate::{DeviceKind, Engine};

    /// What one training step of an encoder computed.
    #[derive(Debug, PartialEq)]
    struct Step {
        /// Blocks replayed in backward.
        replays: usize,
        loss: Vec<f32>,
        /// Every trained tensor's gradient, by name.
        grads: Vec<(String, Vec<f32>)>,
        /// The gradient of each pass's input (empty for token ids).
        input_grads: Vec<Vec<f32>>,
        /// Every tensor of the store after the step's forward passes (batch norm's running
        /// statistics among them).
        store: Vec<(String, Vec<f32>)>,
    }

    /// One step: `passes` batches through the encoder in one graph (as multi-crop runs each
    /// size), a squared-error loss on each, summed, and backward.
    fn step(
        e: &Engine,
        spec: &EncoderSpec,
        input: InputShape,
        passes: &[Vec<f32>],
        checkpoint: bool,
    ) -> Step {
        let mut ps = ParamStore::default();
        let mut enc = Encoder::new(e, &mut ps, &mut Init::new(5), spec, input).unwrap();
        enc.set_checkpoint_activations(checkpoint).unwrap();
        let text = matches!(spec, EncoderSpec::Text { .. });
        let mut g = e.graph(true);
        g.set_seed(17);
        let mut xs = Vec::new();
        let mut loss = None;
        for (i, v) in passes.iter().enumerate() {
            let b = v.len() / input.len();
            let x = e.tensor(v.clone(), b, input.len()).unwrap();
            let x = if text { x.as_input() } else { x };
            let out = enc.forward(&mut ps, &mut g, &x, input, true).unwrap();
            let (r, c) = out.shape();
            let target: Vec<f32> = (0..r * c)
                .map(|k| ((k + i) % 5) as f32 * 0.3 - 0.6)
                .collect();
            let t = e.tensor(target, r, c).unwrap().as_input();
            let d = g.sub(&out, &t).unwrap();
            let sq = g.square(&d).unwrap();
            let l = g.mean(&sq, Axis2::All).unwrap();
            loss = Some(match loss {
                None => l,
                Some(acc) => g.add(&acc, &l).unwrap(),
            });
            xs.push(x);
        }
        let loss = loss.unwrap();
        let loss_v = loss.to_vec();
        let before = super::REPLAYS.with(|n| n.get());
        let mut grads = g.backward(&loss).unwrap();
        Step {
            replays: super::REPLAYS.with(|n| n.get()) - before,
            loss: loss_v,
            grads: ps
                .entries
                .iter()
                .filter(|p| p.kind != ParamKind::Buffer)
                .map(|p| (p.name.clone(), grads.get(&p.value).to_vec()))
                .collect(),
            input_grads: if text {
                Vec::new()
            } else {
                xs.iter().map(|x| grads.get(x).to_vec()).collect()
            },
            store: ps
                .entries
                .iter()
                .map(|p| (p.name.clone(), p.value.to_vec()))
                .collect(),
        }
    }

    fn images(batch: usize, input: InputShape, salt: usize) -> Vec<f32> {
        (0..batch * input.len())
            .map(|i| (((i + salt) * 37) % 101) as f32 / 101.0 - 0.5)
            .collect()
    }

    /// Checkpointed and plain steps compute the same loss, the same gradient for every
    /// parameter and input, and leave the same store (running statistics updated once) —
    /// bit for bit, on the fast path and the device-generic path: the replay adds every
    /// contribution in the order the plain backward does. Two passes per step check the
    /// accumulation across passes; the text encoder runs with dropout.
    #[test]
    fn checkpointed_gradients_equal_plain_ones() {
        let img = InputShape {
            channels: 2,
            height: 8,
            width: 8,
        };
        let seq = InputShape {
            channels: 1,
            height: 1,
            width: 7,
        };
        let ids = |salt: usize| -> Vec<f32> {
            // Three sequences, the last two padded at the end.
            let mut v = Vec::new();
            for s in 0..3 {
                for p in 0..7 {
                    let pad = p >= 7 - 2 * s;
                    v.push(if pad {
                        0.0
                    } else {
                        (2 + (s * 7 + p + salt) % 18) as f32
                    });
                }
            }
            v
        };
        // (encoder, input, the batches of each pass, blocks replayed per step)
        let cases: Vec<(EncoderSpec, InputShape, Vec<Vec<f32>>, usize)> = vec![
            (
                EncoderSpec::ResNet {
                    width: 4,
                    blocks: 2,
                    embed_dim: 4,
                    batch_norm: true,
                },
                img,
                vec![images(5, img, 0), images(3, img, 7)],
                2 * 6,
            ),
            (
                EncoderSpec::ResNet {
                    width: 4,
                    blocks: 1,
                    embed_dim: 4,
                    batch_norm: false,
                },
                img,
                vec![images(4, img, 3)],
                3,
            ),
            (
                EncoderSpec::Vit {
                    patch: 4,
                    dim: 8,
                    depth: 3,
                    heads: 2,
                    cls_token: true,
                    embed_dim: 4,
                },
                img,
                vec![images(4, img, 1), images(2, img, 9)],
                2 * 3,
            ),
            (
                EncoderSpec::Vit {
                    patch: 2,
                    dim: 8,
                    depth: 2,
                    heads: 4,
                    cls_token: false,
                    embed_dim: 4,
                },
                img,
                vec![images(3, img, 2)],
                2,
            ),
            (
                EncoderSpec::Text {
                    vocab: 20,
                    seq_len: 7,
                    dim: 8,
                    depth: 3,
                    heads: 2,
                    cls_pool: false,
                    dropout: 0.3,
                    embed_dim: 4,
                },
                seq,
                vec![ids(0), ids(5)],
                2 * 3,
            ),
        ];
        for kind in [DeviceKind::Cpu, DeviceKind::CpuGeneric] {
            let e = Engine::open(kind).unwrap();
            for (spec, input, passes, blocks) in &cases {
                let plain = step(&e, spec, *input, passes, false);
                let ckpt = step(&e, spec, *input, passes, true);
                assert_eq!(
                    (plain.replays, ckpt.replays),
                    (0, *blocks),
                    "{kind:?} {spec:?}"
                );
                // Every trained tensor got a gradient (none was left out of the replay).
                for (name, g) in &plain.grads {
                    assert!(
                        g.iter().any(|v| *v != 0.0),
                        "{kind:?} {spec:?}: {name} has no gradient"
                    );
                }
                assert_eq!(plain.loss, ckpt.loss, "{kind:?} {spec:?}: loss");
                for ((name, a), (_, b)) in plain.grads.iter().zip(&ckpt.grads) {
                    assert_eq!(a, b, "{kind:?} {spec:?}: gradient of {name}");
                }
                assert_eq!(plain.input_grads, ckpt.input_grads, "{kind:?} {spec:?}: dx");
                for ((name, a), (_, b)) in plain.store.iter().zip(&ckpt.store) {
                    assert_eq!(a, b, "{kind:?} {spec:?}: {name} after the step");
                }
            }
        }
    }

    /// Without recording (evaluation, the EMA teacher) a checkpointed encoder is the plain
    /// one; and dropout in a checkpointed block still differs between seeds (the replay
    /// reuses the block's own draws, not a fixed mask).
    #[test]
    fn checkpointing_changes_nothing_without_recording_and_keeps_dropout_random() {
        let e = Engine::cpu();
        let input = InputShape {
            channels: 1,
            height: 1,
            width: 6,
        };
        let spec = EncoderSpec::Text {
            vocab: 20,
            seq_len: 6,
            dim: 8,
            depth: 2,
            heads: 2,
            cls_pool: true,
            dropout: 0.3,
            embed_dim: 4,
        };
        let mut ps = ParamStore::default();
        let mut enc = Encoder::new(&e, &mut ps, &mut Init::new(1), &spec, input).unwrap();
        let x = e
            .tensor(vec![2.0, 7.0, 9.0, 11.0, 12.0, 0.0], 1, 6)
            .unwrap()
            .as_input();
        let mut run = |enc: &Encoder, grad: bool, seed: u64| {
            let mut g = e.graph(grad);
            g.set_seed(seed);
            enc.forward(&mut ps, &mut g, &x, input, true)
                .unwrap()
                .to_vec()
        };
        let plain = (run(&enc, false, 1), run(&enc, true, 1), run(&enc, true, 2));
        enc.set_checkpoint_activations(true).unwrap();
        let ckpt = (run(&enc, false, 1), run(&enc, true, 1), run(&enc, true, 2));
        assert_eq!(plain, ckpt);
        assert_ne!(ckpt.1, ckpt.2);
    }

    /// An MLP or ConvNet has no blocks: asking to checkpoint them is an error naming the
    /// architecture (turning it off is fine).
    #[test]
    fn encoders_without_blocks_refuse_checkpointing() {
        let e = Engine::cpu();
        let input = InputShape {
            channels: 1,
            height: 8,
            width: 8,
        };
        for (spec, arch) in [
            (
                EncoderSpec::Mlp {
                    hidden: vec![8],
                    embed_dim: 4,
                    batch_norm: true,
                },
                "mlp",
            ),
            (
                EncoderSpec::ConvNet {
                    width: 4,
                    embed_dim: 4,
                    batch_norm: true,
                    flatten: false,
                },
                "convnet",
            ),
        ] {
            let mut ps = ParamStore::default();
            let mut enc = Encoder::new(&e, &mut ps, &mut Init::new(1), &spec, input).unwrap();
            enc.set_checkpoint_activations(false).unwrap();
            let err = enc
                .set_checkpoint_activations(true)
                .unwrap_err()
                .to_string();
            assert!(err.contains(arch) && err.contains("resnet"), "{err}");
        }
    }
}
