//! Training data: reading the dataset formats of CLI.md, tokenizing them into examples with a loss
//! mask, and serving shuffled, padded batches with a resumable position.
//!
//! Formats, chosen by content: an Alpaca JSON array or JSONL of `{instruction, input, output}`
//! (QLoRA's Alpaca prompt, `qlora.py: ALPACA_PROMPT_DICT`; BOS + prompt as the source, response +
//! EOS as the target, loss on the target only unless `train_on_source`); JSONL of `{"text"}` (BOS +
//! text + EOS, loss everywhere); JSONL of `{"input_ids": [..]}` (taken as is, no BOS/EOS); plain
//! text (`.txt`: tokenized whole and cut into `seq_len` chunks).
//! Batches are right-padded with labels −100, so causal attention needs no padding mask.
//! Not here: packing of short examples together, streaming datasets larger than memory.

use std::path::Path;
use tensor::Rng;

/// Label value whose position carries no loss (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i32 = -100;

/// What the data pipeline needs from a tokenizer.
pub trait Encoder {
    /// Token ids of `text`, without special tokens added.
    fn encode(&self, text: &str) -> Result<Vec<u32>, String>;
    /// Beginning-of-sequence id.
    fn bos(&self) -> u32;
    /// End-of-sequence id.
    fn eos(&self) -> u32;
}

/// One tokenized training example: inputs and per-position labels (−100 where no loss).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub input_ids: Vec<u32>,
    pub labels: Vec<i32>,
}

impl Example {
    /// Positions that contribute to the loss after the next-token shift.
    pub fn target_count(&self) -> usize {
        self.labels.iter().skip(1).filter(|&&l| l != IGNORE_INDEX).count()
    }
}

/// QLoRA's Alpaca prompt for an instruction with an optional input.
pub fn alpaca_prompt(instruction: &str, input: &str) -> String {
    if input.is_empty() {
        format!(
            "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response: "
        )
    } else {
        format!(
            "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response: "
        )
    }
}

/// How to turn records into examples.
#[derive(Debug, Clone, Copy)]
pub struct DataOptions {
    /// Longest example in tokens; longer ones are cut at the end.
    pub seq_len: usize,
    /// Put loss on the prompt as well as on the response (Alpaca records only).
    pub train_on_source: bool,
}

/// Read and tokenize a dataset file. Errors name the file and the offending line or record.
pub fn load_examples(path: &Path, enc: &dyn Encoder, opts: DataOptions) -> Result<Vec<Example>, String> {
    if opts.seq_len < 2 {
        return Err(format!("--seq-len {} is too short: an example needs at least 2 tokens", opts.seq_len));
    }
    let name = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: cannot read dataset: {e}"))?;
    let is_txt = path.extension().is_some_and(|e| e == "txt");
    let trimmed = text.trim_start();
    let examples = if is_txt {
        text_chunks(&text, enc, opts.seq_len).map_err(|e| format!("{name}: {e}"))?
    } else if trimmed.starts_with('[') {
        let rows: Vec<serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| format!("{name}: not a valid JSON array: {e}"))?;
        rows.iter()
            .enumerate()
            .map(|(i, r)| record_example(r, enc, opts).map_err(|e| format!("{name}: record {i}: {e}")))
            .collect::<Result<Vec<_>, _>>()?
    } else if trimmed.starts_with('{') {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let r: serde_json::Value =
                serde_json::from_str(line).map_err(|e| format!("{name}: line {}: not valid JSON: {e}", i + 1))?;
            out.push(record_example(&r, enc, opts).map_err(|e| format!("{name}: line {}: {e}", i + 1))?);
        }
        out
    } else {
        return Err(format!(
            "{name}: unknown dataset format (expected a JSON array, JSONL of objects, or a .txt file)"
        ));
    };
    if examples.is_empty() {
        return Err(format!("{name}: the dataset has no examples"));
    }
    Ok(examples)
}

fn field<'a>(r: &'a serde_json::Value, key: &str) -> Result<Option<&'a str>, String> {
    match r.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("field '{key}' must be a string, got {other}")),
    }
}

