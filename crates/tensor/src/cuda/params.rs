//! Rust mirrors of the kernels' parameter structs, one per `struct <Name>Params` in `kernels/*.cu`,
//! same names, same field order. Device pointers are `u64` (a `CUdeviceptr`), `long long` is
//! `i64`, `int` is `i32`. Each struct's size is asserted here and by a `static_assert` in the
//! `.cu` file, so a field added on one side only fails to compile instead of corrupting a launch.

use cudarc::driver::DeviceRepr;

macro_rules! params {
    ($(#[$doc:meta])* $name:ident ($size:expr) { $($(#[$fdoc:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $ty),*
        }
        const _: () = assert!(std::mem::size_of::<$name>() == $size);
        // SAFETY: plain-old-data with the C layout of the kernel's parameter struct.
        unsafe impl DeviceRepr for $name {}
    };
}

/// Dims a `BinaryParams` can describe (`BINARY_MAX_DIMS` in binary.cu).
pub const BINARY_MAX_DIMS: usize = 6;

params!(
    /// binary.cu: `op` 0 add, 1 sub, 2 mul, 3 div, 4 maximum.
    BinaryParams (208) {
        out: u64, a: u64, b: u64, n: i64,
        dims: [i64; BINARY_MAX_DIMS], a_strides: [i64; BINARY_MAX_DIMS], b_strides: [i64; BINARY_MAX_DIMS],
        a_offset: i64, b_offset: i64, rank: i32, op: i32, contiguous: i32, _pad: i32,
    }
);
params!(
    /// unary.cu: `op` 0 exp, 1 log, 2 sqrt, 3 rsqrt, 4 neg, 5 sqr, 6 recip, 7 silu, 8 affine, 9 powf.
    UnaryParams (40) { out: u64, x: u64, n: i64, op: i32, p0: f32, p1: f32, _pad: i32 }
);
params!(
    /// cast.cu.
    CastParams (24) { out: u64, x: u64, n: i64 }
);
/// Dims a `CopyParams` can describe (`COPY_MAX_DIMS` in cast.cu), after coalescing.
pub const COPY_MAX_DIMS: usize = 6;

