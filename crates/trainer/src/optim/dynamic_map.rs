//! bitsandbytes' 8-bit dynamic maps and the blockwise 8-bit Adam update of one block.
//!
//! Reference: `functional.create_dynamic_map` (signed for m, unsigned for v) and the CUDA kernel
//! `kOptimizerStatic8bit2StateBlockwise` with its `quantize_2D` search (bitsandbytes 0.50); our
//! `quantize` gives the search's answer from a bucket table on the float's top 16 bits and one
//! comparison (tested equal on every bucket edge and on a dense sweep of all floats).
//! The maps are data (STYLE.md: format descriptors are data); `generate` rebuilds them and a test
//! checks both against the tables. Deliberately not here: bnb's fast-math divisions (`__fdividef`,
//! `__powf`), its f32 scalars (`1.0f - beta2`; we round f64 scalars to f32 as the torch path
//! does) and its CUDA weight-decay order (decay after the update); we use exact f32 division and
//! README §3.8's order (decay first) so 8-bit differs from 32-bit only by quantization.

use std::sync::OnceLock;

use super::AdamConsts;

/// Bucket index over f32 bit patterns: `x.to_bits() >> LUT_SHIFT` keeps the sign, the exponent
/// and the top 7 mantissa bits. Every bucket of both maps holds values of at most two codes
/// (tested), so a bucket's lower code and one threshold comparison give the exact code.
const LUT_SHIFT: u32 = 16;
const LUT_LEN: usize = 1 << (32 - LUT_SHIFT);
const EXP_MASK: u32 = 0x7f80_0000;

/// The quantization tables of one map, built once: code values, decision thresholds, buckets.
pub(crate) struct QuantTable {
    values: [f32; 256],
    /// `x > thr[j]` ⇔ `x` quantizes above code `j`: bnb's midpoint `(c[j] + c[j+1]) * 0.5` in f32,
    /// one ulp lower for odd `j` (a tie goes to the even code); `thr[255] = +inf`.
    thr: [f32; 256],
    /// Codes below this have negative values, the others non-negative ones (the values are
    /// sorted; 127 for the signed map, whose code 127 is 0, and 0 for the unsigned one).
    negatives: u8,
    /// Per bucket, the lowest code its values take (inf/NaN buckets unused); 4 bytes of padding
    /// so a SIMD dword gather at the last bucket stays inside.
    base: Box<[u8; LUT_LEN + 4]>,
}

impl QuantTable {
    fn build(map: DynamicMap) -> Self {
        let values = map.values();
        let mut thr = [f32::INFINITY; 256];
        for j in 0..255 {
            let mid = (values[j] + values[j + 1]) * 0.5;
            thr[j] = if j % 2 == 1 { next_down(mid) } else { mid };
        }
        let negatives = values.iter().filter(|v| v.is_sign_negative()).count() as u8;
        let mut t = Self { values, thr, negatives, base: Box::new([0u8; LUT_LEN + 4]) };
        for key in 0..LUT_LEN {
            let lo = (key as u32) << LUT_SHIFT;
            if lo & EXP_MASK != EXP_MASK {
                let hi = lo | ((1 << LUT_SHIFT) - 1);
                t.base[key] = t.count_below(f32::from_bits(lo)).min(t.count_below(f32::from_bits(hi)));
            }
        }
        t
    }

    /// The number of thresholds below `x`, by a branch-free binary search over the 256 sorted
    /// thresholds: bnb's code for every `x`, NaN (0) and ±inf included.
    #[inline]
    fn count_below(&self, x: f32) -> u8 {
        let t = &self.thr;
        let mut i = 0usize;
        for step in [128usize, 64, 32, 16, 8, 4, 2, 1] {
            i += step * (x > t[(i + step - 1) & 255]) as usize;
        }
        i as u8
    }

    /// The code of `x`: one bucket lookup and one comparison (inf/NaN take the search).
    #[inline(always)]
    pub(crate) fn quantize(&self, x: f32) -> u8 {
        let bits = x.to_bits();
        if bits & EXP_MASK == EXP_MASK {
            return self.count_below(x);
        }
        let base = self.base[(bits >> LUT_SHIFT) as usize];
        base + (x > self.thr[base as usize]) as u8
    }