fn record_example(r: &serde_json::Value, enc: &dyn Encoder, opts: DataOptions) -> Result<Example, String> {
    if !r.is_object() {
        return Err(format!("expected a JSON object, got {r}"));
    }
    if let Some(ids) = r.get("input_ids") {
        let ids: Vec<u32> = serde_json::from_value(ids.clone())
            .map_err(|e| format!("'input_ids' must be a list of non-negative integers: {e}"))?;
        if ids.len() < 2 {
            return Err("'input_ids' needs at least 2 tokens".into());
        }
        let ids: Vec<u32> = ids.into_iter().take(opts.seq_len).collect();
        let labels = ids.iter().map(|&t| t as i32).collect();
        return Ok(Example { input_ids: ids, labels });
    }
    if let Some(text) = field(r, "text")? {
        let mut ids = vec![enc.bos()];
        ids.extend(enc.encode(text)?);
        ids.push(enc.eos());
        ids.truncate(opts.seq_len);
        let labels = ids.iter().map(|&t| t as i32).collect();
        return Ok(Example { input_ids: ids, labels });
    }
    let instruction = field(r, "instruction")?.ok_or(
        "missing field 'instruction' (Alpaca records need instruction, input and output; or use {\"text\": ...})",
    )?;
    let output = field(r, "output")?.ok_or("missing field 'output'")?;
    let input = field(r, "input")?.unwrap_or("");
    let mut source = vec![enc.bos()];
    source.extend(enc.encode(&alpaca_prompt(instruction, input))?);
    let mut target = enc.encode(output)?;
    target.push(enc.eos());
    let mut labels: Vec<i32> = if opts.train_on_source {
        source.iter().map(|&t| t as i32).collect()
    } else {
        vec![IGNORE_INDEX; source.len()]
    };
    labels.extend(target.iter().map(|&t| t as i32));
    let mut ids = source;
    ids.extend(target);
    ids.truncate(opts.seq_len);
    labels.truncate(opts.seq_len);
    Ok(Example { input_ids: ids, labels })
}

fn text_chunks(text: &str, enc: &dyn Encoder, seq_len: usize) -> Result<Vec<Example>, String> {
    let ids = enc.encode(text)?;
    Ok(ids
        .chunks(seq_len)
        .filter(|c| c.len() >= 2)
        .map(|c| Example { input_ids: c.to_vec(), labels: c.iter().map(|&t| t as i32).collect() })
        .collect())
}

/// Hold out `eval_count` examples (chosen by `seed`) for evaluation; returns `(train, eval)`.
pub fn split(mut examples: Vec<Example>, eval_count: usize, seed: u64) -> (Vec<Example>, Vec<Example>) {
    let eval_count = eval_count.min(examples.len().saturating_sub(1));
    let mut order: Vec<usize> = (0..examples.len()).collect();
    Rng::new(seed ^ 0x5EED_E7A1).shuffle(&mut order);
    let mut is_eval = vec![false; examples.len()];
    for &i in &order[..eval_count] {
        is_eval[i] = true;
    }
    let mut train = Vec::with_capacity(examples.len() - eval_count);
    let mut eval = Vec::with_capacity(eval_count);
    for (ex, e) in examples.drain(..).zip(is_eval) {
        if e {
            eval.push(ex)
        } else {
            train.push(ex)
        }
    }
    (train, eval)
}

/// A padded batch: `(B, T)` ids and labels, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub batch: usize,
    pub seq: usize,
    pub input_ids: Vec<u32>,
    pub labels: Vec<i32>,
}

