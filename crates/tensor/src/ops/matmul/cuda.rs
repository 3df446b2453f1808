//! CUDA matmul and addmm through cuBLAS (cudarc), on resident buffers: one strided-batched GEMM
//! (`cublasGemmStridedBatchedEx`) per call, f32, bf16 or f16 storage with f32 compute
//! (`CUBLAS_COMPUTE_32F`: no TF32 for f32). cuBLAS is column-major; a row-major `(M, N) = (M, K)
//! x (K, N)` is computed as its transpose `(N, M) = (N, K) x (K, M)`, which reads each row-major
//! operand as it is stored. Views whose last two dims have a unit stride (`w.t()`, narrowed rows)
//! are passed as they are, with their leading dimension; batch dims must step by one stride (or
//! broadcast with stride 0). Anything else is made contiguous first (copy kernel).
//! `addmm` copies the accumulator and lets cuBLAS add into it (`beta = 1`): one rounding for
//! bf16/f16 where the CPU path rounds the product first.

use crate::cuda::{launch::i32_of, resident, CudaDevice};
use crate::{DType, Error, Result, Shape, Tensor};
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};

/// How cuBLAS reads a row-major `(batch.., r, c)` operand from its first element.
#[derive(Clone, Copy, Debug, PartialEq)]
struct BlasView {
    op: cublasOperation_t,
    ld: usize,
    batch_stride: usize,
}

/// One operand: its view and address.
struct Operand {
    /// Keeps a materialised copy alive until the GEMM is queued.
    _keep: Tensor,
    ptr: u64,
    view: BlasView,
}

/// The cuBLAS view of a `(batch.., r, c)` layout, or `None` when it has none (no unit stride in
/// the last two dims, or batch dims that do not step by one stride).
fn blas_layout(dims: &[usize], strides: &[usize]) -> Option<BlasView> {
    let rank = dims.len();
    let (r, c, sr, sc) = (dims[rank - 2], dims[rank - 1], strides[rank - 2], strides[rank - 1]);
    // Row-major rows of stride sr are, column-major, the transpose with leading dim sr: op N.
    let (op, ld) = if (c == 1 || sc == 1) && (r == 1 || sr >= c) {
        (cublasOperation_t::CUBLAS_OP_N, if r == 1 { c.max(1) } else { sr })
    } else if (r == 1 || sr == 1) && (c == 1 || sc >= r) {
        (cublasOperation_t::CUBLAS_OP_T, if c == 1 { r.max(1) } else { sc })
    } else {
        return None;
    };
    let mut step: Option<usize> = None;
    let mut expect = 0;
    for i in (0..rank - 2).rev() {
        if dims[i] == 1 {
            continue;
        }
        match step {
            None => step = Some(strides[i]),
            Some(_) if strides[i] != expect => return None,
            Some(_) => {}
        }
        expect = strides[i].checked_mul(dims[i])?;
    }
    Some(BlasView { op, ld, batch_stride: step.unwrap_or(0) })
}

/// The column-major call for the row-major product `(m, k) x (k, n)`: cuBLAS computes
/// `C^T (n, m) = B^T (n, k) · A^T (k, m)`, so its first operand is our `b` and its second our
/// `a`; `c` is contiguous `(m, n)`, i.e. column-major `(n, m)` with leading dim `n`.
#[derive(Debug, PartialEq)]
struct GemmArgs {
    /// `(op, ld, batch stride)` of cuBLAS's A (our b) and B (our a).
    first: BlasView,
    second: BlasView,
    /// cuBLAS's m, n, k.
    mnk: [usize; 3],
    ldc: usize,
    stride_c: usize,
}

fn gemm_args(a: BlasView, b: BlasView, [m, k, n]: [usize; 3]) -> GemmArgs {
    GemmArgs { first: b, second: a, mnk: [n, m, k], ldc: n.max(1), stride_c: m * n }
}

