//! The tokenizer: a Hugging Face `tokenizers` tokenizer, loaded from `tokenizer.json` or rebuilt
//! from GGUF metadata, plus the chat templates our models use (`chat.rs`).
//!
//! Reference: ASSETS.md (SmolLM2's byte-level BPE rebuilt from `tokenizer.ggml.*`; the Llama-2
//! SentencePiece BPE wrapped as a `tokenizers` BPE), llama.cpp's `tokenizer.ggml.*` keys and
//! token types (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte), and
//! transformers' `SentencePieceExtractor` for merges derived from scores. Deliberately absent:
//! pre-tokenizers other than `smollm` and `gpt2`/`default` (Llama-3's `llama-bpe` etc. are refused
//! by name), Unigram/WordPiece GGUF vocabularies, and training.

mod chat;

pub use chat::{apply_chat_template, ChatMessage, ChatTemplate};

use crate::gguf::GgufFile;
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper};

/// A loaded tokenizer with the ids and chat template the model needs.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    origin: PathBuf,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    chat_template: Option<ChatTemplate>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokenizer({}, {} tokens)", self.origin.display(), self.vocab_size())
    }
}

impl Tokenizer {
    /// The tokenizer of a model path: `tokenizer.json` in (or next to) a Hugging Face directory,
    /// or the metadata of a `.gguf` file. A missing tokenizer is an error naming where we looked.
    pub fn for_model(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.extension().is_some_and(|e| e == "gguf") {
            return Self::from_gguf(&GgufFile::open(path)?);
        }
        let dir = if path.is_dir() { path } else { path.parent().unwrap_or(Path::new(".")) };
        let json = dir.join("tokenizer.json");
        if !json.is_file() {
            return Err(Error::tokenizer(
                &json,
                "no tokenizer.json next to the model (copy the model's tokenizer.json there, or use a .gguf model, which carries its tokenizer)",
            ));
        }
        Self::from_file(&json)
    }

