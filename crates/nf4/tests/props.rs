//! Property tests over any shape, blocksize, dtype and format: fast path == scalar reference
//! bit for bit, the round-trip error budget, exact zeros and ±absmax, idempotence, nibble
//! packing, double quantization against its formula, and the serialized layout round trip.

use half::{bf16, f16};
use nf4::*;
use proptest::prelude::*;
use safetensors::tensor::SafeTensors;
use tensor::{DType, Element};

fn blocksizes() -> impl Strategy<Value = usize> {
    (5u32..=12).prop_map(|e| 1usize << e)
}

fn quant_types() -> impl Strategy<Value = QuantType> {
    prop_oneof![Just(QuantType::Nf4), Just(QuantType::Fp4)]
}

/// Values at several scales, with runs of exact zeros and repeated magnitudes.
fn values(max_len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![
            4 => -1.0f32..1.0,
            2 => -1e3f32..1e3,
            1 => -1e-30f32..1e-30,
            1 => Just(0.0f32),
            1 => Just(-0.75f32),
        ],
        0..max_len,
    )
}

/// Largest half-gap between consecutive sorted code values.
fn max_half_gap(qt: QuantType) -> f32 {
    let mut c = qt.traits().code().to_vec();
    c.sort_by(|a, b| a.partial_cmp(b).unwrap());
    c.windows(2).map(|w| (w[1] - w[0]) / 2.0).fold(0.0, f32::max)
}

fn widen<T: Element>(x: &[T]) -> Vec<f32> {
    x.iter().map(|v| v.to_f32()).collect()
}

