//! `engine-api`: the seams between toxdrift's pipeline and the engines that generate and score
//! text, with no ML dependency (in the spirit of ripgrep's `grep-matcher`).
//!
//! - [`TextGenerator`]: prompts in; per prompt a [`Completion`] out — the text, the token ids
//!   when the backend has them, and a [`FinishReason`] — with a progress callback. gen-engine's
//!   local generator implements it; so can a remote (OpenAI-compatible) backend that only returns
//!   text.
//! - [`TextScorer`]: texts in; a probability per label out, plus the [`ToxicityRule`] (which label,
//!   which threshold) that makes a text "toxic". The provided [`TextScorer::toxicity`] finds the
//!   rule's label by name, never by position. hate-classifier's RoBERTa scorer implements it.
//! - [`Error`]: the one error of both traits. It keeps an implementation's own error and says
//!   whether the user's input is at fault ([`Error::is_bad_input`]: exit code 2 in the CLI) or not
//!   (exit code 1).
//!
//! Both traits are object-safe and `Send`: a caller picks an engine at run time and holds it as
//! `Box<dyn TextGenerator>` / `Box<dyn TextScorer>`. Each describes itself for manifests
//! ([`EngineInfo`]) and says which batch size suits it.
//!
//! A toy generator and scorer, driven through the traits:
//!
//! ```
//! use engine_api::{
//!     Completion, EngineInfo, Error, FinishReason, TextGenerator, TextScorer, ToxicityRule,
//! };
//!
//! /// Echoes each prompt's last word, as if it were the model's continuation.
//! struct Echo;
//!
//! impl TextGenerator for Echo {
//!     fn describe(&self) -> EngineInfo {
//!         EngineInfo {
//!             backend: "echo".into(),
//!             model: "last-word".into(),
//!             settings: serde_json::json!({}),
//!         }
//!     }
//!     fn preferred_batch_size(&self) -> usize {
//!         2
//!     }
//!     fn complete(
//!         &self,
//!         prompts: &[&str],
//!         progress: &mut dyn FnMut(usize),
//!     ) -> Result<Vec<Completion>, Error> {
//!         let mut out = Vec::new();
//!         for batch in prompts.chunks(self.preferred_batch_size()) {
//!             for p in batch {
//!                 let word = p.split_whitespace().last().ok_or_else(|| {
//!                     Error::bad_input(format!("prompt `{p}` has no word to echo"))
//!                 })?;
//!                 out.push(Completion {
//!                     text: word.to_string(),
//!                     token_ids: None, // a text-only backend
//!                     finish_reason: FinishReason::Eos,
//!                 });
//!             }
//!             progress(batch.len());
//!         }
//!         Ok(out)
//!     }
//! }
//!
//! /// Calls a text rude when it holds the word "idiot".
//! struct Keyword {
//!     labels: Vec<String>,
//! }
//!
//! impl TextScorer for Keyword {
//!     fn describe(&self) -> EngineInfo {
//!         EngineInfo {
//!             backend: "keyword".into(),
//!             model: "idiot".into(),
//!             settings: serde_json::json!({ "threshold": 0.5 }),
//!         }
//!     }
//!     fn preferred_batch_size(&self) -> usize {
//!         64
//!     }
//!     fn labels(&self) -> &[String] {
//!         &self.labels
//!     }
//!     fn toxicity_rule(&self) -> ToxicityRule {
//!         ToxicityRule::new("rude", 0.5)
//!     }
//!     fn label_probabilities(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, Error> {
//!         Ok(texts
//!             .iter()
//!             .map(|t| if t.contains("idiot") { vec![0.1, 0.9] } else { vec![0.8, 0.2] })
//!             .collect())
//!     }
//! }
//!
//! // Engines chosen at run time.
//! let generator: Box<dyn TextGenerator> = Box::new(Echo);
//! let scorer: Box<dyn TextScorer> = Box::new(Keyword {
//!     labels: vec!["polite".into(), "rude".into()],
//! });
//!
//! let mut done = 0;
//! let completions = generator.complete(&["You are an idiot", "Have a nice day"], &mut |n| {
//!     done += n
//! })?;
//! assert_eq!(done, 2);
//! assert_eq!(completions[0].text, "idiot");
//! assert_eq!(completions[1].finish_reason.as_str(), "eos");
//!
//! let texts: Vec<&str> = completions.iter().map(|c| c.text.as_str()).collect();
//! assert_eq!(scorer.toxicity(&texts)?, vec![(0.9, true), (0.2, false)]);
//!
//! // Bad input is told from an internal failure.
//! let err = generator.complete(&[""], &mut |_| {}).unwrap_err();
//! assert!(err.is_bad_input());
//! # Ok::<(), Error>(())
//! ```
#![deny(missing_docs)]

