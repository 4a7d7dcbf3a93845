"""CUDA paths: the same parity on a GPU (fp32, TF32 off) and bf16 generation. Skipped without a GPU."""
from __future__ import annotations

import pytest
import torch

from reference_fixtures import case_input, fixture_names, load_reference, use_fixture_hub

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(not fixture_names(), reason="no reference fixtures found"),
]


@pytest.mark.parametrize("name", fixture_names())
def test_cuda_fp32_logits_match_upstream(monkeypatch, name):
    from vl2cli.model.videollama2 import VideoLlama2

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    fixture = load_reference(name)
    use_fixture_hub(monkeypatch, fixture)
    model = VideoLlama2.from_pretrained(str(fixture.checkpoint), device="cuda", dtype="fp32")
    for case_name, case in fixture.cases().items():
        if len(case.get("images_arg") or [None]) != 1:
            continue
        logits, _ = model.forward_logits([case_input(fixture, case)], [case["instruction"]])
        expected = fixture.tensors[f"{case_name}.logits"]
        positions = fixture.tensors[f"{case_name}.logits_positions"]
        assert (logits[:, positions].cpu() - expected).abs().max() <= 1e-4, case_name


@pytest.mark.parametrize("name", fixture_names())
def test_cuda_bf16_default_generates(monkeypatch, name):
    from vl2cli.model.videollama2 import VideoLlama2

    fixture = load_reference(name)
    use_fixture_hub(monkeypatch, fixture)
    model = VideoLlama2.from_pretrained(str(fixture.checkpoint), device="cuda")
    assert model.dtype == torch.bfloat16
    case = next(iter(fixture.cases().values()))
    item = case_input(fixture, case)
    instruction = case["instruction"] if isinstance(case["instruction"], str) else case["instruction"][0]
    generation = model.generate([item], [instruction], max_new_tokens=4)[0]
    assert len(generation.token_ids) == 4 or generation.stopped_on_eos
    # Greedy: the first token is the argmax of the bf16 prefill's last logits, and the text is those tokens.
    logits, _ = model.forward_logits([item], [instruction])
    assert generation.token_ids[0] == int(logits[0, -1].float().argmax())
    assert generation.text == model.tokenizer.decode(generation.token_ids, skip_special_tokens=True).strip()


# --------------------------------------------------------------- decode loop with CUDA graphs
#: Longer than the goldens' 8 tokens, so the random fixtures repeat tokens and the penalty bites.
DECODE_TOKENS = 12
#: Strong enough to change the fixtures' tokens (see tests/test_decode_loop.py).
STRONG_REPETITION_PENALTY = 1.5
#: Steps timed per measurement (after one untimed call that builds the bucket and captures).
TIMED_STEPS = 32


def _decode_batches(fixture):
    """Every case alone, plus one left-padded batch of unequal prompts."""
    from reference_fixtures import case_instructions

    batches = []
    for case in fixture.cases().values():
        count = len(case.get("images_arg") or [None])
        batches.append(([case_input(fixture, case, i) for i in range(count)], case_instructions(case)))
    cases = fixture.cases()
    pair = ["video", "video_long"] if "video_long" in cases else [c for c in cases if c in ("av", "text", "image")][:3]
    batches.append(([case_input(fixture, cases[c]) for c in pair], [case_instructions(cases[c])[0] for c in pair]))
    return batches


def _ms_per_step(run, embeds, mask, config) -> float:
    """Decode time per token: (time for 1 + TIMED_STEPS tokens - time for 1 token) / TIMED_STEPS."""
    import time

    def timed(new_tokens: int) -> float:
        config.max_new_tokens = new_tokens
        torch.cuda.synchronize()
        start = time.perf_counter()
        tokens = run(embeds, mask, config)
        torch.cuda.synchronize()
        assert tokens.shape[1] == new_tokens, "eos is disabled: every row runs to max_new_tokens"
        return time.perf_counter() - start

    timed(1 + TIMED_STEPS)  # warm: bucket, capture, allocator
    return (timed(1 + TIMED_STEPS) - timed(1)) / TIMED_STEPS * 1e3


