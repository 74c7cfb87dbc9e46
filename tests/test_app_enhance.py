"""Prompt enhancers: built-in Shapes rewriter, OpenAI-compatible endpoint (a local fake server), local LLM folder
(a tiny random causal LM), and the fallback to the raw prompt."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cinegen.app.enhance import (
    LocalLLMEnhancer,
    OpenAIEnhancer,
    PromptEnhancer,
    ShapesEnhancer,
    clean_caption,
    enhance_with_fallback,
    make_enhancer,
)
from cinegen.world.captions import parse_prompt


def test_shapes_enhancer_golden_and_fallback() -> None:
    e = ShapesEnhancer()
    assert isinstance(e, PromptEnhancer)
    res = enhance_with_fallback(e, "a red circle moving left")
    assert res.enhanced and res.error is None and res.enhancer == "shapes"
    assert (
        res.prompt == "One shape: A large red circle slowly moves to the left. Plain white background, static camera."
    )
    res = enhance_with_fallback(e, "two blue stars spin fast on a navy backdrop")
    assert res.prompt == (
        "Two shapes: Two small blue stars both quickly spin clockwise. Plain navy background, static camera."
    )
    bad = enhance_with_fallback(e, "a cat playing piano")
    assert (bad.prompt, bad.enhanced) == ("a cat playing piano", False)
    assert "no shape named" in (bad.error or "")
    assert enhance_with_fallback(None, "x").to_json() == {
        "original": "x",
        "prompt": "x",
        "enhanced": False,
        "enhancer": None,
        "error": "no prompt enhancer is configured",
    }


def test_clean_caption() -> None:
    assert clean_caption('Caption: "A red ball rolls."\n\nHope this helps!') == "A red ball rolls."
    assert clean_caption("**Enhanced prompt:**  A  cat\n sleeps.") == "A cat sleeps."
    assert clean_caption("   ") == ""


# ------------------------------------------------------------------------------------------ OpenAI-compatible
class _Fake(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]] = []
    reply: tuple[int, bytes] = (200, b"{}")

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        code, data = type(self).reply
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def fake_llm() -> Iterator[str]:
    _Fake.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Fake)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def _answer(text: str) -> bytes:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}).encode()


def test_openai_enhancer_request_and_answer(fake_llm: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_LLM_KEY", "sk-test")
    e = make_enhancer(f"openai:tiny-model@{fake_llm}", model_style="shapes", key_env="TEST_LLM_KEY")
    assert isinstance(e, OpenAIEnhancer) and e.name == "openai:tiny-model"
    _Fake.reply = (200, _answer('"A large red circle slowly moves to the left."'))
    res = enhance_with_fallback(e, "red circle left")
    assert res.enhanced and res.prompt == "A large red circle slowly moves to the left."
    (req,) = _Fake.requests
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-test"
    body = json.loads(req["body"])
    assert body["model"] == "tiny-model" and body["stream"] is False
    system, user = body["messages"]
    assert (system["role"], user) == ("system", {"role": "user", "content": "red circle left"})
    assert "Examples of the caption style" in system["content"] and "background" in system["content"]

    monkeypatch.delenv("TEST_LLM_KEY")
    _Fake.reply = (500, b'{"error": "overloaded"}')
    res = enhance_with_fallback(e, "red circle left")
    assert (res.prompt, res.enhanced) == ("red circle left", False)
    assert "HTTP 500" in (res.error or "") and _Fake.requests[-1]["auth"] is None  # no key, no header

    for reply, why in ((b"not json", "did not answer JSON"), (b'{"choices": []}', "without choices")):
        _Fake.reply = (200, reply)
        assert why in (enhance_with_fallback(e, "x").error or "")
    _Fake.reply = (200, _answer("   "))
    assert "empty" in (enhance_with_fallback(e, "x").error or "")


def test_openai_enhancer_unreachable_falls_back() -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    e = OpenAIEnhancer(f"http://127.0.0.1:{port}/v1", "m", timeout=2)
    res = enhance_with_fallback(e, "hello")
    assert res.prompt == "hello" and "cannot reach" in (res.error or "")


def test_make_enhancer_specs(tmp_path: Path) -> None:
    assert isinstance(make_enhancer(None, model_style="shapes"), ShapesEnhancer)
    assert make_enhancer("auto", model_style=None) is None
    assert make_enhancer("none", model_style="shapes") is None
    assert isinstance(make_enhancer("builtin"), ShapesEnhancer)
    # a model trained on layout captions gets the layout rewriter: every object placed, the same cell each time
    lay = make_enhancer(None, model_style="shapes-layout")
    assert isinstance(lay, ShapesEnhancer) and lay.name == "shapes-layout"
    out = lay.enhance("a red circle moves up and a blue star spins")
    assert out == lay.enhance("a red circle moves up and a blue star spins")
    assert all(o.position is not None for o in parse_prompt(out).objects)
    assert make_enhancer("builtin", model_style="shapes-layout").name == "shapes-layout"
    tok = make_enhancer(None, model_style="shapes-tokens")  # token captions: a cell and an 8-pixel token each
    assert isinstance(tok, ShapesEnhancer) and tok.name == "shapes-tokens"
    assert all(o.token is not None and o.position is not None for o in parse_prompt(tok.enhance("a red star")).objects)
    assert all(o.position is None for o in parse_prompt(make_enhancer("builtin").enhance("a red star")).objects)
    with pytest.raises(ValueError, match="openai:MODEL@URL"):
        make_enhancer("openai:gpt")
    with pytest.raises(ValueError, match="http"):
        make_enhancer("openai:gpt@ftp://x")
    with pytest.raises(ValueError, match="no config.json"):
        make_enhancer(f"local:{tmp_path}")
    with pytest.raises(ValueError, match="unknown enhancer"):
        make_enhancer("magic")


# ------------------------------------------------------------------------------------------ local LLM
def _tiny_causal_lm(folder: Path) -> Path:
    """A random 1-layer GPT-2 with a byte-level tokenizer: offline, a few hundred KB."""
    import torch
    from transformers import ByT5Tokenizer, GPT2Config, GPT2LMHeadModel

    tok = ByT5Tokenizer()
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=len(tok), n_positions=2048, n_embd=32, n_layer=1, n_head=2, eos_token_id=tok.eos_token_id
    )
    GPT2LMHeadModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_local_llm_enhancer(tmp_path: Path) -> None:
    folder = _tiny_causal_lm(tmp_path / "llm")
    e = make_enhancer(f"local:{folder}")
    assert isinstance(e, LocalLLMEnhancer) and e.name == "local:llm"
    e.max_new_tokens = 12
    out1, out2 = e.enhance("a red circle"), e.enhance("a red circle")
    assert out1 == out2  # greedy: deterministic
    # only the continuation comes back (12 new byte tokens at most), never the echoed instruction
    assert len(out1.encode("utf-8", "surrogatepass")) <= 12 and "Caption:" not in out1
    assert e.format_prompt("a red circle").endswith("Prompt: a red circle\nCaption:")  # no chat template
    broken = LocalLLMEnhancer(tmp_path / "missing")
    res = enhance_with_fallback(broken, "a red circle")
    assert res.prompt == "a red circle" and "no config.json" in (res.error or "")
