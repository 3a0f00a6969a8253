#!/usr/bin/env python3
"""LoRA training speed and peak RSS: Trident vs PyTorch + PEFT (issue 4, item 6).

Run through the wrapper, which makes the venv and runs every measurement in its own process:

    bench/lora/train_bench.sh        (THREADS, STEPS, WARMUP, BATCH, SEQ, RANK, BASE, TRIDENT, CKPT)

Sub-commands (each measurement is one process, so every peak RSS is that run's alone):

  peft     --dtype fp32|bf16   PyTorch + PEFT on the GGUF base dequantized by transformers
                               (`gguf_file=…`), the whole model in DTYPE; LoRA r, alpha 2r,
                               dropout 0 on q,k,v,o,gate,up,down; AdamW lr 1e-4; random token ids
                               [batch, seq] with labels = inputs (loss on every position); no
                               gradient checkpointing; torch.set_num_threads(THREADS). Tokens/s of
                               every step; peak RSS = ru_maxrss of this process.
  dataset                      A chat JSONL for `trident lora train` whose every sample is exactly
                               SEQ input tokens (a short system/user prompt, then an answer of
                               random single-token words), counted with the HF tokenizer read
                               from the same GGUF; Trident's own count is checked after the run.
  trident  [--no-ckpt]         `trident --json lora train` on that data with the same shapes
                               (RAYON_NUM_THREADS=THREADS), the GGUF base as it is (quantized,
                               dequantized per matmul); tokens/s of every logged step; peak RSS =
                               ru_maxrss of the child (os.wait4).
  report   A.json B.json …     The markdown table with the ratios; writes
                               bench/results/lora-train-<UTC stamp>.json.

Tokens counted on both sides: batch × seq input tokens per step. PEFT computes the LM head and
the loss on all seq positions; Trident computes them on the answer's positions only (seq minus
the ~15-token chat prompt), a ~1.5% advantage at seq 256 (the head is ~27% of the per-token
forward work).
"""

import argparse
import datetime as dt
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GIB = 1024**3
# Common English words; the ones that are a single token with a leading space are used.
WORDS = """time year people way day man thing woman life child world school state family student group country
problem hand part place case week company system program question work government number night point home water
room mother area money story fact month lot right study book eye job word business issue side kind head house
service friend father power hour game line end member law car city community name president team minute idea kid
body information back parent face others level office door health person art war history party result change
morning reason research girl guy moment air teacher force education river stone apple green blue small large
open close read write run walk talk speak think know find give tell call try ask need feel become leave put mean
keep let begin seem help show hear play move like live believe bring happen stand lose pay meet include continue
set learn lead understand watch follow stop create allow add spend grow offer remember love consider appear buy
wait serve die send build stay fall cut reach kill raise pass sell decide return explain hope develop carry break
receive agree support hit produce eat cover catch draw choose""".split()


