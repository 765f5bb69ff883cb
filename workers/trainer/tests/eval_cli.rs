//! `oleg-trainer eval` on a small votes file: JSON lines with the promised keys, a table, a plot,
//! and clear errors for a bad file.

use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_oleg-trainer");

fn votes_file(dir: &std::path::Path) -> std::path::PathBuf {
    let mut csv = String::from("user,post,channel,vote\n");
    for i in 0..3_000 {
        let (user, channel) = (i % 97, i % 4);
        let post = channel * 1000 + (i * 13) % 50;
        let vote = i32::from((user + channel) % 2 == 0);
        csv.push_str(&format!("{user},{post},{channel},{vote}\n"));
    }
    let path = dir.join("votes.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

fn eval(args: &[&str]) -> std::process::Output {
    Command::new(BINARY)
        .env("OLEG_CONFIG_DIR", oleg_testkit::repo_root().join("config"))
        .env("OMP_NUM_THREADS", "1")
        .arg("eval")
        .args(args)
        .output()
        .unwrap()
}

/// The reports of a successful `--format json` run, one per line.
fn json_lines(out: std::process::Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn json_lines_table_and_plot() {
    let dir = oleg_testkit::scratch_dir("trainer-eval-cli");
    let votes = votes_file(&dir);
    let plot = dir.join("loss.svg");
    let out = eval(&[
        "--votes",
        votes.to_str().unwrap(),
        "--format",
        "json",
        "--epochs",
        "2",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    let lines = json_lines(out);
    assert!(lines.len() >= 2, "every configured variant");
    for line in &lines {
        for key in [
            "variant",
            "holdout_auc",
            "holdout_mse",
            "sec_per_epoch",
            "peak_rss_mb",
        ] {
            assert!(line.get(key).is_some(), "{key} missing in {line}");
        }
        assert_eq!(line["train_votes"], 2_400);
        assert_eq!(line["epochs"].as_array().unwrap().len(), 2);
    }
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() == 2 * lines.len());

    let table = eval(&[
        "--votes",
        votes.to_str().unwrap(),
        "--epochs",
        "1",
        "--variants",
        "original",
        "--threads",
        "1",
    ]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.contains("| variant | network | holdout AUC"), "{text}");
    assert!(text.contains("| original | channel_mlp |"), "{text}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = oleg_testkit::scratch_dir("trainer-eval-bad");
    let path = dir.join("bad.csv");
    std::fs::write(&path, "user,post,channel,vote\n1,2,3,1\n1,2,3,maybe\n").unwrap();
    let out = eval(&["--votes", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 3") && stderr.contains("maybe"),
        "{stderr}"
    );
    let out = eval(&["--votes", path.to_str().unwrap(), "--variants", "nonesuch"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("nonesuch"));
}

/// A vote log where what a post shows decides the vote (half the people like posts with a photo,
/// half text-only ones), with times, and the posts' content: split in time, the newest posts are
/// not in training, and only the content network can tell them apart.
#[test]
fn a_time_split_with_content_scores_posts_not_in_training() {
    let dir = oleg_testkit::scratch_dir("trainer-eval-time");
    let channel = oleg_messages::ChannelName::parse("some_channel").unwrap();
    let mut csv = String::from("user,post,channel,vote,voted_at_ms\n");
    let mut posts = String::new();
    for post in 1..=200_i64 {
        let mut message = oleg_testkit::scraped_post(&oleg_messages::PostRef {
            channel: channel.clone(),
            post_id: oleg_messages::PostId::new(post).unwrap(),
        });
        if post % 2 == 0 {
            message.media.push(oleg_messages::MediaItem {
                kind: oleg_messages::MediaKind::Photo,
                url: None,
            });
        }
        posts.push_str(&serde_json::to_string(&message).unwrap());
        posts.push('\n');
        for user in 0..30_i64 {
            let vote = i64::from((user + post) % 2 == 0);
            let at = post * 1_000 + user;
            csv.push_str(&format!("{user},{post},some_channel,{vote},{at}\n"));
        }
    }
    let (votes, posts_file) = (dir.join("votes.csv"), dir.join("posts.jsonl"));
    std::fs::write(&votes, csv).unwrap();
    std::fs::write(&posts_file, posts).unwrap();
    let out = eval(&[
        "--votes",
        votes.to_str().unwrap(),
        "--posts",
        posts_file.to_str().unwrap(),
        "--split",
        "time",
        "--format",
        "json",
        "--variants",
        "tuned,content",
        "--epochs",
        "6",
    ]);
    let reports = json_lines(out);
    let unseen_auc = |variant: &str| {
        let report = reports.iter().find(|r| r["variant"] == variant).unwrap();
        assert_eq!(
            report["unseen_post_votes"], 1_200,
            "the newest 40 posts' votes"
        );
        report["holdout_auc_unseen_posts"].as_f64().unwrap()
    };
    let (content, ids) = (unseen_auc("content"), unseen_auc("tuned"));
    assert!(content > 0.9, "content network: {content}");
    assert!(ids < 0.65, "id network: {ids}");

    let out = eval(&[
        "--votes",
        votes.to_str().unwrap(),
        "--posts",
        votes.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1: not a scraped post"));
}
