"""The decoding half of the engine: log-probabilities of whole inputs to :class:`~w2vlm.results.Transcript`.

One path for every surface: greedy best-path decoding, or the native beam search (with the model's LM,
hotwords, n-best) on the decoder's thread pool with the options of a :class:`DecodeConfig` built once per call
(the shared LM is never changed). Word times come from the decoder's word frames, word confidences from the
beams' agreement, character times from the decoder's token spans.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from w2vlm.engine.alignment import char_spans_from_beam, greedy_words
from w2vlm.engine.config import DecodeConfig
from w2vlm.engine.segments import DecodedPart, assemble, frame_evidence
from w2vlm.engine.windows import join
from w2vlm.results import Alternative, Transcript, Word


class TranscriptDecoder:
    """Turns (frames, vocab) log-probabilities into transcripts with a processor's decoder."""

    def __init__(self, decoder: Any, seconds_per_frame: float, model_name: str | None = None) -> None:
        from w2vlm.processor import decoder_is_bpe, decoder_labels

        self.decoder = decoder
        self.seconds_per_frame = seconds_per_frame
        self.model_name = model_name
        self.labels = decoder_labels(decoder)
        self.is_bpe = decoder_is_bpe(decoder)
        self.vocab = len(self.labels)
        #: the blank token's id (the label "")
        self.blank = self.labels.index("") if "" in self.labels else 0
        self.has_lm = getattr(decoder, "language_model", None) is not None
        self._without_lm: Any = None

    def mode(self, config: DecodeConfig) -> str:
        if config.is_greedy:
            return "greedy"
        return "beam search + LM" if self.has_lm and config.use_lm else "beam search, no LM"

    def search(self, config: DecodeConfig) -> tuple[Any, Any]:
        """(decoder, native options) for ``config``: the model's decoder, or the same alphabet without its LM
        when ``config`` does not use it; options validated once and shared by every input of a call."""
        decoder = self.decoder
        kwargs = config.search_kwargs()
        if not (config.use_lm and self.has_lm):
            for key in ("alpha", "beta", "unk_score_offset", "score_boundary"):
                kwargs.pop(key)
            if self.has_lm:
                if self._without_lm is None:
                    from w2vlm.decoder import BeamSearchDecoderCTC

                    self._without_lm = BeamSearchDecoderCTC(self.decoder.alphabet, None)
                decoder = self._without_lm
        return decoder, decoder.options(**kwargs)

    def decode(
        self, names: Sequence[str], log_probs: Sequence[np.ndarray], config: DecodeConfig, threads: int
    ) -> list[Transcript]:
        """Transcripts of whole inputs, decoded in parallel on ``threads`` native threads; an input that fails
        gets a transcript with its ``error`` set."""
        if config.is_greedy:
            return [self._safe(self.greedy, name, lp, config) for name, lp in zip(names, log_probs)]
        if not log_probs:
            return []
        decoder, options = self.search(config)
        try:
            beams = decoder.decode_beams_with(options, list(log_probs), threads)
        except Exception:  # one by one, to find the input that fails
            beams = None
        out = []
        for i, (name, lp) in enumerate(zip(names, log_probs)):
            if beams is not None:
                out.append(self._safe(self.from_beams, name, beams[i], config, lp))
                continue
            try:
                b = decoder.decode_beams_with(options, [lp], threads)[0]
                out.append(self.from_beams(name, b, config, lp))
            except Exception as exc:
                out.append(failed(name, exc, self.model_name))
        return out

    def transcribe_parts(
        self,
        items: Sequence[tuple[str, Sequence[tuple[float, float | None, np.ndarray]], float]],
        config: DecodeConfig,
        threads: int,
    ) -> list[Transcript]:
        """Transcripts of inputs given as ``(name, parts, seconds)`` with the parts of
        :meth:`w2vlm.engine.Engine.segment_log_probs` (all parts decoded together): the same transcripts as
        :meth:`w2vlm.engine.Engine.transcribe` makes."""
        flat = [(k, part) for k, (_, parts, _) in enumerate(items) for part in parts]
        done = self.decode_parts([items[k][0] for k, _ in flat], [part for _, part in flat], config, threads)
        decoded: list[list[DecodedPart]] = [[] for _ in items]
        for (k, _), part in zip(flat, done):
            decoded[k].append(part)
        return [self.assemble(name, got, seconds, config) for (name, _, seconds), got in zip(items, decoded)]

    def decode_parts(
        self,
        names: Sequence[str],
        parts: Sequence[tuple[float, float | None, np.ndarray]],
        config: DecodeConfig,
        threads: int,
    ) -> list[DecodedPart]:
        """``(start seconds, speech probability, log-probabilities)`` parts (of any inputs) decoded together,
        each with the model's evidence of speech over its frames."""
        texts = self.decode(names, [lp for _, _, lp in parts], config, threads)
        return [
            (transcript, offset, prob, frame_evidence(lp, self.blank))
            for (offset, prob, lp), transcript in zip(parts, texts)
        ]

    def assemble(self, name: str, parts: Sequence[DecodedPart], seconds: float, config: DecodeConfig) -> Transcript:
        """One input's transcript from its decoded parts (see :func:`w2vlm.engine.segments.assemble`)."""
        return assemble(name, parts, seconds, self.seconds_per_frame, config.no_speech_threshold, self.model_name)

    def _safe(self, fn: Any, name: str, *args: Any) -> Transcript:
        try:
            return fn(name, *args)
        except Exception as exc:
            return failed(name, exc, self.model_name)

    def from_beams(
        self, name: str, beams: Sequence[Any], config: DecodeConfig, log_probs: np.ndarray | None = None
    ) -> Transcript:
        """A transcript from beams (best first)."""
        from w2vlm.processor import beam_fields

        spf = self.seconds_per_frame
        if not beams:
            return Transcript(audio=name, text="", duration=0.0, model=self.model_name)
        best = beams[0]
        text, word_frames, _, _ = beam_fields(best)
        conf = list(getattr(best, "word_confidences", []) or []) if config.word_confidences else []
        words = [
            Word(w, s * spf, e * spf, float(conf[i]) if i < len(conf) else None)
            for i, (w, (s, e)) in enumerate(word_frames)
        ]
        alternatives = []
        for beam in beams[: config.n_best]:
            t, _, logit_score, lm_score = beam_fields(beam)
            alternatives.append(Alternative(t, logit_score, lm_score))
        chars = []
        if config.timestamps == "char":
            chars = [Word(ch, s * spf, e * spf) for ch, (s, e) in char_spans_from_beam(best, log_probs, self.labels)]
        return Transcript(
            audio=name,
            text=text,
            duration=0.0,
            words=words,
            alternatives=alternatives,
            model=self.model_name,
            chars=chars,
        )

    def greedy(self, name: str, log_probs: np.ndarray, config: DecodeConfig) -> Transcript:
        """Best-path decoding: per frame the most probable token, repeats merged, blanks dropped."""
        from w2vlm.decoder import to_log_probs

        lp = to_log_probs(log_probs, self.vocab)
        text, words = greedy_words(lp, self.labels, self.is_bpe)
        spf = self.seconds_per_frame
        chars: list[Word] = []
        if config.timestamps == "char":
            chars = [Word(ch, s * spf, e * spf) for ch, (s, e) in _greedy_chars(lp, self.labels)]
        return Transcript(
            audio=name,
            text=text,
            duration=0.0,
            words=[Word(w, s * spf, e * spf, c if config.word_confidences else None) for w, s, e, c in words],
            alternatives=[Alternative(text, float(lp.max(axis=1).sum()) if lp.size else 0.0, None)],
            model=self.model_name,
            chars=chars,
        )