@pytest.mark.parametrize("name", fixture_names())
def test_cuda_graph_decode_equals_dynamic_fp32(monkeypatch, name):
    from vl2cli.model.decode_loop import StaticCacheDecoder
    from vl2cli.model.videollama2 import VideoLlama2

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    fixture = load_reference(name)
    use_fixture_hub(monkeypatch, fixture)
    model = VideoLlama2.from_pretrained(str(fixture.checkpoint), device="cuda", dtype="fp32")
    decoder = StaticCacheDecoder(model.llm, cuda_graphs=True)
    for items, instructions in _decode_batches(fixture):
        embeds, mask = model.prepare_inputs(items, instructions)
        for penalty in (None, STRONG_REPETITION_PENALTY):
            config = model.generation_config(max_new_tokens=DECODE_TOKENS, do_sample=False, temperature=None, top_p=None)
            config.repetition_penalty = penalty
            tokens = decoder.generate(embeds, mask, config)
            for row, (item, instruction) in enumerate(zip(items, instructions)):
                # alone: transformers 5.23's batched penalty is shifted by padding (see _dynamic_generate)
                alone_embeds, alone_mask = model.prepare_inputs([item], [instruction])
                expected = model.llm.generate(inputs_embeds=alone_embeds, attention_mask=alone_mask, generation_config=config)[0]
                assert tokens[row, : len(expected)].tolist() == expected.tolist(), (instructions, penalty, row)
    assert decoder._state.graph is not None, "the steps above were graph replays"
    generations = model.generate(*_decode_batches(fixture)[-1], max_new_tokens=DECODE_TOKENS)  # auto = graphs on CUDA
    assert model._static_decoder is not None and model._static_decoder.cuda_graphs
    dynamic = model.generate(*_decode_batches(fixture)[-1], max_new_tokens=DECODE_TOKENS, decode_loop="dynamic")
    assert [g.token_ids for g in generations] == [g.token_ids for g in dynamic]


#: bf16 keeps 8 significant bits (steps of 2^-8 relative): two kernels' logits for the same step differ by a
#: few such steps. A choice within 3% of the largest |logit| of generate's best is a near-tie, not an error.
BF16_NEAR_TIE = 0.03


def _assert_same_or_near_tie(model, embeds, mask, got: torch.Tensor, want: torch.Tensor) -> None:
    """The graph loop's tokens equal generate's for one row, or up to a step where generate's own logits
    (after the tokens both chose) make the two choices a bf16 near-tie; later tokens then follow each."""
    differing = (got != want).nonzero()
    if differing.numel() == 0:
        return
    step = int(differing[0])
    agreed = want[None, :step]
    full_embeds = torch.cat([embeds, model.llm.get_input_embeddings()(agreed)], dim=1)
    full_mask = torch.cat([mask, torch.ones_like(agreed, dtype=mask.dtype)], dim=1)
    positions = (full_mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        logits = model.llm(inputs_embeds=full_embeds, attention_mask=full_mask, position_ids=positions).logits[0, -1].float()
    gap = (logits[int(want[step])] - logits[int(got[step])]).item()
    assert gap <= BF16_NEAR_TIE * logits.abs().max().item(), (
        f"step {step}: graph loop chose {int(got[step])}, generate {int(want[step])}, {gap:.3f} apart in generate's logits")


@pytest.mark.parametrize("name", fixture_names())
def test_cuda_graph_decode_bf16_generates_and_is_timed(monkeypatch, name):
    """bf16 graph loop vs generate: the same tokens, or a near-tie where they part; the speed is printed
    (run with -s), not asserted: speed targets belong in benchmarks/."""
    from vl2cli.model.decode_loop import StaticCacheDecoder
    from vl2cli.model.videollama2 import VideoLlama2

    fixture = load_reference(name)
    use_fixture_hub(monkeypatch, fixture)
    model = VideoLlama2.from_pretrained(str(fixture.checkpoint), device="cuda")
    assert model.dtype == torch.bfloat16
    decoder = StaticCacheDecoder(model.llm, cuda_graphs=True)
    items, instructions = _decode_batches(fixture)[-1]
    embeds, mask = model.prepare_inputs(items, instructions)
    config = model.generation_config(max_new_tokens=DECODE_TOKENS, do_sample=False, temperature=None, top_p=None)
    tokens = decoder.generate(embeds, mask, config)
    dynamic = model.llm.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=config)
    assert tokens.shape[0] == len(items) and 1 <= tokens.shape[1] <= DECODE_TOKENS
    assert int(tokens.max()) < model.llm.config.vocab_size
    width = min(tokens.shape[1], dynamic.shape[1])
    agreement = (tokens[:, :width] == dynamic[:, :width]).float().mean().item()
    for row in range(len(items)):
        _assert_same_or_near_tie(model, embeds[row:row + 1], mask[row:row + 1], tokens[row, :width], dynamic[row, :width])
    config.eos_token_id = []  # fixed length for timing
    graph_ms = _ms_per_step(decoder.generate, embeds, mask, config)
    dynamic_ms = _ms_per_step(
        lambda e, m, c: model.llm.generate(inputs_embeds=e, attention_mask=m, generation_config=c), embeds, mask, config
    )
    print(f"\n[{name}] bf16 batch {len(items)}: graph loop {graph_ms:.2f} ms/step, generate {dynamic_ms:.2f} ms/step, "
          f"token agreement with generate {agreement:.0%}")


