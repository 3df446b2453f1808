//! The GGUF reader against files our writer makes: property round trips of metadata and tensors,
//! and hostile input (every truncation, random byte flips, absurd counts and sizes) that must give
//! `Err` or `Ok`, never a panic or a huge allocation.

use llama::gguf::{dequantize, quantize, GgmlType, GgufFile, GgufWriter, MetaValue};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

fn sample_writer() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.add_meta("general.architecture", MetaValue::String("llama".into()))
        .add_meta("general.alignment", MetaValue::U32(64))
        .add_meta("a.u8", MetaValue::U8(7))
        .add_meta("a.i8", MetaValue::I8(-7))
        .add_meta("a.u16", MetaValue::U16(65535))
        .add_meta("a.i16", MetaValue::I16(-300))
        .add_meta("a.i32", MetaValue::I32(-5))
        .add_meta("a.f32", MetaValue::F32(0.25))
        .add_meta("a.bool", MetaValue::Bool(true))
        .add_meta("a.u64", MetaValue::U64(u64::MAX))
        .add_meta("a.i64", MetaValue::I64(i64::MIN))
        .add_meta("a.f64", MetaValue::F64(-1e300))
        .add_meta(
            "a.strs",
            MetaValue::Array(8, vec![MetaValue::String("x y".into()), MetaValue::String(String::new())]),
        )
        .add_meta(
            "a.nested",
            MetaValue::Array(9, vec![MetaValue::Array(5, vec![MetaValue::I32(1), MetaValue::I32(2)])]),
        );
    let x: Vec<f32> = (0..64 * 3).map(|i| ((i * 7919) % 113) as f32 / 50.0 - 1.1).collect();
    w.add_tensor("w.q4_1", &[3, 64], &x, GgmlType::Q4_1).unwrap();
    w.add_tensor("w.q8_0", &[6, 32], &x, GgmlType::Q8_0).unwrap();
    w.add_tensor("w.f16", &[192], &x, GgmlType::F16).unwrap();
    w.add_tensor("w.f32", &[2, 2, 48], &x, GgmlType::F32).unwrap();
    w
}

#[test]
fn sample_file_round_trips() {
    let w = sample_writer();
    let g = GgufFile::from_bytes(w.to_bytes(), "sample.gguf").unwrap();
    assert_eq!(g.alignment, 64);
    assert_eq!(g.data_offset % 64, 0);
    assert_eq!(g.get("a.i64"), Some(&MetaValue::I64(i64::MIN)));
    assert_eq!(g.get("a.f64"), Some(&MetaValue::F64(-1e300)));
    assert_eq!(g.get_str_array("a.strs").unwrap(), vec!["x y", ""]);
    assert_eq!(g.get("a.nested").unwrap().as_array().unwrap()[0].as_array().unwrap().len(), 2);
    assert_eq!(g.get_usize("a.u16").unwrap(), 65535);
    assert!(g.get_usize("a.i8").is_err(), "negative is not a usize");
    let t = g.tensor_f32("w.q4_1").unwrap();
    assert_eq!(t.dims(), &[3, 64]);
    assert_eq!(g.tensor_info("w.q4_1").unwrap().ne, vec![64, 3], "ne is [in, out]");
    assert_eq!(g.tensor_f32("w.f32").unwrap().dims(), &[2, 2, 48]);
    for t in &g.tensors {
        assert_eq!(t.offset % 64, 0, "{} aligned", t.name);
    }
}

#[test]
fn unknown_type_is_an_error_naming_tensor_and_id() {
    let mut w = GgufWriter::new();
    w.add_raw("blk.0.attn_q.weight", vec![256, 1], GgmlType::Other(12), vec![0u8; 144]);
    let g = GgufFile::from_bytes(w.to_bytes(), "k.gguf").unwrap();
    let e = g.tensor_f32("blk.0.attn_q.weight").unwrap_err().to_string();
    assert!(e.contains("k.gguf") && e.contains("blk.0.attn_q.weight") && e.contains("12"), "{e}");
    let e = g.tensor_f32("nope").unwrap_err().to_string();
    assert!(e.contains("nope"), "{e}");
}

/// Header bytes by hand: magic, version, counts.
fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

#[test]
fn absurd_claims_are_refused_before_allocating() {
    // 2^60 array entries.
    let mut b = header(0, 1);
    put_str(&mut b, "tokens");
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&(1u64 << 60).to_le_bytes());
    let e = GgufFile::from_bytes(b, "arr.gguf").unwrap_err().to_string();
    assert!(e.contains("arr.gguf") && e.contains("cannot fit"), "{e}");

    // A 2^62-byte string length.
    let mut b = header(0, 1);
    b.extend_from_slice(&(1u64 << 62).to_le_bytes());
    b.resize(b.len() + 64, b'a');
    let e = GgufFile::from_bytes(b, "s.gguf").unwrap_err().to_string();
    assert!(e.contains("truncated") && e.contains("metadata key"), "{e}");

    // 2^50 tensors / kv entries in a tiny file.
    assert!(GgufFile::from_bytes(header(1 << 50, 0), "t.gguf").is_err());
    assert!(GgufFile::from_bytes(header(0, u64::MAX), "kv.gguf").is_err());

    // A 1 TB F32 tensor in a small file.
    let mut b = header(1, 0);
    put_str(&mut b, "big");
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&(1u64 << 18).to_le_bytes());
    b.extend_from_slice(&(1u64 << 20).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.resize(b.len() + 64, 0);
    let e = GgufFile::from_bytes(b, "tb.gguf").unwrap_err().to_string();
    assert!(e.contains("big") && e.contains("past the end"), "{e}");

    // Dimensions whose product overflows u64.
    let mut b = header(1, 0);
    put_str(&mut b, "ovf");
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&u64::MAX.to_le_bytes());
    b.extend_from_slice(&3u64.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.resize(b.len() + 64, 0);
    let e = GgufFile::from_bytes(b, "o.gguf").unwrap_err().to_string();
    assert!(e.contains("ovf") && e.contains("overflow"), "{e}");

    // Arrays nested past the depth limit.
    let mut b = header(0, 1);
    put_str(&mut b, "deep");
    b.extend_from_slice(&9u32.to_le_bytes());
    for _ in 0..100 {
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
    }
    b.resize(b.len() + 64, 0);
    assert!(GgufFile::from_bytes(b, "d.gguf").unwrap_err().to_string().contains("nested"));
}

