//! The Llama view of a GGUF file: llama.cpp tensor names to Hugging Face names, and undoing the
//! row permutation llama.cpp's converter applies to the Q and K projections.
//!
//! Reference: ASSETS.md ("llama.cpp permutes the rows of Q and K"; the name table) and
//! llama.cpp `convert_hf_to_gguf.py` `LlamaModel.permute`, whose inverse is implemented here.
//! Deliberately absent: architectures other than llama, and `rope_freqs` (Llama-3.1 scaling).

/// The Hugging Face name of a llama.cpp tensor name, or `None` when it has no Llama equivalent.
pub fn gguf_to_hf_name(name: &str) -> Option<String> {
    let (stem, suffix) = name.rsplit_once('.')?;
    if suffix != "weight" {
        return None;
    }
    let hf = match stem {
        "token_embd" => "model.embed_tokens".to_string(),
        "output_norm" => "model.norm".to_string(),
        "output" => "lm_head".to_string(),
        _ => {
            let rest = stem.strip_prefix("blk.")?;
            let (layer, part) = rest.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            let part = match part {
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_output" => "self_attn.o_proj",
                "ffn_gate" => "mlp.gate_proj",
                "ffn_up" => "mlp.up_proj",
                "ffn_down" => "mlp.down_proj",
                "attn_norm" => "input_layernorm",
                "ffn_norm" => "post_attention_layernorm",
                _ => return None,
            };
            format!("model.layers.{layer}.{part}")
        }
    };
    Some(format!("{hf}.weight"))
}

/// Undo llama.cpp's Q/K row permutation of a row-major `[out, in]` matrix, giving the Hugging
/// Face (half-split `rotate_half`) layout: `w.reshape(n_head, out/n_head/2, 2, in)
/// .swapaxes(1, 2).reshape(out, in)`. Errors when `out` is not a multiple of `2 * n_head`.
pub fn unpermute_qk(w: &[f32], out: usize, inp: usize, n_head: usize) -> Result<Vec<f32>, String> {
    if n_head == 0 || !out.is_multiple_of(2 * n_head) || w.len() != out * inp {
        return Err(format!("cannot unpermute a [{out}, {inp}] matrix ({} values) over {n_head} heads", w.len()));
    }
    let half = out / n_head / 2;
    let mut dst = vec![0f32; w.len()];
    for h in 0..n_head {
        for a in 0..2 {
            for b in 0..half {
                // HF row (h, a, b) is GGUF row (h, b, a).
                let src = (h * half * 2 + b * 2 + a) * inp;
                let d = (h * half * 2 + a * half + b) * inp;
                dst[d..d + inp].copy_from_slice(&w[src..src + inp]);
            }
        }
    }
    Ok(dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map() {
        assert_eq!(gguf_to_hf_name("blk.12.ffn_down.weight").as_deref(), Some("model.layers.12.mlp.down_proj.weight"));
        assert_eq!(gguf_to_hf_name("token_embd.weight").as_deref(), Some("model.embed_tokens.weight"));
        assert_eq!(gguf_to_hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(gguf_to_hf_name("rope_freqs.weight"), None);
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(n_head, 2, out/n_head/2, in).swapaxes(1, 2).reshape(out, in).
        let (n_head, out, inp) = (3, 12, 2);
        let hf: Vec<f32> = (0..out * inp).map(|v| v as f32).collect();
        let half = out / n_head / 2;
        let mut gguf = vec![0f32; hf.len()];
        for h in 0..n_head {
            for a in 0..2 {
                for b in 0..half {
                    let s = (h * 2 * half + a * half + b) * inp;
                    let d = (h * 2 * half + b * 2 + a) * inp;
                    gguf[d..d + inp].copy_from_slice(&hf[s..s + inp]);
                }
            }
        }
        assert_eq!(unpermute_qk(&gguf, out, inp, n_head).unwrap(), hf);
        assert!(unpermute_qk(&gguf, out, inp, 4).is_err());
    }
}
