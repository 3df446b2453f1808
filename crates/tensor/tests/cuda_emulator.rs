//! The CUDA emulator's own checks (feature `cuda-emu`), on an emulated device made directly
//! (`CudaDevice::emulator`, no environment needed): a kernel writing out of bounds, a parameter
//! struct of the wrong size and a kernel launched from the wrong file are errors naming the
//! kernel, never silent; buffers round-trip; memory figures follow the live buffers. The kernels
//! against their references run in `cuda_kernels.rs` etc. with `QLORA_CUDA_EMULATOR=1`.
#![cfg(feature = "cuda-emu")]

use tensor::cuda::params::BinaryParams;
use tensor::cuda::{CudaDevice, Launch};
use tensor::Error;

fn add_params(out: u64, a: u64, b: u64, n: usize) -> BinaryParams {
    let mut p = BinaryParams { out, a, b, n: n as i64, rank: 1, op: 0, contiguous: 1, ..Default::default() };
    p.dims[0] = n as i64;
    p.a_strides[0] = 1;
    p.b_strides[0] = 1;
    p
}

#[test]
fn a_launch_adds_and_buffers_round_trip() {
    let dev = CudaDevice::emulator();
    assert!(dev.is_emulated());
    let n = 1000;
    let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..n).map(|i| 0.5 * i as f32).collect();
    let (da, db, dout) = (dev.upload(&a).unwrap(), dev.upload(&b).unwrap(), dev.zeros::<f32>(n).unwrap());
    let p = add_params(dev.ptr(&dout), dev.ptr(&da), dev.ptr(&db), n);
    dev.launch("binary", "binary_fwd_f32", Launch::elementwise(n), &p).unwrap();
    let got = dev.download(&dout).unwrap();
    assert_eq!(got, (0..n).map(|i| 1.5 * i as f32).collect::<Vec<_>>());
    assert_eq!(dev.download_range(&da, 10..13).unwrap(), vec![10.0, 11.0, 12.0]);
}

#[test]
fn a_kernel_writing_past_its_buffer_is_an_error_naming_it() {
    let dev = CudaDevice::emulator();
    let n = 300;
    let (da, db) = (dev.upload(&vec![1f32; n]).unwrap(), dev.upload(&vec![2f32; n]).unwrap());
    let short = dev.zeros::<f32>(n - 3).unwrap(); // three elements too few: 12 bytes past the end
    let p = add_params(dev.ptr(&short), dev.ptr(&da), dev.ptr(&db), n);
    let err = dev.launch("binary", "binary_fwd_f32", Launch::elementwise(n), &p).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Device(_)), "{msg}");
    assert!(msg.contains("binary_fwd_f32") && msg.contains("up to 12 bytes past the end"), "{msg}");
}

#[test]
fn a_parameter_struct_of_another_kernel_or_file_is_an_error() {
    let dev = CudaDevice::emulator();
    let p = tensor::cuda::params::ReduceParams::default();
    let err = dev.launch("binary", "binary_fwd_f32", Launch::linear(1, 32), &p).unwrap_err().to_string();
    assert!(err.contains("parameter struct"), "{err}");
    let q = BinaryParams::default();
    let err = dev.launch("unary", "binary_fwd_f32", Launch::linear(1, 32), &q).unwrap_err().to_string();
    assert!(err.contains("binary.cu"), "{err}");
    let err = dev.launch("binary", "binary_fwd_f64", Launch::linear(1, 32), &q).unwrap_err().to_string();
    assert!(err.contains("no kernel"), "{err}");
    let err = dev.launch("binary", "binary_fwd_f32", Launch::linear(1, 2048), &q).unwrap_err().to_string();
    assert!(err.contains("1024"), "{err}");
}

#[test]
fn memory_figures_follow_live_buffers() {
    let dev = CudaDevice::emulator();
    let b = dev.zeros::<f32>(1 << 20).unwrap();
    let during = dev.memory().unwrap();
    // Other tests allocate concurrently: only this buffer's 4 MiB is certain to be counted.
    assert!(during.used_peak >= 4 << 20, "{during:?}");
    assert!(during.used >= 4 << 20, "{during:?}");
    drop(b);
    // The driver's handles do not exist on the emulator: asking for them is an error.
    assert!(dev.stream().is_err() && dev.context().is_err() && dev.blas().is_err());
}

/// `SelftestParams` of kernels/emu/selftest.cu (16 bytes: the emulator checks the size).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct SelftestParams {
    out: u64,
    mode: i32,
    _pad: i32,
}
// SAFETY: plain-old-data with the C layout of the kernel's parameter struct.
unsafe impl cudarc::driver::DeviceRepr for SelftestParams {}

#[test]
fn warp_intrinsics_follow_cuda_semantics() {
    let dev = CudaDevice::emulator();
    for (threads, mode) in [(64u32, 17i32), (96, 5), (32, 31)] {
        let out = dev.zeros::<i32>(6 * threads as usize).unwrap();
        let p = SelftestParams { out: dev.ptr(&out), mode, _pad: 0 };
        dev.launch("selftest", "selftest_shuffles", Launch::linear(1, threads), &p).unwrap();
        let got = dev.download(&out).unwrap();
        // The ballot of `lane % 3 == 0` over lanes 0..24 (the others have exited).
        let ballot = (0..24).filter(|l| l % 3 == 0).fold(0i32, |b, l| b | 1 << l);
        for t in 0..threads as i32 {
            let lane = t & 31;
            let want = [
                lane ^ mode,
                if lane + 3 < 32 { lane + 3 } else { lane },
                if lane >= 5 { lane - 5 } else { lane },
                (lane & !7) + (mode & 7),
                lane ^ 4,
                if lane >= 24 { -1 } else { ballot },
            ];
            assert_eq!(&got[6 * t as usize..6 * t as usize + 6], &want, "thread {t} of {threads}, mode {mode}");
        }
    }
}

#[test]
fn a_missing_barrier_is_visible_and_a_present_one_is_honoured() {
    let dev = CudaDevice::emulator();
    for threads in [64u32, 256, 1024] {
        let n = threads as usize;
        let want: Vec<f32> = (0..n).map(|t| ((t + 32) % n + 1) as f32).collect();
        for mode in [1, 0] {
            let out = dev.zeros::<f32>(n).unwrap();
            let p = SelftestParams { out: dev.ptr(&out), mode, _pad: 0 };
            dev.launch("selftest", "selftest_race", Launch::linear(3, threads), &p).unwrap();
            let got = dev.download(&out).unwrap();
            if mode == 1 {
                assert_eq!(got, want, "{threads} threads with the barrier");
            } else {
                assert_ne!(got, want, "{threads} threads without the barrier read what a barrier guarantees");
            }
        }
    }
}

#[test]
fn a_barrier_that_can_never_complete_is_a_deadlock_error() {
    let dev = CudaDevice::emulator();
    let out = dev.zeros::<i32>(32).unwrap();
    let p = SelftestParams { out: dev.ptr(&out), mode: 0, _pad: 0 };
    let err = dev.launch("selftest", "selftest_deadlock", Launch::linear(2, 32), &p).unwrap_err().to_string();
    assert!(err.contains("selftest_deadlock") && err.contains("deadlock in block"), "{err}");
    assert!(err.contains("1 threads wait at __syncthreads and 31 at a warp collective"), "{err}");
}
