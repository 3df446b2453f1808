//! The NF4 linear: `y = x·deq(W)ᵀ` and its input gradient `dx = dy·deq(W)`, computed slab by
//! slab: up to 16 MiB of rows of W are dequantized (in parallel) into a buffer the calling thread
//! keeps and reuses, then multiplied by one multi-threaded `gemm` call (forward: a column block of
//! y, from a slab decoded transposed where AVX-512 allows, since gemm is faster on a row-major
//! right operand; backward: accumulated into dx). A small model's weight is one slab; a 7B one's MLP weight is
//! eleven; the dequantized model never exists. Shapes: x (N, in) (any leading dims flattened into N), W (out, in), y (N, out).
//!
//! Reference: bitsandbytes 0.50.2 `autograd/_functions.py: MatMul4Bit` (forward
//! `linear(A, dequantize_4bit(B).t())`, backward `grad_A = grad_output @ dequantize_4bit(B)`,
//! no gradient for the frozen 4-bit weight) and `nn/modules.py: Linear4bit`.
//! Inputs on a CUDA device run there with a weight moved to that device
//! ([`Nf4Weight::to_device`]): `device.rs` has the paths and their numerics; [`forward`],
//! [`backward`] and [`nf4_linear`] dispatch on the input's device.
//! Deliberately not here: a bias (LoRA layers have none), a gradient for W. Gradients are
//! returned, not accumulated; the autograd tape does the `+=`.

use std::sync::Arc;

use rayon::prelude::*;
use tensor::{bf16, f16, DType, Device, Element, Tensor};

pub use crate::device::DEVICE_SLAB_ELEMS;

use crate::quantize::decode_chunk;
use crate::transposed::decode_rows_t;
use crate::weight::Nf4Weight;
use crate::{Error, Result};

