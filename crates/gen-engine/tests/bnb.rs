//! bitsandbytes 4-bit checkpoints (fixtures from `tools/fixtures/fx_bnb.py`: the tiny f32 Llama
//! of `tests/fixtures/lora/llama` quantized by transformers + bitsandbytes on the CPU and saved
//! with `save_pretrained`; references from transformers + bitsandbytes on the CPU): NF4 with
//! double quantization, NF4, FP4. The layers stay packed; logits of a left-padded batch within
//! 1e-4 at real positions, greedy continuations identical, dequantized weights equal to
//! bitsandbytes' `dequantize_4bit`; a malformed quant state is an error naming the tensor.

use crate::common::{Reference, check_against_reference};
use candle_core::{DType, Device, Tensor};
use gen_engine::quant::Quant4Type;
use gen_engine::weights::{Checkpoint, Weights};
use gen_engine::{GenerateParams, Generator, LinearFactory, LoadOptions, LoraPlan};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/bnb"
    ))
    .join(name)
}

fn reference(name: &str) -> (Reference, HashMap<String, Tensor>) {
    let dir = fixture(name);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    v["completions"] = serde_json::json!([]);
    let r: Reference = serde_json::from_value(v).unwrap();
    let t =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    (r, t)
}

const MODULES: [&str; 2] = [
    "model.layers.0.self_attn.q_proj",
    "model.layers.1.mlp.down_proj",
];

