//! Pages parsed per second on the real fixture pages, one thread.
//! `cargo bench -p oleg-scraper --bench parse`. Prints a Markdown table.

use oleg_scraper::parse::parse_page;
use std::time::Instant;

fn main() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/telegram");
    let mut pages: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("../shared/fixtures/telegram")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "html"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect();
    pages.sort();
    println!("| page | KB | posts | pages/s | posts/s |");
    println!("|---|---:|---:|---:|---:|");
    let (mut total_pages, mut total_seconds) = (0usize, 0f64);
    for (name, html) in &pages {
        let posts = parse_page(html).posts.len();
        let rounds = 60;
        let started = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(parse_page(std::hint::black_box(html)));
        }
        let seconds = started.elapsed().as_secs_f64();
        total_pages += rounds;
        total_seconds += seconds;
        println!(
            "| {name} | {} | {posts} | {:.0} | {:.0} |",
            html.len() / 1024,
            rounds as f64 / seconds,
            (rounds * posts) as f64 / seconds
        );
    }
    println!("| all | | | {:.0} | |", total_pages as f64 / total_seconds);
}
