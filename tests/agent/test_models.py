"""The providers through the real ``anthropic`` and ``ollama`` SDKs against loopback APIs."""

from __future__ import annotations

import time

import pytest
from tests.agent.conftest import FakeAnthropic, FakeOllama

from coderx_agent.config import AnthropicConfig, OllamaConfig
from coderx_agent.errors import MissingKey, ModelError, UsageError
from coderx_agent.keys import Keys
from coderx_agent.messages import Message, ToolResultBlock, ToolSpec
from coderx_agent.models import resolve
from coderx_agent.models.anthropic import AnthropicModel
from coderx_agent.models.ollama import OllamaModel
from coderx_agent.pricing import cost, price_of

KEY = {"ANTHROPIC_API_KEY": "sk-test-key"}
READ = ToolSpec(name="read_file", description="Read a file.", read_only=True,
                input_schema={"type": "object", "properties": {"path": {"type": "string"}}})


def claude(api: FakeAnthropic, **cfg: object) -> AnthropicModel:
    config = AnthropicConfig(base_url=api.url, max_retries=2, **cfg)  # type: ignore[arg-type]
    return AnthropicModel("claude-sonnet-4-5", config, Keys(environ=KEY))


async def test_anthropic_streams_text_and_tool_use_with_cache_marks(
        anthropic_api: FakeAnthropic) -> None:
    anthropic_api.call(("read_file", {"path": "a.py"}), text="Let me look.",
                       input_tokens=10, cache_read_input_tokens=900,
                       cache_creation_input_tokens=50, output_tokens=30)
    model = claude(anthropic_api)
    deltas: list[str] = []
    try:
        reply = await model.complete("SYSTEM", [Message.user("fix it")], [READ], deltas.append)
    finally:
        await model.aclose()
    assert "".join(deltas) == "Let me look." and len(deltas) == 2
    assert reply.message.text == "Let me look."
    (use,) = reply.message.tool_uses
    assert (use.name, use.input) == ("read_file", {"path": "a.py"})
    assert (reply.usage.input_tokens, reply.usage.cache_read_tokens,
            reply.usage.cache_write_tokens, reply.usage.output_tokens) == (10, 900, 50, 30)
    body = anthropic_api.requests[0]
    assert body["stream"] is True
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert body["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert body["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert anthropic_api.seen_keys == ["sk-test-key"]


async def test_anthropic_retries_429_and_529_honouring_retry_after(
        anthropic_api: FakeAnthropic) -> None:
    anthropic_api.fail(429, "slow down", retry_after="0").fail(529, "overloaded",
                                                               retry_after="0").say("ok")
    model = claude(anthropic_api)
    started = time.monotonic()
    try:
        reply = await model.complete("s", [Message.user("hi")], [], lambda _t: None)
    finally:
        await model.aclose()
    assert reply.message.text == "ok"
    assert len(anthropic_api.requests) == 3
    assert time.monotonic() - started < 10  # retry-after: 0 was honoured, no long backoff


async def test_anthropic_error_is_one_sentence_without_the_request(
        anthropic_api: FakeAnthropic) -> None:
    anthropic_api.fail(400, "messages: roles must alternate")
    model = claude(anthropic_api)
    with pytest.raises(ModelError, match=r"answered 400: messages: roles must alternate"):
        try:
            await model.complete("s", [Message.user("secret file body")], [], lambda _t: None)
        finally:
            await model.aclose()


async def test_anthropic_lists_models(anthropic_api: FakeAnthropic) -> None:
    model = claude(anthropic_api)
    try:
        found = await model.list_models()
    finally:
        await model.aclose()
    assert [m.name for m in found] == ["anthropic:claude-sonnet-4-5", "anthropic:claude-haiku-4-5"]
    assert all(m.tools for m in found)


def test_missing_key_says_how_to_set_it() -> None:
    with pytest.raises(MissingKey, match="set ANTHROPIC_API_KEY in the environment"):
        AnthropicModel("claude-sonnet-4-5", AnthropicConfig(), Keys(environ={}))


def test_keystore_key_is_used_when_the_environment_has_none(tmp_path: object,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    keystore = pytest.importorskip("coderx_mcp.keystore")
    from pathlib import Path

    path = Path(str(tmp_path)) / "keys"
    store = keystore.open_store(path, passphrase="pass-phrase-for-tests")
    store.set("ANTHROPIC_API_KEY", "sk-from-store")
    keys = Keys(environ={"CODERX_KEY_PASSPHRASE": "pass-phrase-for-tests"}, store_path=path)
    assert keys.get("ANTHROPIC_API_KEY") == "sk-from-store"


def test_model_names_resolve_and_unknown_ones_are_usage_errors() -> None:
    aliases = {"sonnet": "anthropic:claude-sonnet-4-5"}
    assert resolve("sonnet", aliases) == ("anthropic", "claude-sonnet-4-5")
    assert resolve("ollama:qwen3:8b", aliases) == ("ollama", "qwen3:8b")
    with pytest.raises(UsageError, match="unknown model 'gpt-5'"):
        resolve("gpt-5", aliases)


def test_prices() -> None:
    from coderx_agent.messages import Usage

    sonnet = price_of("anthropic", "claude-sonnet-4-5-20250929")
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000,
                  cache_read_tokens=1_000_000, cache_write_tokens=1_000_000)
    assert cost(sonnet, usage) == pytest.approx(3 + 15 + 0.3 + 3.75)
    assert price_of("anthropic", "claude-opus-4-1").input == 15
    assert price_of("anthropic", "claude-haiku-4-5").output == 5
    assert cost(price_of("ollama", "qwen3:8b"), usage) == 0


def qwen(api: FakeOllama, num_ctx: int = 4096) -> OllamaModel:
    return OllamaModel("qwen3:8b", OllamaConfig(host=api.url, num_ctx=num_ctx))


async def test_ollama_tool_calls_and_num_ctx_on_every_request(ollama_api: FakeOllama) -> None:
    ollama_api.call(("read_file", {"path": "a.py"})).say("All good.")
    model = qwen(ollama_api)
    deltas: list[str] = []
    try:
        first = await model.complete("SYS", [Message.user("look")], [READ], deltas.append)
        (use,) = first.message.tool_uses
        assert (use.name, use.input) == ("read_file", {"path": "a.py"})
        history = [Message.user("look"), first.message,
                   Message(role="user", content=[ToolResultBlock(tool_use_id=use.id,
                                                                 content="x = 1")])]
        second = await model.complete("SYS", history, [READ], deltas.append)
    finally:
        await model.aclose()
    assert second.message.text == "All good." and "".join(deltas) == "All good."
    assert (second.usage.input_tokens, second.usage.output_tokens) == (50, 10)
    assert [r["options"]["num_ctx"] for r in ollama_api.requests] == [4096, 4096]
    sent = ollama_api.requests[1]["messages"]
    assert sent[0] == {"role": "system", "content": "SYS"}
    assert sent[2]["tool_calls"][0]["function"]["name"] == "read_file"
    assert sent[3] == {"role": "tool", "content": "x = 1", "tool_name": "read_file"}
    assert ollama_api.requests[0]["tools"][0]["function"]["name"] == "read_file"
    assert not first.notices


async def test_ollama_warns_when_the_prompt_was_truncated(ollama_api: FakeOllama) -> None:
    ollama_api.say("partial", prompt_eval_count=1024)
    model = qwen(ollama_api, num_ctx=1024)
    try:
        reply = await model.complete("S", [Message.user("x" * 20_000)], [], lambda _t: None)
    finally:
        await model.aclose()
    (notice,) = reply.notices
    assert "Ollama truncated it" in notice and "1024" in notice


async def test_ollama_lists_models_marking_those_without_tools(ollama_api: FakeOllama) -> None:
    model = qwen(ollama_api)
    try:
        found = {m.name: m.tools for m in await model.list_models()}
    finally:
        await model.aclose()
    assert found == {"ollama:qwen3:8b": True, "ollama:gemma2:2b": False}


async def test_ollama_pull_reports_progress(ollama_api: FakeOllama) -> None:
    model = qwen(ollama_api)
    seen: list[tuple[str, int, int]] = []
    try:
        await model.pull(lambda s, c, t: seen.append((s, c, t)))
    finally:
        await model.aclose()
    assert ("pulling abc", 500, 1000) in seen and seen[-1][0] == "success"


async def test_ollama_unreachable_is_a_model_error() -> None:
    model = OllamaModel("qwen3:8b", OllamaConfig(host="http://127.0.0.1:9"))
    with pytest.raises(ModelError, match=r"cannot reach Ollama at http://127\.0\.0\.1:9"):
        try:
            await model.complete("s", [Message.user("hi")], [], lambda _t: None)
        finally:
            await model.aclose()

