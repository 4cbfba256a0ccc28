//! The tokenizer of a GGUF file, rebuilt from its vocabulary as transformers' GGUF loader does
//! (`integrations/gguf/gguf_tokenizer_mapping.py`: `get_gguf_tokenizer`, `convert_gguf_tokenizer`
//! and the builders it picks, then `TokenizersBackend.__init__`'s special tokens and
//! post-processor):
//!
//! - `tokenizer.ggml.model` `llama` (SentencePiece): a byte-fallback BPE over the tokens as
//!   written, with the file's merges or, when it has none, merges recovered from the vocabulary
//!   ordered by the token scores (`generate_merges`); Metaspace pre-tokenizer (prefix `▁` on the
//!   first word) and Llama's decoder. Gemma files (`gemma`, `gemma2`, `gemma3`) get Gemma's
//!   tokenizer instead: all-space tokens respelled with `▁`, merges ordered by token position
//!   (Gemma's scores do not follow its merge order), spaces normalized to `▁`.
//! - `gpt2` (byte-level BPE): tokens respelled into the GPT-2 byte alphabet where needed, the
//!   file's merges, and the split regex of `tokenizer.ggml.pre` (Llama-3, Qwen2, …) before the
//!   byte-level step.
//!
//! Control tokens become special added tokens, user-defined ones plain added tokens; the
//! builder class's own default special tokens and the BOS/EOS/UNK/PAD the file names are added
//! too; BOS/EOS are added by the post-processor per `tokenizer.ggml.add_bos_token` (default on
//! for SentencePiece files) and `add_eos_token`.

use super::GgufFile;
use crate::error::{Error, Result};
use crate::tokenizer::TextTokenizer;
use candle_core::quantized::gguf_file::Value;
use std::collections::HashMap;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// llama.cpp's token types (`gguf.TokenType`).
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `GGUF_PRE_TOKENIZER_SPLITS`: the split regex of a `tokenizer.ggml.pre`.
fn pre_split(pre: &str) -> Option<&'static str> {
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" => LLAMA3_SPLIT,
        "tekken" => TEKKEN_SPLIT,
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => QWEN2_SPLIT,
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => GPT4O_SPLIT,
        _ => return None,
    })
}

/// Which builder transformers picks (`select_tokenizer_builder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Builder {
    /// `sentencepiece_tokenizer` (LlamaTokenizer).
    SentencePiece,
    /// `gemma_tokenizer` (GemmaTokenizer).
    Gemma,
    /// `byte_level_tokenizer` (GPT2Tokenizer).
    ByteLevel,
}

impl Builder {
    /// The class's default special tokens (bos, eos, unk, pad, mask order), added at
    /// construction when missing from the vocabulary.
    fn class_specials(self) -> &'static [&'static str] {
        match self {
            Builder::SentencePiece => &["<s>", "</s>", "<unk>"],
            Builder::Gemma => &["<bos>", "<eos>", "<unk>", "<pad>", "<mask>"],
            Builder::ByteLevel => &["<|endoftext|>"],
        }
    }
}

/// Python's `str.isspace` (Rust's `char::is_whitespace` lacks U+001C..U+001F).
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// GPT-2's `bytes_to_unicode`: byte → printable char.
fn bytes_to_unicode() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        out[b as usize] = if printable {
            char::from_u32(b).unwrap_or('\0')
        } else {
            let c = char::from_u32(256 + n).unwrap_or('\0');
            n += 1;
            c
        };
    }
    out
}

