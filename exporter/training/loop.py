"""The training loop shared by every architecture: seeded, resumable, early-stopped, exported, reported.

Each epoch draws a few random windows from every training track (so long tracks do not dominate and every
epoch sees new crops), minimises the sum of the heads' losses (cross-entropy for a softmax head, binary
cross-entropy for a sigmoid head, each only over examples that carry that head's labels), then scores the
validation tracks at song level (the mean of evenly spaced windows, as the runtime aggregates) and keeps
the best state by validation loss. Training stops after ``patience`` epochs without improvement. A
checkpoint (model, optimiser, epoch, random states) is written after every epoch, atomically, so a killed
run resumes where it stopped. The result is evaluated on the test split, exported through the exporter's
checks, and described in a report like ``tagger train``'s.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from tagger.models.card import Card, Output

from ..export import export_onnx
from .archs import ARCHS, SAMPLE_RATE, Tagger, build
from .data import DataSet, assign_splits, decode_all


@dataclass
class TrainConfig:
    arch: str
    epochs: int = 30
    batch: int = 16
    lr: float | None = None  # default 1e-3, or 1e-4 when fine-tuning pretrained weights
    seed: int = 0
    patience: int = 5
    windows_per_track: int = 4
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 2
    max_steps: int | None = None  # stop after this many optimiser steps in all (tests, smoke runs)
    eval_windows: int = 8
    model_id: str = ""


def _device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: torch sees no CUDA device")
        return torch.device("cuda")
    return torch.device("cpu")


def _targets(ds: DataSet, idx: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per head: (target, mask) over the examples ``idx``; class index for softmax, multi-hot for sigmoid."""
    out = []
    for spec in ds.heads:
        pos = {v: j for j, v in enumerate(spec.labels)}
        if spec.kind == "softmax":
            t = torch.tensor([pos.get(ds.examples[i].labels.get(spec.name, ("",))[0], -1) for i in idx])
            out.append((t.clamp(min=0), t >= 0))
        else:
            t = torch.zeros(len(idx), len(spec.labels))
            for r, i in enumerate(idx):
                for v in ds.examples[i].labels.get(spec.name, ()):
                    if v in pos:
                        t[r, pos[v]] = 1.0
            out.append((t, t.sum(dim=1) > 0))
    return out


