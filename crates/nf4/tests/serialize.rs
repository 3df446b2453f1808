//! bitsandbytes' serialized layout: exact key names, dtypes, shapes and quant-state JSON bytes,
//! Python float formatting, and clear errors for truncated or inconsistent states.

mod common;

use common::*;
use nf4::{py_float_repr, BnbTensor, Error, Nf4Weight, QuantConfig, QuantType};
use safetensors::tensor::{Dtype, SafeTensors};

fn case_weight(double_quant: bool, qt: QuantType) -> Nf4Weight {
    let f = load("nf4_normal_4096_f32.safetensors");
    let offset = f.f32s("dq_offset")[0];
    let cfg = QuantConfig { quant_type: qt, blocksize: 64, double_quant };
    let x = f.f32s("input");
    Nf4Weight::quantize_slice("w", &x, &[64, 64], &cfg, Some(offset)).unwrap()
}

#[test]
fn layout_names_dtypes_shapes_and_json() {
    let w = case_weight(true, QuantType::Nf4);
    let t = w.to_bnb_tensors("model.layers.0.mlp.up_proj.weight").unwrap();
    let summary: Vec<(&str, Dtype, Vec<usize>)> =
        t.iter().map(|t| (t.name.as_str(), t.dtype, t.shape.clone())).collect();
    let k = "model.layers.0.mlp.up_proj.weight";
    let json = r#"{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [64, 64], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 2.6302711963653564}"#;
    assert_eq!(
        summary,
        vec![
            (k, Dtype::U8, vec![2048, 1]),
            (&format!("{k}.absmax")[..], Dtype::U8, vec![64]),
            (&format!("{k}.quant_map")[..], Dtype::F32, vec![16]),
            (&format!("{k}.nested_absmax")[..], Dtype::F32, vec![1]),
            (&format!("{k}.nested_quant_map")[..], Dtype::F32, vec![256]),
            (&format!("{k}.quant_state.bitsandbytes__nf4")[..], Dtype::U8, vec![json.len()]),
        ]
    );
    assert_eq!(std::str::from_utf8(&t[5].data).unwrap(), json);
    // Layout known before quantizing equals what is written.
    let plan =
        nf4::bnb_layout(k, QuantType::Nf4, 64, tensor::DType::F32, &[64, 64], Some((256, w_offset(&w)))).unwrap();
    assert_eq!(plan, t.iter().map(|t| (t.name.clone(), t.dtype, t.shape.clone())).collect::<Vec<_>>());

    let plain = case_weight(false, QuantType::Fp4);
    let t = plain.to_bnb_tensors("w").unwrap();
    assert_eq!(t.len(), 4);
    assert_eq!(t[1].dtype, Dtype::F32);
    assert_eq!(t[3].name, "w.quant_state.bitsandbytes__fp4");
    assert_eq!(
        std::str::from_utf8(&t[3].data).unwrap(),
        r#"{"quant_type": "fp4", "blocksize": 64, "dtype": "float32", "shape": [64, 64]}"#
    );
}

fn w_offset(w: &Nf4Weight) -> f32 {
    match w.absmax() {
        nf4::Absmax::Nested(n) => n.offset,
        _ => panic!(),
    }
}