/// transformers' `generate_merges(vocab, vocab_scores)`: every split of a token into two tokens
/// of the vocabulary is a merge; merges sorted by the token's score (best first), then by the
/// pieces' lengths (longer first), ties kept in vocabulary order. `order` lists the distinct
/// tokens in first-appearance order with their scores.
fn generate_merges(vocab: &HashMap<String, u32>, order: &[(String, f64)]) -> Vec<(String, String)> {
    struct M {
        l: String,
        r: String,
        score: f64,
        ll: usize,
        rl: usize,
    }
    let mut merges: Vec<M> = Vec::new();
    for (token, score) in order {
        let bounds: Vec<usize> = token.char_indices().map(|(i, _)| i).skip(1).collect();
        let mut local: Vec<(u32, u32, M)> = Vec::new();
        for (k, &at) in bounds.iter().enumerate() {
            let (l, r) = token.split_at(at);
            if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                let ll = k + 1;
                let rl = bounds.len() + 1 - ll;
                local.push((
                    li,
                    ri,
                    M {
                        l: l.to_string(),
                        r: r.to_string(),
                        score: *score,
                        ll,
                        rl,
                    },
                ));
            }
        }
        local.sort_by_key(|(li, ri, _)| (*li, *ri));
        merges.extend(local.into_iter().map(|(_, _, m)| m));
    }
    // Python's `sorted(..., key=(score, len_l, len_r), reverse=True)` is stable.
    merges.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.ll.cmp(&a.ll))
            .then(b.rl.cmp(&a.rl))
    });
    merges.into_iter().map(|m| (m.l, m.r)).collect()
}

fn tok_err(gguf: &GgufFile, msg: impl Into<String>) -> Error {
    Error::Tokenizer {
        path: gguf.path().to_path_buf(),
        msg: msg.into(),
    }
}

fn strings(gguf: &GgufFile, key: &str, values: &[Value]) -> Result<Vec<String>> {
    values
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.clone()),
            _ => Err(Error::config(
                gguf.path(),
                key,
                "expected an array of strings",
            )),
        })
        .collect()
}

fn numbers(gguf: &GgufFile, key: &str, values: &[Value]) -> Result<Vec<f64>> {
    values
        .iter()
        .map(|v| match v {
            Value::F32(x) => Ok(*x as f64),
            Value::F64(x) => Ok(*x),
            Value::I32(x) => Ok(*x as f64),
            Value::U32(x) => Ok(*x as f64),
            Value::I64(x) => Ok(*x as f64),
            Value::U64(x) => Ok(*x as f64),
            _ => Err(Error::config(
                gguf.path(),
                key,
                "expected an array of numbers",
            )),
        })
        .collect()
}

