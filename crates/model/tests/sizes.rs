//! Parameter counts of the paper's models from their published configs
//! (google/gemma-2b, google/gemma-7b): the DESIGN.md memory table is
//! computed from these numbers.

use marlhf_model::lora::{self, Target};
use marlhf_model::{params, ModelConfig};

fn gemma(hidden: usize, mlp: usize, layers: usize, heads: usize, kv: usize) -> ModelConfig {
    ModelConfig::from_json(&format!(
        r#"{{"architectures":["GemmaForCausalLM"],"model_type":"gemma","vocab_size":256000,
        "hidden_size":{hidden},"intermediate_size":{mlp},"num_hidden_layers":{layers},
        "num_attention_heads":{heads},"num_key_value_heads":{kv},"head_dim":256,
        "max_position_embeddings":8192,"rms_norm_eps":1e-6,"rope_theta":10000.0,
        "rope_scaling":null,"attention_bias":false,"attention_dropout":0.0,
        "hidden_act":"gelu","bos_token_id":2,"eos_token_id":1,"pad_token_id":0,
        "initializer_range":0.02,"torch_dtype":"bfloat16","use_cache":true,
        "transformers_version":"4.38.0.dev0"}}"#
    ))
    .unwrap()
}

#[test]
fn gemma_2b_and_7b_parameter_counts() {
    // Per layer of Gemma-2B: q 2048·2048 + k, v 2048·256 each + o 2048·2048
    // + MLP 3·2048·16384 + 2 norms = 110,104,576; × 18 + embeddings
    // 256000·2048 (tied) + final norm 2048.
    let c2 = gemma(2048, 16384, 18, 8, 1);
    c2.validate().unwrap();
    assert_eq!(params::count(&c2).unwrap(), 2_506_172_416);
    // Gemma-7B: 4 · 3072·4096 + 3 · 3072·24576 + 2·3072 = 276,830,208 per
    // layer; × 28 + 256000·3072 + 3072.
    let c7 = gemma(3072, 24576, 28, 16, 16);
    c7.validate().unwrap();
    assert_eq!(params::count(&c7).unwrap(), 8_537_680_896);
}

/// The LoRA rows of the memory table: adapters on all seven projections.
/// Gemma-2B per layer and unit of rank: q 2048+2048, k and v 2048+256
/// each, o 2048+2048, gate, up and down 2048+16384 each = 68,096; Gemma-7B
/// (16 KV heads): four attention projections of 3072+4096 and three MLP
/// ones of 3072+24576 = 111,616.
#[test]
fn gemma_lora_parameter_counts() {
    let (c2, c7) = (gemma(2048, 16384, 18, 8, 1), gemma(3072, 24576, 28, 16, 16));
    for (r, n2, n7) in [
        (8, 9_805_824, 25_001_984),
        (16, 19_611_648, 50_003_968),
        (64, 78_446_592, 200_015_872),
    ] {
        assert_eq!(lora::count(&c2, r, &Target::ALL), n2, "Gemma-2B r {r}");
        assert_eq!(lora::count(&c7, r, &Target::ALL), n7, "Gemma-7B r {r}");
        assert_eq!(n2, 68_096 * 18 * r as u64);
        assert_eq!(n7, 111_616 * 28 * r as u64);
    }
}
