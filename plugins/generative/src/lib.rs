//! Generative SSL objectives for pretext: a plain autoencoder and a denoising autoencoder.
//!
//! Both reconstruct pixels through a decoder head the host attaches to the encoder output. The
//! autoencoder reconstructs its own (augmented) input; the denoising autoencoder reconstructs
//! the original sample from a corrupted view (corrupt it with augmentations such as
//! `gaussian_noise` or `cutout` in the augment stage).

use pretext_plugin::{Error, Inputs, Needs, Objective, Ops, Params, Result, Tensor};

fn decoder(params: &mut Params, owner: &str) -> Result<(u32, u32)> {
    let hidden = params.usize("decoder_hidden", 512)?;
    let layers = params.usize("decoder_layers", 2)?;
    if hidden == 0 || !(1..=4).contains(&layers) {
        return Err(Error::msg(format!(
            "{owner}: `decoder_hidden` must be at least 1 and `decoder_layers` between 1 and 4"
        )));
    }
    Ok((hidden as u32, layers as u32))
}

/// Autoencoder: MSE between the decoder output and the view it was computed from.
pub struct AutoEncoder {
    decoder: (u32, u32),
}

impl Objective for AutoEncoder {
    const NAME: &'static str = "autoencoder";
    const SUMMARY: &'static str =
        "Autoencoder: reconstruct the input through a decoder (pixel MSE)";
    const PARAMS_DOC: &'static str = "\
| key | type | default | meaning |
|---|---|---|---|
| `decoder_hidden` | int ≥ 1 | 512 | hidden width of the decoder MLP |
| `decoder_layers` | int 1..=4 | 2 | linear layers in the decoder |
";

    fn new(params: &mut Params) -> Result<Self> {
        Ok(AutoEncoder {
            decoder: decoder(params, Self::NAME)?,
        })
    }

    fn needs(&self) -> Needs {
        Needs {
            views: 1,
            decoder: Some(self.decoder),
            ..Needs::default()
        }
    }

    fn loss<'a>(&mut self, _ops: &'a Ops, inputs: &Inputs<'a>) -> Result<Tensor<'a>> {
        let dec = inputs.decoded()?;
        let x = inputs.view_inputs()?;
        dec[0].mse(&x[0])
    }
}

/// Denoising autoencoder: MSE between the decoder output of a corrupted view and the
/// original, uncorrupted sample.
pub struct DenoisingAutoEncoder {
    decoder: (u32, u32),
}

impl Objective for DenoisingAutoEncoder {
    const NAME: &'static str = "denoising_autoencoder";
    const SUMMARY: &'static str =
        "Denoising autoencoder: reconstruct the original from a corrupted view";
    const PARAMS_DOC: &'static str = "\
| key | type | default | meaning |
|---|---|---|---|
| `decoder_hidden` | int ≥ 1 | 512 | hidden width of the decoder MLP |
| `decoder_layers` | int 1..=4 | 2 | linear layers in the decoder |
";

    fn new(params: &mut Params) -> Result<Self> {
        Ok(DenoisingAutoEncoder {
            decoder: decoder(params, Self::NAME)?,
        })
    }

    fn needs(&self) -> Needs {
        Needs {
            views: 1,
            decoder: Some(self.decoder),
            ..Needs::default()
        }
    }

    fn loss<'a>(&mut self, _ops: &'a Ops, inputs: &Inputs<'a>) -> Result<Tensor<'a>> {
        let dec = inputs.decoded()?;
        dec[0].mse(&inputs.originals()?)
    }
}

pretext_plugin::export_plugin! {
    name: "pretext-generative",
    objectives: [AutoEncoder, DenoisingAutoEncoder],
    augmentations: [],
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretext_plugin::testing::Plugin;

    #[test]
    fn every_objective_builds_through_the_abi() {
        let plugin = Plugin::new(pretext_plugin_entry);
        assert_eq!(plugin.name(), "pretext-generative");
        assert_eq!(
            plugin.objective_names(),
            ["autoencoder", "denoising_autoencoder"]
        );
        assert!(plugin.augmentations().is_empty());
        plugin.check_objective::<AutoEncoder>();
        plugin.check_objective::<DenoisingAutoEncoder>();
    }
}
