//! The decoder stack the families share: embeddings, attention and gated MLP blocks, final norm
//! and head. Families differ only in the knobs of [`Spec`] (norm form and placement, q/k norms,
//! activation, embedding scale, soft-capping, sliding windows, per-layer rope, fused
//! projections, biases), which their `Config`s set on top of [`Spec::from_common`].

use super::{ForwardCtx, KvCache, LogitsWanted, ModelInfo};
use crate::error::{Error, Result};
use crate::lora::{LinearFactory, LoraLinear, LoraPlan};
use crate::ops::{self, Activation};
use crate::rope::{Rope, RopeSpec};
use crate::weights::Weights;
use candle_core::{D, DType, Device, Tensor};
use packed_matmul::PackedLinear;
use std::path::Path;
use std::sync::Arc;

/// How an RMSNorm weight is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NormKind {
    /// `x̂ · w` (Llama, Phi-3).
    Plain,
    /// `x̂ · (1 + w)` (Gemma, Gemma-2).
    OnePlus,
}

/// Where a layer's RMSNorms sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NormPlacement {
    /// `input_layernorm` before attention, `post_attention_layernorm` before the MLP (Llama).
    Pre,
    /// Gemma-2/3: `input_layernorm` and `pre_feedforward_layernorm` on the sublayer inputs,
    /// `post_attention_layernorm` and `post_feedforward_layernorm` on their outputs.
    Sandwich,
    /// OLMo-2: no input norms; `post_attention_layernorm` and `post_feedforward_layernorm` on
    /// the sublayer outputs, before the residual sum.
    Post,
}

/// RMSNorm of the queries and keys before the rotary embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QkNorm {
    /// None (Llama).
    None,
    /// Per head, over `head_dim` (`q_norm.weight` `[head_dim]`): Qwen3 (plain), Gemma-3 (1 + w).
    PerHead(NormKind),
    /// Over all heads at once, before the reshape into heads (`q_norm.weight`
    /// `[heads · head_dim]`, `k_norm.weight` `[kv_heads · head_dim]`, plain): OLMo-2.
    AllHeads,
}

/// Whether projections sharing an input are stored fused in the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// `q_proj`/`k_proj`/`v_proj`, `gate_proj`/`up_proj`.
    Separate,
    /// `qkv_proj`, `gate_up_proj` (Phi-3).
    Fused,
}

impl Layout {
    /// The PEFT `target_modules` of the paper's LoRA recipe for this layout: every projection of
    /// attention and MLP, by the module names the checkpoint uses.
    pub(crate) const fn lora_targets(self) -> &'static [&'static str] {
        match self {
            Self::Separate => &[
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ],
            Self::Fused => &["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
        }
    }
}

/// Everything the shared decoder needs to know about a family and a config.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub architecture: &'static str,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub norm: NormKind,
    pub act: Activation,
    pub embed_scale: bool,
    pub attn_scale: f64,
    pub attn_softcap: Option<f64>,
    pub final_softcap: Option<f64>,
    /// Per layer: the sliding window, if that layer has one.
    pub sliding: Vec<Option<usize>>,
    /// Where the layer norms sit.
    pub norms: NormPlacement,
    /// q/k norms before the rotary embedding.
    pub qk_norm: QkNorm,
    /// The rotary embedding of the sliding-window layers, when it differs from [`Spec::rope`]
    /// (Gemma-3's `rope_local_base_freq`).
    pub local_rope: Option<RopeSpec>,
    /// Per layer: whether it applies the rotary embedding (SmolLM3's `no_rope_layers`).
    pub use_rope: Vec<bool>,
    pub layout: Layout,
    /// Biases on the q/k/v projections (fused or not).
    pub qkv_bias: bool,
    /// Bias on the output projection.
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub tie_word_embeddings: bool,
    pub rope: RopeSpec,
    /// See [`super::CausalLm::generation_cache_reset`].
    pub generation_cache_reset: Option<usize>,
}

