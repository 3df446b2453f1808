//! The tiny Llama fixture (copied from `shared/reference/tiny-llama`): its config parses, every
//! tensor loads with the right shape through `SafetensorsSource` and `WeightSource`, sharded
//! models load, and malformed safetensors files and configs give errors naming file and tensor.

use llama::safetensors::{SafetensorsSource, StDType};
use llama::{LlamaConfig, WeightSource, WeightSourceKind};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama")
}

/// A fresh scratch directory under the system temp dir.
fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("llama-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn config_parses() {
    let c = LlamaConfig::from_json_file(fixture().join("config.json")).unwrap();
    assert_eq!(
        (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim),
        (64, 2, 4, 2, 16)
    );
    assert_eq!((c.intermediate_size, c.vocab_size, c.max_position_embeddings), (172, 256, 128));
    assert_eq!(c.rope_theta, 10000.0);
    assert!(!c.tie_word_embeddings);
    assert_eq!((c.bos_token_id, c.eos_token_ids.clone()), (Some(1), vec![2]));
    assert_eq!(c.num_parameters(), 123_712);
}

#[test]
fn config_defaults_and_errors() {
    let base = std::fs::read_to_string(fixture().join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&base).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("rope_theta");
    o.remove("head_dim");
    o.remove("num_key_value_heads");
    o.get_mut("rope_parameters").unwrap()["rope_theta"] = serde_json::json!(5e5);
    let c = LlamaConfig::from_json_str(&v.to_string(), "c.json").unwrap();
    assert_eq!((c.rope_theta, c.head_dim, c.num_key_value_heads), (5e5, 16, 4));

    let err = |edit: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let mut v: serde_json::Value = serde_json::from_str(&base).unwrap();
        edit(v.as_object_mut().unwrap());
        LlamaConfig::from_json_str(&v.to_string(), "bad/config.json").unwrap_err().to_string()
    };
    let e = err(&|o| {
        o.remove("hidden_size");
    });
    assert!(e.contains("bad/config.json") && e.contains("hidden_size") && e.contains("missing"), "{e}");
    let e = err(&|o| {
        o.insert("num_key_value_heads".into(), 3.into());
    });
    assert!(e.contains("num_key_value_heads"), "{e}");
    let e = err(&|o| {
        o.insert("vocab_size".into(), "many".into());
    });
    assert!(e.contains("vocab_size"), "{e}");
    let e = err(&|o| {
        o.insert("hidden_act".into(), "gelu".into());
    });
    assert!(e.contains("hidden_act"), "{e}");
    let e = err(&|o| {
        o.insert("rope_scaling".into(), serde_json::json!({"rope_type": "llama3", "factor": 8.0}));
    });
    assert!(e.contains("rope_scaling") && e.contains("llama3"), "{e}");
    let e = LlamaConfig::from_json_str("{", "broken.json").unwrap_err().to_string();
    assert!(e.contains("broken.json") && e.contains("JSON"), "{e}");
}

fn expected_shapes() -> HashMap<String, Vec<usize>> {
    let mut m = HashMap::new();
    m.insert("model.embed_tokens.weight".to_string(), vec![256, 64]);
    m.insert("lm_head.weight".to_string(), vec![256, 64]);
    m.insert("model.norm.weight".to_string(), vec![64]);
    for l in 0..2 {
        let p = |s: &str| format!("model.layers.{l}.{s}.weight");
        m.insert(p("self_attn.q_proj"), vec![64, 64]);
        m.insert(p("self_attn.k_proj"), vec![32, 64]);
        m.insert(p("self_attn.v_proj"), vec![32, 64]);
        m.insert(p("self_attn.o_proj"), vec![64, 64]);
        m.insert(p("mlp.gate_proj"), vec![172, 64]);
        m.insert(p("mlp.up_proj"), vec![172, 64]);
        m.insert(p("mlp.down_proj"), vec![64, 172]);
        m.insert(p("input_layernorm"), vec![64]);
        m.insert(p("post_attention_layernorm"), vec![64]);
    }
    m
}

