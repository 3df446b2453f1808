//! Skinny f32 products: one of M, K or N at most [`SKINNY`], the shapes of a LoRA adapter at rank
//! r (`x·Aᵀ`, `u·Bᵀ`, `g·B`, `gu·A`, `guᵀ·x`, `gᵀ·u`). gemm packs both operands into panels sized
//! for square products, which at rank 8 costs more than the multiply-adds (24–60 GFLOP/s on the
//! step's shapes); these AVX-512 kernels stream the big operand once and keep the small one in
//! registers or L1. Three kernels:
//!
//! - K small: `dst[i, :] += Σ_p lhs[i, p]·rhs[p, :]`, vectors along N, rhs rows contiguous
//!   (packed when they are not), lhs read as scalars;
//! - N small, lhs rows contiguous: dot products along K against the packed `rhsᵀ`, two lhs rows
//!   and eight outputs at a time;
//! - M small, rhs rows contiguous: vectors along N, eight lhs rows broadcast per K step. N small
//!   with a transposed lhs is this kernel on the transposed problem.
//!
//! Anything else (or a CPU without AVX-512F) is left to gemm. Each kernel computes
//! `dst = beta·(lhs·rhs)` or, accumulating, `dst += beta·(lhs·rhs)`; products are summed in f32 in
//! K order per output lane (dot products: 16 partial sums reduced at the end).

/// The largest M, K or N that counts as skinny.
pub(super) const SKINNY: usize = 16;

/// A matrix as a base pointer plus row and column strides in elements.
#[derive(Clone, Copy, Debug)]
pub(super) struct Mat {
    pub ptr: *const f32,
    pub rs: usize,
    pub cs: usize,
}

// SAFETY: a `Mat` is a read-only view; the caller keeps the memory alive and unmodified while the
// kernels (possibly on several rayon threads) read it.
unsafe impl Send for Mat {}
unsafe impl Sync for Mat {}

/// A destination pointer shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct DstPtr(*mut f32);
// SAFETY: every task writes a disjoint set of elements (row or column ranges).
unsafe impl Send for DstPtr {}
unsafe impl Sync for DstPtr {}

/// `dst (M, N, row stride N) (+)= beta·lhs·rhs` with a skinny kernel if the shape and layouts
/// suit one and the CPU has AVX-512F; false (nothing written) otherwise.
///
/// # Safety
/// `lhs` must address M×K readable elements and `rhs` K×N through their strides; `dst` holds
/// exactly M·N elements.
pub(super) unsafe fn try_run(
    dst: &mut [f32],
    lhs: Mat,
    rhs: Mat,
    [m, k, n]: [usize; 3],
    acc: Option<f32>,
    threads: bool,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if m.min(k).min(n) > SKINNY || m * k * n == 0 || !std::arch::is_x86_feature_detected!("avx512f") {
            return false;
        }
        debug_assert_eq!(dst.len(), m * n);
        // SAFETY: AVX-512F is present; the caller's contract covers the memory.
        unsafe {
            if k <= SKINNY {
                x86::k_small(dst, lhs, rhs, [m, k, n], acc, threads);
            } else if n <= SKINNY && lhs.cs == 1 {
                x86::n_small(dst, lhs, rhs, [m, k, n], acc, threads);
            } else if m <= SKINNY && rhs.cs == 1 {
                x86::m_small(dst.as_mut_ptr(), n, lhs, rhs, [m, k, n], acc, threads);
            } else if n <= SKINNY && lhs.rs == 1 {
                // dstᵀ (N, M) = rhsᵀ·lhsᵀ, whose rhs rows (lhs columns) are contiguous.
                let mut t = vec![0f32; n * m];
                let (lt, rt) = (Mat { ptr: rhs.ptr, rs: rhs.cs, cs: rhs.rs }, Mat { ptr: lhs.ptr, rs: lhs.cs, cs: 1 });
                x86::m_small(t.as_mut_ptr(), m, lt, rt, [n, k, m], None, threads);
                let beta = acc.unwrap_or(1.0);
                for (i, row) in dst.chunks_exact_mut(n).enumerate() {
                    for (j, d) in row.iter_mut().enumerate() {
                        let v = beta * t[j * m + i];
                        *d = if acc.is_some() { *d + v } else { v };
                    }
                }
            } else {
                return false;
            }
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (dst, lhs, rhs, m, k, n, acc, threads);
        false
    }
}

