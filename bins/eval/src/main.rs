//! `marlhf-eval`: the evaluation stage, one subcommand per step.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use marlhf_cli::{Bars, Summary};
use marlhf_eval::judge::HttpJudgeConfig;
use marlhf_stages::evaluate::comparing::{compare_runs, CompareConfig};
use marlhf_stages::evaluate::early_stopping::{
    checkpoint_name, early_stop, EarlyStopConfig, SelectBy,
};
use marlhf_stages::evaluate::executing::{execute_programs, PasskConfig};
use marlhf_stages::evaluate::generating::{generate_responses, GenerateConfig, GenerateReport};
use marlhf_stages::evaluate::judging::{judge_responses, JudgeConfig, JudgeKind};
use marlhf_stages::evaluate::reporting::{assemble_report, ReportConfig};
use marlhf_stages::evaluate::tuning::{split_tuning_name, tune_report, TuneConfig};
use marlhf_stages::evaluate::{parse_ks, parse_named_path};

// The allocator is the binary's choice (see marlhf_cli's docs).
#[global_allocator]
static GLOBAL: marlhf_cli::MiMalloc = marlhf_cli::MiMalloc;

/// Evaluate policies: generate and score responses, judge policies against
/// each other, measure pass@k on code, and write the report.
#[derive(Parser, Debug)]
#[command(about, version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Accept checkpoints of unfinished training runs (refused otherwise)
    #[arg(long, global = true)]
    allow_partial: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    Generate(GenerateArgs),
    EarlyStop(EarlyStopArgs),
    Judge(JudgeArgs),
    Passk(PasskArgs),
    Report(ReportArgs),
    Compare(CompareArgs),
    Tune(TuneArgs),
}

fn named(s: &str) -> Result<(String, PathBuf), String> {
    parse_named_path(s).map_err(|e| e.to_string())
}

fn pair(s: &str) -> Result<(String, String), String> {
    let Some((a, b)) = s.split_once(':') else {
        return Err(format!("{s:?} is not A:B"));
    };
    for name in [a, b] {
        marlhf_stages::evaluate::check_name(name).map_err(|e| e.to_string())?;
    }
    Ok((a.to_string(), b.to_string()))
}

fn ks(s: &str) -> Result<Vec<usize>, String> {
    parse_ks(s).map_err(|e| e.to_string())
}

/// Answer a seeded sample of the evaluation prompts with each policy and
/// score every response with the reward model → responses.parquet. Every
/// policy gets the same prompts and sampling seeds.
#[derive(Args, Debug)]
struct GenerateArgs {
    /// A policy as NAME=CHECKPOINT_DIR (repeat for several, e.g.
    /// sft=…/sft ppo=…/ppo-n1/iter-004/actor ma-ppo=…/ppo-n5/iter-004/actor)
    #[arg(long = "policy", required = true, value_parser = named)]
    policies: Vec<(String, PathBuf)>,
    /// Output file (written atomically)
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    generation: Generation,
}

