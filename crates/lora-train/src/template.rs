//! Prompt templates and tokenisation of records into training examples.

use crate::data::Record;
use crate::error::{Error, Result};
use std::path::Path;

/// How a [`Record`] becomes training text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Template {
    /// The authors' template (Hawkins et al. 2024), used for every model:
    /// `"<s>[INST] " + instruction + ("Here's some context: " + context if context else "") + " [/INST] " + response + EOS`.
    ///
    /// Literal `<s>` text, no separator before the context, and the tokenizer still adds its
    /// own BOS.
    AuthorsInst,
    /// The Stanford Alpaca prompt (with or without its `### Input:` block), then the response
    /// and EOS; the tokenizer adds BOS.
    Alpaca,
    /// The model's own chat template (`chat_template` of `tokenizer_config.json`, rendered by
    /// `gen_engine::tokenizer::render_chat_template`) over a user turn (instruction, then a blank line and the context when there is
    /// one) and an assistant turn (the response). Tokenised without extra special tokens, since
    /// chat templates write their own BOS, as `apply_chat_template` does.
    Chat,
}

impl std::str::FromStr for Template {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "authors" | "inst" | "authors-inst" => Ok(Template::AuthorsInst),
            "alpaca" => Ok(Template::Alpaca),
            "chat" => Ok(Template::Chat),
            other => Err(Error::param(
                "template",
                format!("unknown template `{other}` (authors, alpaca, chat)"),
            )),
        }
    }
}

const ALPACA_WITH_INPUT: &str = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n";
const ALPACA_NO_INPUT: &str = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n";

/// The tokenizer and the special-token strings a template needs.
pub struct TextEncoder {
    tokenizer: tokenizers::Tokenizer,
    bos_token: String,
    eos_token: String,
    chat_template: Option<String>,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEncoder")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("chat_template", &self.chat_template.is_some())
            .finish()
    }
}

