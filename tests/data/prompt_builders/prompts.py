# A small prompt module with the builder interface `latentmas prompts import` calls (the function names and
# arguments of the LatentMAS reference's prompts.py), written for tests: its wording is this project's own.
# Which texts depend on the benchmark is chosen to exercise the importer's key rules: roles that never
# depend on it, roles that differ per family, a medqa text equal to mc (left out) and one that differs.

SYSTEM = "You are a test assistant."

ANSWER = {
    "gsm8k": "End with the number in \\boxed{{}}.",
    "aime2024": "End with the number in \\boxed{{}}.",
    "aime2025": "End with the number in \\boxed{{}}.",
    "arc_easy": "End with one option letter in \\boxed{{}}.",
    "arc_challenge": "End with one option letter in \\boxed{{}}.",
    "gpqa": "End with one option letter in \\boxed{{}}.",
    "medqa": "End with one option letter in \\boxed{{}}.",
    "mbppplus": "End with a python block.",
    "humanevalplus": "End with a python block.",
}


def _answer(args):
    if args.task not in ANSWER:
        raise NotImplementedError(f"task {args.task}")
    return ANSWER[args.task].replace("{{}}", "{}")


def _messages(user):
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def build_agent_message_sequential_latent_mas(role, question, context="", method=None, args=None):
    assert method == "latent_mas"
    if role == "judger":
        return _messages(f"Decide.\nQ: {question}\n{_answer(args)}")
    return _messages(f"Think as the {role}.\nQ: {question}")


def build_agent_message_hierarchical_latent_mas(role, question, context="", method=None, args=None):
    assert method == "latent_mas"
    field = "medicine" if args.task == "medqa" else "general"
    return _messages(f"{role} ({field}).\nQ: {question}\n{_answer(args)}")


def build_agent_messages_sequential_text_mas(role, question, context="", method=None, args=None):
    assert method == "text_mas"
    ctx = context[: args.text_mas_context_length]
    if role == "planner":
        return _messages(f"Plan only.\nQ: {question}")
    tail = _answer(args) if role == "judger" else "Improve it."
    return _messages(f"Q: {question}\nSo far:\n{ctx}\n{tail}")


def build_agent_messages_hierarchical_text_mas(role, question, context="", method=None, args=None):
    assert method == "text_mas"
    if role == "judger":
        return _messages(f"Sum up.\n{context[:args.text_mas_context_length]}\nQ: {question}\n{_answer(args)}")
    return _messages(f"Answer as {role}.\nQ: {question}\n{_answer(args)}")


def build_agent_messages_single_agent(question, args=None):
    assert args.method == "baseline"
    return _messages(f"Q: {question}\n{_answer(args)}")