#: fp32 on CUDA with TF32 off: the bound the logits parity above uses, as a floor; relative above it, as
#: a log-likelihood is a sum reaching -145 (one float32 step there is 1.5e-5; CPU measures 1.2e-7 relative).
CUDA_SCORE_RTOL, CUDA_SCORE_ATOL = 1e-5, 1e-4


@pytest.mark.parametrize("name", fixture_names())
def test_cuda_batched_label_scores_equal_one_at_a_time(monkeypatch, name):
    from reference_fixtures import case_instructions
    from vl2cli.model.videollama2 import VideoLlama2

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    fixture = load_reference(name)
    use_fixture_hub(monkeypatch, fixture)
    model = VideoLlama2.from_pretrained(str(fixture.checkpoint), device="cuda", dtype="fp32")
    singles = [c for c in fixture.cases().values() if len(c.get("images_arg") or [None]) == 1]
    items = [case_input(fixture, c) for c in singles]
    instructions = [case_instructions(c)[0] for c in singles]
    labels = ["cooking", "sports", "music videos", "a"]
    batched = model.score_labels_batch(items, instructions, labels)
    for item, instruction, scores in zip(items, instructions, batched):
        alone = model.score_labels(item, instruction, labels)
        assert scores.log_likelihoods == pytest.approx(alone.log_likelihoods, rel=CUDA_SCORE_RTOL, abs=CUDA_SCORE_ATOL)


# ------------------------------------------------------------------ fast torch encoders on CUDA
#: The CPU parity bound (tests/test_reference_parity.py); fp32 with TF32 off keeps it on a GPU.
ENCODER_ATOL = 1e-4
#: bf16 keeps ~3 significant digits; compiled bf16 features must still point the goldens' way.
BF16_MIN_COSINE = 0.999
TIMING_REPEATS = 3
TIMING_VIDEOS = 64


@pytest.fixture
def exact_fp32():
    """TF32 off for the duration (it would cost fp32 ~3 digits), restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _load(monkeypatch, name, **kwargs):
    from vl2cli.model.videollama2 import VideoLlama2

    fixture = load_reference(name)
    use_fixture_hub(monkeypatch, fixture)
    return fixture, VideoLlama2.from_pretrained(str(fixture.checkpoint), device="cuda", **kwargs)


def _eager_reference_encoders(fixture, model):
    """The same weights with upstream's eager attention and no compilation: what the goldens ran."""
    import copy

    from vl2cli.model.checkpoint import ShardedSafetensors
    from vl2cli.model.encoders import TorchEncoders
    from vl2cli.model.vision_tower import TOWER_WEIGHT_PREFIX, VisionTower, load_tower_spec

    fast = model.torch_encoders
    tower = VisionTower(load_tower_spec(model.config.vision_tower), model.config.vision_select_layer,
                        model.config.vision_select_feature, attn_implementation="eager")
    shards = ShardedSafetensors(fixture.checkpoint)
    tower.load_released_weights(shards.load(shards.keys_with_prefix(TOWER_WEIGHT_PREFIX), strip_prefix=TOWER_WEIGHT_PREFIX))
    tower.to(device=model.device, dtype=model.dtype).eval()
    connector = copy.deepcopy(fast.connector)
    connector.set_channels_last(False)
    audio_tower = None
    if fast.audio_tower is not None:
        audio_tower = copy.deepcopy(fast.audio_tower)
        audio_tower.set_attn_implementation("eager")
    return TorchEncoders(tower, connector, audio_tower, fast.audio_projector, pool_frames=fast.pool_frames,
                         compile_encoders=False)


