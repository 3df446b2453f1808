//! Kernel benchmarks for a GPU machine (`scripts/gpu-check.sh`): each kernel on resident device
//! buffers at Llama-7B-like sizes, timed with CUDA events around `iters` launches after a warm-up,
//! reported as time, achieved bandwidth (bytes each kernel must move at least once) against the
//! measured device-to-device copy bandwidth, and FLOP rate against cuBLAS's bf16 GEMM on the same
//! machine. Not a correctness check (that is `tests/cuda_kernels.rs`).

use super::device::{CudaDevice, DeviceBuffer, Launch};
use super::params::*;
use crate::{Error, Result, Rng};
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{DeviceRepr, ValidAsZeroBits};

/// One benchmark result.
#[derive(Clone, Debug)]
pub struct BenchRow {
    pub name: String,
    pub ms: f64,
    /// Bytes the kernel must read and write at least once.
    pub bytes: f64,
    /// Floating-point operations (matrix kernels), 0 for memory-bound ones.
    pub flops: f64,
}

fn derr(e: impl std::fmt::Display) -> Error {
    Error::Device(format!("cuda bench: {e}"))
}

/// Mean milliseconds per call of `f` over `iters` calls, after one warm-up call.
pub fn time_ms(dev: &CudaDevice, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    dev.synchronize()?;
    let s = dev.stream()?;
    let start = s.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(derr)?;
    for _ in 0..iters {
        f()?;
    }
    let end = s.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(derr)?;
    end.synchronize().map_err(derr)?;
    Ok(start.elapsed_ms(&end).map_err(derr)? as f64 / iters.max(1) as f64)
}

fn rand_f32(dev: &CudaDevice, n: usize, seed: u64) -> Result<DeviceBuffer<f32>> {
    let mut r = Rng::new(seed);
    let v: Vec<f32> = (0..n).map(|_| r.uniform() * 2.0 - 1.0).collect();
    dev.upload(&v)
}
fn rand_bf16(dev: &CudaDevice, n: usize, seed: u64) -> Result<DeviceBuffer<u16>> {
    let mut r = Rng::new(seed);
    let v: Vec<u16> = (0..n).map(|_| crate::bf16::from_f32(r.uniform() * 2.0 - 1.0).to_bits()).collect();
    dev.upload(&v)
}
fn zeros<T: DeviceRepr + ValidAsZeroBits + Copy>(dev: &CudaDevice, n: usize) -> Result<DeviceBuffer<T>> {
    dev.zeros(n)
}

/// Device-to-device copy bandwidth in GB/s (bytes read + written), over a 1 GiB buffer.
pub fn copy_bandwidth(dev: &CudaDevice) -> Result<(f64, BenchRow)> {
    let n = 256 << 20; // f32 elements: 1 GiB
    let src = rand_f32(dev, n, 1)?;
    let mut dst = zeros::<f32>(dev, n)?;
    let ms = time_ms(dev, 10, || dev.copy_range(&src, 0..n, &mut dst))?;
    let bytes = 2.0 * 4.0 * n as f64;
    Ok((bytes / ms / 1e6, BenchRow { name: "memcpy d2d (ceiling)".into(), ms, bytes, flops: 0.0 }))
}

