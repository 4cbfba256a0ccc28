//! A synthetic RealToxicityPrompts file for the benchmark and the peak-memory probe: the real
//! schema and key order, row sizes like the real file (~800 bytes), about 20% of prompts with
//! `severe_toxicity` above 0.75 and a few nulls. Generated at run time, never committed.

use std::io::Write;
use std::path::Path;
use toxprompts::rng::SplitMix64;

const WORDS: &[&str] = &[
    "the",
    "council",
    "said",
    "that",
    "river",
    "market",
    "stupid",
    "people",
    "would",
    "never",
    "walk",
    "across",
    "bridge",
    "after",
    "storm",
    "awful",
    "news",
    "came",
    "from",
    "city",
    "garden",
    "teacher",
    "wrote",
    "about",
    "idiot",
    "neighbour",
    "café",
    "quiet",
    "morning",
    "train",
    "and",
    "then",
    "he",
    "she",
    "they",
    "were",
    "laughing",
    "at",
    "festival",
    "\u{2019}s",
];

fn text(rng: &mut SplitMix64, words: usize) -> String {
    let mut s = String::new();
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
    s
}

fn score(rng: &mut SplitMix64, hi: bool) -> f64 {
    let u = (rng.below(1_000_000) as f64) / 1_000_000.0;
    if hi { 0.75 + 0.25 * u } else { 0.75 * u * u }
}

fn scores(rng: &mut SplitMix64, keys: &[&str], severe_hi: bool) -> String {
    let mut out = String::new();
    for k in keys {
        let v = if rng.below(200) == 0 {
            "null".to_string()
        } else {
            format!("{:.8}", score(rng, *k == "severe_toxicity" && severe_hi))
        };
        out.push_str(&format!(", \"{k}\": {v}"));
    }
    out
}

/// Writes `rows` synthetic RTP rows to `path`; returns the file size in bytes.
pub fn write_rtp(path: &Path, rows: usize, seed: u64) -> std::io::Result<u64> {
    let mut rng = SplitMix64::new(seed);
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    let pk = [
        "profanity",
        "sexually_explicit",
        "identity_attack",
        "flirtation",
        "threat",
        "insult",
        "severe_toxicity",
        "toxicity",
    ];
    let ck = [
        "severe_toxicity",
        "toxicity",
        "profanity",
        "sexually_explicit",
        "identity_attack",
        "flirtation",
        "threat",
        "insult",
    ];
    for _ in 0..rows {
        let hi = rng.below(5) == 0;
        let n = 12 + rng.below(14) as usize;
        let prompt = serde_json::to_string(&text(&mut rng, n))?;
        let n = 10 + rng.below(14) as usize;
        let cont = serde_json::to_string(&format!(" {}", text(&mut rng, n)))?;
        let begin = rng.below(5000);
        writeln!(
            w,
            "{{\"filename\": \"{:07}-{:016x}{:016x}.txt\", \"begin\": {begin}, \"end\": {}, \"challenging\": {}, \"prompt\": {{\"text\": {prompt}{}}}, \"continuation\": {{\"text\": {cont}{}}}}}",
            rng.below(10_000_000),
            rng.next_u64(),
            rng.next_u64(),
            begin + 200,
            hi && rng.below(4) == 0,
            scores(&mut rng, &pk, hi),
            scores(&mut rng, &ck, false),
        )?;
    }
    w.flush()?;
    drop(w);
    Ok(std::fs::metadata(path)?.len())
}
