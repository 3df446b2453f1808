//! Pages a 1 MiB optimizer-like state through a 64 KiB simulated device, page by page with
//! prefetch of the next page, and prints the traffic counters. Run:
//! `cargo run -p paged-alloc --example paging_demo --release`.
//!
//! Reference: the step loop of `trainer::optim::PagedAdamW`. Deliberately no optimizer math: each
//! element is just incremented, so the result is easy to check.

use paged_alloc::{PagedAllocator, Result};

fn main() -> Result<()> {
    const PAGE: usize = 4096;
    let n = 256 * 1024; // f32 elements: 1 MiB, 256 pages
    let mut alloc = PagedAllocator::simulated(PAGE, 16 * PAGE)?;
    let state = alloc.alloc(n * 4)?;
    let per_page = PAGE / 4;
    for _step in 0..3 {
        for page in 0..n / per_page {
            let r = page * PAGE..(page + 1) * PAGE;
            alloc.with_pages_mut(&[(state, r)], |v| {
                if let Ok(s) = v[0].as_f32_mut() {
                    s.iter_mut().for_each(|x| *x += 1.0);
                }
            })?;
            let next = (page + 1) % (n / per_page);
            alloc.prefetch_to_device(state, next * PAGE..(next + 1) * PAGE)?;
        }
    }
    let mut out = vec![0.0f32; n];
    alloc.read_f32(state, 0, &mut out)?;
    assert!(out.iter().all(|&x| x == 3.0));
    let s = alloc.stats();
    println!(
        "budget {} KiB, state {} KiB, resident now {} KiB",
        16 * PAGE / 1024,
        n * 4 / 1024,
        alloc.resident_bytes() / 1024
    );
    println!(
        "pages in {} / out {}, {:.1} MiB moved, faults {}, faults avoided by prefetch {}, evictions {}",
        s.pages_in,
        s.pages_out,
        s.bytes_moved() as f64 / (1 << 20) as f64,
        s.faults,
        s.faults_avoided,
        s.evictions
    );
    alloc.free(state)?;
    Ok(())
}
