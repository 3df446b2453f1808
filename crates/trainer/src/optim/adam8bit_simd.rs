//! The blockwise 8-bit Adam update of whole blocks, eight values at a time with AVX2 gathers:
//! dequantize (gather the code values), update m and v, block absmax, update p, quantize (gather
//! the bucket's lower code, then its threshold, compare). Same f32 operations in the same order
//! as the scalar `adam8bit_block`, so the results are bit-identical (tested against it).
//!
//! Reference: `dynamic_map::adam8bit_block` (the scalar kernel, itself tested bit-exact against a
//! plain transcription of bnb's update). Deliberately not here: FMA (it would change roundings),
//! AVX-512 (its intrinsics need a newer Rust than the workspace's 1.80), blocks whose length is
//! not a multiple of 8 and vectors holding inf/NaN after the division (both go to the scalar
//! kernel, which is exact on every input).

use super::dynamic_map::{adam8bit_block, DynamicMap};
use super::AdamConsts;

/// Runs [`adam8bit_block`] over consecutive blocks of `block` values: `am`/`av` hold one absmax
/// per block. Uses the AVX2 kernel where the CPU has it and `simd` is set.
#[allow(clippy::too_many_arguments)]
pub(crate) fn adam8bit_blocks(
    p: &mut [f32],
    g: &[f32],
    mc: &mut [u8],
    vc: &mut [u8],
    am: &mut [f32],
    av: &mut [f32],
    c: &AdamConsts,
    block: usize,
    simd: bool,
) {
    let (tm, tv) = (DynamicMap::Signed.table(), DynamicMap::Unsigned.table());
    #[cfg(target_arch = "x86_64")]
    {
        if simd && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked on the line above.
            unsafe { x86::blocks_avx2(p, g, mc, vc, am, av, c, block, tm, tv) };
            return;
        }
    }
    let _ = simd;
    let blocks = p.chunks_mut(block).zip(g.chunks(block)).zip(mc.chunks_mut(block).zip(vc.chunks_mut(block)));
    for (((pb, gb), (mb, vb)), (a_m, a_v)) in blocks.zip(am.iter_mut().zip(av.iter_mut())) {
        adam8bit_block(pb, gb, mb, vb, a_m, a_v, c, tm, tv);
    }
}

