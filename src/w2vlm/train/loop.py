"""The training loop (:func:`train`): device, losses, one step, the schedule, dev evaluation, checkpoints
and resume."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from w2vlm.errors import ModelError
from w2vlm.features import FbankInputs, WaveformInputs, model_inputs_for
from w2vlm.fileio import check_output, read_json_object
from w2vlm.metrics import error_rates
from w2vlm.model import model_language
from w2vlm.train.config import (
    DEFAULT_VOCAB,
    MODEL_PRESETS,
    SAMPLE_RATE,
    EvalResult,
    TrainConfig,
    TrainResult,
    check_overrides,
)
from w2vlm.train.data import AudioStore, Tokenizer, draw_edges, edge_reserve
from w2vlm.train.export import build_config, lm_file_to_bundle, make_processor, save_hub_layout
from w2vlm.train.memory import release_after_loading, resident_memory_gb, within_memory

logger = logging.getLogger("w2vlm.train")


# ----------------------------------------------------------------------------------------------------------
# training


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX512-BF16), so that bf16 autocast speeds training
    up; elsewhere oneDNN emulates bf16 and float32 is as fast or faster. Reads /proc/cpuinfo (Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def _resolve_device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ModelError(f"device: {name!r} is not a torch device ({exc})") from None


#: Up to this much extra padding (seconds) in the batches that get some (``TrainConfig.pad_extra_prob``)
_PAD_EXTRA_MAX_S = 2.0


def padding_blank_loss(model: Any, logits: Any, attention_mask: Any) -> Any:
    """Mean negative log-probability of the CTC blank over the padded frames of a batch (0 if none).

    CTC's loss ignores the frames past each row's length, so on its own it leaves them untrained, and a
    padded batch decoded without trimming would read characters out of its padding. This term teaches
    them to say blank, so ``processor.batch_decode(model(**inputs).logits)`` works on padded batches.
    """
    import torch

    frames = model._get_feature_vector_attention_mask(logits.shape[1], attention_mask).bool()
    padded = ~frames
    if not bool(padded.any()):
        return logits.new_zeros((), dtype=torch.float32)
    log_blank = torch.log_softmax(logits.float(), dim=-1)[..., model.config.pad_token_id]
    return -log_blank[padded].mean()


def train_step(model: Any, optimizer: Any, x: Any, mask: Any, labels: Any, cfg: TrainConfig, amp: bool) -> Any:
    """One optimizer step on a collated batch (CTC loss plus the padding-blank term, clipped gradients);
    returns the loss tensor. A step whose gradient is not finite is skipped (logged), so one bad batch cannot
    poison the weights. ``amp``: bf16 autocast on the inputs' device."""
    import torch

    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        out = model(x, attention_mask=mask, labels=labels)
    loss = out.loss
    if cfg.pad_blank_weight > 0:
        loss = loss + cfg.pad_blank_weight * padding_blank_loss(model, out.logits, mask)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    if not bool(torch.isfinite(norm)):
        # an inf/NaN gradient (a bf16 overflow, a degenerate batch) would turn every weight into NaN: skip it
        optimizer.zero_grad(set_to_none=True)
        logger.warning("non-finite gradient (norm %s, loss %s): step skipped, weights unchanged",
                       float(norm), float(loss.detach()))  # fmt: skip
        return loss
    optimizer.step()
    return loss


def _lr_at(cfg: TrainConfig, step: int, total_steps: int, elapsed: float) -> float:
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    if cfg.time_limit_s:
        frac = max(frac, elapsed / cfg.time_limit_s)
    frac = min(1.0, frac)
    return cfg.learning_rate * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * frac)))


def evaluate(model: Any, store: AudioStore, tokenizer: Tokenizer, device: Any, batch_seconds: float,
             amp: bool, inputs: WaveformInputs | FbankInputs, n_examples: int = 3) -> EvalResult:  # fmt: skip
    """Greedy WER/CER of ``model`` on ``store``."""
    import torch

    model.eval()
    hyps: dict[int, str] = {}
    with torch.no_grad():
        for idx in store.batches(batch_seconds, 512, None):
            x, mask, _ = store.collate(idx, device, inputs)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(x, attention_mask=mask).logits
            frames = [inputs.frames(int(store.lengths[i])) for i in idx]
            best = logits.argmax(-1).cpu().numpy()
            for row, i in enumerate(idx):
                hyps[i] = tokenizer.greedy_decode(best[row, : int(frames[row])].tolist())
    model.train()
    order = range(len(store))
    refs = [store.texts[i] for i in order]
    hyp_list = [hyps[i] for i in order]
    wer, cer = error_rates(refs, hyp_list)
    examples = [(refs[i], hyp_list[i]) for i in range(min(n_examples, len(refs)))]
    return EvalResult(wer=wer, cer=cer, utterances=len(refs), examples=examples)