/// cuBLAS bf16 GEMM rate (f32 accumulation) in TFLOP/s at (m, k, n), the matrix ceiling.
pub fn cublas_bf16_rate(dev: &CudaDevice, m: usize, k: usize, n: usize) -> Result<(f64, BenchRow)> {
    use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
    // SAFETY: dlopen probe only.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err(Error::Device("cuda bench: libcublas not found".into()));
    }
    let blas = cudarc::cublas::CudaBlas::new(dev.stream()?.clone()).map_err(derr)?;
    let (a, b, c) = (rand_bf16(dev, m * k, 2)?, rand_bf16(dev, n * k, 3)?, zeros::<u16>(dev, m * n)?);
    let (pa, pb, pc) = (dev.ptr(&a), dev.ptr(&b), dev.ptr(&c));
    let (alpha, beta) = (1.0f32, 0.0f32);
    // Row-major y (m, n) = x (m, k) . W^T, W (n, k): column-major C^T (n, m) = W (n, k) . x^T.
    let ms = time_ms(dev, 10, || {
        // SAFETY: the three buffers are live device allocations of the sizes the call reads and
        // writes; handle and stream belong to this device.
        unsafe {
            cudarc::cublas::result::gemm_ex(
                *blas.handle(),
                cublasOperation_t::CUBLAS_OP_T,
                cublasOperation_t::CUBLAS_OP_N,
                n as i32,
                m as i32,
                k as i32,
                (&alpha as *const f32).cast(),
                pb as *const std::ffi::c_void,
                cudaDataType::CUDA_R_16BF,
                k as i32,
                pa as *const std::ffi::c_void,
                cudaDataType::CUDA_R_16BF,
                k as i32,
                (&beta as *const f32).cast(),
                pc as *mut std::ffi::c_void,
                cudaDataType::CUDA_R_16BF,
                n as i32,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
            )
        }
        .map_err(derr)
    })?;
    let flops = 2.0 * (m * n * k) as f64;
    Ok((flops / ms / 1e9, BenchRow { name: format!("cuBLAS bf16 gemm {m}x{k}x{n} (ceiling)"), ms, bytes: 0.0, flops }))
}

