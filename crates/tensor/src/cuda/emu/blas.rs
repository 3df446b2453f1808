//! The emulator's stand-in for `cublasGemmStridedBatchedEx` with `CUBLAS_COMPUTE_32F`: the same
//! column-major arguments, f32 products and sums (in the CPU GEMM's order: cuBLAS's is
//! unspecified too), `alpha · sum + beta · c` rounded once to the storage type. `c` is not read
//! when `beta == 0` (cuBLAS allows it to be uninitialised).

use crate::{bf16, f16, DType, Error, Result};

/// One operand as cuBLAS takes it: address, `op` (true = transposed), leading dim, batch stride.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GemmOperand {
    pub ptr: u64,
    pub transposed: bool,
    pub ld: usize,
    pub batch_stride: usize,
}

/// Element `i` of storage type `dt` at `base`, widened to f32.
///
/// # Safety
/// `base` holds at least `i + 1` elements of `dt`.
unsafe fn load(dt: DType, base: u64, i: usize) -> f32 {
    // SAFETY: the caller's contract.
    unsafe {
        match dt {
            DType::BF16 => bf16::from_bits(*(base as *const u16).add(i)).to_f32(),
            DType::F16 => f16::from_bits(*(base as *const u16).add(i)).to_f32(),
            _ => *(base as *const f32).add(i),
        }
    }
}

/// `C[p] = alpha · op(A[p]) · op(B[p]) + beta · C[p]` for `p < batch`, column-major `(m, n)`
/// results with `op(A)` `(m, k)` and `op(B)` `(k, n)`. Each batch's operands are widened to
/// packed f32 and multiplied by the `gemm` crate (the CPU backend's GEMM), then combined with `c`
/// and rounded once to the storage type.
///
/// # Safety
/// The three addresses are live buffers holding every element the sizes, leading dims and batch
/// strides reach.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm(
    dt: DType,
    a: GemmOperand,
    b: GemmOperand,
    (c, ldc, stride_c): (u64, usize, usize),
    [m, n, k]: [usize; 3],
    batch: usize,
    alpha: f32,
    beta: f32,
) -> Result<()> {
    if !matches!(dt, DType::F32 | DType::BF16 | DType::F16) {
        return Err(Error::UnsupportedDType { op: "cuda emulator gemm", dtype: dt });
    }
    if ldc < m.max(1) {
        return Err(Error::Device(format!("cuda emulator gemm: ldc {ldc} for ({m}, {n})")));
    }
    // op(X[p]) as a packed row-major f32 (rows, cols) matrix.
    let pack = |o: GemmOperand, p: usize, rows: usize, cols: usize| -> Vec<f32> {
        let mut out = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            for col in 0..cols {
                let i = p * o.batch_stride + if o.transposed { col + r * o.ld } else { r + col * o.ld };
                // SAFETY: the caller's contract covers every (r, col) of op(X) in batch p.
                out.push(unsafe { load(dt, o.ptr, i) });
            }
        }
        out
    };
    let mut prod = vec![0f32; m * n];
    for p in 0..batch {
        let (pa, pb) = (pack(a, p, m, k), pack(b, p, k, n));
        if k == 0 {
            prod.fill(0.0);
        } else {
            // SAFETY: prod is (m, n) row-major, pa (m, k) and pb (k, n) packed row-major; gemm
            // writes prod only (read_dst false).
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    prod.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    pa.as_ptr(),
                    1,
                    k as isize,
                    pb.as_ptr(),
                    1,
                    n as isize,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(0),
                )
            };
        }
        for i in 0..m {
            for j in 0..n {
                let idx = p * stride_c + i + j * ldc;
                // SAFETY: (p, i, j) is inside C (the caller's contract).
                unsafe {
                    let v = alpha * prod[i * n + j] + if beta == 0.0 { 0.0 } else { beta * load(dt, c, idx) };
                    match dt {
                        DType::BF16 => *(c as *mut u16).add(idx) = bf16::from_f32(v).to_bits(),
                        DType::F16 => *(c as *mut u16).add(idx) = f16::from_f32(v).to_bits(),
                        _ => *(c as *mut f32).add(idx) = v,
                    }
                }
            }
        }
    }
    Ok(())
}
