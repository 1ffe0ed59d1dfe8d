//! `marlhf-import`: llama2.c checkpoint + tokenizer → Hugging Face layout.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use clap::Parser;
use marlhf_model::{checkpoint, llama2c};

// The allocator is the binary's choice (see marlhf_cli's docs).
#[global_allocator]
static GLOBAL: marlhf_cli::MiMalloc = marlhf_cli::MiMalloc;

/// Convert a llama2.c model (e.g. ../shared/models/stories260K) into a
/// checkpoint directory (config.json, model.safetensors, tokenizer.json).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// llama2.c model file
    #[arg(long, default_value = "../shared/models/stories260K/stories260K.bin")]
    model: PathBuf,
    /// llama2.c tokenizer file
    #[arg(long, default_value = "../shared/models/stories260K/tok512.bin")]
    tokenizer: PathBuf,
    /// Output checkpoint directory
    #[arg(long)]
    out: PathBuf,
}

fn main() {
    marlhf_cli::stage_main("import", || {
        let cli = Cli::parse();
        let (cfg, params) = llama2c::import_model(&cli.model, &candle_core::Device::Cpu)?;
        let tok = llama2c::import_tokenizer(&cli.tokenizer, cfg.vocab_size)?;
        marlhf_data::atomic::write_dir(&cli.out, |tmp: &Path| -> anyhow::Result<()> {
            let tok_path = tmp.join(checkpoint::TOKENIZER);
            std::fs::write(&tok_path, tok)?;
            std::fs::write(tmp.join(checkpoint::CONFIG), cfg.to_json()?)?;
            params.save(&tmp.join(checkpoint::WEIGHTS))?;
            Ok(())
        })?;
        let mut s = marlhf_cli::Summary::new("import");
        s.add("checkpoint", cli.out.display())
            .add("parameters", params.num_params())
            .add(
                "shape",
                format!(
                    "dim {} · {} layers · {} heads ({} kv) · vocab {}",
                    cfg.hidden_size,
                    cfg.num_hidden_layers,
                    cfg.num_attention_heads,
                    cfg.kv_heads(),
                    cfg.vocab_size
                ),
            );
        s.print();
        Ok(())
    })
}
