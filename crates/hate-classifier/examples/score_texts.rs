//! Score texts with the hate-speech classifier and print `score  toxic  text` per line.
//!
//! ```text
//! cargo run --release -p hate-classifier --example score_texts -- [--model DIR|HUB] [TEXT ...]
//! ```
//! Without texts it reads one text per line from stdin. The model defaults to
//! `facebook/roberta-hate-speech-dynabench-r4-target` (from the Hugging Face cache; set
//! `HF_HUB_OFFLINE=1` to forbid downloads). Try it offline on the tiny test checkpoint:
//! `--model tests/fixtures/classifier/vocab-merges "You are a stupid idiot." "Hello world"`.

use hate_classifier::HateClassifier;
use std::io::BufRead;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut model = hate_classifier::DEFAULT_MODEL.to_string();
    if let Some(i) = args.iter().position(|a| a == "--model") {
        if i + 1 >= args.len() {
            return Err("--model needs a directory or hub id".into());
        }
        model = args.remove(i + 1);
        args.remove(i);
    }
    let texts = if args.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<Vec<_>, _>>()?
    } else {
        args
    };
    let clf = HateClassifier::from_pretrained(&model)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let t0 = std::time::Instant::now();
    let scores = clf.score(&refs)?;
    for (t, s) in texts.iter().zip(&scores) {
        println!("{s:.6}  {:<5}  {t}", clf.is_toxic(*s));
    }
    eprintln!(
        "{} texts in {:.2?} ({}; label `{}`, threshold {})",
        texts.len(),
        t0.elapsed(),
        clf.origin().display(),
        clf.label(),
        clf.threshold()
    );
    Ok(())
}
