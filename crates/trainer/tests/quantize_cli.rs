//! `trainer quantize` end to end on small synthetic models: a single file and a sharded
//! directory in, bitsandbytes' layout out (read back and compared with direct quantization),
//! other tensors copied byte for byte, and clear errors (NaN weight, bad flags) that leave no
//! partial output behind.

use std::path::{Path, PathBuf};

use nf4::{Nf4Weight, QuantConfig, QuantType};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use trainer::quantize::{run, QuantizeArgs};

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("quantize-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// name -> (dtype, shape, bytes)
type Tensors = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

fn model(nan: bool) -> Tensors {
    let mut rng = tensor::Rng::new(5);
    let mut q: Vec<f32> = (0..8 * 100).map(|_| rng.normal() * 0.05).collect();
    if nan {
        q[123] = f32::NAN;
    }
    let up: Vec<u8> = (0..6 * 33).flat_map(|_| tensor::bf16::from_f32(rng.normal()).to_bits().to_le_bytes()).collect();
    vec![
        ("model.layers.0.self_attn.q_proj.weight".into(), Dtype::F32, vec![8, 100], f32_bytes(&q)),
        ("model.layers.0.mlp.up_proj.weight".into(), Dtype::BF16, vec![6, 33], up),
        ("model.norm.weight".into(), Dtype::F32, vec![5], f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0])),
        ("model.ids".into(), Dtype::I64, vec![2], [7i64, -1].iter().flat_map(|x| x.to_le_bytes()).collect()),
    ]
}

fn write(path: &Path, t: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView<'_>)> =
        t.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn args(input: &Path, output: &Path) -> QuantizeArgs {
    QuantizeArgs { input: input.into(), output: output.into(), quant: "nf4".into(), blocksize: 64, double_quant: true }
}

fn check_output(out: &Path, src: &Tensors, cfg: &QuantConfig) {
    let bytes = std::fs::read(out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for (name, dtype, shape, data) in src {
        if name.ends_with("_proj.weight") {
            let back = Nf4Weight::from_bnb(name, &st).unwrap();
            let direct = match dtype {
                Dtype::F32 => {
                    let x: Vec<f32> =
                        data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                    Nf4Weight::quantize_slice(name, &x, shape, cfg, None).unwrap()
                }
                _ => {
                    let x: Vec<tensor::bf16> = data
                        .chunks_exact(2)
                        .map(|c| tensor::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                        .collect();
                    Nf4Weight::quantize_slice(name, &x, shape, cfg, None).unwrap()
                }
            };
            assert_eq!(back.packed(), direct.packed(), "{name}");
            assert_eq!(back.absmax(), direct.absmax(), "{name}");
            assert_eq!(back.shape(), &shape[..]);
            assert!(st.tensor(name).is_ok() && st.tensor(&format!("{name}.quant_map")).is_ok());
        } else {
            let t = st.tensor(name).unwrap();
            assert_eq!((t.dtype(), t.shape(), t.data()), (*dtype, &shape[..], &data[..]), "{name}");
        }
    }
}

#[test]
fn single_file_and_sharded_directory() {
    let dir = tmpdir("ok");
    let src = model(false);
    let input = dir.join("in.safetensors");
    write(&input, &src);
    let out = dir.join("out.safetensors");
    run(&args(&input, &out)).unwrap();
    check_output(&out, &src, &QuantConfig::default());

    // Sharded HF directory, FP4 without double quantization.
    let hf = dir.join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    write(&hf.join("model-00001-of-00002.safetensors"), &src[..2]);
    write(&hf.join("model-00002-of-00002.safetensors"), &src[2..]);
    let map: serde_json::Map<String, serde_json::Value> = src
        .iter()
        .enumerate()
        .map(|(i, t)| (t.0.clone(), format!("model-0000{}-of-00002.safetensors", 1 + i / 2).into()))
        .collect();
    std::fs::write(hf.join("model.safetensors.index.json"), serde_json::json!({ "weight_map": map }).to_string())
        .unwrap();
    let out2 = dir.join("out2.safetensors");
    let mut a = args(&hf, &out2);
    a.quant = "fp4".into();
    a.double_quant = false;
    run(&a).unwrap();
    let cfg = QuantConfig { quant_type: QuantType::Fp4, blocksize: 64, double_quant: false };
    check_output(&out2, &src, &cfg);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn errors_name_the_problem_and_leave_nothing_behind() {
    let dir = tmpdir("err");
    let input = dir.join("in.safetensors");
    write(&input, &model(true));
    let out = dir.join("out.safetensors");
    let e = run(&args(&input, &out)).unwrap_err();
    assert!(e.contains("model.layers.0.self_attn.q_proj.weight") && e.contains("index 123"), "{e}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "only the input remains");

    write(&input, &model(false));
    let mut a = args(&input, &out);
    a.blocksize = 100;
    assert!(run(&a).unwrap_err().contains("--blocksize"));
    let mut a = args(&input, &out);
    a.quant = "int4".into();
    assert!(run(&a).unwrap_err().contains("--quant 'int4'"));
    let e = run(&args(&dir.join("missing"), &out)).unwrap_err();
    assert!(e.contains("--input") && e.contains("missing"), "{e}");
    let e = run(&args(&dir, &out)).unwrap_err();
    assert!(e.contains("no model.safetensors"), "{e}");
    let e = run(&args(&input, &dir.join("nodir/out.safetensors"))).unwrap_err();
    assert!(e.contains("--output") && e.contains("does not exist"), "{e}");
    // An already-quantized file is refused.
    run(&args(&input, &out)).unwrap();
    let e = run(&args(&out, &dir.join("again.safetensors"))).unwrap_err();
    assert!(e.contains("already quantized") || e.contains("_proj.weight"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
