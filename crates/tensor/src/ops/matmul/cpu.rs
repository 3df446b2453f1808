//! CPU matmul through `gemm::gemm` (`dst := alpha·dst + beta·lhs·rhs`, here alpha 0, beta 1).
//! Each operand is passed as storage plus row/column strides, so row-major and column-major
//! (transposed) views go in as they are; other layouts are made contiguous first. A batched lhs
//! over a shared rhs (`(B, T, K) x (K, N)`) is folded into one `(B·T, K)` product; many small
//! products run one per rayon task; large ones let gemm use every thread. `matmul_ref` is a
//! triple loop with f64 accumulation.

use crate::{CpuStorage, DType, Error, Layout, Result, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

/// Below this many multiply-adds per product, threading costs more than it saves.
pub(super) const PAR_MIN_MACS: usize = 48 * 48 * 48;
/// Batches of products smaller than this run one product per task instead.
const BATCH_TASK_MACS: usize = 128 * 128 * 128;

/// `a (.., M, K) x b (.., K, N)` for batch shape `batch` (checked by the caller).
pub fn matmul(a: &Tensor, b: &Tensor, batch: &Shape, [m, k, n]: [usize; 3]) -> Result<Tensor> {
    let mut dims = batch.dims().to_vec();
    dims.extend([m, n]);
    let shape = Shape::new(dims);
    match a.dtype() {
        DType::F32 => Ok(Tensor::from_cpu(CpuStorage::F32(gemm_f32(a, b, batch, [m, k, n])?), shape)),
        DType::BF16 | DType::F16 => {
            let (a32, b32) = (a.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?);
            Tensor::from_cpu(CpuStorage::F32(gemm_f32(&a32, &b32, batch, [m, k, n])?), shape).to_dtype(a.dtype())
        }
        dtype => Err(Error::UnsupportedDType { op: "matmul", dtype }),
    }
}

/// One operand ready for gemm: its f32 storage, the storage offset of each batch entry, and
/// the row and column strides of the matrix.
struct Operand<'a> {
    data: &'a [f32],
    offsets: Vec<usize>,
    rs: usize,
    cs: usize,
    /// The batch layout broadcast to the output batch (for folding batch into rows).
    batch: Layout,
}

/// Row/column strides gemm can take without copying: one of them unit (size-1 dims may have any
/// stride), rows or columns not overlapping. `None` means make it contiguous first.
fn gemm_strides(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<(usize, usize)> {
    if (cols == 1 || cs == 1) && (rows == 1 || rs >= cols) {
        Some((if rows == 1 { cols } else { rs }, 1))
    } else if (rows == 1 || rs == 1) && (cols == 1 || cs >= rows) {
        Some((1, if cols == 1 { rows } else { cs }))
    } else {
        None
    }
}

fn operand<'a>(t: &'a Tensor, batch: &Shape) -> Result<Operand<'a>> {
    let r = t.rank();
    let (rows, cols) = (t.dims()[r - 2], t.dims()[r - 1]);
    let st = t.layout().strides();
    let (rs, cs) = gemm_strides(rows, cols, st[r - 2], st[r - 1])
        .ok_or_else(|| Error::invalid("matmul", format!("layout {:?} needs contiguous() first", t.layout())))?;
    let data = match t.cpu_storage("matmul")? {
        CpuStorage::F32(v) => v.as_slice(),
        s => return Err(Error::DTypeMismatch { op: "matmul", lhs: s.dtype(), rhs: DType::F32 }),
    };
    let own = Layout::from_parts(Shape::new(&t.dims()[..r - 2]), st[..r - 2].to_vec(), t.layout().offset());
    let batch = own.broadcast_as(batch)?;
    let offsets: Vec<usize> = batch.indices().collect();
    // The furthest element any product reads must lie in storage: gemm reads through raw pointers.
    let span = (rows - 1) * rs + (cols - 1) * cs;
    if offsets.iter().any(|&o| o + span >= data.len()) {
        return Err(Error::invalid("matmul", format!("layout {:?} reaches past {} elements", t.layout(), data.len())));
    }
    Ok(Operand { data, offsets, rs, cs, batch })
}

/// f32 product into a new contiguous `(batch.., M, N)` vector.
fn gemm_f32(a: &Tensor, b: &Tensor, batch: &Shape, [m, k, n]: [usize; 3]) -> Result<Vec<f32>> {
    let count = batch.elem_count();
    let mut out = vec![0f32; count * m * n];
    if out.is_empty() || k == 0 {
        return Ok(out);
    }
    let (a, b) = (gemm_ready(a)?, gemm_ready(b)?);
    let (lhs, rhs) = (operand(&a, batch)?, operand(&b, batch)?);

    if count > 1 && lhs.cs == 1 && rhs.offsets.iter().all(|&o| o == rhs.offsets[0]) {
        if let Some(rs) = fold_rows(&lhs.batch, m, lhs.rs) {
            let lhs = Operand { offsets: vec![lhs.offsets[0]], rs, ..lhs };
            let rhs = Operand { offsets: vec![rhs.offsets[0]], ..rhs };
            run(&mut out, 0, &lhs, &rhs, [count * m, k, n], par(count * m * k * n));
            return Ok(out);
        }
    }
    if count > 1 && m * k * n < BATCH_TASK_MACS {
        out.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(i, dst)| run(dst, i, &lhs, &rhs, [m, k, n], Parallelism::None));
    } else {
        for (i, dst) in out.chunks_mut(m * n).enumerate() {
            run(dst, i, &lhs, &rhs, [m, k, n], par(m * k * n));
        }
    }
    Ok(out)
}

