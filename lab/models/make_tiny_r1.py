#!/usr/bin/env python3
# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Write the lab's tiny DeepSeek-R1-style model into a Hugging Face-style folder.

    python3 lab/models/make_tiny_r1.py OUTDIR

A Llama with 2 layers, hidden size 128 and 4 heads of dimension 32 (vLLM's CPU
attention refuses a head dimension below 32), a byte-level BPE tokenizer with
DeepSeek-R1's special tokens and chat template. Its answer is known without
training: every o_proj and down_proj is zero, so a token's logits depend only
on the token itself; the tokens of the scripted reply get orthonormal
embeddings, and lm_head points each of them at the next one. The real
kernels, KV cache, sampler and reasoning parser still run.

Whatever the prompt, the chat template ends it with "<think>\\n", and the
model replies REASONING, "</think>", CONTENT and end-of-sentence, so vLLM's
``--reasoning-parser deepseek_r1`` returns ``message.reasoning == REASONING``
and ``message.content == CONTENT``. The bytes are the same on every run (fixed
seed, embedded training text, no timestamps), so the mirror's manifest of the
folder is stable.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path

# The known answer, for the end-to-end tests (import this file, or read it).
REASONING = "The user greets me."
CONTENT = "Hello from tiny!"
GREETING = "Hello, who are you?"
SERVED_NAME = "tiny-r1"

# DeepSeek's special tokens use FULLWIDTH VERTICAL LINE (U+FF5C) and LOWER ONE
# EIGHTH BLOCK (U+2581).
BOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"
EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"
USER = "<\uff5cUser\uff5c>"
ASSISTANT = "<\uff5cAssistant\uff5c>"
THINK_START = "<think>"
THINK_END = "</think>"

HIDDEN = 128
HEADS = 4
HEAD_DIM = HIDDEN // HEADS
LAYERS = 2
INTERMEDIATE = 256
VOCAB_TARGET = 1500
MAX_POSITIONS = 2048
SEED = 20260
# lm_head's weight on the next token of the reply; with unit embeddings after
# RMSNorm (x sqrt(128)) the winning logit leads every other one by about 113,
# so even sampling at temperature 1 follows the script.
LOGIT_SCALE = 10.0

# DeepSeek-R1's template, cut to what the lab uses: system text first, the
# user and assistant turns, earlier reasoning removed from assistant turns,
# and the generation prompt opening the reasoning with "<think>\n".
CHAT_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{{ bos_token }}"
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] }}{% endif %}{% endfor %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '" + USER + "' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}"
    "{% set content = message['content'] %}"
    "{% if '" + THINK_END + "' in content %}{% set content = content.split('" + THINK_END + "')[-1] %}{% endif %}"
    "{{ '" + ASSISTANT + "' + content + '" + EOS + "' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '" + ASSISTANT + THINK_START + "\\n' }}{% endif %}"
)

# Training text for the tokenizer, embedded so that the vocabulary does not
# depend on what the machine has installed.
CORPUS = """\
The enclave serves a reasoning model to the clinicians of a hospital. The user greets me.
Hello from tiny! Hello from the lab. The model runs on the processor of a small machine.
Every prompt may carry patient data, so nothing leaves the host: the container has no network,
the weights are read only, and the service listens on a socket in a private directory.
The firewall drops every packet that is not allowed, in both directions, and the monitor
proves it again and again. Administrators are trusted, and everything they do is audited.
A radiologist asks for a summary of a report; the model thinks first, then answers.
Reasoning comes between the think tags; the answer follows them. The parser splits the two.
Software and weights come from the offline mirror only, checked against their manifests.
The images are signed, pinned by digest, and run by an account that cannot change them.
Questions, answers, greetings and reports: the words of a hospital, from morning to night.
Who are you? I am a tiny model made for tests, and my answer is always the same one.
"""


def _require_dependencies():
    """Import numpy, safetensors and tokenizers, or re-run under the project's venv."""
    try:
        import numpy  # noqa: F401
        import safetensors  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError as exc:
        venv = Path(__file__).resolve().parents[2] / ".venv"
        if (venv / "bin" / "python3").exists() and Path(sys.prefix).resolve() != venv:
            os.execv(str(venv / "bin" / "python3"), [str(venv / "bin" / "python3"), *sys.argv])
        sys.exit(f"make_tiny_r1: {exc.name} is missing: run 'make deps' (requirements.txt pins it)")