impl Spec {
    pub(crate) fn check(&self, path: &Path) -> Result<()> {
        let pos = |k: &str, v: usize| {
            if v == 0 {
                Err(Error::config(path, k, "must be positive"))
            } else {
                Ok(())
            }
        };
        pos("vocab_size", self.vocab_size)?;
        pos("hidden_size", self.hidden_size)?;
        pos("intermediate_size", self.intermediate_size)?;
        pos("num_hidden_layers", self.num_layers)?;
        pos("num_attention_heads", self.num_heads)?;
        pos("num_key_value_heads", self.num_kv_heads)?;
        pos("head_dim", self.head_dim)?;
        pos("max_position_embeddings", self.max_position_embeddings)?;
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(Error::config(
                path,
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads {}",
                    self.num_kv_heads, self.num_heads
                ),
            ));
        }
        for (key, n) in [
            ("layer_types", self.sliding.len()),
            ("no_rope_layers", self.use_rope.len()),
        ] {
            if n != self.num_layers {
                return Err(Error::config(
                    path,
                    key,
                    format!("has {n} entries for {} layers", self.num_layers),
                ));
            }
        }
        if self.sliding.contains(&Some(0)) {
            return Err(Error::config(path, "sliding_window", "must be positive"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct RmsNorm {
    w: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(vb: &Weights, size: usize, eps: f64, kind: NormKind) -> Result<Self> {
        // transformers computes every RMSNorm of these families in f32.
        let w = match kind {
            NormKind::Plain => vb.get(&[size], "weight")?,
            // transformers multiplies by (1 + w.float()) in f32: keep the sum in f32.
            NormKind::OnePlus => (vb.get_with_dtype(&[size], "weight", DType::F32)? + 1.0)?,
        };
        Ok(Self { w, eps })
    }

    fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        ops::rms_norm(x, &self.w, self.eps, training)
    }
}

/// Projections with one input: one fused matmul split by sizes, or separate layers.
#[derive(Debug, Clone)]
enum Proj {
    Fused(LoraLinear, Vec<usize>),
    Separate(Vec<LoraLinear>),
}

impl Proj {
    /// Builds from separate layers, fusing them when inference allows (no separate LoRA path).
    fn from_separate(parts: Vec<LoraLinear>, fuse: bool, name: &str) -> Result<Self> {
        if fuse {
            let refs: Vec<&LoraLinear> = parts.iter().collect();
            if let Some(f) = LoraLinear::fuse(&refs, name)? {
                let sizes = parts
                    .iter()
                    .map(|p| p.dims().map(|d| d.0))
                    .collect::<Result<Vec<_>>>()?;
                return Ok(Self::Fused(f, sizes));
            }
        }
        Ok(Self::Separate(parts))
    }

    fn forward(&self, x: &Tensor, training: bool) -> Result<Vec<Tensor>> {
        match self {
            Self::Separate(ps) => ps.iter().map(|p| p.forward_t(x, training)).collect(),
            Self::Fused(p, sizes) => {
                let y = p.forward_t(x, training)?;
                let mut out = Vec::with_capacity(sizes.len());
                let mut off = 0;
                for &s in sizes {
                    out.push(y.narrow(D::Minus1, off, s)?);
                    off += s;
                }
                Ok(out)
            }
        }
    }
}

/// Which rotary embedding a layer applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LayerRope {
    /// The model's rope.
    Main,
    /// The sliding-window layers' own rope ([`Spec::local_rope`]).
    Local,
    /// None (SmolLM3's no-rope layers).
    Off,
}

#[derive(Debug, Clone)]
struct Attention {
    qkv: Proj,
    o: LoraLinear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    scale: f64,
    softcap: Option<f64>,
    sliding: bool,
    /// q/k norms and whether they run over all heads at once (before the reshape).
    qk_norm: Option<(RmsNorm, RmsNorm, bool)>,
    rope: LayerRope,
}

impl Attention {
    fn new(spec: &Spec, vb: &Weights, f: &LinearFactory, fuse: bool, layer: usize) -> Result<Self> {
        let (h, nh, nkv, hd) = (
            spec.hidden_size,
            spec.num_heads,
            spec.num_kv_heads,
            spec.head_dim,
        );
        let qkv = match spec.layout {
            Layout::Separate => {
                let q = f.linear(&vb.pp("q_proj"), h, nh * hd, spec.qkv_bias)?;
                let k = f.linear(&vb.pp("k_proj"), h, nkv * hd, spec.qkv_bias)?;
                let v = f.linear(&vb.pp("v_proj"), h, nkv * hd, spec.qkv_bias)?;
                Proj::from_separate(vec![q, k, v], fuse, &format!("{}.qkv", vb.prefix()))?
            }
            Layout::Fused => {
                let qkv = f.linear(&vb.pp("qkv_proj"), h, (nh + 2 * nkv) * hd, spec.qkv_bias)?;
                Proj::Fused(qkv, vec![nh * hd, nkv * hd, nkv * hd])
            }
        };
        let o = f.linear(&vb.pp("o_proj"), nh * hd, h, spec.o_bias)?;
        let eps = spec.rms_norm_eps;
        let qk_norm = match spec.qk_norm {
            QkNorm::None => None,
            QkNorm::PerHead(kind) => Some((
                RmsNorm::new(&vb.pp("q_norm"), hd, eps, kind)?,
                RmsNorm::new(&vb.pp("k_norm"), hd, eps, kind)?,
                false,
            )),
            QkNorm::AllHeads => Some((
                RmsNorm::new(&vb.pp("q_norm"), nh * hd, eps, NormKind::Plain)?,
                RmsNorm::new(&vb.pp("k_norm"), nkv * hd, eps, NormKind::Plain)?,
                true,
            )),
        };
        let sliding = spec.sliding[layer].is_some();
        let rope = if !spec.use_rope[layer] {
            LayerRope::Off
        } else if sliding && spec.local_rope.is_some() {
            LayerRope::Local
        } else {
            LayerRope::Main
        };
        Ok(Self {
            qkv,
            o,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: hd,
            scale: spec.attn_scale,
            softcap: spec.attn_softcap,
            sliding,
            qk_norm,
            rope,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &Tensor,
        st: &Step<'_>,
        cache: Option<&mut KvCache>,
        layer: usize,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let mut qkv = self.qkv.forward(x, st.training)?;
        let v = qkv.pop().ok_or_else(|| internal("qkv"))?;
        let k = qkv.pop().ok_or_else(|| internal("qkv"))?;
        let q = qkv.pop().ok_or_else(|| internal("qkv"))?;
        let (q, k) = match &self.qk_norm {
            None => (q.reshape((b, t, nh, hd))?, k.reshape((b, t, nkv, hd))?),
            Some((qn, kn, true)) => (
                qn.forward(&q, st.training)?.reshape((b, t, nh, hd))?,
                kn.forward(&k, st.training)?.reshape((b, t, nkv, hd))?,
            ),
            Some((qn, kn, false)) => (
                qn.forward(&q.reshape((b, t, nh, hd))?, st.training)?,
                kn.forward(&k.reshape((b, t, nkv, hd))?, st.training)?,
            ),
        };
        // Training on the CPU in f32: rope, scores, mask, softmax and · v as one fused op
        // (crate::fused), straight from the projections' layout.
        if st.training && cache.is_none() && self.softcap.is_none() {
            let rope = match self.rope {
                LayerRope::Main => Some((&st.cos, &st.sin)),
                LayerRope::Local => st.local.as_ref().map(|(c, s)| (c, s)),
                LayerRope::Off => None,
            };
            let mask = if self.sliding {
                &st.sliding_mask
            } else {
                &st.mask
            };
            let v4 = v.reshape((b, t, nkv, hd))?;
            if let Some(out) =
                crate::fused::attention(&q, &k, &v4, rope, mask.as_ref(), self.scale)?
            {
                return self.o.forward_t(&out, st.training);
            }
        }
        let q = q.transpose(1, 2)?.contiguous()?;
        let k = k.transpose(1, 2)?.contiguous()?;
        let v = v.reshape((b, t, nkv, hd))?.transpose(1, 2)?.contiguous()?;
        let rope = match self.rope {
            LayerRope::Main => Some((&st.cos, &st.sin)),
            LayerRope::Local => st.local.as_ref().map(|(c, s)| (c, s)),
            LayerRope::Off => None,
        };
        let (q, k) = match rope {
            Some((cos, sin)) => (
                ops::rope(&q, cos, sin, st.training)?,
                ops::rope(&k, cos, sin, st.training)?,
            ),
            None => (q, k),
        };
        let (k, v) = match cache {
            Some(c) => c.append(layer, &k, &v)?,
            None => (k, v),
        };
        let mask = if self.sliding {
            &st.sliding_mask
        } else {
            &st.mask
        };
        // Inference in f32 on the CPU: one pass over the cache per query head (crate::fused).
        if !st.training
            && let Some(out) =
                crate::fused::cached_attention(&q, &k, &v, mask.as_ref(), self.scale, self.softcap)?
        {
            return self.o.forward_t(&out, st.training);
        }
        let kv_len = k.dim(2)?;
        let rep = nh / nkv;
        // Grouped-query attention without copying K/V: the `rep` query heads of one KV head
        // become extra rows of one matmul.
        let q = (q * self.scale)?.reshape((b, nkv, rep * t, hd))?;
        let mut scores = q.matmul(&k.t()?)?;
        if scores.dtype() != DType::F32 {
            scores = scores.to_dtype(DType::F32)?;
        }
        if let Some(cap) = self.softcap {
            scores = ops::soft_cap(&scores, cap)?;
        }
        if let Some(m) = mask {
            scores = scores
                .reshape((b, nkv, rep, t, kv_len))?
                .broadcast_add(m)?
                .reshape((b, nkv, rep * t, kv_len))?;
        }
        let probs = ops::softmax_last_dim(&scores, st.training)?.to_dtype(v.dtype())?;
        let out = probs.matmul(&v)?; // [b, nkv, rep*t, hd]
        let out = out
            .reshape((b, nh, t, hd))?
            .transpose(1, 2)?
            .reshape((b, t, nh * hd))?;
        self.o.forward_t(&out, st.training)
    }
}

fn internal(what: &str) -> Error {
    Error::InvalidParam {
        name: "internal",
        msg: format!("{what}: unexpected split"),
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    gate_up: Proj,
    down: LoraLinear,
    act: Activation,
}

impl Mlp {
    fn new(spec: &Spec, vb: &Weights, f: &LinearFactory, fuse: bool) -> Result<Self> {
        let (h, i) = (spec.hidden_size, spec.intermediate_size);
        let gate_up = match spec.layout {
            Layout::Separate => {
                let g = f.linear(&vb.pp("gate_proj"), h, i, spec.mlp_bias)?;
                let u = f.linear(&vb.pp("up_proj"), h, i, spec.mlp_bias)?;
                Proj::from_separate(vec![g, u], fuse, &format!("{}.gate_up", vb.prefix()))?
            }
            Layout::Fused => Proj::Fused(
                f.linear(&vb.pp("gate_up_proj"), h, 2 * i, spec.mlp_bias)?,
                vec![i, i],
            ),
        };
        let down = f.linear(&vb.pp("down_proj"), i, h, spec.mlp_bias)?;
        Ok(Self {
            gate_up,
            down,
            act: spec.act,
        })
    }

    fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let mut gu = self.gate_up.forward(x, training)?;
        let up = gu.pop().ok_or_else(|| internal("gate_up"))?;
        let gate = gu.pop().ok_or_else(|| internal("gate_up"))?;
        // In f32 on the CPU: one fused, vectorised op (crate::fused) instead of the composed
        // graph (which calls libm per element and makes two more passes).
        let fused = crate::fused::gated(self.act, &gate, &up)?;
        let h = match fused {
            Some(h) => h,
            None => (self.act.apply(&gate)? * up)?,
        };
        self.down.forward_t(&h, training)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    input_norm: Option<RmsNorm>,
    attn: Attention,
    post_attn_norm: RmsNorm,
    pre_ff_norm: Option<RmsNorm>,
    post_ff_norm: Option<RmsNorm>,
    mlp: Mlp,
}

impl Layer {
    fn new(spec: &Spec, vb: &Weights, f: &LinearFactory, fuse: bool, i: usize) -> Result<Self> {
        let n =
            |name: &str| RmsNorm::new(&vb.pp(name), spec.hidden_size, spec.rms_norm_eps, spec.norm);
        let (input, pre_ff, post_ff) = match spec.norms {
            NormPlacement::Pre => (true, false, false),
            NormPlacement::Sandwich => (true, true, true),
            NormPlacement::Post => (false, false, true),
        };
        let opt = |on: bool, name: &str| if on { n(name).map(Some) } else { Ok(None) };
        Ok(Self {
            input_norm: opt(input, "input_layernorm")?,
            attn: Attention::new(spec, &vb.pp("self_attn"), f, fuse, i)?,
            post_attn_norm: n("post_attention_layernorm")?,
            pre_ff_norm: opt(pre_ff, "pre_feedforward_layernorm")?,
            post_ff_norm: opt(post_ff, "post_feedforward_layernorm")?,
            mlp: Mlp::new(spec, &vb.pp("mlp"), f, fuse)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        st: &Step<'_>,
        cache: Option<&mut KvCache>,
        i: usize,
    ) -> Result<Tensor> {
        let tr = st.training;
        let h = match &self.input_norm {
            Some(n) => self.attn.forward(&n.forward(x, tr)?, st, cache, i)?,
            None => self.attn.forward(x, st, cache, i)?,
        };
        match (&self.pre_ff_norm, &self.post_ff_norm) {
            (Some(pre), Some(post)) => {
                let x = (x + self.post_attn_norm.forward(&h, tr)?)?;
                let m = self.mlp.forward(&pre.forward(&x, tr)?, tr)?;
                Ok((&x + post.forward(&m, tr)?)?)
            }
            (None, Some(post)) => {
                let x = (x + self.post_attn_norm.forward(&h, tr)?)?;
                let m = self.mlp.forward(&x, tr)?;
                Ok((&x + post.forward(&m, tr)?)?)
            }
            _ => {
                let x = (x + h)?;
                let m = self
                    .mlp
                    .forward(&self.post_attn_norm.forward(&x, tr)?, tr)?;
                Ok((x + m)?)
            }
        }
    }
}

/// Per-call state shared by the layers.
struct Step<'a> {
    cos: Tensor,
    sin: Tensor,
    /// `cos`, `sin` of the sliding layers' own rope, when the model has one.
    local: Option<(Tensor, Tensor)>,
    mask: Option<Tensor>,
    sliding_mask: Option<Tensor>,
    training: bool,
    _p: std::marker::PhantomData<&'a ()>,
}

/// The shared decoder.
#[derive(Debug, Clone)]
pub(crate) struct Decoder {
    embed: Embedding,
    embed_scale: Option<Tensor>,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: LoraLinear,
    rope: Rope,
    local_rope: Option<Rope>,
    final_softcap: Option<f64>,
    window: Option<usize>,
    generation_cache_reset: Option<usize>,
    info: ModelInfo,
}

impl Decoder {
    pub(crate) fn new(spec: &Spec, path: &Path, vb: &Weights, f: &LinearFactory) -> Result<Self> {
        spec.check(path)?;
        let fuse = !matches!(f.plan(), LoraPlan::Train { .. });
        let m = vb.pp("model");
        // The head first: its load-time copies (the largest of the model) are then made while
        // little else is resident, which keeps the peak memory of loading low.
        let tied = spec.tie_word_embeddings && !vb.contains("lm_head.weight");
        // A quantized GGUF head tied to the embedding, for inference: kept quantized in the
        // panels, the embedding looked up in it (rows dequantized exactly as at load).
        let quantized_head = if tied && fuse && !f.plan().targets("lm_head") {
            f.gguf_quantized(
                &m.pp("embed_tokens"),
                "lm_head",
                spec.hidden_size,
                spec.vocab_size,
                None,
            )?
        } else {
            None
        };
        let embed = match quantized_head {
            Some(_) => None,
            None => Some(
                m.pp("embed_tokens")
                    .get(&[spec.vocab_size, spec.hidden_size], "weight")?,
            ),
        };
        let embed_scale = if spec.embed_scale {
            // transformers: tensor(hidden ** 0.5) cast to the weight dtype, then multiplied.
            let s = (spec.hidden_size as f64).sqrt() as f32;
            Some(Tensor::new(s, vb.device())?.to_dtype(vb.dtype())?)
        } else {
            None
        };
        let (embed, lm_head) = if let Some(p) = quantized_head {
            let p = Arc::new(p);
            (
                Embedding::TiedHead(Arc::clone(&p)),
                LoraLinear::packed_plain(p, "lm_head"),
            )
        } else if tied && let Some(embed) = embed {
            let head = f.wrap(embed.clone(), None, "lm_head")?;
            let cpu_f32 = embed.dtype() == DType::F32 && embed.device().is_cpu();
            if fuse
                && cpu_f32
                && !head.has_lora()
                && !f.wrapped_modules().iter().any(|m| m == "lm_head")
            {
                // Inference on the CPU: the head packed, and the embedding looked up in it, so
                // the matrix is held once (and the table tensor dropped).
                let head = head.into_packed()?;
                match head.packed() {
                    Some(p) => {
                        drop(embed); // freed now, not after the layers are loaded
                        (Embedding::TiedHead(p), head)
                    }
                    None => (Embedding::Table(embed), head),
                }
            } else {
                (Embedding::Table(embed), head)
            }
        } else {
            let embed = embed.ok_or_else(|| internal("embedding"))?;
            let head = f.linear(&vb.pp("lm_head"), spec.hidden_size, spec.vocab_size, false)?;
            (Embedding::Table(embed), head)
        };
        let rope = Rope::new(&spec.rope, spec.head_dim, path)?;
        let local_rope = match &spec.local_rope {
            Some(r) => Some(Rope::new(r, spec.head_dim, path)?),
            None => None,
        };
        let mut layers = Vec::with_capacity(spec.num_layers);
        for i in 0..spec.num_layers {
            layers.push(Layer::new(spec, &m.pp("layers").pp(i), f, fuse, i)?);
        }
        let norm = RmsNorm::new(
            &m.pp("norm"),
            spec.hidden_size,
            spec.rms_norm_eps,
            spec.norm,
        )?;
        f.finish()?;
        let (h, i, v, l) = (
            spec.hidden_size,
            spec.intermediate_size,
            spec.vocab_size,
            spec.num_layers,
        );
        let (nh, nkv, hd) = (spec.num_heads, spec.num_kv_heads, spec.head_dim);
        let qk_norm = match spec.qk_norm {
            QkNorm::None => 0,
            QkNorm::PerHead(_) => 2 * hd,
            QkNorm::AllHeads => (nh + nkv) * hd,
        };
        let biases = if spec.qkv_bias {
            (nh + 2 * nkv) * hd
        } else {
            0
        } + if spec.o_bias { h } else { 0 }
            + if spec.mlp_bias { 2 * i + h } else { 0 };
        let per_layer = h * (nh + 2 * nkv) * hd
            + nh * hd * h
            + 3 * h * i
            + biases
            + qk_norm
            + h * match spec.norms {
                NormPlacement::Pre | NormPlacement::Post => 2,
                NormPlacement::Sandwich => 4,
            };
        let head = if spec.tie_word_embeddings { 0 } else { v * h };
        let num_params = v * h + l * per_layer + h + head;
        let window = spec.sliding.iter().flatten().copied().min();
        Ok(Self {
            embed,
            embed_scale,
            layers,
            norm,
            lm_head,
            rope,
            local_rope,
            final_softcap: spec.final_softcap,
            window,
            generation_cache_reset: spec.generation_cache_reset,
            info: ModelInfo {
                architecture: spec.architecture.to_string(),
                vocab_size: v,
                hidden_size: h,
                intermediate_size: spec.intermediate_size,
                num_layers: l,
                num_heads: spec.num_heads,
                num_kv_heads: nkv,
                head_dim: hd,
                max_position_embeddings: spec.max_position_embeddings,
                dtype: vb.dtype(),
                device: vb.device().clone(),
                num_params,
            },
        })
    }

    pub(crate) fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub(crate) fn generation_cache_reset(&self) -> Option<usize> {
        self.generation_cache_reset
    }

    pub(crate) fn forward(&self, ctx: ForwardCtx<'_>) -> Result<Tensor> {
        let ForwardCtx {
            input_ids,
            attention_mask,
            position_ids,
            mut cache,
            training,
            logits,
            rope_seq_len,
        } = ctx;
        let (b, t) = input_ids.dims2()?;
        if t == 0 {
            return Err(Error::InvalidParam {
                name: "input_ids",
                msg: "zero-length sequence".into(),
            });
        }
        let past = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        let st = match position_ids {
            // One decode step off the CPU: positions, cos/sin and the masks stay on the device.
            Some(pos) if t == 1 && resident_step(&self.info.device) => {
                self.device_step(attention_mask, pos, rope_seq_len, b, past, training)?
            }
            _ => self.host_step(
                attention_mask,
                position_ids,
                rope_seq_len,
                (b, t),
                past,
                training,
            )?,
        };
        let ids = input_ids.to_dtype(DType::U32)?.flatten_all()?;
        let mut x = self
            .embed
            .lookup(&ids)?
            .reshape((b, t, self.info.hidden_size))?;
        if let Some(s) = &self.embed_scale {
            x = x.broadcast_mul(s)?;
        }
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, &st, cache.as_deref_mut(), i)?;
        }
        if let Some(c) = cache {
            c.advance(t);
        }
        if logits == LogitsWanted::Last {
            x = x.narrow(1, t - 1, 1)?;
        }
        let x = self.norm.forward(&x, training)?;
        let mut out = self.lm_head.forward_t(&x, training)?;
        if let Some(cap) = self.final_softcap {
            out = ops::soft_cap(&out, cap)?;
        }
        Ok(out)
    }

    /// The per-call state computed on the host: positions from the mask (read back) or given,
    /// cos/sin and the additive masks built there and uploaded.
    fn host_step(
        &self,
        attention_mask: Option<&Tensor>,
        position_ids: Option<&Tensor>,
        rope_seq_len: Option<usize>,
        (b, t): (usize, usize),
        past: usize,
        training: bool,
    ) -> Result<Step<'static>> {
        let total = past + t;
        let device = &self.info.device;
        let valid: Option<Vec<Vec<f32>>> = match attention_mask {
            Some(m) => {
                let (mb, mt) = m.dims2()?;
                if mb != b || mt != total {
                    return Err(Error::InvalidParam {
                        name: "attention_mask",
                        msg: format!(
                            "shape [{mb}, {mt}], expected [{b}, {total}] (past {past} + new {t})"
                        ),
                    });
                }
                Some(m.to_dtype(DType::F32)?.to_vec2::<f32>()?)
            }
            None => None,
        };
        let pos: Vec<u32> = match position_ids {
            Some(p) => {
                let (pb, pt) = p.dims2()?;
                if pb != b || pt != t {
                    return Err(Error::InvalidParam {
                        name: "position_ids",
                        msg: format!("shape [{pb}, {pt}], expected [{b}, {t}]"),
                    });
                }
                p.to_dtype(DType::U32)?.flatten_all()?.to_vec1::<u32>()?
            }
            None => match &valid {
                Some(rows) => {
                    let mut out = Vec::with_capacity(b * t);
                    for row in rows {
                        let mut c: i64 = 0;
                        let mut all = Vec::with_capacity(total);
                        for &m in row {
                            let real = m != 0.0;
                            c += real as i64;
                            all.push(if real { (c - 1) as u32 } else { 0 });
                        }
                        out.extend_from_slice(&all[past..]);
                    }
                    out
                }
                None => (0..b)
                    .flat_map(|_| (past..total).map(|p| p as u32))
                    .collect(),
            },
        };
        let (cos, sin) = self
            .rope
            .cos_sin(&pos, rope_seq_len, (b, t), self.info.dtype, device)?;
        let local = match &self.local_rope {
            Some(r) => Some(r.cos_sin(&pos, rope_seq_len, (b, t), self.info.dtype, device)?),
            None => None,
        };
        let mask = build_mask(valid.as_deref(), b, t, past, None, device)?;
        let sliding_mask = match self.window {
            Some(w) if w < total => build_mask(valid.as_deref(), b, t, past, Some(w), device)?,
            _ => mask.clone(),
        };
        let st = Step {
            cos,
            sin,
            local,
            mask,
            sliding_mask,
            training,
            _p: std::marker::PhantomData,
        };
        Ok(st)
    }

    /// The state of one decode step (`t == 1`) with given positions `[b, 1]`, computed on the
    /// model's device without reading anything back: cos/sin from the positions, the additive
    /// masks from the padding mask (see [`device_mask_t1`]).
    fn device_step(
        &self,
        attention_mask: Option<&Tensor>,
        pos: &Tensor,
        rope_seq_len: Option<usize>,
        b: usize,
        past: usize,
        training: bool,
    ) -> Result<Step<'static>> {
        let total = past + 1;
        let (pb, pt) = pos.dims2()?;
        if pb != b || pt != 1 {
            return Err(Error::InvalidParam {
                name: "position_ids",
                msg: format!("shape [{pb}, {pt}], expected [{b}, 1]"),
            });
        }
        if let Some(m) = attention_mask {
            let (mb, mt) = m.dims2()?;
            if mb != b || mt != total {
                return Err(Error::InvalidParam {
                    name: "attention_mask",
                    msg: format!(
                        "shape [{mb}, {mt}], expected [{b}, {total}] (past {past} + new 1)"
                    ),
                });
            }
        }
        let dtype = self.info.dtype;
        let (cos, sin) = self.rope.cos_sin_tensor(pos, rope_seq_len, dtype)?;
        let local = match &self.local_rope {
            Some(r) => Some(r.cos_sin_tensor(pos, rope_seq_len, dtype)?),
            None => None,
        };
        let device = &self.info.device;
        let mask = device_mask_t1(attention_mask, b, total, None, device)?;
        let sliding_mask = match self.window {
            Some(w) if w < total => device_mask_t1(attention_mask, b, total, Some(w), device)?,
            _ => mask.clone(),
        };
        Ok(Step {
            cos,
            sin,
            local,
            mask,
            sliding_mask,
            training,
            _p: std::marker::PhantomData,
        })
    }
}

/// The token embedding table.
#[derive(Debug, Clone)]
enum Embedding {
    /// `[vocab, hidden]`.
    Table(Tensor),
    /// A tied head stored packed for inference: row `i` of its weight is token `i`'s embedding.
    TiedHead(Arc<PackedLinear>),
}

impl Embedding {
    /// The embeddings of flat `u32` token ids, `[ids, hidden]`.
    fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            Self::Table(t) => Ok(t.index_select(ids, 0)?),
            Self::TiedHead(p) => {
                let ids = ids.to_vec1::<u32>()?;
                let h = p.in_dim();
                let mut out = vec![0f32; ids.len() * h];
                for (row, &id) in out.chunks_mut(h.max(1)).zip(&ids) {
                    p.row(id as usize, row).map_err(|e| Error::InvalidParam {
                        name: "input_ids",
                        msg: format!("token id {id}: {e}"),
                    })?;
                }
                Ok(Tensor::from_vec(out, (ids.len(), h), &Device::Cpu)?)
            }
        }
    }
}