fn operand(t: &Tensor, full: Shape, op: &'static str) -> Result<Operand> {
    let v = t.broadcast_as(full)?;
    let v = match blas_layout(v.dims(), v.layout().strides()) {
        Some(_) => v,
        None => resident::materialize(&v, op)?,
    };
    let view = blas_layout(v.dims(), v.layout().strides())
        .ok_or_else(|| Error::invalid(op, format!("no cuBLAS layout for {:?}", v.shape())))?;
    Ok(Operand { ptr: resident::addr(&v, op)?, _keep: v, view })
}

fn data_type(op: &'static str, dtype: DType) -> Result<cudaDataType> {
    match dtype {
        DType::F32 => Ok(cudaDataType::CUDA_R_32F),
        DType::BF16 => Ok(cudaDataType::CUDA_R_16BF),
        DType::F16 => Ok(cudaDataType::CUDA_R_16F),
        _ => Err(Error::UnsupportedDType { op, dtype }),
    }
}

/// `c = alpha · a·b + beta · c` for `batch` row-major `(m, k) x (k, n)` products; `c` contiguous.
#[allow(clippy::too_many_arguments)]
fn gemm(
    dev: &CudaDevice,
    op: &'static str,
    dtype: DType,
    (a, b): (&Operand, &Operand),
    c: u64,
    [m, k, n]: [usize; 3],
    batch: usize,
    (alpha, beta): (f32, f32),
) -> Result<()> {
    let dt = data_type(op, dtype)?;
    let g = gemm_args(a.view, b.view, [m, k, n]);
    #[cfg(feature = "cuda-emu")]
    if dev.is_emulated() {
        use crate::cuda::emu::GemmOperand;
        let operand = |o: &Operand, v: BlasView| GemmOperand {
            ptr: o.ptr,
            transposed: v.op == cublasOperation_t::CUBLAS_OP_T,
            ld: v.ld,
            batch_stride: v.batch_stride,
        };
        // SAFETY: as for cuBLAS below (the emulator's buffers are host memory).
        return unsafe {
            crate::cuda::emu::gemm(
                dtype,
                operand(b, g.first),
                operand(a, g.second),
                (c, g.ldc, g.stride_c),
                g.mnk,
                batch,
                alpha,
                beta,
            )
        };
    }
    let blas = dev.blas()?;
    let int = |what: &str, v: usize| i32_of(op, what, v);
    let long = |v: usize| i64::try_from(v).map_err(|_| Error::invalid(op, format!("batch stride {v} too large")));
    let [gm, gn, gk] = [int("N", g.mnk[0])?, int("M", g.mnk[1])?, int("K", g.mnk[2])?];
    let (ld1, ld2, ldc) = (int("ld", g.first.ld)?, int("ld", g.second.ld)?, int("ldc", g.ldc)?);
    let (s1, s2, sc) = (long(g.first.batch_stride)?, long(g.second.batch_stride)?, long(g.stride_c)?);
    let count = int("batch", batch)?;
    // cuBLAS runs in the thread's current context: make it this device's (tests and callers may
    // use the device from several threads; kernel launches bind it themselves).
    dev.context()?.bind_to_thread().map_err(|e| Error::Device(format!("{op}: bind CUDA context: {e}")))?;
    // SAFETY: the three addresses are live buffers of this device holding the elements the
    // sizes, leading dimensions and batch strides describe (checked by `blas_layout` and the
    // callers); alpha and beta are host f32 (the handle's default pointer mode); the handle is
    // bound to this device's stream, so the GEMM is ordered with every launch and copy.
    unsafe {
        cudarc::cublas::result::gemm_strided_batched_ex(
            *blas.handle(),
            g.first.op,
            g.second.op,
            gm,
            gn,
            gk,
            (&alpha as *const f32).cast(),
            b.ptr as *const std::ffi::c_void,
            dt,
            ld1,
            s1,
            a.ptr as *const std::ffi::c_void,
            dt,
            ld2,
            s2,
            (&beta as *const f32).cast(),
            c as *mut std::ffi::c_void,
            dt,
            ldc,
            sc,
            count,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
        )
    }
    .map_err(|e| Error::Device(format!("{op}: cuBLAS GEMM ({m}x{k}x{n}, batch {batch}, {dtype:?}): {e}")))
}