def _loss(model: Tagger, logits: list[torch.Tensor], targets: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    total = logits[0].new_zeros(())
    for spec, z, (t, m) in zip(model.specs, logits, targets):
        if not m.any():
            continue
        if spec.kind == "softmax":
            total = total + F.cross_entropy(z[m], t[m])
        else:
            total = total + F.binary_cross_entropy_with_logits(z[m], t[m])
    return total


def _crop(x: np.ndarray, window: int, start: int) -> np.ndarray:
    piece = x[start:start + window].astype(np.float32)
    return piece if len(piece) == window else np.pad(piece, (0, window - len(piece)))


def _song_windows(x: np.ndarray, window: int, n: int) -> np.ndarray:
    starts = np.linspace(0, max(len(x) - window, 0), num=n).astype(int) if len(x) > window else np.zeros(1, int)
    return np.stack([_crop(x, window, int(s)) for s in np.unique(starts)])


@torch.no_grad()
def song_scores(model: Tagger, audio: list[np.ndarray], idx: list[int], n_windows: int, device: torch.device,
                batch: int) -> list[np.ndarray]:
    """Per head, (examples, labels) song-level probabilities: the mean over evenly spaced windows."""
    model.eval()
    per_head: list[list[np.ndarray]] = [[] for _ in model.specs]
    for i in idx:
        wins = torch.from_numpy(_song_windows(audio[i], model.window, n_windows))
        outs = [torch.cat([model(wins[j:j + batch].to(device))[h].cpu() for j in range(0, len(wins), batch)])
                for h in range(len(model.specs))]
        for h, o in enumerate(outs):
            per_head[h].append(o.mean(dim=0).numpy())
    return [np.stack(rows) if rows else np.zeros((0, len(s.labels))) for rows, s in zip(per_head, model.specs)]


def _val_loss(model: Tagger, ds: DataSet, probs: list[np.ndarray], idx: list[int]) -> float:
    targets = _targets(ds, idx)
    total = 0.0
    for spec, p, (t, m) in zip(model.specs, probs, targets):
        if not m.any():
            continue
        p = torch.from_numpy(p).clamp(1e-6, 1 - 1e-6)
        if spec.kind == "softmax":
            total += float(F.nll_loss(torch.log(p[m]), t[m]))
        else:
            total += float(F.binary_cross_entropy(p[m], t[m]))
    return total


def _save(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _evaluate(model: Tagger, ds: DataSet, probs: list[np.ndarray], idx: list[int]) -> dict:
    from ..heads.calibrate import label_metrics, reliability

    out: dict = {}
    targets = _targets(ds, idx)
    for spec, p, (t, m) in zip(model.specs, probs, targets):
        m = m.numpy()
        if not m.any():
            continue
        head: dict = {"kind": spec.kind, "examples": int(m.sum()), "per_label": {}}
        truth = (np.eye(len(spec.labels))[t.numpy()] if spec.kind == "softmax" else t.numpy())[m] > 0
        scores = p[m]
        for j, label in enumerate(spec.labels):
            head["per_label"][label] = {"positives": int(truth[:, j].sum()), **label_metrics(scores[:, j], truth[:, j])}
        aucs = [v["roc_auc"] for v in head["per_label"].values() if v["roc_auc"] is not None]
        head["mean_roc_auc"] = float(np.mean(aucs)) if aucs else None
        if spec.kind == "softmax":
            pred = scores.argmax(axis=1)
            gold = truth.argmax(axis=1)
            head["accuracy"] = float((pred == gold).mean())
            head["majority_baseline"] = float(np.bincount(gold).max() / len(gold))
            conf = np.zeros((len(spec.labels),) * 2, np.int64)
            np.add.at(conf, (gold, pred), 1)
            head["confusion"] = conf.tolist()
            head["reliability"] = reliability(scores.max(axis=1), pred == gold)
        out[spec.name] = head
    return out


def train(ds: DataSet, cfg: TrainConfig, output: Path, *, checkpoint: Path | None = None, resume: bool = False,
          log=print) -> dict:
    """Train ``cfg.arch`` on ``ds``; write the ONNX plug-in to ``output`` and its report beside it."""
    arch = ARCHS[cfg.arch]
    output.parent.mkdir(parents=True, exist_ok=True)
    if checkpoint is not None:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    torch.set_flush_denormal(True)
    device = _device(cfg.device)
    rng = np.random.default_rng(cfg.seed)
    assign_splits(ds.examples, cfg.seed)
    audio, failed = decode_all(ds.examples, arch.window)
    usable = [i for i, a in enumerate(audio) if len(a)]
    split = {s: [i for i in usable if ds.examples[i].split == s] for s in ("train", "validation", "test")}
    if not split["train"]:
        raise ValueError("no training examples (every example failed to decode, or none is in the train split)")
    if not split["validation"]:
        split["validation"] = split["train"][: max(1, len(split["train"]) // 10)]
    model = build(cfg.arch, ds.heads).to(device)
    lr = cfg.lr or (1e-4 if arch.pretrained else 1e-3)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    state = {"epoch": 0, "step": 0, "best": math.inf, "bad": 0, "history": []}
    best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if checkpoint is not None and resume and checkpoint.is_file():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        free = ("epochs", "max_steps", "patience", "device", "threads")  # may change between a run and its resume
        same = {k: v for k, v in saved["config"].items() if k not in free} == \
            {k: v for k, v in asdict(cfg).items() if k not in free}
        if not same or saved["heads"] != [asdict(h) for h in ds.heads]:
            raise ValueError(f"{checkpoint}: written for another configuration or label set; not resumed")
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        best_weights = saved["best_weights"]
        state = saved["state"]
        rng.bit_generator.state = saved["numpy_rng"]
        torch.set_rng_state(saved["torch_rng"])
        log(f"resumed from {checkpoint} after epoch {state['epoch']}")
    t0 = time.monotonic()
    windows_seen = 0
    train_seconds = 0.0
    done = False
    while state["epoch"] < cfg.epochs and not done:
        model.train()
        t_epoch = time.monotonic()
        order = [(i, int(rng.integers(max(len(audio[i]) - arch.window, 0) + 1)))
                 for i in split["train"] for _ in range(cfg.windows_per_track)]
        rng.shuffle(order)
        losses = []
        for b in range(0, len(order), cfg.batch):
            chunk = order[b:b + cfg.batch]
            if len(chunk) < 2:
                continue  # batch norm needs two
            x = torch.from_numpy(np.stack([_crop(audio[i], arch.window, s) for i, s in chunk])).to(device)
            targets = [(t.to(device), m.to(device)) for t, m in _targets(ds, [i for i, _ in chunk])]
            logits, _ = model.logits(x)
            loss = _loss(model, logits, targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            windows_seen += len(chunk)
            state["step"] += 1
            if cfg.max_steps is not None and state["step"] >= cfg.max_steps:
                done = True
                break
        train_seconds += time.monotonic() - t_epoch
        probs = song_scores(model, audio, split["validation"], cfg.eval_windows, device, cfg.batch)
        val = _val_loss(model, ds, probs, split["validation"])
        state["epoch"] += 1
        state["history"].append({"epoch": state["epoch"], "train_loss": float(np.mean(losses)) if losses else None,
                                 "validation_loss": val, "losses": losses if cfg.max_steps else None})
        if val < state["best"] - 1e-4:
            state["best"], state["bad"] = val, 0
            best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            state["bad"] += 1
        elapsed = time.monotonic() - t0
        eta = elapsed / max(state["epoch"], 1) * (cfg.epochs - state["epoch"])
        log(f"epoch {state['epoch']}/{cfg.epochs}: train loss {state['history'][-1]['train_loss'] or 0:.4f}, "
            f"validation loss {val:.4f}, {windows_seen / max(train_seconds, 1e-9):.1f} windows/s, ETA {eta:.0f} s")
        if checkpoint is not None:
            _save(checkpoint, {"config": asdict(cfg), "heads": [asdict(h) for h in ds.heads],
                               "model": model.state_dict(), "optimizer": opt.state_dict(),
                               "best_weights": best_weights, "state": state, "numpy_rng": rng.bit_generator.state,
                               "torch_rng": torch.get_rng_state()})
        if state["bad"] >= cfg.patience:
            log(f"early stop: no validation improvement for {cfg.patience} epochs")
            break
    model.load_state_dict(best_weights)
    model = model.cpu().eval()
    test_idx = split["test"] or split["validation"]
    probs = song_scores(model, audio, test_idx, cfg.eval_windows, torch.device("cpu"), cfg.batch)
    evaluation = _evaluate(model, ds, probs, test_idx)
    groups = {"genre": "genre", "mood": "mood", "mood_theme": "mood", "instrument": "instrument"}
    outputs = [Output(h.name, h.kind, h.labels, {lab: groups[h.name] for lab in h.labels} if h.name in groups else {},
                      meaning=f"{h.kind} over {len(h.labels)} labels from {ds.source}") for h in ds.heads]
    outputs.append(Output("embedding", "embedding", dim=model.embedding_dim,
                          meaning="the layer before the heads"))
    weights_digest = hashlib.sha256(b"".join(v.cpu().numpy().tobytes() for v in best_weights.values())).hexdigest()
    card = Card(id=cfg.model_id or f"{cfg.arch}-custom", version=f"{date.today():%Y%m%d}-{weights_digest[:8]}",
                sample_rate=SAMPLE_RATE, window=arch.window, hop=arch.window, outputs=tuple(outputs),
                short_input="repeat", partial_tail="end" if arch.window > 100_000 else "drop",
                description=f"{arch.about}; trained by `python -m exporter train {cfg.arch}` on {ds.source}",
                source={"trainer": "exporter.training", "data": ds.source, "seed": str(cfg.seed)},
                metrics={f"{name}_{k}": v for name, h in evaluation.items()
                         for k, v in h.items() if k in ("accuracy", "mean_roc_auc") and v is not None})
    verify = [audio[i].astype(np.float32)[: arch.window * 2] for i in test_idx[:2]]
    figures = export_onnx(model, card, output, verify_audio=verify)
    report = {"arch": cfg.arch, "config": asdict(cfg), "data": ds.source, "notes": ds.notes,
              "failed_to_decode": failed, "examples": {k: len(v) for k, v in split.items()},
              "epochs": state["epoch"], "steps": state["step"], "history": state["history"],
              "train_seconds": round(train_seconds, 2), "windows_per_second": windows_seen / max(train_seconds, 1e-9),
              "device": str(device), "threads": cfg.threads, "evaluation": evaluation, "export_check": figures,
              "model": card.analyser}
    folder = output.with_name(output.stem + "-report")
    from ..heads.report import write_report

    first = ds.heads[0]
    write_report(folder, {**report, "field": first.name, "split": {"kind": "test"},
                          "reliability": evaluation.get(first.name, {}).get("reliability")},
                 np.array(evaluation[first.name]["confusion"]) if "confusion" in evaluation.get(first.name, {}) else None,
                 list(first.labels))
    (folder / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    return report

