//! The real default model (SmolLM2-135M-Instruct, Q4_1 GGUF) from the asset cache: metadata as
//! ASSETS.md states it, Q4_1/Q8_0 dequantization checked by hand against the raw blocks, the Q/K
//! un-permutation, the tokenizer's golden ids, and the full `WeightSource` walk.
//!
//! The asset is fetched by `scripts/fetch-assets.sh` (CI runs it before the tests). When it is
//! missing these tests FAIL with a message naming that script; they never skip silently.

use half::f16;
use llama::gguf::{GgmlType, GgufFile};
use llama::{ChatTemplate, LlamaConfig, Tokenizer, WeightSource, WeightSourceKind};
use std::path::PathBuf;
use std::sync::OnceLock;

fn model_path() -> PathBuf {
    match llama::assets::default_model_path() {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn gguf() -> &'static GgufFile {
    static G: OnceLock<GgufFile> = OnceLock::new();
    G.get_or_init(|| GgufFile::open(model_path()).expect("open the real GGUF"))
}

fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_gguf(gguf()).expect("tokenizer from GGUF metadata"))
}

#[test]
fn metadata_matches_assets_md() {
    let g = gguf();
    assert_eq!(g.version, 3);
    assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
    let c = LlamaConfig::from_gguf(g).unwrap();
    assert_eq!(c.num_hidden_layers, 30);
    assert_eq!(c.hidden_size, 576);
    assert_eq!(c.num_attention_heads, 9);
    assert_eq!(c.num_key_value_heads, 3);
    assert_eq!(c.head_dim, 64);
    assert_eq!(c.intermediate_size, 1536);
    assert_eq!(c.vocab_size, 49152);
    assert_eq!(c.rope_theta, 100000.0);
    assert!((c.rms_norm_eps - 1e-5).abs() < 1e-12);
    assert_eq!(c.max_position_embeddings, 8192);
    assert!(c.tie_word_embeddings, "no output.weight in the file");
    assert_eq!(c.bos_token_id, Some(1));
    assert_eq!(c.eos_token_ids, vec![2]);
    assert_eq!(c.num_parameters(), 134_515_008);
    let total: u64 = g.tensors.iter().map(|t| t.elem_count()).sum();
    assert_eq!(total, 134_515_008);

    let count = |ty| g.tensors.iter().filter(|t| t.ty == ty).count();
    assert_eq!(count(GgmlType::Q4_1), 210);
    assert_eq!(count(GgmlType::F32), 61);
    assert_eq!(g.tensor_info("token_embd.weight").unwrap().ty, GgmlType::Q8_0);
    assert_eq!(g.tensor_info("blk.0.attn_q.weight").unwrap().shape(), vec![576, 576]);
    assert_eq!(g.tensor_info("blk.0.attn_k.weight").unwrap().shape(), vec![192, 576]);
    assert_eq!(g.tensor_info("blk.0.ffn_down.weight").unwrap().shape(), vec![576, 1536]);
}

/// Decode one block by hand from the raw bytes, as ASSETS.md spells the format.
fn hand_q4_1(block: &[u8]) -> Vec<f32> {
    let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
    let m = f16::from_le_bytes([block[2], block[3]]).to_f32();
    let mut w = vec![0f32; 32];
    for j in 0..16 {
        w[j] = (block[4 + j] & 0xF) as f32 * d + m;
        w[j + 16] = (block[4 + j] >> 4) as f32 * d + m;
    }
    w
}

#[test]
fn q4_1_and_q8_0_dequantize_as_specified() {
    let g = gguf();
    for name in ["blk.0.attn_v.weight", "blk.17.ffn_up.weight", "blk.29.ffn_down.weight"] {
        let (info, raw) = g.tensor_bytes(name).unwrap();
        assert_eq!(info.ty, GgmlType::Q4_1);
        let t = g.tensor_f32(name).unwrap();
        let v = t.as_slice::<f32>().unwrap();
        let nblocks = raw.len() / 20;
        assert_eq!(nblocks * 32, v.len());
        for b in [0, 1, nblocks / 2, nblocks - 1] {
            assert_eq!(&v[b * 32..b * 32 + 32], hand_q4_1(&raw[b * 20..b * 20 + 20]).as_slice(), "{name} block {b}");
        }
        // Trained weights: small, finite, not constant.
        let max = v.iter().fold(0f32, |a, x| a.max(x.abs()));
        assert!(v.iter().all(|x| x.is_finite()) && max > 1e-3 && max < 50.0, "{name}: max |w| = {max}");
    }
    let (_, raw) = g.tensor_bytes("token_embd.weight").unwrap();
    let e = g.tensor_f32("token_embd.weight").unwrap();
    assert_eq!(e.dims(), &[49152, 576]);
    let v = e.as_slice::<f32>().unwrap();
    let row = 4649 * 576; // " France"
    let b = row / 32;
    let blk = &raw[b * 34..b * 34 + 34];
    let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
    for j in 0..32 {
        assert_eq!(v[row + j], (blk[2 + j] as i8) as f32 * d);
    }
}

