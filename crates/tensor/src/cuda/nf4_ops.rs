//! NF4 on resident CUDA tensors: a frozen weight's packed codes (`U8`) and its restored absmax
//! (`F32`, double quantization already undone) live on the device, and these functions
//! dequantize it (all of it, or a range of rows so callers can go slab by slab) and run the
//! fused NF4 linear forward, with no host round trip. Kernels: `kernels/nf4.cu`
//! (`nf4_dequantize_{f32,bf16}` and, for bitsandbytes' FP4, `fp4_dequantize_{f32,bf16}`, given
//! the plain absmax) and `kernels/nf4_linear.cu` (`nf4_linear_fwd_bf16`, bf16 `mma.sync` with
//! f32 accumulation, NF4 only).
//!
//! Layout (bitsandbytes'): blocks of `blocksize` elements run over the row-major flattened
//! `(rows, cols)` weight, one f32 absmax per block; element 2j is the high nibble of byte j.
//! Reference: crates/nf4's CPU dequantization, `fp32(code · absmax)` then round-to-nearest-even
//! to the dtype, which the kernel matches bit for bit; the linear against dequantize-to-bf16 and
//! a matmul (tests in crates/nf4/tests/cuda_nf4.rs).
//!
//! Deliberately not here: code books other than NF4 and FP4 (an error), FP4 in the fused linear
//! (it holds the NF4 table; FP4 callers dequantize + matmul), the double-quant state (callers restore the absmax once and upload it), quantizing on
//! the device, the input gradient (dequantize + cuBLAS, in crates/nf4). The two launches are
//! written here, beside their checks, as `run/nf4.rs` writes its own.

use super::launch::i32_of;
use super::params::{Nf4DequantParams, Nf4LinearParams};
use super::{resident, CudaDevice, Launch};
use crate::{DType, Error, Result, Shape, Tensor};

const NF4_BITS: [u32; 16] = [
    0xbf800000, 0xbf3239b1, 0xbf066b30, 0xbeca32a0, 0xbe91a24d, 0xbe3d353f, 0xbdba7871, 0x00000000, 0x3da2faff,
    0x3e24cae3, 0x3e7c04dd, 0x3ead033a, 0x3ee1a4b8, 0x3f1007ab, 0x3f3913b3, 0x3f800000,
];

/// The NF4 code book the kernels hold (`NF4_CODE` in nf4.cu, `NF4_LUT` in nf4_linear.cu):
/// bitsandbytes' `get_4bit_type("nf4")` in fp32. A test parses the `.cu` literals against it.
pub const NF4_CODE: [f32; 16] = {
    let mut c = [0f32; 16];
    let mut i = 0;
    while i < 16 {
        c[i] = f32::from_bits(NF4_BITS[i]);
        i += 1;
    }
    c
};

const FP4_DEQUANT_BITS: [u32; 16] = [
    0x00000000, 0x3baaaaab, 0x3f2aaaab, 0x3f800000, 0x3eaaaaab, 0x3f000000, 0x3e2aaaab, 0x3e800000, 0x80000000,
    0xbbaaaaab, 0xbf2aaaab, 0xbf800000, 0xbeaaaaab, 0xbf000000, 0xbe2aaaab, 0xbe800000,
];

/// The FP4 table `fp4_dequantize_*` multiplies by (`FP4_DEQUANT_BITS` in nf4.cu): bitsandbytes'
/// FP4 as its kernels dequantize it, sign x magnitude, so code 8 is -0.0. A test compares the
/// `.cu` literals with it.
pub const FP4_CODE: [f32; 16] = {
    let mut c = [0f32; 16];
    let mut i = 0;
    while i < 16 {
        c[i] = f32::from_bits(FP4_DEQUANT_BITS[i]);
        i += 1;
    }
    c
};

/// Rows and columns of y one block of `nf4_linear_fwd_bf16` computes (`L_BM`, `L_BN`).
pub const NF4_LINEAR_TILE: usize = 64;
/// Blocks a grid's y dimension can hold: the linear's row tiles of M.
const MAX_GRID_Y: usize = 65_535;
/// Largest M, N or K the linear takes: its `int` indices run up to a tile past the end.
const MAX_LINEAR_DIM: usize = i32::MAX as usize - NF4_LINEAR_TILE;