/// The SIMD quantizer on `xs` (finite, a multiple of 8 long): `map`'s codes, keeping the sign
/// for the signed map as the m update does. `None` without AVX2.
#[cfg(test)]
pub(crate) fn quantize_simd(map: DynamicMap, xs: &[f32]) -> Option<Vec<u8>> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            let t = map.table();
            let mut out = vec![0u8; xs.len()];
            for (x, q) in xs.chunks_exact(8).zip(out.chunks_exact_mut(8)) {
                // SAFETY: AVX2 is present (checked above); `x` and `q` hold 8 elements each.
                unsafe {
                    use std::arch::x86_64::_mm256_loadu_ps;
                    let v = _mm256_loadu_ps(x.as_ptr());
                    let code = match map {
                        DynamicMap::Signed => x86::quantize8_keep_sign(t, v),
                        DynamicMap::Unsigned => x86::quantize8(t, v),
                    };
                    x86::store_codes(q.as_mut_ptr(), code);
                }
            }
            return Some(out);
        }
    }
    let _ = (map, xs);
    None
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::dynamic_map::{adam8bit_block, DynamicMap, QuantTable};
    use super::super::AdamConsts;

    /// # Safety
    /// The CPU must support AVX2. Blocks that `block_avx2` cannot take go to the scalar kernel.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn blocks_avx2(
        p: &mut [f32],
        g: &[f32],
        mc: &mut [u8],
        vc: &mut [u8],
        am: &mut [f32],
        av: &mut [f32],
        c: &AdamConsts,
        block: usize,
        tm: &QuantTable,
        tv: &QuantTable,
    ) {
        let blocks = p.chunks_mut(block).zip(g.chunks(block)).zip(mc.chunks_mut(block).zip(vc.chunks_mut(block)));
        for (((pb, gb), (mb, vb)), (a_m, a_v)) in blocks.zip(am.iter_mut().zip(av.iter_mut())) {
            let n = pb.len();
            if n % 8 == 0 && n <= 256 && gb.len() == n && mb.len() == n && vb.len() == n {
                block_avx2(pb, gb, mb, vb, a_m, a_v, c, tm, tv);
            } else {
                adam8bit_block(pb, gb, mb, vb, a_m, a_v, c, tm, tv);
            }
        }
    }

    /// Horizontal `max` of eight non-negative lanes as `x > acc ? x : acc` folds them.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn hmax(v: __m256) -> f32 {
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), v);
        lanes.iter().fold(0.0f32, |m, &a| if a > m { a } else { m })
    }

    /// Eight codes of `x` (finite lanes): the bucket's lower code, plus one where `x` is above
    /// that code's threshold.
    ///
    /// # Safety
    /// AVX2. The dword gather reads `base[key..key + 4]` for a 16-bit key: the table is
    /// `LUT_LEN + 4` bytes; the threshold gather's indices are codes, below 256.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize8(t: &QuantTable, x: __m256) -> __m256i {
        let key = _mm256_srli_epi32::<16>(_mm256_castps_si256(x));
        let raw = _mm256_i32gather_epi32::<1>(t.base_ptr() as *const i32, key);
        let base = _mm256_and_si256(raw, _mm256_set1_epi32(0xff));
        let thr = _mm256_i32gather_ps::<4>(t.thr_ptr(), base);
        let above = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(x, thr));
        _mm256_sub_epi32(base, above) // `above` is -1 where true
    }

    /// [`quantize8`] keeping the sign (`QuantTable::quantize_keep_sign`): where the code's value
    /// has the other sign than `x`, one code towards `x`, wrapping as a `u8` does.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize8_keep_sign(t: &QuantTable, x: __m256) -> __m256i {
        let code = quantize8(t, x);
        let negative_code = _mm256_cmpgt_epi32(_mm256_set1_epi32(t.negatives() as i32), code);
        let flip = _mm256_xor_si256(negative_code, _mm256_srai_epi32::<31>(_mm256_castps_si256(x)));
        let towards = _mm256_castps_si256(_mm256_blendv_ps(
            _mm256_castsi256_ps(_mm256_set1_epi32(-1)),
            _mm256_castsi256_ps(_mm256_set1_epi32(1)),
            _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_setzero_ps()),
        ));
        let code = _mm256_add_epi32(code, _mm256_and_si256(flip, towards));
        _mm256_and_si256(code, _mm256_set1_epi32(0xff))
    }

    /// Stores the low byte of each of eight i32 lanes (all in 0..=255) to `dst[..8]`.
    ///
    /// # Safety
    /// AVX2; `dst` valid for writing 8 bytes.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn store_codes(dst: *mut u8, codes: __m256i) {
        let w = _mm256_packus_epi32(codes, codes); // u16: c0..c3 c0..c3 | c4..c7 c4..c7
        let b = _mm256_packus_epi16(w, w); // u8: c0..c3 ×4 | c4..c7 ×4
        let both = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4));
        _mm_storel_epi64(dst as *mut __m128i, _mm256_castsi256_si128(both));
    }

    /// Eight codes from `src[..8]`, widened to i32 lanes.
    ///
    /// # Safety
    /// AVX2; `src` valid for reading 8 bytes.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load_codes(src: *const u8) -> __m256i {
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(src as *const __m128i))
    }

    /// Any lane inf or NaN (exponent all ones)?
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn any_non_finite(x: __m256) -> bool {
        let exp = _mm256_set1_epi32(0x7f80_0000);
        let e = _mm256_and_si256(_mm256_castps_si256(x), exp);
        _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(e, exp))) != 0
    }

    /// [`adam8bit_block`] for a block of `n` values.
    ///
    /// # Safety
    /// AVX2; `p`, `g`, `mc` and `vc` all hold `n` values, `n` a multiple of 8 and at most 256
    /// (checked by `blocks_avx2`), so every 8-lane load and store below stays inside them and
    /// inside the 256-value stack arrays.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2")]
    unsafe fn block_avx2(
        p: &mut [f32],
        g: &[f32],
        mc: &mut [u8],
        vc: &mut [u8],
        absmax_m: &mut f32,
        absmax_v: &mut f32,
        c: &AdamConsts,
        tm: &QuantTable,
        tv: &QuantTable,
    ) {
        let n = p.len();
        let (mut s1, mut s2) = ([0.0f32; 256], [0.0f32; 256]);
        let (am, av) = (_mm256_set1_ps(*absmax_m), _mm256_set1_ps(*absmax_v));
        let (b1, omb1) = (_mm256_set1_ps(c.b1), _mm256_set1_ps(c.one_minus_b1));
        let (b2, omb2) = (_mm256_set1_ps(c.b2), _mm256_set1_ps(c.one_minus_b2));
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let inf = _mm256_castsi256_ps(_mm256_set1_epi32(0x7f80_0000));
        let (mut max_m, mut max_v) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for j in (0..n).step_by(8) {
            let gj = _mm256_loadu_ps(g.as_ptr().add(j));
            // |g| < inf as floats is false for inf and NaN.
            let finite = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_and_ps(gj, abs_mask), inf);
            let v = _mm256_mul_ps(_mm256_i32gather_ps::<4>(tv.values_ptr(), load_codes(vc.as_ptr().add(j))), av);
            let m = _mm256_mul_ps(_mm256_i32gather_ps::<4>(tm.values_ptr(), load_codes(mc.as_ptr().add(j))), am);
            // v·b2 + ((1-b2)·g)·g and m·b1 + (1-b1)·g, as the scalar kernel writes them.
            let nv = _mm256_add_ps(_mm256_mul_ps(v, b2), _mm256_mul_ps(_mm256_mul_ps(omb2, gj), gj));
            let nm = _mm256_add_ps(_mm256_mul_ps(m, b1), _mm256_mul_ps(omb1, gj));
            let (nv, nm) = (_mm256_and_ps(nv, finite), _mm256_and_ps(nm, finite));
            _mm256_storeu_ps(s2.as_mut_ptr().add(j), nv);
            _mm256_storeu_ps(s1.as_mut_ptr().add(j), nm);
            // max(x, acc) is `x > acc ? x : acc`: NaN lanes leave acc alone, as f32::max does.
            max_m = _mm256_max_ps(_mm256_and_ps(nm, abs_mask), max_m);
            max_v = _mm256_max_ps(_mm256_and_ps(nv, abs_mask), max_v);
        }
        let (new_m, new_v) = (hmax(max_m), hmax(max_v));
        (*absmax_m, *absmax_v) = (new_m, new_v);
        let decay = _mm256_set1_ps(c.decay.unwrap_or(1.0));
        let (step, eps) = (_mm256_set1_ps(c.step_size), _mm256_set1_ps(c.eps_hat));
        for j in (0..n).step_by(8) {
            let gj = _mm256_loadu_ps(g.as_ptr().add(j));
            let finite = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_and_ps(gj, abs_mask), inf);
            let pj = _mm256_loadu_ps(p.as_ptr().add(j));
            let (m, v) = (_mm256_loadu_ps(s1.as_ptr().add(j)), _mm256_loadu_ps(s2.as_ptr().add(j)));
            let upd = _mm256_div_ps(m, _mm256_add_ps(_mm256_sqrt_ps(v), eps));
            let updated = _mm256_add_ps(_mm256_mul_ps(pj, decay), _mm256_mul_ps(step, upd));
            _mm256_storeu_ps(p.as_mut_ptr().add(j), _mm256_blendv_ps(pj, updated, finite));
        }
        if new_m > 0.0 {
            let norm = _mm256_set1_ps(new_m);
            for j in (0..n).step_by(8) {
                let x = _mm256_div_ps(_mm256_loadu_ps(s1.as_ptr().add(j)), norm);
                if any_non_finite(x) {
                    scalar_m(tm, x, &mut mc[j..j + 8]);
                    continue;
                }
                let code = quantize8_keep_sign(tm, x);
                store_codes(mc.as_mut_ptr().add(j), code);
            }
        } else {
            mc.fill(DynamicMap::Signed.zero_code());
        }
        if new_v > 0.0 {
            let norm = _mm256_set1_ps(new_v);
            for j in (0..n).step_by(8) {
                let x = _mm256_div_ps(_mm256_loadu_ps(s2.as_ptr().add(j)), norm);
                if any_non_finite(x) {
                    let mut lanes = [0.0f32; 8];
                    _mm256_storeu_ps(lanes.as_mut_ptr(), x);
                    vc[j..j + 8].iter_mut().zip(lanes).for_each(|(q, x)| *q = tv.quantize(x));
                    continue;
                }
                store_codes(vc.as_mut_ptr().add(j), quantize8(tv, x));
            }
        } else {
            vc.fill(DynamicMap::Unsigned.zero_code());
        }
    }

    /// The scalar sign-keeping quantization of eight m lanes (the rare vector with inf/NaN).
    #[target_feature(enable = "avx2")]
    unsafe fn scalar_m(tm: &QuantTable, x: __m256, dst: &mut [u8]) {
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), x);
        for (q, x) in dst.iter_mut().zip(lanes) {
            *q = tm.quantize_keep_sign(x);
        }
    }
}