/// `(out, in)` of a 2-D weight, or an error naming it.
pub(crate) fn weight_dims(w: &Nf4Weight) -> Result<(usize, usize)> {
    match w.shape() {
        [o, i] => Ok((*o, *i)),
        s => Err(Error::arg(w.name(), format!("NF4 linear needs a 2-D weight (out, in), got shape {s:?}"))),
    }
}

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)` in f32, with element strides (`rs` between rows,
/// `cs` between columns). Checks that every index reached lies inside its slice, then calls
/// `gemm` with `par`.
#[allow(clippy::too_many_arguments)]
fn gemm_f32(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    (dst_rs, dst_cs): (usize, usize),
    accumulate: bool,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
    par: gemm::Parallelism,
) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    let fits = |len: usize, rows: usize, cols: usize, rs: usize, cs: usize| {
        rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < len
    };
    if !fits(dst.len(), m, n, dst_rs, dst_cs)
        || !fits(lhs.len(), m, k, lhs_rs, lhs_cs)
        || !fits(rhs.len(), k, n, rhs_rs, rhs_cs)
    {
        return Err(Error::arg("nf4 linear", format!("internal tile of {m}x{n}x{k} out of bounds")));
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst[i * dst_rs + j * dst_cs] = 0.0;
                }
            }
        }
        return Ok(());
    }
    // SAFETY: all indices the product reaches were checked above; `dst` is borrowed mutably
    // and does not alias `lhs`/`rhs` (distinct Rust borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        );
    }
    Ok(())
}

/// f32 elements of W dequantized at a time (16 MiB): a whole weight of a small model, a slab of
/// rows of a big one; the buffer is kept per thread and reused, never the whole model.
const SLAB_ELEMS: usize = 1 << 22;
/// Elements each rayon task dequantizes.
const DECODE_CHUNK: usize = 1 << 14;

thread_local! {
    /// The calling thread's dequantization buffer, grown once and reused by every call.
    static SLAB: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Rows of W per slab: as many as fit in [`SLAB_ELEMS`], at least one.
fn slab_rows(out_f: usize, in_f: usize) -> usize {
    (SLAB_ELEMS / in_f).clamp(1, out_f)
}

/// Run `f(r0, rows, slab)` for each slab of rows of deq(W), in order, dequantizing each slab in
/// parallel into this thread's reused buffer.
/// With `transposed`, a slab is decoded as `(in, rows)` where the fast transposing decoder
/// applies ([`crate::transposed`]), and `f`'s last argument says which layout it got.
fn for_each_slab(
    w: &Nf4Weight,
    absmax: &[f32],
    transposed: bool,
    mut f: impl FnMut(usize, usize, &[f32], bool) -> Result<()>,
) -> Result<()> {
    let (out_f, in_f) = weight_dims(w)?;
    let code = w.quant_type().traits().dequant_code();
    let (packed, bs) = (w.packed(), w.blocksize());
    let per = slab_rows(out_f, in_f);
    SLAB.with(|cell| {
        // A nested call (none today) would find the buffer borrowed: give it its own.
        let mut own = Vec::new();
        let mut guard = cell.try_borrow_mut().ok();
        let buf = guard.as_deref_mut().unwrap_or(&mut own);
        if buf.len() < per * in_f {
            buf.resize(per * in_f, 0.0);
        }
        let mut r0 = 0;
        while r0 < out_f {
            let rows = per.min(out_f - r0);
            let slab = &mut buf[..rows * in_f];
            let t = transposed && decode_rows_t(packed, absmax, bs, &code, in_f, r0, rows, slab);
            if !t {
                slab.par_chunks_mut(DECODE_CHUNK)
                    .enumerate()
                    .for_each(|(i, c)| decode_chunk(packed, absmax, bs, &code, r0 * in_f + i * DECODE_CHUNK, c));
            }
            f(r0, rows, slab, t)?;
            r0 += rows;
        }
        Ok(())
    })
}

/// Forward on f32 slices: `x` (n, in) row-major, returns `y` (n, out). `absmax` is the
/// restored fp32 absmax of `w`.
pub fn forward_f32(x: &[f32], n: usize, w: &Nf4Weight, absmax: &[f32]) -> Result<Vec<f32>> {
    let (out_f, in_f) = weight_dims(w)?;
    check_len(w.name(), "x", x.len(), n * in_f)?;
    let mut y = vec![0f32; n * out_f];
    if n == 0 || out_f == 0 || in_f == 0 {
        return Ok(y);
    }
    for_each_slab(w, absmax, true, |r0, rows, slab, t| {
        // y[:, r0..r0+rows] (n, rows) = x (n, in) · slabᵀ (in, rows); gemm is faster when the
        // slab arrives already transposed (row-major rhs).
        let par = par(n * rows * in_f);
        let rhs_strides = if t { (rows, 1) } else { (1, in_f) };
        gemm_f32((n, rows, in_f), &mut y[r0..], (out_f, 1), false, x, (in_f, 1), slab, rhs_strides, par)
    })?;
    Ok(y)
}

/// Backward on f32 slices: `dy` (n, out) row-major, returns `dx = dy·deq(W)` (n, in).
pub fn backward_f32(dy: &[f32], n: usize, w: &Nf4Weight, absmax: &[f32]) -> Result<Vec<f32>> {
    let (out_f, in_f) = weight_dims(w)?;
    check_len(w.name(), "dy", dy.len(), n * out_f)?;
    let mut dx = vec![0f32; n * in_f];
    if n == 0 || out_f == 0 || in_f == 0 {
        return Ok(dx);
    }
    for_each_slab(w, absmax, false, |r0, rows, slab, _| {
        // dx (n, in) [+]= dy[:, r0..r0+rows] (n, rows) · slab (rows, in)
        let par = par(n * rows * in_f);
        gemm_f32((n, in_f, rows), &mut dx, (in_f, 1), r0 > 0, &dy[r0..], (out_f, 1), slab, (in_f, 1), par)
    })?;
    Ok(dx)
}

/// Threads for one product of `macs` multiply-adds: all of rayon's above a small size.
fn par(macs: usize) -> gemm::Parallelism {
    if macs < 1 << 16 || rayon::current_num_threads() == 1 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(0)
    }
}

fn check_len(name: &str, what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::arg(name, format!("{what} has {got} elements, expected {want}")));
    }
    Ok(())
}

/// Widen a float tensor to a contiguous f32 vector (no copy needed for f32 is not attempted:
/// callers borrow f32 directly).
fn to_f32_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_vec_f32()?)
}

/// A vector of f32 as a tensor of `dtype` (round-to-nearest-even for bf16/f16).
fn from_f32_vec(v: Vec<f32>, shape: Vec<usize>, dtype: DType, name: &str) -> Result<Tensor> {
    let t = match dtype {
        DType::F32 => Tensor::from_vec(v, shape)?,
        DType::BF16 => Tensor::from_vec(v.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>(), shape)?,
        DType::F16 => Tensor::from_vec(v.iter().map(|&x| <f16 as Element>::from_f32(x)).collect::<Vec<_>>(), shape)?,
        other => return Err(Error::arg(name, format!("NF4 linear takes f32, bf16 or f16, got {}", other.as_str()))),
    };
    Ok(t)
}

/// Run `f` on `t` as a row-major f32 slice of `n` rows (borrowed when already f32).
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    if t.dtype() == DType::F32 {
        if let Ok(s) = t.as_slice::<f32>() {
            return f(s);
        }
    }
    let v = to_f32_vec(t)?;
    f(&v)
}

/// Leading-dims product and last dim of `t`, checking the last dim equals `want`.
pub(crate) fn rows_of(t: &Tensor, want: usize, what: &str, w: &Nf4Weight) -> Result<usize> {
    let dims = t.dims();
    match dims.last() {
        Some(&d) if d == want => Ok(dims[..dims.len() - 1].iter().product()),
        _ => Err(Error::arg(
            w.name(),
            format!("{what} of shape {dims:?} does not end in {want} for weight of shape {:?}", w.shape()),
        )),
    }
}

/// `y = x·deq(W)ᵀ` for `x` of shape (.., in) in f32, bf16 or f16 (computed in f32, returned in
/// x's dtype; on CUDA a bf16 `x` also rounds W to bf16, as bitsandbytes does), W of shape
/// (out, in); y has shape (.., out), on x's device. An `x` on a CUDA device needs `w` moved there
/// ([`Nf4Weight::to_device`]); a CPU `x` works with any weight.
pub fn forward(x: &Tensor, w: &Nf4Weight) -> Result<Tensor> {
    if x.device() != Device::Cpu {
        return crate::device::forward_device(x, w, DEVICE_SLAB_ELEMS);
    }
    let (out_f, in_f) = weight_dims(w)?;
    let n = rows_of(x, in_f, "input", w)?;
    let absmax = w.restored_absmax()?;
    let y = with_f32(x, |xs| forward_f32(xs, n, w, &absmax))?;
    let mut shape = x.dims().to_vec();
    if let Some(last) = shape.last_mut() {
        *last = out_f;
    }
    from_f32_vec(y, shape, x.dtype(), w.name())
}

/// `dx = dy·deq(W)` for `dy` of shape (.., out); dx has shape (.., in) and `dtype`, on dy's
/// device (a CUDA `dy` needs `w` on that device, as [`forward`]).
pub fn backward(dy: &Tensor, w: &Nf4Weight, dtype: DType) -> Result<Tensor> {
    if dy.device() != Device::Cpu {
        return crate::device::backward_device(dy, w, dtype, DEVICE_SLAB_ELEMS);
    }
    let (out_f, in_f) = weight_dims(w)?;
    let n = rows_of(dy, out_f, "output gradient", w)?;
    let absmax = w.restored_absmax()?;
    let dx = with_f32(dy, |g| backward_f32(g, n, w, &absmax))?;
    let mut shape = dy.dims().to_vec();
    if let Some(last) = shape.last_mut() {
        *last = in_f;
    }
    from_f32_vec(dx, shape, dtype, w.name())
}

/// [`forward`] for `x` on a CUDA device, dequantizing at most `slab_elems` elements of W at a
/// time (at least one row; [`DEVICE_SLAB_ELEMS`] is what [`forward`] uses). A CPU `x` is an error:
/// the CPU path has its own slabs.
pub fn forward_device(x: &Tensor, w: &Nf4Weight, slab_elems: usize) -> Result<Tensor> {
    if x.device() == Device::Cpu {
        return Err(Error::arg(w.name(), "forward_device: x is on the CPU (use linear::forward)"));
    }
    crate::device::forward_device(x, w, slab_elems)
}

/// [`backward`] for `dy` on a CUDA device with slabs of at most `slab_elems` elements of W.
pub fn backward_device(dy: &Tensor, w: &Nf4Weight, dtype: DType, slab_elems: usize) -> Result<Tensor> {
    if dy.device() == Device::Cpu {
        return Err(Error::arg(w.name(), "backward_device: dy is on the CPU (use linear::backward)"));
    }
    crate::device::backward_device(dy, w, dtype, slab_elems)
}

/// Keeps the weight alive inside a backward closure without copying it.
pub type SharedWeight = Arc<Nf4Weight>;

/// The NF4 linear as an autograd op: records `y = x·deq(W)ᵀ` on `x`'s tape with a backward that
/// returns `dx = dy·deq(W)` (tiled, like the forward) and nothing for the frozen weight. Runs on
/// x's device: an `x` on CUDA with a weight not moved there is `tensor::Error::Device` naming
/// the weight and saying to call [`Nf4Weight::to_device`].
///
/// ```
/// use std::sync::Arc;
/// use autograd::Tape;
/// use nf4::{linear::nf4_linear, Nf4Weight, QuantConfig};
/// use tensor::{DType, Rng, Tensor};
/// let mut rng = Rng::new(0);
/// let w = Tensor::randn([8, 64], 0.1, &mut rng);
/// let w = Arc::new(Nf4Weight::quantize("w", &w, &QuantConfig::default()).unwrap());
/// let tape = Tape::new();
/// let x = tape.leaf(Tensor::randn([3, 64], 1.0, &mut rng));
/// let y = nf4_linear(&x, &w).unwrap();
/// assert_eq!(y.value().dims(), &[3, 8]);
/// let grads = tape.backward_with(&y, Tensor::ones([3, 8], DType::F32)).unwrap();
/// assert_eq!(grads.get(&x).unwrap().dims(), &[3, 64]);
/// ```
pub fn nf4_linear(x: &autograd::Var, w: &SharedWeight) -> tensor::Result<autograd::Var> {
    let y = forward(x.value(), w)?;
    let w = Arc::clone(w);
    let dtype = x.value().dtype();
    let needs_grad = x.requires_grad();
    autograd::custom_op_named("nf4_linear", &[x], y, move |g| {
        if !needs_grad {
            return Ok(vec![None]);
        }
        Ok(vec![Some(backward(g, &w, dtype)?)])
    })
}
