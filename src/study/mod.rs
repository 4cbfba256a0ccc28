//! The study file: one TOML document that describes a whole toxicity study.
//!
//! A study names its prompt sources, the models (grouped by family, each with a role), the
//! fine-tune recipe for the models it trains itself, the classifier, the generation and sampler
//! settings, and the comparisons (pairs of baseline and candidate models). [`Study::load`] parses
//! and validates it before any work starts: unknown keys, wrong types, a model listed twice, a
//! comparison naming a model that is not defined or an output directory that cannot be written are
//! errors that name the file, line and column.
//!
//! Relative paths in a study file are resolved against the directory that holds the file, so a
//! study runs the same from any working directory.
//!
//! ```
//! let text = r#"
//! [prompts]
//! rtp = { path = "rtp.jsonl" }
//! ceb = { path = "ceb" }
//!
//! [classifier]
//! path = "classifier"
//!
//! [[family]]
//! name = "tiny"
//! models = [
//!   { name = "base", role = "base", path = "base" },
//!   { name = "chat", role = "instruct", path = "chat" },
//! ]
//!
//! [[comparison]]
//! id = "comparison1"
//! title = "Base vs instruction-tuned"
//! pairs = [["base", "chat"]]
//! "#;
//! let study = toxdrift::study::Study::from_str(text, std::path::Path::new("/tmp/study.toml"))?;
//! assert_eq!(study.models().count(), 2);
//! assert_eq!(study.generation.max_new_tokens, 50);
//! assert_eq!(study.finetune.lora.r, 16);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod defaults;
mod model;
mod paths;
mod schema;
mod validate;

pub use defaults::DEFAULT_MAX_IN_FLIGHT;
pub use model::*;

use crate::error::{Error, Result};
use paths::absolutize;
use std::path::Path;

impl Study {
    /// Reads, parses and validates a study file; also checks that the output directory (the
    /// file's `out`, or `out_override`) can be written, creating it if needed.
    pub fn load(file: &Path, out_override: Option<&Path>) -> Result<Study> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound
                || e.kind() == std::io::ErrorKind::InvalidData
            {
                Error::BadInput(format!(
                    "{}: cannot read the study file: {e}",
                    file.display()
                ))
            } else {
                Error::io(file, e)
            }
        })?;
        let mut study = Study::from_str(&text, file)?;
        if let Some(out) = out_override {
            study.out = absolutize(out, &std::env::current_dir().unwrap_or_default());
        }
        study.check_local_paths()?;
        check_writable(&study.out)?;
        Ok(study)
    }

    /// Parses and validates a study from text; `file` names it in errors and anchors relative
    /// paths. Does not touch the file system (see [`Study::load`] for the checks that do),
    /// except to list the checkpoint directory of a `[[drift]]` section.
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(text: &str, file: &Path) -> Result<Study> {
        validate::parse(text, file)
    }
}

