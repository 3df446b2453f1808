//! PagedAdamW under a simulated device budget smaller than its state: bit-identical to AdamW over
//! many steps, with real traffic in the counters; state moves between backends and optimizers.

use paged_alloc::{Error as PagedError, PagedAllocator};

use super::tests_adamw::{bits, Rng};
use super::*;

const PAGE: usize = 4096;

fn run_pair(budget_pages: usize, n: usize, steps: usize) -> (PagedAdamW, AdamW) {
    let cfg = AdamWConfig { weight_decay: 0.05, ..Default::default() };
    let alloc = PagedAllocator::simulated(PAGE, budget_pages * PAGE).expect("alloc");
    let mut paged = PagedAdamW::new(cfg, n, alloc).expect("paged");
    let mut plain = AdamW::new(cfg, n);
    let mut rng = Rng::new(7);
    let mut p = rng.vec(n, 1.0);
    let mut q = p.clone();
    for t in 0..steps {
        let g = rng.vec(n, 0.1 + t as f32 * 0.01);
        let lr = 1e-3 * (1.0 + (t % 7) as f32);
        paged.step(&mut p, &g, lr).expect("paged step");
        plain.step(&mut q, &g, lr).expect("plain step");
        assert_eq!(bits(&p), bits(&q), "step {t}");
        let resident = paged.allocator().resident_bytes();
        assert!(resident <= budget_pages * PAGE, "{resident} B resident");
    }
    (paged, plain)
}

#[test]
fn paged_matches_plain_bit_for_bit_under_a_small_budget() {
    let n = 10_000; // 80 KB of state, 20 pages each of m and v; budget 4 pages
    let steps = 40;
    let (paged, plain) = run_pair(4, n, steps);
    assert!(paged.state_bytes() > 4 * PAGE);
    assert_eq!(paged.save_state().expect("save"), plain.save_state().expect("save"));
    let s = paged.stats();
    let state_pages = 2 * (n * 4).div_ceil(PAGE) as u64;
    // Every step pages every state page in once and (all but the budget) out once.
    assert!(s.pages_in >= state_pages * steps as u64, "{s:?}");
    assert!(s.pages_out > 0 && s.evictions > 0, "{s:?}");
    assert_eq!(s.bytes_moved(), (s.pages_in + s.pages_out) * PAGE as u64);
    // Prefetching the next page while the current one is used: only the very first page faults.
    assert_eq!(s.faults, 2, "{s:?}");
    assert_eq!(s.faults_avoided, state_pages * steps as u64 - 2, "{s:?}");
    // Every prefetch was made while the previous unit was being updated (the budget holds two
    // units), none after it; the last one brings in the first unit of a step never taken.
    assert_eq!(s.prefetches_overlapped, s.prefetches, "{s:?}");
    assert_eq!(s.prefetches, state_pages * steps as u64, "{s:?}");
}

#[test]
fn smallest_budget_still_works_and_too_small_is_an_error() {
    run_pair(2, 3000, 5); // m and v pages together: the minimum
    let alloc = PagedAllocator::simulated(PAGE, PAGE).expect("alloc");
    let mut opt = PagedAdamW::new(AdamWConfig::default(), 3000, alloc).expect("paged");
    let mut p = vec![0.5f32; 3000];
    let err = opt.step(&mut p, &vec![0.1; 3000], 1e-3);
    assert!(
        matches!(err, Err(OptimError::Paged(PagedError::AccessExceedsBudget { needed: 2, budget: 1, .. }))),
        "{err:?}"
    );
}

#[test]
fn state_moves_between_backends_and_continues_bit_identically() {
    let n = 5000;
    let cfg = AdamWConfig::default();
    let mut rng = Rng::new(11);
    let mut p = rng.vec(n, 1.0);
    let alloc = PagedAllocator::simulated(PAGE, 3 * PAGE).expect("alloc");
    let mut paged = PagedAdamW::new(cfg, n, alloc).expect("paged");
    for _ in 0..3 {
        paged.step(&mut p, &rng.vec(n, 1.0), 1e-2).expect("step");
    }
    let saved = paged.save_state().expect("save");
    // Into plain AdamW, and into a host-backed PagedAdamW.
    let mut plain = AdamW::new(cfg, n);
    plain.load_state(&saved).expect("load");
    let mut host = PagedAdamW::new(cfg, n, PagedAllocator::host(PAGE).expect("host")).expect("host");
    host.load_state(&saved).expect("load");
    let (mut q, mut r) = (p.clone(), p.clone());
    for _ in 0..4 {
        let g = rng.vec(n, 1.0);
        paged.step(&mut p, &g, 1e-2).expect("step");
        plain.step(&mut q, &g, 1e-2).expect("step");
        host.step(&mut r, &g, 1e-2).expect("step");
    }
    assert_eq!(bits(&p), bits(&q));
    assert_eq!(bits(&p), bits(&r));
    assert_eq!(host.stats(), Default::default(), "host backend moves nothing");
    let mut wrong = AdamW8bit::new(cfg, &[n]).expect("8bit");
    assert!(matches!(wrong.load_state(&saved), Err(OptimError::State(_))));
}
