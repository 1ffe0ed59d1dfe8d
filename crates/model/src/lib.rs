//! marlhf's model layer: trainable Llama-family causal LMs in candle
//! (Llama, Mistral, Qwen2, Qwen3, Gemma, Gemma 2),
//! Hugging Face checkpoints with value heads, AdamW with saved state, and
//! batched generation with a KV cache.

pub mod adamw;
pub mod checkpoint;
pub mod config;
pub mod decode;
pub mod device;
pub mod generate;
pub mod kernels;
pub mod llama;
pub mod llama2c;
pub mod lm;
pub mod lora;
pub mod names;
pub mod ops;
pub mod padding;
pub mod params;
pub mod rope;
pub mod tokenizer;

pub use checkpoint::Checkpoint;
pub use config::ModelConfig;
pub use lm::Model;
pub use params::Params;
pub use tokenizer::Tokenizer;