    /// Load a `tokenizer.json`; BOS/EOS and the chat template come from `tokenizer_config.json`
    /// beside it when present, else from the well-known token strings.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(Error::tokenizer(path, "file not found"));
        }
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| Error::tokenizer(path, e.to_string()))?;
        let cfg: Option<serde_json::Value> = path
            .parent()
            .map(|d| d.join("tokenizer_config.json"))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str(&t).ok());
        let token_of = |key: &str| -> Option<String> {
            let v = cfg.as_ref()?.get(key)?;
            v.as_str().map(str::to_string).or_else(|| v.get("content")?.as_str().map(str::to_string))
        };
        let find = |key: &str, fallbacks: &[&str]| -> Option<u32> {
            token_of(key)
                .and_then(|t| inner.token_to_id(&t))
                .or_else(|| fallbacks.iter().find_map(|t| inner.token_to_id(t)))
        };
        let bos_id = find("bos_token", &["<s>", "<|begin_of_text|>", "<|im_start|>"]);
        let eos_id = find("eos_token", &["</s>", "<|end_of_text|>", "<|im_end|>"]);
        let chat_template =
            cfg.as_ref().and_then(|c| c.get("chat_template")).and_then(|t| t.as_str()).and_then(ChatTemplate::detect);
        Ok(Tokenizer { inner, origin: path.to_path_buf(), bos_id, eos_id, chat_template })
    }

    /// Rebuild the tokenizer stored in GGUF metadata (`tokenizer.ggml.model` = `gpt2` or `llama`).
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let path = g.path();
        if g.get("tokenizer.ggml.tokens").is_none() {
            return Err(Error::tokenizer(path, "the GGUF file has no tokenizer.ggml.tokens (no tokenizer stored)"));
        }
        let model = g.get_str("tokenizer.ggml.model")?;
        let tokens = g.get_str_array("tokenizer.ggml.tokens")?;
        let types = match g.get("tokenizer.ggml.token_type") {
            Some(_) => g.get_int_array("tokenizer.ggml.token_type")?,
            None => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(Error::config(
                path,
                "tokenizer.ggml.token_type",
                format!("{} types for {} tokens", types.len(), tokens.len()),
            ));
        }
        let bos_id = g.get_token_id("tokenizer.ggml.bos_token_id")?;
        let eos_id = g.get_token_id("tokenizer.ggml.eos_token_id")?;
        for (k, id) in [("tokenizer.ggml.bos_token_id", bos_id), ("tokenizer.ggml.eos_token_id", eos_id)] {
            if id.is_some_and(|id| id as usize >= tokens.len()) {
                return Err(Error::config(path, k, format!("{id:?} is outside the {} tokens", tokens.len())));
            }
        }
        let add_bos = |default: bool| {
            g.get("tokenizer.ggml.add_bos_token").map(|v| *v == crate::gguf::MetaValue::Bool(true)).unwrap_or(default)
        };

        if u32::try_from(tokens.len()).is_err() {
            return Err(Error::config(
                path,
                "tokenizer.ggml.tokens",
                format!("{} tokens do not fit u32 ids", tokens.len()),
            ));
        }
        // The first occurrence of a token string keeps its id (GGUF vocabularies may repeat).
        let mut vocab = Vocab::default();
        for (id, t) in tokens.iter().enumerate() {
            vocab.entry(t.to_string()).or_insert(id as u32);
        }
        let merges: Merges = match g.get("tokenizer.ggml.merges") {
            Some(_) => g
                .get_str_array("tokenizer.ggml.merges")?
                .iter()
                .map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    Error::config(path, "tokenizer.ggml.merges", "a merge is not two tokens separated by a space")
                })?,
            None if model == "llama" => merges_from_scores(&tokens, &types, &g.get_f32_array("tokenizer.ggml.scores")?),
            None => return Err(Error::config(path, "tokenizer.ggml.merges", "missing (needed for a gpt2 BPE)")),
        };
        let tk_err = |e: tokenizers::Error| Error::tokenizer(path, e.to_string());
        let mut builder = BPE::builder().vocab_and_merges(vocab, merges);
        if model == "llama" {
            let unk = g.get_token_id("tokenizer.ggml.unknown_token_id")?.unwrap_or(0) as usize;
            let unk = tokens
                .get(unk)
                .ok_or_else(|| Error::config(path, "tokenizer.ggml.unknown_token_id", "outside the vocabulary"))?;
            builder = builder.unk_token(unk.to_string()).byte_fallback(true).fuse_unk(true);
        } else if model != "gpt2" {
            return Err(Error::config(
                path,
                "tokenizer.ggml.model",
                format!("'{model}' is not supported (gpt2 or llama)"),
            ));
        }
        let bpe = builder.build().map_err(tk_err)?;
        let mut inner = tokenizers::Tokenizer::new(bpe);

        let bos_str = bos_id.map(|i| tokens[i as usize].to_string());
        let template = |bos: &str, id: u32| -> Result<PostProcessorWrapper> {
            let tp = TemplateProcessing::builder()
                .try_single(format!("{bos} $A"))
                .and_then(|b| b.try_pair(format!("{bos} $A {bos} $B")))
                .map_err(|e| Error::tokenizer(path, e))?
                .special_tokens(vec![(bos.to_string(), id)])
                .build()
                .map_err(|e| Error::tokenizer(path, e.to_string()))?;
            Ok(PostProcessorWrapper::Template(tp))
        };
        if model == "gpt2" {
            let byte_level = ByteLevel::new(false, true, true);
            let pre = g.get("tokenizer.ggml.pre").and_then(|p| p.as_str()).unwrap_or("default");
            let pre_tok: PreTokenizerWrapper = match pre {
                "smollm" => PreSequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
                "default" | "gpt2" => byte_level.into(),
                other => {
                    return Err(Error::config(
                        path,
                        "tokenizer.ggml.pre",
                        format!("pre-tokenizer '{other}' is not supported (smollm, gpt2)"),
                    ))
                }
            };
            inner.with_pre_tokenizer(Some(pre_tok));
            inner.with_decoder(Some(DecoderWrapper::from(byte_level)));
            match (add_bos(false), &bos_str, bos_id) {
                (true, Some(b), Some(id)) => inner.with_post_processor(Some(template(b, id)?)),
                _ => inner.with_post_processor(Some(PostProcessorWrapper::ByteLevel(byte_level))),
            };
        } else {
            let prepend: NormalizerWrapper = Prepend::new("▁".into()).into();
            let replace: NormalizerWrapper = Replace::new(" ", "▁").map_err(tk_err)?.into();
            inner.with_normalizer(Some(NormalizerSequence::new(vec![prepend, replace])));
            let dec: Vec<DecoderWrapper> = vec![
                Replace::new("▁", " ").map_err(tk_err)?.into(),
                ByteFallback::new().into(),
                Fuse::new().into(),
                Strip::new(' ', 1, 0).into(),
            ];
            inner.with_decoder(Some(DecoderSequence::new(dec)));
            if let (true, Some(b), Some(id)) = (add_bos(true), &bos_str, bos_id) {
                inner.with_post_processor(Some(template(b, id)?));
            }
        }
        // Control tokens are special (matched whole, skipped on decode when asked); user-defined
        // tokens are matched whole but decoded as text.
        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, &t)| t == 3 || t == 4)
            .map(|(s, &t)| AddedToken::from(s.to_string(), t == 3).normalized(false))
            .collect();
        inner.add_special_tokens(&added);
        let chat_template = g.get("tokenizer.chat_template").and_then(|t| t.as_str()).and_then(ChatTemplate::detect);
        Ok(Tokenizer { inner, origin: path.to_path_buf(), bos_id, eos_id, chat_template })
    }

    /// Token ids of `text`; `add_special_tokens` runs the post-processor (BOS where the model adds
    /// one). Special-token strings in `text` (`<|im_start|>`) become their ids either way.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc =
            self.inner.encode(text, add_special_tokens).map_err(|e| Error::tokenizer(&self.origin, e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text of `ids`; `skip_special_tokens` drops control tokens.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| Error::tokenizer(&self.origin, e.to_string()))
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
    /// The id of a token string.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
    /// The string of a token id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
    /// Beginning-of-sequence id, if the model has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }
    /// End-of-sequence id, if the model has one.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }
    /// The chat template the model ships, when we recognise it.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }
    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// BPE merges of a SentencePiece vocabulary, as transformers' `SentencePieceExtractor` derives
/// them: every split of a normal token into two vocabulary tokens, ordered by the merged token's
/// score (highest first), ties by the ids of the two parts.
///
/// Linear in the vocabulary's bytes plus the merges found. Hashing `tok[..i]` and `tok[i..]` anew
/// at every split costs L² for a token of L bytes, and a GGUF file may hold a token of megabytes;
/// instead every prefix and suffix is looked up by a rolling hash (keyed per process, so a crafted
/// vocabulary cannot force collisions), and strings are compared only where both halves hit.
fn merges_from_scores(tokens: &[&str], types: &[i64], scores: &[f32]) -> Merges {
    let h = RollingHash::new(tokens.iter().map(|t| t.len()).max().unwrap_or(0));
    // (hash, byte length) -> the first id with that string; other strings with the same key (a
    // collision, about 2^-61 per pair) go to `collided`.
    let mut index: HashMap<(u64, usize), usize> = HashMap::with_capacity(tokens.len());
    let mut collided: HashMap<(u64, usize), Vec<usize>> = HashMap::new();
    for (id, t) in tokens.iter().enumerate() {
        let key = (h.of(t.as_bytes()), t.len());
        match index.get(&key) {
            None => {
                index.insert(key, id);
            }
            Some(&first) if tokens[first] != *t => {
                let same = collided.entry(key).or_default();
                if !same.iter().any(|&i| tokens[i] == *t) {
                    same.push(id);
                }
            }
            Some(_) => {} // a repeated string keeps its first id
        }
    }
    let find = |key: (u64, usize), s: &str| -> Option<usize> {
        let &first = index.get(&key)?;
        if tokens[first] == s {
            return Some(first);
        }
        collided.get(&key)?.iter().copied().find(|&i| tokens[i] == s)
    };
    let mut merges: Vec<(f32, usize, usize)> = Vec::new();
    let mut prefix = Vec::new();
    for (id, tok) in tokens.iter().enumerate() {
        if types.get(id).is_some_and(|&t| t != 1) {
            continue;
        }
        let score = scores.get(id).copied().unwrap_or(0.0);
        h.prefixes(tok.as_bytes(), &mut prefix);
        let n = tok.len();
        let start = merges.len();
        for (i, _) in tok.char_indices().skip(1) {
            let (kl, kr) = ((prefix[i], i), (h.sub(prefix[n], prefix[i], n - i), n - i));
            if !(index.contains_key(&kl) && index.contains_key(&kr)) {
                continue;
            }
            if let (Some(l), Some(r)) = (find(kl, &tok[..i]), find(kr, &tok[i..])) {
                merges.push((score, l, r));
            }
        }
        merges[start..].sort_by_key(|&(_, l, r)| (l, r));
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0));
    merges.into_iter().map(|(_, l, r)| (tokens[l].to_string(), tokens[r].to_string())).collect()
}

