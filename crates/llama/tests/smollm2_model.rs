//! The real default model, SmolLM2-135M-Instruct from its pinned GGUF (fetched by
//! scripts/fetch-assets.sh, which CI runs first): the golden logits and the greedy chat answer of
//! ../shared/ASSETS.md, computed by our forward pass from the f32 weights dequantized from the GGUF.

use llama::generate::{generate, Sampling};
use llama::{apply_chat_template, ChatMessage, ChatTemplate, Model, WeightSource};

fn model_path() -> std::path::PathBuf {
    llama::assets::default_model_path().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn golden_logits_after_the_capital_of_france() {
    let src = WeightSource::open(model_path()).unwrap();
    let tok = src.tokenizer().unwrap();
    let model = Model::load(&src, None).unwrap();
    let ids = tok.encode("The capital of France is", false).unwrap();
    assert_eq!(ids, vec![504, 3575, 282, 4649, 314]);
    let labels: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
    let logits = autograd::no_grad(|| model.forward(&ids, 1, None, None, false)).unwrap();
    let v = model.config.vocab_size;
    let all = logits.value().to_vec::<f32>().unwrap();
    let last = &all[4 * v..];
    // ASSETS.md golden values (transformers on the same dequantized weights); tolerance 0.02.
    for (id, want) in [(7042usize, 17.371f32), (260, 14.889), (4528, 13.245)] {
        assert!((last[id] - want).abs() <= 0.02, "logit of {id}: {} vs {want}", last[id]);
    }
    let best = last.iter().enumerate().fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0;
    assert_eq!(best, 7042, "` Paris` is the argmax");
    let nll =
        autograd::no_grad(|| model.loss(&ids, &labels, 1, None, false, None)).unwrap().value().to_scalar().unwrap();
    assert!((nll - 3.6916).abs() <= 2e-3, "mean teacher-forced NLL {nll} vs 3.6916");
}

#[test]
fn greedy_chat_answer() {
    let src = WeightSource::open(model_path()).unwrap();
    let tok = src.tokenizer().unwrap();
    let model = Model::load(&src, None).unwrap();
    let msgs = [ChatMessage { role: "user".into(), content: "What is the capital of France?".into() }];
    let prompt = apply_chat_template(&ChatTemplate::smollm2(), &msgs, true).unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    );
    let ids = tok.encode(&prompt, false).unwrap();
    let s = Sampling { max_new_tokens: 16, ..Sampling::default() };
    let mut streamed = Vec::new();
    let out = generate(&model, None, &ids, &s, &[2], &mut |t| {
        streamed.push(t);
        Ok(())
    })
    .unwrap();
    assert_eq!(out, streamed, "every token is streamed as it is produced");
    assert_eq!(tok.decode(&out, false).unwrap(), "The capital of France is Paris.<|im_end|>");
}
