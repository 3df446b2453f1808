//! GGUF bytes: parse, dequantize every tensor, and read the Llama config from the metadata.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llama::gguf::GgufFile;

fuzz_target!(|data: &[u8]| {
    let Ok(g) = GgufFile::from_bytes(data.to_vec(), "fuzz.gguf") else { return };
    for t in &g.tensors {
        let _ = g.tensor_f32(&t.name);
        let _ = llama::gguf::gguf_to_hf_name(&t.name);
    }
    if let Ok(cfg) = llama::LlamaConfig::from_gguf(&g) {
        let _ = cfg.num_parameters();
    }
});
