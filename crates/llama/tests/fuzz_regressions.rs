//! Inputs the fuzz targets (fuzz/, run by scripts/fuzz.sh) found crashing, hanging or allocating
//! without bound, kept as ordinary tests: each must now be an error, quickly. Also the writer of
//! the fuzz seed corpora (`cargo test -p llama --test fuzz_regressions -- --ignored`).

use llama::gguf::{GgmlType, GgufFile, GgufWriter, MetaValue};
use llama::{LlamaConfig, LoraConfig, LoraParams};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qlora-fuzzreg-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn strs(v: &[&str]) -> MetaValue {
    MetaValue::Array(8, v.iter().map(|s| MetaValue::String(s.to_string())).collect())
}

/// A small Llama GGUF: config metadata and every tensor of a 1-layer model in several types.
fn llama_gguf() -> Vec<u8> {
    let (h, f, v) = (32usize, 64usize, 64usize);
    let mut w = GgufWriter::new();
    w.add_meta("general.architecture", MetaValue::String("llama".into()))
        .add_meta("llama.embedding_length", MetaValue::U32(h as u32))
        .add_meta("llama.feed_forward_length", MetaValue::U32(f as u32))
        .add_meta("llama.block_count", MetaValue::U32(1))
        .add_meta("llama.attention.head_count", MetaValue::U32(4))
        .add_meta("llama.attention.head_count_kv", MetaValue::U32(2))
        .add_meta("llama.attention.layer_norm_rms_epsilon", MetaValue::F32(1e-5))
        .add_meta("llama.rope.freq_base", MetaValue::F32(10000.0))
        .add_meta("llama.context_length", MetaValue::U32(64))
        .add_meta("llama.vocab_size", MetaValue::U32(v as u32));
    let vals = |n: usize| (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0).collect::<Vec<f32>>();
    let mut add = |name: &str, shape: &[usize], ty: GgmlType| {
        w.add_tensor(name, shape, &vals(shape.iter().product()), ty).unwrap();
    };
    add("token_embd.weight", &[v, h], GgmlType::F16);
    add("blk.0.attn_norm.weight", &[h], GgmlType::F32);
    add("blk.0.attn_q.weight", &[h, h], GgmlType::Q8_0);
    add("blk.0.attn_k.weight", &[h / 2, h], GgmlType::Q4_0);
    add("blk.0.attn_v.weight", &[h / 2, h], GgmlType::Q4_1);
    add("blk.0.attn_output.weight", &[h, h], GgmlType::BF16);
    add("blk.0.ffn_norm.weight", &[h], GgmlType::F32);
    add("output_norm.weight", &[h], GgmlType::F32);
    w.to_bytes()
}

/// A tiny byte-level (gpt2) vocabulary with merges and a control token.
fn gpt2_tokenizer_gguf() -> Vec<u8> {
    let mut tokens: Vec<String> = (b'!'..=b'~').map(|b| (b as char).to_string()).collect();
    tokens.extend(
        ["Ġ", "He", "ll", "Hell", "Hello", "Ġw", "or", "ld", "Ġwor", "Ġworld", "<|im_start|>"].map(String::from),
    );
    let mut types = vec![1i32; tokens.len()];
    *types.last_mut().unwrap() = 3;
    let merges = ["H e", "l l", "He ll", "Hell o", "Ġ w", "o r", "l d", "Ġw or", "Ġwor ld"];
    let mut w = GgufWriter::new();
    w.add_meta("tokenizer.ggml.model", MetaValue::String("gpt2".into()))
        .add_meta("tokenizer.ggml.pre", MetaValue::String("smollm".into()))
        .add_meta("tokenizer.ggml.tokens", strs(&tokens.iter().map(String::as_str).collect::<Vec<_>>()))
        .add_meta("tokenizer.ggml.token_type", MetaValue::Array(5, types.into_iter().map(MetaValue::I32).collect()))
        .add_meta("tokenizer.ggml.merges", strs(&merges))
        .add_meta("tokenizer.ggml.bos_token_id", MetaValue::U32(tokens.len() as u32 - 1))
        .add_meta("tokenizer.ggml.add_bos_token", MetaValue::Bool(true))
        .add_meta("tokenizer.chat_template", MetaValue::String("{% for m in messages %}<|im_start|>".into()));
    w.to_bytes()
}