#[test]
fn weight_source_yields_hf_names_and_unpermuted_qk() {
    let ws = WeightSource::open(model_path()).unwrap();
    assert_eq!(ws.kind(), WeightSourceKind::Gguf);
    ws.check_complete().unwrap();
    let names = ws.names();
    assert_eq!(names.len(), 30 * 9 + 2);
    assert!(names.contains(&"model.layers.29.post_attention_layernorm.weight".to_string()));
    assert!(!ws.contains("lm_head.weight"));

    // HF row (h, a, b) of q_proj is GGUF row (h, b, a): heads of 64 rows, 32 pairs.
    let g = ws.gguf().unwrap();
    for (hf, gg, heads) in [
        ("model.layers.3.self_attn.q_proj.weight", "blk.3.attn_q.weight", 9),
        ("model.layers.3.self_attn.k_proj.weight", "blk.3.attn_k.weight", 3),
    ] {
        let w_hf = ws.tensor_f32(hf).unwrap();
        let w_gg = g.tensor_f32(gg).unwrap();
        let (a, b) = (w_hf.as_slice::<f32>().unwrap(), w_gg.as_slice::<f32>().unwrap());
        assert_eq!(w_hf.dims(), w_gg.dims());
        assert_eq!(w_hf.dims()[0], heads * 64);
        for (h, aa, bb) in [(0, 0, 0), (0, 1, 0), (heads - 1, 1, 31), (1, 0, 17)] {
            let r_hf = h * 64 + aa * 32 + bb;
            let r_gg = h * 64 + bb * 2 + aa;
            assert_eq!(&a[r_hf * 576..(r_hf + 1) * 576], &b[r_gg * 576..(r_gg + 1) * 576], "{hf} row {r_hf}");
        }
    }
    // Other tensors are untouched.
    let v_hf = ws.tensor_f32("model.layers.3.self_attn.v_proj.weight").unwrap();
    assert_eq!(
        v_hf.as_slice::<f32>().unwrap(),
        g.tensor_f32("blk.3.attn_v.weight").unwrap().as_slice::<f32>().unwrap()
    );
}

#[test]
fn tokenizer_golden_ids() {
    let t = tokenizer();
    assert_eq!(t.vocab_size(), 49152);
    assert_eq!((t.bos_id(), t.eos_id()), (Some(1), Some(2)));
    let chat = "<|im_start|>user\nWhat is 12345 + 1?<|im_end|>";
    let ids = t.encode(chat, true).unwrap();
    assert_eq!(ids, vec![1, 4093, 198, 1780, 314, 216, 33, 34, 35, 36, 37, 1232, 216, 33, 47, 2]);
    assert_eq!(t.decode(&ids, false).unwrap(), chat);
    let ids = t.encode("The capital of France is", true).unwrap();
    assert_eq!(ids, vec![504, 3575, 282, 4649, 314], "no BOS is added");
    assert_eq!(t.decode(&ids, false).unwrap(), "The capital of France is");
    assert_eq!(t.decode(&[1, 504, 2], true).unwrap(), "The");
    for text in
        ["  leading spaces\tand tabs\n\nnew lines", "unicode: naïve café — 東京 🚀", "digits 3.14159 and 2026-11-28"]
    {
        let ids = t.encode(text, false).unwrap();
        assert_eq!(t.decode(&ids, false).unwrap(), text);
    }
}

#[test]
fn chat_template_is_detected_and_tokenizes() {
    let t = tokenizer();
    let tpl = t.chat_template().cloned().expect("SmolLM2 ships a ChatML template");
    assert_eq!(tpl, ChatTemplate::smollm2());
    let msgs = [llama::ChatMessage::new("user", "What is the capital of France?")];
    let prompt = llama::apply_chat_template(&tpl, &msgs, true).unwrap();
    let ids = t.encode(&prompt, false).unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(t.decode(&ids, false).unwrap(), prompt);
}

#[test]
fn tokenizer_for_model_path() {
    let t = Tokenizer::for_model(model_path()).unwrap();
    assert_eq!(t.encode("Paris", false).unwrap(), tokenizer().encode("Paris", false).unwrap());
}