#[test]
fn bad_magic_version_alignment_and_offsets() {
    let good = sample_writer().to_bytes();
    let mut b = good.clone();
    b[0] = b'X';
    assert!(GgufFile::from_bytes(b, "m.gguf").unwrap_err().to_string().contains("not a GGUF file"));
    let mut b = good.clone();
    b[4] = 9;
    assert!(GgufFile::from_bytes(b, "v.gguf").unwrap_err().to_string().contains("version"));
    let mut w = GgufWriter::new();
    w.add_meta("general.alignment", MetaValue::U32(48));
    assert!(GgufFile::from_bytes(w.to_bytes(), "a.gguf").unwrap_err().to_string().contains("general.alignment"));
    assert!(GgufFile::from_bytes(Vec::new(), "empty.gguf").unwrap_err().to_string().contains("empty.gguf"));
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let bytes = sample_writer().to_bytes();
    let full = GgufFile::from_bytes(bytes.clone(), "full.gguf").unwrap();
    let last_end = full.tensors.iter().map(|t| t.offset + t.nbytes.unwrap()).max().unwrap() as usize;
    for cut in 0..bytes.len() {
        let r = GgufFile::from_bytes(bytes[..cut].to_vec(), "cut.gguf");
        if cut < last_end {
            assert!(r.is_err(), "truncated at {cut} of {} must fail", bytes.len());
        }
    }
}

#[test]
fn random_byte_flips_never_panic() {
    let bytes = sample_writer().to_bytes();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..3000 {
        let mut b = bytes.clone();
        for _ in 0..rng.gen_range(1..4) {
            let i = rng.gen_range(0..b.len());
            b[i] = rng.gen();
        }
        if let Ok(g) = GgufFile::from_bytes(b, "flip.gguf") {
            // Reading every tensor must also be Ok or Err, never a panic.
            for t in g.tensors.clone() {
                let _ = g.tensor_f32(&t.name);
            }
        }
    }
}

fn ty_strategy() -> impl Strategy<Value = GgmlType> {
    prop_oneof![
        Just(GgmlType::F32),
        Just(GgmlType::F16),
        Just(GgmlType::BF16),
        Just(GgmlType::Q8_0),
        Just(GgmlType::Q4_0),
        Just(GgmlType::Q4_1)
    ]
}

fn meta_strategy() -> impl Strategy<Value = MetaValue> {
    let leaf = prop_oneof![
        any::<u8>().prop_map(MetaValue::U8),
        any::<i16>().prop_map(MetaValue::I16),
        any::<u32>().prop_map(MetaValue::U32),
        any::<i64>().prop_map(MetaValue::I64),
        (-1e6f64..1e6).prop_map(MetaValue::F64),
        (-1e6f32..1e6).prop_map(MetaValue::F32),
        any::<bool>().prop_map(MetaValue::Bool),
        "[a-z ]{0,12}".prop_map(MetaValue::String),
    ];
    prop_oneof![
        leaf,
        prop::collection::vec(any::<i32>().prop_map(MetaValue::I32), 0..20).prop_map(|v| MetaValue::Array(5, v)),
        prop::collection::vec("[a-z]{0,5}".prop_map(MetaValue::String), 0..20).prop_map(|v| MetaValue::Array(8, v)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_written_file_reads_back(
        meta in prop::collection::vec(meta_strategy(), 0..6),
        tensors in prop::collection::vec((ty_strategy(), 1usize..4, 1usize..3, any::<u64>()), 0..5),
        align_pow in 3u32..8,
    ) {
        let mut w = GgufWriter::new();
        w.add_meta("general.alignment", MetaValue::U32(1 << align_pow));
        for (i, v) in meta.iter().enumerate() {
            w.add_meta(format!("k{i}"), v.clone());
        }
        let mut expect = Vec::new();
        for (i, (ty, rows, blocks, seed)) in tensors.iter().enumerate() {
            let cols = blocks * 32;
            let mut rng = rand::rngs::StdRng::seed_from_u64(*seed);
            let x: Vec<f32> = (0..rows * cols).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
            w.add_tensor(format!("t{i}"), &[*rows, cols], &x, *ty).unwrap();
            // The file holds exactly what the quantizer produced.
            let mut y = vec![0f32; x.len()];
            dequantize(*ty, &quantize(*ty, &x).unwrap(), &mut y).unwrap();
            expect.push((format!("t{i}"), vec![*rows, cols], y));
        }
        let g = GgufFile::from_bytes(w.to_bytes(), "prop.gguf").unwrap();
        prop_assert_eq!(g.alignment, 1u64 << align_pow);
        for (i, v) in meta.iter().enumerate() {
            prop_assert_eq!(g.get(&format!("k{i}")), Some(v));
        }
        for (name, shape, y) in expect {
            let t = g.tensor_f32(&name).unwrap();
            prop_assert_eq!(t.dims(), shape.as_slice());
            prop_assert_eq!(t.as_slice::<f32>().unwrap(), y.as_slice());
        }
    }
}