/// Fast == reference for input type `T` (values narrowed to T first).
fn fast_matches_ref<T: Element>(x: &[f32], bs: usize, qt: QuantType) -> std::result::Result<(), TestCaseError> {
    let xt: Vec<T> = x.iter().map(|&v| T::from_f32(v)).collect();
    let (p, a) = quantize_4bit("x", &xt, bs, qt).unwrap();
    let (pr, ar) = quantize_4bit_ref(&widen(&xt), bs, qt);
    prop_assert_eq!(&p, &pr);
    prop_assert_eq!(
        a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        ar.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    // Dequantize into each output type, fast == reference bit for bit.
    let mut o32 = vec![0f32; x.len()];
    dequantize_4bit_into("x", &p, &a, bs, qt, &mut o32).unwrap();
    let r32: Vec<f32> = dequantize_4bit_ref(&p, &a, x.len(), bs, qt);
    prop_assert_eq!(
        o32.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        r32.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    let mut ob = vec![bf16::ZERO; x.len()];
    dequantize_4bit_into("x", &p, &a, bs, qt, &mut ob).unwrap();
    prop_assert_eq!(ob, dequantize_4bit_ref::<bf16>(&p, &a, x.len(), bs, qt));
    let mut oh = vec![f16::ZERO; x.len()];
    dequantize_4bit_into("x", &p, &a, bs, qt, &mut oh).unwrap();
    let rh = dequantize_4bit_ref::<f16>(&p, &a, x.len(), bs, qt);
    prop_assert_eq!(
        oh.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        rh.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn fast_path_equals_reference(x in values(3000), bs in blocksizes(), qt in quant_types()) {
        fast_matches_ref::<f32>(&x, bs, qt)?;
        fast_matches_ref::<bf16>(&x, bs, qt)?;
        fast_matches_ref::<f16>(&x.iter().map(|v| v.clamp(-6e4, 6e4)).collect::<Vec<_>>(), bs, qt)?;
    }

    #[test]
    fn error_budget_zeros_and_extremes(x in values(3000), bs in blocksizes(), qt in quant_types()) {
        let (p, a) = quantize_4bit("x", &x, bs, qt).unwrap();
        let mut d = vec![0f32; x.len()];
        dequantize_4bit_into("x", &p, &a, bs, qt, &mut d).unwrap();
        let gap = max_half_gap(qt);
        for (i, (&xi, &di)) in x.iter().zip(&d).enumerate() {
            let am = a[i / bs];
            prop_assert!((xi - di).abs() <= am * gap * (1.0 + 1e-5), "elem {}: {} -> {} (absmax {})", i, xi, di, am);
            if xi == 0.0 { prop_assert_eq!(di, 0.0); }
            if xi.abs() == am && am > 0.0 && qt == QuantType::Nf4 { prop_assert_eq!(di, xi); }
        }
    }

    #[test]
    fn requantizing_is_idempotent(x in values(2000), bs in blocksizes(), qt in quant_types()) {
        let (p, a) = quantize_4bit("x", &x, bs, qt).unwrap();
        let mut d = vec![0f32; x.len()];
        dequantize_4bit_into("x", &p, &a, bs, qt, &mut d).unwrap();
        let (p2, a2) = quantize_4bit("x", &d, bs, qt).unwrap();
        prop_assert_eq!(&a, &a2);
        if qt == QuantType::Nf4 {
            prop_assert_eq!(&p, &p2);
        }
        // FP4 has two zero codes (+0 and -0): compare values, not codes.
        let mut d2 = vec![0f32; x.len()];
        dequantize_4bit_into("x", &p2, &a2, bs, qt, &mut d2).unwrap();
        prop_assert_eq!(d, d2);
    }

    #[test]
    fn nibble_packing_round_trips(codes in prop::collection::vec(0u8..16, 0..500)) {
        let packed = pack_nibbles(&codes);
        prop_assert_eq!(packed.len(), codes.len().div_ceil(2));
        prop_assert_eq!(unpack_nibbles(&packed, codes.len()), codes.clone());
        for (j, &b) in packed.iter().enumerate() {
            prop_assert_eq!(b >> 4, codes[2 * j]);
        }
    }

    #[test]
    fn double_quant_matches_formula(a in prop::collection::vec(0.0f32..10.0, 1..2000)) {
        let offset = mean_offset(&a);
        let nested = double_quantize(&a, offset);
        let dynm = dynamic_map();
        let mids = dynamic_map_midpoints();
        for (g, group) in a.chunks(256).enumerate() {
            let c: Vec<f32> = group.iter().map(|&v| v - offset).collect();
            let m = c.iter().fold(0f32, |acc, v| acc.max(v.abs()));
            prop_assert_eq!(nested.nested_absmax[g].to_bits(), m.to_bits());
            for (i, &v) in c.iter().enumerate() {
                let s = if group.len() == 256 { v * (1.0 / m.max(1e-38)) } else { v / m.max(1e-38) };
                let code = mids.iter().filter(|&&mid| mid < s.clamp(-1.0, 1.0)).count();
                prop_assert_eq!(nested.codes[g * 256 + i] as usize, code);
            }
        }
        let restored = restore_absmax(&nested).unwrap();
        for (i, &r) in restored.iter().enumerate() {
            let want = dynm[nested.codes[i] as usize] * nested.nested_absmax[i / 256] + offset;
            prop_assert_eq!(r.to_bits(), want.to_bits());
        }
    }

    #[test]
    fn any_shape_serialized_layout_round_trips(
        dims in prop::collection::vec(1usize..40, 1..4),
        bs in blocksizes(),
        qt in quant_types(),
        dq in any::<bool>(),
        dtype_i in 0usize..3,
        seed in any::<u64>(),
    ) {
        let n: usize = dims.iter().product();
        let mut rng = tensor::Rng::new(seed);
        let x: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        let cfg = QuantConfig { quant_type: qt, blocksize: bs, double_quant: dq };
        let w = match dtype_i {
            0 => Nf4Weight::quantize_slice("m.w", &x, &dims, &cfg, None),
            1 => Nf4Weight::quantize_slice("m.w", &x.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>(), &dims, &cfg, None),
            _ => Nf4Weight::quantize_slice("m.w", &x.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>(), &dims, &cfg, None),
        }.unwrap();
        let dtype = [DType::F32, DType::BF16, DType::F16][dtype_i];
        prop_assert_eq!(w.dtype(), dtype);
        let tensors = w.to_bnb_tensors("m.w").unwrap();
        let bytes = safetensors::serialize(tensors.iter().map(|t| (t.name.clone(), t)), None).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let back = Nf4Weight::from_bnb("m.w", &st).unwrap();
        prop_assert_eq!(back.packed(), w.packed());
        prop_assert_eq!(back.absmax(), w.absmax());
        prop_assert_eq!(back.shape(), w.shape());
        prop_assert_eq!((back.dtype(), back.blocksize(), back.quant_type()), (w.dtype(), w.blocksize(), w.quant_type()));
        let (a, b) = (w.dequantize().unwrap(), back.dequantize().unwrap());
        prop_assert_eq!(a.dtype(), dtype);
        prop_assert_eq!(a.to_vec_f32().unwrap(), b.to_vec_f32().unwrap());
    }
}
