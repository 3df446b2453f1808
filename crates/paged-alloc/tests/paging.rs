//! Allocator tests: error cases, LRU order, prefetch accounting, overlapped prefetch, and a
//! property test that any sequence of alloc/free/prefetch/evict/write/read/access (plain and
//! overlapped) keeps every byte, never exceeds the budget, reports double frees as errors, and
//! reuses freed pages (footprint ≤ peak live pages).

use paged_alloc::{Error, PagedAllocator, PagedBuffer};
use proptest::prelude::*;

const PAGE: usize = 4096;

fn filled(a: &mut PagedAllocator, len: usize, seed: u8) -> PagedBuffer {
    let b = a.alloc(len).expect("alloc");
    let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    a.write_bytes(b, 0, &data).expect("write");
    b
}

#[test]
fn handle_errors_are_errors() {
    let mut a = PagedAllocator::simulated(PAGE, 2 * PAGE).expect("alloc");
    let mut other = PagedAllocator::host(PAGE).expect("host");
    let b = a.alloc(3 * PAGE).expect("alloc");
    let foreign = other.alloc(10).expect("alloc");
    assert!(matches!(a.free(foreign), Err(Error::ForeignHandle { .. })));
    let mut out = [0u8; 8];
    let r = a.read_bytes(b, 3 * PAGE - 4, &mut out);
    assert!(matches!(r, Err(Error::OutOfRange { .. })), "{r:?}");
    let r = a.with_pages_mut(&[(b, PAGE - 4..PAGE + 4)], |_| ());
    assert!(matches!(r, Err(Error::CrossesPage { .. })), "{r:?}");
    let r = a.with_pages_mut(&[(b, 0..4), (b, 8..12)], |_| ());
    assert!(matches!(r, Err(Error::AliasedPages { .. })), "{r:?}");
    let three = [(b, 0..4), (b, PAGE..PAGE + 4), (b, 2 * PAGE..2 * PAGE + 4)];
    let r = a.with_pages_mut(&three, |_| ());
    assert!(matches!(r, Err(Error::AccessExceedsBudget { needed: 3, budget: 2, .. })), "{r:?}");
    a.free(b).expect("free");
    assert!(matches!(a.free(b), Err(Error::AlreadyFreed { .. })));
    assert!(matches!(a.prefetch_to_device(b, 0..4), Err(Error::AlreadyFreed { .. })));
    assert!(PagedAllocator::simulated(PAGE, PAGE - 1).is_err());
    assert!(PagedAllocator::simulated(PAGE + 4, 4 * PAGE).is_err());
}

#[test]
fn large_range_walks_page_by_page_within_budget() {
    let mut a = PagedAllocator::simulated(PAGE, PAGE).expect("alloc");
    let n = 10 * PAGE / 4 + 3;
    let b = a.alloc(n * 4).expect("alloc");
    let mut calls = 0;
    a.with_device_slice_mut(b, 0..n, |start, s| {
        calls += 1;
        s.iter_mut().enumerate().for_each(|(i, x)| *x = (start + i) as f32);
    })
    .expect("walk");
    assert_eq!(calls, 11);
    let mut out = vec![0.0f32; n];
    a.read_f32(b, 0, &mut out).expect("read");
    assert!(out.iter().enumerate().all(|(i, &x)| x == i as f32));
    assert!(a.resident_bytes() <= PAGE);
    assert_eq!(a.stats().faults, 11);
}

#[test]
fn lru_evicts_least_recently_used_and_prefetch_avoids_faults() {
    let mut a = PagedAllocator::simulated(PAGE, 2 * PAGE).expect("alloc");
    let (x, y, z) = (filled(&mut a, PAGE, 1), filled(&mut a, PAGE, 2), filled(&mut a, PAGE, 3));
    let touch = |a: &mut PagedAllocator, b| a.with_pages_mut(&[(b, 0..4)], |_| ()).expect("touch");
    touch(&mut a, x);
    touch(&mut a, y);
    touch(&mut a, x); // y is now least recently used
    touch(&mut a, z); // evicts y
    let s = a.stats();
    assert_eq!((s.faults, s.evictions, s.pages_out), (3, 1, 1));
    touch(&mut a, x);
    assert_eq!(a.stats().faults, 3, "x stayed resident");
    a.prefetch_to_device(y, 0..PAGE).expect("prefetch"); // evicts z (LRU)
    touch(&mut a, y);
    let s = a.stats();
    assert_eq!((s.faults, s.faults_avoided, s.prefetches), (3, 1, 1));
    a.evict_to_host(y, 0..PAGE).expect("evict");
    assert_eq!(a.resident_bytes(), PAGE);
    assert_eq!(a.stats().bytes_moved(), (a.stats().pages_in + a.stats().pages_out) * PAGE as u64);
}

