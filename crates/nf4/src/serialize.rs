//! bitsandbytes' serialized 4-bit layout, as found in Hugging Face 4-bit checkpoints: for a
//! weight `W`, the tensors `W` (u8 codes, shape `[(n+1)/2, 1]`), `W.absmax` (u8 codes when
//! double-quantized, else f32), `W.quant_map` (f32[16]), `W.nested_absmax` (f32),
//! `W.nested_quant_map` (f32[256]) and `W.quant_state.bitsandbytes__nf4` (or `__fp4`): the
//! UTF-8 bytes of `json.dumps` of `quant_type, blocksize, dtype, shape` and, when nested,
//! `nested_blocksize, nested_dtype, nested_offset`.
//!
//! Reference: bitsandbytes 0.50.2 `functional.py: QuantState.as_dict(packed=True)` and
//! `QuantState.from_dict`, `utils.py: pack_dict_to_tensor` (Python's `json.dumps` with its
//! default `", "`/`": "` separators and `repr` floats, reproduced byte for byte here).
//! Deliberately not here: the unpacked (non-`packed`) dict form, `quant_storage` other than u8,
//! and code tables other than the standard ones (a file with a custom `quant_map` is rejected).

use std::borrow::Cow;

use safetensors::tensor::{Dtype, SafeTensors, TensorView, View};
use serde_json::Value;
use tensor::DType;

use crate::codebook::{check_blocksize, dynamic_map, QuantType, QUANT_TYPES};
use crate::double_quant::NestedAbsmax;
use crate::weight::{Absmax, Nf4Weight};
use crate::{Error, Result};

/// One tensor of the serialized layout: full name, safetensors dtype, shape, little-endian bytes.
#[derive(Debug, PartialEq)]
pub struct BnbTensor {
    /// Full tensor name, e.g. `model.layers.0.self_attn.q_proj.weight.absmax`.
    pub name: String,
    /// Element type on disk.
    pub dtype: Dtype,
    /// Shape on disk.
    pub shape: Vec<usize>,
    /// Raw little-endian bytes.
    pub data: Vec<u8>,
}

impl View for &BnbTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// bitsandbytes' name for a float dtype (`str(torch.float32).strip("torch.")`).
pub fn bnb_dtype_name(dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("float32"),
        DType::BF16 => Ok("bfloat16"),
        DType::F16 => Ok("float16"),
        other => Err(Error::arg("dtype", format!("{} has no bitsandbytes name", other.as_str()))),
    }
}

fn dtype_from_bnb(key: &str, s: &str) -> Result<DType> {
    match s {
        "float32" => Ok(DType::F32),
        "bfloat16" => Ok(DType::BF16),
        "float16" => Ok(DType::F16),
        _ => Err(Error::state(key, format!("unsupported dtype \"{s}\" (expected float32, bfloat16 or float16)"))),
    }
}

/// Python's `repr(float)`: shortest round-trip digits, fixed notation for decimal exponents
/// -4..16, otherwise `d.ddde±XX`; integral values keep a trailing `.0`.
pub fn py_float_repr(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    let s = format!("{v:e}");
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if mant.starts_with('-') { "-" } else { "" };
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let e = exp as usize;
            if digits.len() <= e + 1 {
                format!("{sign}{digits}{}.0", "0".repeat(e + 1 - digits.len()))
            } else {
                format!("{sign}{}.{}", &digits[..=e], &digits[e + 1..])
            }
        } else {
            format!("{sign}0.{}{digits}", "0".repeat((-exp - 1) as usize))
        }
    } else {
        let m = if digits.len() > 1 { format!("{}.{}", &digits[..1], &digits[1..]) } else { digits };
        format!("{sign}{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    }
}

/// The quant-state JSON bitsandbytes writes, byte for byte. `nested`: `(nested_blocksize,
/// offset)` when double-quantized.
pub fn bnb_quant_state_json(
    quant_type: QuantType,
    blocksize: usize,
    dtype: DType,
    shape: &[usize],
    nested: Option<(usize, f32)>,
) -> Result<String> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut s = format!(
        "{{\"quant_type\": \"{}\", \"blocksize\": {blocksize}, \"dtype\": \"{}\", \"shape\": [{}]",
        quant_type.name(),
        bnb_dtype_name(dtype)?,
        dims.join(", ")
    );
    if let Some((nbs, offset)) = nested {
        s += &format!(
            ", \"nested_blocksize\": {nbs}, \"nested_dtype\": \"float32\", \"nested_offset\": {}",
            py_float_repr(offset as f64)
        );
    }
    s.push('}');
    Ok(s)
}

