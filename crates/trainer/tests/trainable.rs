//! The two routes of `trainer::trainable::Trainable` agree: the tensor route (flat parameter and
//! gradient tensors, leaves as views, gradients concatenated on the device, a tensor optimizer),
//! run here on the CPU, gives bit for bit the host route's losses, gradient norms, parameters and
//! optimizer state, for every optimizer, with gradient accumulation, dropout and checkpointing.
//! On a GPU, tests/cuda_train.rs runs the same steps on CUDA.

use llama::{LoraConfig, LoraParams, Model, WeightSource};
use tensor::{Device, Rng};
use trainer::optim::AdamWConfig;
use trainer::trainable::Trainable;

mod common;
use common::{batches, tiny};

fn model() -> Model {
    Model::load(&WeightSource::open(tiny()).unwrap(), Some(&nf4::QuantConfig::default())).unwrap()
}

/// Three steps of `state`: (loss, norm) per step.
fn run(state: &mut Trainable, m: &Model) -> Vec<(f64, f32)> {
    (0..3)
        .map(|step| {
            let (loss, tokens) = state.accumulate(m, &batches(step), true, 7 + step as u64).unwrap();
            assert!(tokens > 0);
            let norm = state.clip(0.3).unwrap();
            state.step(1e-2).unwrap();
            (loss, norm)
        })
        .collect()
}

#[test]
fn tensor_route_matches_host_route_bit_for_bit() {
    let m = model();
    let lora = LoraConfig::new(4, 8.0, 0.1, &llama::lora::PROJECTIONS).unwrap();
    let params = LoraParams::init(&m.config, lora, &mut Rng::new(5));
    let cfg = AdamWConfig { weight_decay: 0.01, ..AdamWConfig::default() };
    for opt in ["adamw", "paged-adamw", "paged-adamw-8bit"] {
        let mut host = Trainable::new(params.clone(), opt, cfg, Device::Cpu).unwrap();
        let mut tens = Trainable::on_tensors(params.clone(), opt, cfg, Device::Cpu).unwrap();
        let (a, b) = (run(&mut host, &m), run(&mut tens, &m));
        assert_eq!(a, b, "{opt}: (loss, grad norm) per step");
        assert!(a.iter().all(|(l, n)| l.is_finite() && *l > 0.0 && n.is_finite() && *n > 0.0), "{a:?}");
        assert_eq!(host.steps(), 3);
        assert_eq!(tens.steps(), 3);
        let hp = host.host_params().unwrap().data.clone();
        let tp = tens.host_params().unwrap().data.clone();
        assert_ne!(hp, params.data, "{opt}: the parameters moved");
        assert_eq!(hp, tp, "{opt}: parameters");
        assert_eq!(host.save_state().unwrap(), tens.save_state().unwrap(), "{opt}: optimizer state");
    }
}

#[test]
fn a_nan_gradient_leaves_the_tensor_route_untouched() {
    let m = model();
    let lora = LoraConfig::new(4, 8.0, 0.0, &["q_proj"]).unwrap();
    let mut params = LoraParams::init(&m.config, lora, &mut Rng::new(5));
    params.data[params.slots[0].b.start] = f32::NAN; // B = NaN: the loss and every gradient NaN
    let mut t = Trainable::on_tensors(params.clone(), "adamw", AdamWConfig::default(), Device::Cpu).unwrap();
    let (loss, _) = t.accumulate(&m, &batches(0), false, 0).unwrap();
    assert!(loss.is_nan());
    assert!(t.clip(0.3).unwrap().is_nan());
    let again = t.host_params().unwrap().data.clone();
    assert_eq!(
        again.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        params.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}