/// The tokenizer of a GGUF file, rebuilt from `tokenizer.ggml.*` as transformers does.
///
/// # Errors
/// [`Error::Tokenizer`] naming the file when it has no vocabulary (`tokenizer.ggml.tokens`) or a
/// `tokenizer.ggml.model` other than `llama` / `gpt2`, or when the vocabulary does not make a
/// valid tokenizer; [`Error::Config`] naming the key for a value of the wrong type.
pub fn tokenizer_from_gguf(gguf: &GgufFile) -> Result<TextTokenizer> {
    let arch = gguf.architecture();
    let model = gguf.get_str("tokenizer.ggml.model")?;
    let tokens = match gguf.get_array("tokenizer.ggml.tokens")? {
        Some(t) => strings(gguf, "tokenizer.ggml.tokens", t)?,
        None => {
            return Err(tok_err(
                gguf,
                "no vocabulary in the GGUF metadata (tokenizer.ggml.tokens) and no tokenizer.json \
                 beside the file",
            ));
        }
    };
    let builder = match model {
        Some("llama") if matches!(arch, "gemma" | "gemma2" | "gemma3") => Builder::Gemma,
        Some("llama") => Builder::SentencePiece,
        Some("gpt2") => Builder::ByteLevel,
        other => {
            return Err(tok_err(
                gguf,
                format!(
                    "cannot build a tokenizer for tokenizer.ggml.model {}; supported: gpt2, llama",
                    other
                        .map(|m| format!("`{m}`"))
                        .unwrap_or("(missing)".into())
                ),
            ));
        }
    };
    let types: Vec<i64> = match gguf.get_array("tokenizer.ggml.token_type")? {
        Some(v) => numbers(gguf, "tokenizer.ggml.token_type", v)?
            .into_iter()
            .map(|x| x as i64)
            .collect(),
        None => Vec::new(),
    };
    let scores: Option<Vec<f64>> = match gguf.get_array("tokenizer.ggml.scores")? {
        Some(v) => Some(numbers(gguf, "tokenizer.ggml.scores", v)?),
        None => None,
    };
    let file_merges: Option<Vec<String>> = match gguf.get_array("tokenizer.ggml.merges")? {
        Some(v) => Some(strings(gguf, "tokenizer.ggml.merges", v)?),
        None => None,
    };
    let named = |key: &str| -> Result<Option<String>> {
        match gguf.get_u64(key)? {
            None => Ok(None),
            Some(id) => tokens.get(id as usize).cloned().map(Some).ok_or_else(|| {
                Error::config(
                    gguf.path(),
                    key,
                    format!("id {id} is outside the vocabulary of {}", tokens.len()),
                )
            }),
        }
    };
    let bos = named("tokenizer.ggml.bos_token_id")?;
    let eos = named("tokenizer.ggml.eos_token_id")?;
    let unk = named("tokenizer.ggml.unknown_token_id")?;
    let pad = named("tokenizer.ggml.padding_token_id")?;
    let add_bos = gguf
        .get_bool("tokenizer.ggml.add_bos_token")?
        .unwrap_or(builder != Builder::ByteLevel);
    let add_eos = gguf
        .get_bool("tokenizer.ggml.add_eos_token")?
        .unwrap_or(false);
    let chat_template = gguf.get_str("tokenizer.chat_template")?.map(String::from);

    // The vocabulary as the builder spells it.
    let spelled: Vec<String> = match builder {
        Builder::SentencePiece => tokens.clone(),
        Builder::Gemma => tokens
            .iter()
            .map(|t| {
                if t.contains(' ') && t.chars().all(py_isspace) {
                    "\u{2581}".repeat(t.chars().count())
                } else {
                    t.clone()
                }
            })
            .collect(),
        Builder::ByteLevel => {
            let alphabet = bytes_to_unicode();
            tokens
                .iter()
                .map(|t| {
                    if t.chars().all(|c| alphabet.contains(&c)) {
                        t.clone()
                    } else {
                        t.bytes().map(|b| alphabet[b as usize]).collect()
                    }
                })
                .collect()
        }
    };
    let mut vocab: HashMap<String, u32> = HashMap::with_capacity(spelled.len());
    let mut order: Vec<(String, f64)> = Vec::new();
    let mut first_seen: HashMap<&str, usize> = HashMap::with_capacity(spelled.len());
    for (i, t) in spelled.iter().enumerate() {
        vocab.insert(t.clone(), i as u32);
        let score = match builder {
            // Gemma: position, not score, orders the merges.
            Builder::Gemma => -(i as f64),
            _ => scores
                .as_ref()
                .and_then(|s| s.get(i).copied())
                .unwrap_or(0.0),
        };
        match first_seen.get(t.as_str()) {
            Some(&at) => order[at].1 = score,
            None => {
                first_seen.insert(t.as_str(), order.len());
                order.push((t.clone(), score));
            }
        }
    }
    let merges: Vec<(String, String)> = match &file_merges {
        Some(m) => m
            .iter()
            .map(|s| {
                let parts: Vec<&str> = s.split(' ').collect();
                match parts.as_slice() {
                    [l, r] => Ok((l.to_string(), r.to_string())),
                    _ => Err(tok_err(gguf, format!("merge `{s}` is not two tokens"))),
                }
            })
            .collect::<Result<_>>()?,
        None => {
            if builder == Builder::ByteLevel
                || (builder == Builder::SentencePiece && scores.is_none())
            {
                if builder == Builder::ByteLevel {
                    return Err(tok_err(
                        gguf,
                        "a gpt2 vocabulary without tokenizer.ggml.merges",
                    ));
                }
                return Err(tok_err(
                    gguf,
                    "a llama vocabulary with neither tokenizer.ggml.merges nor tokenizer.ggml.scores",
                ));
            }
            generate_merges(&vocab, &order)
        }
    };

    let bpe = {
        let vocab: tokenizers::models::bpe::Vocab = vocab.into_iter().collect();
        let b = BPE::builder().vocab_and_merges(vocab, merges);
        let b = match builder {
            Builder::SentencePiece => b.fuse_unk(true).byte_fallback(true),
            Builder::Gemma => b
                .fuse_unk(true)
                .byte_fallback(true)
                .unk_token("<unk>".to_string()),
            Builder::ByteLevel => b,
        };
        b.build().map_err(|e| tok_err(gguf, e.to_string()))?
    };
    let mut tk = Tokenizer::new(bpe);
    match builder {
        Builder::SentencePiece => {
            tk.with_pre_tokenizer(Some(PreTokenizerWrapper::Metaspace(Metaspace::new(
                '\u{2581}',
                PrependScheme::First,
                false,
            ))));
            tk.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(vec![
                DecoderWrapper::Replace(
                    Replace::new("\u{2581}", " ").map_err(|e| tok_err(gguf, e.to_string()))?,
                ),
                DecoderWrapper::ByteFallback(ByteFallback::new()),
                DecoderWrapper::Fuse(Fuse::new()),
                DecoderWrapper::Strip(Strip::new(' ', 1, 0)),
            ]))));
        }
        Builder::Gemma => {
            tk.with_normalizer(Some(NormalizerWrapper::Replace(
                Replace::new(" ", "\u{2581}").map_err(|e| tok_err(gguf, e.to_string()))?,
            )))
            .map_err(|e| tok_err(gguf, e.to_string()))?;
            tk.with_pre_tokenizer(Some(PreTokenizerWrapper::Split(
                Split::new(
                    SplitPattern::String(" ".into()),
                    SplitDelimiterBehavior::MergedWithPrevious,
                    false,
                )
                .map_err(|e| tok_err(gguf, e.to_string()))?,
            )));
            tk.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(vec![
                DecoderWrapper::Replace(
                    Replace::new("\u{2581}", " ").map_err(|e| tok_err(gguf, e.to_string()))?,
                ),
                DecoderWrapper::ByteFallback(ByteFallback::new()),
                DecoderWrapper::Fuse(Fuse::new()),
            ]))));
        }
        Builder::ByteLevel => {
            let pre = match gguf.get_str("tokenizer.ggml.pre")?.and_then(pre_split) {
                Some(re) => PreTokenizerWrapper::Sequence(PreSequence::new(vec![
                    PreTokenizerWrapper::Split(
                        Split::new(
                            SplitPattern::Regex(re.into()),
                            SplitDelimiterBehavior::Isolated,
                            false,
                        )
                        .map_err(|e| tok_err(gguf, e.to_string()))?,
                    ),
                    PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
                ])),
                None => PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
            };
            tk.with_pre_tokenizer(Some(pre));
            tk.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevelDecoder::default())));
        }
    }

    // Added tokens, in transformers' order: the builder class's defaults, the file's control
    // tokens (special; in a byte-level vocabulary only those spelled in the byte alphabet), its
    // user-defined tokens (plain), then the tokens the file names BOS/EOS/UNK/PAD.
    let special = |t: &str| AddedToken::from(t.to_string(), true).normalized(false);
    tk.add_special_tokens(builder.class_specials().iter().map(|t| special(t)))
        .map_err(|e| tok_err(gguf, e.to_string()))?;
    // `add_gguf_special_tokens` walks the tokens as the file spells them (not as the builder
    // respelled them): a control token is added whatever its spelling, a user-defined one only
    // when that spelling is in the vocabulary (so Gemma's all-space tokens are not).
    let alphabet = bytes_to_unicode();
    let control: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(t, ty)| {
            **ty == CONTROL
                && (builder != Builder::ByteLevel || t.chars().all(|c| alphabet.contains(&c)))
        })
        .map(|(t, _)| special(t))
        .collect();
    tk.add_special_tokens(control)
        .map_err(|e| tok_err(gguf, e.to_string()))?;
    let user: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(t, ty)| **ty == USER_DEFINED && tk.token_to_id(t).is_some())
        .map(|(t, _)| AddedToken::from(t.clone(), false).normalized(false))
        .collect();
    tk.add_tokens(user)
        .map_err(|e| tok_err(gguf, e.to_string()))?;
    let named: Vec<AddedToken> = [&bos, &eos, &unk, &pad]
        .into_iter()
        .flatten()
        .map(|t| special(t))
        .collect();
    tk.add_special_tokens(named)
        .map_err(|e| tok_err(gguf, e.to_string()))?;

    // TokenizersBackend.update_post_processor.
    let add_bos = add_bos && bos.is_some();
    let add_eos = add_eos && eos.is_some();
    let mut single = String::new();
    let mut pair_tail = String::new();
    let mut specials: Vec<(String, u32)> = Vec::new();
    let id_of = |t: &str| {
        tk.token_to_id(t)
            .ok_or_else(|| tok_err(gguf, format!("special token `{t}` has no id")))
    };
    if let (true, Some(b)) = (add_bos, &bos) {
        single.push_str(&format!("{b}:0 "));
        pair_tail.push_str(&format!(" {b}:1"));
        specials.push((b.clone(), id_of(b)?));
    }
    single.push_str("$A:0");
    pair_tail.push_str(" $B:1");
    if let (true, Some(e)) = (add_eos, &eos) {
        single.push_str(&format!(" {e}:0"));
        pair_tail.push_str(&format!(" {e}:1"));
        if Some(e) != bos.as_ref() || !add_bos {
            specials.push((e.clone(), id_of(e)?));
        }
    }
    let pair = format!("{single}{pair_tail}");
    let post = TemplateProcessing::builder()
        .try_single(single.as_str())
        .and_then(|b| b.try_pair(pair.as_str()))
        .map_err(|e| tok_err(gguf, e.to_string()))?
        .special_tokens(specials)
        .build()
        .map_err(|e| tok_err(gguf, e.to_string()))?;
    tk.with_post_processor(Some(post));

    Ok(TextTokenizer::from_parts(
        tk,
        gguf.path().to_path_buf(),
        eos,
        bos,
        chat_template,
        false,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_follow_transformers_generate_merges() {
        // vocab order: a b c ab bc abc; scores make "abc" best.
        let toks = ["a", "b", "c", "ab", "bc", "abc"];
        let scores = [0.0, 0.0, 0.0, -1.0, -2.0, 5.0];
        let vocab: HashMap<String, u32> = toks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let order: Vec<(String, f64)> = toks
            .iter()
            .zip(scores)
            .map(|(t, s)| (t.to_string(), s))
            .collect();
        let m = generate_merges(&vocab, &order);
        let m: Vec<String> = m.iter().map(|(l, r)| format!("{l} {r}")).collect();
        // abc (5.0): splits a|bc, ab|c sorted by ids (0,4), (3,2) → then by len_l desc: ab|c first.
        assert_eq!(m, ["ab c", "a bc", "a b", "b c"]);
    }

    #[test]
    fn byte_alphabet_is_gpt2s() {
        let a = bytes_to_unicode();
        assert_eq!(a[b'A' as usize], 'A');
        assert_eq!(a[b' ' as usize], '\u{120}');
        assert_eq!(a[b'\n' as usize], '\u{10a}');
    }
}