def _load_start(cfg: TrainConfig, work: Path) -> tuple[Any, Any, Any, dict[str, int]]:
    """(model, feature extractor, HF tokenizer, vocab) from init_from or from scratch."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForCTC, Wav2Vec2CTCTokenizer

    if cfg.init_from is not None:
        src = Path(cfg.init_from)
        if not (src / "config.json").is_file():
            raise ModelError(f"init_from: {src}/config.json not found (expected a model folder, hub layout)")
        vocab_file = src / "vocab.json"
        if not vocab_file.is_file():
            raise ModelError(f"init_from: {vocab_file} not found (a CTC character vocabulary is needed)")
        vocab = read_json_object(vocab_file, ModelError)
        tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(str(src))
        extractor = AutoFeatureExtractor.from_pretrained(str(src))
        overrides: dict[str, Any] = {"ctc_zero_infinity": True}
        if cfg.mask_time_prob is not None:
            overrides["mask_time_prob"] = cfg.mask_time_prob
        if cfg.config_overrides:
            try:
                config = AutoConfig.from_pretrained(str(src))
            except (ValueError, KeyError, OSError) as exc:
                raise ModelError(f"init_from: {src}/config.json: not a config transformers can read ({exc})") from None
            check_overrides(config.to_dict(), cfg.config_overrides, type(config).__name__)
            overrides.update(cfg.config_overrides)
        try:
            model = AutoModelForCTC.from_pretrained(str(src), dtype="float32", **overrides)
        except (ValueError, KeyError, RuntimeError) as exc:
            hint = " (a --set that changes layer sizes cannot start from its weights)" if cfg.config_overrides else ""
            raise ModelError(f"init_from: {src}: not a CTC model transformers can load ({exc}){hint}") from None
        if model.config.vocab_size != len(vocab):
            raise ModelError(
                f"init_from: {src}: config vocab_size {model.config.vocab_size} != {len(vocab)} in vocab.json"
            )
        return model, extractor, tokenizer, vocab
    vocab = {tok: i for i, tok in enumerate(DEFAULT_VOCAB)}
    overrides = dict(cfg.config_overrides)
    if cfg.mask_time_prob is not None:
        overrides["mask_time_prob"] = cfg.mask_time_prob
    model = AutoModelForCTC.from_config(build_config(vocab, cfg.preset, overrides))
    extractor, tokenizer = make_processor(vocab, work, MODEL_PRESETS[cfg.preset]["family"])
    return model, extractor, tokenizer, vocab


def _progress_bar(enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        disable=not enabled,
        transient=False,
    )


def train(cfg: TrainConfig, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Run CTC training as configured; returns a summary. The model is saved to ``cfg.output_dir``."""
    import torch

    cfg.check()
    check_output(cfg.output_dir, folder=True)
    language = cfg.language
    if language is None and cfg.init_from is not None:
        language = model_language(cfg.init_from)
    t_start = time.time()
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = _resolve_device(cfg.device)
    amp = cfg.amp and (device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    if cfg.lm_dir is not None:
        lm_file_to_bundle(cfg.lm_dir)
    out_dir = Path(cfg.output_dir)
    ckpt_dir = out_dir.with_name(out_dir.name + ".checkpoint")
    work = ckpt_dir / "processor"
    new_checkpoint = not ckpt_dir.exists()
    try:
        model, extractor, hf_tokenizer, vocab = _load_start(cfg, work)
        tokenizer = Tokenizer(vocab)
        n_params = sum(p.numel() for p in model.parameters())
        logger.info("model: %.2f M parameters, vocabulary of %d", n_params / 1e6, len(vocab))

        inputs = model_inputs_for(model, extractor)
        cache = cfg.audio_cache
        train_store = AudioStore.load(
            cfg.manifest, tokenizer, inputs.frames, cfg.max_duration_s, device, cache_dir=cache
        )
        dev_store = None
        if cfg.dev_manifest:
            dev_store = AudioStore.load(cfg.dev_manifest, tokenizer, inputs.frames, 1e9, device, cache_dir=cache)
    except BaseException:
        if new_checkpoint:  # a run that failed before its first step leaves nothing behind
            shutil.rmtree(ckpt_dir, ignore_errors=True)
        raise
    release_after_loading()

    model.to(device)
    model.train()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name or name.endswith(".bias") else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.learning_rate,
        betas=(0.9, 0.98),
        eps=1e-8,
        fused=device.type == "cuda",
    )

    step = 0
    epoch = 0
    elapsed_before = 0.0
    history: list[dict[str, Any]] = []
    rng = random.Random(cfg.seed)
    epoch_rng: Any = None  # the state of rng this epoch's batch order was drawn from (None: not drawn yet)
    batch_in_epoch = 0  # batches of this epoch done
    planned = None  # batches per epoch of the run a checkpoint was made by (None: no checkpoint, or it does not say)
    if cfg.resume and (ckpt_dir / "state.json").is_file():
        state_file = ckpt_dir / "state.json"
        try:
            state = json.loads(state_file.read_text())
            step, epoch = int(state["step"]), int(state["epoch"])
            elapsed_before = float(state.get("train_seconds", 0.0))
            history = state.get("history", [])
            rng.setstate(_tuple_state(state["rng"]))
            if state.get("epoch_rng") is not None:  # stopped within an epoch: go on with its batch order
                epoch_rng = _tuple_state(state["epoch_rng"])
                batch_in_epoch = int(state.get("batch_in_epoch", 0))
            planned = None if state.get("batches_per_epoch") is None else int(state["batches_per_epoch"])
            _set_global_rng_states(state.get("global_rng"), device)
        except (ValueError, KeyError, TypeError) as exc:  # JSON errors are ValueErrors
            raise ModelError(
                f"{state_file}: not a readable w2vlm training checkpoint ({type(exc).__name__}: {exc}); "
                f"remove {ckpt_dir}, or train without --resume, to start afresh"
            ) from None
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(ckpt_dir / "model.safetensors"), device=str(device)), strict=True)
        optimizer.load_state_dict(torch.load(ckpt_dir / "optimizer.pt", map_location=device))
        logger.info("resumed from %s at step %d, epoch %d", ckpt_dir, step, epoch)

    multiple = max(1, round(cfg.pad_multiple_s * SAMPLE_RATE))
    reserve = edge_reserve(cfg.edge_prob)  # the edges --edge-prob may add to each clip count in the budget

    def plan(order_rng: random.Random | None) -> list[list[int]]:
        """An epoch's batches (in length order without ``order_rng``): one plan for the count and the epochs."""
        return train_store.batches(cfg.batch_seconds, cfg.max_batch_size, order_rng, multiple, reserve)

    batches_per_epoch = len(plan(None))
    if planned is not None and planned != batches_per_epoch:
        raise ModelError(
            f"{ckpt_dir}: the run was planned with {planned} batches per epoch, these settings give "
            f"{batches_per_epoch}: resume with the manifest, --batch-seconds, --max-batch-size, --pad-multiple and "
            "--edge-prob it was started with, or train without --resume to start afresh"
        )
    total_steps = cfg.max_steps or batches_per_epoch * cfg.epochs
    logger.info(
        "training: %d batches/epoch, %d epochs, %d steps planned%s, device %s%s",
        batches_per_epoch,
        cfg.epochs,
        total_steps,
        f", time limit {cfg.time_limit_s:.0f}s" if cfg.time_limit_s else "",
        device,
        " (bf16 autocast)" if amp else "",
    )

    def save_checkpoint() -> None:
        from safetensors.torch import save_file

        ckpt_dir.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(ckpt_dir / "model.safetensors.tmp"))
        os.replace(ckpt_dir / "model.safetensors.tmp", ckpt_dir / "model.safetensors")
        torch.save(optimizer.state_dict(), ckpt_dir / "optimizer.pt.tmp")
        os.replace(ckpt_dir / "optimizer.pt.tmp", ckpt_dir / "optimizer.pt")
        state = {
            "step": step,
            "epoch": epoch,
            "train_seconds": elapsed_before + time.time() - t_train,
            "history": history,
            "rng": rng.getstate(),
            "epoch_rng": epoch_rng,
            "batch_in_epoch": batch_in_epoch,
            "batches_per_epoch": batches_per_epoch,
            "global_rng": _global_rng_states(device),
            "config": {k: str(v) for k, v in dataclasses.asdict(cfg).items()},
        }
        (ckpt_dir / "state.json.tmp").write_text(json.dumps(state) + "\n")
        os.replace(ckpt_dir / "state.json.tmp", ckpt_dir / "state.json")

    snap_root = out_dir.with_name(out_dir.name + ".snapshots")

    def save_snapshot() -> None:
        info = {"steps": step, "epoch": epoch, "train_seconds": round(elapsed_before + time.time() - t_train, 1),
                "snapshot_of": str(out_dir)}  # fmt: skip
        save_hub_layout(
            model, extractor, hf_tokenizer, snap_root / f"step-{step:07d}", None, cfg.save_dtype, info, language
        )

    t_train = time.time()
    last_loss = float("nan")
    loss_window: list[float] = []
    dev_result: EvalResult | None = None
    stop = False
    stopped_for: str | None = None  # set when the run stops before its schedule ends (it is then paused)
    memory_check_every = 10  # steps
    memory_limit = cfg.max_memory_gb
    if memory_limit and not within_memory(memory_limit, stop_message=False):
        logger.warning("resident memory is over --max-memory %.1f GB before the first step: a restart would not "
                       "help, so the limit is not enforced in this run", memory_limit)  # fmt: skip
        memory_limit = None
    first_step = step
    with _progress_bar(cfg.progress) as progress, _StopOnSignal() as signalled:
        task = progress.add_task("train", total=total_steps, completed=step, info="")
        while epoch < cfg.epochs and not stop:
            if epoch_rng is None:
                epoch_rng, batch_in_epoch = rng.getstate(), 0
                batches = plan(rng)
            else:  # resumed within an epoch: draw its batch order again, leave rng where it was saved
                now = rng.getstate()
                rng.setstate(epoch_rng)
                batches = plan(rng)
                rng.setstate(now)
            if epoch == 0 and cfg.sortagrad:  # first epoch shortest-first: CTC finds alignments sooner
                batches.sort(key=lambda b: int(train_store.lengths[b].max()))
            ep_loss, ep_n, ep_first_step = 0.0, 0, step
            for idx in batches[batch_in_epoch:]:
                elapsed = elapsed_before + time.time() - t_train
                if step >= total_steps or (cfg.time_limit_s and elapsed >= cfg.time_limit_s):
                    stop = True
                    break
                if signalled.is_set():
                    stopped_for = "signal"
                elif cfg.stop_after_s and elapsed - elapsed_before >= cfg.stop_after_s:
                    stopped_for = "stop-after"
                elif memory_limit and step > first_step and step % memory_check_every == 0:
                    stopped_for = None if within_memory(memory_limit) else "memory"
                if stopped_for is not None:
                    stop = True
                    break
                lr = _lr_at(cfg, step, total_steps, elapsed)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                extra = 0
                if cfg.pad_blank_weight > 0 and rng.random() < cfg.pad_extra_prob:
                    extra = int(rng.random() * _PAD_EXTRA_MAX_S * SAMPLE_RATE)
                edges = draw_edges(len(idx), cfg.edge_prob, rng)
                x, mask, labels = train_store.collate(idx, device, inputs, extra, multiple, edges)
                loss = train_step(model, optimizer, x, mask, labels, cfg, amp)
                step += 1
                batch_in_epoch += 1
                if step % 10 == 0 or step == 1:
                    last_loss = float(loss.detach())
                    loss_window.append(last_loss)
                    ep_loss += last_loss
                    ep_n += 1
                if step % cfg.log_every == 0:
                    avg = sum(loss_window) / max(len(loss_window), 1)
                    loss_window.clear()
                    held = resident_memory_gb()
                    memory = f" mem {held:.1f} GB" if held is not None else ""
                    logger.info("step %d epoch %d loss %.4f lr %.2e %.0fs%s", step, epoch, avg, lr, elapsed, memory)
                progress.update(task, completed=step, info=f"ep {epoch} loss {last_loss:.3f} lr {lr:.1e}")
                if cfg.save_every and step % cfg.save_every == 0:
                    save_checkpoint()
                if cfg.snapshot_every and step % cfg.snapshot_every == 0:
                    save_snapshot()
            else:
                epoch += 1
                epoch_rng = None
            if step == ep_first_step and stop and history:  # stopped at an epoch's start: nothing new to record
                break
            if ep_n == 0 and step > ep_first_step:  # fewer steps than the sampling interval: the last one's loss
                ep_loss, ep_n = float(loss.detach()), 1
            record: dict[str, Any] = {
                "epoch": epoch,
                "step": step,
                "loss": ep_loss / max(ep_n, 1),
                "seconds": round(elapsed_before + time.time() - t_train, 1),
            }
            if dev_store is not None and stopped_for is None:  # stopped early: save, no dev pass
                dev_result = evaluate(model, dev_store, tokenizer, device, cfg.batch_seconds, amp, inputs)
                record.update(dev_wer=dev_result.wer, dev_cer=dev_result.cer)
                logger.info(
                    "epoch %d: loss %.4f, dev greedy WER %.2f%% CER %.2f%%; e.g. %r -> %r",
                    epoch,
                    record["loss"],
                    100 * dev_result.wer,
                    100 * dev_result.cer,
                    *(dev_result.examples[0] if dev_result.examples else ("", "")),
                )
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
            save_checkpoint()

    train_seconds = elapsed_before + time.time() - t_train
    paused = stopped_for is not None
    if paused:
        logger.info("stopped after %.0fs in this run (step %d); --resume continues the same schedule",
                    time.time() - t_train, step)  # fmt: skip
    model.eval()
    info = {
        "steps": step,
        "epochs_completed": epoch,
        "train_seconds": round(train_seconds, 1),
        "paused": paused,
        "train_audio_hours": round(train_store.hours, 3),
        "parameters": n_params,
        "autocast": "bfloat16" if amp else None,
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "history": history,
        "dev": dataclasses.asdict(dev_result) if dev_result else None,
    }
    model.cpu()
    save_hub_layout(model, extractor, hf_tokenizer, out_dir, cfg.lm_dir, cfg.save_dtype, extra=info, language=language)
    logger.info("saved %s (%.0fs in all)", out_dir, time.time() - t_start)
    return TrainResult(
        output_dir=out_dir,
        steps=step,
        epochs_completed=epoch,
        train_seconds=train_seconds,
        audio_hours=train_store.hours,
        final_loss=last_loss,
        dev=dev_result,
        history=history,
        stopped_for=stopped_for,
    )


