//! Bad input gives clear errors naming the tensor: invalid blocksizes, NaN/Inf in a weight (never
//! silently a code), inconsistent parts, wrong dtypes and lengths.

use half::bf16;
use nf4::{dequantize_4bit_into, quantize_4bit, Absmax, Error, NestedAbsmax, Nf4Weight, QuantConfig, QuantType};
use tensor::{DType, Tensor};

#[test]
fn blocksize_must_be_power_of_two_in_range() {
    let x = vec![1.0f32; 256];
    for bs in [0, 1, 16, 48, 63, 100, 8192] {
        let cfg = QuantConfig { blocksize: bs, ..QuantConfig::default() };
        let e = Nf4Weight::quantize_slice("w", &x, &[256], &cfg, None).unwrap_err();
        assert!(matches!(e, Error::InvalidBlocksize { blocksize } if blocksize == bs), "{e:?}");
        assert!(e.to_string().contains(&format!("blocksize {bs} is invalid")));
    }
    for bs in [32, 64, 128, 256, 512, 1024, 2048, 4096] {
        quantize_4bit("w", &x, bs, QuantType::Nf4).unwrap();
    }
}

#[test]
fn nan_and_inf_are_errors_naming_the_tensor() {
    for (bad, idx) in [(f32::NAN, 5usize), (f32::INFINITY, 1000), (f32::NEG_INFINITY, 4095)] {
        let mut x = vec![0.5f32; 4096];
        x[idx] = bad;
        x[4000.min(idx + 1)] = f32::NAN; // a later one too: the first is reported
        let t = Tensor::from_vec(x.clone(), [64, 64]).unwrap();
        let e = Nf4Weight::quantize("model.layers.3.mlp.down_proj.weight", &t, &QuantConfig::default()).unwrap_err();
        match &e {
            Error::NonFinite { tensor, index, .. } => {
                assert_eq!(tensor, "model.layers.3.mlp.down_proj.weight");
                assert_eq!(*index, idx.min(4000));
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("model.layers.3.mlp.down_proj.weight"));
        // Also in bf16 input, in a trailing partial block, and in the absmax-only pass.
        let xb: Vec<bf16> = x[..4001].iter().map(|&v| bf16::from_f32(v)).collect();
        assert!(matches!(quantize_4bit("b", &xb, 64, QuantType::Fp4), Err(Error::NonFinite { .. })));
        assert!(matches!(nf4::block_absmax("b", &x, 64), Err(Error::NonFinite { .. })));
    }
}

#[test]
fn non_float_inputs_are_rejected() {
    let t = Tensor::zeros([4, 8], DType::I32);
    let e = Nf4Weight::quantize("idx", &t, &QuantConfig::default()).unwrap_err().to_string();
    assert!(e.contains("idx") && e.contains("cannot quantize dtype i32"), "{e}");
    let w = Nf4Weight::quantize("w", &Tensor::ones([4, 8], DType::F32), &QuantConfig::default()).unwrap();
    assert!(w.dequantize_to(DType::U8).unwrap_err().to_string().contains("cannot dequantize to u8"));
    let mut short = vec![0f32; 31];
    assert!(w.dequantize_into(&mut short).unwrap_err().to_string().contains("output of 31 elements"));
    let e = Nf4Weight::quantize_slice("w", &[1.0f32; 10], &[3, 4], &QuantConfig::default(), None).unwrap_err();
    assert!(e.to_string().contains("10 elements do not fill shape [3, 4]"));
}

#[test]
fn inconsistent_parts_are_errors() {
    let shape = vec![10, 20]; // 200 elements, 100 bytes, 4 blocks of 64
    let plain = |n| Absmax::Plain(vec![1.0; n]);
    let mk = |packed: usize, absmax: Absmax, dtype| {
        Nf4Weight::from_parts("w", QuantType::Nf4, 64, shape.clone(), dtype, vec![0x77; packed], absmax)
    };
    assert!(mk(100, plain(4), DType::F32).is_ok());
    let e = mk(99, plain(4), DType::F32).unwrap_err().to_string();
    assert!(e.contains("quant state of 'w'") && e.contains("99 code bytes"), "{e}");
    assert!(mk(100, plain(3), DType::F32).unwrap_err().to_string().contains("3 absmax values, expected 4"));
    assert!(mk(100, plain(4), DType::I32).unwrap_err().to_string().contains("not a float type"));
    assert!(mk(100, Absmax::Plain(vec![1.0, f32::NAN, 1.0, 1.0]), DType::F32).is_err());
    let nested = |codes: usize, nested: usize| {
        Absmax::Nested(NestedAbsmax {
            codes: vec![127; codes],
            nested_absmax: vec![0.0; nested],
            offset: 1.0,
            nested_blocksize: 256,
        })
    };
    assert!(mk(100, nested(4, 1), DType::BF16).is_ok());
    assert!(mk(100, nested(3, 1), DType::F32).unwrap_err().to_string().contains("3 absmax codes"));
    assert!(mk(100, nested(4, 0), DType::F32).unwrap_err().to_string().contains("0 nested absmax values, expected 1"));
    let e =
        Nf4Weight::from_parts("w", QuantType::Nf4, 96, shape.clone(), DType::F32, vec![0; 100], plain(3)).unwrap_err();
    assert!(e.to_string().contains("blocksize 96 is invalid"));
    // Slice-level dequantize checks lengths too.
    let mut out = vec![0f32; 200];
    let e = dequantize_4bit_into("w", &[0u8; 50], &[1.0; 4], 64, QuantType::Nf4, &mut out).unwrap_err();
    assert!(e.to_string().contains("50 code bytes cannot hold 200 elements"), "{e}");
    let e = dequantize_4bit_into("w", &[0u8; 100], &[1.0; 3], 64, QuantType::Nf4, &mut out).unwrap_err();
    assert!(e.to_string().contains("3 absmax values cannot cover 200 elements"), "{e}");
}
