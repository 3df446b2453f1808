//! Tokenizers rebuilt from GGUF metadata on synthetic vocabularies: a SentencePiece-style
//! (`tokenizer.ggml.model = llama`) BPE with merges derived from scores and byte fallback, a
//! missing tokenizer, and `tokenizer.json` loading (written from the real SmolLM2 tokenizer).

use llama::gguf::{GgufFile, GgufWriter, MetaValue};
use llama::Tokenizer;

fn strs(v: &[&str]) -> MetaValue {
    MetaValue::Array(8, v.iter().map(|s| MetaValue::String(s.to_string())).collect())
}

/// A tiny Llama-2-style vocabulary: specials, the 256 byte tokens, then pieces by score.
fn spm_gguf() -> GgufFile {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0f32, 0.0, 0.0];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    let pieces = [
        "▁", "H", "e", "l", "o", "w", "r", "d", "ll", "He", "llo", "▁w", "or", "ld", "Hello", "▁world", "▁wor",
        "▁Hello",
    ];
    // Higher score merges first; mirror SentencePiece: longer pieces learned later score lower.
    for (i, p) in pieces.iter().enumerate() {
        tokens.push(p.to_string());
        types.push(1);
        scores.push(-(i as f32));
    }
    let mut w = GgufWriter::new();
    w.add_meta("tokenizer.ggml.model", MetaValue::String("llama".into()))
        .add_meta("tokenizer.ggml.tokens", strs(&tokens.iter().map(String::as_str).collect::<Vec<_>>()))
        .add_meta("tokenizer.ggml.scores", MetaValue::Array(6, scores.into_iter().map(MetaValue::F32).collect()))
        .add_meta("tokenizer.ggml.token_type", MetaValue::Array(5, types.into_iter().map(MetaValue::I32).collect()))
        .add_meta("tokenizer.ggml.bos_token_id", MetaValue::U32(1))
        .add_meta("tokenizer.ggml.eos_token_id", MetaValue::U32(2))
        .add_meta("tokenizer.ggml.unknown_token_id", MetaValue::U32(0));
    GgufFile::from_bytes(w.to_bytes(), "spm.gguf").unwrap()
}

#[test]
fn sentencepiece_style_bpe_from_scores() {
    let g = spm_gguf();
    let t = Tokenizer::from_gguf(&g).unwrap();
    let id = |s: &str| t.token_to_id(s).unwrap();
    let ids = t.encode("Hello world", true).unwrap();
    assert_eq!(ids, vec![1, id("▁Hello"), id("▁world")]);
    assert_eq!(t.decode(&ids, true).unwrap(), "Hello world");
    // Unknown characters fall back to UTF-8 byte tokens and decode back.
    let ids = t.encode("Hé", false).unwrap();
    assert_eq!(ids, vec![id("▁"), id("H"), id("<0xC3>"), id("<0xA9>")]);
    assert_eq!(t.decode(&ids, false).unwrap(), "Hé");
    assert_eq!((t.bos_id(), t.eos_id()), (Some(1), Some(2)));
}