/// The additive attention mask `[b, 1, 1, t, past + t]` (0 = attend, −∞ = masked): causal,
/// padding, and the sliding window when given (`key > query − window`, as transformers). A query
/// always sees itself, so padding rows never turn into NaN. `None` when nothing is masked.
fn build_mask(
    valid: Option<&[Vec<f32>]>,
    b: usize,
    t: usize,
    past: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Option<Tensor>> {
    let total = past + t;
    if t == 1 && valid.is_none() && window.is_none_or(|w| w >= total) {
        return Ok(None);
    }
    let mut m = vec![0f32; b * t * total];
    for bi in 0..b {
        for qi in 0..t {
            let q = past + qi;
            let row = &mut m[(bi * t + qi) * total..(bi * t + qi + 1) * total];
            for (k, slot) in row.iter_mut().enumerate() {
                let ok = k == q
                    || (k < q
                        && valid.is_none_or(|v| v[bi][k] != 0.0)
                        && window.is_none_or(|w| k + w > q));
                if !ok {
                    *slot = f32::NEG_INFINITY;
                }
            }
        }
    }
    Ok(Some(Tensor::from_vec(m, (b, 1, 1, t, total), device)?))
}

/// Whether a decode step keeps its state on the model's device (positions given by the
/// generator, cos/sin and masks computed there, greedy ids chosen there): on every device but
/// the CPU, whose host path is the tested and benchmarked one. This crate's tests can force it
/// on the CPU ([`force_resident_step`]).
pub(crate) fn resident_step(device: &Device) -> bool {
    #[cfg(test)]
    if FORCE_RESIDENT.with(|f| f.get()) {
        return true;
    }
    !device.is_cpu()
}

#[cfg(test)]
thread_local! {
    static FORCE_RESIDENT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs the device-resident decode step on the CPU too, in this thread (tests only).
#[cfg(test)]
pub(crate) fn force_resident_step(on: bool) {
    FORCE_RESIDENT.with(|f| f.set(on));
}

/// [`build_mask`] for one query per row (`t == 1`, the query at `total − 1`) from a padding mask
/// `[b, total]` that stays on its device: `[b, 1, 1, 1, total]`, 0 where a key is a real token
/// (non-zero) inside the window and −∞ elsewhere; the query always sees itself. Device ops only,
/// nothing read back; the values of [`build_mask`]. `None` when nothing is masked.
fn device_mask_t1(
    valid: Option<&Tensor>,
    b: usize,
    total: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Option<Tensor>> {
    let window = window.filter(|&w| w < total);
    if valid.is_none() && window.is_none() {
        return Ok(None);
    }
    let keys = total - 1; // the columns before the query
    let neg = |n: usize| Tensor::full(f32::NEG_INFINITY, (b, n), device);
    let mut parts = Vec::with_capacity(3);
    // Keys outside the window: k + w <= q, i.e. the first total − w columns.
    let outside = window.map_or(0, |w| total - w);
    if outside > 0 {
        parts.push(neg(outside)?);
    }
    let inside = keys - outside;
    if inside > 0 {
        let zeros = Tensor::zeros((b, inside), DType::F32, device)?;
        parts.push(match valid {
            Some(m) => {
                let m = m.narrow(1, outside, inside)?;
                let real = match m.dtype() {
                    DType::U8 | DType::U32 | DType::I64 => m,
                    _ => m.ne(&m.zeros_like()?)?,
                };
                real.where_cond(&zeros, &neg(inside)?)?
            }
            None => zeros,
        });
    }
    parts.push(Tensor::zeros((b, 1), DType::F32, device)?);
    let m = Tensor::cat(&parts, 1)?;
    Ok(Some(m.reshape((b, 1, 1, 1, total))?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::common::{ActivationKeys, CommonConfig, Defaults};
    use std::collections::HashMap;

    const H: usize = 8;
    const HEADS: usize = 2;
    const KV: usize = 1;
    const HD: usize = 4;
    const I: usize = 16;
    const V: usize = 10;

    fn values(shape: &[usize], seed: f64) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| (0.5 * ((i as f64) * 0.37 + seed).sin()) as f32)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
    }

    /// A one-layer Llama-layout checkpoint, with q/k/v biases (scaled by `bias_scale`) and no
    /// o_proj bias, written to a temporary directory.
    fn checkpoint(bias_scale: f64) -> (tempfile::TempDir, Weights) {
        let l = "model.layers.0";
        let mut t: HashMap<String, Tensor> = HashMap::new();
        let mut put = |name: String, shape: &[usize]| {
            let seed = t.len() as f64;
            t.insert(name, values(shape, seed));
        };
        put("model.embed_tokens.weight".into(), &[V, H]);
        put(format!("{l}.input_layernorm.weight"), &[H]);
        put(format!("{l}.post_attention_layernorm.weight"), &[H]);
        put(format!("{l}.self_attn.q_proj.weight"), &[HEADS * HD, H]);
        put(format!("{l}.self_attn.k_proj.weight"), &[KV * HD, H]);
        put(format!("{l}.self_attn.v_proj.weight"), &[KV * HD, H]);
        put(format!("{l}.self_attn.o_proj.weight"), &[H, HEADS * HD]);
        put(format!("{l}.mlp.gate_proj.weight"), &[I, H]);
        put(format!("{l}.mlp.up_proj.weight"), &[I, H]);
        put(format!("{l}.mlp.down_proj.weight"), &[H, I]);
        put("model.norm.weight".into(), &[H]);
        put("lm_head.weight".into(), &[V, H]);
        for (p, n) in [("q", HEADS * HD), ("k", KV * HD), ("v", KV * HD)] {
            let b = (values(&[n], 3.0) * bias_scale).expect("bias");
            t.insert(format!("{l}.self_attn.{p}_proj.bias"), b);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        candle_core::safetensors::save(&t, dir.path().join("model.safetensors")).expect("save");
        let ck = crate::weights::Checkpoint::open_dir(dir.path()).expect("open");
        let vb = Weights::new(Arc::new(ck), DType::F32, &Device::Cpu);
        (dir, vb)
    }

    fn spec(qkv_bias: bool, o_bias: bool) -> Spec {
        let c: CommonConfig = serde_json::from_value(serde_json::json!({
            "vocab_size": V, "hidden_size": H, "intermediate_size": I,
            "num_hidden_layers": 1, "num_attention_heads": HEADS,
            "num_key_value_heads": KV, "head_dim": HD,
            "some_unknown_hub_key": [1, 2, 3],
        }))
        .expect("config");
        let defaults = Defaults {
            layout: Layout::Separate,
            rms_norm_eps: 1e-6,
            max_position_embeddings: 64,
            head_dim: None,
            tie_word_embeddings: false,
            activation: ActivationKeys::HiddenAct,
            rope_theta: 10000.0,
            rope_layer_type: None,
        };
        let mut s =
            Spec::from_common(&c, "LlamaForCausalLM", &defaults, Path::new("cfg")).expect("spec");
        assert!(!s.qkv_bias && !s.o_bias, "attention_bias defaults to false");
        s.qkv_bias = qkv_bias;
        s.o_bias = o_bias;
        s
    }

    fn logits(spec: &Spec, vb: &Weights) -> Result<Vec<f32>> {
        let f = LinearFactory::new(LoraPlan::None)?;
        let d = Decoder::new(spec, Path::new("cfg"), vb, &f)?;
        let ids = Tensor::new(&[[1u32, 3, 5]], &Device::Cpu)?;
        Ok(d.forward(ForwardCtx::new(&ids))?.flatten_all()?.to_vec1()?)
    }

    #[test]
    fn qkv_bias_and_o_bias_are_separate_knobs() {
        let (_d1, with_bias) = checkpoint(1.0);
        let (_d0, zero_bias) = checkpoint(0.0);
        // q/k/v biases without an o_proj bias (Qwen2's layout) load, and are applied.
        let biased = logits(&spec(true, false), &with_bias).expect("qkv bias, no o bias");
        let zero = logits(&spec(true, false), &zero_bias).expect("zero qkv bias");
        assert!(biased.iter().zip(&zero).any(|(a, b)| (a - b).abs() > 1e-4));
        // Without the knob the biases in the file are not read.
        let unbiased = logits(&spec(false, false), &with_bias).expect("no bias");
        assert_eq!(unbiased, zero);
        // An o_proj bias is looked for only when asked, and its absence names the tensor.
        let e = logits(&spec(true, true), &with_bias).expect_err("o bias is absent");
        assert!(
            matches!(&e, Error::MissingTensor { name, .. } if name.ends_with("o_proj.bias")),
            "{e}"
        );
    }
}
