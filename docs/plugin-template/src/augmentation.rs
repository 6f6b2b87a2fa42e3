//! `solarize`: with probability `p`, invert every value above `threshold` (v → 1 - v).

use pretext_plugin::{Augmentation, Error, Image, ImageMut, Params, Result, Rng};

#[derive(Debug, Clone)]
pub struct Solarize {
    threshold: f32,
    p: f64,
}

impl Augmentation for Solarize {
    /// The name used in views: `views = [["solarize"], [{ name = "solarize", p = 0.5 }]]`.
    const NAME: &'static str = "solarize";
    const SUMMARY: &'static str = "invert the values above a threshold, with probability p";
    const PARAMS_DOC: &'static str = "\
| key | type | default | meaning |
|---|---|---|---|
| `threshold` | float in [0, 1] | 0.5 | values above it are inverted |
| `p` | float in [0, 1] | 0.2 | probability of solarizing an image |
";

    fn new(params: &mut Params) -> Result<Self> {
        Ok(Solarize {
            threshold: params.f64_in("threshold", 0.5, 0.0, 1.0)? as f32,
            p: params.f64_in("p", 0.2, 0.0, 1.0)?,
        })
    }

    // `output_shape` is left at its default: the output has the input's shape.

    /// Images are f32 values in [0, 1], channel-major (c, h, w); `output` is allocated by the
    /// host with the shape `output_shape` returned. All randomness comes from `rng`, which the
    /// host seeds per (pipeline seed, epoch, sample, view, position): the same pipeline always
    /// gives the same views, whatever the number of threads.
    fn apply(&self, rng: &mut Rng, input: Image, output: ImageMut) -> Result<()> {
        if input.data.len() != output.data.len() {
            return Err(Error::msg("solarize: output and input sizes differ"));
        }
        let apply = rng.chance(self.p);
        for (o, &v) in output.data.iter_mut().zip(input.data) {
            *o = if apply && v > self.threshold {
                1.0 - v
            } else {
                v
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretext_plugin::{ImageShape, Value};

    fn solarize(params: &[(&str, Value)]) -> Solarize {
        let entries = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let mut p = Params::new("solarize", entries);
        let s = Solarize::new(&mut p).expect("valid parameters");
        p.finish().expect("no unknown parameters");
        s
    }

    fn run(s: &Solarize, seed: u64, data: &[f32]) -> Vec<f32> {
        let shape = ImageShape {
            channels: 1,
            height: 1,
            width: data.len(),
        };
        let mut out = vec![0.0; data.len()];
        let output = ImageMut {
            shape,
            data: &mut out,
        };
        s.apply(&mut Rng::new(seed), Image { shape, data }, output)
            .unwrap();
        out
    }

    #[test]
    fn inverts_values_above_the_threshold() {
        let s = solarize(&[("p", Value::Float(1.0)), ("threshold", Value::Float(0.5))]);
        assert_eq!(run(&s, 1, &[0.0, 0.25, 0.75, 1.0]), [0.0, 0.25, 0.25, 0.0]);
    }

    #[test]
    fn p_zero_is_the_identity() {
        let s = solarize(&[("p", Value::Float(0.0))]);
        assert_eq!(run(&s, 1, &[0.1, 0.9]), [0.1, 0.9]);
    }

    #[test]
    fn out_of_range_and_unknown_parameters_are_errors() {
        let mut p = Params::new("solarize", vec![("p".into(), Value::Float(2.0))]);
        assert!(Solarize::new(&mut p).is_err());
        let mut p = Params::new("solarize", vec![("treshold".into(), Value::Float(0.5))]);
        Solarize::new(&mut p).unwrap();
        let err = p.finish().unwrap_err().to_string();
        assert!(err.contains("did you mean `threshold`"), "{err}");
    }
}
