//! `oleg-trainer eval`: trains each configured variant offline on a votes file, split at random
//! (seeded) or in time, and reports holdout figures (all holdout votes, and those on posts never
//! seen in training), speed and peak memory.

use crate::cycle::fresh_network;
use crate::dataset::{read_votes_csv, split, split_by_time, Columns, Vocabularies, VotesFile};
use crate::TrainerConfig;
use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use oleg_features::PostContent;
use oleg_messages::ScrapedPost;
use oleg_model::{evaluate_predictions, labels_of, predict, train_epoch, ModelConfig, Optimizer};
use oleg_telemetry::PeakMemoryCollector;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;
use tch::Device;

/// What `oleg-trainer eval` is asked.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The votes file (header user,post,channel,vote[,voted_at_ms]; vote 1 = like, 0 = dislike).
    #[arg(long)]
    votes: PathBuf,
    /// The posts' content, one scraped-post message (JSON) per line: the content network reads
    /// it; without it every post is content-free.
    #[arg(long)]
    posts: Option<PathBuf>,
    /// `random`: a seeded 20 % of the votes held out. `time`: the newest 20 % held out, ordered by
    /// `voted_at_ms`, or by post id where the file has no times.
    #[arg(long, value_enum, default_value_t = SplitKind::Random)]
    split: SplitKind,
    /// `table` (Markdown) or `json` (one object per variant).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// libtorch threads.
    #[arg(long, default_value_t = 1)]
    threads: i32,
    /// Draw the loss curves to this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Only these variants (names under [trainer.variants]); default: all.
    #[arg(long, value_delimiter = ',')]
    variants: Vec<String>,
    /// Overrides every variant's epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Seed of the split and of the initial weights.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum)]
enum SplitKind {
    Random,
    Time,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

/// Runs `oleg-trainer eval`: each chosen variant trained and evaluated, a table (or JSON lines)
/// on stdout, the loss curves drawn if asked.
pub fn run(config: &TrainerConfig, args: EvalArgs) -> anyhow::Result<()> {
    let EvalArgs {
        votes,
        posts,
        split: split_kind,
        format,
        threads,
        plot,
        variants,
        epochs,
        seed,
    } = args;
    if threads < 1 {
        bail!("--threads must be at least 1");
    }
    tch::set_num_threads(threads);
    let device = config.trainer.device().context("trainer.device")?;
    for wanted in &variants {
        if !config.trainer.variants.contains_key(wanted) {
            bail!(
                "no variant {wanted:?} under [trainer.variants]; there are {:?}",
                config.trainer.variants.keys()
            );
        }
    }
    let VotesFile {
        mut vocab,
        columns,
        voted_at_ms,
    } = read_votes_csv(&votes)?;
    let contents = match &posts {
        Some(path) => read_posts(path)?,
        None => HashMap::new(),
    };
    vocab.complete_features(|channel, post| contents.get(&(channel.to_owned(), post)));
    let (train, holdout) = match split_kind {
        SplitKind::Random => split(&columns, 0.2, seed),
        SplitKind::Time => split_by_time(&columns, &vocab, voted_at_ms.as_deref(), 0.2),
    };
    let data = Split {
        vocab,
        train,
        holdout,
    };
    let mut chosen: Vec<(String, oleg_model::ModelConfig)> = config
        .trainer
        .variants
        .iter()
        .filter(|(name, _)| variants.is_empty() || variants.contains(name))
        .map(|(n, c)| (n.clone(), c.clone()))
        .collect();
    if chosen.is_empty() {
        bail!("no variants configured under [trainer.variants]");
    }
    let mut reports = Vec::new();
    for (name, model) in chosen.iter_mut() {
        if let Some(epochs) = epochs {
            model.epochs = epochs;
        }
        let batches_per_epoch = (data.train.len() as u64).div_ceil(model.batch_size as u64);
        let bar = if std::io::stderr().is_terminal() {
            let bar =
                ProgressBar::new(batches_per_epoch * model.epochs as u64 * model.batch_size as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:>12} {bar:40} {percent:>3}% {per_sec} eta {eta}",
                )
                .expect("template"),
            );
            bar.set_message(name.clone());
            bar
        } else {
            ProgressBar::hidden()
        };
        let report = evaluate_variant(name, model, &data, device, seed, |n| bar.inc(n as u64));
        bar.finish_and_clear();
        if let Format::Json = format {
            println!("{}", serde_json::to_string(&report)?);
        }
        reports.push(report);
    }
    if let Format::Table = format {
        let how = match (split_kind, &voted_at_ms) {
            (SplitKind::Random, _) => format!("a random holdout (seed {seed})"),
            (SplitKind::Time, Some(_)) => "the newest votes held out (by voted_at_ms)".into(),
            (SplitKind::Time, None) => "the votes on the highest post ids held out".into(),
        };
        println!(
            "{} votes: {} train, {} holdout, {how}; {} of the holdout on posts not in training; posts' content: {}; {threads} thread(s)\n",
            votes.display(),
            data.train.len(),
            data.holdout.len(),
            reports.first().map_or(0, |r| r.unseen_post_votes),
            posts.as_ref().map_or("none".into(), |p| p.display().to_string()),
        );
        print!("{}", table(&reports));
    }
    if let Some(path) = plot {
        std::fs::write(&path, plot_svg(&reports))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The content of the posts in a file of scraped-post messages, one per line.
fn read_posts(path: &std::path::Path) -> anyhow::Result<HashMap<(String, i64), PostContent>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let post: ScrapedPost = serde_json::from_str(line).with_context(|| {
                format!("{} line {}: not a scraped post", path.display(), i + 1)
            })?;
            Ok((
                (post.channel.to_string(), post.post_id.get()),
                PostContent::from(&post),
            ))
        })
        .collect()
}

