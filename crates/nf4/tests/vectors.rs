//! Bit-exact checks against every reference vector of bitsandbytes 0.50.2 (README §3–4):
//! packed codes, absmax, nested codes with the file's offset, nested absmax, restored absmax,
//! dequantized outputs (bf16 case in bf16, 65536 case by sha256), FP4, the blog example, and the
//! code books themselves.

mod common;

use common::*;
use half::bf16;
use nf4::{dynamic_map, dynamic_map_midpoints, mean_offset, restore_absmax, Absmax, Nf4Weight, QuantConfig, QuantType};

const NF4_CASES: &[&str] = &[
    "normal_64_f32",
    "normal_4096_f32",
    "normal_4096_bf16",
    "normal_65536_f32",
    "zero_block_1024_f32",
    "outliers_1024_f32",
    "odd_1023_f32",
    "blog_6_f32",
];

fn cfg(double_quant: bool) -> QuantConfig {
    QuantConfig { quant_type: QuantType::Nf4, blocksize: 64, double_quant }
}

/// Quantize the fixture's input as its case describes (bf16 case as bf16, the rest as f32).
fn quantize_case(f: &Fixture, double_quant: bool, offset: Option<f32>) -> Nf4Weight {
    let shape: Vec<usize> = f.meta["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    if f.meta["dtype"] == "bfloat16" {
        let x = f.bf16s("input");
        Nf4Weight::quantize_slice("input", &x, &shape, &cfg(double_quant), offset).unwrap()
    } else {
        let x = f.f32s("input"); // the 65536 case is stored as bf16 and quantized as fp32
        Nf4Weight::quantize_slice("input", &x, &shape, &cfg(double_quant), offset).unwrap()
    }
}

/// The dequantized bytes as the file stores them (f32 or bf16 little-endian).
fn dequant_bytes(w: &Nf4Weight) -> Vec<u8> {
    match w.dtype() {
        tensor::DType::BF16 => {
            let mut out = vec![bf16::ZERO; w.numel()];
            w.dequantize_into(&mut out).unwrap();
            bf16_le_bytes(&out)
        }
        _ => {
            let mut out = vec![0f32; w.numel()];
            w.dequantize_into(&mut out).unwrap();
            f32_le_bytes(&out)
        }
    }
}

