"""Reference values from llama.cpp for kiln's language-model tests, on the same GGUF.

Writes tests/fixtures/smollm2-llama-cpp.json: for each prompt (the five of
../shared/peers/llama_cpp_gen.py and kiln's own), llama.cpp's prompt token
ids, its first 32 greedy tokens (decoded token by token) with each position's
top-1/top-2 logit margin, top token and the chosen token's log-probability
from one batched pass over prompt and answer; the token ids of a set of
texts (tokenizer check); and the perplexity over the first 2048 tokens of
the review snippets (windows of 512, as llama.cpp's perplexity tool).

Usage (peers venv, see ../shared/peers/setup.sh):
  python benches/peers/llama_cpp_reference.py [--model GGUF] [--out FILE]
"""
import argparse, csv, json, math, os
import numpy as np
from llama_cpp import Llama

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.join(here, "..", "..")
data = os.environ.get("KILN_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "kiln", "data")
p = argparse.ArgumentParser()
p.add_argument("--model", default=os.path.join(data, "models", "smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf"))
p.add_argument("--out", default=os.path.join(root, "tests", "fixtures", "smollm2-llama-cpp.json"))
p.add_argument("--tokens", type=int, default=32)
a = p.parse_args()

def chatml(user):
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"

users = [
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "List three prime numbers.",
    "Explain what a neural network is in one sentence.",
    "Translate 'good morning' into Spanish.",
    # kiln's own
    "Name two colours of the rainbow.",
    "What does a cat say?",
    "Give me a word that rhymes with 'light'.",
    "Is the following review positive or negative? 'A warm, funny and sharply observed film.'",
    "Count from 1 to 5.",
]
texts = [
    "Hello world! It's 2024-12-01, and the price is $1,234.56.",
    "naïve café — résumé, 東京, emoji 🙂 and tabs\tand\nnewlines   with   spaces",
    "def f(x):\n    return x ** 2  # square\n",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
    "I've been there, they're nice, we'll see; you'd know. DON'T SHOUT",
]
rows = csv.DictReader(open(os.path.join(root, "pipelines", "data", "rotten_tomatoes.csv"), encoding="utf-8"))
reviews = [r["text"] for r in rows]
texts += reviews[:20]

llm = Llama(model_path=a.model, n_ctx=2048, n_batch=512, n_threads=2, logits_all=True, verbose=False, seed=0)
out = {"model": os.path.basename(a.model), "llama_cpp_python": __import__("llama_cpp").__version__, "prompts": [], "tokenized": []}
for u in users:
    text = chatml(u)
    toks = llm.tokenize(text.encode(), add_bos=False, special=True)
    llm.reset()
    gen = []
    for t in llm.generate(toks, temp=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0, reset=True):
        if t == llm.token_eos() or len(gen) >= a.tokens:
            break
        gen.append(t)
    seq = toks + gen
    llm.reset(); llm.eval(seq)
    sc = np.asarray(llm.scores[:len(seq)])
    margins = [float(np.diff(np.sort(sc[i])[-2:])[0]) for i in range(len(toks) - 1, len(seq) - 1)]
    safe = next((i for i, m in enumerate(margins) if m < 0.1), len(gen))
    # llama.cpp's batched pass (the scores) and its token-by-token decoding
    # (the greedy tokens) can disagree with each other at a position that is
    # not a near-tie: from there on, which is "llama.cpp's" token is moot.
    batch_top = [int(np.argmax(sc[i])) for i in range(len(toks) - 1, len(seq) - 1)]
    consistent = next((i for i, (b, g) in enumerate(zip(batch_top, gen)) if b != g), len(gen))
    logp = [float(sc[i][seq[i + 1]] - (sc[i].max() + np.log(np.exp(sc[i] - sc[i].max()).sum()))) for i in range(len(toks) - 1, len(seq) - 1)]
    out["prompts"].append({"user": u, "prompt": text, "prompt_tokens": toks, "tokens": gen,
                           "text": llm.detokenize(gen).decode("utf-8", "replace"),
                           "margins": [round(m, 4) for m in margins], "safe_prefix_tokens": safe,
                           "batch_top": batch_top, "self_consistent_prefix_tokens": consistent,
                           "token_logprobs": [round(x, 5) for x in logp]})
for t in texts:
    out["tokenized"].append({"text": t, "tokens": llm.tokenize(t.encode(), add_bos=False, special=True)})

text = "\n".join(reviews)
toks = llm.tokenize(text.encode(), add_bos=False)[:2048]
scorer = Llama(model_path=a.model, n_ctx=512, n_batch=512, n_threads=2, logits_all=True, verbose=False)
nll, count = 0.0, 0
for s in range(0, len(toks) - 512 + 1, 512):
    w = toks[s:s + 512]
    scorer.reset(); scorer.eval(w)
    logits = np.asarray(scorer.scores[:512], dtype=np.float64)
    r = logits[256:511]; m = r.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(r - m).sum(axis=1))
    nll += float((lse - r[np.arange(255), np.array(w[257:512])]).sum()); count += 255
out["perplexity"] = {"tokens": 2048, "window": 512, "tokens_scored": count, "perplexity": math.exp(nll / count)}
json.dump(out, open(a.out, "w"), indent=1)
print(f"wrote {a.out}: {len(out['prompts'])} prompts, {len(out['tokenized'])} texts, perplexity {out['perplexity']['perplexity']:.3f}")
