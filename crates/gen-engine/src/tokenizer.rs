//! The text side: `tokenizer.json` through the tokenizers crate, special tokens from
//! `tokenizer_config.json`, and the optional chat template (minijinja); or a tokenizer rebuilt
//! from a GGUF file's vocabulary ([`crate::gguf::tokenizer_from_gguf`]).

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// A checkpoint's tokenizer.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    eos_token: Option<String>,
    bos_token: Option<String>,
    chat_template: Option<String>,
    clean_up_spaces: bool,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("path", &self.path)
            .field("vocab", &self.inner.get_vocab_size(true))
            .finish()
    }
}

fn token_str(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
        _ => None,
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json` (required) and `tokenizer_config.json` (optional) from a directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(Error::MissingFile {
                path,
                what: "tokenizer (tokenizer.json)".into(),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| Error::Tokenizer {
            path: path.clone(),
            msg: e.to_string(),
        })?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: serde_json::Value = match std::fs::read_to_string(&cfg_path) {
            Ok(t) => serde_json::from_str(&t).map_err(|source| Error::Json {
                path: cfg_path.clone(),
                source,
            })?,
            Err(_) => serde_json::Value::Null,
        };
        let chat_template = match cfg.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .or_else(|| list.first())
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(String::from),
            _ => None,
        };
        Ok(Self {
            inner,
            path,
            eos_token: token_str(cfg.get("eos_token")),
            bos_token: token_str(cfg.get("bos_token")),
            chat_template,
            clean_up_spaces: cfg
                .get("clean_up_tokenization_spaces")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
        })
    }

    /// A tokenizer built in code (the GGUF vocabulary rebuilt by [`crate::gguf`]): `path` names
    /// where it came from in errors; the special tokens are given by content.
    pub(crate) fn from_parts(
        inner: tokenizers::Tokenizer,
        path: PathBuf,
        eos_token: Option<String>,
        bos_token: Option<String>,
        chat_template: Option<String>,
        clean_up_spaces: bool,
    ) -> Self {
        Self {
            inner,
            path,
            eos_token,
            bos_token,
            chat_template,
            clean_up_spaces,
        }
    }

    /// Where the tokenizer came from (`tokenizer.json`, or the GGUF file it was rebuilt from).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// The EOS token's id, per `tokenizer_config.json`.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos_token
            .as_deref()
            .and_then(|t| self.inner.token_to_id(t))
    }

    /// Encodes text; `add_special_tokens` lets the post-processor add BOS (as transformers does
    /// by default).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                msg: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decodes ids, skipping special tokens, trimmed (the scored continuation).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let text = self.inner.decode(ids, true).map_err(|e| Error::Tokenizer {
            path: self.path.clone(),
            msg: e.to_string(),
        })?;
        let text = if self.clean_up_spaces {
            clean_up(&text)
        } else {
            text
        };
        Ok(text.trim().to_string())
    }

    /// Renders a user prompt with the checkpoint's chat template (`add_generation_prompt`), to be
    /// encoded without extra special tokens.
    pub fn apply_chat_template(&self, prompt: &str) -> Result<String> {
        let tpl = self.chat_template.as_deref().ok_or_else(|| {
            Error::ChatTemplate(format!(
                "{}: no chat_template in tokenizer_config.json",
                self.path.display()
            ))
        })?;
        render_chat_template(
            tpl,
            &[("user", prompt)],
            true,
            self.bos_token.as_deref().unwrap_or_default(),
            self.eos_token.as_deref().unwrap_or_default(),
        )
    }
}

/// Renders a Hugging Face chat template (the Jinja `chat_template` of `tokenizer_config.json`,
/// through minijinja) over a conversation of `(role, content)` turns, as transformers'
/// `apply_chat_template(tokenize=False)`: the template sees `messages`, `add_generation_prompt`,
/// `bos_token` and `eos_token`, and may call `raise_exception(msg)`.
///
/// The one renderer of the workspace: generation's [`TextTokenizer::apply_chat_template`] and
/// lora-train's chat template both call it.
///
/// ```
/// let tpl = "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}\
///            {% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";
/// let text = gen_engine::tokenizer::render_chat_template(tpl, &[("user", "Hi")], true, "<s>", "</s>")?;
/// assert_eq!(text, "<s><|user|>Hi</s><|assistant|>");
/// # Ok::<(), gen_engine::Error>(())
/// ```
///
/// # Errors
/// [`Error::ChatTemplate`] when the template does not parse, fails to render or raises.
pub fn render_chat_template(
    template: &str,
    messages: &[(&str, &str)],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_template("chat", template)
        .map_err(|e| Error::ChatTemplate(e.to_string()))?;
    let messages: Vec<_> = messages
        .iter()
        .map(|(role, content)| minijinja::context! { role => *role, content => *content })
        .collect();
    env.get_template("chat")
        .and_then(|t| {
            t.render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => bos_token,
                eos_token => eos_token,
            })
        })
        .map_err(|e| Error::ChatTemplate(e.to_string()))
}

/// transformers' `clean_up_tokenization`.
fn clean_up(s: &str) -> String {
    s.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}