#[test]
fn prefetch_never_evicts_unused_prefetched_pages() {
    let mut a = PagedAllocator::simulated(PAGE, 2 * PAGE).expect("alloc");
    let b = a.alloc(4 * PAGE).expect("alloc");
    a.prefetch_to_device(b, 0..4 * PAGE).expect("prefetch");
    let s = a.stats();
    assert_eq!((s.prefetches, s.prefetches_dropped), (2, 2));
    assert_eq!(a.resident_bytes(), 2 * PAGE);
}

#[test]
fn host_backend_moves_nothing() {
    let mut a = PagedAllocator::host(PAGE).expect("host");
    let b = filled(&mut a, 5 * PAGE + 7, 9);
    a.prefetch_to_device(b, 0..PAGE).expect("prefetch");
    a.with_device_bytes_mut(b, 0..5 * PAGE + 7, |_, s| s.iter_mut().for_each(|x| *x ^= 0xff)).expect("walk");
    a.evict_to_host(b, 0..PAGE).expect("evict");
    assert_eq!(a.stats(), Default::default());
    assert_eq!(a.resident_bytes(), 0);
    assert_eq!(a.budget_bytes(), None);
}

/// Walks `n` pages of a buffer twice, prefetching page k+1 while page k is updated.
fn walk_prefetching(a: &mut PagedAllocator, b: PagedBuffer, n: usize) {
    for _ in 0..2 {
        for k in 0..n {
            let next = (k + 1) % n;
            let r = a.with_pages_mut_prefetching(
                &[(b, k * PAGE..(k + 1) * PAGE)],
                &[(b, next * PAGE..next * PAGE + 1)],
                |v| {
                    v[0].as_bytes_mut().iter_mut().for_each(|x| *x = x.wrapping_add(1));
                    k
                },
            );
            assert_eq!(r.expect("access"), k);
        }
    }
}

#[test]
fn overlapped_prefetch_brings_the_next_page_in_during_the_access() {
    let n = 6;
    let mut a = PagedAllocator::simulated(PAGE, 3 * PAGE).expect("alloc");
    let b = filled(&mut a, n * PAGE, 5);
    let mut want = vec![0u8; n * PAGE];
    a.read_bytes(b, 0, &mut want).expect("read");
    want.iter_mut().for_each(|x| *x = x.wrapping_add(2));
    walk_prefetching(&mut a, b, n);
    let mut got = vec![0u8; n * PAGE];
    a.read_bytes(b, 0, &mut got).expect("read");
    assert_eq!(got, want);
    let s = a.stats();
    // Only the first access faults; every later page was brought in during the previous access.
    assert_eq!((s.faults, s.faults_avoided), (1, 2 * n as u64 - 1), "{s:?}");
    assert_eq!(s.prefetches_overlapped, s.prefetches, "{s:?}");
    assert!(s.evictions > 0 && a.resident_bytes() <= 3 * PAGE, "{s:?}");

    // The same walk with the overlap off moves the same pages, after each access instead.
    let mut c = PagedAllocator::simulated(PAGE, 3 * PAGE).expect("alloc");
    c.set_overlap(false);
    let b = filled(&mut c, n * PAGE, 5);
    walk_prefetching(&mut c, b, n);
    c.read_bytes(b, 0, &mut got).expect("read");
    assert_eq!(got, want);
    let t = c.stats();
    assert_eq!((t.faults, t.faults_avoided, t.prefetches_overlapped), (1, 2 * n as u64 - 1, 0), "{t:?}");
    assert_eq!((t.pages_in, t.pages_out), (s.pages_in, s.pages_out));
}

