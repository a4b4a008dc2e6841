//! `latentmas prompts`: the reference's prompt set, imported from a local checkout of the authors' code.

use std::path::PathBuf;

use clap::Subcommand;
use latentmas::mas::reference_prompts;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: PromptsCommand,
}

#[derive(Subcommand)]
enum PromptsCommand {
    /// Build the reference prompt set from a checkout of Gen-Verse/LatentMAS (any directory holding its
    /// prompts.py) by calling its own prompt builders with python3; `--prompts reference` then uses it.
    Import {
        /// The checkout (or its prompts.py).
        dir: PathBuf,
        /// The interpreter that runs the checkout's prompts.py.
        #[arg(long, default_value = "python3")]
        python: PathBuf,
        /// Write the set here instead of the cache (then pass it with `--prompts FILE`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print where `--prompts reference` looks for the imported set.
    Path,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    match a.command {
        PromptsCommand::Import { dir, python, out } => {
            let file = reference_prompts::find_prompts_py(&dir)?;
            let target = out.unwrap_or_else(reference_prompts::cache_path);
            let set = reference_prompts::import(&file, &python, &target)?;
            println!("imported {} prompts from {} into {}", set.len(), file.display(), target.display());
            Ok(())
        }
        PromptsCommand::Path => {
            let path = reference_prompts::cache_path();
            let state = if path.exists() { "imported" } else { "not imported yet" };
            println!("{} ({state})", path.display());
            Ok(())
        }
    }
}