/// Polynomial hashes of byte strings modulo the Mersenne prime 2^61 - 1, with a random base, and
/// the powers of the base up to the longest string, so any substring's hash is O(1) from prefixes.
struct RollingHash {
    base: u64,
    pow: Vec<u64>,
}

impl RollingHash {
    const M: u64 = (1 << 61) - 1;

    fn new(max_len: usize) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut r = std::collections::hash_map::RandomState::new().build_hasher();
        r.write_u64(0x5eed);
        let base = 256 + r.finish() % (Self::M - 512);
        let mut pow = Vec::with_capacity(max_len + 1);
        pow.push(1);
        for i in 0..max_len {
            pow.push(Self::mul(pow[i], base));
        }
        RollingHash { base, pow }
    }
    fn mul(a: u64, b: u64) -> u64 {
        let p = a as u128 * b as u128;
        ((p >> 61) as u64 + (p as u64 & Self::M)) % Self::M
    }
    fn push(&self, h: u64, byte: u8) -> u64 {
        (Self::mul(h, self.base) + byte as u64 + 1) % Self::M
    }
    /// The hash of `s`.
    fn of(&self, s: &[u8]) -> u64 {
        s.iter().fold(0, |h, &b| self.push(h, b))
    }
    /// `out[i]` = hash of `s[..i]`, for i in 0..=len.
    fn prefixes(&self, s: &[u8], out: &mut Vec<u64>) {
        out.clear();
        out.push(0);
        for &b in s {
            out.push(self.push(out[out.len() - 1], b));
        }
    }
    /// The hash of `s[i..i + len]` from `whole` = hash of `s[..i + len]` and `head` = hash of `s[..i]`.
    fn sub(&self, whole: u64, head: u64, len: usize) -> u64 {
        (whole + Self::M - Self::mul(head, self.pow[len])) % Self::M
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct reading of the definition: hash both halves at every split.
    fn merges_reference(tokens: &[&str], types: &[i64], scores: &[f32]) -> Merges {
        let index: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (*t, i)).rev().collect();
        let mut merges: Vec<(f32, usize, usize)> = Vec::new();
        for (id, tok) in tokens.iter().enumerate() {
            if types.get(id).is_some_and(|&t| t != 1) {
                continue;
            }
            let score = scores.get(id).copied().unwrap_or(0.0);
            let mut local: Vec<(f32, usize, usize)> = tok
                .char_indices()
                .skip(1)
                .filter_map(|(i, _)| Some((score, *index.get(&tok[..i])?, *index.get(&tok[i..])?)))
                .collect();
            local.sort_by_key(|&(_, l, r)| (l, r));
            merges.extend(local);
        }
        merges.sort_by(|a, b| b.0.total_cmp(&a.0));
        merges.into_iter().map(|(_, l, r)| (tokens[l].to_string(), tokens[r].to_string())).collect()
    }

    #[test]
    fn rolling_hash_merges_equal_the_reference() {
        // Short strings over a small alphabet (so most splits hit), multi-byte characters,
        // repeated strings, non-normal types and equal scores.
        let mut rng = tensor::Rng::new(9);
        let alphabet = ["a", "b", "▁", "é", "ab", "z"];
        let owned: Vec<String> = (0..3000)
            .map(|_| (0..1 + rng.below(6)).map(|_| alphabet[rng.below(alphabet.len())]).collect::<String>())
            .collect();
        let tokens: Vec<&str> = owned.iter().map(String::as_str).collect();
        let types: Vec<i64> = (0..tokens.len()).map(|i| if i % 17 == 0 { 3 } else { 1 }).collect();
        let scores: Vec<f32> = (0..tokens.len()).map(|i| -((i % 50) as f32)).collect();
        let got = merges_from_scores(&tokens, &types, &scores);
        assert!(got.len() > 1000, "{} merges", got.len());
        assert_eq!(got, merges_reference(&tokens, &types, &scores));
    }

    #[test]
    fn rolling_hash_substrings_match_whole_hashes() {
        let h = RollingHash::new(64);
        let s = "héllo▁wörld, a longer string".as_bytes();
        let mut p = Vec::new();
        h.prefixes(s, &mut p);
        for i in 0..=s.len() {
            for j in i..=s.len() {
                assert_eq!(h.sub(p[j], p[i], j - i), h.of(&s[i..j]), "{i}..{j}");
            }
        }
        assert_ne!(h.of(b"ab"), h.of(b"ba"));
    }
}
