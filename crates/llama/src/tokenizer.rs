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
        let opt_id =
            |k: &str| -> Result<Option<u32>> { g.get(k).map(|_| g.get_usize(k).map(|v| v as u32)).transpose() };
        let bos_id = opt_id("tokenizer.ggml.bos_token_id")?;
        let eos_id = opt_id("tokenizer.ggml.eos_token_id")?;
        for (k, id) in [("tokenizer.ggml.bos_token_id", bos_id), ("tokenizer.ggml.eos_token_id", eos_id)] {
            if id.is_some_and(|id| id as usize >= tokens.len()) {
                return Err(Error::config(path, k, format!("{id:?} is outside the {} tokens", tokens.len())));
            }
        }
        let add_bos = |default: bool| {
            g.get("tokenizer.ggml.add_bos_token").map(|v| *v == crate::gguf::MetaValue::Bool(true)).unwrap_or(default)
        };

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
            let unk = opt_id("tokenizer.ggml.unknown_token_id")?.unwrap_or(0) as usize;
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
fn merges_from_scores(tokens: &[&str], types: &[i64], scores: &[f32]) -> Merges {
    let index: std::collections::HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (*t, i)).rev().collect();
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