#[test]
fn tensors_load_with_the_right_shapes() {
    let src = SafetensorsSource::open(fixture()).unwrap();
    let want = expected_shapes();
    assert_eq!(src.names().len(), want.len());
    for name in src.names() {
        let info = src.info(name).unwrap();
        assert_eq!(info.dtype, StDType::F32);
        assert_eq!(&info.shape, &want[name], "{name}");
        let t = src.get(name).unwrap();
        assert_eq!(t.dims(), want[name].as_slice());
        assert!(t.as_slice::<f32>().unwrap().iter().all(|v| v.is_finite()));
    }
    // Values agree with an independent reader (the safetensors crate).
    let bytes = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor("model.layers.1.mlp.down_proj.weight").unwrap();
    let ours = src.get("model.layers.1.mlp.down_proj.weight").unwrap();
    assert_eq!(bytemuck_f32(view.data()), ours.as_slice::<f32>().unwrap());

    let ws = WeightSource::open(fixture()).unwrap();
    assert_eq!(ws.kind(), WeightSourceKind::Safetensors);
    ws.check_complete().unwrap();
    assert_eq!(ws.names().len(), want.len());
    for (name, t) in ws.iter_f32() {
        assert_eq!(t.unwrap().dims(), want[&name].as_slice());
    }
    let e = ws.tensor_f32("model.layers.9.mlp.up_proj.weight").unwrap_err().to_string();
    assert!(e.contains("model.layers.9.mlp.up_proj.weight") && e.contains("model.safetensors"), "{e}");
    let e = ws.tokenizer().unwrap_err().to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
}

