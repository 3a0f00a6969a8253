#!/usr/bin/env python3
"""PEFT cross-check of Trident's LoRA adapters (issue 4), in both directions.

    bench/lora/peft_check.sh [--base GGUF] [--trident BIN] ...   (the wrapper makes the venv)

a. Trident -> PEFT: trains a small adapter with `trident lora train` (r=8, alpha=16, the seven
   projections, lr 1e-2, 3 optimizer steps on 4 chat samples) in a temporary TRIDENT_HOME, loads
   its PEFT directory with `PeftModel.from_pretrained` on the same GGUF base dequantized to
   float32 by transformers, and compares next-token logits with `trident lora logits`.
b. PEFT -> Trident: makes a PEFT LoRA adapter in Python on the same base (LoraConfig r=8,
   alpha=16, same targets, lora_B ~ N(0, 0.05^2) with a fixed seed), `save_pretrained`s it,
   imports it with `trident lora import`, and compares the same way.

Per direction and text (one Russian, one English, ~30 tokens, the same token ids on both sides:
the HF tokenizer's, checked against Trident's own tokenization):

- candle (`--engine candle`: f32, base dequantized, LoRA at alpha/r) vs PEFT: max |delta logit|
  over Trident's top-20 at every position, and top-1 agreement. Expected <= 1e-2: both sides
  are float32 on the same dequantized weights.
- llama.cpp (`--engine llama`: quantized base and activations, GGUF-LoRA export) vs PEFT:
  top-1 agreement and max |delta log-prob| of PEFT's top-1 token. Top-1 can flip on near-ties
  through quantization noise alone, so agreement is also reported on decisive positions (PEFT's
  top-1 ahead of its top-2 by >= 0.5 nats), with every disagreement's margin.
- llama.cpp on an F32 copy of the base (every tensor dequantized with the `gguf` package),
  serving the plain PEFT directory: the GGUF-LoRA path without weight quantization.

Exit status 0 when: candle vs PEFT max |delta logit| <= 1e-2 with 100% top-1; llama.cpp top-1
agreement 100% on decisive positions; llama.cpp on the F32 base >= 95% top-1. The plain
">= 95% top-1 on the quantized base" figure is reported in `checks` as well.

The base without adapter is compared the same way (a control), and the size of the adapter's
own effect (max |logit(adapter) - logit(base)| in PEFT) is reported so the check is not vacuous.
Writes bench/results/lora-peft-check-<UTC stamp>.json and prints a markdown table. Exit code 1
when a tolerance is missed.
"""

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TEXTS = {
    "ru": "Клиент пишет: не могу войти в личный кабинет после смены пароля, приложение выдаёт ошибку. Что ему ответить?",
    "en": "Support ticket: the customer cannot log in to the web portal after changing the password and sees an error. What should we reply?",
}
SAMPLES = [
    ("Не приходит счёт за март.", "Категория: billing. Проверим отправку счёта и пришлём копию."),
    ("The VPN drops every hour.", "Category: outage. We will check the gateway logs today."),
    ("Забыл пароль от портала.", "Категория: access. Ссылка для сброса пароля отправлена."),
    ("Please add Anna to the admin group.", "Category: access. Anna was added to the admin group."),
]
TOL_CANDLE = 1e-2
TOL_LLAMA_TOP1 = 0.95
TOP = 20
# A position is decisive when the reference's top-1 leads its top-2 by at least this many nats
# (well above the base's own quantization noise in log-probs, ~0.2).
DECISIVE = 0.5