/// `t` itself when gemm can take its matrix strides, else a contiguous copy.
fn gemm_ready(t: &Tensor) -> Result<Tensor> {
    let r = t.rank();
    let (d, s) = (t.dims(), t.layout().strides());
    match gemm_strides(d[r - 2], d[r - 1], s[r - 2], s[r - 1]) {
        Some(_) => Ok(t.clone()),
        None => t.contiguous(),
    }
}

/// `acc + beta·(a·b)` for 2-D f32 `acc (M, N)`, `a (M, K)`, `b (K, N)` (checked by the caller):
/// the product is accumulated by gemm into a copy of `acc`.
pub fn addmm_f32(acc: &Tensor, a: &Tensor, b: &Tensor, [m, k, n]: [usize; 3], beta: f32) -> Result<Tensor> {
    let mut out = acc.to_vec_f32()?;
    addmm_f32_in_place(&mut out, a, b, [m, k, n], beta)?;
    Ok(Tensor::from_cpu(CpuStorage::F32(out), Shape::new([m, n])))
}

/// `out (M, N) += beta·(a·b)` in place for 2-D f32 `a (M, K)`, `b (K, N)` (checked by the caller).
pub fn addmm_f32_in_place(out: &mut [f32], a: &Tensor, b: &Tensor, [m, k, n]: [usize; 3], beta: f32) -> Result<()> {
    if !out.is_empty() && k > 0 {
        let (a, b) = (gemm_ready(a)?, gemm_ready(b)?);
        let none = Shape::new(Vec::<usize>::new());
        let (lhs, rhs) = (operand(&a, &none)?, operand(&b, &none)?);
        run_with(out, 0, &lhs, &rhs, [m, k, n], par(m * k * n), Some(beta));
    }
    Ok(())
}

fn par(macs: usize) -> Parallelism {
    if macs < PAR_MIN_MACS {
        Parallelism::None
    } else {
        Parallelism::Rayon(0)
    }
}

/// The row stride of the lhs viewed as one `(batch·M, K)` matrix, if its batch dims step through
/// memory exactly like more rows.
fn fold_rows(batch: &Layout, m: usize, rs: usize) -> Option<usize> {
    let mut dims: Vec<(usize, usize)> =
        batch.shape().dims().iter().copied().zip(batch.strides().iter().copied()).collect();
    dims.push((m, rs));
    let live: Vec<(usize, usize)> = dims.into_iter().filter(|&(d, _)| d != 1).collect();
    let ok = live.windows(2).all(|w| w[0].1 == w[1].0 * w[1].1);
    match live.last() {
        _ if !ok => None,
        Some(&(_, s)) => Some(s),
        None => Some(rs),
    }
}

/// One product `dst (M, N) = lhs[i] · rhs[i]`, `dst` contiguous.
fn run(dst: &mut [f32], i: usize, lhs: &Operand, rhs: &Operand, mkn: [usize; 3], par: Parallelism) {
    run_with(dst, i, lhs, rhs, mkn, par, None)
}

/// [`run`], or with `acc = Some(beta)`: `dst += beta·lhs[i]·rhs[i]`.
fn run_with(
    dst: &mut [f32],
    i: usize,
    lhs: &Operand,
    rhs: &Operand,
    [m, k, n]: [usize; 3],
    par: Parallelism,
    acc: Option<f32>,
) {
    debug_assert_eq!(dst.len(), m * n);
    let (pa, pb) = (lhs.data[lhs.offsets[i]..].as_ptr(), rhs.data[rhs.offsets[i]..].as_ptr());
    // SAFETY: `dst` holds exactly M·N elements written with row stride N; `operand` checked that
    // every element `offset + r·rs + c·cs` of each input matrix lies inside its slice; gemm only
    // reads lhs/rhs and dst (which is initialised) and writes dst.
    let skinny = |p: *const f32, o: &Operand| super::skinny::Mat { ptr: p, rs: o.rs, cs: o.cs };
    // SAFETY: as below: both operands' M×K and K×N elements lie inside their slices.
    if unsafe {
        super::skinny::try_run(dst, skinny(pa, lhs), skinny(pb, rhs), [m, k, n], acc, !matches!(par, Parallelism::None))
    } {
        return;
    }
    let (read_dst, beta) = match acc {
        Some(beta) => (true, beta),
        None => (false, 1.0),
    };
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            read_dst,
            pa,
            lhs.cs as isize,
            lhs.rs as isize,
            pb,
            rhs.cs as isize,
            rhs.rs as isize,
            if read_dst { 1.0f32 } else { 0.0f32 },
            beta,
            false,
            false,
            false,
            par,
        );
    }
}

/// Reference: broadcast both operands, then `Σ_k a[m, k]·b[k, n]` in f64 for every output.
pub fn matmul_ref(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (ra, rb) = (a.rank(), b.rank());
    let (m, k, n) = (a.dims()[ra - 2], a.dims()[ra - 1], b.dims()[rb - 1]);
    let batch = Shape::broadcast("matmul", &Shape::new(&a.dims()[..ra - 2]), &Shape::new(&b.dims()[..rb - 2]))?;
    let full = |x, y| Shape::new([batch.dims(), &[x, y]].concat());
    let x = a.broadcast_as(full(m, k))?.to_vec_f32()?;
    let y = b.broadcast_as(full(k, n))?.to_vec_f32()?;
    let mut out = vec![0f32; batch.elem_count() * m * n];
    for bi in 0..batch.elem_count() {
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0f64;
                for p in 0..k {
                    acc += x[(bi * m + i) * k + p] as f64 * y[(bi * k + p) * n + j] as f64;
                }
                out[(bi * m + i) * n + j] = acc as f32;
            }
        }
    }
    Tensor::from_vec(out, full(m, n))?.to_dtype(a.dtype())
}