fn bytemuck_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Write the fixture's tensors (converted to `dtype`) into `n` shards plus an index.
fn write_shards(dir: &Path, n: usize, dtype: safetensors::Dtype) {
    let src = SafetensorsSource::open(fixture()).unwrap();
    let names = src.names();
    let mut map = serde_json::Map::new();
    for (s, chunk) in names.chunks(names.len().div_ceil(n)).enumerate() {
        let file = format!("model-{:05}-of-{n:05}.safetensors", s + 1);
        let data: Vec<(String, Vec<u8>, Vec<usize>)> = chunk
            .iter()
            .map(|&name| {
                let v = src.get(name).unwrap().to_vec::<f32>().unwrap();
                let bytes: Vec<u8> = match dtype {
                    safetensors::Dtype::BF16 => v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
                    safetensors::Dtype::F16 => v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
                    _ => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                };
                (name.to_string(), bytes, src.info(name).unwrap().shape.clone())
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = data
            .iter()
            .map(|(n, b, s)| (n.clone(), safetensors::tensor::TensorView::new(dtype, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join(&file)).unwrap();
        for &name in chunk {
            map.insert(name.to_string(), file.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    std::fs::copy(fixture().join("config.json"), dir.join("config.json")).unwrap();
}

#[test]
fn sharded_bf16_and_f16_models_load() {
    let reference = SafetensorsSource::open(fixture()).unwrap();
    for (tag, dtype, tol) in [("bf16", safetensors::Dtype::BF16, 1e-2f32), ("f16", safetensors::Dtype::F16, 1e-3)] {
        let dir = scratch(tag);
        write_shards(&dir, 3, dtype);
        let ws = WeightSource::open(&dir).unwrap();
        ws.check_complete().unwrap();
        let src = ws.safetensors().unwrap();
        let name = "model.layers.0.self_attn.q_proj.weight";
        assert_eq!(
            src.get(name).unwrap().dtype(),
            if tag == "bf16" { tensor::DType::BF16 } else { tensor::DType::F16 }
        );
        let a = ws.tensor_f32(name).unwrap().to_vec::<f32>().unwrap();
        let b = reference.get(name).unwrap().to_vec::<f32>().unwrap();
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= tol * y.abs() + 1e-6), "{tag}");
        // The index must agree with the shards.
        let idx = dir.join("model.safetensors.index.json");
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&idx).unwrap()).unwrap();
        v["weight_map"]["model.norm.weight"] = "model-00009-of-00009.safetensors".into();
        std::fs::write(&idx, v.to_string()).unwrap();
        let e = SafetensorsSource::open(&dir).unwrap_err().to_string();
        assert!(e.contains("model-00009-of-00009.safetensors"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn malformed_safetensors_name_file_and_tensor() {
    let dir = scratch("bad");
    let good = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let hlen = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let open = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        SafetensorsSource::open(&p).unwrap_err().to_string()
    };
    // Truncated data: the last tensor's range lies past the end; the error names it.
    let e = open("trunc.safetensors", &good[..good.len() - 10]);
    assert!(e.contains("trunc.safetensors") && e.contains("tensor '") && e.contains("outside"), "{e}");
    // Truncated inside the header, and a header length pointing past the end.
    let e = open("hdr.safetensors", &good[..hlen / 2]);
    assert!(e.contains("hdr.safetensors") && e.contains("past the end"), "{e}");
    let mut b = good.clone();
    b[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(open("huge.safetensors", &b).contains("past the end"));
    assert!(open("tiny.safetensors", &[1, 2, 3]).contains("truncated"));
    // Sizes not matching shapes: edit one shape in the header, keeping its length.
    let header = std::str::from_utf8(&good[8..8 + hlen]).unwrap();
    let edited = header.replacen("[172,64]", "[171,64]", 1);
    assert_eq!(edited.len(), header.len(), "fixture header layout changed");
    let mut b = good.clone();
    b[8..8 + hlen].copy_from_slice(edited.as_bytes());
    let e = open("shape.safetensors", &b);
    assert!(e.contains("shape.safetensors") && e.contains("proj.weight") && e.contains("expected"), "{e}");
    // Every truncation point is an error, never a panic.
    for cut in (0..good.len()).step_by(997) {
        let p = dir.join("cut.safetensors");
        std::fs::write(&p, &good[..cut]).unwrap();
        assert!(SafetensorsSource::open(&p).is_err(), "cut at {cut}");
    }
    let e = SafetensorsSource::open(dir.join("nope.safetensors")).unwrap_err().to_string();
    assert!(e.contains("nope.safetensors"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bnb_4bit_model_loads_through_the_nf4_reader() {
    let dir = scratch("bnb");
    let src = SafetensorsSource::open(fixture()).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut originals = HashMap::new();
    for name in src.names() {
        let t = src.get(name).unwrap();
        if name.ends_with("_proj.weight") {
            let w = nf4::Nf4Weight::quantize(name, &t, &nf4::QuantConfig::default()).unwrap();
            for b in w.to_bnb_tensors(name).unwrap() {
                owned.push((b.name, b.dtype, b.shape, b.data));
            }
            originals.insert(name.to_string(), t.to_vec::<f32>().unwrap());
        } else {
            owned.push((
                name.to_string(),
                safetensors::Dtype::F32,
                t.dims().to_vec(),
                src.bytes(name).unwrap().to_vec(),
            ));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    std::fs::copy(fixture().join("config.json"), dir.join("config.json")).unwrap();

    let ws = WeightSource::open(&dir).unwrap();
    assert_eq!(ws.kind(), WeightSourceKind::Bnb4bit);
    assert_eq!(ws.names().len(), expected_shapes().len(), "aux tensors are folded into their weight");
    ws.check_complete().unwrap();
    let name = "model.layers.1.self_attn.k_proj.weight";
    assert!(ws.is_bnb_quantized(name) && !ws.is_bnb_quantized("model.norm.weight"));
    assert_eq!(ws.shape(name).unwrap(), vec![32, 64]);
    let w = ws.nf4_weight(name).unwrap();
    assert_eq!(w.shape(), &[32, 64]);
    let deq = ws.tensor_f32(name).unwrap();
    assert_eq!(deq.dims(), &[32, 64]);
    // NF4 error budget: within the largest code gap (~0.16 of the block absmax).
    let orig = &originals[name];
    let amax = orig.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = deq.to_vec::<f32>().unwrap();
    assert!(orig.iter().zip(&d).all(|(a, b)| (a - b).abs() <= 0.17 * amax), "dequantized weight far from the original");
    assert!(ws.nf4_weight("model.norm.weight").is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
