//! A dataset file through `load_examples` with a one-token-per-byte encoder. The first byte picks
//! the extension (.json, .jsonl, .txt) and `seq_len`; accepted examples are split, batched and padded.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;
use trainer::data::{self, Batch, DataOptions, Encoder, Loader};

struct Bytes;
impl Encoder for Bytes {
    fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        Ok(text.bytes().map(|b| b as u32 + 3).collect())
    }
    fn bos(&self) -> u32 {
        1
    }
    fn eos(&self) -> u32 {
        2
    }
}

fn dir() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| qlora_fuzz::scratch("dataset"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else { return };
    let ext = ["json", "jsonl", "txt"][(sel % 3) as usize];
    let path = dir().join(format!("data.{ext}"));
    if std::fs::write(&path, body).is_err() {
        return;
    }
    let opts = DataOptions { seq_len: (sel / 3 % 40) as usize, train_on_source: sel >= 128 };
    let Ok(ex) = data::load_examples(&path, &Bytes, opts) else { return };
    let (train, eval) = data::split(ex, 1, 7);
    for e in train.iter().chain(&eval) {
        assert!(e.input_ids.len() >= 2 && e.input_ids.len() <= opts.seq_len);
        assert_eq!(e.input_ids.len(), e.labels.len());
    }
    let mut loader = Loader::new(train, true, 3);
    let b = Batch::pad(&loader.next_examples(3), 0);
    let _ = b.target_count();
});