/// The dequantize kernel's name stem for `code`: `nf4_dequantize` for the NF4 table,
/// `fp4_dequantize` for the FP4 one (bit for bit, -0.0 included); any other table is an error.
fn dequantize_kernel(op: &'static str, code: &[f32; 16]) -> Result<&'static str> {
    let same = |table: &[f32; 16]| code.iter().zip(table).all(|(a, b)| a.to_bits() == b.to_bits());
    if same(&NF4_CODE) {
        Ok("nf4_dequantize")
    } else if same(&FP4_CODE) {
        Ok("fp4_dequantize")
    } else {
        Err(Error::invalid(
            op,
            "the CUDA kernels dequantize NF4 or FP4 only (kernels/nf4.cu's NF4_CODE, FP4_DEQUANT_BITS); this \
             code book is neither",
        ))
    }
}

/// Error unless `t` has `dtype` and `len` elements (the device is checked separately).
fn check_operand(op: &'static str, what: &str, t: &Tensor, dtype: DType, len: usize) -> Result<()> {
    if t.dtype() != dtype {
        return Err(Error::invalid(op, format!("{what} must be {dtype:?}, got {:?}", t.dtype())));
    }
    if t.elem_count() != len {
        return Err(Error::invalid(op, format!("{what} has {} elements, expected {len}", t.elem_count())));
    }
    Ok(())
}

/// The CUDA device of the first tensor, after checking that every tensor is on it.
fn one_device(op: &'static str, ts: &[(&str, &Tensor)]) -> Result<std::sync::Arc<CudaDevice>> {
    let (first, t0) = ts.first().ok_or_else(|| Error::invalid(op, "no operands"))?;
    let dev = resident::device(t0, op)?;
    for (what, t) in &ts[1..] {
        if t.device() != t0.device() {
            return Err(Error::Device(format!(
                "{op}: {what} is on {:?} but {first} on {:?} (move them with to_device first)",
                t.device(),
                t0.device()
            )));
        }
    }
    Ok(dev)
}

/// What one dequantize launch covers for flat elements `e0..e0 + len`: the kernel numbers blocks
/// from its first element, so the launch starts at the block boundary at or below `e0`. With an
/// even blocksize that start is even, so the packed address moves by whole bytes
/// (`start / 2`) and the absmax address by whole blocks (`start / blocksize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RangePlan {
    /// First element decoded: a multiple of the blocksize.
    start: usize,
    /// Elements decoded: `e0 + len - start`.
    n: usize,
    /// Leading elements decoded only to reach `e0` (fewer than one block).
    skip: usize,
}

fn range_plan(e0: usize, len: usize, blocksize: usize) -> RangePlan {
    let start = e0 - e0 % blocksize;
    RangePlan { start, n: e0 + len - start, skip: e0 - start }
}

/// Flat elements `e0..e0 + len` (in bounds: the callers check) of a weight of `total` elements,
/// as a 1-D tensor of `dtype` on the weight's device.
#[allow(clippy::too_many_arguments)]
fn dequantize_flat(
    op: &'static str,
    packed: &Tensor,
    absmax: &Tensor,
    code: &[f32; 16],
    blocksize: usize,
    total: usize,
    (e0, len): (usize, usize),
    dtype: DType,
) -> Result<Tensor> {
    let sfx = match dtype {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        _ => return Err(Error::UnsupportedDType { op, dtype }),
    };
    let kernel = dequantize_kernel(op, code)?;
    if blocksize < 2 || !blocksize.is_multiple_of(2) {
        return Err(Error::invalid(op, format!("blocksize {blocksize} must be even (NF4 uses 32..4096)")));
    }
    let bs = i32_of(op, "blocksize", blocksize)?;
    check_operand(op, "packed codes", packed, DType::U8, total.div_ceil(2))?;
    check_operand(op, "absmax", absmax, DType::F32, total.div_ceil(blocksize))?;
    let dev = one_device(op, &[("packed codes", packed), ("absmax", absmax)])?;
    if len == 0 {
        return resident::zeros(&dev, dtype, [0]);
    }
    let plan = range_plan(e0, len, blocksize);
    let out = resident::zeros(&dev, dtype, [plan.n])?;
    // Views are copied first; the copies live until the end of this function, after the launch
    // is queued (buffers are freed stream-ordered).
    let ((_pk, pa), (_ak, aa)) = (resident::contiguous(packed, op)?, resident::contiguous(absmax, op)?);
    let p = Nf4DequantParams {
        out: resident::addr(&out, op)?,
        packed: pa + (plan.start / 2) as u64, // byte start/2 holds element start (even)
        absmax: aa + (plan.start / blocksize * 4) as u64, // f32: four bytes per block
        n: plan.n as i64,
        blocksize: bs,
        ..Default::default() // qabsmax, nested_absmax, dyn_code null: the absmax is plain
    };
    dev.launch("nf4", &format!("{kernel}_{sfx}"), Launch::elementwise(plan.n.div_ceil(2)), &p)?;
    if plan.skip == 0 {
        Ok(out)
    } else {
        out.narrow(0, plan.skip, len)
    }
}

