//! Text generation with a KV cache: greedy (temperature 0), temperature and nucleus (top-p)
//! sampling from a seeded generator, stopping at an end-of-sequence id, each new token handed to a
//! callback as it is produced so the caller can stream it.
//! Not here: beam search, repetition penalties, batched generation.

use crate::model::{KvCache, LoraVars, Model};
use crate::{Error, Result};
use tensor::Rng;

/// How to pick each next token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1 keeps all).
    pub top_p: f32,
    pub seed: u64,
    pub max_new_tokens: usize,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { temperature: 0.0, top_p: 1.0, seed: 0, max_new_tokens: 128 }
    }
}

/// Choose a token from one row of logits.
pub fn sample(logits: &[f32], s: &Sampling, rng: &mut Rng) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best })
            .0 as u32
    };
    if s.temperature <= 0.0 {
        return argmax();
    }
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut probs: Vec<(u32, f64)> =
        logits.iter().enumerate().map(|(i, &v)| (i as u32, (((v - max) / s.temperature) as f64).exp())).collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.iter_mut().for_each(|p| p.1 /= total);
    if s.top_p < 1.0 {
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut acc = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            acc += p.1;
            if acc >= s.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        let kept: f64 = probs.iter().map(|p| p.1).sum();
        probs.iter_mut().for_each(|p| p.1 /= kept);
    }
    let mut u = rng.uniform_f64();
    for &(id, p) in &probs {
        if u < p {
            return id;
        }
        u -= p;
    }
    probs.last().map_or_else(argmax, |p| p.0)
}

/// Generate up to `s.max_new_tokens` after `prompt`, calling `on_token` with each new id; stops
/// after any id in `stop`. Returns the new ids (including the stop id if one was produced).
pub fn generate(
    model: &Model,
    lora: Option<&LoraVars>,
    prompt: &[u32],
    s: &Sampling,
    stop: &[u32],
    on_token: &mut dyn FnMut(u32) -> Result<()>,
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(Error::Model("generation needs a non-empty prompt".into()));
    }
    let ctx = model.config.max_position_embeddings;
    let mut rng = Rng::new(s.seed);
    let mut cache = KvCache::default();
    let mut out = Vec::new();
    autograd::no_grad(|| {
        let mut input = prompt.to_vec();
        for _ in 0..s.max_new_tokens {
            if ctx > 0 && cache.len() + input.len() > ctx {
                break;
            }
            let logits = model.forward(&input, 1, lora, Some(&mut cache), false)?;
            let v = model.config.vocab_size;
            let all = logits.value().to_vec::<f32>()?;
            let last = &all[all.len() - v..];
            let next = sample(last, s, &mut rng);
            out.push(next);
            on_token(next)?;
            if stop.contains(&next) {
                break;
            }
            input = vec![next];
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_temperature_and_top_p() {
        let logits = [0.0f32, 3.0, 1.0, 2.9];
        let mut rng = Rng::new(1);
        assert_eq!(sample(&logits, &Sampling::default(), &mut rng), 1);
        // top-p small enough keeps only the best token, whatever the draw.
        let s = Sampling { temperature: 1.0, top_p: 0.3, ..Default::default() };
        assert!((0..50).all(|_| sample(&logits, &s, &mut rng) == 1));
        // Sampling at temperature 1 follows the softmax roughly.
        let s = Sampling { temperature: 1.0, top_p: 1.0, ..Default::default() };
        let mut counts = [0usize; 4];
        for _ in 0..20000 {
            counts[sample(&logits, &s, &mut rng) as usize] += 1;
        }
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        for (i, &c) in counts.iter().enumerate() {
            let p = (logits[i] as f64).exp() / z;
            assert!((c as f64 / 20000.0 - p).abs() < 0.015, "token {i}: {c} vs p {p}");
        }
        // The same seed gives the same stream.
        let draw = |seed| {
            let mut r = Rng::new(seed);
            (0..20).map(|_| sample(&logits, &s, &mut r)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
    }
}