/// A tiny SentencePiece-style (llama) vocabulary: merges come from the scores.
fn spm_tokenizer_gguf() -> Vec<u8> {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2i32, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    for p in ["▁", "H", "e", "l", "o", "w", "r", "d", "ll", "He", "llo", "▁w", "or", "ld", "Hello", "▁world"] {
        tokens.push(p.to_string());
        types.push(1);
    }
    let scores: Vec<MetaValue> = (0..tokens.len()).map(|i| MetaValue::F32(-(i as f32))).collect();
    let mut w = GgufWriter::new();
    w.add_meta("tokenizer.ggml.model", MetaValue::String("llama".into()))
        .add_meta("tokenizer.ggml.tokens", strs(&tokens.iter().map(String::as_str).collect::<Vec<_>>()))
        .add_meta("tokenizer.ggml.scores", MetaValue::Array(6, scores))
        .add_meta("tokenizer.ggml.token_type", MetaValue::Array(5, types.into_iter().map(MetaValue::I32).collect()))
        .add_meta("tokenizer.ggml.bos_token_id", MetaValue::U32(1))
        .add_meta("tokenizer.ggml.eos_token_id", MetaValue::U32(2))
        .add_meta("tokenizer.ggml.unknown_token_id", MetaValue::U32(0));
    w.to_bytes()
}