#[test]
fn overlapped_prefetch_that_does_not_fit_comes_in_after_the_access() {
    // A budget of two pages and an access that pins both: the prefetch cannot run beside it.
    let mut a = PagedAllocator::simulated(PAGE, 2 * PAGE).expect("alloc");
    let b = filled(&mut a, 4 * PAGE, 1);
    let pair = [(b, 0..8), (b, PAGE..PAGE + 8)];
    a.with_pages_mut_prefetching(&pair, &[(b, 2 * PAGE..3 * PAGE)], |v| v.len()).expect("access");
    let s = a.stats();
    assert_eq!((s.faults, s.prefetches, s.prefetches_overlapped, s.prefetches_dropped), (2, 1, 0, 0), "{s:?}");
    a.with_pages_mut(&[(b, 2 * PAGE..2 * PAGE + 4)], |_| ()).expect("access");
    assert_eq!(a.stats().faults_avoided, 1);
    // Bad ranges in `next` are errors before anything moves.
    let r = a.with_pages_mut_prefetching(&[(b, 0..4)], &[(b, 0..5 * PAGE)], |_| ());
    assert!(matches!(r, Err(Error::OutOfRange { .. })), "{r:?}");
}

#[test]
fn host_backend_overlapped_access_moves_nothing() {
    let mut a = PagedAllocator::host(PAGE).expect("host");
    let b = filled(&mut a, 3 * PAGE, 2);
    walk_prefetching(&mut a, b, 3);
    assert_eq!(a.stats(), Default::default());
}

#[derive(Clone, Debug)]
enum Op {
    Alloc(usize),
    Free(usize),
    Prefetch(usize, usize, usize),
    Evict(usize, usize, usize),
    Write(usize, usize, usize, u8),
    Access(usize, usize, u8),
    AccessPair(usize, usize, usize),
    AccessPrefetching(usize, usize, usize, usize, usize, u8),
    Trim,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..4 * PAGE + 100).prop_map(Op::Alloc),
        2 => any::<usize>().prop_map(Op::Free),
        2 => (any::<usize>(), any::<usize>(), any::<usize>()).prop_map(|(a, b, c)| Op::Prefetch(a, b, c)),
        1 => (any::<usize>(), any::<usize>(), any::<usize>()).prop_map(|(a, b, c)| Op::Evict(a, b, c)),
        3 => (any::<usize>(), any::<usize>(), 0usize..600, any::<u8>()).prop_map(|(a, b, c, d)| Op::Write(a, b, c, d)),
        3 => (any::<usize>(), any::<usize>(), any::<u8>()).prop_map(|(a, b, c)| Op::Access(a, b, c)),
        2 => (any::<usize>(), any::<usize>(), any::<usize>()).prop_map(|(a, b, c)| Op::AccessPair(a, b, c)),
        3 => (any::<usize>(), any::<usize>(), any::<usize>(), any::<usize>(), any::<usize>(), any::<u8>())
            .prop_map(|(a, b, c, d, e, f)| Op::AccessPrefetching(a, b, c, d, e, f)),
        1 => Just(Op::Trim),
    ]
}

