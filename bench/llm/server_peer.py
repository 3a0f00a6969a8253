#!/usr/bin/env python3
"""`trident bench llm`'s measurements against llama.cpp's own server from PyPI.

The issue's named peer (issue 2, item 8): start `python -m llama_cpp.server`
(`llama-cpp-python[server]`) on GGUF with THREADS threads and measure over HTTP, greedy, with
each prompt starting differently so the server's own prefix reuse cannot help. Rates count the
tokens actually generated (the word-list prompts run to GEN tokens on both default models;
`--ban-eog` forces it through `logit_bias`, which this server applies per token in Python and
which costs it ~30% of its decode speed):

- prefill: a ~512-token prompt, one token generated (prompt tokens / request time);
- time to first token, cold: a ~1,010-token prompt, one token generated;
- decode: GEN tokens streamed from a short prompt, rate after the first chunk;
- aggregate: STREAMS requests (~64-token prompts, GEN tokens each) sent at once, generated
  tokens over the wall time from the first send to the last reply (prompt processing included,
  as in `trident bench llm` and `llama-batched-bench`).

    server_peer.py --gguf M.gguf --threads 2 [--streams 8] [--gen 128] [--port 8765]

Prints one JSON object. Run by bench/llm/run.sh with the venv it makes
(bench/work/llm/venv-server); standard library only on the client side.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
         "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def request(url, body):
    return urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})


def post(url, body, timeout=600):
    with urllib.request.urlopen(request(url, body), timeout=timeout) as r:
        return json.loads(r.read())


class Vocab:
    """The model's own tokenizer (vocabulary only), to size prompts and ban end-of-generation."""

    def __init__(self, gguf):
        import llama_cpp

        self.llm = llama_cpp.Llama(model_path=gguf, vocab_only=True, verbose=False)
        vocab = self.llm._model.vocab
        self.eog = [i for i in range(self.llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, i)]

    def count(self, text):
        return len(self.llm.tokenize(text.encode(), add_bos=True, special=False))

    def prompt(self, tag, n_tokens):
        """About n_tokens tokens of text starting with `tag` (a unique start: no prefix reuse)."""
        words = [WORDS[(len(tag) * 7 + k * 3) % len(WORDS)] for k in range(n_tokens)]
        lo, hi = 1, len(words)
        while lo < hi:  # the most words whose text is at most n_tokens tokens
            mid = (lo + hi + 1) // 2
            if self.count(tag + " " + " ".join(words[:mid])) <= n_tokens:
                lo = mid
            else:
                hi = mid - 1
        return tag + " " + " ".join(words[:lo])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--prefix-tokens", type=int, default=1000)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--ban-eog", action="store_true",
                    help="forbid end-of-generation tokens through logit_bias (applied per token in Python by "
                         "this server, which slows its decode by ~30%%); without it, rates count the tokens "
                         "actually generated")
    a = ap.parse_args()

    base = f"http://127.0.0.1:{a.port}"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", a.gguf, "--host", "127.0.0.1", "--port", str(a.port),
           "--n_threads", str(a.threads), "--n_threads_batch", str(a.threads), "--n_ctx", "2048", "--n_batch", "512"]
    # The server's log goes to a file: llama.cpp writes more than a pipe holds while loading.
    log = tempfile.TemporaryFile()
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(600):
            if server.poll() is not None:
                log.seek(0)
                raise SystemExit(f"llama_cpp.server exited: {log.read().decode(errors='replace')[-2000:]}")
            try:
                urllib.request.urlopen(base + "/v1/models", timeout=2).read()
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise SystemExit("llama_cpp.server did not come up in 300 s")
        vocab = Vocab(a.gguf)
        bias = {str(i): -100.0 for i in vocab.eog} if a.ban_eog else None

        def complete(text, max_tokens):
            body = {"prompt": text, "max_tokens": max_tokens, "temperature": 0.0, "logit_bias": bias}
            t0 = time.perf_counter()
            r = post(base + "/v1/completions", body)
            return r, time.perf_counter() - t0

        def stream(text, max_tokens):
            """Seconds to the first streamed chunk and to the end."""
            body = {"prompt": text, "max_tokens": max_tokens, "temperature": 0.0, "logit_bias": bias, "stream": True}
            t0 = time.perf_counter()
            first, chunks = None, 0
            with urllib.request.urlopen(request(base + "/v1/completions", body), timeout=600) as r:
                for line in r:
                    if line.startswith(b"data: {") and json.loads(line[6:])["choices"][0]["text"]:
                        chunks += 1  # one generated token each (no stop strings to hold text back)
                        if first is None:
                            first = time.perf_counter() - t0
            return first, time.perf_counter() - t0, chunks

        complete(vocab.prompt("Warm-up", 16), 8)
        # Prefill: a fresh 512-token prompt, one token generated.
        r, t = complete(vocab.prompt("P1", a.prompt_tokens), 1)
        prefill = {"prompt_tokens": r["usage"]["prompt_tokens"], "tok_s": r["usage"]["prompt_tokens"] / t}
        # Time to first token, cold: a fresh ~1,010-token prompt.
        r, t = complete(vocab.prompt("T1", a.prefix_tokens + 10), 1)
        ttft = {"prompt_tokens": r["usage"]["prompt_tokens"], "ms": 1000.0 * t}
        # Decode: GEN tokens streamed from a short prompt; rate after the first chunk.
        first, total, chunks = stream(vocab.prompt("D1", 4), a.gen)
        decode_tok_s = (chunks - 1) / (total - first)

        # Aggregate: STREAMS requests at once, ~64-token prompts.
        replies = [None] * a.streams

        def worker(i):
            replies[i] = complete(vocab.prompt(f"S{i}", 64), a.gen)[0]

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(a.streams)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        generated = [r["usage"]["completion_tokens"] for r in replies]
        print(json.dumps({
            "peer": "llama-cpp-python[server] " + __import__("llama_cpp").__version__,
            "threads": a.threads, "streams": a.streams, "gen_tokens": a.gen,
            "eog_banned": bias is not None, "prefill": prefill, "decode_tok_s": decode_tok_s,
            "decode_tokens": chunks, "ttft_cold": ttft, "aggregate_generated": generated,
            "aggregate_prompt_tokens": [r["usage"]["prompt_tokens"] for r in replies],
            "aggregate_tok_s": sum(generated) / wall, "aggregate_wall_s": wall,
        }))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
