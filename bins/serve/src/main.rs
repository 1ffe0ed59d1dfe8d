//! `marlhf-serve`: chat with a checkpoint through OpenAI's protocol.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use marlhf_eval::server::{serve_with, ServeOptions};
use marlhf_stages::evaluate::chat_backend::ModelBackend;

// The allocator is the binary's choice (see marlhf_cli's docs).
#[global_allocator]
static GLOBAL: marlhf_cli::MiMalloc = marlhf_cli::MiMalloc;

/// Serve a checkpoint (a trained policy, or any local model) through
/// OpenAI's chat-completions protocol on a loopback address:
/// POST /v1/chat/completions, GET /v1/models, GET /health. Messages are
/// rendered in the task's prompt format. Runs until interrupted.
#[derive(Parser, Debug)]
#[command(about, version)]
struct Args {
    /// Accept checkpoints of unfinished training runs (refused otherwise)
    #[arg(long)]
    allow_partial: bool,
    /// The checkpoint directory
    #[arg(long)]
    checkpoint: PathBuf,
    /// Pipeline task, which picks the prompt format: hh-rlhf, tldr, webgpt or apps
    #[arg(long, default_value = "hh-rlhf")]
    task: String,
    /// Loopback address to listen on (port 0: any free port)
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// The model name clients must send (and /v1/models lists)
    #[arg(long, default_value = "marlhf")]
    model_name: String,
    /// Default and largest number of tokens per answer
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Longest prompt in tokens (longer conversations keep their end)
    #[arg(long, default_value_t = 512)]
    max_prompt_tokens: usize,
    /// Seed for requests that bring none (mixed with the request number)
    #[arg(long, default_value_t = 1234)]
    seed: u64,
    /// Requests handled at once
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute dtype: auto (bf16 on cuda, f32 on cpu), f32, bf16 or f16
    #[arg(long, default_value = marlhf_model::device::DEFAULT_DTYPE)]
    dtype: String,
}

fn main() {
    let args = Args::parse();
    marlhf_model::checkpoint::set_allow_partial(args.allow_partial);
    marlhf_cli::stage_main("serve", || {
        let device = marlhf_model::device::parse(&args.device)?;
        let backend = ModelBackend::load(
            &args.checkpoint,
            &args.task,
            &device,
            marlhf_model::device::dtype(&args.dtype, &device)?,
            args.max_prompt_tokens,
            args.max_new_tokens,
            args.seed,
        )?;
        let handle = serve_with(
            &args.addr,
            Arc::new(backend),
            ServeOptions {
                model_name: args.model_name.clone(),
                workers: args.workers,
            },
        )?;
        // Tests and scripts read the URL from this line.
        eprintln!(
            "serve: {} as model {:?} at {}",
            args.checkpoint.display(),
            args.model_name,
            handle.base_url()
        );
        eprintln!("serve: Ctrl-C to stop");
        handle.wait();
        Ok(())
    })
}
