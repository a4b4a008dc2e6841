//! `--preset reference` and the other reproduction flags of `run` and `eval`: the settings the reference's
//! run.py defaults to, applied under any flag given explicitly, and printed so a run says what it used.

use latentmas::mas::method::Method;
use latentmas::mas::run::REFERENCE_CONTEXT_LENGTH;
use latentmas::sample::SamplingParams;
use latentmas_cli::eval::Task;

/// Flags for reproducing the reference's runs (flattened into the method flags of `run` and `eval`).
#[derive(clap::Args, Debug, Clone)]
pub struct ReproArgs {
    /// `reference`: the reference run.py's defaults (m = 0 with its empty-cache final agent, i.e.
    /// `--latent-steps 0 --compat reference` for latent; 4096 new tokens; temperature 0.6, top-k 20, top-p 0.95,
    /// seed 42; realign and think off; TextMAS context cut at -1). Flags given explicitly override it.
    #[arg(long, value_parser = ["reference"])]
    pub preset: Option<String>,
    /// TextMAS: the context handed to an agent is the accumulated text cut like Python's `text[:N]` in
    /// characters: N ≥ 0 keeps the first N, N < 0 drops the last |N|. Default -1, the reference's (its
    /// agents see the context minus its final newline).
    #[arg(long, allow_negative_numbers = true)]
    pub text_mas_context_length: Option<i64>,
}

/// Settings a preset supplies where no flag was given.
#[derive(Debug, Clone)]
pub struct Preset {
    pub name: &'static str,
    /// LatentMAS steps per agent and whether m = 0 means the reference's empty-cache final agent.
    pub latent_steps: usize,
    pub compat_reference: bool,
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    pub text_mas_context_length: i64,
}

/// The reference run.py's defaults (Gen-Verse/LatentMAS @ 1430ad6).
pub fn reference() -> Preset {
    Preset {
        name: "reference",
        latent_steps: 0,
        compat_reference: true,
        max_new_tokens: 4096,
        // top-k 20 is not a run.py flag: it comes from the Qwen3 models' generation_config.json.
        sampling: SamplingParams { greedy: false, temperature: 0.6, top_k: 20, top_p: 0.95, seed: 42 },
        text_mas_context_length: REFERENCE_CONTEXT_LENGTH,
    }
}

/// Our default max new tokens for a task, as the reference runs it: 4096 (run.py's default), and 20000 for
/// AIME (the authors' published AIME command). `run` without a task gets 4096.
pub fn default_max_new_tokens(task: Option<Task>) -> usize {
    match task {
        Some(Task::Aime2024 | Task::Aime2025) => 20_000,
        _ => 4096,
    }
}

impl ReproArgs {
    pub fn preset(&self) -> Option<Preset> {
        self.preset.as_deref().map(|_| reference())
    }
}

/// One setting a preset chose, for the line it prints: `--flag value`, or why it was left to a flag.
pub struct Applied {
    pub flag: &'static str,
    pub value: String,
    /// The flag was given explicitly: it wins over the preset.
    pub overridden: bool,
}

/// Takes `explicit` when given, else the preset's value; records which.
pub fn pick<T: ToString + Clone>(applied: &mut Vec<Applied>, flag: &'static str, explicit: Option<T>, preset: T) -> T {
    let overridden = explicit.is_some();
    let v = explicit.unwrap_or(preset);
    applied.push(Applied { flag, value: v.to_string(), overridden });
    v
}

/// The line a preset run prints to stderr (stdout stays the run's output).
pub fn describe(name: &str, method: Method, applied: &[Applied]) -> String {
    let word = |a: &Applied| if a.value.is_empty() { a.flag.to_string() } else { format!("{} {}", a.flag, a.value) };
    let set: Vec<String> = applied.iter().filter(|a| !a.overridden).map(word).collect();
    let kept: Vec<String> = applied.iter().filter(|a| a.overridden).map(word).collect();
    let mut s = format!(
        "preset {name} (--method {method}): set {}",
        if set.is_empty() { "nothing".into() } else { set.join(" ") }
    );
    if !kept.is_empty() {
        s.push_str(&format!("; given explicitly, kept: {}", kept.join(" ")));
    }
    s
}

/// The settings of a run once flags, preset and defaults are combined.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub latent_steps: usize,
    pub compat_reference: bool,
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    pub text_mas_context_length: i64,
}

/// The flags of a run as given (None / false where not given).
pub struct Given<'a> {
    pub method: Method,
    pub task: Option<Task>,
    pub latent_steps: Option<usize>,
    pub compat_reference: bool,
    pub max_new_tokens: Option<usize>,
    pub sampling: &'a super::common::SamplingArgs,
}

