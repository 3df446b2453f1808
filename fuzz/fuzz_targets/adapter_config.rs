//! A PEFT adapter directory loaded against the tiny fixture model: the fuzz bytes are either the
//! adapter_config.json next to a valid adapter_model.safetensors (first byte even), or the
//! adapter_model.safetensors next to a valid adapter_config.json (first byte odd).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

struct Fixture {
    cfg: llama::LlamaConfig,
    json: Vec<u8>,
    st: Vec<u8>,
    dir: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let cfg = qlora_fuzz::tiny_config();
        let (json, st) = qlora_fuzz::small_adapter(&cfg, &qlora_fuzz::scratch("adapter-valid"));
        Fixture { cfg, json, st, dir: qlora_fuzz::scratch("adapter") }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else { return };
    let f = fixture();
    let (json, st) = if sel % 2 == 0 { (body, &f.st[..]) } else { (&f.json[..], body) };
    if std::fs::write(f.dir.join("adapter_config.json"), json).is_err()
        || std::fs::write(f.dir.join("adapter_model.safetensors"), st).is_err()
    {
        return;
    }
    let _ = llama::LoraParams::load_peft(&f.dir, &f.cfg);
});
