//! Completes prompts through one or more OpenAI-compatible servers and prints JSON lines.
//!
//! ```text
//! cargo run -p remote-gen --example complete -- \
//!     --endpoint http://127.0.0.1:8080/v1 [--endpoint URL2 …] --served-model NAME \
//!     [--max-in-flight N] [--server-kind auto|llamacpp|vllm|tgi|openai] [--max-new-tokens N] \
//!     [--api-key-env VAR] PROMPT…
//! ```
//!
//! Prints the engine description, then one `{"index", "text", "token_ids", "finish_reason"}`
//! line per prompt, then the throughput on stderr.

use engine_api::TextGenerator;
use remote_gen::{RemoteGenerator, RemoteParams};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut params = RemoteParams::new();
    let mut prompts = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--endpoint" => params = params.endpoint(value()?),
            "--served-model" => params = params.served_model(value()?),
            "--max-in-flight" => params = params.max_in_flight(value()?.parse()?),
            "--server-kind" => params = params.server_kind(value()?.parse()?),
            "--max-new-tokens" => params = params.max_new_tokens(value()?.parse()?),
            "--api-key-env" => params = params.api_key(std::env::var(value()?).ok()),
            _ => prompts.push(a),
        }
    }
    let generator = RemoteGenerator::connect(params)?;
    println!("{}", serde_json::to_string(&generator.describe())?);
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let start = Instant::now();
    let out = generator.complete(&refs, &mut |_| {})?;
    let secs = start.elapsed().as_secs_f64();
    for (i, c) in out.iter().enumerate() {
        println!(
            "{}",
            serde_json::json!({"index": i, "text": c.text, "token_ids": c.token_ids,
                               "finish_reason": c.finish_reason})
        );
    }
    eprintln!(
        "{} prompts in {secs:.2} s ({:.2}/s)",
        out.len(),
        out.len() as f64 / secs
    );
    Ok(())
}