    /// [`Self::quantize`] for the first moment: a code whose value has the other sign than `x`
    /// (0 is positive) is moved one step towards `x`, as bnb's signed 8-bit state does.
    #[inline(always)]
    pub(crate) fn quantize_keep_sign(&self, x: f32) -> u8 {
        let code = self.quantize(x);
        if (code < self.negatives) != x.is_sign_negative() {
            return if x > 0.0 { code.wrapping_add(1) } else { code.wrapping_sub(1) };
        }
        code
    }

    #[inline(always)]
    pub(crate) fn value(&self, code: u8) -> f32 {
        self.values[code as usize]
    }

    /// See the field: codes below it have negative values.
    pub(crate) fn negatives(&self) -> u8 {
        self.negatives
    }

    /// The 256 code values (for SIMD gathers).
    pub(crate) fn values_ptr(&self) -> *const f32 {
        self.values.as_ptr()
    }
    /// The 256 thresholds (for SIMD gathers).
    pub(crate) fn thr_ptr(&self) -> *const f32 {
        self.thr.as_ptr()
    }
    /// The bucket table, `LUT_LEN + 4` bytes (for SIMD dword gathers at byte offsets).
    pub(crate) fn base_ptr(&self) -> *const u8 {
        self.base.as_ptr()
    }

    /// The widest bucket, in codes above its lowest (the quantizer needs ≤ 1).
    #[cfg(test)]
    pub(crate) fn max_bucket_span(&self) -> u8 {
        (0..LUT_LEN as u32)
            .map(|key| key << LUT_SHIFT)
            .filter(|lo| lo & EXP_MASK != EXP_MASK)
            .map(|lo| {
                let (a, b) = (self.count_below(f32::from_bits(lo)), self.count_below(f32::from_bits(lo | 0xffff)));
                a.abs_diff(b)
            })
            .max()
            .unwrap_or(0)
    }
}

/// `max |x|` as `f32::max` folds it from 0 (NaN ignored), in eight independent lanes: `x > acc`
/// is false for NaN, and the maximum of non-negative values does not depend on the order.
#[inline(always)]
fn abs_max(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut chunks = xs.chunks_exact(8);
    for ch in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(ch) {
            let x = x.abs();
            *a = if x > *a { x } else { *a };
        }
    }
    for &x in chunks.remainder() {
        let x = x.abs();
        acc[0] = if x > acc[0] { x } else { acc[0] };
    }
    acc.iter().fold(0.0f32, |m, &a| if a > m { a } else { m })
}

/// The largest f32 below `x` (finite `x`; `f32::next_down` needs a newer Rust than ours).
fn next_down(x: f32) -> f32 {
    let b = x.to_bits();
    if x == 0.0 {
        f32::from_bits(0x8000_0001)
    } else if x > 0.0 {
        f32::from_bits(b - 1)
    } else {
        f32::from_bits(b + 1)
    }
}

