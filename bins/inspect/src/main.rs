#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;

// The allocator is the binary's choice (see marlhf_cli's docs).
#[global_allocator]
static GLOBAL: marlhf_cli::MiMalloc = marlhf_cli::MiMalloc;

/// Print a readable summary of any marlhf stage's Parquet file: schema,
/// per-column statistics and the first rows.
#[derive(Parser, Debug)]
#[command(about, version)]
struct Args {
    /// The Parquet file to summarise (sft, pairs, prompts, rollouts, segments,
    /// advantages, metrics, ...)
    file: PathBuf,

    /// How many leading rows to print (0: none)
    #[arg(short = 'n', long, default_value_t = 5)]
    rows: usize,

    /// Longest rendering of one value in the row preview, in characters;
    /// longer text loses its middle to `…`
    #[arg(short, long, default_value_t = 80, value_parser = clap::value_parser!(u32).range(8..))]
    width: u32,

    /// Only summarise this column (repeat for more; shown in the given order)
    #[arg(short, long = "column", value_name = "NAME")]
    column: Vec<String>,
}

fn main() {
    let args = Args::parse();
    marlhf_cli::stage_main("inspect", || {
        let opts = marlhf_inspect::Options {
            rows: args.rows,
            width: args.width as usize,
            columns: args.column,
        };
        let text = marlhf_inspect::inspect(&args.file, &opts)?;
        match std::io::stdout().lock().write_all(text.as_bytes()) {
            // `marlhf-inspect f.parquet | head` is not an error.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => Ok(other?),
        }
    })
}
