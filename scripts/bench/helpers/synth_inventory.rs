//! Writes a synthetic inventory (see `s3invbackup::inventory::synth`) for benchmarks:
//! `cargo run --release --example synth_inventory -- DIR ROWS FILES [shuffle] [SEED]`

use std::path::PathBuf;

use s3invbackup::inventory::synth::{SynthSpec, generate, write_inventory};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        anyhow::bail!("usage: synth_inventory DIR ROWS FILES [shuffle] [SEED]");
    }
    let spec = SynthSpec {
        rows: args[2].parse()?,
        files: args[3].parse()?,
        shuffle: args.get(4).is_some_and(|a| a == "shuffle"),
        seed: args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(42),
        source_bucket: "synthetic-archive".into(),
        date: "2024-11-06T01-00Z".into(),
    };
    let rows = generate(&spec);
    let bytes = write_inventory(&PathBuf::from(&args[1]), &spec, &rows)?;
    eprintln!(
        "{} rows in {} files, {} bytes compressed",
        rows.len(),
        spec.files,
        bytes
    );
    Ok(())
}
