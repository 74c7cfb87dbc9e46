"""Prompt enhancers: rewrite a short user prompt into the dense caption style the model was trained on.

CogVideoX (its `convert_demo.py`) and Movie Gen (§3.1.4, "prompt rewriting") both train on long, dense
captions and rewrite what users type before encoding it, because a short prompt is far from the captions the
model saw. Three enhancers share one protocol (`name`, `enhance(prompt) -> str`):

- `ShapesEnhancer`: offline, built in, for the shipped Shapes-world model. It parses the prompt with the
  world's vocabulary and re-emits the canonical dense caption (`cinegen.world.captions.enhance_prompt`).
- `OpenAIEnhancer`: any OpenAI-compatible `/chat/completions` endpoint (OpenAI, vLLM, llama.cpp server,
  Ollama, ...), with the standard library's urllib; the key comes from an environment variable, never a flag.
- `LocalLLMEnhancer`: a causal LM in a local transformers folder the user names (loaded from disk only).

Enhancing is always optional and never fatal: `enhance_with_fallback` returns the raw prompt and the reason
when an enhancer fails or answers with nothing usable, and the caller shows both prompts to the user.
"""

from __future__ import annotations

import json
import os
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cinegen.world.captions import ENHANCER_STYLES

__all__ = [
    "PromptEnhancer",
    "ShapesEnhancer",
    "OpenAIEnhancer",
    "LocalLLMEnhancer",
    "EnhanceResult",
    "enhance_with_fallback",
    "make_enhancer",
    "SYSTEM_PROMPT",
    "EnhanceError",
]

SYSTEM_PROMPT = (
    "You rewrite short prompts for a text-to-video model into the dense caption style it was trained on. "
    "Describe only what is asked: the subjects with their count, size, colour and look; what each of them does "
    "and how fast; the background; the camera. Use present tense, plain literal words, no new subjects, no "
    "story, no sound, no lists or quotes. Answer with the caption only, in one paragraph."
)
MAX_CHARS = 1500  # an answer longer than this is a runaway generation, not a caption


class EnhanceError(RuntimeError):
    """An enhancer could not produce a caption (the message says why)."""


@runtime_checkable
class PromptEnhancer(Protocol):
    name: str

    def enhance(self, prompt: str) -> str:
        """The rewritten prompt; raises on failure (callers use `enhance_with_fallback`)."""
        ...


@dataclass(frozen=True)
class EnhanceResult:
    original: str
    prompt: str  # what to generate with: the rewrite, or the original on failure
    enhanced: bool
    enhancer: str | None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "original": self.original,
            "prompt": self.prompt,
            "enhanced": self.enhanced,
            "enhancer": self.enhancer,
            "error": self.error,
        }


def clean_caption(text: str) -> str:
    """First paragraph of an LLM answer, without a 'Caption:' label, surrounding quotes or markdown."""
    text = text.strip()
    text = re.sub(r"^\**\s*(?:enhanced |dense |rewritten )?(?:caption|prompt)\s*\**\s*:\s*\**\s*", "", text, flags=re.I)
    text = text.split("\n\n")[0].strip()
    text = " ".join(text.split())
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    return text


def enhance_with_fallback(enhancer: PromptEnhancer | None, prompt: str) -> EnhanceResult:
    """Run `enhancer`; on any failure (or an empty / runaway answer) fall back to the raw prompt."""
    if enhancer is None:
        return EnhanceResult(prompt, prompt, False, None, "no prompt enhancer is configured")
    try:
        out = clean_caption(enhancer.enhance(prompt))
        if not out:
            raise EnhanceError("the enhancer returned an empty caption")
        if len(out) > MAX_CHARS:
            raise EnhanceError(f"the enhancer returned {len(out)} characters (more than {MAX_CHARS})")
    except Exception as e:  # any enhancer failure is a fallback, never an error for the user
        return EnhanceResult(prompt, prompt, False, enhancer.name, f"{type(e).__name__}: {e}")
    return EnhanceResult(prompt, out, out != prompt, enhancer.name)


# ------------------------------------------------------------------------------------------ built-in
class ShapesEnhancer:
    """Offline rewriter for the Shapes-world model: parse with the world vocabulary, emit the dense caption.

    Unstated attributes are filled with the world's defaults (deterministic) so the same short prompt always
    becomes the same caption; a prompt naming no shape raises (and so falls back to the raw prompt). With `layout`
    (models trained on layout captions, `prompt_enhancer: shapes-layout`) every object the prompt does not place
    also gets a start cell, from a fixed-seed layout, so the shown rewrite is the one generated; with `tokens`
    (`prompt_enhancer: shapes-tokens`) a start cell and token ("in the top left at c3 r2").
    """

    def __init__(self, layout: bool = False, tokens: bool = False) -> None:
        self.layout, self.tokens = layout, tokens
        self.name = "shapes-tokens" if tokens else "shapes-layout" if layout else "shapes"

    def enhance(self, prompt: str) -> str:
        from cinegen.world.captions import enhance_prompt

        return enhance_prompt(prompt, layout=self.layout, tokens=self.tokens)

    def examples(self, n: int = 3) -> list[str]:
        """A few dense captions of the world (few-shot examples for the LLM enhancers)."""
        import numpy as np

        from cinegen.world.captions import dense_caption
        from cinegen.world.render import complete_truth, sample_truth

        rng = np.random.default_rng(0)
        return [dense_caption(complete_truth(sample_truth(rng), rng)) for _ in range(n)]


def _messages(prompt: str, system: str, examples: Sequence[str]) -> list[dict[str, str]]:
    sys_text = system
    if examples:
        sys_text += " Examples of the caption style:\n" + "\n".join(f"- {e}" for e in examples)
    return [{"role": "system", "content": sys_text}, {"role": "user", "content": prompt}]