/// Every kernel once, at sizes from a Llama-7B QLoRA step (hidden 4096, MLP 11008, 32 heads of
/// 128, 8 KV heads for the GQA case, 4096 tokens, vocab 32000).
pub fn kernel_rows(dev: &CudaDevice) -> Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    let it = 20;
    let n = 32usize << 20;
    let ew = Launch::elementwise(n);
    let (x32, y32, o32) = (rand_f32(dev, n, 10)?, rand_f32(dev, n, 11)?, zeros::<f32>(dev, n)?);
    let (xb, yb, ob, ob2) =
        (rand_bf16(dev, n, 12)?, rand_bf16(dev, n, 13)?, zeros::<u16>(dev, n)?, zeros::<u16>(dev, n)?);
    let mut push =
        |name: &str, ms: f64, bytes: f64, flops: f64| rows.push(BenchRow { name: name.into(), ms, bytes, flops });

    let p = BinaryParams {
        out: dev.ptr(&o32),
        a: dev.ptr(&x32),
        b: dev.ptr(&y32),
        n: n as i64,
        rank: 1,
        op: 0,
        contiguous: 1,
        ..Default::default()
    };
    push(
        "binary add f32 32M",
        time_ms(dev, it, || dev.launch("binary", "binary_fwd_f32", ew, &p))?,
        12.0 * n as f64,
        0.0,
    );
    let p = UnaryParams { out: dev.ptr(&o32), x: dev.ptr(&x32), n: n as i64, op: 0, ..Default::default() };
    push("unary exp f32 32M", time_ms(dev, it, || dev.launch("unary", "unary_fwd_f32", ew, &p))?, 8.0 * n as f64, 0.0);
    let p = CastParams { out: dev.ptr(&ob), x: dev.ptr(&x32), n: n as i64 };
    push(
        "cast f32->bf16 32M",
        time_ms(dev, it, || dev.launch("cast", "cast_fwd_f32_bf16", ew, &p))?,
        6.0 * n as f64,
        0.0,
    );
    let p = SwigluParams { y: dev.ptr(&ob), g: dev.ptr(&xb), u: dev.ptr(&yb), n: n as i64 };
    push(
        "swiglu fwd bf16 32M",
        time_ms(dev, it, || dev.launch("swiglu", "swiglu_fwd_bf16", ew, &p))?,
        6.0 * n as f64,
        0.0,
    );
    let p = SwigluBwdParams {
        dg: dev.ptr(&ob),
        du: dev.ptr(&ob2),
        dy: dev.ptr(&xb),
        g: dev.ptr(&yb),
        u: dev.ptr(&xb),
        n: n as i64,
    };
    push(
        "swiglu bwd bf16 32M",
        time_ms(dev, it, || dev.launch("swiglu", "swiglu_bwd_bf16", ew, &p))?,
        10.0 * n as f64,
        0.0,
    );
    let p = SumSqParams { partials: 0, x: dev.ptr(&x32), n: n as i64 };
    let partials = zeros::<f64>(dev, super::run::SUMSQ_BLOCKS)?;
    let p = SumSqParams { partials: dev.ptr(&partials), ..p };
    push(
        "grad sum of squares f32 32M",
        time_ms(dev, it, || dev.launch("reduce", "reduce_sumsq_fwd_f32", Launch::linear(1024, 256), &p))?,
        4.0 * n as f64,
        0.0,
    );

    // Rows of hidden size: 8192 tokens x 4096.
    let (r, c) = (8192usize, 4096usize);
    let rstd = zeros::<f32>(dev, r)?;
    let w = rand_bf16(dev, c, 14)?;
    let p = RmsnormParams {
        y: dev.ptr(&ob),
        rstd: dev.ptr(&rstd),
        x: dev.ptr(&xb),
        w: dev.ptr(&w),
        rows: r as i64,
        cols: c as i32,
        eps: 1e-5,
    };
    push(
        "rmsnorm fwd bf16 8192x4096",
        time_ms(dev, it, || dev.launch("rmsnorm", "rmsnorm_fwd_bf16", Launch::rows(r, 256), &p))?,
        4.0 * (r * c) as f64,
        0.0,
    );
    let p = RmsnormBwdParams {
        dx: dev.ptr(&ob),
        dy: dev.ptr(&yb),
        x: dev.ptr(&xb),
        w: dev.ptr(&w),
        rstd: dev.ptr(&rstd),
        rows: r as i64,
        cols: c as i32,
        _pad: 0,
    };
    push(
        "rmsnorm bwd dx bf16 8192x4096",
        time_ms(dev, it, || dev.launch("rmsnorm", "rmsnorm_bwd_bf16", Launch::rows(r, 256), &p))?,
        6.0 * (r * c) as f64,
        0.0,
    );
    let dw = zeros::<u16>(dev, c)?;
    let p = RmsnormDwParams {
        dw: dev.ptr(&dw),
        dy: dev.ptr(&yb),
        x: dev.ptr(&xb),
        rstd: dev.ptr(&rstd),
        rows: r as i64,
        cols: c as i32,
        _pad: 0,
    };
    let cfg = Launch { grid: (c.div_ceil(32) as u32, 1, 1), block: (32, 8, 1), shared_bytes: 0 };
    push(
        "rmsnorm bwd dw bf16 8192x4096",
        time_ms(dev, it, || dev.launch("rmsnorm", "rmsnorm_bwd_dw_bf16", cfg, &p))?,
        4.0 * (r * c) as f64,
        0.0,
    );
    let p = ReduceParams { out: dev.ptr(&o32), x: dev.ptr(&x32), rows: r as i64, cols: c as i32, op: 0 };
    push(
        "reduce sum f32 8192x4096",
        time_ms(dev, it, || dev.launch("reduce", "reduce_fwd_f32", Launch::rows(r, 256), &p))?,
        4.0 * (r * c) as f64,
        0.0,
    );

    // RoPE on (1, 32, 4096, 128).
    let (t, d) = (4096usize, 128usize);
    let (cos, sin) = (rand_f32(dev, t * d / 2, 15)?, rand_f32(dev, t * d / 2, 16)?);
    let p = RopeParams {
        y: dev.ptr(&ob),
        x: dev.ptr(&xb),
        cos: dev.ptr(&cos),
        sin: dev.ptr(&sin),
        bh: 32,
        t: t as i32,
        d: d as i32,
    };
    let nr = 32 * t * d;
    push(
        "rope fwd bf16 32x4096x128",
        time_ms(dev, it, || dev.launch("rope", "rope_fwd_bf16", Launch::elementwise(nr / 2), &p))?,
        4.0 * nr as f64,
        0.0,
    );

    // Vocabulary-wide rows: 2048 tokens x 32000 (fits the 32M buffers).
    let (nt, v) = (1024usize, 32000usize);
    let p = SoftmaxParams { y: dev.ptr(&o32), x: dev.ptr(&x32), rows: nt as i64, cols: v as i32, _pad: 0 };
    push(
        "softmax fwd f32 1024x32000",
        time_ms(dev, it, || dev.launch("softmax", "softmax_fwd_f32", Launch::rows(nt, 256), &p))?,
        8.0 * (nt * v) as f64,
        0.0,
    );
    let targets = dev.upload(&(0..nt as i32).map(|i| (i * 7919) % v as i32).collect::<Vec<_>>())?;
    let (lse, rl) = (zeros::<f32>(dev, nt)?, zeros::<f32>(dev, nt)?);
    let p = CrossEntropyParams {
        lse: dev.ptr(&lse),
        row_loss: dev.ptr(&rl),
        logits: dev.ptr(&xb),
        targets: dev.ptr(&targets),
        n: nt as i64,
        v: v as i32,
        ignore_index: -100,
    };
    push(
        "cross_entropy fwd bf16 1024x32000",
        time_ms(dev, it, || dev.launch("cross_entropy", "cross_entropy_fwd_bf16", Launch::rows(nt, 256), &p))?,
        2.0 * (nt * v) as f64,
        0.0,
    );
    let p = CrossEntropyBwdParams {
        dlogits: dev.ptr(&ob),
        logits: dev.ptr(&xb),
        targets: dev.ptr(&targets),
        lse: dev.ptr(&lse),
        n: nt as i64,
        v: v as i32,
        ignore_index: -100,
        grad_scale: 1.0,
        _pad: 0,
    };
    push(
        "cross_entropy bwd bf16 1024x32000",
        time_ms(dev, it, || dev.launch("cross_entropy", "cross_entropy_bwd_bf16", Launch::elementwise(nt * v), &p))?,
        4.0 * (nt * v) as f64,
        0.0,
    );

    // Embedding: 4096 tokens of a (32000, 4096) bf16 table... the table is 256 MB: use 8000 rows.
    let (vocab, hid, ntok) = (8000usize, 4096usize, 4096usize);
    let ids = dev.upload(&(0..ntok as i32).map(|i| (i * 31) % vocab as i32).collect::<Vec<_>>())?;
    let err = zeros::<i32>(dev, 1)?;
    let p = EmbeddingParams {
        out: dev.ptr(&ob),
        table: dev.ptr(&xb),
        ids: dev.ptr(&ids),
        err: dev.ptr(&err),
        n: ntok as i64,
        c: hid as i64,
        vocab: vocab as i64,
    };
    push(
        "embedding fwd bf16 4096x4096",
        time_ms(dev, it, || dev.launch("index", "index_fwd_bf16", Launch::rows(ntok, 256), &p))?,
        4.0 * (ntok * hid) as f64,
        0.0,
    );
    let p = EmbeddingBwdParams {
        dtable: dev.ptr(&ob),
        dy: dev.ptr(&xb),
        ids: dev.ptr(&ids),
        n: ntok as i64,
        c: hid as i64,
        vocab: vocab as i64,
    };
    push(
        "embedding bwd bf16 4096 ids -> 8000x4096",
        time_ms(dev, 3, || dev.launch("index", "index_bwd_bf16", Launch::rows(vocab, 256), &p))?,
        2.0 * ((ntok + vocab) * hid) as f64,
        0.0,
    );

    // Optimizer over 32M parameters (a large LoRA).
    let (m32, v32) = (zeros::<f32>(dev, n)?, zeros::<f32>(dev, n)?);
    let p = AdamwParams {
        p: dev.ptr(&o32),
        g: dev.ptr(&x32),
        m: dev.ptr(&m32),
        v: dev.ptr(&v32),
        n: n as i64,
        b1: 0.9,
        one_minus_b1: 0.1,
        b2: 0.999,
        one_minus_b2: 0.001,
        decay: 1.0,
        step_size: -1e-4,
        eps_hat: 1e-8,
        has_decay: 0,
    };
    push("adamw 32-bit 32M", time_ms(dev, it, || dev.launch("adamw", "adamw_fwd_f32", ew, &p))?, 28.0 * n as f64, 0.0);
    let nb = n / 256;
    let (mc, vc) = (dev.upload(&vec![127u8; n])?, zeros::<u8>(dev, n)?);
    let (am, av) = (zeros::<f32>(dev, nb)?, zeros::<f32>(dev, nb)?);
    let maps = rand_f32(dev, 512, 17)?; // timing only: any sorted-or-not table works
    let p = Adamw8bitParams {
        p: dev.ptr(&o32),
        g: dev.ptr(&x32),
        m_codes: dev.ptr(&mc),
        v_codes: dev.ptr(&vc),
        absmax_m: dev.ptr(&am),
        absmax_v: dev.ptr(&av),
        signed_map: dev.ptr(&maps),
        unsigned_map: dev.ptr(&maps) + 256 * 4,
        n: n as i64,
        b1: 0.9,
        one_minus_b1: 0.1,
        b2: 0.999,
        one_minus_b2: 0.001,
        decay: 1.0,
        step_size: -1e-4,
        eps_hat: 1e-8,
        has_decay: 0,
    };
    push(
        "adamw 8-bit blockwise 32M",
        time_ms(dev, it, || dev.launch("adamw", "adamw8bit_fwd_f32", Launch::linear(nb.min(65_535) as u32, 256), &p))?,
        16.0 * n as f64,
        0.0,
    );

    // NF4: an MLP weight (11008, 4096).
    let (wn, wk) = (11008usize, 4096usize);
    let ne = wn * wk;
    let packed = zeros::<u8>(dev, ne / 2)?;
    let absmax = zeros::<f32>(dev, ne / 64)?;
    let p = Nf4QuantParams {
        packed: dev.ptr(&packed),
        absmax: dev.ptr(&absmax),
        x: dev.ptr(&xb),
        n: ne.min(n) as i64,
        blocksize: 64,
        _pad: 0,
    };
    push(
        "nf4 quantize bf16 32M",
        time_ms(dev, it, || dev.launch("nf4", "nf4_quantize_bf16", Launch::rows((ne.min(n)) / 64, 128), &p))?,
        2.5 * ne.min(n) as f64,
        0.0,
    );
    // Fill a valid weight for the dequantize and linear timings (quantize the whole weight).
    let wsrc = rand_bf16(dev, ne, 18)?;
    let p = Nf4QuantParams { x: dev.ptr(&wsrc), n: ne as i64, ..p };
    dev.launch("nf4", "nf4_quantize_bf16", Launch::rows(ne / 64, 128), &p)?;
    let wout = zeros::<u16>(dev, ne)?;
    let p = Nf4DequantParams {
        out: dev.ptr(&wout),
        packed: dev.ptr(&packed),
        absmax: dev.ptr(&absmax),
        n: ne as i64,
        blocksize: 64,
        ..Default::default()
    };
    push(
        "nf4 dequantize -> bf16 11008x4096",
        time_ms(dev, it, || dev.launch("nf4", "nf4_dequantize_bf16", Launch::elementwise(ne / 2), &p))?,
        2.5625 * ne as f64,
        0.0,
    );
    let (lm, lk, ln) = (4096usize, wk, wn);
    let xl = rand_bf16(dev, lm * lk, 19)?;
    let yl = zeros::<u16>(dev, lm * ln)?;
    let p = Nf4LinearParams {
        y: dev.ptr(&yl),
        x: dev.ptr(&xl),
        packed: dev.ptr(&packed),
        absmax: dev.ptr(&absmax),
        m: lm as i32,
        n: ln as i32,
        k: lk as i32,
        blocksize: 64,
        out_bf16: 1,
        _pad: 0,
    };
    let cfg = Launch { grid: (ln.div_ceil(64) as u32, lm.div_ceil(64) as u32, 1), block: (128, 1, 1), shared_bytes: 0 };
    push(
        "nf4_linear fwd 4096x4096x11008",
        time_ms(dev, 5, || dev.launch("nf4_linear", "nf4_linear_fwd_bf16", cfg, &p))?,
        0.0,
        2.0 * (lm * lk * ln) as f64,
    );

    // Attention: 1 x 32 heads (8 KV heads) x 2048 x 128, causal.
    let (b, hq, hkv, t, d) = (1usize, 32usize, 8usize, 2048usize, 128usize);
    let (q, k, v) = (
        rand_bf16(dev, b * hq * t * d, 20)?,
        rand_bf16(dev, b * hkv * t * d, 21)?,
        rand_bf16(dev, b * hkv * t * d, 22)?,
    );
    let (out, lse) = (zeros::<u16>(dev, b * hq * t * d)?, zeros::<f32>(dev, b * hq * t)?);
    let scale = 1.0 / (d as f32).sqrt();
    let p = AttentionParams {
        out: dev.ptr(&out),
        lse: dev.ptr(&lse),
        q: dev.ptr(&q),
        k: dev.ptr(&k),
        v: dev.ptr(&v),
        b: b as i32,
        hq: hq as i32,
        hkv: hkv as i32,
        t: t as i32,
        s: t as i32,
        d: d as i32,
        scale,
        _pad: 0,
    };
    let cfg = Launch { grid: (t.div_ceil(32) as u32, (b * hq) as u32, 1), block: (128, 1, 1), shared_bytes: 0 };
    let fwd_flops = 4.0 * (b * hq * t * t * d) as f64 / 2.0;
    push(
        "attention fwd bf16 32/8 heads 2048x128 causal",
        time_ms(dev, 5, || dev.launch("attention", "attention_fwd_bf16", cfg, &p))?,
        0.0,
        fwd_flops,
    );
    let delta = zeros::<f32>(dev, b * hq * t)?;
    let (dq, dk, dv) =
        (zeros::<u16>(dev, b * hq * t * d)?, zeros::<u16>(dev, b * hkv * t * d)?, zeros::<u16>(dev, b * hkv * t * d)?);
    let pp = AttentionBwdPrepParams {
        delta: dev.ptr(&delta),
        out: dev.ptr(&out),
        dout: dev.ptr(&q),
        rows: (b * hq * t) as i64,
        d: d as i32,
        _pad: 0,
    };
    let pb = AttentionBwdParams {
        dq: dev.ptr(&dq),
        dk: dev.ptr(&dk),
        dv: dev.ptr(&dv),
        q: dev.ptr(&q),
        k: dev.ptr(&k),
        v: dev.ptr(&v),
        dout: dev.ptr(&q),
        lse: dev.ptr(&lse),
        delta: dev.ptr(&delta),
        b: b as i32,
        hq: hq as i32,
        hkv: hkv as i32,
        t: t as i32,
        s: t as i32,
        d: d as i32,
        scale,
        _pad: 0,
    };
    let cfg_kv = Launch { grid: (t.div_ceil(16) as u32, (b * hkv) as u32, 1), block: (128, 1, 1), shared_bytes: 0 };
    let ms = time_ms(dev, 3, || {
        dev.launch("attention", "attention_bwd_prep_bf16", Launch::linear((b * hq * t).div_ceil(4) as u32, 128), &pp)?;
        dev.launch("attention", "attention_bwd_dq_bf16", cfg, &pb)?;
        dev.launch("attention", "attention_bwd_dkv_bf16", cfg_kv, &pb)
    })?;
    push("attention bwd bf16 (prep+dq+dkv)", ms, 0.0, 2.5 * fwd_flops);
    Ok(rows)
}

