#[tokio::main]
async fn main() -> anyhow::Result<()> {
    oleg_runtime::main_of::<oleg_ingest::App>().await
}