# ------------------------------------------------------------------------------------------ OpenAI-compatible
class OpenAIEnhancer:
    """POST `{base_url}/chat/completions` (OpenAI wire format) with urllib; the key is read from `key_env`
    at call time (absent or empty = no Authorization header, as local servers expect)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        key_env: str = "OPENAI_API_KEY",
        timeout: float = 30.0,
        system: str = SYSTEM_PROMPT,
        examples: Sequence[str] = (),
        max_tokens: int = 300,
        temperature: float = 0.2,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"enhancer endpoint must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.key_env = key_env
        self.timeout = timeout
        self.system = system
        self.examples = list(examples)
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.name = f"openai:{model}"

    def request_body(self, prompt: str) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": _messages(prompt, self.system, self.examples),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "stream": False,
        }

    def enhance(self, prompt: str) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        url = self.base_url + ("/chat/completions" if not self.base_url.endswith("/chat/completions") else "")
        req = urllib.request.Request(
            url, data=json.dumps(self.request_body(prompt)).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 (user-configured URL)
                body = json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode("utf-8", "replace")
            raise EnhanceError(f"{url} answered HTTP {e.code}: {detail}") from e
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise EnhanceError(f"cannot reach {url}: {e}") from e
        except json.JSONDecodeError as e:
            raise EnhanceError(f"{url} did not answer JSON") from e
        try:
            return str(body["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError) as e:
            raise EnhanceError(f"{url} answered without choices[0].message.content") from e


# ------------------------------------------------------------------------------------------ local LLM
class LocalLLMEnhancer:
    """A causal LM from a local transformers folder (never a hub download), greedy-decoded.

    Loaded on first use (a few GB for a real 1-8B model) and kept; calls are serialised with a lock. The
    tokenizer's chat template is used when it has one, a plain instruction format otherwise.
    """

    def __init__(
        self,
        folder: str | Path,
        device: str | None = None,
        max_new_tokens: int = 160,
        system: str = SYSTEM_PROMPT,
        examples: Sequence[str] = (),
    ) -> None:
        self.folder = Path(folder)
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.system = system
        self.examples = list(examples)
        self.name = f"local:{self.folder.name}"
        self._lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None

    def _load(self) -> None:
        if self._model is not None:
            return
        if not (self.folder / "config.json").is_file():
            raise EnhanceError(f"{self.folder}: not a transformers model folder (no config.json)")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(self.folder, local_files_only=True)
        if self.device:
            model = model.to(self.device)
        self._model = model.eval()

    def format_prompt(self, prompt: str) -> str:
        tok = self._tokenizer
        messages = _messages(prompt, self.system, self.examples)
        if getattr(tok, "chat_template", None):
            return str(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        return f"{messages[0]['content']}\n\nPrompt: {prompt}\nCaption:"

    def enhance(self, prompt: str) -> str:
        import torch

        with self._lock:
            self._load()
            tok, model = self._tokenizer, self._model
            text = self.format_prompt(prompt)
            enc = tok(text, return_tensors="pt")
            device = next(model.parameters()).device
            enc = {k: v.to(device) for k, v in enc.items()}
            pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
            with torch.inference_mode():
                out = model.generate(
                    **enc, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad
                )  # (1, L_in + L_new)
            new = out[0, enc["input_ids"].shape[1] :]  # only the continuation, not the echoed prompt
            return str(tok.decode(new, skip_special_tokens=True))


# ------------------------------------------------------------------------------------------ factory
SHAPES_STYLES = ENHANCER_STYLES  # `_cinegen_defaults.prompt_enhancer` of Shapes-world models


def make_enhancer(
    spec: str | None,
    model_style: str | None = None,
    key_env: str = "OPENAI_API_KEY",
    device: str | None = None,
) -> PromptEnhancer | None:
    """Build an enhancer from a CLI spec.

    spec: "auto" (None) = the built-in Shapes enhancer when `model_style` is one of `SHAPES_STYLES`, else none;
      "none"; "builtin" / "shapes"; "openai:MODEL@URL" (e.g. "openai:gpt-4o-mini@https://api.openai.com/v1",
      "openai:qwen2.5@http://127.0.0.1:8000/v1"); "local:FOLDER".
    The LLM enhancers get a few dense captions of the world as style examples when the model is the Shapes one.
    """
    spec = (spec or "auto").strip()

    def examples() -> list[str]:  # rendered only for the LLM enhancers that use them
        return ShapesEnhancer().examples() if model_style in SHAPES_STYLES else []

    layout, tokens = model_style == "shapes-layout", model_style == "shapes-tokens"
    if spec == "auto":
        return ShapesEnhancer(layout, tokens) if model_style in SHAPES_STYLES else None
    if spec == "none":
        return None
    if spec in ("builtin", "shapes"):
        return ShapesEnhancer(layout, tokens)
    if spec.startswith("openai:"):
        model, sep, url = spec[len("openai:") :].partition("@")
        if not sep or not model or not url:
            raise ValueError(f"enhancer spec {spec!r}: use openai:MODEL@URL, e.g. openai:gpt-4o-mini@https://host/v1")
        return OpenAIEnhancer(url, model, key_env=key_env, examples=examples())
    if spec.startswith("local:"):
        folder = Path(spec[len("local:") :]).expanduser()
        if not (folder / "config.json").is_file():
            raise ValueError(f"enhancer folder {folder} has no config.json (a local transformers causal LM)")
        return LocalLLMEnhancer(folder, device=device, examples=examples())
    raise ValueError(f"unknown enhancer {spec!r}: use auto, none, builtin, openai:MODEL@URL or local:FOLDER")