/// The NF4 weight of `shape` dequantized to `dtype` (F32 or BF16) on its device: `packed` holds
/// `ceil(n/2)` code bytes and `absmax` the `ceil(n/blocksize)` restored f32 scales, both on one
/// CUDA device (views are fine); `code` must be [`NF4_CODE`] or [`FP4_CODE`]. Bit for bit the CPU's
/// values.
pub fn dequantize(
    packed: &Tensor,
    absmax: &Tensor,
    code: &[f32; 16],
    blocksize: usize,
    shape: &[usize],
    dtype: DType,
) -> Result<Tensor> {
    const OP: &str = "cuda::nf4_dequantize";
    let shape = Shape::new(shape.to_vec());
    let n = shape.try_elem_count(OP)?;
    dequantize_flat(OP, packed, absmax, code, blocksize, n, (0, n), dtype)?.reshape(shape)
}

/// Rows `r0..r0 + rows` of the 2-D NF4 weight `(rows_total, cols)`, dequantized to `dtype` as
/// `(rows, cols)` on its device: what [`dequantize`] gives for those rows, for callers that
/// dequantize a large weight slab by slab. A range that does not start on a block boundary
/// decodes up to one block more and returns a view past it.
#[allow(clippy::too_many_arguments)]
pub fn dequantize_rows(
    packed: &Tensor,
    absmax: &Tensor,
    code: &[f32; 16],
    blocksize: usize,
    (rows_total, cols): (usize, usize),
    r0: usize,
    rows: usize,
    dtype: DType,
) -> Result<Tensor> {
    const OP: &str = "cuda::nf4_dequantize_rows";
    let total = rows_total
        .checked_mul(cols)
        .ok_or_else(|| Error::invalid(OP, format!("weight ({rows_total}, {cols}) has too many elements")))?;
    if r0.checked_add(rows).is_none_or(|end| end > rows_total) {
        return Err(Error::invalid(OP, format!("rows {r0}..{r0}+{rows} outside the weight's {rows_total} rows")));
    }
    dequantize_flat(OP, packed, absmax, code, blocksize, total, (r0 * cols, rows * cols), dtype)?.reshape([rows, cols])
}

/// Ok when `nf4_linear_fwd_bf16` takes `x (M, K) · W (N, K)ᵀ` on `dev`, else the reason: bf16
/// `mma.sync` needs compute capability 8.0, sizes must fit the kernel's `int` indices, and M at
/// most 65535 row tiles of 64 (the grid's y dimension). Callers fall back to dequantize + matmul.
pub fn nf4_linear_fwd_supported(dev: &CudaDevice, m: usize, n: usize, k: usize, blocksize: usize) -> Result<()> {
    const OP: &str = "cuda::nf4_linear_fwd";
    let (major, minor) = dev.compute_capability();
    if major < 8 {
        return Err(Error::Device(format!(
            "{OP}: bf16 mma.sync needs compute capability 8.0 or newer; {} is sm_{major}{minor}",
            dev.name()
        )));
    }
    for (what, v) in [("M", m), ("N", n), ("K", k)] {
        if v > MAX_LINEAR_DIM {
            return Err(Error::invalid(OP, format!("{what} = {v} exceeds the kernel's {MAX_LINEAR_DIM}")));
        }
    }
    if blocksize == 0 {
        return Err(Error::invalid(OP, "blocksize 0"));
    }
    i32_of(OP, "blocksize", blocksize)?;
    if m.div_ceil(NF4_LINEAR_TILE) > MAX_GRID_Y {
        return Err(Error::invalid(
            OP,
            format!("M = {m} needs more than {MAX_GRID_Y} row tiles of {NF4_LINEAR_TILE} (the grid's y dimension)"),
        ));
    }
    Ok(())
}