/// `create_dynamic_map(signed=False)`, produced by `generate` below (tested).
pub(crate) const UNSIGNED_BITS: [u32; 256] = [
    0x00000000, 0x34ae7baa, 0x35500998, 0x360e9b38, 0x3692ccf6, 0x36de4c51, 0x3714e5d5, 0x3783126e, 0x37e171a0,
    0x381fe868, 0x384f1800, 0x387e479a, 0x3896bb99, 0x38ae5364, 0x38c5eb31, 0x3906594b, 0x394154ca, 0x397c5049,
    0x399ba5e4, 0x39b923a2, 0x39d6a163, 0x39f41f22, 0x3a08ce71, 0x3a178d50, 0x3a264c30, 0x3a350b10, 0x3a43c9ef,
    0x3a5288d0, 0x3a6147af, 0x3a70068e, 0x3a7ec56e, 0x3a958106, 0x3aba5e35, 0x3adf3b64, 0x3b020c4a, 0x3b147ae1,
    0x3b26e978, 0x3b395810, 0x3b4bc6a7, 0x3b5e3540, 0x3b70a3d7, 0x3b818937, 0x3b8ac082, 0x3b93f7cf, 0x3b9d2f1a,
    0x3ba66666, 0x3baf9db2, 0x3bb8d4fd, 0x3bc20c4a, 0x3bcb4395, 0x3bd47ae1, 0x3bddb22e, 0x3be6e978, 0x3bf020c5,
    0x3bf9580f, 0x3c0147ae, 0x3c05e354, 0x3c0a7ef9, 0x3c0f1aa0, 0x3c13b645, 0x3c1851eb, 0x3c1ced92, 0x3c218937,
    0x3c2f5c2a, 0x3c466667, 0x3c5d70a3, 0x3c747ae2, 0x3c85c28f, 0x3c9147af, 0x3c9ccccd, 0x3ca851eb, 0x3cb3d70b,
    0x3cbf5c29, 0x3ccae147, 0x3cd66667, 0x3ce1eb87, 0x3ced70a3, 0x3cf8f5c3, 0x3d023d70, 0x3d080000, 0x3d0dc28f,
    0x3d13851f, 0x3d1947af, 0x3d1f0a3d, 0x3d24cccd, 0x3d2a8f5c, 0x3d3051eb, 0x3d36147b, 0x3d3bd70a, 0x3d41999a,
    0x3d475c28, 0x3d4d1eb8, 0x3d52e147, 0x3d58a3d7, 0x3d5e6667, 0x3d6428f7, 0x3d69eb87, 0x3d6fae15, 0x3d7570a3,
    0x3d7b3333, 0x3d807ae2, 0x3d835c2a, 0x3d863d71, 0x3d891eb8, 0x3d8c0000, 0x3d8ee148, 0x3d91c290, 0x3d94a3d7,
    0x3d97851f, 0x3d9a6667, 0x3d9d47af, 0x3da028f6, 0x3da30a3e, 0x3da5eb85, 0x3da8cccd, 0x3dabae15, 0x3dae8f5c,
    0x3db170a4, 0x3db451eb, 0x3db73333, 0x3dba147b, 0x3dbcf5c3, 0x3dbfd70b, 0x3dc2b852, 0x3dc5999a, 0x3dc87ae2,
    0x3dcb5c29, 0x3dd40000, 0x3de26666, 0x3df0cccd, 0x3dff3333, 0x3e06cccc, 0x3e0e0000, 0x3e153334, 0x3e1c6666,
    0x3e23999a, 0x3e2acccc, 0x3e320000, 0x3e393334, 0x3e406666, 0x3e47999a, 0x3e4ecccc, 0x3e560000, 0x3e5d3334,
    0x3e646666, 0x3e6b999a, 0x3e72cccc, 0x3e7a0000, 0x3e809999, 0x3e843333, 0x3e87cccd, 0x3e8b6666, 0x3e8f0000,
    0x3e92999a, 0x3e963333, 0x3e99cccc, 0x3e9d6666, 0x3ea10000, 0x3ea4999a, 0x3ea83333, 0x3eabcccc, 0x3eaf6666,
    0x3eb30000, 0x3eb6999a, 0x3eba3333, 0x3ebdcccc, 0x3ec16666, 0x3ec50000, 0x3ec8999a, 0x3ecc3333, 0x3ecfcccc,
    0x3ed36666, 0x3ed70000, 0x3eda999a, 0x3ede3333, 0x3ee1cccc, 0x3ee56666, 0x3ee90000, 0x3eec999a, 0x3ef03333,
    0x3ef3cccc, 0x3ef76666, 0x3efb0000, 0x3efe9999, 0x3f01199a, 0x3f02e666, 0x3f04b333, 0x3f068000, 0x3f084ccc,
    0x3f0a199a, 0x3f0be666, 0x3f0db334, 0x3f0f8000, 0x3f114ccd, 0x3f13199a, 0x3f14e666, 0x3f16b334, 0x3f188000,
    0x3f1a4ccd, 0x3f1c199a, 0x3f1de666, 0x3f1fb334, 0x3f218000, 0x3f234ccd, 0x3f25199a, 0x3f26e666, 0x3f28b334,
    0x3f2a8000, 0x3f2c4ccd, 0x3f2e199a, 0x3f2fe666, 0x3f31b334, 0x3f338000, 0x3f354ccd, 0x3f37199a, 0x3f38e666,
    0x3f3ab334, 0x3f3c8000, 0x3f3e4ccd, 0x3f40199a, 0x3f41e666, 0x3f43b334, 0x3f458000, 0x3f474ccc, 0x3f49199a,
    0x3f4ae666, 0x3f4cb334, 0x3f4e8000, 0x3f504ccc, 0x3f52199a, 0x3f53e666, 0x3f55b334, 0x3f578000, 0x3f594ccc,
    0x3f5b199a, 0x3f5ce666, 0x3f5eb334, 0x3f608000, 0x3f624ccc, 0x3f64199a, 0x3f65e666, 0x3f67b334, 0x3f698000,
    0x3f6b4ccc, 0x3f6d199a, 0x3f6ee666, 0x3f70b334, 0x3f728000, 0x3f744ccc, 0x3f76199a, 0x3f77e666, 0x3f79b334,
    0x3f7b8000, 0x3f7d4ccc, 0x3f7f199a, 0x3f800000,
];

