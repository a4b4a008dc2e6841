//! `latentmas extract --task T`: a model output on stdin → the normalised prediction (empty line for none).

use std::io::Read;

use latentmas_cli::eval::{predict, Task};

#[derive(clap::Args)]
pub struct Args {
    /// The task whose extraction rules apply.
    #[arg(long)]
    task: Task,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    println!("{}", predict(a.task, &text).unwrap_or_default());
    Ok(())
}
