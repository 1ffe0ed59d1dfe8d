//! The tensor names of a Hugging Face Llama-family checkpoint, spelled
//! once: the parameter list ([`crate::params`]), the model's loader
//! ([`crate::llama`]) and the llama2.c importer ([`crate::llama2c`]) all
//! name tensors through these.

/// The token embeddings, `[vocab, hidden]`.
pub const EMBED: &str = "model.embed_tokens.weight";
/// The final norm before the LM head.
pub const FINAL_NORM: &str = "model.norm.weight";
/// The LM head, `[vocab, hidden]` (absent when tied to [`EMBED`]).
pub const LM_HEAD: &str = "lm_head.weight";
/// The scalar value head of reward models and critics, `[1, hidden]`.
pub const V_HEAD: &str = "v_head.weight";

/// The prefix of decoder layer `i`'s tensors.
pub fn layer(i: usize) -> String {
    format!("model.layers.{i}")
}

// Inside a layer, after its prefix and a dot. Norms are tensors; the
// projections are linear layers whose tensors are `.weight` and `.bias`.
pub const INPUT_NORM: &str = "input_layernorm.weight";
pub const POST_ATTENTION_NORM: &str = "post_attention_layernorm.weight";
/// Gemma 2's sandwich norms around the MLP.
pub const PRE_FEEDFORWARD_NORM: &str = "pre_feedforward_layernorm.weight";
pub const POST_FEEDFORWARD_NORM: &str = "post_feedforward_layernorm.weight";
/// Qwen3's per-head norms of queries and keys.
pub const Q_NORM: &str = "self_attn.q_norm.weight";
pub const K_NORM: &str = "self_attn.k_norm.weight";
pub const Q_PROJ: &str = "self_attn.q_proj";
pub const K_PROJ: &str = "self_attn.k_proj";
pub const V_PROJ: &str = "self_attn.v_proj";
pub const O_PROJ: &str = "self_attn.o_proj";
pub const GATE_PROJ: &str = "mlp.gate_proj";
pub const UP_PROJ: &str = "mlp.up_proj";
pub const DOWN_PROJ: &str = "mlp.down_proj";

/// `name` inside the layer whose prefix is `layer`.
pub fn in_layer(layer: &str, name: &str) -> String {
    format!("{layer}.{name}")
}

/// The weight of the linear layer `linear`.
pub fn weight(linear: &str) -> String {
    format!("{linear}.weight")
}