#[test]
fn missing_or_unsupported_tokenizer_is_a_clear_error() {
    let mut w = GgufWriter::new();
    w.add_meta("general.architecture", MetaValue::String("llama".into()));
    let g = GgufFile::from_bytes(w.to_bytes(), "notok.gguf").unwrap();
    let e = Tokenizer::from_gguf(&g).unwrap_err().to_string();
    assert!(e.contains("notok.gguf") && e.contains("tokenizer.ggml.tokens"), "{e}");

    let mut w = GgufWriter::new();
    w.add_meta("tokenizer.ggml.model", MetaValue::String("gpt2".into()))
        .add_meta("tokenizer.ggml.tokens", strs(&["a", "b", "ab"]))
        .add_meta("tokenizer.ggml.merges", strs(&["a b"]))
        .add_meta("tokenizer.ggml.pre", MetaValue::String("qwen2".into()));
    let g = GgufFile::from_bytes(w.to_bytes(), "pre.gguf").unwrap();
    let e = Tokenizer::from_gguf(&g).unwrap_err().to_string();
    assert!(e.contains("tokenizer.ggml.pre") && e.contains("qwen2"), "{e}");

    let dir = std::env::temp_dir().join(format!("llama-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let e = Tokenizer::for_model(&dir).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tokenizer_json_round_trip_of_the_real_tokenizer() {
    let path = llama::assets::default_model_path().unwrap_or_else(|e| panic!("{e}"));
    let g = GgufFile::open(&path).unwrap();
    let t = Tokenizer::from_gguf(&g).unwrap();
    let dir = std::env::temp_dir().join(format!("llama-tokjson-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    t.inner().save(dir.join("tokenizer.json"), false).unwrap();
    let cfg = serde_json::json!({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
        "chat_template": g.get_str("tokenizer.chat_template").unwrap()});
    std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string()).unwrap();
    let t2 = Tokenizer::for_model(&dir).unwrap();
    let text = "<|im_start|>user\nWhat is 12345 + 1?<|im_end|>";
    assert_eq!(t2.encode(text, true).unwrap(), t.encode(text, true).unwrap());
    assert_eq!((t2.bos_id(), t2.eos_id()), (Some(1), Some(2)));
    assert_eq!(t2.chat_template(), t.chat_template());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn merges_from_scores_is_near_linear_on_a_large_vocabulary() {
    // 200k SentencePiece pieces over a small alphabet (most splits of a piece are pieces too),
    // plus one 512 KiB piece: hashing both halves at every split made that one piece cost
    // ~10^11 byte hashes; prefix hashes make it ~10^6.
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2i32, 3, 3];
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    types.extend([6; 256]);
    let alphabet: Vec<char> = "▁abcdefghij".chars().collect();
    tokens.extend(alphabet.iter().map(|c| c.to_string()));
    let mut rng = tensor::Rng::new(3);
    let mut seen: std::collections::HashSet<String> = tokens.iter().cloned().collect();
    while tokens.len() < 200_000 {
        let t: String = (0..2 + rng.below(9)).map(|_| alphabet[rng.below(alphabet.len())]).collect();
        if seen.insert(t.clone()) {
            tokens.push(t);
        }
    }
    tokens.push("ab".repeat(256 * 1024));
    types.resize(tokens.len(), 1);
    let scores: Vec<MetaValue> = (0..tokens.len()).map(|i| MetaValue::F32(-(i as f32))).collect();
    let mut w = GgufWriter::new();
    w.add_meta("tokenizer.ggml.model", MetaValue::String("llama".into()))
        .add_meta("tokenizer.ggml.tokens", strs(&tokens.iter().map(String::as_str).collect::<Vec<_>>()))
        .add_meta("tokenizer.ggml.scores", MetaValue::Array(6, scores))
        .add_meta("tokenizer.ggml.token_type", MetaValue::Array(5, types.into_iter().map(MetaValue::I32).collect()))
        .add_meta("tokenizer.ggml.unknown_token_id", MetaValue::U32(0));
    let g = GgufFile::from_bytes(w.to_bytes(), "big-vocab.gguf").unwrap();
    let t0 = std::time::Instant::now();
    let t = Tokenizer::from_gguf(&g).unwrap();
    let took = t0.elapsed();
    eprintln!("tokenizer of {} pieces built in {took:?}", tokens.len());
    assert!(took < std::time::Duration::from_secs(30), "building the tokenizer took {took:?}");
    // The merges are real: a piece of the vocabulary encodes to itself.
    let piece = tokens.iter().find(|t| t.starts_with('▁') && t.chars().count() == 6).unwrap();
    let text = piece.trim_start_matches('▁');
    let ids = t.encode(text, false).unwrap();
    assert_eq!(t.decode(&ids, false).unwrap(), text);
    assert_eq!(t.vocab_size(), tokens.len());
}