fn layer(dir: &Path, module: &str, dims: (usize, usize), at_load: bool) -> gen_engine::LoraLinear {
    let ck = Arc::new(Checkpoint::open_dir(dir).unwrap());
    let vb = Weights::new(ck, DType::F32, &Device::Cpu);
    let f = LinearFactory::new(LoraPlan::None)
        .unwrap()
        .dequantize_4bit_at_load(at_load);
    let mut vb = vb.clone();
    for part in module.split('.') {
        vb = vb.pp(part);
    }
    f.linear(&vb, dims.1, dims.0, false).unwrap()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn check(name: &str, quant: Quant4Type, double_quant: bool) {
    let dir = fixture(name);
    let (r, refs) = reference(name);

    // The layers keep bitsandbytes' packed form and dequantize as bitsandbytes does.
    for (module, dims) in MODULES.iter().zip([(64, 64), (64, 128)]) {
        let l = layer(&dir, module, dims, false);
        let q = l.bnb4().expect("a 4-bit layer");
        assert_eq!(q.quant_type(), quant, "{name}");
        assert_eq!(q.double_quant(), double_quant, "{name}");
        assert_eq!((q.blocksize(), q.dims()), (64, dims), "{name}");
        let n = dims.0 * dims.1;
        // Codes n/2 bytes, absmax n/64 bytes (u8, padded to whole nested blocks of 256, with
        // one f32 scale per nested block and the 256-entry f32 nested table) or 4·n/64 (f32),
        // plus the 2 KiB lookup table: about a half byte per weight.
        let nested_blocks = (n / 64).div_ceil(256);
        let scales = if double_quant {
            256 * nested_blocks + 4 * nested_blocks + 1024
        } else {
            4 * n / 64
        };
        assert_eq!(q.resident_bytes(), n / 2 + scales + 2048, "{name} {module}");
        let want = &refs[&format!("dequant.{module}")];
        let got = l.weight().unwrap();
        let d = max_abs(&got, want);
        assert_eq!(d, 0.0, "{name} {module}: dequantized weight differs by {d}");
        // Dequantized at load: the same weight, stored plain.
        let plain = layer(&dir, module, dims, true);
        assert!(plain.bnb4().is_none());
        assert_eq!(max_abs(&plain.weight().unwrap(), want), 0.0);
    }

    let m = gen_engine::load_dir(&dir, &LoadOptions::default()).unwrap();
    let params = GenerateParams::new().max_new_tokens(r.max_new_tokens);
    let g = Generator::new(m.model.as_ref(), &m.tokenizer, &r.eos_token_ids, params).unwrap();
    check_against_reference(
        name,
        "transformers+bitsandbytes",
        m.model.as_ref(),
        &g,
        &r,
        &refs,
    );
}

#[test]
fn nf4_double_quant() {
    check("nf4-dq", Quant4Type::Nf4, true);
}

#[test]
fn nf4() {
    check("nf4", Quant4Type::Nf4, false);
}

#[test]
fn fp4() {
    check("fp4", Quant4Type::Fp4, false);
}

/// A raw tensor: dtype, shape, bytes.
type Raw = (safetensors::Dtype, Vec<usize>, Vec<u8>);

/// A copy of a fixture with some tensors of `model.safetensors` replaced (or removed: `None`).
fn doctored(name: &str, edits: &[(&str, Option<Raw>)]) -> tempfile::TempDir {
    let src = fixture(name);
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (n, v) in st.tensors() {
        match edits.iter().find(|(e, _)| *e == n) {
            Some((_, None)) => {}
            Some((_, Some((d, s, b)))) => owned.push((n, *d, s.clone(), b.clone())),
            None => owned.push((n, v.dtype(), v.shape().to_vec(), v.data().to_vec())),
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let out = safetensors::tensor::serialize(views, None).unwrap();
    std::fs::write(tmp.path().join("model.safetensors"), out).unwrap();
    tmp
}

fn load_err(dir: &Path) -> String {
    gen_engine::load_dir(dir, &LoadOptions::default())
        .map(|_| ())
        .unwrap_err()
        .to_string()
}

fn state(json: &str) -> Option<Raw> {
    Some((
        safetensors::Dtype::U8,
        vec![json.len()],
        json.as_bytes().to_vec(),
    ))
}

#[test]
fn malformed_quant_state_is_an_error_naming_the_tensor() {
    let key = "model.layers.0.self_attn.q_proj.weight.quant_state.bitsandbytes__nf4";
    let cases = [
        ("not json", "invalid quant state JSON"),
        (
            r#"{"quant_type": "nf4", "blocksize": 48, "dtype": "float32", "shape": [64, 64], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.39}"#,
            "blocksize 48",
        ),
        (
            r#"{"quant_type": "fp4", "blocksize": 64, "dtype": "float32", "shape": [64, 64]}"#,
            "quant_type `fp4`",
        ),
        (
            r#"{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [64, 32], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.39}"#,
            "shape Some([64, 32])",
        ),
        (
            r#"{"quant_type": "nf4", "blocksize": 64, "dtype": "int8", "shape": [64, 64], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.39}"#,
            "dtype `int8`",
        ),
        (
            r#"{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [64, 64]}"#,
            "nested_blocksize",
        ),
    ];
    for (json, what) in cases {
        let tmp = doctored("nf4-dq", &[(key, state(json))]);
        let e = load_err(tmp.path());
        assert!(e.contains(key) && e.contains(what), "{json}: {e}");
    }
    // A missing or wrongly sized part names that part.
    let absmax = "model.layers.1.mlp.up_proj.weight.absmax";
    let tmp = doctored("nf4", &[(absmax, None)]);
    let e = load_err(tmp.path());
    assert!(e.contains(absmax) && e.contains("not found"), "{e}");
    let weight = "model.layers.1.mlp.up_proj.weight";
    let tmp = doctored(
        "nf4",
        &[(
            weight,
            Some((safetensors::Dtype::U8, vec![100, 1], vec![0; 100])),
        )],
    );
    let e = load_err(tmp.path());
    assert!(e.contains(weight) && e.contains("100 packed bytes"), "{e}");
    let tmp = doctored(
        "nf4",
        &[("model.layers.0.self_attn.q_proj.weight.quant_map", None)],
    );
    let e = load_err(tmp.path());
    assert!(
        e.contains("model.layers.0.self_attn.q_proj.weight.quant_map") && e.contains("missing"),
        "{e}"
    );
    let tmp = doctored(
        "fp4",
        &[(
            "model.layers.0.self_attn.k_proj.weight.quant_state.bitsandbytes__fp4",
            None,
        )],
    );
    let e = load_err(tmp.path());
    assert!(
        e.contains("model.layers.0.self_attn.k_proj.weight.quant_state.bitsandbytes__nf4")
            && e.contains("missing"),
        "{e}"
    );
}