/// `a (.., M, K) x b (.., K, N)` with `batch` the broadcast batch shape (checked).
pub fn matmul(a: &Tensor, b: &Tensor, batch: &Shape, [m, k, n]: [usize; 3]) -> Result<Tensor> {
    const OP: &str = "matmul";
    data_type(OP, a.dtype())?;
    let dims = |x: usize, y: usize| Shape::new([batch.dims(), &[x, y]].concat());
    let dev = resident::device(a, OP)?;
    let out = resident::zeros(&dev, a.dtype(), dims(m, n))?;
    if out.elem_count() == 0 || k == 0 {
        return Ok(out);
    }
    let (oa, ob) = (operand(a, dims(m, k), OP)?, operand(b, dims(k, n), OP)?);
    gemm(&dev, OP, a.dtype(), (&oa, &ob), resident::addr(&out, OP)?, [m, k, n], batch.elem_count(), (1.0, 0.0))?;
    Ok(out)
}

/// `acc + beta·(a·b)` for 2-D operands (checked): cuBLAS adds the product into a copy of `acc`.
pub fn addmm(acc: &Tensor, a: &Tensor, b: &Tensor, [m, k, n]: [usize; 3], beta: f32) -> Result<Tensor> {
    const OP: &str = "addmm";
    data_type(OP, acc.dtype())?;
    let out = resident::fresh_copy(acc, OP)?;
    if out.elem_count() == 0 || k == 0 {
        return Ok(out);
    }
    let dev = resident::device(acc, OP)?;
    let none = |x: usize, y: usize| Shape::new([x, y]);
    let (oa, ob) = (operand(a, none(m, k), OP)?, operand(b, none(k, n), OP)?);
    gemm(&dev, OP, acc.dtype(), (&oa, &ob), resident::addr(&out, OP)?, [m, k, n], 1, (beta, 1.0))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    //! The cuBLAS argument mapping checked without a GPU: a plain column-major strided-batched
    //! GEMM written out in Rust, fed the arguments `gemm` would pass, against `matmul_ref`.
    use super::*;
    use crate::ops::matmul::cpu::matmul_ref;
    use crate::{Element, Rng};

    /// `op(X)(i, l)` of a column-major matrix at `base` with leading dim `ld`.
    fn at(x: &[f32], base: usize, v: BlasView, i: usize, l: usize) -> f32 {
        match v.op {
            cublasOperation_t::CUBLAS_OP_N => x[base + i + l * v.ld],
            _ => x[base + l + i * v.ld],
        }
    }

    /// The product the way cuBLAS computes it from `gemm_args`, on host storages.
    fn emulate(a: &Tensor, b: &Tensor, batch: &Shape, [m, k, n]: [usize; 3]) -> Vec<f32> {
        let full = |x: usize, y: usize| Shape::new([batch.dims(), &[x, y]].concat());
        let prep = |t: &Tensor, s: Shape| {
            let v = t.broadcast_as(s).unwrap();
            let v = if blas_layout(v.dims(), v.layout().strides()).is_some() { v } else { v.contiguous().unwrap() };
            let view = blas_layout(v.dims(), v.layout().strides()).unwrap();
            (v, view)
        };
        let ((av, aview), (bv, bview)) = (prep(a, full(m, k)), prep(b, full(k, n)));
        let g = gemm_args(aview, bview, [m, k, n]);
        let storage = |t: &Tensor| crate::with_cpu_storage!(t.cpu_storage("t").unwrap(), v => v.iter().map(|x| x.to_f32()).collect::<Vec<f32>>());
        let (sa, sb) = (storage(&av), storage(&bv));
        let (oa, ob) = (av.layout().offset(), bv.layout().offset());
        let [gm, gn, gk] = g.mnk;
        let mut c = vec![0f32; batch.elem_count() * m * n];
        for p in 0..batch.elem_count() {
            for i in 0..gm {
                for j in 0..gn {
                    let mut acc = 0f32;
                    for l in 0..gk {
                        acc += at(&sb, ob + p * g.first.batch_stride, g.first, i, l)
                            * at(&sa, oa + p * g.second.batch_stride, g.second, l, j);
                    }
                    c[p * g.stride_c + i + j * g.ldc] = acc;
                }
            }
        }
        c
    }

    #[test]
    fn cublas_arguments_compute_the_row_major_product() {
        let mut rng = Rng::new(7);
        let mut r = |d: &[usize]| Tensor::randn(d.to_vec(), 1.0, &mut rng);
        let (a, b, w, at_, a3, bb, a3t, wide) = (
            r(&[5, 7]),
            r(&[7, 3]),
            r(&[3, 7]),
            r(&[7, 5]),
            r(&[2, 3, 5, 7]),
            r(&[3, 7, 4]),
            r(&[2, 3, 7, 5]),
            r(&[7, 9]),
        );
        let cases: Vec<(Tensor, Tensor)> = vec![
            (a.clone(), b.clone()),
            (a.clone(), w.t().unwrap()),
            (at_.t().unwrap(), b.clone()),
            (at_.t().unwrap(), w.t().unwrap()),
            (a.clone(), wide.narrow(1, 2, 4).unwrap()),
            (a.narrow(0, 2, 1).unwrap(), w.t().unwrap()),
            (a.narrow(1, 3, 1).unwrap(), r(&[1, 6])),
            (a3.clone(), b.clone()),
            (a3.clone(), bb.clone()),
            (a3t.transpose(2, 3).unwrap(), bb.transpose(1, 2).unwrap().contiguous().unwrap().transpose(1, 2).unwrap()),
            (a3.narrow(0, 1, 1).unwrap(), bb.narrow(2, 1, 2).unwrap()),
            (r(&[4, 1, 5, 7]), r(&[3, 7, 2])),
        ];
        for (x, y) in cases {
            let (rx, ry) = (x.rank(), y.rank());
            let (m, k, n) = (x.dims()[rx - 2], x.dims()[rx - 1], y.dims()[ry - 1]);
            let batch =
                Shape::broadcast("t", &Shape::new(&x.dims()[..rx - 2]), &Shape::new(&y.dims()[..ry - 2])).unwrap();
            let got = emulate(&x, &y, &batch, [m, k, n]);
            let want = matmul_ref(&x, &y).unwrap().to_vec_f32().unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-5 + 1e-5 * w.abs(),
                    "{:?} x {:?}: element {i}: {g} vs {w}",
                    x.shape(),
                    y.shape()
                );
            }
        }
    }

    #[test]
    fn layouts_without_a_unit_stride_or_a_single_batch_step_have_no_cublas_view() {
        assert!(blas_layout(&[3, 4], &[8, 2]).is_none()); // every other column
        assert!(blas_layout(&[2, 3, 4, 5], &[0, 20, 5, 1]).is_none()); // broadcast outer, real inner batch
        assert_eq!(blas_layout(&[2, 3, 4, 5], &[60, 20, 5, 1]).map(|v| v.batch_stride), Some(20));
        assert_eq!(blas_layout(&[2, 3, 4, 5], &[0, 0, 5, 1]).map(|v| v.batch_stride), Some(0));
        assert_eq!(blas_layout(&[4, 5], &[1, 4]).map(|v| (v.op, v.ld)), Some((cublasOperation_t::CUBLAS_OP_T, 4)));
    }
}