mod error;
mod generate;
mod score;

pub use error::{BoxError, Error, Result};
pub use generate::{Completion, EngineInfo, FinishReason, TextGenerator};
pub use score::{TextScorer, ToxicityRule};

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    /// A scorer whose output is given, to test the provided method and the rule.
    struct Fixed {
        labels: Vec<String>,
        rule: ToxicityRule,
        rows: Vec<Vec<f32>>,
    }

    impl TextScorer for Fixed {
        fn describe(&self) -> EngineInfo {
            EngineInfo {
                backend: "fixed".into(),
                model: "none".into(),
                settings: serde_json::Value::Null,
            }
        }
        fn preferred_batch_size(&self) -> usize {
            1
        }
        fn labels(&self) -> &[String] {
            &self.labels
        }
        fn toxicity_rule(&self) -> ToxicityRule {
            self.rule.clone()
        }
        fn label_probabilities(&self, _texts: &[&str]) -> Result<Vec<Vec<f32>>> {
            Ok(self.rows.clone())
        }
    }

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn fixed(rule: ToxicityRule, rows: Vec<Vec<f32>>) -> Fixed {
        Fixed {
            labels: labels(&["nothate", "hate"]),
            rule,
            rows,
        }
    }

    struct Gen;

    impl TextGenerator for Gen {
        fn describe(&self) -> EngineInfo {
            EngineInfo {
                backend: "gen".into(),
                model: "m".into(),
                settings: serde_json::json!({ "max_new_tokens": 3 }),
            }
        }
        fn preferred_batch_size(&self) -> usize {
            7
        }
        fn complete(
            &self,
            prompts: &[&str],
            progress: &mut dyn FnMut(usize),
        ) -> Result<Vec<Completion>> {
            progress(prompts.len());
            Ok(prompts
                .iter()
                .map(|p| Completion {
                    text: p.to_uppercase(),
                    token_ids: Some(vec![1, 2]),
                    finish_reason: FinishReason::Length,
                })
                .collect())
        }
    }

    #[test]
    fn finish_reason_spellings() {
        assert_eq!(FinishReason::Eos.as_str(), "eos");
        assert_eq!(FinishReason::Length.as_str(), "length");
        assert_eq!(FinishReason::Length.to_string(), "length");
        assert_eq!(
            serde_json::to_string(&FinishReason::Eos).unwrap(),
            "\"eos\""
        );
        let back: FinishReason = serde_json::from_str("\"length\"").unwrap();
        assert_eq!(back, FinishReason::Length);
    }

    #[test]
    fn rule_looks_the_label_up_by_name() {
        let rule = ToxicityRule::new("hate", 0.5);
        assert_eq!(rule.label_index(&labels(&["nothate", "hate"])).unwrap(), 1);
        assert_eq!(rule.label_index(&labels(&["hate", "nothate"])).unwrap(), 0);
        assert_eq!(
            rule.score_of(&labels(&["hate", "nothate"]), &[0.25, 0.75])
                .unwrap(),
            0.25
        );
        let e = rule
            .label_index(&labels(&["LABEL_0", "LABEL_1"]))
            .unwrap_err();
        assert!(matches!(e, Error::UnknownLabel { .. }));
        assert!(e.is_bad_input());
        assert_eq!(
            e.to_string(),
            "label `hate` is not one of the scorer's labels (LABEL_0, LABEL_1)"
        );
        let e = rule
            .score_of(&labels(&["nothate", "hate"]), &[1.0])
            .unwrap_err();
        assert!(matches!(e, Error::OutputCount { .. }));
    }

    #[test]
    fn threshold_is_inclusive() {
        let rule = ToxicityRule::new("hate", 0.5);
        assert!(rule.is_toxic(0.5));
        assert!(rule.is_toxic(0.9));
        assert!(!rule.is_toxic(0.499_999));
        assert!(!rule.is_toxic(f32::NAN));
    }

    #[test]
    fn toxicity_applies_the_rule() {
        let s = fixed(
            ToxicityRule::new("hate", 0.5),
            vec![vec![0.5, 0.5], vec![0.9, 0.1], vec![0.2, 0.8]],
        );
        assert_eq!(
            s.toxicity(&["a", "b", "c"]).unwrap(),
            vec![(0.5, true), (0.1, false), (0.8, true)]
        );
        // Through a box, as the facade holds it.
        let boxed: Box<dyn TextScorer> = Box::new(s);
        assert_eq!(boxed.toxicity(&["a", "b", "c"]).unwrap()[2], (0.8, true));
        assert_eq!(boxed.labels(), &labels(&["nothate", "hate"])[..]);
    }

    #[test]
    fn toxicity_errors() {
        let s = fixed(ToxicityRule::new("toxic", 0.5), vec![vec![0.5, 0.5]]);
        let e = s.toxicity(&["a"]).unwrap_err();
        assert!(matches!(e, Error::UnknownLabel { ref label, .. } if label == "toxic"));
        assert!(e.is_bad_input());

        let s = fixed(ToxicityRule::new("hate", 0.5), vec![vec![0.5, 0.5]]);
        let e = s.toxicity(&["a", "b"]).unwrap_err();
        assert!(matches!(
            e,
            Error::OutputCount {
                expected: 2,
                found: 1,
                ..
            }
        ));
        assert!(!e.is_bad_input());

        let s = fixed(ToxicityRule::new("hate", 0.5), vec![vec![0.5]]);
        let e = s.toxicity(&["a"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the engine returned 1 probabilities where 2 were expected"
        );
    }

    #[test]
    fn generator_through_a_box() {
        let g: Box<dyn TextGenerator> = Box::new(Gen);
        assert_eq!(g.preferred_batch_size(), 7);
        assert_eq!(g.describe().settings["max_new_tokens"], 3);
        let mut seen = 0;
        let out = g.complete(&["ab", "c"], &mut |n| seen += n).unwrap();
        assert_eq!(seen, 2);
        assert_eq!(out[0].text, "AB");
        assert_eq!(out[1].token_ids.as_deref(), Some(&[1, 2][..]));
        // A box of a box is a generator too.
        let gg: Box<Box<dyn TextGenerator>> = Box::new(g);
        assert_eq!(gg.preferred_batch_size(), 7);
    }

    #[test]
    fn backend_errors_are_transparent() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "weights.safetensors");
        #[derive(Debug)]
        struct Impl(std::io::Error);
        impl std::fmt::Display for Impl {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "model dir: {}", self.0)
            }
        }
        impl std::error::Error for Impl {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Error::bad_input(Impl(io));
        assert!(e.is_bad_input());
        assert_eq!(e.to_string(), "model dir: weights.safetensors");
        assert!(e.downcast_ref::<Impl>().is_some());
        assert!(e.downcast_ref::<std::io::Error>().is_none());
        // The chain continues with the implementation's own source, not a repeat of it.
        let next = e.source().unwrap();
        assert!(next.downcast_ref::<std::io::Error>().is_some());
        let inner = e.into_inner();
        assert!(inner.downcast_ref::<Impl>().is_some());

        let e = Error::internal("tensor op failed");
        assert!(!e.is_bad_input());
        assert_eq!(e.to_string(), "tensor op failed");
        assert!(e.source().is_none());
        assert!(Error::check_count("completions", 3, 3).is_ok());
        let e = Error::check_count("completions", 3, 2).unwrap_err();
        assert!(e.get_ref().is_none());
        assert!(e.into_inner().downcast_ref::<Error>().is_some());
    }

    #[test]
    fn engines_are_send_and_errors_cross_threads() {
        fn send<T: Send>() {}
        fn send_sync_static<T: Send + Sync + 'static>() {}
        send::<Box<dyn TextGenerator>>();
        send::<Box<dyn TextScorer>>();
        send_sync_static::<Error>();
    }
}