def _max_diff(a, b):
    return (a.float() - b.float()).abs().max().item()


@pytest.mark.parametrize("name", fixture_names())
def test_cuda_compiled_encoders_match_upstream_and_eager_fp32(monkeypatch, name, exact_fp32):
    fixture, model = _load(monkeypatch, name, dtype="fp32", compile_encoders=True)
    fast = model.torch_encoders
    assert fast.compile_encoders and fast.connector.channels_last
    assert fast.frames_per_tower_call % 64 == 0
    eager = _eager_reference_encoders(fixture, model)
    t = fixture.tensors
    checked = 0
    for case_name, case in fixture.cases().items():
        if f"{case_name}.vision_features" not in t:
            continue
        items = [case_input(fixture, case, i) for i in range(len(case.get("images_arg") or [None]))]
        pixels = torch.cat([model.frames_of(x) for x in items]).cuda()
        features = fast.encode_frames(pixels)
        assert _max_diff(features.cpu(), t[f"{case_name}.vision_features"]) <= ENCODER_ATOL, case_name
        assert _max_diff(features, eager.encode_frames(pixels)) <= ENCODER_ATOL, case_name
        grouped = features.reshape(len(items), -1, *features.shape[1:])
        tokens = fast.connect(grouped)
        assert _max_diff(tokens.cpu(), t[f"{case_name}.video_tokens"]) <= ENCODER_ATOL, case_name
        assert _max_diff(tokens, eager.connect(grouped)) <= ENCODER_ATOL, case_name
        checked += 1
    if fast.audio_tower is not None:
        fbank = t["inputs.fbank"].float().reshape(1, 2998, 128).cuda()
        audio = fast.encode_audio(fbank)
        assert _max_diff(audio.cpu(), t["av.audio_tokens"]) <= ENCODER_ATOL
        assert _max_diff(audio, eager.encode_audio(fbank)) <= ENCODER_ATOL
    assert checked, "no case with vision goldens"
    used = {"vision_tower", "connector"} | ({"audio_encoder"} if fast.audio_tower is not None else set())
    for component, call in fast.calls().items():
        if component in used:
            assert call.compiled and not call.compile_failed, f"{component} fell back to eager"
            print(f"\n{name} {component}: first compiled call {call.first_call_seconds:.1f} s")


@pytest.mark.parametrize("name", fixture_names())
def test_cuda_bf16_compiled_encoders_time_and_stay_close(monkeypatch, name):
    """Tower + connector over 64 videos, eager vs compiled (printed; run with -s), and bf16 sanity."""
    import time

    fixture, model = _load(monkeypatch, name, compile_encoders=True)
    case_name = "video" if "video" in fixture.cases() else next(iter(fixture.cases()))
    item = case_input(fixture, fixture.cases()[case_name])
    frames = model.frames_of(item)
    pixels = torch.cat([frames] * TIMING_VIDEOS).cuda().to(model.dtype)
    compiled = model.torch_encoders
    eager = _eager_reference_encoders(fixture, model)

    def tower_and_stc(encoders):
        features = encoders.encode_frames(pixels)
        return encoders.connect(features.reshape(TIMING_VIDEOS, frames.shape[0], *features.shape[1:]))

    def timed(encoders):
        start = time.perf_counter()
        out = tower_and_stc(encoders)
        torch.cuda.synchronize()
        first = time.perf_counter() - start
        times = []
        for _ in range(TIMING_REPEATS):
            start = time.perf_counter()
            tower_and_stc(encoders)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return out, first, sorted(times)[TIMING_REPEATS // 2]

    eager_out, eager_first, eager_s = timed(eager)
    compiled_out, compiled_first, compiled_s = timed(compiled)
    print(f"\n{name}: tower+STC, {pixels.shape[0]} frames, {model.dtype}: eager (no compile, eager attention) "
          f"{eager_s * 1000:.1f} ms, compiled {compiled_s * 1000:.1f} ms (first call {compiled_first:.1f} s, "
          f"eager first {eager_first:.2f} s)")
    cosine = torch.nn.functional.cosine_similarity(compiled_out.float().flatten(), eager_out.float().flatten(), dim=0)
    assert cosine.item() >= BF16_MIN_COSINE
    assert not any(call.compile_failed for call in compiled.calls().values())