/// Which 8-bit dynamic map: signed (first moment) or unsigned (second moment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DynamicMap {
    Signed,
    Unsigned,
}

impl DynamicMap {
    fn bits(self) -> &'static [u32; 256] {
        match self {
            Self::Signed => &nf4::DYNAMIC_MAP_BITS,
            Self::Unsigned => &UNSIGNED_BITS,
        }
    }
    /// The 256 code values, sorted ascending; the last is 1.0.
    pub fn values(self) -> [f32; 256] {
        self.bits().map(f32::from_bits)
    }
    #[inline]
    pub fn value(self, code: u8) -> f32 {
        f32::from_bits(self.bits()[code as usize])
    }
    /// Code of the value a block scale of 0 maps to (dequantizes to 0 whatever the code).
    pub(crate) fn zero_code(self) -> u8 {
        match self {
            Self::Signed => 127,
            Self::Unsigned => 0,
        }
    }
    /// The map's quantization tables, built on first use.
    pub(crate) fn table(self) -> &'static QuantTable {
        static TABLES: OnceLock<[QuantTable; 2]> = OnceLock::new();
        let tables = TABLES.get_or_init(|| [QuantTable::build(Self::Signed), QuantTable::build(Self::Unsigned)]);
        &tables[self as usize]
    }
    /// Nearest code to `x` in [-1, 1] (unsigned: [0, 1]), equal to bnb's `quantize_2D` search:
    /// exact nearest, a tie goes to the even index. The code is the number of bnb's midpoints
    /// below `x` (a midpoint `x` sits on counts when its lower code is odd); a bucket table on the
    /// float's bits narrows that to one comparison.
    #[inline]
    pub fn quantize(self, x: f32) -> u8 {
        self.table().quantize(x)
    }
    /// bnb's `quantize_2D` binary search itself (the reference for [`Self::quantize`]).
    #[cfg(test)]
    pub(crate) fn quantize_search(self, x: f32) -> u8 {
        let bits = self.bits();
        let code = |i: usize| f32::from_bits(bits[i & 255]);
        // The search's pivots: 127 ± 64 ± 32 … ± 1, going up while x > code[pivot]. Written with
        // selects rather than branches (the branchy form mispredicts ~8 times per value).
        let mut p = 127usize;
        let mut step = 64;
        while step > 0 {
            p = if x > code(p) { p + step } else { p - step };
            step >>= 1;
        }
        // p is even and ≤ 254; the search's last bracket is [p-1, p+1] (bnb's lower bound -1/0
        // when p = 0 never changes the answer), and its midpoints are rounded as bnb rounds them.
        let val = code(p);
        let pick = if x > val {
            p + (x > (code(p + 1) + val) * 0.5) as usize
        } else {
            p - (p > 0 && x < (code(p.wrapping_sub(1)) + val) * 0.5) as usize
        };
        pick as u8
    }
    /// Rebuilds the map as `create_dynamic_map(signed, 7, 8)` does in f32: torch's `linspace`
    /// (start + step·i below the halfway point, end − step·(n−1−i) above, each rounded once),
    /// means of neighbours, times `10^(i−6)` rounded to f32, plus 0 and 1, sorted.
    pub fn generate(self) -> [f32; 256] {
        let signed = self == Self::Signed;
        let scales = [1e-6f64, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];
        let mut data = Vec::with_capacity(256);
        for (i, &scale) in scales.iter().enumerate() {
            let n = if signed { (1usize << i) + 1 } else { (1usize << (i + 1)) + 1 };
            let (start, end) = (0.1f32, 1.0f32);
            let step = (end - start) / (n - 1) as f32;
            let lin: Vec<f32> = (0..n)
                .map(|k| {
                    let (s, e, st) = (start as f64, end as f64, step as f64);
                    let v = if k < n / 2 { s + st * k as f64 } else { e - st * (n - 1 - k) as f64 };
                    v as f32
                })
                .collect();
            for w in lin.windows(2) {
                let mean = (w[0] + w[1]) / 2.0;
                data.push(scale as f32 * mean);
                if signed {
                    data.push(-(scale as f32) * mean);
                }
            }
        }
        data.push(0.0);
        data.push(1.0);
        data.sort_by(f32::total_cmp);
        let mut out = [0.0f32; 256];
        out.iter_mut().zip(&data).for_each(|(o, d)| *o = *d);
        out
    }
}

