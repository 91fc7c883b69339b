"""The local SmolLM2 chat model (real weights) and the provider factory."""

from __future__ import annotations

import threading

import pytest
import torch

from providers.llm import LLMConfigError, chat_model_create, resolve_provider
from providers.local_llm import ChatLocalSmolLM, TokenStream, converted_directory, load_local_model


def test_loaded_once_from_a_converted_copy(local_llm):
    assert load_local_model() is local_llm
    assert (converted_directory() / "model.safetensors").exists()
    assert local_llm.device in ("cpu", "cuda")
    assert local_llm.tokenizer.chat_template


def test_factory_defaults_to_the_local_model(local_llm):
    model = chat_model_create(max_tokens=12)
    assert isinstance(model, ChatLocalSmolLM)
    reply = model.invoke("What is the capital of France?")
    assert "Paris" in reply.content
    assert reply.usage_metadata["output_tokens"] <= 12
    assert reply.response_metadata["model_name"] == "SmolLM2-135M-Instruct"


def test_sampled_generation_is_reproducible_with_a_seed(local_llm):
    texts = [
        "".join(c.content for c in ChatLocalSmolLM(temperature=0.9, max_tokens=8, seed=7).stream("Name a colour."))
        for _ in range(2)
    ]
    assert texts[0] and texts[0] == texts[1]


def _feed(stream: TokenStream, tokenizer, text: str) -> list[str]:
    stream.put(torch.tensor([[1, 2, 3]]))  # the prompt, which a streamer skips
    for token_id in tokenizer.encode(text):
        stream.put(torch.tensor([token_id]))
        if stream.stopped_by:
            break
    stream.end()
    return list(stream)


def test_token_stream_holds_back_a_partial_stop_sequence(local_llm):
    tokenizer = local_llm.tokenizer
    stream = TokenStream(tokenizer, ["STOP HERE"], None)
    pieces = _feed(stream, tokenizer, "alpha beta STOP HERE gamma")
    assert "".join(pieces).rstrip() == "alpha beta"
    assert not any("STOP" in piece for piece in pieces)
    assert stream.stopped_by == "stop"
    # A prefix of the stop sequence that never completes is released at the end.
    stream = TokenStream(tokenizer, ["STOP HERE"], None)
    assert "".join(_feed(stream, tokenizer, "alpha STOP there")) == "alpha STOP there"


def test_token_stream_is_a_stopping_criterion_for_cancel(local_llm):
    cancel = threading.Event()
    stream = TokenStream(local_llm.tokenizer, [], cancel)
    ids = torch.tensor([[1, 2]])
    assert not bool(stream(ids, None)[0])
    cancel.set()
    assert bool(stream(ids, None)[0]) and stream.stopped_by == "cancel"


def test_resolve_provider_errors():
    with pytest.raises(LLMConfigError, match="Unknown LLM provider"):
        resolve_provider(provider="skynet")
    with pytest.raises(LLMConfigError, match="needs a credential"):
        resolve_provider(provider="openai")
    assert resolve_provider().provider == "local"
    assert resolve_provider(provider="ollama").base_url == "http://127.0.0.1:11434"