fn put(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn with_selector(sel: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![sel];
    v.extend_from_slice(body);
    v
}

/// Writes fuzz/seeds/<target>/ from small real files (run by hand when the formats change).
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let seeds = root().join("fuzz/seeds");
    let gguf = llama_gguf();
    assert!(LlamaConfig::from_gguf(&GgufFile::from_bytes(gguf.clone(), "seed.gguf").unwrap()).is_ok());
    put(&seeds.join("gguf"), "llama-1layer.gguf", &gguf);
    let (gpt2, spm) = (gpt2_tokenizer_gguf(), spm_tokenizer_gguf());
    for b in [&gpt2, &spm] {
        llama::Tokenizer::from_gguf(&GgufFile::from_bytes(b.clone(), "seed.gguf").unwrap()).unwrap();
    }
    put(&seeds.join("gguf"), "tokenizer-gpt2.gguf", &gpt2);
    put(&seeds.join("tokenizer_gguf"), "gpt2.gguf", &gpt2);
    put(&seeds.join("tokenizer_gguf"), "spm.gguf", &spm);

    let nf4 = root().join("crates/nf4/tests/fixtures");
    for f in ["nf4_normal_64_f32.safetensors", "fp4_normal_4096_f32.safetensors", "nf4_blog_6_f32.safetensors"] {
        let bytes = std::fs::read(nf4.join(f)).unwrap();
        put(&seeds.join("bnb_quant_state"), f, &bytes);
        put(&seeds.join("safetensors"), f, &with_selector(0, &bytes));
    }
    let index = r#"{"metadata": {"total_size": 36}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00001-of-00002.safetensors", "c.weight": "model-00002-of-00002.safetensors"}}"#;
    put(&seeds.join("safetensors"), "index.json", &with_selector(1, index.as_bytes()));

    let config = std::fs::read(tiny().join("config.json")).unwrap();
    put(&seeds.join("config_json"), "tiny-llama.json", &config);
    put(
        &seeds.join("config_json"),
        "minimal.json",
        br#"{"hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 16, "eos_token_id": [1, 2], "tie_word_embeddings": true}"#,
    );

    // The same small adapter the adapter_config target pairs inputs with (fuzz/src/lib.rs).
    let cfg = LlamaConfig::from_json_file(tiny().join("config.json")).unwrap();
    let lc = LoraConfig::new(2, 4.0, 0.0, &["q_proj", "v_proj"]).unwrap();
    let mut p = LoraParams::zeros(&cfg, lc);
    p.data.iter_mut().enumerate().for_each(|(i, v)| *v = (i % 7) as f32 * 0.25);
    let d = tmp("seed-adapter");
    p.save_peft(&d, None).unwrap();
    let json = std::fs::read(d.join("adapter_config.json")).unwrap();
    let st = std::fs::read(d.join("adapter_model.safetensors")).unwrap();
    put(&seeds.join("adapter_config"), "config.json", &with_selector(0, &json));
    put(&seeds.join("adapter_config"), "model.safetensors", &with_selector(1, &st));

    // Dataset: selector % 3 picks json/jsonl/txt, selector / 3 % 40 is seq_len.
    let ds = seeds.join("dataset");
    put(&ds, "alpaca.json", &with_selector(30, br#"[{"instruction": "Say hi", "input": "", "output": "hi"}, {"instruction": "Add", "input": "1 2", "output": "3"}]"#));
    put(&ds, "text.jsonl", &with_selector(31, b"{\"text\": \"hello world\"}\n\n{\"text\": \"ab\"}\n"));
    put(&ds, "ids.jsonl", &with_selector(19, b"{\"input_ids\": [5, 6, 7, 8]}\n{\"input_ids\": [1, 2]}\n"));
    put(&ds, "plain.txt", &with_selector(14, b"The quick brown fox jumps over the lazy dog.\n"));
    put(
        &ds,
        "alpaca-src.jsonl",
        &with_selector(130, b"{\"instruction\": \"x\", \"input\": \"y\", \"output\": \"z\"}\n"),
    );
}

// ---- regressions ------------------------------------------------------------------------------

/// The tiny fixture model's config.
fn tiny_config() -> LlamaConfig {
    LlamaConfig::from_json_file(tiny().join("config.json")).unwrap()
}

/// A safetensors file of one F32 tensor with `shape` and no data.
fn empty_safetensors(shape: &str) -> Vec<u8> {
    let header = format!(r#"{{"t":{{"dtype":"F32","shape":{shape},"data_offsets":[0,0]}}}}"#);
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b
}

#[test]
fn safetensors_zero_sized_tensor_with_huge_dims_is_refused() {
    // 0 elements, but strides of 2^40 x 2^40 overflow usize.
    let d = tmp("st-zero");
    let p = d.join("z.safetensors");
    std::fs::write(&p, empty_safetensors("[0, 1099511627776, 1099511627776]")).unwrap();
    let e = llama::safetensors::SafetensorsSource::open(&p).unwrap_err().to_string();
    assert!(e.contains("overflows"), "{e}");
    // A zero-sized tensor of sane dims still loads.
    std::fs::write(&p, empty_safetensors("[0, 4]")).unwrap();
    let src = llama::safetensors::SafetensorsSource::open(&p).unwrap();
    assert_eq!(src.get_f32("t").unwrap().dims(), &[0, 4]);
}

#[test]
fn gguf_zero_sized_tensor_with_huge_dims_is_refused() {
    let mut w = GgufWriter::new();
    w.add_raw("t", vec![0, 1 << 40, 1 << 40], GgmlType::F32, vec![]);
    let e = GgufFile::from_bytes(w.to_bytes(), "z.gguf").unwrap_err().to_string();
    assert!(e.contains("overflows"), "{e}");
    let mut w = GgufWriter::new();
    w.add_raw("t", vec![4, 0], GgmlType::F32, vec![]);
    let g = GgufFile::from_bytes(w.to_bytes(), "z.gguf").unwrap();
    assert_eq!(g.tensor_f32("t").unwrap().dims(), &[0, 4]);
}

#[test]
fn adapter_rank_is_checked_before_allocating() {
    let cfg = tiny_config();
    let d = tmp("adapter-r");
    let lc = LoraConfig::new(2, 4.0, 0.0, &["q_proj"]).unwrap();
    LoraParams::zeros(&cfg, lc).save_peft(&d, None).unwrap();
    let json = std::fs::read_to_string(d.join("adapter_config.json")).unwrap();
    for r in ["1000000000", "1e15", "1e30", "4.5", "-3", "0"] {
        std::fs::write(d.join("adapter_config.json"), json.replace("\"r\": 2", &format!("\"r\": {r}"))).unwrap();
        let e = LoraParams::load_peft(&d, &cfg).unwrap_err().to_string();
        assert!(e.contains("'r'") || e.contains("rank"), "r = {r}: {e}");
    }
    std::fs::write(d.join("adapter_config.json"), &json).unwrap();
    assert!(LoraParams::load_peft(&d, &cfg).is_ok());
}

/// A bnb layout of `w` with a quant state naming `shape`, and `packed` code bytes.
fn bnb_file(shape: &str, packed: usize) -> Vec<u8> {
    use safetensors::{tensor::TensorView, Dtype};
    let json = format!(r#"{{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": {shape}}}"#);
    let code: Vec<u8> = nf4::QuantType::Nf4.traits().code().iter().flat_map(|v| v.to_le_bytes()).collect();
    let codes = vec![0u8; packed];
    let absmax: Vec<u8> = vec![0u8; 4 * packed.div_ceil(32)];
    let t = vec![
        ("w", TensorView::new(Dtype::U8, vec![packed, 1], &codes).unwrap()),
        ("w.absmax", TensorView::new(Dtype::F32, vec![absmax.len() / 4], &absmax).unwrap()),
        ("w.quant_map", TensorView::new(Dtype::F32, vec![16], &code).unwrap()),
        ("w.quant_state.bitsandbytes__nf4", TensorView::new(Dtype::U8, vec![json.len()], json.as_bytes()).unwrap()),
    ];
    safetensors::serialize(t, None).unwrap()
}

#[test]
fn bnb_shape_whose_element_count_overflows_is_refused() {
    // 2^32 x 2^32 wraps to 0 elements, which the 0 code bytes would match.
    let bytes = bnb_file("[4294967296, 4294967296]", 0);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let e = nf4::Nf4Weight::from_bnb("w", &st).unwrap_err().to_string();
    assert!(e.contains("overflow"), "{e}");
    let bytes = bnb_file("[4, 16]", 32);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(nf4::Nf4Weight::from_bnb("w", &st).is_ok());
}

// ---- found by review --------------------------------------------------------------------------

#[test]
fn token_ids_past_u32_are_errors_naming_the_key_not_truncated() {
    // 2^32 + 1 used to become token 1 (`as u32`), a valid id of the tiny vocabulary.
    let big = (1u64 << 32) + 1;
    let config = std::fs::read_to_string(tiny().join("config.json")).unwrap();
    let cases = [
        ("bos_token_id", config.replace("\"bos_token_id\": 1", &format!("\"bos_token_id\": {big}"))),
        ("eos_token_id", config.replace("\"eos_token_id\": 2", &format!("\"eos_token_id\": {big}"))),
        ("eos_token_id", config.replace("\"eos_token_id\": 2", &format!("\"eos_token_id\": [2, {big}]"))),
    ];
    for (key, text) in cases {
        assert_ne!(text, config);
        let e = LlamaConfig::from_json_str(&text, "config.json").unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains(&format!("'{key}'")) && e.contains("token id"), "{e}");
    }
    assert_eq!(LlamaConfig::from_json_str(&config, "config.json").unwrap().bos_token_id, Some(1));

    // GGUF metadata: the model config and the tokenizer both refuse it.
    for key in ["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"] {
        let g = GgufFile::from_bytes(llama_gguf(), "m.gguf").unwrap();
        let mut w = GgufWriter::new();
        for (k, v) in &g.metadata {
            w.add_meta(k.clone(), v.clone());
        }
        w.add_meta(key, MetaValue::U64(big));
        let g = GgufFile::from_bytes(w.to_bytes(), "m.gguf").unwrap();
        let e = LlamaConfig::from_gguf(&g).unwrap_err().to_string();
        assert!(e.contains("m.gguf") && e.contains(key) && e.contains("token id"), "{e}");

        let t = GgufFile::from_bytes(spm_tokenizer_gguf(), "t.gguf").unwrap();
        let mut w = GgufWriter::new();
        for (k, v) in t.metadata.iter().filter(|(k, _)| k != key) {
            w.add_meta(k.clone(), v.clone());
        }
        w.add_meta(key, MetaValue::U64(big));
        let t = GgufFile::from_bytes(w.to_bytes(), "t.gguf").unwrap();
        let e = llama::Tokenizer::from_gguf(&t).unwrap_err().to_string();
        assert!(e.contains("t.gguf") && e.contains(key) && e.contains("token id"), "{e}");
    }
    let t = GgufFile::from_bytes(spm_tokenizer_gguf(), "t.gguf").unwrap();
    assert_eq!(t.get_token_id("tokenizer.ggml.bos_token_id").unwrap(), Some(1));
    assert_eq!(t.get_token_id("tokenizer.ggml.no_such_key").unwrap(), None);
}

// ---- crashing inputs kept as files ------------------------------------------------------------

/// What each fuzz target does with its bytes (mirrors fuzz/fuzz_targets/<target>.rs).
fn run_like_target(target: &str, data: &[u8]) {
    match target {
        "gguf" => {
            let Ok(g) = GgufFile::from_bytes(data.to_vec(), "fuzz.gguf") else { return };
            for t in &g.tensors {
                let _ = g.tensor_f32(&t.name);
                let _ = llama::gguf::gguf_to_hf_name(&t.name);
            }
            if let Ok(cfg) = LlamaConfig::from_gguf(&g) {
                let _ = cfg.num_parameters();
            }
        }
        "config_json" => {
            let Ok(text) = std::str::from_utf8(data) else { return };
            if let Ok(cfg) = LlamaConfig::from_json_str(text, "config.json") {
                let _ = cfg.num_parameters();
            }
        }
        "tokenizer_gguf" => {
            let Ok(g) = GgufFile::from_bytes(data.to_vec(), "fuzz.gguf") else { return };
            let Ok(tok) = llama::Tokenizer::from_gguf(&g) else { return };
            if let Ok(ids) = tok.encode("Hello world, 123 <s> </s> é", true) {
                let _ = tok.decode(&ids, false);
            }
        }
        other => panic!("no runner for fuzz target '{other}' (name crash files <target>-<what>)"),
    }
}

/// Every input the fuzzers found crashing (tests/fixtures/fuzz-crashes/<target>-<what>, minimized
/// with `cargo fuzz tmin`) now runs through its target's code without a panic.
#[test]
fn saved_fuzz_crashes_no_longer_crash() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz-crashes");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let target = ["tokenizer_gguf", "config_json", "gguf"].into_iter().find(|t| name.starts_with(&format!("{t}-")));
        let target = target.unwrap_or_else(|| panic!("{name}: not named <target>-<what>"));
        run_like_target(target, &std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n >= 1, "no crash files in {}", dir.display());
}

#[test]
fn parameter_count_overflow_is_a_config_error() {
    // Found by the gguf target once overflow checks were on: hidden 4294967256 (a negative i32
    // read as u32) made num_parameters overflow; config.json reaches the same code.
    let bytes = std::fs::read(tiny().join("../fuzz-crashes/gguf-num-parameters-overflow")).unwrap();
    let g = GgufFile::from_bytes(bytes, "crash.gguf").unwrap();
    let e = LlamaConfig::from_gguf(&g).unwrap_err().to_string();
    assert!(e.contains("crash.gguf") && e.contains("more parameters than fit"), "{e}");
    let config = std::fs::read_to_string(tiny().join("config.json")).unwrap();
    let huge = config
        .replace("\"hidden_size\": 64", "\"hidden_size\": 4294967296")
        .replace("\"vocab_size\": 256", "\"vocab_size\": 4294967296")
        .replace("\"head_dim\": 16", "\"head_dim\": 1073741824");
    let e = LlamaConfig::from_json_str(&huge, "config.json").unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("'hidden_size'") && e.contains("more parameters"), "{e}");
    let ok = LlamaConfig::from_json_str(&config, "config.json").unwrap();
    assert_eq!(ok.checked_num_parameters(), Some(ok.num_parameters()));
}
