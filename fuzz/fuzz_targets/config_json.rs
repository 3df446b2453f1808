//! A Hugging Face config.json: parse and validate; an accepted config must size itself.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(cfg) = llama::LlamaConfig::from_json_str(text, "config.json") {
        let _ = cfg.num_parameters();
    }
});