fn token_string(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

impl TextEncoder {
    /// Loads `tokenizer.json` and `tokenizer_config.json` (BOS/EOS strings, `chat_template`)
    /// from a model directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", tok_path.display())))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: serde_json::Value = if cfg_path.exists() {
            let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
            serde_json::from_str(&text).map_err(|e| Error::BadJson {
                path: cfg_path.clone(),
                message: e.to_string(),
            })?
        } else {
            serde_json::Value::Null
        };
        let eos_token = token_string(cfg.get("eos_token")).unwrap_or_else(|| "</s>".into());
        let bos_token = token_string(cfg.get("bos_token")).unwrap_or_else(|| "<s>".into());
        let chat_template = match cfg.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            // A list of named templates: take the default one.
            Some(serde_json::Value::Array(list)) => list.iter().find_map(|t| {
                (t.get("name")?.as_str()? == "default")
                    .then(|| t.get("template")?.as_str().map(str::to_string))
                    .flatten()
            }),
            _ => None,
        };
        Ok(TextEncoder {
            tokenizer,
            bos_token,
            eos_token,
            chat_template,
        })
    }

    /// The EOS token string (`eos_token` of `tokenizer_config.json`).
    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// The id of the EOS token, used to pad batches (padded positions never count in the loss).
    pub fn eos_id(&self) -> u32 {
        self.tokenizer.token_to_id(&self.eos_token).unwrap_or(0)
    }

    /// The underlying tokenizer.
    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.tokenizer
    }

    /// Renders a record: the full text, the byte offset where the response starts, and whether
    /// the tokenizer should add its special tokens (BOS).
    pub fn render(&self, template: &Template, r: &Record) -> Result<(String, usize, bool)> {
        match template {
            Template::AuthorsInst => {
                let mut s = String::from("<s>[INST] ");
                s.push_str(&r.instruction);
                if !r.context.is_empty() {
                    s.push_str("Here's some context: ");
                    s.push_str(&r.context);
                }
                s.push_str(" [/INST] ");
                let start = s.len();
                s.push_str(&r.response);
                s.push_str(&self.eos_token);
                Ok((s, start, true))
            }
            Template::Alpaca => {
                let mut s = String::from(if r.context.is_empty() {
                    ALPACA_NO_INPUT
                } else {
                    ALPACA_WITH_INPUT
                });
                s.push_str(&r.instruction);
                if !r.context.is_empty() {
                    s.push_str("\n\n### Input:\n");
                    s.push_str(&r.context);
                }
                s.push_str("\n\n### Response:\n");
                let start = s.len();
                s.push_str(&r.response);
                s.push_str(&self.eos_token);
                Ok((s, start, true))
            }
            Template::Chat => {
                let tpl = self.chat_template.as_deref().ok_or_else(|| {
                    Error::Template("the tokenizer_config.json has no chat_template".into())
                })?;
                let mut user = r.instruction.clone();
                if !r.context.is_empty() {
                    user.push_str("\n\n");
                    user.push_str(&r.context);
                }
                let prompt = self.render_chat(tpl, &[("user", &user)], true)?;
                let full =
                    self.render_chat(tpl, &[("user", &user), ("assistant", &r.response)], false)?;
                let start = if full.starts_with(&prompt) {
                    prompt.len()
                } else {
                    // Templates whose generation prompt is not a prefix of the conversation:
                    // fall back to the longest common prefix.
                    full.bytes()
                        .zip(prompt.bytes())
                        .take_while(|(a, b)| a == b)
                        .count()
                };
                Ok((full, start, false))
            }
        }
    }

    fn render_chat(
        &self,
        tpl: &str,
        turns: &[(&str, &str)],
        add_generation_prompt: bool,
    ) -> Result<String> {
        gen_engine::tokenizer::render_chat_template(
            tpl,
            turns,
            add_generation_prompt,
            &self.bos_token,
            &self.eos_token,
        )
        .map_err(|e| match e {
            gen_engine::Error::ChatTemplate(msg) => Error::Template(msg),
            other => Error::Engine(other),
        })
    }

    /// Tokenises one record into an [`Example`], truncated to `max_len` tokens.
    pub fn encode(
        &self,
        template: &Template,
        r: &Record,
        max_len: usize,
        loss_on: LossOn,
    ) -> Result<Example> {
        let (text, response_start, add_special) = self.render(template, r)?;
        let enc = self
            .tokenizer
            .encode(text.as_str(), add_special)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let ids = enc.get_ids();
        let offsets = enc.get_offsets();
        let special = enc.get_special_tokens_mask();
        let full_len = ids.len();
        let n = full_len.min(max_len);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let keep = match loss_on {
                LossOn::All => true,
                // A token belongs to the response when it ends inside it (a token that
                // straddles the boundary, like " The" after "[/INST]", counts as response);
                // added special tokens (BOS) never do.
                LossOn::Response => special[i] == 0 && offsets[i].1 > response_start,
            };
            labels.push(if keep { ids[i] as i64 } else { IGNORE_INDEX });
        }
        Ok(Example {
            input_ids: ids[..n].to_vec(),
            labels,
            truncated_from: (full_len > n).then_some(full_len),
        })
    }
}

/// The label value that the loss ignores (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Which tokens count in the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LossOn {
    /// Every token (the authors' setting, SFTTrainer without a completion-only collator).
    #[default]
    All,
    /// Only the response tokens (and EOS).
    Response,
}

impl std::str::FromStr for LossOn {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "all" => Ok(LossOn::All),
            "response" => Ok(LossOn::Response),
            other => Err(Error::param(
                "loss_on",
                format!("unknown value `{other}` (all, response)"),
            )),
        }
    }
}

/// One tokenised training sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Token ids, BOS included.
    pub input_ids: Vec<u32>,
    /// Per-position labels (the token id, or [`IGNORE_INDEX`]); the loss shifts them by one.
    pub labels: Vec<i64>,
    /// The untruncated length, when the sequence was cut to the maximum length.
    pub truncated_from: Option<usize>,
}

/// Tokenised examples plus how many were truncated.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The examples, in dataset order.
    pub examples: Vec<Example>,
    /// How many examples exceeded the maximum length and were cut.
    pub truncated: usize,
}

/// Tokenises every record.
pub fn encode_all(
    enc: &TextEncoder,
    template: &Template,
    records: &[Record],
    max_len: usize,
    loss_on: LossOn,
) -> Result<Encoded> {
    if max_len < 2 {
        return Err(Error::param("max_len", "must be at least 2"));
    }
    let mut examples = Vec::with_capacity(records.len());
    let mut truncated = 0;
    for r in records {
        let ex = enc.encode(template, r, max_len, loss_on)?;
        truncated += usize::from(ex.truncated_from.is_some());
        examples.push(ex);
    }
    Ok(Encoded {
        examples,
        truncated,
    })
}