def log(msg):
    print(f"[peft-check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def trident(args, home, bin_path, json_lines=False):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIDENT_")}
    env["TRIDENT_HOME"] = str(home)
    t0 = time.time()
    p = subprocess.run([str(bin_path), "--json", *args], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"trident {' '.join(args)} failed ({p.returncode}):\n{p.stderr}")
    log(f"trident {args[0]} {args[1]} … {time.time() - t0:.1f} s")
    if json_lines:
        return [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    return json.loads(p.stdout)


def trident_logits(spec, ids, engine, a, base=None):
    return trident(
        ["lora", "logits", spec, "--base", str(base or a.base), "--tokens", ",".join(map(str, ids)), "--top", str(TOP),
         "--engine", engine, "--threads", str(a.threads)],
        a.home, a.trident)


@torch.no_grad()
def hf_logits(model, ids):
    out = model(input_ids=torch.tensor([ids], dtype=torch.long)).logits[0]
    return out.double().numpy()


def compare_candle(tr, ref):
    """Trident candle logits vs reference logits [n, vocab] (float64)."""
    max_d, top1 = 0.0, 0
    for i, p in enumerate(tr["positions"]):
        ids = np.array(p["top_ids"])
        d = np.abs(np.array(p["top_logits"], dtype=np.float64) - ref[i, ids]).max()
        max_d = max(max_d, float(d))
        top1 += int(p["top_ids"][0] == int(ref[i].argmax()))
    n = len(tr["positions"])
    return {"max_abs_dlogit_top20": max_d, "top1_agree": top1 / n, "positions": n}


def compare_llama(tr, ref):
    """llama.cpp log-probs vs reference logits: top-1 agreement, |d log-prob| of the reference's top-1."""
    lp_ref = ref - np.logaddexp.reduce(ref, axis=1, keepdims=True)
    top1, max_d, missing, decisive, decisive_agree, flips = 0, 0.0, 0, 0, 0, []
    for i, p in enumerate(tr["positions"]):
        srt = np.sort(lp_ref[i])
        r1 = int(ref[i].argmax())
        margin = float(srt[-1] - srt[-2])  # the reference's lead of its top-1 over its top-2 (nats)
        agree = p["top_ids"][0] == r1
        top1 += int(agree)
        if margin >= DECISIVE:
            decisive += 1
            decisive_agree += int(agree)
        if not agree:
            l1 = p["top_ids"][0]
            flips.append({"position": i, "ref_top1": r1, "llama_top1": l1, "ref_margin_top1_top2": margin,
                          "ref_gap_to_llama_top1": float(lp_ref[i, r1] - lp_ref[i, l1])})
        if r1 in p["top_ids"]:
            max_d = max(max_d, abs(p["top_logprobs"][p["top_ids"].index(r1)] - float(lp_ref[i, r1])))
        else:
            missing += 1
    n = len(tr["positions"])
    return {"top1_agree": top1 / n, "max_abs_dlogprob_ref_top1": max_d, "ref_top1_missing_from_top20": missing, "positions": n,
            "decisive_positions": decisive, "top1_agree_decisive": decisive_agree / max(decisive, 1), "disagreements": flips}


def write_f32_base(src, dst):
    """The base GGUF with every tensor dequantized to F32 (same metadata and tokenizer), one
    tensor at a time: llama.cpp on it isolates the LoRA path from weight quantization."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(str(dst), arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        if field.name == gguf.Keys.General.FILE_TYPE:
            writer.add_file_type(int(gguf.LlamaFileType.ALL_F32))
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    deq = lambda t: np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
    for t in reader.tensors:
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        writer.add_tensor_info(t.name, shape, np.dtype(np.float32), int(np.prod(shape)) * 4, gguf.GGMLQuantizationType.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        writer.write_tensor_data(deq(t).reshape(tuple(int(x) for x in reversed(t.shape.tolist()))))
    writer.close()


def load_hf(base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"loading {base.name} in transformers (GGUF dequantized to float32)")
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(str(base.parent), gguf_file=base.name)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(base.parent), gguf_file=base.name, dtype=torch.float32)
    except TypeError:
        model = AutoModelForCausalLM.from_pretrained(str(base.parent), gguf_file=base.name, torch_dtype=torch.float32)
    model.eval()
    log(f"loaded in {time.time() - t0:.0f} s ({sum(p.numel() for p in model.parameters()) / 1e6:.0f} M parameters)")
    return tok, model


def train_trident_adapter(a):
    data = a.work / "chat.jsonl"
    with open(data, "w", encoding="utf-8") as f:
        for q, ans in SAMPLES:
            f.write(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": ans}]},
                               ensure_ascii=False) + "\n")
    lines = trident(
        ["lora", "train", "--base", str(a.base), "--data", str(data), "--out", "trident-made", "--rank", "8", "--alpha", "16",
         "--targets", "q,k,v,o,gate,up,down", "--max-len", str(a.max_len), "--lr", "1e-2", "--warmup", "0", "--dropout", "0",
         "--batch", "1", "--epochs", "1", "--max-steps", str(a.steps), "--seed", "1"],
        a.home, a.trident, json_lines=True)
    ready = next(x for x in lines if x.get("event") == "ready")
    done = next(x for x in lines if x.get("event") == "done")
    losses = [x["loss"] for x in lines if "step" in x and "event" not in x]
    if ready["samples"] == 0:
        raise SystemExit(f"every sample is over --max-len {a.max_len}: {ready}")
    return Path(done["dir"]), {"steps": done["training"]["steps"], "samples": ready["samples"], "skipped": ready["skipped"],
                               "losses": losses}


def make_peft_adapter(model, out_dir, seed):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS, bias="none", task_type="CAUSAL_LM")
    pm = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    pm.eval()
    pm.save_pretrained(str(out_dir))
    return pm


def run_direction(label, spec, plain_dir, pm, ids_by_text, a):
    """Compares PEFT model `pm` (adapter active) with `trident lora logits SPEC` on every text,
    and, with an F32 copy of the base, llama.cpp serving the plain PEFT directory `plain_dir`."""
    res = {}
    for key, ids in ids_by_text.items():
        ref = hf_logits(pm, ids)
        with pm.disable_adapter():
            ref_base = hf_logits(pm, ids)
        effect = float(np.abs(ref - ref_base).max())
        top1_changed = int((ref.argmax(1) != ref_base.argmax(1)).sum())
        cand = trident_logits(spec, ids, "candle", a)
        llama = trident_logits(spec, ids, "llama", a)
        assert cand["tokens"] == ids and llama["tokens"] == ids
        res[key] = {
            "tokens": len(ids),
            "adapter_effect_max_abs_dlogit": effect,
            "adapter_changes_top1_at": top1_changed,
            "candle_vs_peft": compare_candle(cand, ref),
            "llama_vs_peft": compare_llama(llama, ref),
        }
        if a.f32_base:
            res[key]["llama_f32_base_vs_peft"] = compare_llama(trident_logits(str(plain_dir), ids, "llama", a, a.f32_base), ref)
        log(f"{label}/{key}: {json.dumps(res[key])}")
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, default=Path("/tmp/ci-cache/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"))
    ap.add_argument("--trident", type=Path, default=None, help="trident binary (default: target/release, else target/debug)")
    ap.add_argument("--work", type=Path, default=None, help="work dir (default: a temporary one, removed at the end)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="optimizer steps of the Trident-trained adapter")
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--no-f32-base", action="store_true",
                    help="skip llama.cpp on an F32 copy of the base (isolates the LoRA path; writes ~2 GB to the work dir)")
    ap.add_argument("--out", type=Path, default=None, help="result JSON (default: bench/results/lora-peft-check-<stamp>.json)")
    a = ap.parse_args()
    if a.trident is None:
        for c in [ROOT / "target/release/trident", ROOT / "target/debug/trident"]:
            if c.is_file():
                a.trident = c
                break
        else:
            raise SystemExit("no trident binary: cargo build --release -p trident-cli, or pass --trident")
    a.base = a.base.resolve()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    tmp = None
    if a.work is None:
        tmp = tempfile.mkdtemp(prefix="trident-peft-check-")
        a.work = Path(tmp)
    a.work.mkdir(parents=True, exist_ok=True)
    a.home = a.work / "home"
    t_start = time.time()
    try:
        # a. Trident -> PEFT.
        log("training a Trident adapter")
        tdir, train_info = train_trident_adapter(a)
        tok, model = load_hf(a.base)
        ids_by_text = {k: tok(t, add_special_tokens=True)["input_ids"] for k, t in TEXTS.items()}
        tokenizer_agrees = {}
        for k, t in TEXTS.items():
            mine = trident(["lora", "logits", "none", "--base", str(a.base), "--text", t, "--top", "1"], a.home, a.trident)["tokens"]
            tokenizer_agrees[k] = mine == ids_by_text[k]
        a.f32_base = None
        if not a.no_f32_base:
            log("writing an F32 copy of the base for llama.cpp")
            a.f32_base = a.work / "base-f32.gguf"
            write_f32_base(a.base, a.f32_base)
        base_ctrl = {}
        for k, ids in ids_by_text.items():
            ref = hf_logits(model, ids)
            base_ctrl[k] = {"candle_vs_hf": compare_candle(trident_logits("none", ids, "candle", a), ref),
                            "llama_vs_hf": compare_llama(trident_logits("none", ids, "llama", a), ref)}
            if a.f32_base:
                base_ctrl[k]["llama_f32_base_vs_hf"] = compare_llama(trident_logits("none", ids, "llama", a, a.f32_base), ref)
            log(f"base/{k}: {json.dumps(base_ctrl[k])}")

        from peft import PeftModel

        pm = PeftModel.from_pretrained(model, str(tdir))
        pm.eval()
        # The two PEFT files only (trident.json pins the quantized base's hash).
        tplain = a.work / "trident-made-peft"
        tplain.mkdir(exist_ok=True)
        for f in ["adapter_config.json", "adapter_model.safetensors"]:
            shutil.copy(tdir / f, tplain / f)
        trident_to_peft = run_direction("trident->peft", "trident-made", tplain, pm, ids_by_text, a)
        model = pm.unload()

        # b. PEFT -> Trident.
        pdir = a.work / "peft-made"
        pm = make_peft_adapter(model, pdir, a.seed)
        imp = trident(["lora", "import", str(pdir), "--base", str(a.base), "--name", "peft-import"], a.home, a.trident)
        peft_to_trident = run_direction("peft->trident", f"peft-import@{imp['version']}", pdir, pm, ids_by_text, a)

        import peft
        import transformers

        result = {
            "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "base": str(a.base),
            "trident": str(a.trident),
            "threads": a.threads,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                         "python": platform.python_version()},
            "texts": TEXTS,
            "tokens": ids_by_text,
            "tokenizer_agrees_with_trident": tokenizer_agrees,
            "tolerances": {"candle_vs_peft_max_abs_dlogit": TOL_CANDLE, "llama_vs_peft_top1_agree_min": TOL_LLAMA_TOP1,
                           "decisive_margin_nats": DECISIVE},
            "trident_trained": train_info,
            "base_control": base_ctrl,
            "trident_to_peft": trident_to_peft,
            "peft_to_trident": peft_to_trident,
            "seconds": time.time() - t_start,
        }
        pct = lambda x: f"{100 * x:.0f}%"
        strict_ok, decisive_ok, candle_ok, f32_ok = True, True, True, True
        rows = []

        def row(direction, k, n, effect, c, l, f):
            f_cells = f"{pct(f['top1_agree'])} | {f['max_abs_dlogprob_ref_top1']:.3f}" if f else "— | —"
            return (f"| {direction} | {k} | {n} | {effect} | {c['max_abs_dlogit_top20']:.1e} | {pct(c['top1_agree'])} | "
                    f"{pct(l['top1_agree'])} ({pct(l['top1_agree_decisive'])} of {l['decisive_positions']}) | "
                    f"{l['max_abs_dlogprob_ref_top1']:.3f} | {f_cells} |")

        for direction, res in [("Trident → PEFT", trident_to_peft), ("PEFT → Trident", peft_to_trident)]:
            for k, r in res.items():
                c, l, f = r["candle_vs_peft"], r["llama_vs_peft"], r.get("llama_f32_base_vs_peft")
                candle_ok &= c["max_abs_dlogit_top20"] <= TOL_CANDLE and c["top1_agree"] == 1.0
                strict_ok &= l["top1_agree"] >= TOL_LLAMA_TOP1
                decisive_ok &= l["top1_agree_decisive"] == 1.0
                f32_ok &= f is None or f["top1_agree"] >= TOL_LLAMA_TOP1
                rows.append(row(direction, k, r["tokens"], f"{r['adapter_effect_max_abs_dlogit']:.1f}", c, l, f))
        for k, r in base_ctrl.items():
            rows.append(row("base only (control)", k, r["candle_vs_hf"]["positions"], "—", r["candle_vs_hf"], r["llama_vs_hf"],
                            r.get("llama_f32_base_vs_hf")))
        ok = candle_ok and decisive_ok and f32_ok
        result["checks"] = {"candle_vs_peft_within_tolerance": bool(candle_ok),
                            "llama_q4_top1_agree_ge_95pct_every_text": bool(strict_ok),
                            "llama_q4_top1_agree_on_decisive_positions": bool(decisive_ok),
                            "llama_f32_base_top1_agree_ge_95pct": bool(f32_ok)}
        result["pass"] = bool(ok)
        out = a.out or ROOT / "bench/results" / f"lora-peft-check-{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%dT%H%MZ')}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print("| direction | text | tokens | adapter effect: max \\|Δlogit\\| vs base (PEFT) "
              "| candle vs PEFT: max \\|Δlogit\\| over top-20 | candle top-1 agree "
              "| llama.cpp Q4_K_M top-1 agree (on decisive positions) | llama.cpp Q4_K_M max \\|Δ log-prob\\| of PEFT top-1 "
              "| llama.cpp F32 base top-1 agree | llama.cpp F32 base max \\|Δ log-prob\\| |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        print("\n".join(rows))
        print(f"\ncandle vs PEFT: max |Δlogit| ≤ {TOL_CANDLE} and top-1 100%: {'PASS' if candle_ok else 'FAIL'}")
        print(f"llama.cpp Q4_K_M top-1 agreement ≥ {TOL_LLAMA_TOP1:.0%} on every text: {'PASS' if strict_ok else 'FAIL'}"
              f" (disagreements: reference margins {sorted(round(d['ref_margin_top1_top2'], 3) for res in (trident_to_peft, peft_to_trident) for r in res.values() for d in r['llama_vs_peft']['disagreements'])} nats)")
        print(f"llama.cpp Q4_K_M top-1 agreement on decisive positions (reference top-1 leads by ≥ {DECISIVE} nats): "
              f"{'PASS' if decisive_ok else 'FAIL'}")
        if a.f32_base:
            print(f"llama.cpp on the F32 base top-1 agreement ≥ {TOL_LLAMA_TOP1:.0%}: {'PASS' if f32_ok else 'FAIL'}")
        print(f"overall (candle, decisive, F32 base): {'PASS' if ok else 'FAIL'}")
        print(f"tokenizer (HF from GGUF vs Trident): {tokenizer_agrees}; results: {out}; {result['seconds']:.0f} s")
        return 0 if ok else 1
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
