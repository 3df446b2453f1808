//! GGUF bytes whose metadata is rebuilt into a tokenizer; an accepted tokenizer must encode and
//! decode a fixed text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llama::gguf::GgufFile;

fuzz_target!(|data: &[u8]| {
    let Ok(g) = GgufFile::from_bytes(data.to_vec(), "fuzz.gguf") else { return };
    let Ok(tok) = llama::Tokenizer::from_gguf(&g) else { return };
    if let Ok(ids) = tok.encode("Hello world, 123 <s> </s> é", true) {
        let _ = tok.decode(&ids, false);
        let _ = tok.decode(&ids, true);
    }
    let _ = tok.vocab_size();
});
