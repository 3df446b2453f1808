//! QLoRA training of the tiny reference Llama with paged optimizers on a simulated device whose
//! budget is far smaller than the optimizer state: the losses and the adapter are bit-identical
//! to the unpaged optimizer's, and the page counters show the state really moved (and that the
//! next unit's pages came in while the current one was updated).

use llama::{LoraConfig, LoraParams, Model, WeightSource};
use paged_alloc::{PagedAllocator, Stats};
use std::path::PathBuf;
use tensor::Rng;
use trainer::data::{Batch, Example};
use trainer::optim::{clip_grad_norm, AdamW, AdamW8bit, AdamWConfig, Optimizer, PagedAdamW};
use trainer::train::accumulate_step;

const PAGE: usize = 4096;
const BUDGET_PAGES: usize = 8;
const STEPS: usize = 8;

fn model() -> Model {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../llama/tests/fixtures/tiny-llama");
    Model::load(&WeightSource::open(dir).expect("tiny llama"), Some(&nf4::QuantConfig::default())).expect("load")
}

fn lora(m: &Model) -> LoraParams {
    let cfg = LoraConfig::new(16, 32.0, 0.0, &llama::lora::PROJECTIONS).expect("lora config");
    LoraParams::init(&m.config, cfg, &mut Rng::new(1))
}

fn examples(n: usize) -> Vec<Example> {
    let mut rng = Rng::new(5);
    (0..n)
        .map(|_| {
            let ids: Vec<u32> = (0..8 + rng.below(16)).map(|_| rng.below(256) as u32).collect();
            let labels = ids.iter().map(|&t| t as i32).collect();
            Example { input_ids: ids, labels }
        })
        .collect()
}

/// `STEPS` steps of batch 2 with clipping, alternating two batches; returns the losses and the
/// final adapter.
fn train(m: &Model, opt: &mut dyn Optimizer) -> (Vec<f64>, Vec<f32>) {
    let mut params = lora(m);
    let ex = examples(4);
    let mut grads = vec![0.0f32; params.len()];
    let mut losses = Vec::new();
    for step in 0..STEPS {
        let first = 2 * (step % 2);
        let batch = [Batch::pad(&[&ex[first], &ex[first + 1]], 0)];
        let (loss, tokens) = accumulate_step(m, &params, &batch, &mut grads, false, step as u64).expect("step");
        assert!(tokens > 0 && loss.is_finite());
        clip_grad_norm(&mut grads, 1.0);
        opt.step(&mut params.data, &grads, 5e-3).expect("optimizer step");
        losses.push(loss);
    }
    (losses, params.data)
}

fn segments(m: &Model) -> Vec<usize> {
    lora(m).slots.iter().flat_map(|s| [s.a.len(), s.b.len()]).collect()
}

fn assert_real_traffic(s: Stats, state_bytes: usize) {
    assert!(state_bytes > 2 * BUDGET_PAGES * PAGE, "state {state_bytes} B must dwarf the budget");
    // Every step pages the whole state through the device: in and out, far more than the budget.
    assert!(s.bytes_in >= (STEPS * state_bytes) as u64, "{s:?}");
    assert!(s.bytes_out > 0 && s.evictions > 0, "{s:?}");
    // Prefetching ran beside the updates and left almost nothing to fault.
    assert!(s.prefetches_overlapped > 0 && s.faults_avoided > 10 * s.faults, "{s:?}");
}

#[test]
fn paged_adamw_under_a_small_budget_trains_bit_identically_to_adamw() {
    let m = model();
    let n = lora(&m).len();
    let cfg = AdamWConfig { weight_decay: 0.01, ..Default::default() };
    let (losses, adapter) = train(&m, &mut AdamW::new(cfg, n));
    let alloc = PagedAllocator::simulated(PAGE, BUDGET_PAGES * PAGE).expect("simulated device");
    let mut paged = PagedAdamW::new(cfg, n, alloc).expect("paged adamw");
    let (paged_losses, paged_adapter) = train(&m, &mut paged);
    assert_eq!(paged_losses, losses, "losses");
    assert!(paged_adapter == adapter, "adapter differs");
    assert!(losses[STEPS - 2] < losses[0] && losses[STEPS - 1] < losses[1], "the loss must go down: {losses:?}");
    assert!(paged.allocator().resident_bytes() <= BUDGET_PAGES * PAGE);
    assert_real_traffic(paged.stats(), paged.state_bytes());
}

#[test]
fn paged_8bit_adamw_under_a_small_budget_trains_bit_identically_to_host_8bit() {
    let m = model();
    let segs = segments(&m);
    let cfg = AdamWConfig { weight_decay: 0.01, ..Default::default() };
    // The tiny model's tensors are all under bnb's 4096-element threshold: lower it so that the
    // state really is 8-bit.
    let host = PagedAllocator::host(PAGE).expect("host");
    let mut plain = AdamW8bit::with_min_8bit_size(cfg, &segs, 256, host).expect("8-bit");
    let (losses, adapter) = train(&m, &mut plain);
    let alloc = PagedAllocator::simulated(PAGE, BUDGET_PAGES * PAGE).expect("simulated device");
    let mut paged = AdamW8bit::with_min_8bit_size(cfg, &segs, 256, alloc).expect("paged 8-bit");
    let (paged_losses, paged_adapter) = train(&m, &mut paged);
    assert_eq!(paged_losses, losses, "losses");
    assert!(paged_adapter == adapter, "adapter differs");
    assert_eq!(paged.save_state().expect("save"), plain.save_state().expect("save"));
    assert!(paged.allocator().resident_bytes() <= BUDGET_PAGES * PAGE);
    assert_real_traffic(paged.stats(), paged.state_bytes());
}
