//! Loading through the Hugging Face cache layout (offline), and the f16 / bf16 dtypes.

use crate::common::*;
use candle_core::DType;
use gen_engine::{DTypeChoice, Error, ForwardCtx, Hub, LoadOptions, Source};
use hub_source::{HubRepo, RepoKind, layout};

/// A cache laid out as huggingface_hub writes it: refs/<rev> → commit, snapshots/<commit>/files.
fn fake_cache(files_from: &str) -> tempfile::TempDir {
    let cache = tempfile::tempdir().unwrap();
    let repo = HubRepo::model("tiny/llama").unwrap();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    layout::put_dir(cache.path(), &repo, commit, "", &fixture(files_from)).unwrap();
    layout::set_ref(cache.path(), &repo, "main", commit).unwrap();
    cache
}

#[test]
fn hub_id_resolves_from_the_offline_cache() {
    let cache = fake_cache("llama");
    let opts = LoadOptions {
        hub: Some(Hub::with_cache_dir(cache.path()).offline(true)),
        ..LoadOptions::default()
    };
    let src = Source::parse("tiny/llama@main", RepoKind::Model).unwrap();
    assert_eq!(src, Source::hub(HubRepo::model("tiny/llama").unwrap()));
    let m = gen_engine::load(&src, &opts).unwrap();
    let (r, refs) = reference("llama");
    let logits = m
        .model
        .forward(
            ForwardCtx::new(&ids_tensor(&r.input_ids)).with_mask(&mask_tensor(&r.attention_mask)),
        )
        .unwrap();
    assert!(max_diff_real(&logits, &refs["logits"], &r.attention_mask) < 1e-4);
    // Offline, a repo absent from the cache is the user's problem, named in the error.
    let absent = Source::parse("tiny/absent", RepoKind::Model).unwrap();
    let e = gen_engine::load(&absent, &opts).unwrap_err();
    assert!(matches!(e, Error::Hub { .. }), "{e}");
    assert!(e.is_bad_input(), "{e}");
    assert!(e.to_string().contains("tiny/absent"), "{e}");
    // One file of a repo is not a checkpoint.
    let one = Source::parse("tiny/llama:model.safetensors", RepoKind::Model).unwrap();
    let e = gen_engine::load(&one, &opts).unwrap_err();
    assert!(
        e.is_bad_input() && e.to_string().contains("one file"),
        "{e}"
    );
}

#[test]
fn half_precision_dtypes_run_close_to_f32() {
    let (r, refs) = reference("llama");
    let scale = refs["logits"]
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    for (choice, dtype, tol) in [
        (DTypeChoice::F16, DType::F16, 0.02),
        (DTypeChoice::BF16, DType::BF16, 0.08),
    ] {
        let opts = LoadOptions {
            dtype: choice,
            ..LoadOptions::default()
        };
        let m = gen_engine::load_dir(&fixture("llama"), &opts).unwrap();
        assert_eq!(m.model.info().dtype, dtype);
        let logits = m
            .model
            .forward(
                ForwardCtx::new(&ids_tensor(&r.input_ids))
                    .with_mask(&mask_tensor(&r.attention_mask)),
            )
            .unwrap();
        assert_eq!(logits.dtype(), dtype);
        let d = max_diff_real(&logits, &refs["logits"], &r.attention_mask);
        eprintln!("{dtype:?}: max diff {d:.3e} (logit scale {scale:.2})");
        assert!(d.is_finite() && d < tol * scale, "{dtype:?}: {d}");
    }
    // Auto on the CPU is f32, whatever the checkpoint says.
    let m = gen_engine::load_dir(&fixture("llama"), &LoadOptions::default()).unwrap();
    assert_eq!(m.model.info().dtype, DType::F32);
}
