"""Export the prompt set of a LatentMAS-style `prompts.py` as JSON (run by `latentmas prompts import`).

argv: PROMPTS_PY OUT_JSON SOURCE_NOTE. The module's own builder functions are called for every method,
topology, role and benchmark with the literal placeholders `{question}` and `{ctx}` standing in for the
question and the TextMAS context, so the text written is exactly what the module would build. The context
is passed with no length limit (`text_mas_context_length` = None, i.e. `context[:None]`): the engine applies
`--text-mas-context-length` to the real context itself.

Keys follow the engine's look-up (`<method>_<topology>/<role>[/<family>]`, `baseline/<family>`): a role whose
text is the same for every family gets one key without a family, and a medqa text equal to the mc text is
left out (the engine falls back from medqa to mc). Every benchmark of a family must build the same text;
anything else is an error, since the engine keys prompts by family, not by benchmark.
"""
import importlib.util
import json
import os
import sys
import types

sys.dont_write_bytecode = True  # never leave __pycache__ in the user's checkout

QUESTION = "{question}"
CTX = "{ctx}"
ROLES = ["planner", "critic", "refiner", "judger"]
# The benchmarks of each prompt family, as the engine groups them (crates/cli/src/eval/task.rs).
FAMILIES = {
    "math": ["gsm8k", "aime2024", "aime2025"],
    "mc": ["arc_easy", "arc_challenge", "gpqa"],
    "medqa": ["medqa"],
    "code": ["mbppplus", "humanevalplus"],
}
# (key prefix, builder name, the `method` value the builder expects)
AGENT_BUILDERS = [
    ("latent_sequential", "build_agent_message_sequential_latent_mas", "latent_mas"),
    ("latent_hierarchical", "build_agent_message_hierarchical_latent_mas", "latent_mas"),
    ("text_sequential", "build_agent_messages_sequential_text_mas", "text_mas"),
    ("text_hierarchical", "build_agent_messages_hierarchical_text_mas", "text_mas"),
]
SINGLE_BUILDER = "build_agent_messages_single_agent"


class ImportFailure(Exception):
    pass


def load_module(path):
    directory = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, directory)  # the module may import its neighbours
    spec = importlib.util.spec_from_file_location("reference_prompts_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def builder(module, name):
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ImportFailure(f"{name}() not found in the module")
    return fn


def run_args(method, task):
    return types.SimpleNamespace(
        method=method,
        model_name="Qwen/Qwen3-4B",
        task=task,
        text_mas_context_length=None,
        think=False,
        latent_space_realign=False,
        prompt="sequential",
    )


def split_messages(messages, what):
    if not isinstance(messages, (list, tuple)) or len(messages) != 2:
        raise ImportFailure(f"{what}: expected [system, user] messages, got {messages!r:.200}")
    system, user = messages
    if system.get("role") != "system" or user.get("role") != "user":
        raise ImportFailure(f"{what}: expected roles system then user")
    return system["content"], user["content"]


def per_family(build, what):
    """{family: user text} for one role; every benchmark of a family must agree."""
    out = {}
    systems = set()
    for family, tasks in FAMILIES.items():
        texts = {}
        for task in tasks:
            try:
                messages = build(task)
            except ImportFailure:
                raise
            except Exception as e:  # the module's own assertion or NotImplementedError
                raise ImportFailure(f"{what} for task {task}: {type(e).__name__}: {e}")
            system, user = split_messages(messages, f"{what} for task {task}")
            systems.add(system)
            texts[task] = user
        if len(set(texts.values())) != 1:
            raise ImportFailure(f"{what}: the benchmarks of family {family} ({', '.join(tasks)}) build different prompts")
        out[family] = texts[tasks[0]]
    return out, systems


def keyed(prefix, texts, always_per_family):
    """The entries of one role (or the baseline) under the engine's look-up rules."""
    if not always_per_family and len(set(texts.values())) == 1:
        return [(prefix, texts["math"])]
    entries = []
    for family, text in texts.items():
        if family == "medqa" and text == texts["mc"]:
            continue
        entries.append((f"{prefix}/{family}", text))
    return entries


def export(module):
    entries = []
    systems = set()
    for prefix, name, method in AGENT_BUILDERS:
        fn = builder(module, name)
        for role in ROLES:
            texts, sys_seen = per_family(
                lambda task: fn(role, QUESTION, CTX, method=method, args=run_args(method, task)),
                f"{name}(role={role!r})",
            )
            systems |= sys_seen
            entries += keyed(f"{prefix}/{role}", texts, always_per_family=False)
    fn = builder(module, SINGLE_BUILDER)
    texts, sys_seen = per_family(lambda task: fn(QUESTION, args=run_args("baseline", task)), f"{SINGLE_BUILDER}()")
    systems |= sys_seen
    entries += keyed("baseline", texts, always_per_family=True)
    if len(systems) != 1:
        raise ImportFailure(f"the builders use {len(systems)} different system messages; the engine has one per set")
    return systems.pop(), entries


def main():
    path, out, note = sys.argv[1], sys.argv[2], sys.argv[3]
    try:
        module = load_module(path)
    except Exception as e:
        print(f"{path}: cannot be imported: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    try:
        system, entries = export(module)
    except ImportFailure as e:
        print(f"{path}: {e}", file=sys.stderr)
        return 2
    doc = {"_source": note, "_system": system}
    for key, text in entries:
        doc[key] = text
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
