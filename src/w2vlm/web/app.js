// w2vlm web page: upload or record audio, transcribe with the server's OpenAI-compatible endpoint, show the
// transcript with word timings and confidences, click a word to play the audio from there.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const fileInput = $("file-input");
  const recordButton = $("record-button");
  const recordTime = $("record-time");
  const transcribeButton = $("transcribe-button");
  const statusLine = $("status");
  const player = $("player");
  const sourceRow = $("source-row");
  const sourceName = $("source-name");
  const hotwordsInput = $("hotwords");
  const keyInput = $("api-key");
  const resultPanel = $("result-panel");
  const transcriptBox = $("transcript");
  const resultMeta = $("result-meta");
  const timingsBody = document.querySelector("#timings tbody");
  const copyButton = $("copy-button");
  const copyStatus = $("copy-status");
  const copyText = $("copy-text");
  const resultActions = $("result-actions");
  const downloadButtons = document.querySelectorAll("#result-actions button[data-format]");

  // result: the transcript shown, with what made it (the audio, its name, the hotwords); null while none is shown.
  // audioId counts the audio chosen, so that an answer about earlier audio is dropped.
  const state = { blob: null, filename: null, objectUrl: null, model: null, threshold: 0.5, result: null, audioId: 0 };
  let recorder = null;
  let recordTimer = null;
  let copyTimer = null;

  function setStatus(text, isError) {
    statusLine.textContent = text;
    statusLine.classList.toggle("error", Boolean(isError));
  }

  function authHeaders() {
    const key = keyInput.value.trim();
    return key ? { Authorization: "Bearer " + key } : {};
  }

  function fmt(seconds) {
    return Number(seconds).toFixed(2);
  }

  async function loadServerInfo() {
    try {
      const health = await (await fetch("/health")).json();
      state.threshold = typeof health.low_confidence === "number" ? health.low_confidence : 0.5;
      state.model = health.model;
      $("threshold").textContent = Math.round(state.threshold * 100) + "%";
      $("key-row").hidden = !health.auth;
      if (health.auth) {
        document.querySelector("details").open = true;
      }
      $("model-name").textContent = health.model;
    } catch (err) {
      setStatus("cannot reach the server: " + err, true);
    }
  }

  // no transcript on the page: before the first result, after an error, and when other audio is chosen
  function clearResult() {
    state.result = null;
    resultPanel.hidden = true;
    transcriptBox.replaceChildren();
    delete transcriptBox.dataset.text;
    timingsBody.replaceChildren();
    resultMeta.textContent = "";
    copyText.hidden = true;
    copyText.value = "";
    clearTimeout(copyTimer);
    copyStatus.textContent = "";
  }

  function useAudio(blob, filename) {
    clearResult();
    state.audioId += 1;
    if (state.objectUrl) URL.revokeObjectURL(state.objectUrl);
    state.blob = blob;
    state.filename = filename;
    state.objectUrl = URL.createObjectURL(blob);
    player.src = state.objectUrl;
    sourceName.textContent = filename + " (" + Math.max(1, Math.round(blob.size / 1024)) + " KB)";
    sourceRow.hidden = false;
    transcribeButton.disabled = false;
    setStatus("ready");
  }

  fileInput.addEventListener("change", () => {
    const file = fileInput.files && fileInput.files[0];
    if (file) useAudio(file, file.name);
    fileInput.value = ""; // choosing the same file again is a change too
  });

  async function startRecording() {
    if (!navigator.mediaDevices || !window.MediaRecorder) {
      setStatus("this browser cannot record audio here (recording needs https or localhost)", true);
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (err) {
      setStatus("microphone not available: " + err.message, true);
      return;
    }
    const chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.addEventListener("dataavailable", (e) => {
      if (e.data && e.data.size) chunks.push(e.data);
    });
    recorder.addEventListener("stop", () => {
      stream.getTracks().forEach((t) => t.stop());
      clearInterval(recordTimer);
      const type = recorder.mimeType || "audio/webm";
      const ext = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
      useAudio(new Blob(chunks, { type: type }), "recording." + ext);
      recordButton.textContent = "● Record";
      recordButton.classList.remove("recording");
      recorder = null;
    });
    const started = Date.now();
    recorder.start(250);
    recordButton.textContent = "■ Stop";
    recordButton.classList.add("recording");
    recordTime.textContent = "0.0 s";
    recordTimer = setInterval(() => {
      recordTime.textContent = ((Date.now() - started) / 1000).toFixed(1) + " s";
    }, 100);
    setStatus("recording…");
  }

  recordButton.addEventListener("click", () => {
    if (recorder) recorder.stop();
    else startRecording();
  });

  // The request streams (server-sent events): each speech segment's words are shown as soon as the server has
  // recognised them, and the last event is the whole verbose_json result, which replaces them.
  async function transcribe() {
    if (!state.blob) return;
    const audioId = state.audioId;
    const source = { blob: state.blob, filename: state.filename, hotwords: hotwordsInput.value.trim() };
    transcribeButton.disabled = true;
    setStatus("transcribing…");
    const form = new FormData();
    form.append("file", source.blob, source.filename);
    form.append("model", state.model || "w2vlm");
    form.append("response_format", "verbose_json");
    form.append("timestamp_granularities[]", "word");
    form.append("timestamp_granularities[]", "segment");
    form.append("stream", "true");
    if (source.hotwords) form.append("prompt", source.hotwords);
    const t0 = performance.now();
    const failed = (text) => {
      clearResult(); // an error replaces the transcript it would otherwise seem to be about
      setStatus(text, true);
    };
    try {
      const response = await fetch("/v1/audio/transcriptions", {
        method: "POST",
        body: form,
        headers: authHeaders(),
      });
      if (audioId !== state.audioId) return; // other audio was chosen meanwhile
      if (!response.ok) {
        const body = await response.json().catch(() => null);
        if (audioId === state.audioId) failed("error " + response.status + ": " + errorMessage(body, response));
        return;
      }
      let live = null; // the words shown so far, before the final result
      let finished = false;
      await readEvents(response, audioId, (event) => {
        if (event.error) {
          failed("error: " + event.error.message);
          finished = true;
        } else if (event.type === "transcript.text.delta" && event.segment) {
          if (!live) live = startResult(source);
          addWords(event.segment.words || []);
          setStatus("transcribing… " + fmt(event.segment.end) + " s recognised");
        } else if (event.type === "transcript.text.done") {
          const result = Object.assign({}, event);
          delete result.type;
          const seconds = (performance.now() - t0) / 1000;
          render(result, seconds, source);
          setStatus("done in " + seconds.toFixed(2) + " s");
          finished = true;
        }
      });
      if (audioId === state.audioId && !finished) failed("the server ended the answer before the transcript");
    } catch (err) {
      if (audioId !== state.audioId) return;
      failed("request failed: " + err);
    } finally {
      transcribeButton.disabled = false;
    }
  }

  // Calls onEvent with each JSON event of a server-sent-events response; stops early when other audio is chosen.
  async function readEvents(response, audioId, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (audioId !== state.audioId) {
        reader.cancel().catch(() => {});
        return;
      }
      buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        block.split("\n").forEach((line) => {
          if (line.startsWith("data: ")) onEvent(JSON.parse(line.slice(6)));
        });
      }
      if (done) return;
    }
  }

  function errorMessage(body, response) {
    return body && body.error ? body.error.message : response.statusText;
  }

  transcribeButton.addEventListener("click", transcribe);
  keyInput.addEventListener("change", () => {
    try {
      localStorage.setItem("w2vlm-api-key", keyInput.value);
    } catch (e) {
      /* storage unavailable */
    }
  });

  // an empty result panel for the words of ``source`` that are about to come
  function startResult(source) {
    clearResult();
    // subtitles: fetched from the server (its own cues) on the first click, kept here for the next
    state.result = {
      body: null,
      blob: source.blob,
      filename: source.filename,
      hotwords: source.hotwords,
      subtitles: {},
    };
    resultPanel.hidden = false;
    resultActions.hidden = true; // copy and download once the final result is in
    return state.result;
  }

  // words at the end of the transcript and of the timings table
  function addWords(words) {
    const first = transcriptBox.querySelectorAll(".word").length;
    words.forEach((w, k) => {
      const i = first + k;
      const low = typeof w.confidence === "number" && w.confidence < state.threshold;
      const conf = typeof w.confidence === "number" ? Math.round(w.confidence * 100) + "%" : "n/a";
      const span = document.createElement("span");
      span.className = "word" + (low ? " low" : "");
      span.dataset.index = String(i);
      span.dataset.start = String(w.start);
      span.dataset.end = String(w.end);
      if (typeof w.confidence === "number") span.dataset.confidence = String(w.confidence);
      span.title = fmt(w.start) + "–" + fmt(w.end) + " s · confidence " + conf;
      span.textContent = w.word;
      const time = document.createElement("span");
      time.className = "t";
      time.textContent = fmt(w.start);
      span.appendChild(time);
      // one tab stop for the whole transcript (the first word); arrow keys move between words
      span.tabIndex = i === 0 ? 0 : -1;
      span.setAttribute("role", "button");
      span.setAttribute("aria-label", w.word + ", " + fmt(w.start) + " s");
      span.addEventListener("click", () => playFrom(w.start));
      span.addEventListener("keydown", (event) => onWordKey(event, span));
      transcriptBox.appendChild(span);
      transcriptBox.appendChild(document.createTextNode(" "));

      const row = document.createElement("tr");
      if (low) row.className = "low";
      [String(i + 1), w.word, fmt(w.start), fmt(w.end), conf].forEach((text) => {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.appendChild(cell);
      });
      timingsBody.appendChild(row);
    });
  }

  // the final result (a verbose_json body), in place of anything shown before
  function render(result, seconds, source) {
    startResult(source).body = result;
    const words = result.words || [];
    resultMeta.textContent =
      fmt(result.duration) + " s of audio · " + words.length + " words · " + seconds.toFixed(2) + " s";
    if (!words.length) {
      const empty = document.createElement("p");
      empty.className = "muted";
      empty.id = "empty-transcript";
      empty.textContent = result.text ? result.text : "(no speech recognised)";
      transcriptBox.appendChild(empty);
    }
    addWords(words);
    transcriptBox.dataset.text = result.text;
    resultActions.hidden = false;
  }

  // ---------------------------------------------------------------------------------------- copy and download

  function flashCopyStatus(text) {
    copyStatus.textContent = text;
    clearTimeout(copyTimer);
    copyTimer = setTimeout(() => {
      copyStatus.textContent = "";
    }, 4000);
  }

  // without the Clipboard API (an http page not on localhost, an old browser): show the text selected, ready
  // for Ctrl+C, and try the old copy command on it
  function copyBySelecting(text) {
    copyText.value = text;
    copyText.hidden = false;
    copyText.focus();
    copyText.select();
    let copied = false;
    try {
      copied = document.execCommand("copy");
    } catch (e) {
      copied = false;
    }
    flashCopyStatus(copied ? "Copied ✓" : "Text selected: press Ctrl+C (⌘C) to copy");
  }

  async function copyTranscript() {
    if (!state.result || !state.result.body) return;
    const result = state.result;
    const text = result.body.text || "";
    if (navigator.clipboard && navigator.clipboard.writeText) {
      try {
        await navigator.clipboard.writeText(text);
        if (result === state.result) flashCopyStatus("Copied ✓");
        return;
      } catch (e) {
        /* refused (permissions, focus): select the text instead */
      }
    }
    if (result === state.result) copyBySelecting(text);
  }

  copyButton.addEventListener("click", copyTranscript);

  function stem(filename) {
    const base = (filename || "").replace(/^.*[\\/]/, "");
    const dot = base.lastIndexOf(".");
    return (dot > 0 ? base.slice(0, dot) : base) || "transcript";
  }

  function saveFile(content, type, name) {
    const url = URL.createObjectURL(new Blob([content], { type: type }));
    const link = document.createElement("a");
    link.href = url;
    link.download = name;
    link.hidden = true;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  // srt and vtt: the server's own cues for the same audio and hotwords (one cue-making implementation, in
  // Python), requested once a result; concurrent clicks share the request
  function fetchSubtitles(result, format) {
    if (!result.subtitles[format]) {
      const form = new FormData();
      form.append("file", result.blob, result.filename);
      form.append("model", state.model || "w2vlm");
      form.append("response_format", format);
      if (result.hotwords) form.append("prompt", result.hotwords);
      result.subtitles[format] = fetch("/v1/audio/transcriptions", {
        method: "POST",
        body: form,
        headers: authHeaders(),
      })
        .then(async (response) => {
          if (!response.ok) {
            const body = await response.json().catch(() => null);
            throw new Error("error " + response.status + ": " + errorMessage(body, response));
          }
          return response.text();
        })
        .catch((err) => {
          delete result.subtitles[format]; // not kept: the next click asks again
          throw err;
        });
    }
    return result.subtitles[format];
  }

  async function download(format, button) {
    const result = state.result;
    if (!result || !result.body) return;
    const name = stem(result.filename) + "." + format;
    if (format === "txt") {
      saveFile(result.body.text + "\n", "text/plain;charset=utf-8", name);
      return;
    }
    if (format === "json") {
      saveFile(JSON.stringify(result.body, null, 2) + "\n", "application/json", name);
      return;
    }
    button.disabled = true;
    const waiting = setTimeout(() => setStatus("making " + name + "…"), 300);
    try {
      const text = await fetchSubtitles(result, format);
      if (result !== state.result) return; // other audio was chosen meanwhile
      saveFile(text, format === "vtt" ? "text/vtt;charset=utf-8" : "application/x-subrip;charset=utf-8", name);
      setStatus("saved " + name);
    } catch (err) {
      if (result === state.result) setStatus(name + ": " + (err.message || err), true);
    } finally {
      clearTimeout(waiting);
      button.disabled = false;
    }
  }

  downloadButtons.forEach((button) => {
    button.addEventListener("click", () => download(button.dataset.format, button));
  });

  // ------------------------------------------------------------------------------------------- playback

  function playFrom(start) {
    player.currentTime = start;
    const played = player.play();
    if (played && played.catch) played.catch(() => {});
    highlight(start);
  }

  function onWordKey(event, span) {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      playFrom(Number(span.dataset.start));
      return;
    }
    const spans = Array.from(transcriptBox.querySelectorAll(".word"));
    const i = spans.indexOf(span);
    const moves = { ArrowRight: i + 1, ArrowDown: i + 1, ArrowLeft: i - 1, ArrowUp: i - 1, Home: 0 };
    moves.End = spans.length - 1;
    if (!(event.key in moves)) return;
    event.preventDefault();
    const next = spans[Math.max(0, Math.min(spans.length - 1, moves[event.key]))];
    span.tabIndex = -1;
    next.tabIndex = 0;
    next.focus();
  }

  function highlight(time) {
    const spans = transcriptBox.querySelectorAll(".word");
    spans.forEach((span) => {
      const on = time >= Number(span.dataset.start) && time < Number(span.dataset.end);
      span.classList.toggle("current", on);
    });
  }

  player.addEventListener("timeupdate", () => highlight(player.currentTime));

  try {
    keyInput.value = localStorage.getItem("w2vlm-api-key") || "";
  } catch (e) {
    /* storage unavailable */
  }
  loadServerInfo();
})();
