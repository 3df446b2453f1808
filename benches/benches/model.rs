//! The model on the real default checkpoint (SmolLM2-135M-Instruct, NF4 + double quant, fetched
//! by scripts/fetch-assets.sh): forward tokens/s at 128 tokens, greedy generation tokens/s with
//! the KV cache, and one QLoRA training step (seq 128, r 16 on all projections, gradient
//! checkpointing) in tokens/s.

use autograd::Tape;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use llama::generate::{generate, Sampling};
use llama::{LoraConfig, LoraParams, LoraVars, Model, WeightSource};
use std::time::Duration;
use tensor::Rng;

fn model() -> Model {
    let path = llama::assets::default_model_path().unwrap_or_else(|e| panic!("{e}"));
    Model::load(&WeightSource::open(path).unwrap(), Some(&nf4::QuantConfig::default())).unwrap()
}

fn tokens(n: usize) -> Vec<u32> {
    let mut rng = Rng::new(1);
    (0..n).map(|_| 100 + rng.below(40000) as u32).collect()
}

fn bench(c: &mut Criterion) {
    let m = model();
    let mut g = c.benchmark_group("smollm2_nf4");
    g.sample_size(10).measurement_time(Duration::from_secs(20)).warm_up_time(Duration::from_secs(2));

    let ids = tokens(128);
    g.throughput(Throughput::Elements(128));
    g.bench_function("forward_128_tokens", |b| {
        b.iter(|| autograd::no_grad(|| m.forward(&ids, 1, None, None, false)).unwrap())
    });

    let prompt = tokens(16);
    let s = Sampling { max_new_tokens: 32, ..Sampling::default() };
    g.throughput(Throughput::Elements(32));
    g.bench_function("generate_32_tokens", |b| {
        b.iter(|| generate(&m, None, &prompt, &s, &[], &mut |_| Ok(())).unwrap())
    });

    let lora = LoraParams::init(
        &m.config,
        LoraConfig::new(16, 32.0, 0.0, &llama::lora::PROJECTIONS).unwrap(),
        &mut Rng::new(2),
    );
    let labels: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
    let mut grads = vec![0.0f32; lora.len()];
    g.throughput(Throughput::Elements(128));
    g.bench_function("train_step_128_tokens", |b| {
        b.iter(|| {
            let tape = Tape::new();
            let vars = LoraVars::leaves(&tape, &lora, 0).unwrap();
            let loss = m.loss(&ids, &labels, 1, Some(&vars), true, None).unwrap();
            let gr = tape.backward(&loss).unwrap();
            vars.accumulate_grads(&gr, &mut grads).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
