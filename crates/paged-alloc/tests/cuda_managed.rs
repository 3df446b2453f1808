//! The CUDA unified-memory backend (feature `cuda`). Without a driver, constructing it is an
//! error, never a panic (runs everywhere). With a GPU (`#[ignore]`d here; run by
//! `scripts/gpu-check.sh`): bytes survive every page-in/page-out under a budget smaller than the
//! buffers, overlapped prefetch avoids faults, an optimizer-like update through the managed pages
//! is bit-identical to the same update on a host vector, and the residency budget is capped by
//! the device's free memory.
#![cfg(feature = "cuda")]

use paged_alloc::cuda::{driver_present, CudaManaged};
use paged_alloc::{Error, PagedAllocator, PagedBuffer, DEFAULT_PAGE_SIZE};

const PAGE: usize = 64 << 10;

fn gpu(test: &str, budget: usize) -> Option<PagedAllocator> {
    if !driver_present() {
        println!("SKIPPED: no CUDA driver ({test}: nothing checked)");
        // Reached only when a GPU test is run explicitly on a machine without a driver.
        return None;
    }
    match PagedAllocator::cuda(0, PAGE, budget) {
        Ok(a) => Some(a),
        Err(e) => panic!("{test}: a CUDA driver is present but the managed backend failed: {e}"),
    }
}

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn without_a_driver_the_backend_is_an_error_not_a_panic() {
    // Bad configuration is reported before the driver is touched.
    assert!(matches!(CudaManaged::new(0, 1000), Err(Error::Config(_))));
    if driver_present() {
        // A GPU machine: an absent ordinal is still an error, not a panic.
        let r = CudaManaged::new(1 << 20, DEFAULT_PAGE_SIZE);
        assert!(matches!(r, Err(Error::Backend { op: "new", .. })), "{:?}", r.err());
        return;
    }
    let e = CudaManaged::new(0, DEFAULT_PAGE_SIZE).err().expect("no driver here, so no backend");
    assert!(e.to_string().contains("no CUDA driver"), "{e}");
    let e = PagedAllocator::cuda(0, DEFAULT_PAGE_SIZE, 1 << 30).err().expect("no backend");
    assert!(matches!(e, Error::Backend { backend: "cuda-managed", op: "new", .. }), "{e}");
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn managed_pages_keep_every_byte_under_a_small_budget() {
    let Some(mut a) = gpu("managed_pages_keep_every_byte", 4 * PAGE) else { return };
    assert_eq!(a.budget_bytes(), Some(4 * PAGE));
    let n = 24;
    let mut rng = Lcg(1);
    let data: Vec<u8> = (0..n * PAGE).map(|_| rng.next() as u8).collect();
    let b = a.alloc(n * PAGE).expect("alloc");
    a.write_bytes(b, 0, &data).expect("write");
    // Twice over every page, prefetching the next one during the access.
    for _ in 0..2 {
        for k in 0..n {
            let next = (k + 1) % n;
            a.with_pages_mut_prefetching(
                &[(b, k * PAGE..(k + 1) * PAGE)],
                &[(b, next * PAGE..(next + 1) * PAGE)],
                |v| v[0].as_bytes_mut().iter_mut().for_each(|x| *x = x.wrapping_add(3)),
            )
            .expect("access");
            assert!(a.resident_bytes() <= 4 * PAGE);
        }
    }
    a.evict_to_host(b, 0..n * PAGE).expect("evict");
    let mut back = vec![0u8; n * PAGE];
    a.read_bytes(b, 0, &mut back).expect("read");
    let want: Vec<u8> = data.iter().map(|x| x.wrapping_add(6)).collect();
    assert!(back == want, "bytes changed on the way through the device");
    let s = a.stats();
    println!("cuda-managed round trip: {s:?}");
    assert_eq!(s.faults, 1, "{s:?}");
    assert_eq!(s.faults_avoided, 2 * n as u64 - 1, "{s:?}");
    assert!(s.prefetches_overlapped > 0 && s.evictions > 0, "{s:?}");
    a.free(b).expect("free");
    assert!(matches!(a.free(b), Err(Error::AlreadyFreed { .. })));
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn random_sequences_keep_bytes_and_budget() {
    let Some(mut a) = gpu("random_sequences_keep_bytes_and_budget", 3 * PAGE) else { return };
    let mut rng = Lcg(7);
    let mut live: Vec<(PagedBuffer, Vec<u8>)> = Vec::new();
    for step in 0..400 {
        match rng.below(6) {
            0 | 1 if live.len() < 6 => {
                let len = 1 + rng.below(4 * PAGE);
                live.push((a.alloc(len).expect("alloc"), vec![0; len]));
            }
            2 if !live.is_empty() => {
                let (b, _) = live.swap_remove(rng.below(live.len()));
                a.free(b).expect("free");
            }
            3 if !live.is_empty() => {
                let i = rng.below(live.len());
                let (b, d) = &mut live[i];
                let at = rng.below(d.len());
                let src: Vec<u8> = (0..rng.below(d.len() - at) + 1).map(|_| rng.next() as u8).collect();
                a.write_bytes(*b, at, &src).expect("write");
                d[at..at + src.len()].copy_from_slice(&src);
            }
            4 if !live.is_empty() => {
                let j = rng.below(live.len());
                let (bj, lj) = (live[j].0, live[j].1.len());
                let i = rng.below(live.len());
                let (b, d) = &mut live[i];
                let p = rng.below(d.len().div_ceil(PAGE));
                let r = p * PAGE..((p + 1) * PAGE).min(d.len());
                let seed = rng.next() as u8;
                a.with_pages_mut_prefetching(&[(*b, r.clone())], &[(bj, 0..lj)], |v| {
                    v[0].as_bytes_mut().iter_mut().for_each(|x| *x ^= seed)
                })
                .expect("access");
                d[r].iter_mut().for_each(|x| *x ^= seed);
            }
            5 if !live.is_empty() => {
                let (b, d) = &live[rng.below(live.len())];
                a.evict_to_host(*b, 0..d.len()).expect("evict");
            }
            _ => {}
        }
        assert!(a.resident_bytes() <= 3 * PAGE, "step {step}");
        for (b, d) in &live {
            let mut out = vec![0xAA; d.len()];
            a.read_bytes(*b, 0, &mut out).expect("read");
            assert!(&out == d, "step {step}: bytes of buffer #{} changed", b.id());
        }
    }
    println!("cuda-managed random sequence: {:?}", a.stats());
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn optimizer_like_update_is_bit_identical_to_host() {
    let Some(mut a) = gpu("optimizer_like_update_is_bit_identical_to_host", 2 * PAGE) else { return };
    let n = 10 * PAGE / 4; // f32 state: 10 pages through a 2-page budget
    let state = a.alloc(n * 4).expect("alloc");
    let mut host = vec![0.0f32; n];
    let mut rng = Lcg(3);
    for step in 1..=5 {
        let g: Vec<f32> = (0..n).map(|_| (rng.next() as f32 / (1u64 << 31) as f32 - 0.5) * 0.1).collect();
        let upd = |i: usize, m: &mut f32| *m = *m * 0.9 + 0.1 * g[i] / (1.0 + step as f32).sqrt();
        a.with_device_slice_mut(state, 0..n, |first, s| s.iter_mut().enumerate().for_each(|(i, m)| upd(first + i, m)))
            .expect("walk");
        host.iter_mut().enumerate().for_each(|(i, m)| upd(i, m));
    }
    let mut back = vec![0.0f32; n];
    a.read_f32(state, 0, &mut back).expect("read");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(bits(&back) == bits(&host), "managed state differs from the host reference");
    assert!(a.stats().bytes_moved() > 0);
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn budget_is_capped_by_free_device_memory() {
    let Some(a) = gpu("budget_is_capped_by_free_device_memory", usize::MAX) else { return };
    let backend = CudaManaged::new(0, PAGE).expect("backend");
    let cap = a.budget_bytes().expect("a discrete device has a budget");
    println!("cuda-managed: residency budget capped at {:.1} GiB", cap as f64 / (1u64 << 30) as f64);
    assert!(cap > 0 && cap < usize::MAX / 2);
    assert_eq!(backend.managed_bytes(), 0);
}