/// Creates `dir` if needed and checks that a file can be written in it.
pub fn check_writable(dir: &Path) -> Result<()> {
    let fail = |e: std::io::Error| {
        Error::BadInput(format!(
            "output directory {} cannot be written: {e}",
            dir.display()
        ))
    };
    if dir.exists() && !dir.is_dir() {
        return Err(Error::BadInput(format!(
            "output directory {} exists and is not a directory",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(format!(".toxdrift-write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"probe").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const MIN: &str = r#"
[prompts]
rtp = { path = "rtp.jsonl" }
ceb = { hub = "Song-SW/CEB" }

[classifier]
hub = "facebook/roberta-hate-speech-dynabench-r4-target"

[[family]]
name = "f"
models = [
  { name = "a", role = "base", hub = "org/a" },
  { name = "b", role = "instruct", hub = "org/b", revision = "v1" },
]

[[comparison]]
id = "c1"
pairs = [["a", "b"]]
"#;

    fn parse(text: &str) -> Result<Study> {
        Study::from_str(text, Path::new("/s/study.toml"))
    }

    #[test]
    fn minimal_study_gets_the_paper_defaults() {
        let s = parse(MIN).unwrap();
        assert_eq!(s.out, PathBuf::from("/s/runs/study"));
        assert_eq!(s.prompts.random, 1000);
        assert_eq!(s.prompts.severe, 1000);
        assert_eq!(s.prompts.per_axis, 100);
        assert_eq!(s.prompts.rtp, Source::Local("/s/rtp.jsonl".into()));
        assert_eq!(s.generation.batch_size, gen_engine::BatchSize::Fixed(16));
        // bf16 on a GPU, as the engine resolves `auto`; f32 on the CPU.
        assert_eq!(s.generation.dtype.resolve("cuda:0"), Dtype::Bf16);
        assert_eq!(s.generation.dtype.resolve("cpu"), Dtype::F32);
        assert_eq!(s.sampler.chains, 4);
        assert_eq!(s.finetune.train.adamw.lr, 2e-4);
        assert_eq!(s.finetune.train.grad_accum, 8);
        assert_eq!(s.classifier.threshold, 0.5);
        let b = s.model("b").unwrap();
        assert_eq!(
            b.source,
            ModelSource::Checkpoint {
                model: Source::hub(
                    hub_source::HubRepo::model("org/b")
                        .unwrap()
                        .with_revision("v1")
                        .unwrap()
                ),
                adapter: None
            }
        );
        assert_eq!(s.comparisons[0].title, "c1");
    }

    fn err(text: &str) -> String {
        let e = parse(text).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        e.to_string()
    }

    #[test]
    fn generation_batch_size_is_a_number_or_auto() {
        let with = |v: &str| {
            MIN.replace(
                "[[family]]",
                &format!("[generation]\nbatch_size = {v}\n\n[[family]]"),
            )
        };
        let s = parse(&with("\"auto\"")).unwrap();
        assert_eq!(s.generation.batch_size, gen_engine::BatchSize::Auto);
        let s = parse(&with("64")).unwrap();
        assert_eq!(s.generation.batch_size, gen_engine::BatchSize::Fixed(64));
        let e = err(&with("\"lots\""));
        assert!(e.starts_with("/s/study.toml:10:"), "{e}");
        assert!(e.contains("lots"), "{e}");
        let e = err(&with("0"));
        assert!(e.contains("generation.batch_size"), "{e}");
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let text = MIN.replace("[classifier]\n", "[classifier]\nbatchsize = 3\n");
        let e = err(&text);
        assert!(e.starts_with("/s/study.toml:7:1:"), "{e}");
        assert!(e.contains("batchsize"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_line() {
        let text = MIN.replace(
            "[[family]]",
            "[generation]\nmax_new_tokens = \"fifty\"\n\n[[family]]",
        );
        let e = err(&text);
        assert!(e.starts_with("/s/study.toml:10:"), "{e}");
    }

    #[test]
    fn model_listed_twice() {
        let text = MIN.replace(
            "revision = \"v1\" },\n",
            "revision = \"v1\" },\n  { name = \"a\", role = \"community\", hub = \"org/c\" },\n",
        );
        let e = err(&text);
        assert!(
            e.contains("model `a` is listed twice (first at line 12)"),
            "{e}"
        );
        assert!(e.starts_with("/s/study.toml:14:"), "{e}");
        let text = MIN.replace(
            "revision = \"v1\" },\n",
            "revision = \"v1\" },\n  { name = \"c\", role = \"community\", hub = \"org/a\" },\n",
        );
        let e = err(&text);
        assert!(e.contains("same weights as `a`"), "{e}");
    }

    #[test]
    fn comparison_with_an_undefined_model() {
        let text = MIN.replace("[[\"a\", \"b\"]]", "[[\"a\", \"zz\"]]");
        let e = err(&text);
        assert!(e.starts_with("/s/study.toml:18:"), "{e}");
        assert!(
            e.contains("`zz` is not a model of this study (defined: a, b)"),
            "{e}"
        );
    }

    #[test]
    fn finetune_needs_a_defined_checkpoint_and_a_recipe() {
        let text = MIN.replace(
            "revision = \"v1\" },\n",
            "revision = \"v1\" },\n  { name = \"d\", role = \"dolly-tuned\", finetune_from = \"b\" },\n",
        );
        let e = err(&text);
        assert!(e.contains("no [finetune] table"), "{e}");
        let with_recipe =
            format!("{text}\n[finetune]\ndata = {{ path = \"dolly.jsonl\" }}\nmax_steps = 2\n");
        let s = parse(&with_recipe).unwrap();
        assert_eq!(
            s.model("d").unwrap().source,
            ModelSource::FinetuneFrom("b".into())
        );
        assert_eq!(s.finetune.train.max_steps, Some(2));
        let e = err(&with_recipe.replace("finetune_from = \"b\"", "finetune_from = \"q\""));
        assert!(e.contains("`q` is not a model"), "{e}");
    }

    #[test]
    fn bad_hub_id_and_missing_source() {
        let e = err(&MIN.replace("org/a", "georgesung/llama2 7b chat uncensored"));
        assert!(e.contains("not a valid repository id"), "{e}");
        let e = err(&MIN.replace(", hub = \"org/a\"", ""));
        assert!(e.contains("needs a `path` (local) or a `hub` id"), "{e}");
    }

    #[test]
    fn unwritable_output_dir() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x");
        std::fs::write(&file, b"").unwrap();
        let e = check_writable(&file).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("not a directory"), "{e}");
        let e = check_writable(&file.join("sub")).unwrap_err();
        assert!(e.to_string().contains("cannot be written"), "{e}");
    }
}