/// Prints the table; returns the rows with the two ceilings first.
pub fn print_report(dev: &CudaDevice) -> Result<Vec<BenchRow>> {
    println!("device: {} (sm_{}{})", dev.name(), dev.compute_capability().0, dev.compute_capability().1);
    let (bw, copy) = copy_bandwidth(dev)?;
    let (tflops, gemm) = match cublas_bf16_rate(dev, 4096, 4096, 11008) {
        Ok((r, row)) => (r, Some(row)),
        Err(e) => {
            println!("cuBLAS ceiling unavailable: {e}");
            (f64::NAN, None)
        }
    };
    println!("ceilings: copy {bw:.0} GB/s, cuBLAS bf16 {tflops:.1} TFLOP/s");
    let mut all = vec![copy];
    all.extend(gemm);
    all.extend(kernel_rows(dev)?);
    println!("{:<48} {:>10} {:>10} {:>8} {:>10} {:>8}", "kernel", "ms", "GB/s", "%copy", "TFLOP/s", "%cuBLAS");
    for r in &all {
        let gbs = r.bytes / r.ms / 1e6;
        let tf = r.flops / r.ms / 1e9;
        let (g, gp) = if r.bytes > 0.0 {
            (format!("{gbs:.0}"), format!("{:.0}%", 100.0 * gbs / bw))
        } else {
            ("-".into(), "-".into())
        };
        let (t, tp) = if r.flops > 0.0 {
            (format!("{tf:.1}"), format!("{:.0}%", 100.0 * tf / tflops))
        } else {
            ("-".into(), "-".into())
        };
        println!("{:<48} {:>10.3} {:>10} {:>8} {:>10} {:>8}", r.name, r.ms, g, gp, t, tp);
    }
    Ok(all)
}