/// Figures after one epoch.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct EpochFigures {
    pub epoch: usize,
    pub train_loss: f64,
    pub holdout_mse: f64,
    pub holdout_auc: f64,
    pub seconds: f64,
}

/// One variant's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VariantReport {
    pub variant: String,
    pub network: String,
    pub holdout_auc: f64,
    pub holdout_mse: f64,
    pub holdout_log_loss: f64,
    /// AUC on the holdout votes whose post no training vote names.
    pub holdout_auc_unseen_posts: f64,
    pub unseen_post_votes: usize,
    /// Mean training time of one epoch (evaluation excluded).
    pub sec_per_epoch: f64,
    pub peak_rss_mb: f64,
    pub train_votes: usize,
    pub holdout_votes: usize,
    pub epochs: Vec<EpochFigures>,
}

/// Resets the process's peak-RSS mark, so each variant reports its own peak (Linux ≥ 4.0).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A seeded split of one votes file.
pub struct Split {
    pub vocab: Vocabularies,
    pub train: Columns,
    pub holdout: Columns,
}

pub fn evaluate_variant(
    name: &str,
    config: &ModelConfig,
    split: &Split,
    device: Device,
    seed: u64,
    mut progress: impl FnMut(i64),
) -> VariantReport {
    let Split {
        vocab,
        train,
        holdout,
    } = split;
    reset_peak_rss();
    tch::manual_seed(seed as i64);
    let mut network = fresh_network(config, vocab, device);
    let mut optimizer = Optimizer::new(&network);
    let (train_votes, holdout_votes) = (train.to_votes(device), holdout.to_votes(device));
    let (train_rows, holdout_rows) = (train_votes.all_rows(), holdout_votes.all_rows());
    let labels = labels_of(&holdout_votes, &holdout_rows);
    let trained_posts: std::collections::HashSet<i64> = train.posts.iter().copied().collect();
    let unseen: Vec<usize> = (0..holdout.len())
        .filter(|&i| !trained_posts.contains(&holdout.posts[i]))
        .collect();
    let mut epochs = Vec::new();
    let mut last = evaluate_predictions(&[], &[]);
    let mut unseen_auc = f64::NAN;
    let mut training_seconds = 0.0;
    for epoch in 1..=config.epochs {
        let started = Instant::now();
        let train_loss = train_epoch(
            &mut network,
            &mut optimizer,
            &train_votes,
            &train_rows,
            config.batch_size,
            |rows| {
                progress(rows);
                std::ops::ControlFlow::Continue(())
            },
        );
        let seconds = started.elapsed().as_secs_f64();
        training_seconds += seconds;
        let predictions = predict(&network, &holdout_votes, &holdout_rows);
        last = evaluate_predictions(&predictions, &labels);
        let pick = |values: &[f32]| unseen.iter().map(|&i| values[i]).collect::<Vec<f32>>();
        unseen_auc = evaluate_predictions(&pick(&predictions), &pick(&labels)).auc;
        epochs.push(EpochFigures {
            epoch,
            train_loss,
            holdout_mse: last.mse,
            holdout_auc: last.auc,
            seconds,
        });
    }
    VariantReport {
        variant: name.to_owned(),
        network: config.variant.as_str().to_owned(),
        holdout_auc: last.auc,
        holdout_mse: last.mse,
        holdout_log_loss: last.log_loss,
        holdout_auc_unseen_posts: unseen_auc,
        unseen_post_votes: unseen.len(),
        sec_per_epoch: training_seconds / config.epochs as f64,
        peak_rss_mb: PeakMemoryCollector::read_peak_bytes().unwrap_or(0) as f64 / (1 << 20) as f64,
        train_votes: train.len(),
        holdout_votes: holdout.len(),
        epochs,
    }
}

