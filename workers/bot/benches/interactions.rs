//! How many interactions the bot serves: people press 👍 on their post all at once, through the
//! fake Telegram Bot API on loopback, and get their next post (a stand-in ranker answers at once,
//! so the ranker's own time is left out). Per configuration: interactions and messages a second
//! against the configured overall limit, press → next post p50 / p99, and the bot's own work per
//! update (its handling less the waits for Telegram, the broker, the store and the ranker), from
//! its `oleg_bot_own_work_seconds` histogram.

use oleg_testkit::stand_in_ranker::StandInRanker;
use oleg_testkit::telegram::{Call, FakeTelegram};
use oleg_testkit::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_oleg-bot");

struct Run {
    people: i64,
    rounds: usize,
    limit: u32,
}

struct Figures {
    interactions_per_s: f64,
    messages_per_s: f64,
    /// Past each round's first second's worth of tokens.
    sustained_per_s: f64,
    p50: Duration,
    p99: Duration,
    own_p50: String,
    own_p99: String,
    update_p99: String,
}

#[tokio::main]
async fn main() {
    let runs = [
        // Telegram's own limit.
        Run {
            people: 300,
            rounds: 1,
            limit: 30,
        },
        Run {
            people: 1000,
            rounds: 3,
            limit: 500,
        },
        // A limit nothing reaches: what the bot itself can do.
        Run {
            people: 1000,
            rounds: 3,
            limit: 100_000,
        },
    ];
    println!("| people | overall limit (msg/s) | interactions/s | messages/s | sustained share of the limit | press → next post p50 | p99 | bot's own work p50 | p99 | whole update p99 |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for run in runs {
        let f = measure(&run).await;
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} % | {:.0} ms | {:.0} ms | {} | {} | {} |",
            run.people,
            run.limit,
            f.interactions_per_s,
            f.messages_per_s,
            100.0 * f.sustained_per_s / f64::from(run.limit),
            f.p50.as_secs_f64() * 1e3,
            f.p99.as_secs_f64() * 1e3,
            f.own_p50,
            f.own_p99,
            f.update_p99,
        );
    }
    println!(
        "\nNo per-chat pacing (bot.chat_interval_ms = 0): each press is one edit and one post to \
its chat; messages/s counts both. Sustained: the messages past the bucket's first second's worth \
(each round starts with a full bucket), over the round's time. Own work and update latency are \
histogram buckets (≤ bound); an update's time includes its wait for the overall limit."
    );
}

async fn measure(run: &Run) -> Figures {
    let services = TestServices::start("bench-bot", mongo_settings("bench-bot")).await;
    let (api, api_url) = FakeTelegram::serve().await;
    let _ranker = StandInRanker::serve(&services.bus, Duration::ZERO);
    let limit = run.limit.to_string();
    let bot = services.spawn(
        BINARY,
        "OLEG__BOT__METRICS_ADDR",
        "bot.log",
        &[
            ("OLEG__BOT__TOKEN", "123456:bench-token"),
            ("OLEG__BOT__API_URL", &api_url),
            (
                "OLEG__BOT__CALLBACK_SECRET",
                "a callback secret for the bench",
            ),
            ("OLEG__BOT__DIGEST_TIMES", ""),
            ("OLEG__BOT__POLL_TIMEOUT_S", "1"),
            ("OLEG__BOT__MESSAGES_PER_SECOND", &limit),
            ("OLEG__BOT__CHAT_INTERVAL_MS", "0"),
            ("OLEG__LOG__LEVEL", "warn"),
        ],
    );
    bot.wait_ready(Duration::from_secs(60)).await;
    let people: Vec<i64> = (1..=run.people).map(|p| 10_000 + p).collect();
    for &person in &people {
        api.send_text(person, "/start");
    }
    let mut posts: HashMap<i64, Call> = HashMap::new();
    for &person in &people {
        let post = api
            .next_sent(person, 1, Duration::from_secs(600))
            .await
            .expect("a first post");
        posts.insert(person, post);
    }
    // Let the overall bucket refill, so every round starts alike.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mut latencies, mut busy) = (Vec::new(), Duration::ZERO);
    let (mut messages, mut beyond_bucket) = (0, 0);
    for round in 0..run.rounds {
        let started = Instant::now();
        let mut pressed = HashMap::new();
        for &person in &people {
            pressed.insert(person, Instant::now());
            api.press(person, &posts[&person], 0);
        }
        for &person in &people {
            let post = api
                .next_sent(person, 2 + round, Duration::from_secs(600))
                .await
                .expect("a next post");
            latencies.push(post.at - pressed[&person]);
            posts.insert(person, post);
        }
        busy += started.elapsed();
        messages += 2 * people.len();
        beyond_bucket += (2 * people.len()).saturating_sub(run.limit as usize);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let metrics = bot.get("/metrics").await.expect("metrics").1;
    let figures = Figures {
        interactions_per_s: (people.len() * run.rounds) as f64 / busy.as_secs_f64(),
        messages_per_s: messages as f64 / busy.as_secs_f64(),
        sustained_per_s: beyond_bucket as f64 / busy.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
        own_p50: bucket_quantile(&metrics, "oleg_bot_own_work_seconds", 0.5),
        own_p99: bucket_quantile(&metrics, "oleg_bot_own_work_seconds", 0.99),
        update_p99: bucket_quantile(&metrics, "oleg_bot_handle_seconds", 0.99),
    };
    drop(bot);
    services.finish().await;
    figures
}

/// "≤ X ms": the upper bound of the histogram bucket holding quantile `q`.
fn bucket_quantile(metrics: &str, histogram: &str, q: f64) -> String {
    let prefix = format!("{histogram}_bucket{{le=\"");
    let buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            Some((le.parse().unwrap_or(f64::INFINITY), count.parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |(_, c)| *c);
    let bound = buckets
        .iter()
        .find(|(_, count)| *count >= q * total)
        .map_or(f64::INFINITY, |(le, _)| *le);
    format!("≤ {:.2} ms", bound * 1e3)
}