/// `y (M, N) = x (M, K) · deq(W)ᵀ` with the NF4 weight `W (N, K)` (`packed`, restored `absmax`)
/// dequantized tile by tile into shared memory as bf16 and multiplied on tensor cores with f32
/// accumulation; `y` is `out_dtype` (F32, or BF16 rounded once). `x` is BF16 on the weight's
/// device (a view is copied first). The result equals dequantize-to-bf16 + matmul up to the
/// order of the f32 sums. Sizes the kernel does not take: see [`nf4_linear_fwd_supported`].
#[allow(clippy::too_many_arguments)]
pub fn nf4_linear_fwd(
    x: &Tensor,
    packed: &Tensor,
    absmax: &Tensor,
    n: usize,
    k: usize,
    blocksize: usize,
    out_dtype: DType,
) -> Result<Tensor> {
    const OP: &str = "cuda::nf4_linear_fwd";
    if x.dtype() != DType::BF16 {
        return Err(Error::invalid(
            OP,
            format!("x must be BF16 (the kernel's tensor cores take bf16), got {:?}", x.dtype()),
        ));
    }
    let [m, kx] = x.dims_n::<2>(OP)?;
    if kx != k {
        return Err(Error::invalid(OP, format!("x of shape {:?} does not end in K = {k}", x.dims())));
    }
    let out_bf16 = match out_dtype {
        DType::F32 => 0,
        DType::BF16 => 1,
        dtype => return Err(Error::UnsupportedDType { op: OP, dtype }),
    };
    if blocksize == 0 {
        return Err(Error::invalid(OP, "blocksize 0"));
    }
    let total =
        n.checked_mul(k).ok_or_else(|| Error::invalid(OP, format!("weight ({n}, {k}) has too many elements")))?;
    check_operand(OP, "packed codes", packed, DType::U8, total.div_ceil(2))?;
    check_operand(OP, "absmax", absmax, DType::F32, total.div_ceil(blocksize))?;
    let dev = one_device(OP, &[("x", x), ("packed codes", packed), ("absmax", absmax)])?;
    nf4_linear_fwd_supported(&dev, m, n, k, blocksize)?;
    let y = resident::zeros(&dev, out_dtype, [m, n])?;
    if m == 0 || n == 0 || k == 0 {
        return Ok(y); // K = 0: the empty sum, already zero
    }
    let ((_xc, xa), (_pc, pa), (_ac, aa)) =
        (resident::contiguous(x, OP)?, resident::contiguous(packed, OP)?, resident::contiguous(absmax, OP)?);
    let p = Nf4LinearParams {
        y: resident::addr(&y, OP)?,
        x: xa,
        packed: pa,
        absmax: aa,
        m: i32_of(OP, "M", m)?,
        n: i32_of(OP, "N", n)?,
        k: i32_of(OP, "K", k)?,
        blocksize: i32_of(OP, "blocksize", blocksize)?,
        out_bf16,
        _pad: 0,
    };
    // blockDim 128 (4 warps, 2 x 2), grid (ceil(N/64), ceil(M/64)): nf4_linear.cu's contract.
    let cfg = Launch {
        grid: (n.div_ceil(NF4_LINEAR_TILE) as u32, m.div_ceil(NF4_LINEAR_TILE) as u32, 1),
        block: (128, 1, 1),
        shared_bytes: 0,
    };
    dev.launch("nf4_linear", "nf4_linear_fwd_bf16", cfg, &p)?;
    Ok(y)
}

#[cfg(test)]
mod tests {
    //! Host logic without a GPU: the code book against the `.cu` literals, the range plan against
    //! `dequantize4_impl` (NF4) written out in Rust, and every argument error (raised before any
    //! device is touched, so CPU tensors reach them; valid CPU tensors get `Error::Device`).
    use super::*;
    use crate::Rng;

