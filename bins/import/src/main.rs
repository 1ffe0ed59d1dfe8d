//! `marlhf-import`: llama2.c checkpoint + tokenizer → Hugging Face layout;
//! `marlhf-import merge`: a LoRA adapter merged into its base → a full
//! Hugging Face checkpoint.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use marlhf_model::{checkpoint, llama2c, lora};

// The allocator is the binary's choice (see marlhf_cli's docs).
#[global_allocator]
static GLOBAL: marlhf_cli::MiMalloc = marlhf_cli::MiMalloc;

/// Convert a llama2.c model (e.g. ../shared/models/stories260K) into a
/// checkpoint directory (config.json, model.safetensors, tokenizer.json),
/// or with `merge`, a PEFT LoRA adapter and its base into one.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// llama2.c model file
    #[arg(long, default_value = "../shared/models/stories260K/stories260K.bin")]
    model: PathBuf,
    /// llama2.c tokenizer file
    #[arg(long, default_value = "../shared/models/stories260K/tok512.bin")]
    tokenizer: PathBuf,
    /// Output checkpoint directory
    #[arg(long, required = true)]
    out: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Merge a LoRA adapter (adapter_config.json + adapter_model.safetensors,
    /// its base named by base_model_name_or_path) into its base: W + s·B·A
    /// for every adapted projection, written as a full checkpoint in f32
    /// (a reward model's or critic's value head included) that
    /// transformers loads with from_pretrained
    Merge {
        /// The adapter directory (written by marlhf or by peft)
        #[arg(long)]
        adapter: PathBuf,
        /// Output checkpoint directory (written atomically)
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() {
    marlhf_cli::stage_main("import", || {
        let cli = Cli::parse();
        match &cli.command {
            Some(Command::Merge { adapter, out }) => merge(adapter, out),
            None => import(&cli),
        }
    })
}

fn import(cli: &Cli) -> anyhow::Result<()> {
    let out = cli.out.as_ref().expect("clap requires --out");
    let (cfg, params) = llama2c::import_model(&cli.model, &candle_core::Device::Cpu)?;
    let tok = llama2c::import_tokenizer(&cli.tokenizer, cfg.vocab_size)?;
    marlhf_data::atomic::write_dir(out, |tmp: &Path| -> anyhow::Result<()> {
        let tok_path = tmp.join(checkpoint::TOKENIZER);
        std::fs::write(&tok_path, tok)?;
        std::fs::write(tmp.join(checkpoint::CONFIG), cfg.to_json()?)?;
        params.save(&tmp.join(checkpoint::WEIGHTS))?;
        Ok(())
    })?;
    let mut s = marlhf_cli::Summary::new("import");
    s.add("checkpoint", out.display())
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
}

fn merge(adapter: &Path, out: &Path) -> anyhow::Result<()> {
    if !lora::is_adapter(adapter) {
        anyhow::bail!(
            "{}: not a LoRA adapter directory (no {} without full weights)",
            adapter.display(),
            lora::ADAPTER_CONFIG
        );
    }
    marlhf_data::atomic::check_writable(out)?;
    let ck = marlhf_model::Checkpoint::load_with(
        adapter,
        &candle_core::Device::Cpu,
        candle_core::DType::F32,
        checkpoint::Use::Training,
    )?;
    let (base, _) = checkpoint::split(adapter)?;
    let cfg = lora::AdapterConfig::load(&adapter.join(lora::ADAPTER_CONFIG))?;
    marlhf_data::atomic::write_dir(out, |tmp: &Path| ck.save_into(tmp))?;
    let mut s = marlhf_cli::Summary::new("import merge");
    s.add("checkpoint", out.display())
        .add("base", base.display())
        .add(
            "adapter",
            format!(
                "{} (r {}, alpha {}, scaling {}, {})",
                adapter.display(),
                cfg.r,
                cfg.alpha,
                cfg.scaling(),
                cfg.targets
                    .iter()
                    .map(|t| t.peft_name())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        )
        .add("parameters", ck.model.params.num_params());
    s.print();
    Ok(())
}
