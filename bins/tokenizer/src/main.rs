//! `marlhf-tokenizer`: prepared data → `tokenizer.json` (byte-level BPE).

#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::Parser;
use marlhf_cli::{spinner, Summary};
use marlhf_tokenizer::{corpus, count_tokens, save, train_tokenizer, SPECIAL_TOKENS};

// The allocator is the binary's choice (see marlhf_cli's docs).
#[global_allocator]
static GLOBAL: marlhf_cli::MiMalloc = marlhf_cli::MiMalloc;

/// Train a byte-level BPE tokenizer on the prompts and completions of a
/// prepared data directory (eval prompts excluded) for a model trained from
/// scratch. Special tokens: <|pad|>=0, <|bos|>=1, <|eos|>=2.
#[derive(Parser, Debug)]
#[command(about, version)]
struct Args {
    /// Prepared data directory (the output of marlhf-prepare)
    #[arg(long)]
    data: PathBuf,
    /// Where to write the tokenizer
    #[arg(long)]
    out: PathBuf,
    /// Vocabulary size, special tokens and the 256 bytes included
    #[arg(long, default_value_t = 8192)]
    vocab_size: usize,
    /// Minimum count of a pair for it to be merged
    #[arg(long, default_value_t = 2)]
    min_frequency: u64,
}

fn main() {
    let args = Args::parse();
    marlhf_cli::stage_main("tokenizer", || {
        let mut summary = Summary::new("tokenizer");
        let pb = spinner("tokenizer");
        pb.set_message(format!("reading {}", args.data.display()));
        let texts = corpus(&args.data)?;
        pb.set_message(format!("training a {}-token BPE", args.vocab_size));
        let tokenizer = train_tokenizer(&texts, args.vocab_size, args.min_frequency)?;
        pb.set_message("measuring");
        let tokens = count_tokens(&tokenizer, &texts)?;
        save(&tokenizer, &args.out)?;
        pb.finish_and_clear();

        let chars: usize = texts.iter().map(|t| t.chars().count()).sum();
        summary
            .add(
                "vocab size",
                format!(
                    "{} (asked {})",
                    tokenizer.get_vocab_size(true),
                    args.vocab_size
                ),
            )
            .add("special tokens", SPECIAL_TOKENS.join(" "))
            .add("texts", texts.len())
            .add("chars", chars)
            .add("tokens", tokens)
            .add(
                "tokens per char",
                format!("{:.3}", tokens as f64 / chars.max(1) as f64),
            )
            .add("written to", args.out.display());
        summary.print();
        Ok(())
    })
}
