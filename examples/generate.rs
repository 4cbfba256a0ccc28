//! Greedy continuations with gen-engine, as the study runs them (raw prompts, batches of 16,
//! left padding with pad = EOS, 50 new tokens at most, stop at EOS).
//!
//! ```text
//! cargo run --release --example generate -- [MODEL_DIR_OR_HUB_ID] [PROMPT ...]
//! ```
//! Without arguments it runs the tiny Llama parity fixture in `tests/fixtures/gen/llama`.

use toxdrift::gen_engine::{self, GenerateParams, LoadOptions, Source};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    toxdrift::threads::join_pool();
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gen/llama").to_string()
    });
    let mut prompts: Vec<String> = args.collect();
    if prompts.is_empty() {
        prompts = vec![
            "The tiny robot walked to the market".into(),
            "Hello".into(),
            "A quiet neighbour argued with the city council after the storm, and".into(),
        ];
    }
    let source = Source::parse(&model, hub_source::RepoKind::Model)?;
    let loaded = gen_engine::load(&source, &LoadOptions::default())?;
    let generator = loaded.generator(GenerateParams::new())?;
    let texts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let start = std::time::Instant::now();
    let out = generator.generate(&texts)?;
    let new_tokens: usize = out.iter().map(|g| g.token_ids.len()).sum();
    for (p, g) in prompts.iter().zip(&out) {
        println!("{p:?} -> {:?} [{}]", g.text, g.finish_reason.as_str());
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{new_tokens} new tokens in {secs:.2}s ({:.1} tokens/s)",
        new_tokens as f64 / secs
    );
    Ok(())
}