def log(msg):
    print(f"[train-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def maxrss_bytes(ru):
    return ru.ru_maxrss * 1024  # Linux: kilobytes


def summarize(step_tps, warmup, tokens_per_step):
    """Median and aggregate tokens/s over the timed steps (after `warmup`)."""
    timed = step_tps[warmup:]
    if not timed:
        raise SystemExit(f"no timed steps (got {len(step_tps)} steps, warm-up {warmup})")
    secs = sum(tokens_per_step / t for t in timed)
    return {"tokens_per_s_median": statistics.median(timed), "tokens_per_s_aggregate": tokens_per_step * len(timed) / secs,
            "tokens_per_s_min": min(timed), "tokens_per_s_max": max(timed), "timed_steps": len(timed),
            "step_tokens_per_s": step_tps}


def cmd_peft(a):
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[a.dtype]
    base = Path(a.base).resolve()
    t0 = time.time()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(base.parent), gguf_file=base.name, dtype=dtype)
    except TypeError:
        model = AutoModelForCausalLM.from_pretrained(str(base.parent), gguf_file=base.name, torch_dtype=dtype)
    model.config.use_cache = False
    load_s = time.time() - t0
    rss_after_load = maxrss_bytes(resource.getrusage(resource.RUSAGE_SELF))
    cfg = LoraConfig(r=a.rank, lora_alpha=2 * a.rank, lora_dropout=0.0, target_modules=TARGETS, bias="none",
                     task_type="CAUSAL_LM")
    pm = get_peft_model(model, cfg)
    dev = torch.device(a.device)
    pm.to(dev)
    pm.train()
    params = [p for p in pm.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    log(f"PEFT {a.dtype}: loaded in {load_s:.0f} s, {trainable} trainable parameters, peak RSS so far "
        f"{rss_after_load / GIB:.2f} GiB")
    opt = torch.optim.AdamW(params, lr=1e-4)
    vocab = pm.config.vocab_size
    g = torch.Generator().manual_seed(1)
    step_tps, losses = [], []
    tokens = a.batch * a.seq
    for step in range(a.warmup + a.steps):
        x = torch.randint(0, vocab, (a.batch, a.seq), generator=g).to(dev)
        t = time.perf_counter()
        out = pm(input_ids=x, labels=x, use_cache=False)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        d = time.perf_counter() - t
        step_tps.append(tokens / d)
        losses.append(out.loss.item())
        log(f"PEFT {a.dtype} step {step + 1}/{a.warmup + a.steps}{' (warm-up)' if step < a.warmup else ''}: "
            f"{d:.1f} s, {tokens / d:.1f} tok/s, loss {losses[-1]:.3f}")
    import peft
    import transformers

    res = {"side": "peft", "label": f"PyTorch + PEFT, {a.dtype}", "dtype": a.dtype, "threads": a.threads,
           "device": a.device,
           "peak_gpu_bytes": torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None,
           "batch": a.batch, "seq": a.seq, "rank": a.rank, "warmup_steps": a.warmup, "trainable_params": trainable,
           "load_s": load_s, "peak_rss_after_load_bytes": rss_after_load,
           "peak_rss_bytes": maxrss_bytes(resource.getrusage(resource.RUSAGE_SELF)), "losses": losses,
           "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                        "python": platform.python_version()},
           **summarize(step_tps, a.warmup, tokens)}
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")


def cmd_dataset(a):
    from transformers import AutoTokenizer

    base = Path(a.base).resolve()
    tok = AutoTokenizer.from_pretrained(str(base.parent), gguf_file=base.name)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    words = [w for w in WORDS if len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1]
    rng = random.Random(a.seed)
    want = a.seq + 1  # tokens up to and including the answer's <|im_end|>: SEQ inputs (the last predicts nothing)

    def count(msgs):
        ids = tok(tok.apply_chat_template(msgs, tokenize=False), add_special_tokens=False)["input_ids"]
        ends = [i for i, t in enumerate(ids) if t == im_end]
        return ends[-1] + 1

    n_samples = a.batch * (a.warmup + a.steps)
    with open(a.out, "w", encoding="utf-8") as f:
        for i in range(n_samples):
            prompt = [{"role": "system", "content": "You list words."}, {"role": "user", "content": f"Words, list {i + 1}:"}]
            ans = [rng.choice(words) for _ in range(max(1, want - 20))]
            for _ in range(50):
                n = count(prompt + [{"role": "assistant", "content": " ".join(ans)}])
                if n == want:
                    break
                if n < want:
                    ans += [rng.choice(words) for _ in range(want - n)]
                else:
                    del ans[max(1, len(ans) - (n - want)):]
            else:
                raise SystemExit(f"could not make a sample of exactly {a.seq} input tokens")
            msgs = prompt + [{"role": "assistant", "content": " ".join(ans)}]
            f.write(json.dumps({"messages": msgs}) + "\n")
    log(f"dataset: {n_samples} samples of {a.seq} input tokens ({len(words)} single-token words) → {a.out}")


def cmd_trident(a):
    home = Path(a.work) / ("home-nockpt" if a.no_ckpt else "home-ckpt")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIDENT_")}
    env["TRIDENT_HOME"] = str(home)
    env["RAYON_NUM_THREADS"] = str(a.threads)
    total = a.warmup + a.steps
    args = [a.trident, "--json", "lora", "train", "--base", str(Path(a.base).resolve()), "--data", a.data, "--out", "bench",
            "--rank", str(a.rank), "--alpha", str(2 * a.rank), "--dropout", "0", "--targets", "q,k,v,o,gate,up,down",
            "--lr", "1e-4", "--warmup", "0", "--max-grad-norm", "0", "--batch", str(a.batch), "--grad-accum", "1",
            "--max-len", str(a.seq + 1), "--epochs", "1", "--max-steps", str(total), "--save-every", "0", "--seed", "1",
            "--restart"]
    if a.no_ckpt:
        args.append("--no-checkpointing")
    if a.device != "cpu":
        args += ["--device", a.device]
    label = f"Trident ({'--no-checkpointing' if a.no_ckpt else 'checkpointing'})"
    log(f"{label}: {' '.join(args)}")
    t0 = time.time()
    p = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True)
    lines = []
    for line in p.stdout:
        if line.startswith("{"):
            ev = json.loads(line)
            lines.append(ev)
            if "step" in ev and "event" not in ev:
                log(f"{label} step {ev['step']}/{total}{' (warm-up)' if ev['step'] <= a.warmup else ''}: "
                    f"{ev['tokens_per_s']:.1f} tok/s, loss {ev['loss']:.3f}")
            elif ev.get("event") == "ready":
                log(f"{label} ready after {time.time() - t0:.0f} s: {json.dumps(ev)}")
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"trident lora train failed ({p.returncode})")
    ready = next(x for x in lines if x.get("event") == "ready")
    done = next(x for x in lines if x.get("event") == "done")
    steps = [x for x in lines if "step" in x and "event" not in x]
    tokens = a.batch * a.seq
    tr = done["training"]
    if ready["skipped"] or tr["steps"] != total or tr["tokens"] != total * tokens:
        raise SystemExit(f"Trident did not train {total} steps of {a.batch} × {a.seq} tokens: ready {ready}, "
                         f"training {tr} (the dataset's token count disagrees with Trident's tokenizer/template?)")
    res = {"side": "trident", "label": label, "checkpointing": not a.no_ckpt, "threads": a.threads, "batch": a.batch,
           "device": a.device,
           "seq": a.seq, "rank": a.rank, "warmup_steps": a.warmup, "trainable_params": ready["trainable_params"],
           "binary": a.trident, "wall_s": time.time() - t0, "peak_rss_bytes": maxrss_bytes(ru),
           "losses": [x["loss"] for x in steps], **summarize([x["tokens_per_s"] for x in steps], a.warmup, tokens)}
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")