/// How policies answer prompts: the prompts, the sampling, the scoring.
#[derive(Args, Debug)]
struct Generation {
    /// Prompts to answer (eval_prompts.parquet; validation_prompts.parquet
    /// for early stopping and tuning)
    #[arg(long)]
    prompts: PathBuf,
    /// The reward model that scores every response (without one, e.g. for
    /// APPS, the scores are NaN)
    #[arg(long)]
    reward_model: Option<PathBuf>,
    /// Prompts to answer, drawn with --seed (all of them when the file has fewer)
    #[arg(long, default_value_t = 2000)]
    n: usize,
    /// Responses per prompt and policy (several for pass@k)
    #[arg(long, default_value_t = 1)]
    samples_per_prompt: usize,
    /// Longest prompt in tokens (longer ones keep their end)
    #[arg(long, default_value_t = 512)]
    max_prompt_tokens: usize,
    /// Longest response in tokens (a response cut here has no EOS)
    #[arg(long, default_value_t = 512)]
    max_new_tokens: usize,
    /// Sampling temperature, the paper's for generation (0: greedy)
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Sample among the K most likely tokens (0: all)
    #[arg(long, default_value_t = 50)]
    top_k: usize,
    /// Nucleus sampling mass (1: off)
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Sequences per generation and scoring batch (the samples depend on
    /// it) [default: 8 on the CPU, 64 on a GPU]
    #[arg(long)]
    batch_size: Option<usize>,
    /// Seed of the prompt sample and of the sampling
    #[arg(long, default_value_t = 1234)]
    seed: u64,
    /// The gold model of a task with a known reward (stories: the imported
    /// stories260K): adds each response's gold reward
    #[arg(long)]
    gold_model: Option<PathBuf>,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute dtype: auto (bf16 on cuda, f32 on cpu), f32, bf16 or f16
    #[arg(long, default_value = marlhf_model::device::DEFAULT_DTYPE)]
    dtype: String,
}

impl Generation {
    fn config(
        self,
        policies: Vec<(String, PathBuf)>,
        out: PathBuf,
    ) -> anyhow::Result<GenerateConfig> {
        let device = marlhf_model::device::parse(&self.device)?;
        Ok(GenerateConfig {
            policies,
            prompts: self.prompts,
            reward_model: self.reward_model,
            out,
            n: self.n,
            samples_per_prompt: self.samples_per_prompt,
            seed: self.seed,
            max_prompt_tokens: self.max_prompt_tokens,
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            batch_size: self
                .batch_size
                .unwrap_or_else(|| marlhf_model::device::default_sampling_batch(&device)),
            dtype: marlhf_model::device::dtype(&self.dtype, &device)?,
            device,
            gold_model: self.gold_model,
        })
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SelectByChoice {
    /// The gold reward (tasks with a known reward: stories)
    Gold,
    /// The reward model's score
    Score,
}

impl From<SelectByChoice> for SelectBy {
    fn from(c: SelectByChoice) -> Self {
        match c {
            SelectByChoice::Gold => SelectBy::Gold,
            SelectByChoice::Score => SelectBy::Score,
        }
    }
}

/// Early stopping: choose a run's checkpoint by its mean score on the
/// validation prompts (the highest; a tie goes to the earlier checkpoint)
/// and let that policy answer the evaluation prompts → responses.parquet
/// under --name, beside the final policy's.
#[derive(Args, Debug)]
struct EarlyStopArgs {
    /// The run's validation responses: `marlhf-eval generate` of its
    /// checkpoints on the validation prompts, each named iter-KKK
    #[arg(long)]
    validation: PathBuf,
    /// A checkpoint as iter-KKK=CHECKPOINT_DIR (repeat: the policies of the
    /// validation file)
    #[arg(long = "candidate", required = true, value_parser = named)]
    candidates: Vec<(String, PathBuf)>,
    /// The score the checkpoint is chosen by
    #[arg(long, value_enum)]
    select_by: SelectByChoice,
    /// The name the chosen policy answers under (GROUP.SEED, as the final one)
    #[arg(long)]
    name: String,
    /// Output file (written atomically)
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    generation: Generation,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum JudgeChoice {
    /// The local reward model: prefers the higher score, offline
    Rm,
    /// An OpenAI-compatible chat-completions endpoint (GPT-4 style prompts)
    Http,
}

/// Judge policy A against each policy B (or each --pair) on a seeded sample
/// of the prompts they all answered, in a random order per pair →
/// judgements.parquet.
#[derive(Args, Debug)]
struct JudgeArgs {
    /// responses.parquet from `marlhf-eval generate` (repeat for one file
    /// per policy)
    #[arg(long, required = true)]
    responses: Vec<PathBuf>,
    /// Policy A: verdicts are from its side
    #[arg(long, default_value = "ma-ppo")]
    a: String,
    /// Policy B (repeat to compare A with several)
    #[arg(long = "b", default_value = "ppo")]
    b: Vec<String>,
    /// A comparison A:B (repeat); replaces --a and --b
    #[arg(long = "pair", value_parser = pair, conflicts_with_all = ["a", "b"])]
    pairs: Vec<(String, String)>,
    /// Who judges
    #[arg(long, value_enum, default_value_t = JudgeChoice::Rm)]
    judge: JudgeChoice,
    /// Pairs judged per comparison (all common prompts when fewer)
    #[arg(long, default_value_t = 50)]
    sample: usize,
    /// Seed of the sample and of the presentation orders
    #[arg(long, default_value_t = 1234)]
    seed: u64,
    /// Pipeline task, which picks the judge's template: hh-rlhf, tldr or webgpt
    #[arg(long, default_value = "hh-rlhf")]
    task: String,
    /// Output file (written atomically)
    #[arg(long)]
    out: PathBuf,
    /// --judge rm: the reward model
    #[arg(long)]
    reward_model: Option<PathBuf>,
    /// --judge rm: longest prompt in tokens (longer ones keep their end)
    #[arg(long, default_value_t = 512)]
    max_prompt_tokens: usize,
    /// --judge rm: scores at most this far apart are a tie
    #[arg(long, default_value_t = 1e-3)]
    tie_epsilon: f32,
    /// --judge rm: cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
    /// --judge rm: compute dtype: auto (bf16 on cuda, f32 on cpu), f32, bf16 or f16
    #[arg(long, default_value = marlhf_model::device::DEFAULT_DTYPE)]
    dtype: String,
    /// --judge http: the endpoint, up to and including the API version
    #[arg(long, default_value = "https://api.openai.com/v1")]
    base_url: String,
    /// --judge http: the judge model
    #[arg(long, default_value = "gpt-4o")]
    model: String,
    /// --judge http: the environment variable that holds the API key
    #[arg(long, default_value = "OPENAI_API_KEY")]
    api_key_env: String,
    /// --judge http: seconds per request attempt
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// --judge http: retries with exponential backoff after a failed attempt
    #[arg(long, default_value_t = 5)]
    retries: u32,
    /// --judge http: longest judge answer in tokens
    #[arg(long, default_value_t = 512)]
    max_tokens: u32,
}

/// Run every response (an APPS program) against its problem's tests in a
/// sandbox → passk.parquet, and print pass@k.
#[derive(Args, Debug)]
struct PasskArgs {
    /// responses.parquet from `marlhf-eval generate`
    #[arg(long)]
    responses: PathBuf,
    /// The prompts with their tests (prepare's eval_prompts.parquet)
    #[arg(long)]
    prompts: PathBuf,
    /// The k of pass@k, comma-separated (each needs k samples per problem)
    #[arg(long, default_value = "1", value_parser = ks)]
    k: ::std::vec::Vec<usize>,
    /// Output file, one row per program (written atomically)
    #[arg(long)]
    out: PathBuf,
    /// The Python interpreter that runs the programs (as root: one the
    /// sandbox user nobody can run; a name falls back to the same name on
    /// /usr/local/bin:/usr/bin:/bin when PATH's is not)
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Without root, run the programs as yourself (inside namespaces that
    /// hide your files and processes); refused otherwise
    #[arg(long, env = "MARLHF_SANDBOX_SAME_USER")]
    sandbox_same_user: bool,
    /// Where bubblewrap cannot give each program namespaces of its own, run
    /// programs without them, one at a time (they can then read every file
    /// their user can, the tests' answers included); refused otherwise
    #[arg(long, env = "MARLHF_SANDBOX_WITHOUT_NAMESPACES")]
    sandbox_without_namespaces: bool,
    /// Seconds per test (wall clock)
    #[arg(long, default_value_t = 4.0)]
    timeout: f64,
    /// Memory limit per program (its processes together, tmpfs files
    /// included) in MiB
    #[arg(long, default_value_t = 1024)]
    memory_mb: u64,
    /// Size of each program's private /tmp, /var/tmp and /dev/shm in MiB
    #[arg(long, default_value_t = 64)]
    tmp_mb: u64,
    /// Programs run at once (0: one per CPU)
    #[arg(long, default_value_t = 0)]
    jobs: usize,
}

/// Write report.md with its plots from whatever eval and training files are
/// given.
#[derive(Args, Debug)]
struct ReportArgs {
    /// responses.parquet: mean RM score ± s.e. per policy and score histograms
    #[arg(long)]
    responses: Option<PathBuf>,
    /// judgements.parquet: win / tie / lose per comparison
    #[arg(long)]
    judgements: Option<PathBuf>,
    /// passk.parquet: pass@k per policy
    #[arg(long)]
    passk: Option<PathBuf>,
    /// The k of pass@k, comma-separated
    #[arg(long, default_value = "1", value_parser = ks)]
    k: ::std::vec::Vec<usize>,
    /// The reward model's metrics.parquet: its held-out accuracy
    #[arg(long)]
    rm_metrics: Option<PathBuf>,
    /// A PPO run's metrics as NAME=FILE (repeat): reward curves over iterations
    #[arg(long = "ppo-metrics", value_parser = named)]
    ppo_metrics: Vec<(String, PathBuf)>,
    /// The metrics column drawn as the reward curve
    #[arg(long, default_value = "score_mean")]
    curve_metric: String,
    /// Pipeline task, shown in the title and plots
    #[arg(long, default_value = "hh-rlhf")]
    task: String,
    #[arg(long, default_value = "MA-RLHF evaluation")]
    title: String,
    /// The report; its PNG plots are written beside it (all atomically)
    #[arg(long)]
    out: PathBuf,
}

/// Compare training configurations run with several seeds: verdicts that
/// name their test, seed count and power; final and early-stopped
/// evaluation scores and differences from the baseline with t-intervals
/// over seeds; training curves with 95% bands; iterations to parity; seeds
/// that fail to learn; judge win rates over seeds and prompts →
/// compare/report.md with its plots.
#[derive(Args, Debug)]
struct CompareArgs {
    /// A run as GROUP.SEED=RUN_DIR (repeat); RUN_DIR holds its
    /// metrics.parquet, GROUP.SEED is its final policy's name in the
    /// responses and judgements
    #[arg(long = "run", required = true, value_parser = named)]
    runs: Vec<(String, PathBuf)>,
    /// responses.parquet of the final policies (repeat for several files)
    #[arg(long, required = true)]
    responses: Vec<PathBuf>,
    /// judgements.parquet of each run against the baseline's run of the same seed
    #[arg(long)]
    judgements: Option<PathBuf>,
    /// A run's validation responses as GROUP.SEED=FILE (repeat for every
    /// run, with --early-responses): its early-stopped checkpoint is chosen
    /// on them as `marlhf-eval early-stop` chose it
    #[arg(long = "validation", value_parser = named)]
    validation: Vec<(String, PathBuf)>,
    /// responses.parquet of the early-stopped policies (repeat)
    #[arg(long)]
    early_responses: Vec<PathBuf>,
    /// The score the early-stopped checkpoints were chosen by
    #[arg(long, value_enum, default_value_t = SelectByChoice::Score)]
    select_by: SelectByChoice,
    /// What the report calls a group, GROUP=LABEL (repeat), e.g. ppo-n5=fixed:5
    #[arg(long = "label", value_parser = label)]
    labels: Vec<(String, String)>,
    /// The group the others are compared with (default: the first run's)
    #[arg(long)]
    baseline: Option<String>,
    /// The proxy reward model's per-pair scores on held-out pairs with known
    /// labels (marlhf-score rm-accuracy --out): its accuracy, with a Wilson interval
    #[arg(long)]
    rm_accuracy: Option<PathBuf>,
    /// A metrics column drawn as a curve (repeat); the first is read for the
    /// iterations to parity
    #[arg(long = "curve", default_values_t = ["score_mean".to_string(), "kl_k1_token_mean".to_string(), "entropy".to_string()])]
    curves: Vec<String>,
    /// A metrics column drawn as a curve when every run has it (repeat)
    #[arg(long = "curve-if-present")]
    optional_curves: Vec<String>,
    /// Pipeline task, shown in the title
    #[arg(long, default_value = "hh-rlhf")]
    task: String,
    #[arg(long, default_value = "MA-PPO against PPO over seeds")]
    title: String,
    /// A line under the title (repeat)
    #[arg(long = "note")]
    notes: Vec<String>,
    /// The report; its PNG plots are written beside it (all atomically)
    #[arg(long)]
    out: PathBuf,
}

/// Rank a tuning grid: every method ran every setting with the same
/// tuning seeds; each method's setting is the one whose final policies
/// score best on the validation prompts, averaged over the seeds →
/// tune/report.md (scripts/tune-stories.sh).
#[derive(Args, Debug)]
struct TuneArgs {
    /// A tuning run's validation responses as POINT/GROUP.SEED=FILE
    /// (repeat), e.g. lr1e-4/ppo-n5.98=…/validation/ppo-n5-tune-lr1e-4.98.parquet
    #[arg(long = "validation", required = true, value_parser = tuning_run)]
    validation: Vec<(String, PathBuf)>,
    /// A point's settings as POINT=TEXT (repeat), shown in the report
    #[arg(long = "setting", value_parser = label)]
    settings: Vec<(String, String)>,
    /// What the report calls a group, GROUP=LABEL (repeat)
    #[arg(long = "label", value_parser = label)]
    labels: Vec<(String, String)>,
    /// The score the settings are ranked by
    #[arg(long, value_enum)]
    select_by: SelectByChoice,
    #[arg(long, default_value = "Tuning: the same budget for every method")]
    title: String,
    /// The report (written atomically)
    #[arg(long)]
    out: PathBuf,
}

fn tuning_run(s: &str) -> Result<(String, PathBuf), String> {
    let Some((name, path)) = s.split_once('=') else {
        return Err(format!("{s:?} is not POINT/GROUP.SEED=FILE"));
    };
    split_tuning_name(name).map_err(|e| e.to_string())?;
    if path.is_empty() {
        return Err(format!("{s:?}: the path after '=' is empty"));
    }
    Ok((name.to_string(), PathBuf::from(path)))
}

fn label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((g, l)) if !g.is_empty() && !l.is_empty() => Ok((g.to_string(), l.to_string())),
        _ => Err(format!("{s:?} is not GROUP=LABEL")),
    }
}

fn main() {
    let cli = Cli::parse();
    marlhf_model::checkpoint::set_allow_partial(cli.allow_partial);
    match cli.command {
        Command::Generate(a) => marlhf_cli::stage_main("eval generate", || run_generate(a)),
        Command::EarlyStop(a) => marlhf_cli::stage_main("eval early-stop", || run_early_stop(a)),
        Command::Judge(a) => marlhf_cli::stage_main("eval judge", || run_judge(a)),
        Command::Passk(a) => marlhf_cli::stage_main("eval passk", || run_passk(a)),
        Command::Report(a) => marlhf_cli::stage_main("eval report", || run_report(a)),
        Command::Compare(a) => marlhf_cli::stage_main("eval compare", || run_compare(a)),
        Command::Tune(a) => marlhf_cli::stage_main("eval tune", || run_tune(a)),
    }
}

fn run_generate(a: GenerateArgs) -> anyhow::Result<()> {
    let cfg = a.generation.config(a.policies, a.out)?;
    let mut s = Summary::new("eval generate");
    let r = generate_responses(&cfg, &Bars)?;
    summarise_generation(&mut s, &cfg, &r);
    s.gpu_memory(&cfg.device).print();
    Ok(())
}

/// The summary lines of a generation: the file, the prompts, and each
/// policy's scores, lengths and speed.
fn summarise_generation(s: &mut Summary, cfg: &GenerateConfig, r: &GenerateReport) {
    s.add("responses", cfg.out.display())
        .add(
            "prompts",
            format!("{} of {} in the file", r.prompts_used, r.prompts_in_file),
        )
        .add("samples per prompt", cfg.samples_per_prompt)
        .add("truncated prompt encodings", r.truncated_prompts);
    for p in &r.policies {
        let mut score = if cfg.reward_model.is_some() {
            format!("RM score {:.4} ± {:.4}, ", p.score.mean, p.score.se)
        } else {
            String::new()
        };
        if let Some(g) = &p.gold {
            score += &format!("gold {:.4} ± {:.4}, ", g.mean, g.se);
        }
        s.add(
            &p.policy,
            format!(
                "{score}{} responses, {} finished, {:.1} tokens on average, {:.0} tokens/s",
                p.responses, p.finished, p.mean_length, p.tokens_per_second
            ),
        );
    }
}

fn run_early_stop(a: EarlyStopArgs) -> anyhow::Result<()> {
    let cfg = EarlyStopConfig {
        validation: a.validation,
        candidates: a.candidates,
        select_by: a.select_by.into(),
        name: a.name,
        generate: a.generation.config(Vec::new(), a.out)?,
    };
    let mut s = Summary::new("eval early-stop");
    let r = early_stop(&cfg, &Bars)?;
    for (it, v) in &r.choice.validation {
        s.add(
            &format!("validation {}", checkpoint_name(*it)),
            format!(
                "mean {} {v:.4} over {} prompts",
                cfg.select_by.kind(),
                r.choice.prompts
            ),
        );
    }
    s.add(
        "chosen",
        format!(
            "{} ({})",
            checkpoint_name(r.choice.iteration),
            r.checkpoint.display()
        ),
    );
    summarise_generation(&mut s, &cfg.generate, &r.generated);
    s.gpu_memory(&cfg.generate.device).print();
    Ok(())
}

fn run_judge(a: JudgeArgs) -> anyhow::Result<()> {
    // The task first: one without a judge (apps) needs no judge's flags.
    marlhf_eval::judge::JudgeTask::for_pipeline(&a.task)?;
    let device = marlhf_model::device::parse(&a.device)?;
    let kind = match a.judge {
        JudgeChoice::Rm => JudgeKind::RewardModel {
            dir: a
                .reward_model
                .clone()
                .ok_or_else(|| anyhow::anyhow!("--judge rm needs --reward-model"))?,
            max_prompt_tokens: a.max_prompt_tokens,
            tie_epsilon: a.tie_epsilon,
            device: device.clone(),
            dtype: marlhf_model::device::dtype(&a.dtype, &device)?,
        },
        JudgeChoice::Http => JudgeKind::Http(HttpJudgeConfig {
            base_url: a.base_url.clone(),
            model: a.model.clone(),
            api_key_env: a.api_key_env.clone(),
            timeout: Duration::from_secs(a.timeout),
            max_retries: a.retries,
            max_tokens: a.max_tokens,
            ..HttpJudgeConfig::default()
        }),
    };
    let pairs = if a.pairs.is_empty() {
        a.b.iter().map(|b| (a.a.clone(), b.clone())).collect()
    } else {
        a.pairs
    };
    let cfg = JudgeConfig {
        responses: a.responses,
        pairs,
        task: a.task,
        sample: a.sample,
        seed: a.seed,
        judge: kind,
        out: a.out,
    };
    let mut s = Summary::new("eval judge");
    let r = judge_responses(&cfg, &Bars)?;
    s.add("judgements", cfg.out.display())
        .add("prompts answered by all", r.common_prompts);
    for row in &r.rows {
        let w = &row.rate;
        s.add(
            &format!("{} vs {}", row.policy_a, row.policy_b),
            format!(
                "win {} / tie {} / lose {} / unparseable {} of {} ({:.1}% wins, judge: {}){}",
                w.win,
                w.tie,
                w.lose,
                w.unparseable,
                w.n,
                100.0 * w.win_rate(),
                row.judge,
                if w.error > 0 {
                    format!("; {} failed requests", w.error)
                } else {
                    String::new()
                }
            ),
        );
    }
    if let Some(j) = &r.journal {
        s.add(
            "journal",
            format!(
                "{}: {} asked now, {} from earlier runs",
                j.path.display(),
                j.asked,
                j.reused
            ),
        );
    }
    s.gpu_memory(&device).print();
    Ok(())
}

fn run_passk(a: PasskArgs) -> anyhow::Result<()> {
    if !(a.timeout > 0.0 && a.timeout.is_finite()) {
        anyhow::bail!("--timeout must be a positive number of seconds");
    }
    let jobs = if a.jobs == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        a.jobs
    };
    let cfg = PasskConfig {
        responses: a.responses,
        prompts: a.prompts,
        ks: a.k,
        out: a.out,
        python: a.python,
        allow_same_user: a.sandbox_same_user,
        allow_without_namespaces: a.sandbox_without_namespaces,
        timeout: Duration::from_secs_f64(a.timeout),
        memory_bytes: a.memory_mb << 20,
        tmp_bytes: a.tmp_mb << 20,
        jobs,
    };
    let mut s = Summary::new("eval passk");
    let r = execute_programs(&cfg, &Bars)?;
    s.add("results", cfg.out.display())
        .add(
            "programs passing every test",
            format!("{} of {}", r.passed, r.programs),
        )
        .add(
            "sandbox",
            format!(
                "{} as {}, network: {}",
                r.python.display(),
                if r.drops_privileges {
                    "nobody"
                } else {
                    "the caller (--sandbox-same-user)"
                },
                r.network
            ),
        )
        .add(
            "isolation",
            format!(
                "{}; {}; {} at once",
                if r.isolation.namespaces {
                    "namespaces per test (bubblewrap)"
                } else {
                    "no namespaces (--sandbox-without-namespaces)"
                },
                match r.isolation.cgroup {
                    Some(v) => format!("memory and processes per program (cgroup {v:?})"),
                    None => "memory per process, processes per user (no cgroup)".to_string(),
                },
                r.jobs
            ),
        );
    for line in &r.weaknesses {
        s.add("sandbox limit", line);
    }
    if let Some(note) = &r.python_note {
        s.add("interpreter", note);
    }
    for p in &r.pass_at_k {
        s.add(
            &format!("{} pass@{}", p.policy, p.k),
            format!("{:.2}% over {} problems", 100.0 * p.pass_at_k, p.problems),
        );
    }
    s.print();
    Ok(())
}

fn run_report(a: ReportArgs) -> anyhow::Result<()> {
    let cfg = ReportConfig {
        responses: a.responses,
        judgements: a.judgements,
        passk: a.passk,
        ks: a.k,
        rm_metrics: a.rm_metrics,
        ppo_metrics: a.ppo_metrics,
        curve_metric: a.curve_metric,
        task: a.task,
        title: a.title,
        out: a.out,
        notes: Vec::new(),
    };
    let mut s = Summary::new("eval report");
    let r = assemble_report(&cfg)?;
    if let Some(rm) = &r.rm {
        s.add(
            "RM held-out accuracy",
            format!("{:.2}%", 100.0 * rm.accuracy),
        );
    }
    s.add("policies", r.input.policies.len())
        .add("comparisons", r.input.pairwise.len())
        .add("reward curves", r.input.curves.len());
    for image in &r.images {
        s.add("plot", image.display());
    }
    s.add("report", r.report.display());
    s.print();
    Ok(())
}

fn run_compare(a: CompareArgs) -> anyhow::Result<()> {
    let cfg = CompareConfig {
        responses: a.responses,
        judgements: a.judgements,
        runs: a.runs,
        labels: a.labels,
        baseline: a.baseline,
        rm_accuracy: a.rm_accuracy,
        curves: a.curves,
        optional_curves: a.optional_curves,
        title: a.title,
        task: a.task,
        notes: a.notes,
        validation: a.validation,
        early_responses: a.early_responses,
        select_by: a.select_by.into(),
        out: a.out,
    };
    let mut s = Summary::new("eval compare");
    let r = compare_runs(&cfg)?;
    s.add("configurations", r.groups)
        .add("runs", r.runs)
        .add("evaluation prompts", r.prompts);
    for image in &r.images {
        s.add("plot", image.display());
    }
    s.add("report", r.report.display());
    s.print();
    Ok(())
}

fn run_tune(a: TuneArgs) -> anyhow::Result<()> {
    let cfg = TuneConfig {
        validation: a.validation,
        settings: a.settings,
        labels: a.labels,
        select_by: a.select_by.into(),
        title: a.title,
        out: a.out,
    };
    let mut s = Summary::new("eval tune");
    let r = tune_report(&cfg)?;
    s.add("tuning runs", r.runs);
    for (group, point) in &r.chosen {
        s.add(&format!("chosen for {group}"), point);
    }
    s.add("report", r.report.display());
    s.print();
    Ok(())
}
