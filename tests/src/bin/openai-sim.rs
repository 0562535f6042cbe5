//! Standalone simulated OpenAI backend: `openai-sim [--listen 127.0.0.1:8001] [--name primary]`.

use router_tests::openai_sim;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut listen = "127.0.0.1:8001".to_string();
    let mut name = "simulator".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or_else(|| anyhow::anyhow!("--listen needs an address"))?,
            "--name" => name = args.next().ok_or_else(|| anyhow::anyhow!("--name needs a value"))?,
            other => anyhow::bail!("unknown argument {other:?}; usage: openai-sim [--listen ADDR] [--name NAME]"),
        }
    }
    let (addr, _) = openai_sim::spawn(listen.parse()?, &name).await?;
    eprintln!("openai-sim {name:?} listening on http://{addr}");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
