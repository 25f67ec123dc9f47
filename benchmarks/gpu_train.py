"""GPU training throughput: DenseNet121 + a BERT-base-size text encoder, 224x224 images, 256 tokens, bf16.

    python benchmarks/gpu_train.py [--batch-size 32] [--fusions hybrid late] [--steps 20]

Random weights and synthetic batches already on the GPU (no download, no data loading), so the
figures are the model's own training speed: samples/s and peak CUDA memory per fusion strategy.
The text encoder has BERT-base's shape (hidden 768, 12 layers, 12 heads, intermediate 3072,
vocabulary 30522), as microsoft/BiomedNLP-BiomedBERT would. Exits with status 2 and a message when
no CUDA device is available.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import torch

LABELS = [f"label_{i}" for i in range(14)]


def _bert_base_folder() -> str:
    from transformers import BertConfig

    folder = tempfile.mkdtemp(prefix="bert-base-shape-")
    BertConfig(
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
    ).save_pretrained(folder)
    return folder


def _batch(batch_size: int, tokens: int, size: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(0)
    lengths = torch.randint(tokens // 2, tokens + 1, (batch_size,), generator=g)
    mask = (torch.arange(tokens)[None, :] < lengths[:, None]).long()  # (B, T) real padding
    labels = torch.randint(0, 2, (batch_size, len(LABELS)), generator=g).float()
    batch = {
        "image": torch.randn(batch_size, 1, size, size, generator=g),
        "input_ids": torch.randint(5, 30522, (batch_size, tokens), generator=g) * mask,
        "attention_mask": mask,
        "image_present": torch.ones(batch_size, dtype=torch.bool),
        "text_present": torch.ones(batch_size, dtype=torch.bool),
        "label": labels,
    }
    return {k: v.to(device) for k, v in batch.items()}


def run(
    fusion: str, batch_size: int, tokens: int, size: int, steps: int, warmup: int, text_dir: str
) -> dict[str, float]:
    from medfusion.config import Config
    from medfusion.models.card import ModelCard
    from medfusion.models.model import build_model
    from medfusion.training.engine import masked_bce

    device = torch.device("cuda")
    config = Config(
        name="gpu-bench",
        labels=LABELS,
        data={"image_size": [size, size], "max_tokens": tokens},
        image_encoder={"name": "densenet121", "embed_dim": 256},
        text_encoder={"name_or_path": text_dir, "embed_dim": 256},
        fusion={"name": fusion, "hidden_dim": 256, "num_heads": 8},
    )
    torch.manual_seed(0)
    model = build_model(ModelCard.from_config(config), text_dir).to(device).train()  # random weights suffice
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = _batch(batch_size, tokens, size, device)
    torch.cuda.reset_peak_memory_stats()
    for step in range(warmup + steps):
        if step == warmup:
            torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(batch)
        loss = masked_bce(out.logits, batch["label"], None)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {
        "samples_per_s": steps * batch_size / seconds,
        "step_ms": 1000 * seconds / steps,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }
    del model, optimizer, batch
    torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="GPU training throughput (bf16).")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--fusions", nargs="+", default=["image_only", "text_only", "late", "hybrid"])
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "gpu_train: no CUDA device available (torch.cuda.is_available() is False); "
            "run this benchmark on a machine with an NVIDIA GPU and a CUDA build of torch.",
            file=sys.stderr,
        )
        return 2
    if not torch.cuda.is_bf16_supported():
        print(f"gpu_train: {torch.cuda.get_device_name()} does not support bf16", file=sys.stderr)
        return 2
    text_dir = _bert_base_folder()
    print(
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}; DenseNet121 + BERT-base shape, "
        f"{args.image_size}x{args.image_size}, {args.tokens} tokens, batch {args.batch_size}, bf16 autocast"
    )
    print("| fusion | params (M) | samples/s | step (ms) | peak memory (GiB) |\n|---|---|---|---|---|")
    for fusion in args.fusions:
        r = run(fusion, args.batch_size, args.tokens, args.image_size, args.steps, args.warmup, text_dir)
        print(
            f"| {fusion} | {r['params_m']:.1f} | {r['samples_per_s']:.1f} | {r['step_ms']:.0f} | {r['peak_gib']:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