impl Batch {
    /// Right-pad `examples` to the longest (pad id `pad`, label −100).
    pub fn pad(examples: &[&Example], pad: u32) -> Batch {
        let seq = examples.iter().map(|e| e.input_ids.len()).max().unwrap_or(0);
        let mut input_ids = Vec::with_capacity(examples.len() * seq);
        let mut labels = Vec::with_capacity(examples.len() * seq);
        for e in examples {
            input_ids.extend(&e.input_ids);
            input_ids.extend(std::iter::repeat_n(pad, seq - e.input_ids.len()));
            labels.extend(&e.labels);
            labels.extend(std::iter::repeat_n(IGNORE_INDEX, seq - e.labels.len()));
        }
        Batch { batch: examples.len(), seq, input_ids, labels }
    }

    /// Number of positions with loss after the next-token shift.
    pub fn target_count(&self) -> usize {
        (0..self.batch)
            .map(|b| self.labels[b * self.seq + 1..(b + 1) * self.seq].iter().filter(|&&l| l != IGNORE_INDEX).count())
            .sum()
    }
}

/// Where a loader is in its stream: enough to resume exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataPosition {
    pub epoch: usize,
    pub index: usize,
}

/// Serves examples epoch after epoch, shuffled per epoch by `(seed, epoch)` when asked.
pub struct Loader {
    examples: Vec<Example>,
    shuffle: bool,
    seed: u64,
    order: Vec<usize>,
    pos: DataPosition,
}

