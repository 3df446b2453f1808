//! A safetensors blob read as bitsandbytes' serialized 4-bit layout: every weight that has a
//! quant-state tensor (and the fixed key "w") is loaded and, when accepted, dequantized.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nf4::Nf4Weight;
use safetensors::SafeTensors;

fuzz_target!(|data: &[u8]| {
    let Ok(st) = SafeTensors::deserialize(data) else { return };
    let mut keys: Vec<String> =
        st.names().iter().filter_map(|n| n.split_once(".quant_state.").map(|(k, _)| k.to_string())).collect();
    keys.push("w".into());
    for key in keys {
        if let Ok(w) = Nf4Weight::from_bnb(&key, &st) {
            let _ = w.dequantize();
            let _ = w.to_bnb_tensors(&key);
        }
    }
});
