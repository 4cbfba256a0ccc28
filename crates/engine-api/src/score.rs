//! The scoring seam.

use crate::error::{Error, Result};
use crate::generate::EngineInfo;
use serde::{Deserialize, Serialize};

/// What makes a text "toxic": the probability of the label named `label` is at least
/// `threshold`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToxicityRule {
    /// The label (one of the scorer's [`TextScorer::labels`]) whose probability is the score.
    pub label: String,
    /// A score `>=` this is toxic.
    pub threshold: f32,
}

impl ToxicityRule {
    /// The rule "`label`'s probability is at least `threshold`".
    pub fn new(label: impl Into<String>, threshold: f32) -> Self {
        Self {
            label: label.into(),
            threshold,
        }
    }

    /// The index of the rule's label in `labels`, looked up by name (the first match).
    ///
    /// # Errors
    /// [`Error::UnknownLabel`] when `labels` lacks it.
    pub fn label_index(&self, labels: &[String]) -> Result<usize> {
        labels
            .iter()
            .position(|l| *l == self.label)
            .ok_or_else(|| Error::UnknownLabel {
                label: self.label.clone(),
                labels: labels.to_vec(),
            })
    }

    /// The score of one text: its probability of the rule's label, given the scorer's labels
    /// and the text's probabilities (in the labels' order).
    ///
    /// # Errors
    /// [`Error::UnknownLabel`] when `labels` lacks the rule's label; [`Error::OutputCount`]
    /// when `probs` and `labels` differ in length.
    pub fn score_of(&self, labels: &[String], probs: &[f32]) -> Result<f32> {
        Error::check_count("probabilities", labels.len(), probs.len())?;
        Ok(probs[self.label_index(labels)?])
    }

    /// Whether a score is toxic: `score >= threshold`.
    pub fn is_toxic(&self, score: f32) -> bool {
        score >= self.threshold
    }
}

/// Scoring: texts in, a probability per label out, and the rule that makes a text "toxic".
///
/// Object-safe and `Send`, so a caller can hold a `Box<dyn TextScorer>` chosen at run time.
pub trait TextScorer: Send {
    /// What this scorer is: backend, model and the settings that shape its output.
    fn describe(&self) -> EngineInfo;

    /// How many texts the backend handles well in one call (its batch size).
    fn preferred_batch_size(&self) -> usize;

    /// The labels, in the order of each row of [`TextScorer::label_probabilities`].
    fn labels(&self) -> &[String];

    /// Which label's probability is the toxicity score, and from which threshold on it is toxic.
    fn toxicity_rule(&self) -> ToxicityRule;

    /// The probability of every label (in [`TextScorer::labels`] order), per text, in the
    /// texts' order.
    fn label_probabilities(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;

    /// The toxicity score of every text (the probability of the rule's label, found by name)
    /// and whether it is toxic.
    ///
    /// # Errors
    /// [`Error::UnknownLabel`] when the rule's label is not one of [`TextScorer::labels`];
    /// [`Error::OutputCount`] when the implementation returns a wrong number of rows or
    /// probabilities; the implementation's own errors.
    fn toxicity(&self, texts: &[&str]) -> Result<Vec<(f32, bool)>> {
        let rule = self.toxicity_rule();
        let labels = self.labels();
        let index = rule.label_index(labels)?;
        let rows = self.label_probabilities(texts)?;
        Error::check_count("probability rows", texts.len(), rows.len())?;
        rows.iter()
            .map(|probs| {
                Error::check_count("probabilities", labels.len(), probs.len())?;
                let score = probs[index];
                Ok((score, rule.is_toxic(score)))
            })
            .collect()
    }
}

impl<S: TextScorer + ?Sized> TextScorer for Box<S> {
    fn describe(&self) -> EngineInfo {
        (**self).describe()
    }
    fn preferred_batch_size(&self) -> usize {
        (**self).preferred_batch_size()
    }
    fn labels(&self) -> &[String] {
        (**self).labels()
    }
    fn toxicity_rule(&self) -> ToxicityRule {
        (**self).toxicity_rule()
    }
    fn label_probabilities(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        (**self).label_probabilities(texts)
    }
    fn toxicity(&self, texts: &[&str]) -> Result<Vec<(f32, bool)>> {
        (**self).toxicity(texts)
    }
}
