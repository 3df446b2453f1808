//! Safetensors bytes as one `model.safetensors` (first byte even) or as a sharded index JSON over
//! two valid shards (first byte odd); every tensor listed is then read.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llama::safetensors::SafetensorsSource;
use std::path::PathBuf;
use std::sync::OnceLock;

fn dir() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = qlora_fuzz::scratch("safetensors");
        // Two small valid shards the index may name.
        let shard = |name: &str, tensors: &[(&str, usize)]| {
            let bufs: Vec<(String, Vec<u8>, usize)> = tensors
                .iter()
                .map(|(n, len)| (n.to_string(), (0..*len).flat_map(|i| (i as f32).to_le_bytes()).collect(), *len))
                .collect();
            let views: Vec<_> = bufs
                .iter()
                .map(|(n, b, len)| {
                    (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![*len], b).unwrap())
                })
                .collect();
            std::fs::write(d.join(name), safetensors::serialize(views, None).unwrap()).unwrap();
        };
        shard("model-00001-of-00002.safetensors", &[("a.weight", 4), ("b.weight", 2)]);
        shard("model-00002-of-00002.safetensors", &[("c.weight", 3)]);
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else { return };
    let d = dir();
    let path = if sel % 2 == 0 { d.join("fuzz.safetensors") } else { d.join("model.safetensors.index.json") };
    if std::fs::write(&path, body).is_err() {
        return;
    }
    let Ok(src) = SafetensorsSource::open(&path) else { return };
    for name in src.names() {
        let _ = src.get_f32(name);
        let _ = src.get(name);
    }
    let _ = src.metadata();
});