/// Blockwise 8-bit quantization (bnb `quantize_blockwise`): per block of `block` values,
/// absmax and nearest codes. `codes.len() == x.len()`, `absmax.len() == x.len().div_ceil(block)`.
pub fn quantize_blockwise(map: DynamicMap, x: &[f32], block: usize, codes: &mut [u8], absmax: &mut [f32]) {
    let block = block.max(1);
    let blocks = x.chunks(block).zip(codes.chunks_mut(block));
    for ((xs, cs), a) in blocks.zip(absmax.iter_mut()) {
        *a = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (c, &v) in cs.iter_mut().zip(xs) {
            *c = if *a > 0.0 { map.quantize(v / *a) } else { map.zero_code() };
        }
    }
}

/// Inverse of [`quantize_blockwise`]: `code value × block absmax`.
pub fn dequantize_blockwise(map: DynamicMap, codes: &[u8], absmax: &[f32], block: usize, out: &mut [f32]) {
    let block = block.max(1);
    for ((cs, os), &a) in codes.chunks(block).zip(out.chunks_mut(block)).zip(absmax) {
        os.iter_mut().zip(cs).for_each(|(o, &c)| *o = map.value(c) * a);
    }
}

/// One block (≤ 256 values) of bnb's blockwise 8-bit Adam: dequantize m (signed map, `tm`) and
/// v (unsigned map, `tv`), update them in f32, take the new block absmax, update p, requantize;
/// m keeps its sign through quantization. Non-finite gradients zero the state and leave p alone
/// (bnb). Written as four passes over stack arrays with selects instead of branches, so the
/// divisions and square roots vectorize; the f32 operations and their order are the reference's.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn adam8bit_block(
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
    let n = p.len().min(g.len()).min(mc.len()).min(vc.len()).min(256);
    let (p, g, mc, vc) = (&mut p[..n], &g[..n], &mut mc[..n], &mut vc[..n]);
    let (mut s1, mut s2) = ([0.0f32; 256], [0.0f32; 256]);
    let (s1, s2) = (&mut s1[..n], &mut s2[..n]);
    let (am, av) = (*absmax_m, *absmax_v);
    for j in 0..n {
        let gj = g[j];
        let finite = gj.is_finite();
        let v = tv.value(vc[j]) * av;
        let m = tm.value(mc[j]) * am;
        s2[j] = if finite { v * c.b2 + c.one_minus_b2 * gj * gj } else { 0.0 };
        s1[j] = if finite { m * c.b1 + c.one_minus_b1 * gj } else { 0.0 };
    }
    let (new_m, new_v) = (abs_max(s1), abs_max(s2));
    (*absmax_m, *absmax_v) = (new_m, new_v);
    // `p * 1.0` is `p` exactly, so no decay multiplies by one instead of branching.
    let decay = c.decay.unwrap_or(1.0);
    for j in 0..n {
        let updated = p[j] * decay + c.step_size * (s1[j] / (s2[j].sqrt() + c.eps_hat));
        p[j] = if g[j].is_finite() { updated } else { p[j] };
    }
    if new_m > 0.0 {
        // Dividing by a positive absmax keeps each sign (also of zeros and underflows), so the
        // sign test below can read the quotient.
        s1.iter_mut().for_each(|x| *x /= new_m);
        for (q, &x) in mc.iter_mut().zip(s1.iter()) {
            *q = tm.quantize_keep_sign(x);
        }
    } else {
        mc.fill(DynamicMap::Signed.zero_code());
    }
    if new_v > 0.0 {
        s2.iter_mut().for_each(|x| *x /= new_v);
        for (q, &x) in vc.iter_mut().zip(s2.iter()) {
            *q = tv.quantize(x);
        }
    } else {
        vc.fill(DynamicMap::Unsigned.zero_code());
    }
}