class Incremental:
    """One windowed input decoded as its frames arrive: a native incremental beam search (the same beams as
    decoding the whole matrix), or — for greedy decoding, log-probabilities wanted, or word confidences —
    the pieces kept and decoded at the end."""

    def __init__(self, decoding: Any, config: DecodeConfig | None, name: str, vocab: int) -> None:
        self.decoding = decoding
        self.config = config
        self.name = name
        self.vocab = vocab
        self.pieces: list[np.ndarray] | None = []
        self.stream: Any = None
        self.error: BaseException | None = None
        self.evidences: list[np.ndarray] = []
        if config is not None and not config.is_greedy:
            self.decoder, options = decoding.search(config)
            self.stream = self.decoder.stream_with(options)
            if not config.word_confidences:
                self.pieces = None

    def feed(self, piece: np.ndarray) -> None:
        if self.error is not None:
            return
        if self.pieces is not None:
            self.pieces.append(piece)
        if self.config is not None:
            self.evidences.append(frame_evidence(piece, self.decoding.blank))
        if self.stream is not None:
            try:
                self.stream.feed(piece)
            except Exception as exc:
                self.error = exc

    def evidence(self) -> np.ndarray | None:
        """The model's per-frame evidence of speech over the input (see :mod:`w2vlm.engine.segments`)."""
        if self.config is None:
            return None
        return np.concatenate(self.evidences) if self.evidences else np.zeros(0, np.float32)

    def finish(self) -> Any:
        """A transcript, the log-probabilities (no decoding wanted) or the exception that stopped it."""
        if self.error is not None:
            return self.error
        log_probs = join(self.pieces, self.vocab) if self.pieces is not None else None
        if self.config is None:
            return log_probs
        try:
            if self.stream is None:
                return self.decoding.greedy(self.name, log_probs, self.config)
            beams = self.stream.finalize()
            if log_probs is not None and beams:
                beams = self.decoder.attach_confidences(beams, log_probs)
            return self.decoding.from_beams(self.name, beams, self.config, log_probs)
        except Exception as exc:
            return exc


def _greedy_chars(log_probs: np.ndarray, labels: Sequence[str]) -> list[tuple[str, tuple[int, int]]]:
    """Each emitted non-space token of the best path with its (start, end) frames."""
    if log_probs.shape[0] == 0:
        return []
    ids = log_probs.argmax(axis=1)
    change = np.flatnonzero(np.diff(ids)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [ids.size]])
    out = []
    for s, e in zip(starts.tolist(), ends.tolist()):
        label = labels[int(ids[s])]
        if label and label.strip():
            out.append((label, (s, e)))
    return out


def failed(name: str, exc: BaseException, model_name: str | None = None) -> Transcript:
    """The transcript of an input that failed with ``exc``."""
    return Transcript(audio=name, text="", duration=0.0, model=model_name, error=describe(exc), exception=exc)


def describe(exc: BaseException) -> str:
    """An error message for an input: w2vlm's own message, or the exception's type and message."""
    from w2vlm.errors import W2vlmError

    if isinstance(exc, W2vlmError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


__all__ = ["Incremental", "TranscriptDecoder", "describe", "failed"]