impl Loader {
    /// A loader at the start of epoch 0.
    pub fn new(examples: Vec<Example>, shuffle: bool, seed: u64) -> Self {
        let mut l = Loader { examples, shuffle, seed, order: Vec::new(), pos: DataPosition { epoch: 0, index: 0 } };
        l.make_order();
        l
    }
    fn make_order(&mut self) {
        self.order = (0..self.examples.len()).collect();
        if self.shuffle {
            Rng::new(self.seed.wrapping_add(self.pos.epoch as u64).wrapping_mul(0x9E37_79B9)).shuffle(&mut self.order);
        }
    }
    /// Number of examples per epoch.
    pub fn len(&self) -> usize {
        self.examples.len()
    }
    /// True when there are no examples.
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }
    /// The current position.
    pub fn position(&self) -> DataPosition {
        self.pos
    }
    /// Jump to a saved position.
    pub fn seek(&mut self, pos: DataPosition) {
        self.pos = pos;
        self.make_order();
    }
    /// The next `n` examples, wrapping into the next epoch.
    pub fn next_examples(&mut self, n: usize) -> Vec<&Example> {
        let mut idx = Vec::with_capacity(n);
        for _ in 0..n {
            if self.pos.index >= self.order.len() {
                self.pos = DataPosition { epoch: self.pos.epoch + 1, index: 0 };
                self.make_order();
            }
            idx.push(self.order[self.pos.index]);
            self.pos.index += 1;
        }
        idx.into_iter().map(|i| &self.examples[i]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One token per byte, BOS 1, EOS 2.
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

    fn write(name: &str, body: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("qlora-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    const OPTS: DataOptions = DataOptions { seq_len: 4096, train_on_source: false };

    #[test]
    fn alpaca_masks_the_source() {
        let p = write("a.json", r#"[{"instruction": "Say hi", "input": "", "output": "hi"}]"#);
        let ex = &load_examples(&p, &Bytes, OPTS).unwrap()[0];
        let prompt = alpaca_prompt("Say hi", "");
        assert_eq!(ex.input_ids.len(), 1 + prompt.len() + 2 + 1);
        assert_eq!(ex.input_ids[0], 1);
        assert_eq!(*ex.input_ids.last().unwrap(), 2);
        let n_src = 1 + prompt.len();
        assert!(ex.labels[..n_src].iter().all(|&l| l == IGNORE_INDEX));
        assert_eq!(&ex.labels[n_src..], &[b'h' as i32 + 3, b'i' as i32 + 3, 2]);
        let all = load_examples(&p, &Bytes, DataOptions { train_on_source: true, ..OPTS }).unwrap();
        assert!(all[0].labels.iter().all(|&l| l != IGNORE_INDEX));
    }

    #[test]
    fn formats_by_content() {
        let p = write("t.jsonl", "{\"text\": \"ab\"}\n\n{\"text\": \"c\"}\n");
        let ex = load_examples(&p, &Bytes, OPTS).unwrap();
        assert_eq!(ex[0].input_ids, vec![1, b'a' as u32 + 3, b'b' as u32 + 3, 2]);
        assert_eq!(ex.len(), 2);
        let p = write("i.jsonl", "{\"input_ids\": [5, 6, 7]}\n");
        let ex = load_examples(&p, &Bytes, OPTS).unwrap();
        assert_eq!(ex[0].input_ids, vec![5, 6, 7]);
        assert_eq!(ex[0].labels, vec![5, 6, 7]);
        let p = write("x.txt", "abcdefghij");
        let ex = load_examples(&p, &Bytes, DataOptions { seq_len: 4, ..OPTS }).unwrap();
        assert_eq!(ex.iter().map(|e| e.input_ids.len()).collect::<Vec<_>>(), vec![4, 4, 2]);
        // a tail of 2+ tokens stays
    }

    #[test]
    fn bad_rows_name_the_record() {
        let p = write("bad.json", r#"[{"instruction": "x", "output": "y"}, {"instruction": "x"}]"#);
        let e = load_examples(&p, &Bytes, OPTS).unwrap_err();
        assert!(e.contains("record 1") && e.contains("output") && e.contains("bad.json"), "{e}");
        let p = write("bad.jsonl", "{\"text\": \"ok\"}\n{oops\n");
        let e = load_examples(&p, &Bytes, OPTS).unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let p = write("empty.json", "[]");
        assert!(load_examples(&p, &Bytes, OPTS).unwrap_err().contains("no examples"));
        let p = write("num.jsonl", "{\"text\": 5}\n");
        assert!(load_examples(&p, &Bytes, OPTS).unwrap_err().contains("must be a string"));
        let p = write("neg.jsonl", "{\"input_ids\": [1, -4]}\n");
        assert!(load_examples(&p, &Bytes, OPTS).is_err());
    }

    #[test]
    fn truncation_padding_and_counts() {
        let p = write("long.jsonl", "{\"text\": \"abcdefgh\"}\n{\"text\": \"a\"}\n");
        let ex = load_examples(&p, &Bytes, DataOptions { seq_len: 5, ..OPTS }).unwrap();
        assert_eq!(ex[0].input_ids.len(), 5);
        let b = Batch::pad(&[&ex[0], &ex[1]], 0);
        assert_eq!((b.batch, b.seq), (2, 5));
        assert_eq!(&b.input_ids[5..], &[1, b'a' as u32 + 3, 2, 0, 0]);
        assert_eq!(&b.labels[8..], &[IGNORE_INDEX, IGNORE_INDEX]);
        assert_eq!(b.target_count(), 4 + 2);
        assert_eq!(b.target_count(), ex[0].target_count() + ex[1].target_count());
    }

    #[test]
    fn loader_shuffles_resumes_and_splits() {
        let examples: Vec<Example> =
            (0..10u32).map(|i| Example { input_ids: vec![i, i], labels: vec![i as i32, i as i32] }).collect();
        let (train, eval) = split(examples.clone(), 3, 1);
        assert_eq!((train.len(), eval.len()), (7, 3));
        let mut a = Loader::new(examples.clone(), true, 9);
        let first: Vec<u32> = a.next_examples(25).iter().map(|e| e.input_ids[0]).collect();
        let mut epoch0 = first[..10].to_vec();
        epoch0.sort();
        assert_eq!(epoch0, (0..10).collect::<Vec<_>>(), "an epoch visits every example once");
        assert_ne!(&first[..10], &first[10..20], "epochs are shuffled differently");
        let mut b = Loader::new(examples.clone(), true, 9);
        b.next_examples(13);
        let pos = b.position();
        let mut c = Loader::new(examples, true, 9);
        c.seek(pos);
        let rest: Vec<u32> = c.next_examples(12).iter().map(|e| e.input_ids[0]).collect();
        assert_eq!(&rest[..], &first[13..], "seeking to a saved position resumes the same stream");
    }
}