def cmd_report(a):
    runs = [json.loads(Path(p).read_text()) for p in a.results]
    peft = {r["dtype"]: r for r in runs if r["side"] == "peft"}
    ours = [r for r in runs if r["side"] == "trident"]
    bf16, fp32 = peft.get("bf16"), peft.get("fp32")
    ratio = lambda x, y: x / y if y else float("nan")
    first = runs[0]
    print(f"\nLoRA training on {first.get('device', 'cpu')}, r = {first['rank']} on q,k,v,o,gate,up,down, batch {first['batch']} × {first['seq']} tokens, "
          f"{first['threads']} threads, median over {first['timed_steps']} timed steps after {first['warmup_steps']} warm-up; "
          f"load average {a.load_before} before, {os.getloadavg()[0]:.2f} after\n")
    print("| run | tokens/s (median) | tokens/s (aggregate) | peak RSS | tok/s ÷ PEFT bf16 | tok/s ÷ PEFT fp32 "
          "| RSS ÷ PEFT bf16 |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        tps, rss = r["tokens_per_s_median"], r["peak_rss_bytes"]
        r["ratios"] = {"tokens_per_s_vs_peft_bf16": ratio(tps, bf16 and bf16["tokens_per_s_median"]),
                       "tokens_per_s_vs_peft_fp32": ratio(tps, fp32 and fp32["tokens_per_s_median"]),
                       "peak_rss_vs_peft_bf16": ratio(rss, bf16 and bf16["peak_rss_bytes"])}
        q = r["ratios"]
        print(f"| {r['label']} | {tps:.1f} | {r['tokens_per_s_aggregate']:.1f} | {rss / GIB:.2f} GiB "
              f"| {q['tokens_per_s_vs_peft_bf16']:.2f}× | {q['tokens_per_s_vs_peft_fp32']:.2f}× "
              f"| {q['peak_rss_vs_peft_bf16']:.2f}× |")
    checks = {}
    for r in ours:
        q = r["ratios"]
        ok = q["tokens_per_s_vs_peft_bf16"] >= 2.0 and q["peak_rss_vs_peft_bf16"] <= 0.5
        checks[r["label"]] = {"tokens_per_s_ge_2x_peft_bf16": q["tokens_per_s_vs_peft_bf16"] >= 2.0,
                              "peak_rss_le_0_5x_peft_bf16": q["peak_rss_vs_peft_bf16"] <= 0.5, "pass": ok}
        print(f"\ntarget (≥ 2× PEFT bf16 tokens/s at ≤ 0.5× its peak RSS), {r['label']}: "
              f"{q['tokens_per_s_vs_peft_bf16']:.2f}× tokens/s, {q['peak_rss_vs_peft_bf16']:.2f}× RSS → "
              f"{'PASS' if ok else 'FAIL'}")
    now = dt.datetime.now(dt.timezone.utc)
    result = {"time": now.isoformat(timespec="seconds"), "base": str(Path(a.base).resolve()), "machine": platform.node(),
              "cpus": os.cpu_count(), "load_average_before": a.load_before, "load_average_after": os.getloadavg()[0],
              "note": a.note, "runs": runs, "target_checks": checks}
    out = Path(a.out) if a.out else ROOT / "bench/results" / f"lora-train-{now.strftime('%Y-%m-%dT%H%MZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nresults: {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def shape(p):
        p.add_argument("--base", required=True)
        p.add_argument("--threads", type=int, required=True)
        p.add_argument("--steps", type=int, default=10)
        p.add_argument("--warmup", type=int, default=2)
        p.add_argument("--batch", type=int, default=4)
        p.add_argument("--seq", type=int, default=256)
        p.add_argument("--rank", type=int, default=16)
        p.add_argument("--device", default="cpu", help="cpu, or cuda / cuda:N for both sides")
        p.add_argument("--out", required=True)

    p = sub.add_parser("peft")
    shape(p)
    p.add_argument("--dtype", choices=["fp32", "bf16"], required=True)
    p = sub.add_parser("dataset")
    shape(p)
    p.add_argument("--seed", type=int, default=7)
    p = sub.add_parser("trident")
    shape(p)
    p.add_argument("--trident", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--no-ckpt", action="store_true")
    p = sub.add_parser("report")
    p.add_argument("results", nargs="+")
    p.add_argument("--base", required=True)
    p.add_argument("--load-before", type=float, default=None)
    p.add_argument("--note", default="")
    p.add_argument("--out", default=None)
    a = ap.parse_args()
    {"peft": cmd_peft, "dataset": cmd_dataset, "trident": cmd_trident, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