/// How many row (or column-block) tasks to split `units` into for `macs` multiply-adds.
fn tasks(units: usize, macs: usize, threads: bool) -> usize {
    if !threads || macs < super::cpu::PAR_MIN_MACS {
        1
    } else {
        (rayon::current_num_threads() * 2).min(units).max(1)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{tasks, DstPtr, Mat};
    use rayon::prelude::*;
    use std::arch::x86_64::*;

    /// The lane mask of the first `len` (≤ 16) lanes.
    #[inline(always)]
    fn lanes(len: usize) -> __mmask16 {
        if len >= 16 {
            0xFFFF
        } else {
            ((1u32 << len) - 1) as __mmask16
        }
    }

    /// K ≤ 16: rows of dst split into tasks; each row is a sum of K scaled rhs rows.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn k_small(
        dst: &mut [f32],
        lhs: Mat,
        rhs: Mat,
        [m, k, n]: [usize; 3],
        acc: Option<f32>,
        threads: bool,
    ) {
        // rhs as K contiguous rows of N (packed unless it already is).
        let packed: Vec<f32>;
        let (b, brs) = if rhs.cs == 1 {
            (rhs.ptr, rhs.rs)
        } else {
            let mut v = vec![0f32; k * n];
            for (p, row) in v.chunks_exact_mut(n).enumerate() {
                for (j, x) in row.iter_mut().enumerate() {
                    // SAFETY: (p, j) is inside rhs.
                    *x = unsafe { *rhs.ptr.add(p * rhs.rs + j * rhs.cs) };
                }
            }
            packed = v;
            (packed.as_ptr(), n)
        };
        let b = Mat { ptr: b, rs: brs, cs: 1 };
        let beta = acc.unwrap_or(1.0);
        let t = tasks(m, m * k * n, threads);
        let rows_per = m.div_ceil(t).next_multiple_of(4);
        let work = |(c, chunk): (usize, &mut [f32])| {
            // Whole-struct captures: the raw pointer fields alone are not Sync.
            let (lhs, b) = (lhs, b);
            let r0 = c * rows_per;
            let rows = chunk.len() / n;
            // Column blocks outside, rows inside: the block of rhs (K × 256) stays in L1.
            for j0 in (0..n).step_by(256) {
                let j1 = (j0 + 256).min(n);
                for i in (0..rows).step_by(4) {
                    // SAFETY: rows r0+i.. (up to 4, inside the chunk) are inside lhs and dst.
                    unsafe {
                        let a = lhs.ptr.add((r0 + i) * lhs.rs);
                        let d = chunk.as_mut_ptr().add(i * n);
                        let args = (d, n, a, lhs, b, k, [j0, j1], acc.is_some(), beta);
                        match rows - i {
                            1 => k_rows::<1>(args),
                            2 => k_rows::<2>(args),
                            3 => k_rows::<3>(args),
                            _ => k_rows::<4>(args),
                        }
                    }
                }
            }
        };
        if t == 1 {
            work((0, dst));
        } else {
            dst.par_chunks_mut(rows_per * n).enumerate().for_each(work);
        }
    }

    /// Arguments of [`k_rows`]: dst (stride), lhs row pointer, lhs, rhs, K, columns, accumulate, beta.
    type KArgs = (*mut f32, usize, *const f32, Mat, Mat, usize, [usize; 2], bool, f32);

    /// R consecutive dst rows (stride `dn`) of the K-small product over columns `j0..j1`, 64 per step.
    #[target_feature(enable = "avx512f")]
    unsafe fn k_rows<const R: usize>((d, dn, a, lhs, b, k, [j0, j1], accumulate, beta): KArgs) {
        unsafe {
            let mut j = j0;
            while j + 64 <= j1 {
                let mut c = [[_mm512_setzero_ps(); 4]; R];
                if accumulate {
                    for (r, cr) in c.iter_mut().enumerate() {
                        for (v, cv) in cr.iter_mut().enumerate() {
                            *cv = _mm512_loadu_ps(d.add(r * dn + j + 16 * v));
                        }
                    }
                }
                for p in 0..k {
                    let bp = b.ptr.add(p * b.rs + j);
                    let bv = [
                        _mm512_loadu_ps(bp),
                        _mm512_loadu_ps(bp.add(16)),
                        _mm512_loadu_ps(bp.add(32)),
                        _mm512_loadu_ps(bp.add(48)),
                    ];
                    for (r, cr) in c.iter_mut().enumerate() {
                        let s = _mm512_set1_ps(beta * *a.add(r * lhs.rs + p * lhs.cs));
                        for (cv, bv) in cr.iter_mut().zip(bv) {
                            *cv = _mm512_fmadd_ps(s, bv, *cv);
                        }
                    }
                }
                for (r, cr) in c.iter().enumerate() {
                    for (v, cv) in cr.iter().enumerate() {
                        _mm512_storeu_ps(d.add(r * dn + j + 16 * v), *cv);
                    }
                }
                j += 64;
            }
            while j < j1 {
                let mask = lanes(j1 - j);
                let mut c = [_mm512_setzero_ps(); R];
                if accumulate {
                    for (r, cv) in c.iter_mut().enumerate() {
                        *cv = _mm512_maskz_loadu_ps(mask, d.add(r * dn + j));
                    }
                }
                for p in 0..k {
                    let bv = _mm512_maskz_loadu_ps(mask, b.ptr.add(p * b.rs + j));
                    for (r, cv) in c.iter_mut().enumerate() {
                        let s = _mm512_set1_ps(beta * *a.add(r * lhs.rs + p * lhs.cs));
                        *cv = _mm512_fmadd_ps(s, bv, *cv);
                    }
                }
                for (r, cv) in c.iter().enumerate() {
                    _mm512_mask_storeu_ps(d.add(r * dn + j), mask, *cv);
                }
                j += 16;
            }
        }
    }

    /// N ≤ 16 with lhs rows contiguous: dot products of two lhs rows with eight rows of the
    /// packed rhsᵀ (zero-padded to a multiple of 8) at a time.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn n_small(
        dst: &mut [f32],
        lhs: Mat,
        rhs: Mat,
        [m, k, n]: [usize; 3],
        acc: Option<f32>,
        threads: bool,
    ) {
        let np = n.next_multiple_of(8);
        let mut w = vec![0f32; np * k];
        for (j, row) in w.chunks_exact_mut(k).take(n).enumerate() {
            for (p, x) in row.iter_mut().enumerate() {
                // SAFETY: (p, j) is inside rhs.
                *x = unsafe { *rhs.ptr.add(p * rhs.rs + j * rhs.cs) };
            }
        }
        let t = tasks(m, m * k * n, threads);
        let rows_per = m.div_ceil(t).next_multiple_of(2);
        let work = |(c, chunk): (usize, &mut [f32])| {
            // Whole-struct capture: the raw pointer field alone is not Sync.
            #[allow(clippy::redundant_locals)]
            let lhs = lhs;
            let r0 = c * rows_per;
            let rows = chunk.len() / n;
            // K in chunks whose rows of w (8 × KC) stay in L1 while every row pair passes.
            for p0 in (0..k).step_by(KC) {
                let kc = KC.min(k - p0);
                for i in (0..rows).step_by(2) {
                    for j0 in (0..n).step_by(8) {
                        // SAFETY: rows r0+i(+1) are inside lhs and dst; w has np ≥ j0 + 8 rows
                        // of k elements, p0 + kc ≤ k.
                        unsafe {
                            let a = lhs.ptr.add((r0 + i) * lhs.rs + p0);
                            let wj = w.as_ptr().add(j0 * k + p0);
                            let d = chunk.as_mut_ptr().add(i * n);
                            let sums = if i + 1 < rows {
                                dots::<2>(a, lhs.rs, wj, k, kc)
                            } else {
                                let s = dots::<1>(a, lhs.rs, wj, k, kc);
                                [s[0], [0.0; 8]]
                            };
                            // The first chunk writes (or accumulates into the caller's dst).
                            let add = p0 > 0 || acc.is_some();
                            for (r, row) in sums.iter().enumerate().take((rows - i).min(2)) {
                                for (jj, &s) in row.iter().enumerate().take((n - j0).min(8)) {
                                    let dp = d.add(r * n + j0 + jj);
                                    let v = acc.unwrap_or(1.0) * s;
                                    *dp = if add { *dp + v } else { v };
                                }
                            }
                        }
                    }
                }
            }
        };
        if t == 1 {
            work((0, dst));
        } else {
            dst.par_chunks_mut(rows_per * n).enumerate().for_each(work);
        }
    }

    /// The K chunk of [`n_small`].
    const KC: usize = 512;

    /// R lhs rows (stride `ars`) dotted with 8 rows of `w` (stride `wrs`) over `k` elements.
    #[target_feature(enable = "avx512f")]
    unsafe fn dots<const R: usize>(a: *const f32, ars: usize, w: *const f32, wrs: usize, k: usize) -> [[f32; 8]; R] {
        unsafe {
            let mut c = [[_mm512_setzero_ps(); 8]; R];
            let mut p = 0;
            while p < k {
                let mask = lanes(k - p);
                let mut x = [_mm512_setzero_ps(); R];
                for (r, xr) in x.iter_mut().enumerate() {
                    *xr = _mm512_maskz_loadu_ps(mask, a.add(r * ars + p));
                }
                for j in 0..8 {
                    let wv = _mm512_maskz_loadu_ps(mask, w.add(j * wrs + p));
                    for (cr, xr) in c.iter_mut().zip(x) {
                        cr[j] = _mm512_fmadd_ps(xr, wv, cr[j]);
                    }
                }
                p += 16;
            }
            let mut out = [[0f32; 8]; R];
            for (o, cr) in out.iter_mut().zip(c) {
                for (oj, cj) in o.iter_mut().zip(cr) {
                    *oj = _mm512_reduce_add_ps(cj);
                }
            }
            out
        }
    }

    /// M ≤ 16 with rhs rows contiguous: `dst (M, N; row stride dn)`, 32 columns per step, eight
    /// lhs rows (packed K-major, zero-padded) broadcast per K step. Column blocks split into tasks.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn m_small(
        dst: *mut f32,
        dn: usize,
        lhs: Mat,
        rhs: Mat,
        [m, k, n]: [usize; 3],
        acc: Option<f32>,
        threads: bool,
    ) {
        let mp = m.next_multiple_of(8);
        let beta = acc.unwrap_or(1.0);
        // lp[p·mp + i] = beta·lhs[i, p].
        let mut lp = vec![0f32; k * mp];
        for (p, row) in lp.chunks_exact_mut(mp).enumerate() {
            for (i, x) in row.iter_mut().enumerate().take(m) {
                // SAFETY: (i, p) is inside lhs.
                *x = beta * unsafe { *lhs.ptr.add(i * lhs.rs + p * lhs.cs) };
            }
        }
        let blocks = n.div_ceil(32);
        let t = tasks(blocks, m * k * n, threads);
        let per = blocks.div_ceil(t);
        let d = DstPtr(dst);
        let lp = &lp;
        let work = move |task: usize| {
            let (d, rhs) = (d, rhs);
            for blk in task * per..((task + 1) * per).min(blocks) {
                let j = blk * 32;
                for i0 in (0..m).step_by(8) {
                    // SAFETY: rows i0.. < m (stores masked to m rows), columns j.. < n (masked).
                    unsafe {
                        m_tile(d.0.add(i0 * dn), dn, lp.as_ptr().add(i0), mp, rhs, k, n, j, m - i0, acc.is_some())
                    };
                }
            }
        };
        if t == 1 {
            work(0);
        } else {
            (0..t).into_par_iter().for_each(work);
        }
    }

    /// Up to 8 dst rows × 32 columns from column `j`: Σ_p lp[p·mp + r]·rhs[p, j..].
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn m_tile(
        d: *mut f32,
        dn: usize,
        lp: *const f32,
        mp: usize,
        rhs: Mat,
        k: usize,
        n: usize,
        j: usize,
        rows: usize,
        accumulate: bool,
    ) {
        unsafe {
            let (m0, m1) = (lanes(n - j), lanes(n.saturating_sub(j + 16)));
            let mut c = [[_mm512_setzero_ps(); 2]; 8];
            for p in 0..k {
                let bp = rhs.ptr.add(p * rhs.rs + j);
                let b0 = _mm512_maskz_loadu_ps(m0, bp);
                let b1 = _mm512_maskz_loadu_ps(m1, bp.add(16));
                let l = lp.add(p * mp);
                for (r, cr) in c.iter_mut().enumerate() {
                    let s = _mm512_set1_ps(*l.add(r));
                    cr[0] = _mm512_fmadd_ps(s, b0, cr[0]);
                    cr[1] = _mm512_fmadd_ps(s, b1, cr[1]);
                }
            }
            for (r, cr) in c.iter().enumerate().take(rows.min(8)) {
                let dp = d.add(r * dn + j);
                let (mut v0, mut v1) = (cr[0], cr[1]);
                if accumulate {
                    v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, dp));
                    v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, dp.add(16)));
                }
                _mm512_mask_storeu_ps(dp, m0, v0);
                _mm512_mask_storeu_ps(dp.add(16), m1, v1);
            }
        }
    }
}