    /// The 16 float literals of `name[16] = {...}` in a `.cu` source.
    fn cu_table(src: &str, name: &str) -> Vec<f32> {
        let at = src.find(&format!("{name}[16] = {{")).unwrap_or_else(|| panic!("{name} not in source"));
        let body = &src[at..];
        let body = &body[body.find('{').unwrap() + 1..body.find('}').unwrap()];
        body.split(',').map(|s| s.trim().trim_end_matches('f').parse::<f32>().unwrap()).collect()
    }

    #[test]
    fn nf4_code_is_the_kernels_table() {
        let want: Vec<u32> = NF4_CODE.iter().map(|c| c.to_bits()).collect();
        for (file, src, name) in [
            ("nf4.cu", include_str!("../../../../kernels/nf4.cu"), "NF4_CODE"),
            ("nf4_linear.cu", include_str!("../../../../kernels/nf4_linear.cu"), "NF4_LUT"),
        ] {
            let got: Vec<u32> = cu_table(src, name).iter().map(|c| c.to_bits()).collect();
            assert_eq!(got, want, "{file}: {name}");
        }
    }

    #[test]
    fn fp4_code_is_the_kernels_table() {
        let src = include_str!("../../../../kernels/nf4.cu");
        let at = src.find("FP4_DEQUANT_BITS[16] = {").expect("FP4_DEQUANT_BITS not in nf4.cu");
        let body = &src[at..];
        let body = &body[body.find('{').unwrap() + 1..body.find('}').unwrap()];
        let got: Vec<u32> = body
            .split(',')
            .map(|s| u32::from_str_radix(s.trim().trim_start_matches("0x").trim_end_matches('u'), 16).unwrap())
            .collect();
        assert_eq!(got, FP4_CODE.map(f32::to_bits).to_vec());
        assert_eq!(FP4_CODE[8].to_bits(), 0x8000_0000, "code 8 is -0.0");
    }

    /// nf4.cu `dequantize4_impl` (NF4) with `p.absmax` set, one loop iteration per packed byte.
    fn emulate_dequantize(packed: &[u8], absmax: &[f32], n: usize, blocksize: usize) -> Vec<f32> {
        let mut out = vec![f32::NAN; n];
        for (j, &byte) in packed[..n.div_ceil(2)].iter().enumerate() {
            for h in 0..2 {
                let e = 2 * j + h;
                if e >= n {
                    break;
                }
                let q = if h == 0 { byte >> 4 } else { byte & 15 };
                out[e] = NF4_CODE[q as usize] * absmax[e / blocksize];
            }
        }
        out
    }