fn range_in(len: usize, a: usize, b: usize) -> std::ops::Range<usize> {
    let s = a % (len + 1);
    s..s + b % (len - s + 1)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_sequence_keeps_bytes_and_budget(budget_pages in 2usize..5, ops in prop::collection::vec(op(), 1..60)) {
        let mut a = PagedAllocator::simulated(PAGE, budget_pages * PAGE).expect("alloc");
        let mut live: Vec<(PagedBuffer, Vec<u8>)> = Vec::new();
        let mut freed: Vec<PagedBuffer> = Vec::new();
        let mut peak_pages = 0usize;
        for op in ops {
            match op {
                Op::Alloc(len) => {
                    let b = a.alloc(len).expect("alloc");
                    live.push((b, vec![0; len]));
                }
                Op::Free(i) if !live.is_empty() => {
                    let (b, _) = live.swap_remove(i % live.len());
                    a.free(b).expect("free");
                    freed.push(b);
                }
                Op::Free(i) if !freed.is_empty() => {
                    let is_double_free = matches!(a.free(freed[i % freed.len()]), Err(Error::AlreadyFreed { .. }));
                    prop_assert!(is_double_free);
                }
                Op::Prefetch(i, x, y) if !live.is_empty() => {
                    let (b, d) = &live[i % live.len()];
                    a.prefetch_to_device(*b, range_in(d.len(), x, y)).expect("prefetch");
                }
                Op::Evict(i, x, y) if !live.is_empty() => {
                    let (b, d) = &live[i % live.len()];
                    a.evict_to_host(*b, range_in(d.len(), x, y)).expect("evict");
                }
                Op::Write(i, off, n, seed) if !live.is_empty() => {
                    let k = i % live.len();
                    let (b, d) = &mut live[k];
                    let r = range_in(d.len(), off, n);
                    let src: Vec<u8> = r.clone().map(|k| (k as u8) ^ seed).collect();
                    a.write_bytes(*b, r.start, &src).expect("write");
                    d[r].copy_from_slice(&src);
                }
                Op::Access(i, page, seed) if !live.is_empty() => {
                    let k = i % live.len();
                    let (b, d) = &mut live[k];
                    if !d.is_empty() {
                        let p = page % d.len().div_ceil(PAGE);
                        let r = p * PAGE..((p + 1) * PAGE).min(d.len());
                        a.with_pages_mut(&[(*b, r.clone())], |v| v[0].as_bytes_mut().iter_mut().for_each(|x| *x ^= seed)).expect("access");
                        d[r].iter_mut().for_each(|x| *x ^= seed);
                    }
                }
                Op::AccessPair(i, j, page) if live.len() >= 2 => {
                    let (i, j) = (i % live.len(), j % live.len());
                    let (bi, li) = (live[i].0, live[i].1.len());
                    let (bj, lj) = (live[j].0, live[j].1.len());
                    if i != j && li > 0 && lj > 0 {
                        let (pi, pj) = (page % li.div_ceil(PAGE), page % lj.div_ceil(PAGE));
                        let ri = pi * PAGE..((pi + 1) * PAGE).min(li);
                        let rj = pj * PAGE..((pj + 1) * PAGE).min(lj);
                        // Copy the shorter prefix of page j into page i, through the device views.
                        let n = ri.len().min(rj.len());
                        a.with_pages_mut(&[(bi, ri.clone()), (bj, rj.clone())], |v| {
                            let src = v[1].as_bytes_mut()[..n].to_vec();
                            v[0].as_bytes_mut()[..n].copy_from_slice(&src);
                        }).expect("pair access");
                        let src = live[j].1[rj.start..rj.start + n].to_vec();
                        live[i].1[ri.start..ri.start + n].copy_from_slice(&src);
                    }
                }
                Op::AccessPrefetching(i, page, j, x, y, seed) if !live.is_empty() => {
                    let (i, j) = (i % live.len(), j % live.len());
                    let (bj, lj) = (live[j].0, live[j].1.len());
                    let (b, d) = &mut live[i];
                    if !d.is_empty() {
                        let p = page % d.len().div_ceil(PAGE);
                        let r = p * PAGE..((p + 1) * PAGE).min(d.len());
                        let next = [(bj, range_in(lj, x, y))];
                        a.with_pages_mut_prefetching(&[(*b, r.clone())], &next, |v| {
                            v[0].as_bytes_mut().iter_mut().for_each(|x| *x ^= seed)
                        }).expect("overlapped access");
                        d[r].iter_mut().for_each(|x| *x ^= seed);
                    }
                }
                Op::Trim => a.trim().expect("trim"),
                _ => {}
            }
            peak_pages = peak_pages.max(a.live_pages());
            prop_assert!(a.resident_bytes() <= budget_pages * PAGE);
            prop_assert!(a.total_pages() <= peak_pages, "freed pages are reused");
            for (b, d) in &live {
                let mut out = vec![0xAA; d.len()];
                a.read_bytes(*b, 0, &mut out).expect("read");
                prop_assert_eq!(&out, d);
            }
        }
        let s = a.stats();
        prop_assert_eq!(s.bytes_in, s.pages_in * PAGE as u64);
        prop_assert_eq!(s.bytes_out, s.pages_out * PAGE as u64);
    }
}