/// A Markdown table of the reports.
pub fn table(reports: &[VariantReport]) -> String {
    let mut out = String::from(
        "| variant | network | holdout AUC | AUC, posts not in training | holdout MSE | log-loss | sec/epoch | peak RSS MB |\n|---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in reports {
        out.push_str(&format!(
            "| {} | {} | {:.4} | {} | {:.4} | {:.4} | {:.2} | {:.0} |\n",
            r.variant,
            r.network,
            r.holdout_auc,
            if r.unseen_post_votes == 0 {
                "–".to_owned()
            } else {
                format!("{:.4}", r.holdout_auc_unseen_posts)
            },
            r.holdout_mse,
            r.holdout_log_loss,
            r.sec_per_epoch,
            r.peak_rss_mb
        ));
    }
    out
}

/// An SVG of the loss curves: training loss (solid) and holdout MSE (dashed) per epoch.
pub fn plot_svg(reports: &[VariantReport]) -> String {
    const W: f64 = 720.0;
    const H: f64 = 420.0;
    const PAD: f64 = 56.0;
    let colours = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
    ];
    let values = reports
        .iter()
        .flat_map(|r| r.epochs.iter().flat_map(|e| [e.train_loss, e.holdout_mse]));
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo < hi { (lo, hi) } else { (0.0, 1.0) };
    let max_epochs = reports
        .iter()
        .map(|r| r.epochs.len())
        .max()
        .unwrap_or(1)
        .max(2) as f64;
    let x = |epoch: usize| PAD + (epoch as f64 - 1.0) / (max_epochs - 1.0) * (W - 2.0 * PAD);
    let y = |v: f64| H - PAD - (v - lo) / (hi - lo) * (H - 2.0 * PAD);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{PAD}\" y=\"24\" font-size=\"15\">Loss per epoch: training (solid), holdout MSE (dashed)</text>\n\
         <line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <line x1=\"{PAD}\" y1=\"{PAD}\" x2=\"{PAD}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <text x=\"{PAD}\" y=\"{tb}\">epoch 1</text><text x=\"{r}\" y=\"{tb}\" text-anchor=\"end\">epoch {me}</text>\n\
         <text x=\"{tl}\" y=\"{b}\" text-anchor=\"end\">{lo:.3}</text><text x=\"{tl}\" y=\"{PAD}\" text-anchor=\"end\">{hi:.3}</text>\n",
        b = H - PAD,
        r = W - PAD,
        tb = H - PAD + 18.0,
        tl = PAD - 6.0,
        me = max_epochs as usize,
    );
    for (i, report) in reports.iter().enumerate() {
        let colour = colours[i % colours.len()];
        for (dash, pick) in [("", 0usize), (" stroke-dasharray=\"6 4\"", 1)] {
            let points: Vec<String> = report
                .epochs
                .iter()
                .map(|e| {
                    let v = if pick == 0 {
                        e.train_loss
                    } else {
                        e.holdout_mse
                    };
                    format!("{:.1},{:.1}", x(e.epoch), y(v))
                })
                .collect();
            svg.push_str(&format!(
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash} points=\"{}\"/>\n",
                points.join(" ")
            ));
        }
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" fill=\"{colour}\">{}</text>\n",
            W - PAD - 150.0,
            PAD + 16.0 * i as f64,
            report.variant
        ));
    }
    svg.push_str("</svg>\n");
    svg
}