def build_tokenizer():
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = [BOS, EOS, USER, ASSISTANT]
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_TARGET,
        special_tokens=[AddedToken(token, special=True, normalized=False) for token in specials],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    # Like DeepSeek-R1's: the think tags are added but not special, so they
    # stay in the decoded text where the reasoning parser looks for them.
    tokenizer.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in (THINK_START, THINK_END)])
    return tokenizer


def reply_chain(tokenizer):
    """Token ids from the end of the prompt to end-of-sentence; each id once."""
    prompt_end = tokenizer.encode(ASSISTANT + THINK_START + "\n").ids[-1]
    reply = [*tokenizer.encode(REASONING).ids, tokenizer.token_to_id(THINK_END), *tokenizer.encode(CONTENT).ids]
    chain = [prompt_end, *reply, tokenizer.token_to_id(EOS)]
    if len(set(chain)) != len(chain):
        raise SystemExit(f"make_tiny_r1: the reply repeats a token ({chain}); choose words that do not")
    decoded = tokenizer.decode(reply, skip_special_tokens=False)
    if decoded != REASONING + THINK_END + CONTENT:
        raise SystemExit(f"make_tiny_r1: the reply decodes as {decoded!r}")
    return chain


def build_weights(vocab_size, chain):
    import numpy as np

    rng = np.random.default_rng(SEED)

    def small(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    # Orthonormal directions for the reply's tokens; every other token lives
    # in the rest of the space, so it cannot pull the reply off its script.
    basis, _triangular = np.linalg.qr(rng.standard_normal((HIDDEN, HIDDEN)))
    chain_dirs = basis[:, : len(chain)].T
    embed = small(vocab_size, HIDDEN)
    embed -= (embed @ chain_dirs.T) @ chain_dirs
    embed[chain] = chain_dirs
    lm_head = np.zeros((vocab_size, HIDDEN), dtype=np.float32)
    for current, following in itertools.pairwise(chain):
        lm_head[following] += LOGIT_SCALE * embed[current]

    tensors = {"model.embed_tokens.weight": embed, "model.norm.weight": np.ones(HIDDEN), "lm_head.weight": lm_head}
    for layer in range(LAYERS):
        prefix = f"model.layers.{layer}."
        tensors |= {
            prefix + "input_layernorm.weight": np.ones(HIDDEN),
            prefix + "post_attention_layernorm.weight": np.ones(HIDDEN),
            prefix + "self_attn.q_proj.weight": small(HIDDEN, HIDDEN),
            prefix + "self_attn.k_proj.weight": small(HIDDEN, HIDDEN),
            prefix + "self_attn.v_proj.weight": small(HIDDEN, HIDDEN),
            prefix + "self_attn.o_proj.weight": np.zeros((HIDDEN, HIDDEN)),
            prefix + "mlp.gate_proj.weight": small(INTERMEDIATE, HIDDEN),
            prefix + "mlp.up_proj.weight": small(INTERMEDIATE, HIDDEN),
            prefix + "mlp.down_proj.weight": np.zeros((HIDDEN, INTERMEDIATE)),
        }
    return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in tensors.items()}


def config(vocab_size, bos_id, eos_id):
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": HEADS,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": 1e-06,
        "rope_theta": 10000.0,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "vocab_size": vocab_size,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "torch_dtype": "float32",
        "use_cache": True,
    }


def tokenizer_config():
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": EOS,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": MAX_POSITIONS,
        "chat_template": CHAT_TEMPLATE,
    }


def write_json(path, data):
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def make(outdir):
    from safetensors.numpy import save_file

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    chain = reply_chain(tokenizer)
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    bos_id, eos_id = tokenizer.token_to_id(BOS), tokenizer.token_to_id(EOS)
    tokenizer.save(str(outdir / "tokenizer.json"))
    write_json(outdir / "tokenizer_config.json", tokenizer_config())
    write_json(outdir / "config.json", config(vocab_size, bos_id, eos_id))
    write_json(outdir / "generation_config.json", {"bos_token_id": bos_id, "eos_token_id": eos_id})
    save_file(build_weights(vocab_size, chain), str(outdir / "model.safetensors"), metadata={"format": "pt"})
    for path in outdir.iterdir():
        path.chmod(0o644)
    return sorted(path.name for path in outdir.iterdir())


def main(argv):
    if len(argv) != 2 or argv[1].startswith("-"):
        sys.exit("usage: make_tiny_r1.py OUTDIR  (writes the tiny DeepSeek-R1-style model into OUTDIR)")
    _require_dependencies()
    for name in make(argv[1]):
        print(Path(argv[1]) / name)


if __name__ == "__main__":
    main(sys.argv)
