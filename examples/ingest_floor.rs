//! The floor the watcher benchmark is measured against (issue 6): for each of N small
//! files, the least any crash-safe ingest must do — create + write + fsync + rename +
//! one INSERT — in a plain sequential loop.
//!   cargo run --release --example ingest_floor -- DATABASE_URL DIR N SIZE
use std::io::Write;
use std::time::Instant;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (url, dir, n, size): (&str, &str, usize, usize) =
        (&args[1], &args[2], args[3].parse()?, args[4].parse()?);
    let client = lxgate::db::connect(url).await?;
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS floor_rows (name TEXT PRIMARY KEY, size BIGINT)")
        .await?;
    std::fs::create_dir_all(dir)?;
    let buf = vec![b'x'; size];
    let start = Instant::now();
    for i in 0..n {
        let tmp = format!("{dir}/.f{i}.tmp");
        let fin = format!("{dir}/f{i}");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&buf)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &fin)?;
        client
            .execute(
                "INSERT INTO floor_rows VALUES ($1, $2)",
                &[&fin, &(size as i64)],
            )
            .await?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{:.1}", n as f64 / secs);
    Ok(())
}
