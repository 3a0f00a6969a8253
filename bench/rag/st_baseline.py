"""sentence-transformers (PyTorch, CPU) throughput on the same passages as embed_throughput.rs.

usage: st_baseline.py MODEL_DIR PASSAGES_FILE [THREADS]
"""
import sys, time

import torch
from sentence_transformers import SentenceTransformer

model_dir, passages_file = sys.argv[1], sys.argv[2]
threads = int(sys.argv[3]) if len(sys.argv) > 3 else torch.get_num_threads()
torch.set_num_threads(threads)
texts = [l.rstrip("\n") for l in open(passages_file, encoding="utf-8") if l.strip()]
m = SentenceTransformer(model_dir, device="cpu")
lens = [len(m.tokenizer(t)["input_ids"]) for t in texts]
m.encode(texts[:32], batch_size=32)
t = time.perf_counter()
out = m.encode(texts, batch_size=32, normalize_embeddings=True)
s = time.perf_counter() - t
print(f"sentence-transformers {__import__('sentence_transformers').__version__} torch {torch.__version__} "
      f"threads {threads}: {len(texts)} passages x {sum(lens)/len(lens):.0f} tokens avg in {s:.2f} s "
      f"= {len(texts)/s:.1f} texts/s (dim {out.shape[1]})")