/// Names, dtypes and shapes of the tensors [`Nf4Weight::to_bnb_tensors`] writes for `key`, in
/// the same order, known before quantizing (the JSON length needs the offset when nested).
pub fn bnb_layout(
    key: &str,
    quant_type: QuantType,
    blocksize: usize,
    dtype: DType,
    shape: &[usize],
    nested: Option<(usize, f32)>,
) -> Result<Vec<(String, Dtype, Vec<usize>)>> {
    check_blocksize(blocksize)?;
    let n: usize = shape.iter().product();
    let nblocks = n.div_ceil(blocksize);
    let json = bnb_quant_state_json(quant_type, blocksize, dtype, shape, nested)?;
    let mut v = vec![(key.to_string(), Dtype::U8, vec![n.div_ceil(2), 1])];
    let absmax_dtype = if nested.is_some() { Dtype::U8 } else { Dtype::F32 };
    v.push((format!("{key}.absmax"), absmax_dtype, vec![nblocks]));
    v.push((format!("{key}.quant_map"), Dtype::F32, vec![16]));
    if let Some((nbs, _)) = nested {
        v.push((format!("{key}.nested_absmax"), Dtype::F32, vec![nblocks.div_ceil(nbs)]));
        v.push((format!("{key}.nested_quant_map"), Dtype::F32, vec![256]));
    }
    let state_key = format!("{key}.quant_state.{}", quant_type.traits().bnb_state_key);
    v.push((state_key, Dtype::U8, vec![json.len()]));
    Ok(v)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32_from_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

impl Nf4Weight {
    /// The quant-state JSON of this weight, exactly as bitsandbytes' `as_dict(packed=True)`.
    pub fn bnb_quant_state_json(&self) -> Result<String> {
        let nested = match self.absmax() {
            Absmax::Nested(n) => Some((n.nested_blocksize, n.offset)),
            Absmax::Plain(_) => None,
        };
        bnb_quant_state_json(self.quant_type(), self.blocksize(), self.dtype(), self.shape(), nested)
    }

    /// The tensors bitsandbytes writes for this weight under `key` (see the module docs).
    pub fn to_bnb_tensors(&self, key: &str) -> Result<Vec<BnbTensor>> {
        let nested = match self.absmax() {
            Absmax::Nested(n) => Some((n.nested_blocksize, n.offset)),
            Absmax::Plain(_) => None,
        };
        let layout = bnb_layout(key, self.quant_type(), self.blocksize(), self.dtype(), self.shape(), nested)?;
        let mut data: Vec<Vec<u8>> = vec![self.packed().to_vec()];
        match self.absmax() {
            Absmax::Plain(a) => data.push(f32_bytes(a)),
            Absmax::Nested(n) => data.push(n.codes.clone()),
        }
        data.push(f32_bytes(&self.quant_type().traits().code()));
        if let Absmax::Nested(n) = self.absmax() {
            data.push(f32_bytes(&n.nested_absmax));
            data.push(f32_bytes(&dynamic_map()));
        }
        data.push(self.bnb_quant_state_json()?.into_bytes());
        Ok(layout
            .into_iter()
            .zip(data)
            .map(|((name, dtype, shape), data)| BnbTensor { name, dtype, shape, data })
            .collect())
    }

    /// Read the weight stored under `key` from a safetensors file in bitsandbytes' layout.
    pub fn from_bnb(key: &str, st: &SafeTensors<'_>) -> Result<Self> {
        Self::from_bnb_with(key, |name| st.tensor(name).ok())
    }

    /// Read the weight stored under `key`, looking tensors up with `get` (for sharded or
    /// memory-mapped sources). Every inconsistency is an error naming `key`.
    pub fn from_bnb_with<'a>(key: &str, get: impl Fn(&str) -> Option<TensorView<'a>>) -> Result<Self> {
        let need = |suffix: &str| {
            let name = if suffix.is_empty() { key.to_string() } else { format!("{key}.{suffix}") };
            get(&name).ok_or_else(|| Error::state(key, format!("missing tensor '{name}'")))
        };
        let expect_dtype = |t: &TensorView<'_>, what: &str, dtype: Dtype| -> Result<()> {
            if t.dtype() != dtype {
                return Err(Error::state(key, format!("{what} has dtype {:?}, expected {dtype:?}", t.dtype())));
            }
            Ok(())
        };
        // The quant state: exactly one of the known `quant_state.bitsandbytes__*` keys.
        let found: Vec<(QuantType, TensorView<'a>)> = QUANT_TYPES
            .iter()
            .filter_map(|t| get(&format!("{key}.quant_state.{}", t.bnb_state_key)).map(|v| (t.quant_type, v)))
            .collect();
        let (key_type, state) = match found.len() {
            1 => found.into_iter().next().ok_or_else(|| Error::state(key, "missing quant state"))?,
            0 => return Err(Error::state(key, format!("missing '{key}.quant_state.bitsandbytes__nf4' (or __fp4)"))),
            _ => return Err(Error::state(key, "both nf4 and fp4 quant states present")),
        };
        expect_dtype(&state, "quant_state", Dtype::U8)?;
        let json: Value = serde_json::from_slice(state.data())
            .map_err(|e| Error::state(key, format!("quant state is not valid JSON: {e}")))?;
        let field = |f: &str| json.get(f).ok_or_else(|| Error::state(key, format!("quant state lacks \"{f}\"")));
        let as_usize = |f: &str| -> Result<usize> {
            field(f)?
                .as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| Error::state(key, format!("\"{f}\" is not a non-negative integer")))
        };
        let qt_name =
            field("quant_type")?.as_str().ok_or_else(|| Error::state(key, "\"quant_type\" is not a string"))?;
        let quant_type: QuantType = qt_name
            .parse()
            .map_err(|_| Error::state(key, format!("unknown quant_type \"{qt_name}\" (expected nf4 or fp4)")))?;
        if quant_type != key_type {
            return Err(Error::state(
                key,
                format!("quant_type \"{qt_name}\" does not match its key suffix __{}", key_type.name()),
            ));
        }
        let blocksize = as_usize("blocksize")?;
        let dtype_name = field("dtype")?.as_str().ok_or_else(|| Error::state(key, "\"dtype\" is not a string"))?;
        let dtype = dtype_from_bnb(key, dtype_name)?;
        let shape: Vec<usize> = field("shape")?
            .as_array()
            .ok_or_else(|| Error::state(key, "\"shape\" is not a list"))?
            .iter()
            .map(|d| d.as_u64().map(|v| v as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| Error::state(key, "\"shape\" holds a non-integer"))?;

        let packed = need("")?;
        expect_dtype(&packed, "packed codes", Dtype::U8)?;
        let quant_map = need("quant_map")?;
        expect_dtype(&quant_map, "quant_map", Dtype::F32)?;
        let code = quant_type.traits().code();
        if f32_from_bytes(quant_map.data()).iter().map(|v| v.to_bits()).ne(code.iter().map(|v| v.to_bits())) {
            return Err(Error::state(key, format!("quant_map is not the standard {quant_type} table")));
        }
        let absmax_t = need("absmax")?;
        let nested_present = get(&format!("{key}.nested_absmax")).is_some();
        let absmax = if nested_present {
            let nbs = as_usize("nested_blocksize")?;
            let nd = field("nested_dtype")?.as_str().unwrap_or("");
            if nd != "float32" {
                return Err(Error::state(key, format!("nested_dtype \"{nd}\" is not float32")));
            }
            let offset = field("nested_offset")?
                .as_f64()
                .ok_or_else(|| Error::state(key, "\"nested_offset\" is not a number"))?;
            expect_dtype(&absmax_t, "absmax (nested codes)", Dtype::U8)?;
            let nested = need("nested_absmax")?;
            expect_dtype(&nested, "nested_absmax", Dtype::F32)?;
            let nmap = need("nested_quant_map")?;
            expect_dtype(&nmap, "nested_quant_map", Dtype::F32)?;
            let dynm = dynamic_map();
            if f32_from_bytes(nmap.data()).iter().map(|v| v.to_bits()).ne(dynm.iter().map(|v| v.to_bits())) {
                return Err(Error::state(key, "nested_quant_map is not the standard dynamic map"));
            }
            Absmax::Nested(NestedAbsmax {
                codes: absmax_t.data().to_vec(),
                nested_absmax: f32_from_bytes(nested.data()),
                offset: offset as f32,
                nested_blocksize: nbs,
            })
        } else {
            if json.get("nested_offset").is_some() {
                return Err(Error::state(key, "quant state is nested but 'nested_absmax' is missing"));
            }
            expect_dtype(&absmax_t, "absmax", Dtype::F32)?;
            Absmax::Plain(f32_from_bytes(absmax_t.data()))
        };
        Nf4Weight::from_parts(key, quant_type, blocksize, shape, dtype, packed.data().to_vec(), absmax)
    }
}