params!(
    /// cast.cu strided copy (`copy_fwd_u8/u16/u32`, by element width).
    CopyParams (192) {
        out: u64, x: u64, n: i64,
        dims: [i64; COPY_MAX_DIMS], x_strides: [i64; COPY_MAX_DIMS], out_strides: [i64; COPY_MAX_DIMS],
        x_offset: i64, out_offset: i64, rank: i32, _pad: i32,
    }
);
params!(
    /// reduce.cu: `op` 0 sum, 1 mean, 2 max, 3 argmax (i32 out).
    ReduceParams (32) { out: u64, x: u64, rows: i64, cols: i32, op: i32 }
);
params!(
    /// reduce.cu, pass 1 of the sum of squares.
    SumSqParams (24) { partials: u64, x: u64, n: i64 }
);
params!(
    /// reduce.cu, pass 2 of the sum of squares.
    SumSqFinishParams (32) { sumsq: u64, norm: u64, partials: u64, count: i32, _pad: i32 }
);
params!(
    /// softmax.cu forward.
    SoftmaxParams (32) { y: u64, x: u64, rows: i64, cols: i32, _pad: i32 }
);
params!(
    /// softmax.cu backward.
    SoftmaxBwdParams (40) { dx: u64, y: u64, dy: u64, rows: i64, cols: i32, _pad: i32 }
);
params!(
    /// rmsnorm.cu forward.
    RmsnormParams (48) { y: u64, rstd: u64, x: u64, w: u64, rows: i64, cols: i32, eps: f32 }
);
params!(
    /// rmsnorm.cu backward (dx).
    RmsnormBwdParams (56) { dx: u64, dy: u64, x: u64, w: u64, rstd: u64, rows: i64, cols: i32, _pad: i32 }
);
params!(
    /// rmsnorm.cu backward (dw).
    RmsnormDwParams (48) { dw: u64, dy: u64, x: u64, rstd: u64, rows: i64, cols: i32, _pad: i32 }
);
params!(
    /// rope.cu (fwd and bwd).
    RopeParams (48) { y: u64, x: u64, cos: u64, sin: u64, bh: i64, t: i32, d: i32 }
);
params!(
    /// swiglu.cu forward.
    SwigluParams (32) { y: u64, g: u64, u: u64, n: i64 }
);
params!(
    /// swiglu.cu backward.
    SwigluBwdParams (48) { dg: u64, du: u64, dy: u64, g: u64, u: u64, n: i64 }
);
params!(
    /// dropout.cu mask: element `i` is `value` (rounded to the dtype) when
    /// `splitmix64(seed, i) >> 40 < threshold`, else 0 (ops/dropout).
    DropoutParams (32) { out: u64, seed: u64, n: i64, threshold: u32, value: f32 }
);
params!(
    /// attention.cu forward.
    AttentionParams (72) {
        out: u64, lse: u64, q: u64, k: u64, v: u64,
        b: i32, hq: i32, hkv: i32, t: i32, s: i32, d: i32, scale: f32, _pad: i32,
    }
);
params!(
    /// attention.cu backward preprocessing (delta = rowsum(dout * out)).
    AttentionBwdPrepParams (40) { delta: u64, out: u64, dout: u64, rows: i64, d: i32, _pad: i32 }
);
params!(
    /// attention.cu backward (dq and dkv kernels).
    AttentionBwdParams (104) {
        dq: u64, dk: u64, dv: u64, q: u64, k: u64, v: u64, dout: u64, lse: u64, delta: u64,
        b: i32, hq: i32, hkv: i32, t: i32, s: i32, d: i32, scale: f32, _pad: i32,
    }
);
params!(
    /// index.cu embedding gather.
    EmbeddingParams (56) { out: u64, table: u64, ids: u64, err: u64, n: i64, c: i64, vocab: i64 }
);
params!(
    /// index.cu embedding scatter-add backward.
    EmbeddingBwdParams (48) { dtable: u64, dy: u64, ids: u64, n: i64, c: i64, vocab: i64 }
);
params!(
    /// cross_entropy.cu forward (per row).
    CrossEntropyParams (48) { lse: u64, row_loss: u64, logits: u64, targets: u64, n: i64, v: i32, ignore_index: i32 }
);
params!(
    /// cross_entropy.cu forward finish (loss sum and count).
    CrossEntropyFinishParams (48) {
        loss_sum: u64, count: u64, row_loss: u64, targets: u64, n: i64, ignore_index: i32, v: i32,
    }
);
params!(
    /// cross_entropy.cu backward.
    CrossEntropyBwdParams (56) {
        dlogits: u64, logits: u64, targets: u64, lse: u64, n: i64, v: i32, ignore_index: i32, grad_scale: f32, _pad: i32,
    }
);
params!(
    /// adamw.cu 32-bit step.
    AdamwParams (72) {
        p: u64, g: u64, m: u64, v: u64, n: i64,
        b1: f32, one_minus_b1: f32, b2: f32, one_minus_b2: f32, decay: f32, step_size: f32, eps_hat: f32, has_decay: i32,
    }
);
params!(
    /// adamw.cu blockwise 8-bit step.
    Adamw8bitParams (104) {
        p: u64, g: u64, m_codes: u64, v_codes: u64, absmax_m: u64, absmax_v: u64, signed_map: u64, unsigned_map: u64, n: i64,
        b1: f32, one_minus_b1: f32, b2: f32, one_minus_b2: f32, decay: f32, step_size: f32, eps_hat: f32, has_decay: i32,
    }
);
params!(
    /// adamw.cu gradient clipping by a device-side norm.
    ClipParams (32) { g: u64, norm: u64, n: i64, max_norm: f32, _pad: i32 }
);
params!(
    /// nf4.cu quantize.
    Nf4QuantParams (40) { packed: u64, absmax: u64, x: u64, n: i64, blocksize: i32, _pad: i32 }
);
params!(
    /// nf4.cu double-quant offset (mean of absmax).
    Nf4DqOffsetParams (24) { offset: u64, absmax: u64, nblocks: i64 }
);
params!(
    /// nf4.cu double-quant codes.
    Nf4DqQuantParams (48) { codes: u64, nested_absmax: u64, absmax: u64, dyn_code: u64, nblocks: i64, offset: f32, _pad: i32 }
);
params!(
    /// nf4.cu double-quant restore.
    Nf4DqRestoreParams (48) { absmax: u64, codes: u64, nested_absmax: u64, dyn_code: u64, nblocks: i64, offset: f32, _pad: i32 }
);
params!(
    /// nf4.cu dequantize (`absmax` 0 = restore from the nested state on the fly).
    Nf4DequantParams (64) {
        out: u64, packed: u64, absmax: u64, qabsmax: u64, nested_absmax: u64, dyn_code: u64, n: i64, blocksize: i32, offset: f32,
    }
);
params!(
    /// nf4_linear.cu.
    Nf4LinearParams (56) { y: u64, x: u64, packed: u64, absmax: u64, m: i32, n: i32, k: i32, blocksize: i32, out_bf16: i32, _pad: i32 }
);