#[test]
fn bf16_dtype_name_and_offset_repr() {
    let x: Vec<half::bf16> = [0.7f32, 0.8, 0.2, 0.4, 0.5, -0.9].iter().map(|&v| half::bf16::from_f32(v)).collect();
    let w = Nf4Weight::quantize_slice("b", &x, &[2, 3], &QuantConfig::default(), None).unwrap();
    let json = w.bnb_quant_state_json().unwrap();
    assert!(json.contains(r#""dtype": "bfloat16", "shape": [2, 3]"#), "{json}");
    assert!(json.ends_with(r#""nested_offset": 0.8984375}"#), "{json}");
}

#[test]
#[allow(clippy::excessive_precision)] // the digits Python's repr prints
fn python_float_repr() {
    for (v, want) in [
        (0.8999999761581421f32 as f64, "0.8999999761581421"),
        (2.0, "2.0"),
        (-0.5, "-0.5"),
        (1e-5, "1e-05"),
        (1.5e-7, "1.5e-07"),
        (0.0001, "0.0001"),
        (1e16, "1e+16"),
        (1234567890123456.0, "1234567890123456.0"),
        (123.25, "123.25"),
        (0.0, "0.0"),
        (192.21661376953125, "192.21661376953125"),
        (3.4028234663852886e38, "3.4028234663852886e+38"),
    ] {
        assert_eq!(py_float_repr(v), want);
    }
}

/// Serialize `tensors` after `edit`, then read back: the error message.
fn read_err(edit: impl FnOnce(&mut Vec<BnbTensor>)) -> String {
    let mut t = case_weight(true, QuantType::Nf4).to_bnb_tensors("w").unwrap();
    edit(&mut t);
    let bytes = safetensors::serialize(t.iter().map(|t| (t.name.clone(), t)), None).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let e = Nf4Weight::from_bnb("w", &st).unwrap_err();
    assert!(matches!(e, Error::InvalidState { .. }), "{e:?}");
    e.to_string()
}

fn set_json(t: &mut [BnbTensor], json: &str) {
    let s = t.iter_mut().find(|t| t.name.contains("quant_state")).unwrap();
    s.data = json.as_bytes().to_vec();
    s.shape = vec![s.data.len()];
}

#[test]
fn truncated_or_inconsistent_states_are_errors() {
    let e = read_err(|t| {
        t[0].data.truncate(100);
        t[0].shape = vec![100, 1];
    });
    assert!(e.contains("'w'") && e.contains("100 code bytes"), "{e}");
    let e = read_err(|t| {
        let j = String::from_utf8(t[5].data.clone()).unwrap().replace("\"nf4\"", "\"nf5\"");
        set_json(t, &j);
    });
    assert!(e.contains("unknown quant_type \"nf5\""), "{e}");
    let e = read_err(|t| {
        let j = String::from_utf8(t[5].data.clone()).unwrap().replace("\"float32\", \"shape\"", "\"int8\", \"shape\"");
        set_json(t, &j);
    });
    assert!(e.contains("unsupported dtype \"int8\""), "{e}");
    let e = read_err(|t| {
        let j = String::from_utf8(t[5].data.clone()).unwrap().replace("[64, 64]", "[64, 65]");
        set_json(t, &j);
    });
    assert!(e.contains("code bytes for shape [64, 65]"), "{e}");
    let e = read_err(|t| set_json(t, "{\"quant_type\": \"nf4\""));
    assert!(e.contains("not valid JSON"), "{e}");
    let e = read_err(|t| {
        t[1].data.truncate(10);
        t[1].shape = vec![10];
    });
    assert!(e.contains("10 absmax codes, expected 64"), "{e}");
    let e = read_err(|t| {
        t[1].dtype = Dtype::I8;
    });
    assert!(e.contains("absmax (nested codes) has dtype I8"), "{e}");
    let e = read_err(|t| {
        t.remove(3); // nested_absmax
    });
    assert!(e.contains("nested but 'nested_absmax' is missing"), "{e}");
    let e = read_err(|t| {
        t.remove(5);
    });
    assert!(e.contains("missing 'w.quant_state.bitsandbytes__nf4'"), "{e}");
    let e = read_err(|t| {
        t[2].data[0] ^= 1;
    });
    assert!(e.contains("quant_map is not the standard nf4 table"), "{e}");
    let e = read_err(|t| {
        t[5].name = "w.quant_state.bitsandbytes__fp4".into();
    });
    assert!(e.contains("does not match its key suffix"), "{e}");
    let e = read_err(|t| {
        let j = String::from_utf8(t[5].data.clone()).unwrap().replace("\"blocksize\": 64", "\"blocksize\": 48");
        set_json(t, &j);
    });
    assert!(e.contains("blocksize 48 is invalid"), "{e}");
}