class _StopOnSignal(contextlib.AbstractContextManager):
    """While training: the first SIGINT/SIGTERM asks the loop to stop after its current step (it then saves
    a checkpoint and the model), a second SIGINT aborts at once. Only in the main thread, where Python
    delivers signals; elsewhere the event is simply never set."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.event.set()
        logger.warning("%s: stopping after this step and saving a checkpoint (Ctrl-C again aborts at once)",
                       signal.Signals(signum).name)  # fmt: skip

    def __enter__(self) -> threading.Event:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self.event

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        self._previous.clear()


def _global_rng_states(device: Any) -> dict[str, Any]:
    """numpy's and torch's global random states (SpecAugment and dropout draw from them), JSON-ready."""
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    states: dict[str, Any] = {
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "torch": torch.get_rng_state().tolist(),
    }
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device).tolist()
    return states


def _set_global_rng_states(states: dict[str, Any] | None, device: Any) -> None:
    import torch

    if not states:  # a checkpoint from before they were saved
        return
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(torch.tensor(states["torch"], dtype=torch.uint8))
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(torch.tensor(states["cuda"], dtype=torch.uint8), device)


def _tuple_state(obj: Any) -> Any:
    """JSON turns random.getstate()'s tuples into lists; turn them back."""
    if isinstance(obj, list):
        return tuple(_tuple_state(x) for x in obj)
    return obj
