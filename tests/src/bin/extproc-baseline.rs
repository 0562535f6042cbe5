//! The ExtProc baseline server for benchmarks:
//! `extproc-baseline --listen ADDR --classifier ADDR --default-model NAME`.

use router_tests::extproc_baseline::ExtProcRouter;
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut listen = "127.0.0.1:50061".to_string();
    let mut classifier = "127.0.0.1:50051".to_string();
    let mut default_model = "qwen3-8b".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))?;
        match arg.as_str() {
            "--listen" => listen = value,
            "--classifier" => classifier = value,
            "--default-model" => default_model = value,
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    let router = ExtProcRouter::new(classifier.parse()?, &default_model, Duration::from_millis(1000));
    eprintln!("extproc-baseline listening on {listen}");
    router.serve(listen.parse()?).await?;
    Ok(())
}
