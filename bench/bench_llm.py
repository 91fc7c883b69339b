"""Local LLM throughput through the ``llm_call`` node versus a bare transformers ``generate``.

Both run greedy on the same prompt, with the same model object, in this process, alternating so
machine noise hits both alike. The node runs in isolation (no database: no run, so no ledger row)
with an in-memory event sink, so the figure is the node's own overhead: chat template, streaming,
stop/cancel checks and token events.

The node generates in a worker thread (so it can stream and be cancelled). On a small, busy machine a
generate call in a worker thread can run several times faster than the same call in the main thread
(torch's intra-op thread team contends less), so the bare baseline is measured both ways and the
ratio is taken against the faster one — the conservative figure.

Keys: ``llm.tokens_per_second`` (node), ``llm.bare_tokens_per_second`` (the faster bare figure),
``llm.bare_main_thread_tokens_per_second``, ``llm.bare_worker_thread_tokens_per_second``,
``llm.tokens_per_second_ratio`` (node / faster bare, target ≥ 0.9), ``llm.first_token_ms`` (node, median).
"""

from __future__ import annotations

import os
import statistics
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
MAX_TOKENS = int(os.environ.get("BENCH_LLM_TOKENS", "48"))
ROUNDS = int(os.environ.get("BENCH_LLM_ROUNDS", "3"))


def _bare(loaded) -> tuple[float, int]:
    import torch

    tokenizer, model = loaded.tokenizer, loaded.model
    started = time.perf_counter()
    encoded = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    encoded = {k: v.to(loaded.device) for k, v in encoded.items()}
    with torch.inference_mode():
        output = model.generate(
            **encoded,
            max_new_tokens=MAX_TOKENS,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            eos_token_id=sorted(loaded.eos_token_ids),
            pad_token_id=tokenizer.eos_token_id,
        )
    elapsed = time.perf_counter() - started
    return elapsed, int(output.shape[1] - encoded["input_ids"].shape[1])


def _bare_in_thread(loaded) -> tuple[float, int]:
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(result=_bare(loaded)))
    thread.start()
    thread.join()
    return box["result"]


def _node() -> tuple[float, int, float]:
    from workflows.nodes import NodeContext, get_node_type

    events: list = []
    ctx = NodeContext(
        node_id="bench",
        node_type="llm_call",
        config={"prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0},
        cancel_event=threading.Event(),
        emit_callback=lambda kind, data: events.append((kind, data)),
    )
    started = time.perf_counter()
    output = get_node_type("llm_call").execute(ctx)
    elapsed = time.perf_counter() - started
    assert events, "the node streamed no token events"
    return elapsed, int(output["output_tokens"]), float(output["first_token_ms"] or 0)


def run(results: dict[str, float]) -> None:
    import django

    django.setup()
    from providers.local_llm import load_local_model

    loaded = load_local_model()
    _bare(loaded)  # warm-up: first calls allocate caches
    _node()
    node_rates, main_rates, thread_rates, first_tokens = [], [], [], []
    for _ in range(ROUNDS):  # interleaved, so machine noise hits all three alike
        elapsed, tokens = _bare(loaded)
        main_rates.append(tokens / elapsed)
        elapsed, tokens = _bare_in_thread(loaded)
        thread_rates.append(tokens / elapsed)
        elapsed, tokens, first_ms = _node()
        node_rates.append(tokens / elapsed)
        first_tokens.append(first_ms)
    node_tps = statistics.median(node_rates)
    main_tps, thread_tps = statistics.median(main_rates), statistics.median(thread_rates)
    bare_tps = max(main_tps, thread_tps)
    results["llm.tokens_per_second"] = round(node_tps, 2)
    results["llm.bare_main_thread_tokens_per_second"] = round(main_tps, 2)
    results["llm.bare_worker_thread_tokens_per_second"] = round(thread_tps, 2)
    results["llm.bare_tokens_per_second"] = round(bare_tps, 2)
    results["llm.tokens_per_second_ratio"] = round(node_tps / bare_tps, 3)
    results["llm.first_token_ms"] = round(statistics.median(first_tokens), 1)
    print(f"   node {node_tps:.1f} tok/s, bare {bare_tps:.1f} tok/s, first token {results['llm.first_token_ms']} ms")