    #[test]
    fn row_ranges_start_on_a_block_and_decode_the_same_values() {
        let mut rng = Rng::new(5);
        for case in 0..400 {
            let bs = [32, 64, 128, 256][case % 4];
            let (rows_total, cols) = (1 + (rng.uniform() * 9.0) as usize, 1 + (rng.uniform() * 300.0) as usize);
            let total = rows_total * cols;
            let packed: Vec<u8> = (0..total.div_ceil(2)).map(|_| (rng.uniform() * 256.0) as u8).collect();
            let absmax: Vec<f32> = (0..total.div_ceil(bs)).map(|_| 0.5 + rng.uniform()).collect();
            let r0 = (rng.uniform() * rows_total as f32) as usize % rows_total;
            let rows = 1 + (rng.uniform() * (rows_total - r0) as f32) as usize % (rows_total - r0);
            let (e0, len) = (r0 * cols, rows * cols);
            let p = range_plan(e0, len, bs);
            assert!(
                p.start.is_multiple_of(bs) && p.start.is_multiple_of(2) && p.skip < bs && p.start + p.n == e0 + len,
                "{p:?}"
            );
            let got = emulate_dequantize(&packed[p.start / 2..], &absmax[p.start / bs..], p.n, bs);
            let want: Vec<f32> = (e0..e0 + len)
                .map(|e| {
                    let q = if e % 2 == 0 { packed[e / 2] >> 4 } else { packed[e / 2] & 15 };
                    NF4_CODE[q as usize] * absmax[e / bs]
                })
                .collect();
            let got: Vec<u32> = got[p.skip..].iter().map(|v| v.to_bits()).collect();
            let want: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "case {case}: ({rows_total}, {cols}) rows {r0}+{rows} bs {bs}");
        }
    }

    fn invalid_msg(r: Result<Tensor>) -> String {
        match r {
            Err(Error::Invalid { msg, .. }) => msg,
            other => panic!("expected Error::Invalid, got {other:?}"),
        }
    }

    #[test]
    fn argument_errors_come_before_the_device() {
        let (rows, cols, bs) = (4usize, 64usize, 64usize);
        let packed = Tensor::zeros([rows * cols / 2], DType::U8);
        let absmax = Tensor::ones([rows * cols / bs], DType::F32);
        let shape = [rows, cols];
        let deq =
            |p: &Tensor, a: &Tensor, code: &[f32; 16], bs: usize, dt: DType| dequantize(p, a, code, bs, &shape, dt);
        let mut fp4 = NF4_CODE;
        fp4[3] = 1.0 / 3.0;
        assert!(invalid_msg(deq(&packed, &absmax, &fp4, bs, DType::F32)).contains("NF4 or FP4 only"));
        let mut fp4_plus_zero = FP4_CODE;
        fp4_plus_zero[8] = 0.0; // the serialized quant_map's +0.0 is not the kernel's table
        assert!(invalid_msg(deq(&packed, &absmax, &fp4_plus_zero, bs, DType::F32)).contains("NF4 or FP4 only"));
        assert!(matches!(
            deq(&packed, &absmax, &NF4_CODE, bs, DType::F16),
            Err(Error::UnsupportedDType { dtype: DType::F16, .. })
        ));
        assert!(invalid_msg(deq(&packed, &absmax, &NF4_CODE, 33, DType::F32)).contains("even"));
        assert!(invalid_msg(deq(&absmax, &absmax, &NF4_CODE, bs, DType::F32)).contains("packed codes must be U8"));
        let short = Tensor::zeros([rows * cols / 2 - 1], DType::U8);
        assert!(invalid_msg(deq(&short, &absmax, &NF4_CODE, bs, DType::F32)).contains("elements, expected 128"));
        let few = Tensor::ones([1], DType::F32);
        assert!(invalid_msg(deq(&packed, &few, &NF4_CODE, bs, DType::F32)).contains("absmax has 1 elements"));
        let rows_err = dequantize_rows(&packed, &absmax, &NF4_CODE, bs, (rows, cols), 3, 2, DType::F32);
        assert!(invalid_msg(rows_err).contains("outside the weight's 4 rows"));
        // Valid arguments on the CPU: the device error, never a panic.
        for r in [
            deq(&packed, &absmax, &NF4_CODE, bs, DType::F32),
            dequantize_rows(&packed, &absmax, &NF4_CODE, bs, (rows, cols), 1, 2, DType::BF16),
            deq(&packed, &absmax, &FP4_CODE, bs, DType::BF16),
            dequantize_rows(&packed, &absmax, &FP4_CODE, bs, (rows, cols), 1, 2, DType::F32),
        ] {
            assert!(matches!(&r, Err(Error::Device(m)) if m.contains("expected a tensor on CUDA")), "{r:?}");
        }

        let x = Tensor::zeros([3, cols], DType::BF16);
        let lin = |x: &Tensor, n: usize, k: usize, out: DType| nf4_linear_fwd(x, &packed, &absmax, n, k, bs, out);
        assert!(invalid_msg(lin(&x.to_dtype(DType::F32).unwrap(), rows, cols, DType::F32)).contains("must be BF16"));
        assert!(invalid_msg(lin(&x, rows, cols + 2, DType::F32)).contains("does not end in K"));
        assert!(matches!(lin(&x, rows, cols, DType::F16), Err(Error::UnsupportedDType { dtype: DType::F16, .. })));
        assert!(invalid_msg(lin(&x, rows + 1, cols, DType::F32)).contains("packed codes has 128 elements"));
        let r = lin(&x, rows, cols, DType::BF16);
        assert!(matches!(&r, Err(Error::Device(m)) if m.contains("expected a tensor on CUDA")), "{r:?}");
    }
}