/// Explicit flags first, then the preset (printing what it set), then our defaults.
pub fn resolve(repro: &ReproArgs, g: Given) -> anyhow::Result<Resolved> {
    if repro.text_mas_context_length.is_some() && g.method != Method::Text {
        anyhow::bail!("--text-mas-context-length applies to --method text only");
    }
    let Some(p) = repro.preset() else {
        return Ok(Resolved {
            latent_steps: match g.method {
                Method::Latent => g.latent_steps.unwrap_or(super::run::DEFAULT_LATENT_STEPS),
                _ => g.latent_steps.unwrap_or(0), // validate() names the flag
            },
            compat_reference: g.compat_reference,
            max_new_tokens: g.max_new_tokens.unwrap_or_else(|| default_max_new_tokens(g.task)),
            sampling: g.sampling.params_over(SamplingParams::default())?,
            text_mas_context_length: repro.text_mas_context_length.unwrap_or(REFERENCE_CONTEXT_LENGTH),
        });
    };
    let mut applied = Vec::new();
    let (latent_steps, compat_reference) = match g.method {
        Method::Latent => {
            let m = pick(&mut applied, "--latent-steps", g.latent_steps, p.latent_steps);
            // The quirk only means something at m = 0; an explicit m > 0 leaves it out of the run.
            let compat = g.compat_reference || (p.compat_reference && m == 0);
            if compat && !g.compat_reference {
                applied.push(Applied { flag: "--compat", value: "reference".into(), overridden: false });
            }
            (m, compat)
        }
        _ => (g.latent_steps.unwrap_or(0), g.compat_reference),
    };
    let max_new_tokens = pick(&mut applied, "--max-new-tokens", g.max_new_tokens, p.max_new_tokens);
    let s = g.sampling;
    let sampling = if s.greedy {
        applied.push(Applied { flag: "--greedy", value: String::new(), overridden: true });
        s.params_over(p.sampling)?
    } else {
        let sampling = SamplingParams {
            greedy: false,
            temperature: pick(&mut applied, "--temperature", s.temperature, p.sampling.temperature),
            top_k: pick(&mut applied, "--top-k", s.top_k, p.sampling.top_k),
            top_p: pick(&mut applied, "--top-p", s.top_p, p.sampling.top_p),
            seed: pick(&mut applied, "--seed", s.seed, p.sampling.seed),
        };
        sampling.validate()?;
        sampling
    };
    let text_mas_context_length = if g.method == Method::Text {
        pick(&mut applied, "--text-mas-context-length", repro.text_mas_context_length, p.text_mas_context_length)
    } else {
        p.text_mas_context_length
    };
    eprintln!("{}", describe(p.name, g.method, &applied));
    Ok(Resolved { latent_steps, compat_reference, max_new_tokens, sampling, text_mas_context_length })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::common::SamplingArgs;

    fn sampling() -> SamplingArgs {
        SamplingArgs { greedy: false, temperature: None, top_k: None, top_p: None, seed: None }
    }

    fn given(method: Method, sampling: &SamplingArgs) -> Given<'_> {
        Given { method, task: None, latent_steps: None, compat_reference: false, max_new_tokens: None, sampling }
    }

    #[test]
    fn reference_preset_sets_run_py_defaults_and_explicit_flags_win() {
        let repro = ReproArgs { preset: Some("reference".into()), text_mas_context_length: None };
        let s = sampling();
        let r = resolve(&repro, given(Method::Latent, &s)).unwrap();
        assert_eq!((r.latent_steps, r.compat_reference, r.max_new_tokens), (0, true, 4096));
        assert_eq!(r.sampling, SamplingParams { greedy: false, temperature: 0.6, top_k: 20, top_p: 0.95, seed: 42 });
        let s = SamplingArgs { seed: Some(7), ..sampling() };
        let r = resolve(
            &repro,
            Given { latent_steps: Some(10), max_new_tokens: Some(20_000), ..given(Method::Latent, &s) },
        )
        .unwrap();
        assert_eq!((r.latent_steps, r.compat_reference, r.max_new_tokens, r.sampling.seed), (10, false, 20_000, 7));
        let r = resolve(&repro, given(Method::Text, &s)).unwrap();
        assert_eq!((r.latent_steps, r.compat_reference, r.text_mas_context_length), (0, false, -1));
        let repro = ReproArgs { text_mas_context_length: Some(100), ..repro };
        assert_eq!(resolve(&repro, given(Method::Text, &s)).unwrap().text_mas_context_length, 100);
        assert!(resolve(&repro, given(Method::Latent, &s)).unwrap_err().to_string().contains("--method text only"));
    }

    #[test]
    fn without_a_preset_the_defaults_are_ours_and_per_task() {
        let repro = ReproArgs { preset: None, text_mas_context_length: None };
        let s = sampling();
        let r = resolve(&repro, given(Method::Latent, &s)).unwrap();
        assert_eq!((r.latent_steps, r.compat_reference, r.max_new_tokens, r.sampling.seed), (10, false, 4096, 0));
        let r = resolve(&repro, Given { task: Some(Task::Aime2025), ..given(Method::Single, &s) }).unwrap();
        assert_eq!((r.latent_steps, r.max_new_tokens), (0, 20_000));
        assert_eq!(
            resolve(&repro, Given { task: Some(Task::Gsm8k), ..given(Method::Text, &s) }).unwrap().max_new_tokens,
            4096
        );
        let line = describe(
            "reference",
            Method::Latent,
            &[
                Applied { flag: "--latent-steps", value: "0".into(), overridden: false },
                Applied { flag: "--seed", value: "7".into(), overridden: true },
            ],
        );
        assert_eq!(line, "preset reference (--method latent): set --latent-steps 0; given explicitly, kept: --seed 7");
    }
}