#[test]
fn nf4_cases_bit_exact() {
    for case in NF4_CASES {
        let f = load(&format!("nf4_{case}.safetensors"));
        // Plain (no double quant): packed codes, absmax, dequant.
        let plain = quantize_case(&f, false, None);
        assert_eq!(plain.packed(), &f.u8s("packed")[..], "{case}: packed");
        let Absmax::Plain(absmax) = plain.absmax() else { panic!("{case}: expected plain absmax") };
        assert_bits_eq(&format!("{case}: absmax"), absmax, &f.f32s("absmax"));
        let deq = dequant_bytes(&plain);
        assert_eq!(sha256_hex(&deq), f.meta["sha256_dequant"].as_str().unwrap(), "{case}: sha256 dequant");
        if f.has("dequant") {
            assert_eq!(deq, f.raw("dequant"), "{case}: dequant");
        }

        // Double quant with the file's (torch fp32 mean) offset.
        let offset = f.f32s("dq_offset")[0];
        assert_eq!(
            offset.to_bits(),
            u32::from_str_radix(f.meta["offset_f32_hex"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
        );
        let dq = quantize_case(&f, true, Some(offset));
        assert_eq!(dq.packed(), &f.u8s("packed")[..], "{case}: dq packed");
        let Absmax::Nested(nested) = dq.absmax() else { panic!("{case}: expected nested absmax") };
        assert_eq!(nested.codes, f.u8s("dq_qabsmax"), "{case}: dq_qabsmax");
        assert_bits_eq(&format!("{case}: dq_nested_absmax"), &nested.nested_absmax, &f.f32s("dq_nested_absmax"));
        assert_eq!(nested.offset.to_bits(), offset.to_bits());
        let restored = restore_absmax(nested).unwrap();
        assert_bits_eq(&format!("{case}: dq_absmax_restored"), &restored, &f.f32s("dq_absmax_restored"));
        let dq_deq = dequant_bytes(&dq);
        assert_eq!(sha256_hex(&dq_deq), f.meta["sha256_dq_dequant"].as_str().unwrap(), "{case}: sha256 dq_dequant");
        if f.has("dq_dequant") {
            assert_eq!(dq_deq, f.raw("dq_dequant"), "{case}: dq_dequant");
        }

        // Where torch's fp32 mean equals the f64 mean, the engine's default offset gives the
        // same codes without being told.
        if f.meta["checks"]["offset_torch_mean_equals_f64_mean"] == true {
            let Absmax::Plain(a) = plain.absmax() else { unreachable!() };
            assert_eq!(mean_offset(a).to_bits(), offset.to_bits(), "{case}: f64 mean offset");
            let auto = quantize_case(&f, true, None);
            let Absmax::Nested(n2) = auto.absmax() else { unreachable!() };
            assert_eq!(n2, nested, "{case}: default offset");
        }
    }
}

#[test]
fn blog_example_bytes() {
    let w = [0.7f32, 0.8, 0.2, 0.4, 0.5, -0.9];
    let q = Nf4Weight::quantize_slice("blog", &w, &[6], &QuantConfig::default(), None).unwrap();
    assert_eq!(q.packed(), &[0xEF, 0xAC, 0xD0]);
    let mut out = [0f32; 6];
    q.dequantize_into(&mut out).unwrap();
    let want = [0.650661f32, 0.9, 0.221501, 0.396639, 0.506356, -0.9];
    for (g, w) in out.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{out:?}");
    }
    // Single block: nested code 127 (zero), nested absmax 0, restored absmax == offset == 0.9.
    let Absmax::Nested(n) = q.absmax() else { panic!() };
    assert_eq!(n.codes, vec![127]);
    assert_eq!(n.nested_absmax, vec![0.0]);
    assert_eq!(restore_absmax(n).unwrap(), vec![0.9f32]);
}

#[test]
fn fp4_case_bit_exact() {
    let f = load("fp4_normal_4096_f32.safetensors");
    let x = load("nf4_normal_4096_f32.safetensors").f32s("input");
    let c = QuantConfig { quant_type: QuantType::Fp4, blocksize: 64, double_quant: false };
    let q = Nf4Weight::quantize_slice("fp4", &x, &[4096], &c, None).unwrap();
    assert_eq!(q.packed(), &f.u8s("packed")[..]);
    let Absmax::Plain(a) = q.absmax() else { panic!() };
    assert_bits_eq("fp4 absmax", a, &f.f32s("absmax"));
    let mut out = vec![0f32; 4096];
    q.dequantize_into(&mut out).unwrap();
    assert_eq!(sha256_hex(&f32_le_bytes(&out)), f.meta["sha256_dequant"].as_str().unwrap());
}

fn json_bits(v: &serde_json::Value) -> Vec<u32> {
    v["f32_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| u32::from_str_radix(h.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
        .collect()
}

#[test]
fn codebooks_match_reference() {
    let cb: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_path("codebooks.json")).unwrap()).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let nf4 = QuantType::Nf4.traits();
    let fp4 = QuantType::Fp4.traits();
    assert_eq!(bits(&nf4.code()), json_bits(&cb["nf4"]));
    assert_eq!(bits(&nf4.sorted_midpoints()), json_bits(&cb["nf4_midpoints"]));
    assert_eq!(bits(&fp4.code()), json_bits(&cb["fp4"]));
    assert_eq!(bits(&dynamic_map()), json_bits(&cb["dynamic_map"]));
    assert_eq!(bits(&dynamic_map_midpoints()), json_bits(&cb["dynamic_map_midpoints"]));
    // FP4's sorted midpoints and argsort follow from its table (stable sort, fp32 midpoints).
    let code = fp4.code();
    let mut order: Vec<usize> = (0..16).collect();
    order.sort_by(|&a, &b| code[a].partial_cmp(&code[b]).unwrap());
    let sorted: Vec<f32> = order.iter().map(|&i| code[i]).collect();
    let mids: Vec<f32> = sorted.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect();
    assert_eq!(bits(&fp4.sorted_midpoints()), bits(&mids));
    let order8: Vec<u8> = order.iter().map(|&i| i as u8).collect();
    assert_eq!(fp4.sorted_to_code().unwrap().as_slice(), &order8[..]);
    // NF4 midpoints are those of its (sorted) table; zero codes are the code of 0.0.
    let c = nf4.code();
    let m: Vec<f32> = c.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect();
    assert_eq!(bits(&nf4.sorted_midpoints()), bits(&m));
    assert_eq!(nf4.encode_ref(0.0), nf4.zero_code);
    assert_eq!(fp4.encode_ref(0.0), fp4.zero_code);
    assert_eq!(nf4.zero_code, 7);
}

#[test]
fn bits_per_param_defaults() {
    assert!((nf4::bits_per_param(64, true) - 4.127).abs() < 5e-4);
    assert_eq!(nf4::bits_per_param(64, false), 4.5);
    assert_eq!(QuantConfig::default().bits_per_param(), nf4::bits_per_param(64, true));
}
